//! The runbook's emergency operations (section 2, `emergency-scale.sh`)
//! through the real pipeline on simulated fleets, each asked on the
//! arbiter's control plane as `novactl emergency` asks:
//! - `up` doubles past a running cooldown (not past `max`), and then holds
//!   the rules' scale-downs (`emergency_hold`);
//! - `down` is refused while a scale-down condition says the load is above
//!   its threshold (the reason names the metric); with the load low it
//!   publishes `nova.drain.<target>`, waits for the workers' acknowledgements
//!   and goes to the role's floor (3 for an API);
//! - `reset` returns to the policy's baseline, past the cooldowns and the hold;
//! - `all` gives one audited decision per target, and a paused target is
//!   refused with one line while the others still act.

use std::sync::Arc;

use futures_util::StreamExt;
use nova_e2e::{AuditReader, NatsServer, Pipeline, WAIT, control, publish, within};
use nova_shared::arbitrate::EMERGENCY_UP_RULE;
use nova_shared::codec::{self, Encoding};
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{
    AuditKind, AuditRecord, ControlReply, ControlRequest, Direction, DirectionRequest,
    DrainRequest, EmergencyOp, EmergencyRequest,
};
use serde_json::json;

const POLICY: &str = r#"
emergency: { hold_down_secs: 600, drain_timeout_secs: 10 }
groups:
  front: [web, api]
targets:
  web:    { rules: [cpu], max: 12, baseline: 4, backend: { sim: { initial: 4, warmup_secs: 0 } } }
  api:    { rules: [cpu], max: 20, role: api, baseline: 8, backend: { sim: { initial: 8, warmup_secs: 0 } } }
  worker: { rules: [cpu], max: 40, role: worker, backend: { sim: { initial: 6, warmup_secs: 0 } } }
horizontal_scaling_rules:
  cpu:
    scale_up:   { condition: "avg_cpu > 70%", action: "add 2 instances", cooldown: 300 }
    scale_down: { condition: "avg_cpu < 30%", action: "remove 1 instance", cooldown: 0 }
"#;

struct World {
    _nats: NatsServer,
    client: async_nats::Client,
    pipeline: Pipeline,
    audit: AuditReader,
    /// Event time of the first sample, unix ms.
    t0: i64,
}

async fn world() -> World {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let audit = AuditReader::new(&client).await;
    let policy = Arc::new(from_yaml(POLICY, "emergency.yaml").unwrap_or_else(|e| panic!("{e}")));
    let pipeline = Pipeline::start(&nats, policy).await;
    World {
        _nats: nats,
        client,
        pipeline,
        audit,
        t0: nova_runtime::now_ms() - 300_000,
    }
}

impl World {
    async fn cpu(&self, target: &str, percent: f64, at_ms: i64) {
        let sample = json!({"value": percent, "ts": self.t0 + at_ms});
        let payload = rmp_serde::to_vec_named(&sample).expect("encode");
        publish(
            &self.client,
            subjects::metrics(target, "cpu"),
            payload,
            false,
        )
        .await;
    }

    async fn emergency(&self, op: EmergencyOp, target: &str, to: Option<u32>) -> ControlReply {
        control(
            &self.client,
            ControlRequest::Emergency(EmergencyRequest {
                op,
                target: target.into(),
                by: None,
                to,
                reason: Some("incident 42, on call".into()),
            }),
        )
        .await
    }

    /// The result of `target` that set it to `desired` (each capacity is
    /// reached once per test; targets' results interleave).
    async fn result_at(&mut self, target: &str, desired: u32) -> AuditRecord {
        self.audit
            .find_or_wait(&format!("{target} at {desired}"), |r| {
                r.target == target
                    && r.kind == AuditKind::Result
                    && r.outcome == "succeeded"
                    && r.to == Some(desired)
            })
            .await
    }

