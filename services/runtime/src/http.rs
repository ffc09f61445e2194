//! The one HTTP listener of every service, on `--metrics-addr`:
//!
//! - `/metrics`: the process's Prometheus registry, rendered on each scrape.
//! - `/healthz`: 200 while the process runs (a liveness probe: a process
//!   that cannot answer this is stuck and should be restarted).
//! - `/readyz`: 200 once the NATS connection is up and every stage this
//!   process runs has registered its input (the moment it answers
//!   `nova.ctl.ping.<stage>`, see [`crate::ping`]); 503 with a one-line
//!   reason otherwise, e.g. while NATS is disconnected.
//!
//! axum (on the hyper 1 stack the AWS SDK already brings) rather than the
//! exporter's own listener, so the three paths share one port and probes
//! can reach the same socket Prometheus scrapes.

use std::net::SocketAddr;
use std::sync::Arc;

use async_nats::connection::State as Connection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use nova_shared::wire::Stage;
use thiserror::Error;

/// The listener could not be opened.
#[derive(Debug, Error)]
#[error(
    "cannot listen for /metrics, /healthz and /readyz on {addr}: {source}; pick a free address with --metrics-addr or NOVA_METRICS_ADDR"
)]
pub struct HttpError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// What the endpoints read.
#[derive(Clone)]
struct Probe {
    metrics: PrometheusHandle,
    client: async_nats::Client,
    stages: Arc<[Stage]>,
}

/// Binds `addr` (so a taken port fails start-up, not later), then serves
/// the three paths on a task for the rest of the process's life.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    client: async_nats::Client,
    stages: &[Stage],
) -> Result<SocketAddr, HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError { addr, source })?;
    let probe = Probe {
        metrics,
        client,
        stages: stages.into(),
    };
    let router = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(probe);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, %bound, "the metrics and probe listener stopped");
        }
    });
    Ok(bound)
}

async fn metrics_page(State(probe): State<Probe>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        probe.metrics.render(),
    )
}

async fn ready(State(probe): State<Probe>) -> (StatusCode, String) {
    let listening: Vec<(Stage, bool)> = probe
        .stages
        .iter()
        .map(|stage| (stage.clone(), crate::ping::is_listening(stage)))
        .collect();
    match readiness(&probe.client.connection_state(), &listening) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// Ready when connected and every stage listens; otherwise the first
/// reason, as one line.
fn readiness(connection: &Connection, listening: &[(Stage, bool)]) -> Result<(), String> {
    match connection {
        Connection::Connected => {}
        Connection::Pending => return Err("not ready: NATS not connected yet".into()),
        Connection::Disconnected => {
            return Err("not ready: NATS disconnected, reconnecting".into());
        }
    }
    match listening.iter().find(|(_, up)| !up) {
        Some((stage, _)) => Err(format!(
            "not ready: {} has not registered its input subscription yet",
            stage.as_str()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_table() {
        let up = |s: Stage| (s, true);
        let down = |s: Stage| (s, false);
        let cases: Vec<(Connection, Vec<(Stage, bool)>, Result<(), &str>)> = vec![
            (Connection::Connected, vec![up(Stage::Arbiter)], Ok(())),
            (
                Connection::Connected,
                vec![up(Stage::Ingest), down(Stage::Audit)],
                Err("not ready: audit has not registered its input subscription yet"),
            ),
            (
                Connection::Disconnected,
                vec![up(Stage::Arbiter)],
                Err("not ready: NATS disconnected, reconnecting"),
            ),
            (
                Connection::Pending,
                vec![down(Stage::Arbiter)],
                Err("not ready: NATS not connected yet"),
            ),
        ];
        for (connection, listening, expected) in cases {
            assert_eq!(
                readiness(&connection, &listening),
                expected.map_err(String::from),
                "{connection:?} {listening:?}"
            );
        }
    }
}
