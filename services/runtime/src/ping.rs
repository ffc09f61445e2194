//! Liveness on the control plane: each service answers `nova.ctl.ping.<stage>`
//! once its input subscription is registered with the server, so "it
//! answered" means "messages published now will reach it".

use futures_util::StreamExt;
use nova_shared::subjects;
use nova_shared::wire::Stage;
use tokio::task::JoinHandle;

/// Answers pings until dropped.
pub struct PingResponder(JoinHandle<()>);

impl Drop for PingResponder {
    fn drop(&mut self) {
        self.0.abort();
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
    let mut pings = client.subscribe(subject(stage.clone())).await?;
    if let Err(error) = client.flush().await {
        tracing::warn!(%error, "flush before answering pings failed");
    }
    let client = client.clone();
    let answer = format!("{} {}", stage.as_str(), crate::unique_id("instance"));
    Ok(PingResponder(tokio::spawn(async move {
        while let Some(ping) = pings.next().await {
            if let Some(reply) = ping.reply {
                let _ = client.publish(reply, answer.clone().into()).await;
            }
        }
    })))
}