    async fn decision(&mut self, what: &str, wanted: impl Fn(&AuditRecord) -> bool) -> AuditRecord {
        self.audit
            .wait_for(what, |r| r.kind == AuditKind::Decision && wanted(r))
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_up_goes_past_a_cooldown_then_holds_scale_downs_until_reset() {
    let mut w = world().await;
    // A rule scale-up starts web's 300 s scale-up cooldown: 4 -> 6.
    w.cpu("web", 90.0, 0).await;
    w.result_at("web", 6).await;

    let reply = w.emergency(EmergencyOp::Up, "web", None).await;
    assert!(reply.ok, "{}", reply.message);
    assert!(
        reply.message.contains("double, 6 -> 12"),
        "{}",
        reply.message
    );
    let decision = w
        .decision("the emergency decision", |r| {
            r.rule.as_deref() == Some(EMERGENCY_UP_RULE)
        })
        .await;
    assert_eq!(decision.outcome, "scale", "{}", decision.reason);
    assert!(
        decision.reason.contains("incident 42, on call")
            && decision
                .reason
                .contains("forced past: scale-up is cooling down"),
        "who asked, why, and what it went past: {}",
        decision.reason
    );
    w.result_at("web", 12).await;

    // Past max it does not go: web is at its max of 12.
    let at_max = w.emergency(EmergencyOp::Up, "web", None).await;
    assert!(at_max.ok, "{}", at_max.message);
    let decision = w
        .decision("the second emergency decision", |r| {
            r.rule.as_deref() == Some(EMERGENCY_UP_RULE) && r.outcome != "scale"
        })
        .await;
    assert_eq!(decision.outcome, "at_max", "{}", decision.reason);

    // Low load, past the arbiter's up-signal hold (event time): the rule's
    // scale-down is held by the emergency.
    w.cpu("web", 5.0, 200_000).await;
    let held = w
        .decision("the held scale-down", |r| {
            r.target == "web" && r.rule.as_deref() == Some("cpu.scale_down")
        })
        .await;
    assert_eq!(held.outcome, "emergency_hold", "{}", held.reason);
    assert!(
        held.reason
            .contains("an emergency scale-up holds scale-downs"),
        "{}",
        held.reason
    );

    // Reset goes back to the baseline past the hold, and ends it.
    let reset = w.emergency(EmergencyOp::Reset, "web", None).await;
    assert!(reset.ok, "{}", reset.message);
    w.result_at("web", 4).await;
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_down_is_refused_under_load_and_drains_to_the_floor_when_idle() {
    let mut w = world().await;
    // Between the thresholds: no rule fires, but the load is not low. A
    // sample of web that fires, published after it on the same connection,
    // shows when the evaluator has read api's (samples of one publisher
    // keep their order through ingest and the evaluator).
    w.cpu("api", 50.0, 0).await;
    w.cpu("web", 90.0, 0).await;
    w.audit
        .wait_for("web's trigger", |r| {
            r.target == "web" && r.kind == AuditKind::Trigger
        })
        .await;
    let refused = w.emergency(EmergencyOp::Down, "api", None).await;
    assert!(!refused.ok);
    assert!(
        refused.message.contains(
            "emergency down of api refused: api's load is above its scale-down threshold: \
             avg_cpu 50% is not < 30% (rule cpu.scale_down)"
        ),
        "{}",
        refused.message
    );

    // Idle: the rule's own scale-down goes 8 -> 7, then the emergency
    // drains 4 workers and goes to the API floor of 3.
    w.cpu("api", 10.0, 1_000).await;
    w.result_at("api", 7).await;
    let mut drains = w
        .client
        .subscribe(subjects::drain("api"))
        .await
        .expect("subscribe");
    let workers = w.client.clone();
    let acks = tokio::spawn(async move {
        let request = drains.next().await.expect("a drain request");
        let drain: DrainRequest =
            codec::decode(&request.payload, Encoding::MsgPack).expect("drain request");
        let reply = request.reply.expect("a reply subject");
        for _ in 0..drain.expected {
            workers
                .publish(reply.clone(), "drained".into())
                .await
                .expect("ack");
        }
        drain
    });
    let reply = w.emergency(EmergencyOp::Down, "api", None).await;
    assert!(reply.ok, "{}", reply.message);
    let drain = within("the drain request", WAIT, acks)
        .await
        .expect("drain task");
    assert_eq!((drain.from, drain.to, drain.expected), (7, 3, 4));
    assert!(
        reply.message.contains("down to 3 (its floor), 7 -> 3")
            && reply
                .message
                .contains("drained: 4 of 4 acknowledged on nova.drain.api"),
        "{}",
        reply.message
    );
    w.result_at("api", 3).await;
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_all_decides_once_per_target_and_a_paused_one_is_refused_in_one_line() {
    let mut w = world().await;
    let paused = control(
        &w.client,
        ControlRequest::Pause(DirectionRequest {
            target: "worker".into(),
            direction: Some(Direction::Up),
            reason: None,
        }),
    )
    .await;
    assert!(paused.ok, "{}", paused.message);

    let reply = w.emergency(EmergencyOp::Up, "all", None).await;
    assert!(
        !reply.ok,
        "a refused target makes the reply not ok: {}",
        reply.message
    );
    let refusal: Vec<&str> = reply
        .message
        .lines()
        .filter(|l| l.contains("refused"))
        .collect();
    assert_eq!(
        refusal,
        [
            "emergency up of worker refused: worker's scale-ups are paused by an operator; resume it first (novactl resume worker)"
        ]
    );
    w.result_at("web", 8).await;
    w.result_at("api", 16).await;
    let decisions: Vec<&AuditRecord> = w
        .audit
        .seen
        .iter()
        .filter(|r| r.kind == AuditKind::Decision && r.rule.as_deref() == Some(EMERGENCY_UP_RULE))
        .collect();
    let mut targets: Vec<&str> = decisions.iter().map(|r| r.target.as_str()).collect();
    targets.sort_unstable();
    assert_eq!(targets, ["api", "web"], "one decision per target acted on");

    // A group names its targets; an unknown name lists the groups.
    let group = w.emergency(EmergencyOp::Reset, "front", None).await;
    assert!(group.ok, "{}", group.message);
    w.result_at("web", 4).await;
    w.result_at("api", 8).await;
    let unknown = w.emergency(EmergencyOp::Up, "frnot", None).await;
    assert_eq!(
        unknown.message,
        "no target or group \"frnot\" in the policy (groups: front; or all)"
    );
    w.pipeline.stop().await;
}
