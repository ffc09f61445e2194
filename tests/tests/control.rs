//! The arbiter's control plane on a task of its own: requests are answered
//! promptly while the trigger loop is blocked on a slow trigger (a capacity
//! read against a target whose actuator never answers, 10 s), an unknown
//! verb is refused by name, and the per-verb subjects still take the
//! untagged requests clients sent before the verb was typed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use nova_e2e::{NatsServer, WAIT, connect, control, wait_ready, within};
use nova_runtime::nats::CAPACITY_BUCKET;
use nova_runtime::shutdown;
use nova_shared::codec::{self, Encoding};
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{
    CAPACITY_VERB, CapacityRecord, ControlReply, ControlRequest, Direction, DirectionRequest,
    ErrorReply, RuleFiring, ScaleAction, Stage, Trigger, TriggerSource,
};

const POLICY: &str = r#"
targets:
  slow: { rules: [q], max: 20, backend: { sim: { initial: 2 } } }
  fast: { rules: [q], max: 20, backend: { sim: { initial: 3 } } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 1000", action: "add 1 instance" }
"#;

/// Promptly: far below the 10 s capacity read the trigger loop is in.
const PROMPT: Duration = Duration::from_secs(1);

async fn timed(client: &async_nats::Client, request: ControlRequest) -> (ControlReply, Duration) {
    let started = Instant::now();
    let reply = control(client, request).await;
    (reply, started.elapsed())
}

/// A raw request and its reply, for payloads the typed helper cannot send.
async fn raw(client: &async_nats::Client, subject: String, json: &str) -> async_nats::Message {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", codec::CONTENT_TYPE_JSON);
    let asked = client.request_with_headers(subject.clone(), headers, json.to_string().into());
    within(&format!("an answer on {subject}"), WAIT, asked)
        .await
        .expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_requests_are_answered_while_a_trigger_waits_on_a_silent_actuator() {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    // A silent actuator: it takes every capacity request and never answers,
    // so the arbiter's read of a never-seen target waits its full 10 s.
    let mut capacity_asks = client
        .subscribe(subjects::control(CAPACITY_VERB))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    // `fast` has a capacity record; `slow` has none.
    let record = CapacityRecord {
        target: "fast".into(),
        desired: 3,
        observed_ms: nova_runtime::now_ms(),
        backend: "sim".into(),
        ..Default::default()
    };
    let capacities = js
        .get_key_value(CAPACITY_BUCKET)
        .await
        .expect("capacity bucket");
    capacities
        .put("fast", codec::encode(&record).expect("encode").into())
        .await
        .expect("store the record");

    // The arbiter alone.
    let policy = Arc::new(from_yaml(POLICY, "p.yaml").expect("policy"));
    let (stop, signal) = shutdown::channel();
    let arbiter_client = connect(&nats.url, "arbiter").await;
    let arbiter = tokio::spawn(async move {
        let config = nova_arbiter::Config::new(policy);
        nova_arbiter::run(config, arbiter_client, signal.signal())
            .await
            .expect("arbiter");
    });
    wait_ready(&nats.url, Stage::Arbiter, 1).await;

    // A trigger for `slow`: the arbiter asks for its capacity, and waits.
    let trigger = Trigger {
        v: nova_shared::wire::Version::CURRENT,
        id: "t-slow-1".into(),
        ts: nova_runtime::now_ms(),
        target: "slow".into(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring {
            rule: "q.scale_up".into(),
            direction: Direction::Up,
            action: ScaleAction::Add(1),
            observed: Some(1500.0),
            threshold: Some(1000.0),
            condition: "queue_depth > 1000".into(),
            held_secs: 0,
            reason: "max_queue_depth 1500 > 1000".into(),
        }],
        policy_revision: None,
        alert: None,
    };
    nova_runtime::publish::publish_once(&js, subjects::triggers("slow"), &trigger.id, &trigger)
        .await
        .expect("publish the trigger");
    let asked = within("the arbiter's capacity request", WAIT, capacity_asks.next())
        .await
        .expect("a capacity request");
    assert_eq!(&asked.payload[..], b"slow");
    let in_hand = Instant::now();

    // Meanwhile every request is answered at once.
    let (status, status_took) = timed(&client, ControlRequest::status(Some("fast".into()))).await;
    let took = status_took;
    assert!(status.ok, "{}", status.message);
    assert_eq!(
        status.targets[0].capacity.as_ref().map(|c| c.desired),
        Some(3)
    );
    assert!(took < PROMPT, "status of fast took {took:?}");
    let pause = ControlRequest::Pause(DirectionRequest {
        target: "fast".into(),
        direction: Some(Direction::Down),
        reason: Some("drill".into()),
    });
    let (paused, pause_took) = timed(&client, pause).await;
    let took = pause_took;
    assert!(
        paused.ok && paused.targets[0].paused_down && !paused.targets[0].paused_up,
        "{}",
        paused.message
    );
    assert!(took < PROMPT, "pause took {took:?}");

    // Every target: `slow` has no record, so the status asks an actuator
    // for 2 s and says none answered; still within the control deadline.
    let (all, all_took) = timed(&client, ControlRequest::status(None)).await;
    let took = all_took;
    assert!(all.ok, "{}", all.message);
    assert!(
        took < nova_arbiter::CONTROL_DEADLINE,
        "status of every target took {took:?}"
    );
    let slow = all
        .targets
        .iter()
        .find(|t| t.target == "slow")
        .expect("slow");
    assert_eq!(
        slow.backend_error.as_deref(),
        Some("no actuator answered within 2 s")
    );
    assert_eq!(slow.last_decision, None, "the trigger is still in hand");

    // An unknown verb is refused by name, and the reply reads as an error reply.
    let unknown = raw(
        &client,
        subjects::ARBITER_CONTROL.into(),
        r#"{"verb": "evacuate", "target": "fast"}"#,
    )
    .await;
    let reply: ControlReply = codec::decode(&unknown.payload, Encoding::MsgPack).expect("reply");
    assert!(!reply.ok);
    assert!(
        reply.message.contains(r#"unknown verb "evacuate""#),
        "{}",
        reply.message
    );
    let error: ErrorReply = codec::decode(&unknown.payload, Encoding::MsgPack).expect("error");
    assert_eq!(error.error, reply.message);

    // What clients sent before the verb was typed: untagged, on its subject.
    let legacy = raw(
        &client,
        subjects::control("resume"),
        r#"{"target": "fast"}"#,
    )
    .await;
    let resumed: ControlReply = codec::decode(&legacy.payload, Encoding::MsgPack).expect("reply");
    assert!(
        resumed.ok && !resumed.targets[0].paused_down,
        "{}",
        resumed.message
    );
    let legacy = raw(&client, subjects::control("status"), "{}").await;
    let legacy: ControlReply = codec::decode(&legacy.payload, Encoding::MsgPack).expect("reply");
    assert_eq!(legacy.targets.len(), 2, "{}", legacy.message);
    let in_hand_for = in_hand.elapsed();
    assert!(
        in_hand_for < Duration::from_secs(10),
        "all of it answered while the trigger was in hand ({in_hand_for:?})"
    );

    // The trigger is decided once its capacity read gives up.
    let decided = within("the slow trigger's decision", WAIT, async {
        loop {
            let status = control(&client, ControlRequest::status(Some("slow".into()))).await;
            if let Some(reason) = status.targets[0].last_decision.clone() {
                return reason;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    assert!(
        decided.contains("capacity of slow is unknown") && decided.contains("no actuator answered"),
        "{decided}"
    );
    eprintln!(
        "trigger in hand since its capacity request: {:?} when the test saw its decision; meanwhile \
         status of fast {status_took:?}, pause {pause_took:?}, status of all {all_took:?}",
        in_hand.elapsed(),
    );
    stop.trigger();
    within("the arbiter to stop", WAIT, arbiter)
        .await
        .expect("arbiter task");
}
