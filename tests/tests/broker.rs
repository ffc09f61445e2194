//! Broker failures are waited out, never taken for bad messages: streams
//! and buckets that vanish and come back (what a stream without a leader
//! looks like to a client), with work in hand at every stage. Counted from
//! outside: every trigger decided once, every decision with one command and
//! one result, every audit record there, nothing dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use nova_e2e::{AuditReader, NatsServer, Pipeline, WAIT, stream_first, stream_messages, within};
use nova_runtime::nats::{
    ARBITER_BUCKET, ARBITER_CONSUMER, AUDIT_STREAM, COMMANDS_STREAM, DEAD_STREAM, RESULTS_STREAM,
    TRIGGERS_STREAM,
};
use nova_runtime::publish;
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{
    ActionResult, AuditKind, Command, DeadLetter, Direction, RuleFiring, ScaleAction, Trigger,
    TriggerSource,
};

const POLICY: &str = r#"
targets:
  web:
    rules: [q]
    max: 50
    backend: { sim: { initial: 2 } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 100", action: "add 1 instance", cooldown: 0 }
"#;

/// How long the broker is "away" in these tests: past the old retry budget
/// of the arbiter (5 attempts, about 6 s) is not needed to show the fix for
/// the evaluator, which dropped at the first failure; the arbiter test
/// waits for redeliveries instead.
const OUTAGE: Duration = Duration::from_secs(3);

async fn start() -> (NatsServer, async_nats::Client, Pipeline) {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let policy = Arc::new(from_yaml(POLICY, "broker.yaml").expect("policy"));
    let pipeline = Pipeline::start(&nats, policy).await;
    (nats, client, pipeline)
}

/// Provisions again what the test deleted (streams, buckets, and the
/// consumers that went with their streams), as an operator would with
/// `novactl provision`: the services never re-create any of it.
async fn provision(client: &async_nats::Client) {
    nova_e2e::provision(client, &nova_e2e::test_settings(), WAIT).await;
}

/// The arbiter's consumer, once it has made `times` deliveries (the one
/// trigger here, delivered again and again).
async fn wait_redelivered(client: &async_nats::Client, times: u64) {
    let js = async_nats::jetstream::new(client.clone());
    within(&format!("{times} redeliveries"), WAIT * 2, async {
        loop {
            if let Ok(stream) = js.get_stream(TRIGGERS_STREAM).await
                && let Ok(mut consumer) = stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(ARBITER_CONSUMER)
                    .await
                && let Ok(info) = consumer.info().await
                && info.delivered.consumer_sequence >= times
            {
                return;
            }
            // Polling a broker-side counter; there is no event for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_computed_while_its_streams_are_gone_is_kept_until_they_return() {
    let (_nats, client, pipeline) = start().await;
    let js = async_nats::jetstream::new(client.clone());
    // The trigger, command and audit streams and the arbiter's state vanish
    // (and the arbiter's and actuator's consumers with them).
    for stream in [TRIGGERS_STREAM, COMMANDS_STREAM, AUDIT_STREAM] {
        js.delete_stream(stream).await.expect("delete stream");
    }
    js.delete_key_value(ARBITER_BUCKET)
        .await
        .expect("delete bucket");
    let sample = serde_json::json!({"value": 500, "ts": nova_runtime::now_ms()});
    let payload = rmp_serde::to_vec_named(&sample).expect("encode");
    nova_e2e::publish(
        &client,
        subjects::metrics("web", "queue_depth"),
        payload,
        false,
    )
    .await;
    // The outage: its length, not a wait for anything.
    tokio::time::sleep(OUTAGE).await;
    provision(&client).await;

    let mut audit = AuditReader::new(&client).await;
    let fired = audit
        .find_or_wait("the evaluator's fired record", |r| {
            r.kind == AuditKind::Trigger
        })
        .await;
    let decision = audit
        .find_or_wait("the decision", |r| r.kind == AuditKind::Decision)
        .await;
    assert_eq!(decision.outcome, "scale", "{}", decision.reason);
    assert_eq!(decision.trigger_id, fired.trigger_id);
    let result = audit
        .find_or_wait("the result", |r| r.kind == AuditKind::Result)
        .await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    let triggers: Vec<Trigger> = stream_first(&client, TRIGGERS_STREAM, 1, WAIT).await;
    let commands: Vec<Command> = stream_first(&client, COMMANDS_STREAM, 1, WAIT).await;
    let results: Vec<ActionResult> = stream_first(&client, RESULTS_STREAM, 1, WAIT).await;
    assert_eq!((triggers.len(), commands.len(), results.len()), (1, 1, 1));
    assert_eq!(commands[0].desired, 3);
    let dead: Vec<DeadLetter> = stream_messages(&client, DEAD_STREAM).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_whose_command_stream_is_gone_is_retried_not_dead_lettered() {
    let (_nats, client, pipeline) = start().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut audit = AuditReader::new(&client).await;
    js.delete_stream(COMMANDS_STREAM)
        .await
        .expect("delete stream");
    let trigger = Trigger {
        v: nova_shared::wire::Version::CURRENT,
        id: "grow-1".into(),
        ts: nova_runtime::now_ms(),
        target: "web".into(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring {
            rule: "q.scale_up".into(),
            direction: Direction::Up,
            action: ScaleAction::Add(1),
            observed: Some(500.0),
            threshold: Some(100.0),
            condition: "queue_depth > 100".into(),
            held_secs: 0,
            reason: "queue_depth 500 > 100".into(),
        }],
        policy_revision: None,
        alert: None,
    };
    publish::publish_once(&js, subjects::triggers("web"), &trigger.id, &trigger)
        .await
        .expect("publish trigger");
    // The decision is stored, its command refused again and again: more
    // deliveries than the arbiter once allowed before dead-lettering.
    audit
        .wait_for("the stored decision", |r| r.kind == AuditKind::Decision)
        .await;
    wait_redelivered(&client, 7).await;
    provision(&client).await;
    let results: Vec<ActionResult> = stream_first(&client, RESULTS_STREAM, 1, WAIT).await;
    assert_eq!(results[0].desired, 3, "{results:?}");
    let commands: Vec<Command> = stream_messages(&client, COMMANDS_STREAM).await;
    assert_eq!(commands.len(), 1, "exactly one command: {commands:?}");
    let dead: Vec<DeadLetter> = stream_messages(&client, DEAD_STREAM).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    let decisions = audit
        .seen
        .iter()
        .filter(|r| r.kind == AuditKind::Decision)
        .count();
    assert_eq!(decisions, 1, "decided once");
    pipeline.stop().await;
}
