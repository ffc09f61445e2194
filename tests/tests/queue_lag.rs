//! JetStream consumer lag as queue depth (issue 13, part 2), on a real
//! stream: the test publishes a backlog to a stream whose durable consumer
//! a target's `queue_depth:` block names; ingest polls the consumer's
//! pending plus ack-pending and the target scales up. Then the test
//! consumes and acks the whole backlog, the lag falls to zero, and the
//! target scales down. Every stage runs (in this process); nothing but the
//! backlog is published by the test.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use nova_e2e::{AuditReader, NatsServer, Pipeline, WAIT, within};
use nova_shared::policy::from_yaml;
use nova_shared::wire::{AuditKind, AuditRecord, Stage};

const BACKLOG: usize = 120;

// A rule that still holds fires again after 2 s (the scale-down first
// meets the scale-up's "up beats down" window).
const POLICY: &str = r#"
evaluation: { refire_secs: 2 }
targets:
  workers:
    rules: [backlog]
    min: 1
    max: 5
    backend: { sim: { initial: 1 } }
    queue_depth: { stream: JOBS, consumer: workers, poll_every: 1s }
horizontal_scaling_rules:
  backlog:
    scale_up: { condition: "max_queue_depth > 100", action: "add 4 instances", cooldown: 0, max_instances: 5 }
    scale_down: { condition: "max_queue_depth < 5", action: "remove 4 instances", cooldown: 0, min_instances: 1 }
"#;

fn scaled(record: &AuditRecord, up: bool) -> bool {
    record.stage == Stage::Arbiter
        && record.kind == AuditKind::Decision
        && record.outcome == "scale"
        && record.target == "workers"
        && match (record.from, record.to) {
            (Some(from), Some(to)) => (to > from) == up && to != from,
            _ => false,
        }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_then_draining_consumer_scales_its_target_up_then_down() {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    let (stream, consumer) = nova_e2e::jobs_stream(&js).await;
    let mut audit = AuditReader::new(&client).await;
    let policy = Arc::new(from_yaml(POLICY, "queue_lag.yaml").expect("policy"));
    let pipeline = Pipeline::start(&nats, policy).await;

    // The backlog grows: pending 120 > 100.
    for i in 0..BACKLOG {
        js.publish(format!("jobs.{}", i % 7), format!("job {i}").into())
            .await
            .expect("publish a job")
            .await
            .expect("job stored");
    }
    let up = audit
        .wait_for("a scale-up of workers on its backlog", |r| scaled(r, true))
        .await;
    assert_eq!((up.from, up.to), (Some(1), Some(5)), "{}", up.reason);
    assert!(
        up.reason.contains("queue_depth"),
        "the decision names the metric: {}",
        up.reason
    );
    let observed = up.observed.expect("the decision carries the reading");
    assert!(
        observed > 100.0 && observed <= BACKLOG as f64,
        "observed lag {observed}"
    );
    audit
        .wait_for("the scale-up's result", |r| {
            r.stage == Stage::Actuator && r.kind == AuditKind::Result && r.outcome == "succeeded"
        })
        .await;

    // The workers drain it: every job fetched and acked (double-acked, so
    // the server has counted each ack before the lag is read again).
    let mut done = 0;
    within("the backlog to be consumed", WAIT, async {
        while done < BACKLOG {
            let mut batch = consumer
                .fetch()
                .max_messages(50)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .expect("fetch");
            while let Some(message) = batch.next().await {
                message
                    .expect("a job")
                    .double_ack()
                    .await
                    .expect("ack a job");
                done += 1;
            }
        }
    })
    .await;
    let info = stream
        .consumer_info("workers")
        .await
        .expect("consumer info");
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));

    let down = audit
        .wait_for("a scale-down of workers once drained", |r| scaled(r, false))
        .await;
    assert_eq!((down.from, down.to), (Some(5), Some(1)), "{}", down.reason);
    assert!(down.observed.expect("the reading") < 5.0, "{}", down.reason);
    pipeline.stop().await;
}
