//! Publishing computed triggers: in order per target, retried while the
//! broker is away, never dropped for a broker error.
//!
//! Each target has a queue and a task that publishes its triggers one after
//! the other, each with its `fired` audit records, retrying with back-off
//! (at most 1 s apart) until JetStream stores them. The evaluation loop only
//! enqueues, so it goes on reading samples while a stream has no leader.
//!
//! Why per target, in order: a trigger stored after a later one of its
//! target is decided after it, and the arbiter does not act on a firing
//! older than the target's last action. The cluster chaos test saw two
//! thirds of the firings of an outage end that way when retries ran side by
//! side. Queues of different targets do not wait for each other.
//!
//! A trigger still unstored [`TRIGGER_RELEVANCE`] after it was computed is
//! given up: by then newer evaluations of the same condition have taken its
//! place. What is given up is counted (`nova_given_up_total{stage}`) and
//! logged. A full queue ([`QUEUE_DEPTH`]) makes the evaluation loop wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nova_runtime::publish::{self, Auditor, PublishError};
use nova_runtime::retry::Backoff;
use nova_runtime::telemetry::names;
use nova_shared::subjects;
use nova_shared::wire::{AuditRecord, Stage, Trigger};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

/// How long a computed trigger is worth publishing while the broker keeps
/// refusing it (a stream without a leader, a timeout).
pub const TRIGGER_RELEVANCE: Duration = Duration::from_secs(600);

/// Triggers waiting per target before the evaluation loop waits too.
pub const QUEUE_DEPTH: usize = 1024;

/// The longest wait between two attempts: a leader election lasts seconds,
/// and firings must flow again soon after it (see the arbiter's `RETRY_CAP`).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The per-target publishing queues of one evaluator.
pub struct Outbox {
    js: async_nats::jetstream::Context,
    auditor: Auditor,
    queues: HashMap<String, mpsc::Sender<(Trigger, Instant)>>,
    workers: JoinSet<()>,
    /// Triggers queued and neither stored nor given up yet.
    outstanding: Arc<AtomicU64>,
}

impl Outbox {
    /// An outbox publishing through `js`, auditing through `auditor`.
    pub fn new(js: async_nats::jetstream::Context, auditor: Auditor) -> Self {
        Outbox {
            js,
            auditor,
            queues: HashMap::new(),
            workers: JoinSet::new(),
            outstanding: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `trigger` behind its target's earlier ones.
    pub async fn send(&mut self, trigger: Trigger) {
        let queue = match self.queues.get(&trigger.target) {
            Some(queue) => queue,
            None => {
                let (queue, waiting) = mpsc::channel(QUEUE_DEPTH);
                let worker = publish_in_order(
                    self.js.clone(),
                    self.auditor.clone(),
                    waiting,
                    self.outstanding.clone(),
                );
                self.workers
                    .spawn(worker.instrument(tracing::Span::current()));
                self.queues.entry(trigger.target.clone()).or_insert(queue)
            }
        };
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        // The worker ends only when its queue is closed, which only
        // `close` does, so the send cannot fail.
        let _ = queue.send((trigger, Instant::now())).await;
    }

    /// Closes the queues and gives their workers up to `grace` to store what
    /// they hold; returns how many triggers were left unstored (counted).
    pub async fn close(mut self, grace: Duration) -> u64 {
        self.queues.clear();
        let workers = &mut self.workers;
        let _ = tokio::time::timeout(grace, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        self.workers.abort_all();
        let left = self.outstanding.load(Ordering::Relaxed);
        metrics::counter!(names::GIVEN_UP, "stage" => "evaluator").increment(left);
        left
    }
}

/// One target's worker: publishes its triggers in the order queued.
async fn publish_in_order(
    js: async_nats::jetstream::Context,
    auditor: Auditor,
    mut waiting: mpsc::Receiver<(Trigger, Instant)>,
    outstanding: Arc<AtomicU64>,
) {
    while let Some((trigger, computed)) = waiting.recv().await {
        let mut backoff = Backoff::new(Duration::from_millis(200), MAX_BACKOFF);
        loop {
            match emit(&js, &auditor, &trigger).await {
                Ok(()) => break,
                Err(error) if computed.elapsed() >= TRIGGER_RELEVANCE => {
                    metrics::counter!(names::GIVEN_UP, "stage" => "evaluator").increment(1);
                    tracing::error!(
                        trigger = trigger.id,
                        "trigger given up {} s after it was computed: {error}",
                        computed.elapsed().as_secs()
                    );
                    break;
                }
                Err(error) => {
                    metrics::counter!(names::RETRIES, "stage" => "evaluator").increment(1);
                    tracing::warn!(trigger = trigger.id, "will retry: {error}");
                    backoff.wait().await;
                }
            }
        }
        outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What failed while publishing a trigger, named for the log.
#[derive(Debug, thiserror::Error)]
enum EmitError {
    #[error("trigger not stored yet: {0}")]
    Trigger(PublishError),
    #[error("trigger stored, its `fired` audit record not yet: {0}")]
    Audit(PublishError),
}

/// Publishes a trigger and its audit records (both de-duplicated by id, so
/// a retry after a partial success repeats nothing).
async fn emit(
    js: &async_nats::jetstream::Context,
    auditor: &Auditor,
    trigger: &Trigger,
) -> Result<(), EmitError> {
    publish::publish_once(
        js,
        subjects::triggers(&trigger.target),
        &trigger.id,
        trigger,
    )
    .await
    .map_err(EmitError::Trigger)?;
    metrics::counter!(names::TRIGGERS, "target" => trigger.target.clone()).increment(1);
    for firing in &trigger.firings {
        let record = AuditRecord::fired(Stage::Evaluator, trigger, firing);
        auditor.record(&record).await.map_err(EmitError::Audit)?;
    }
    Ok(())
}
