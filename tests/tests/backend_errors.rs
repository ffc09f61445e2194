//! The actuator acts on the kind of a backend error: ECS on moto, behind
//! the counting proxy, which answers some UpdateService calls with an AWS
//! error itself.
//!
//! - Throttling is retried: the SDK's own three attempts, then the
//!   actuator's next attempt (a nak, a redelivery), which succeeds.
//! - Access denied is not: one call, a `failed` result naming the kind, the
//!   command acked and never delivered again.

use std::sync::Arc;

use async_nats::jetstream::consumer::pull;
use nova_e2e::proxy::CountingProxy;
use nova_e2e::{AuditReader, MotoServer, NatsServer, Pipeline, WAIT, ecs_desired, within};
use nova_runtime::nats::{ACTUATOR_CONSUMER, COMMANDS_STREAM};
use nova_runtime::publish;
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{AuditKind, AuditRecord};

const CLUSTER: &str = "errors";

struct World {
    _nats: NatsServer,
    _moto: MotoServer,
    client: async_nats::Client,
    ecs: aws_sdk_ecs::Client,
    proxy: CountingProxy,
    pipeline: Pipeline,
    audit: AuditReader,
}

/// ECS service `svc` (2 tasks) on moto, behind the proxy, as target `api`.
async fn world() -> World {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let ecs = moto.ecs_service(CLUSTER, "svc", 2).await;
    let proxy = CountingProxy::start(&moto.endpoint).await;
    let yaml = format!(
        "targets:\n  api:\n    rules: [grow]\n    max: 10\n    backend:\n      ecs: {{ region: us-east-1, cluster: {CLUSTER}, service: svc, endpoint_url: \"{}\" }}\nhorizontal_scaling_rules:\n  grow:\n    scale_up: {{ condition: \"queue_depth > 10\", action: \"add 1 instance\", cooldown: 0 }}\n",
        proxy.endpoint
    );
    let policy = Arc::new(from_yaml(&yaml, "errors.yaml").expect("policy"));
    let client = nats.client().await;
    let pipeline = Pipeline::start(&nats, policy).await;
    let audit = AuditReader::new(&client).await;
    World {
        _nats: nats,
        _moto: moto,
        client,
        ecs,
        proxy,
        pipeline,
        audit,
    }
}

impl World {
    /// Asks for one more instance of `api`, as a rule would.
    async fn grow(&self) {
        let trigger = nova_e2e::grow_trigger(
            "api",
            "grow-api".into(),
            nova_runtime::now_ms(),
            "queue_depth 20 > 10".into(),
        );
        let js = async_nats::jetstream::new(self.client.clone());
        publish::publish_once(&js, subjects::triggers("api"), &trigger.id, &trigger)
            .await
            .expect("publish trigger");
    }

    async fn result(&mut self) -> AuditRecord {
        self.audit
            .wait_for("the result", |r| r.kind == AuditKind::Result)
            .await
    }

    /// How many deliveries the actuator's consumer made, once it holds
    /// nothing unacknowledged (here: one command, so 1 means it was never
    /// redelivered).
    async fn settled_deliveries(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        within("the command to be acked", WAIT, async {
            loop {
                let mut consumer = js
                    .get_stream(COMMANDS_STREAM)
                    .await
                    .expect("command stream")
                    .get_consumer::<pull::Config>(ACTUATOR_CONSUMER)
                    .await
                    .expect("actuator consumer");
                let info = consumer.info().await.expect("consumer info");
                if info.num_ack_pending == 0 && info.num_pending == 0 {
                    return info.delivered.consumer_sequence;
                }
                // Polling a broker-side counter; there is no event for it.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_update_is_retried_until_it_succeeds() {
    let mut w = world().await;
    // The SDK tries three times per call; all three are throttled.
    w.proxy.refuse("UpdateService", "ThrottlingException", 3);
    w.grow().await;
    let result = w.result().await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    let calls = w.proxy.calls("UpdateService");
    let refused = calls.iter().filter(|c| c.refused.is_some()).count();
    assert_eq!((calls.len(), refused), (4, 3), "{calls:?}");
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "svc").await, 3);
    assert_eq!(
        w.settled_deliveries().await,
        2,
        "the actuator's second attempt was a redelivery"
    );
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_denied_update_fails_at_once_naming_the_kind() {
    let mut w = world().await;
    w.proxy
        .refuse("UpdateService", "AccessDeniedException", usize::MAX);
    w.grow().await;
    let result = w.result().await;
    assert_eq!(result.outcome, "failed", "{}", result.reason);
    let reason = &result.reason;
    assert!(
        reason.contains("failed (access denied, not retried)")
            && reason.contains("target api: ECS UpdateService failed: AccessDeniedException"),
        "{reason}"
    );
    assert!(!reason.contains('\n'), "one line: {reason:?}");
    assert_eq!(w.settled_deliveries().await, 1, "acked, never redelivered");
    assert_eq!(
        w.proxy.calls("UpdateService").len(),
        1,
        "one call, not retried"
    );
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "svc").await, 2);
    w.pipeline.stop().await;
}
