//! Liveness on the control plane: each service answers `nova.ctl.ping.<stage>`
//! once its input subscription is registered with the server, so "it
//! answered" means "messages published now will reach it".
//!
//! The same moment marks the stage listening for `/readyz` ([`is_listening`],
//! served by [`crate::http`]) and registers the stage with the NATS
//! micro-services API (async-nats's `service` support) as `nova-<stage>`, so
//! `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (`nats micro ls`) answer with
//! the stage's name and version. The stages' inputs are JetStream consumers
//! and plain subscriptions, not request/reply endpoints, so the service
//! carries no endpoint; its metadata names the stage and its ping subject.

use std::collections::HashMap;
use std::sync::Mutex;

use async_nats::service::ServiceExt;
use futures_util::StreamExt;
use nova_shared::subjects;
use nova_shared::wire::Stage;
use tokio::task::JoinHandle;

/// Stages of this process that listen now, each with its responder count.
static LISTENING: Mutex<Vec<(Stage, usize)>> = Mutex::new(Vec::new());

/// Whether `stage` answers pings in this process now.
pub fn is_listening(stage: &Stage) -> bool {
    LISTENING
        .lock()
        .map(|l| l.iter().any(|(s, n)| s == stage && *n > 0))
        .unwrap_or(false)
}

fn mark(stage: &Stage, change: isize) {
    if let Ok(mut listening) = LISTENING.lock() {
        match listening.iter_mut().find(|(s, _)| s == stage) {
            Some((_, n)) => *n = n.saturating_add_signed(change),
            None if change > 0 => listening.push((stage.clone(), 1)),
            None => {}
        }
    }
}

/// The NATS micro-services name of a stage: `nova-<stage>`.
pub fn service_name(stage: &Stage) -> String {
    format!("nova-{}", stage.as_str())
}

/// Answers pings until dropped.
pub struct PingResponder {
    task: JoinHandle<()>,
    stage: Stage,
    service: Option<async_nats::service::Service>,
}

impl Drop for PingResponder {
    fn drop(&mut self) {
        self.task.abort();
        mark(&self.stage, -1);
        if let (Some(service), Ok(runtime)) =
            (self.service.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(service.stop());
        }
    }
}

/// The ping subject of a stage.
pub fn subject(stage: Stage) -> String {
    subjects::control(&format!("ping.{}", stage.as_str()))
}

/// Flushes (so every subscription made so far is registered), then answers
/// pings for `stage` with `<stage> <instance id>`, so a caller that collects
/// every reply can count the replicas that are listening.
pub async fn respond(
    client: &async_nats::Client,
    stage: Stage,
) -> Result<PingResponder, async_nats::SubscribeError> {
    let ping_subject = subject(stage.clone());
    let mut pings = client.subscribe(ping_subject.clone()).await?;
    // The micro-services registration is for operators' tools: a failure
    // there is logged and the stage still runs.
    let service = match client
        .service_builder()
        .description(format!("NovaCron {} stage", stage.as_str()))
        .metadata(HashMap::from([
            ("stage".to_string(), stage.as_str().to_string()),
            ("ping".to_string(), ping_subject),
        ]))
        .start(service_name(&stage), env!("CARGO_PKG_VERSION"))
        .await
    {
        Ok(service) => Some(service),
        Err(error) => {
            tracing::warn!(%error, stage = stage.as_str(), "cannot register with the NATS micro-services API");
            None
        }
    };
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "flush before answering pings failed");
    }
    let client = client.clone();
    let answer = format!("{} {}", stage.as_str(), crate::unique_id("instance"));
    mark(&stage, 1);
    Ok(PingResponder {
        task: tokio::spawn(async move {
            while let Some(ping) = pings.next().await {
                if let Some(reply) = ping.reply {
                    let _ = client.publish(reply, answer.clone().into()).await;
                }
            }
        }),
        stage,
        service,
    })
}
