//! The real Alertmanager (Debian's `prometheus-alertmanager`, or
//! `NOVA_ALERTMANAGER`) on free loopback ports with a temp store, killed on
//! drop; alone or as a member of a cluster. Plus the small HTTP client the
//! webhook tests use (hyper, as the actuator's health checks).

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::process::{Child, Command};

use crate::{WAIT, within};

/// A free loopback port (bound and released; the OS hands it out again
/// only after it cycles through the rest).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An HTTP answer: status and body text.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body, as text.
    pub body: String,
}

/// One HTTP request, answered within [`WAIT`].
pub async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Answer, String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = within(&format!("{method} {url}"), WAIT, client.request(request))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = within(
        &format!("the body of {method} {url}"),
        WAIT,
        response.into_body().collect(),
    )
    .await
    .map_err(|e| e.to_string())?
    .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One Alertmanager process.
pub struct Alertmanager {
    _child: Child,
    _store: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// `127.0.0.1:<port>` of its cluster listener, when in a cluster.
    pub cluster: Option<String>,
}

/// Its routing: everything to the bridge at `webhook_url`, with
/// `group_wait: 1s` and short intervals so a repeat comes within seconds;
/// with `token`, as a bearer token, and with `ca_file`, trusting that
/// certificate for an HTTPS bridge.
pub fn config(
    webhook_url: &str,
    token: Option<&str>,
    ca_file: Option<&Path>,
    repeat_interval: &str,
) -> String {
    let mut http_config = String::new();
    if let Some(t) = token {
        http_config += &format!("\n          authorization:\n            credentials: {t:?}");
    }
    if let Some(ca) = ca_file {
        let ca = ca.display().to_string();
        http_config += &format!("\n          tls_config:\n            ca_file: {ca:?}");
    }
    if !http_config.is_empty() {
        http_config = format!("\n        http_config:{http_config}");
    }
    format!(
        r#"route:
  receiver: nova
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: {repeat_interval}
receivers:
  - name: nova
    webhook_configs:
      - url: {webhook_url:?}
        send_resolved: true{http_config}
"#
    )
}

impl Alertmanager {
    /// Starts one with `config` (YAML), alone when `peers` is `None`, else
    /// in a cluster with `peers` (cluster addresses; empty for the first).
    pub async fn start(config: &str, peers: Option<&[String]>) -> Alertmanager {
        let store = tempfile::tempdir().expect("temp dir");
        let file = store.path().join("alertmanager.yml");
        std::fs::write(&file, config).expect("write config");
        let port = free_port();
        let mut command = Command::new(crate::tool("prometheus-alertmanager", "NOVA_ALERTMANAGER"));
        command
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.path={}", store.path().display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let cluster = match peers {
            None => {
                command.arg("--cluster.listen-address=");
                None
            }
            Some(peers) => {
                let address = format!("127.0.0.1:{}", free_port());
                command
                    .arg(format!("--cluster.listen-address={address}"))
                    .arg(format!("--cluster.advertise-address={address}"))
                    // A pair on one machine settles at once; the default
                    // minute would only delay the first notification.
                    .arg("--cluster.settle-timeout=2s")
                    // The second member waits `peer-timeout` for the first
                    // to send before it sends itself, and skips if the
                    // first's notification log entry has reached it by
                    // then. Short, and gossip and full syncs slow (the
                    // join itself syncs at once), so that entry never
                    // arrives in time and both deliver, as a pair whose
                    // gossip lags does: the bridge must de-duplicate.
                    // (With 50 ms gossip the entry sometimes won the race,
                    // and the second member rightly sent nothing.)
                    .arg("--cluster.gossip-interval=10s")
                    .arg("--cluster.pushpull-interval=60s")
                    .arg("--cluster.peer-timeout=10ms");
                for peer in peers {
                    command.arg(format!("--cluster.peer={peer}"));
                }
                Some(address)
            }
        };
        // Its log stays beside its store while it runs (for a failing test).
        let log = std::fs::File::create(store.path().join("alertmanager.log")).expect("log file");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Alertmanager: {e}"));
        let am = Alertmanager {
            _child: child,
            _store: store,
            url: format!("http://127.0.0.1:{port}"),
            cluster,
        };
        let ready = format!("{}/-/ready", am.url);
        within("Alertmanager to be ready", WAIT, async {
            loop {
                if let Ok(answer) = http("GET", &ready, &[], Vec::new()).await
                    && answer.status == 200
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        am
    }

    /// Waits until its cluster has `peers` members and has settled (its v2
    /// status says `ready`): before that it holds notifications back, and
    /// one that settles after its peer sent finds the peer's entry and
    /// sends nothing.
    pub async fn wait_cluster(&self, peers: usize) {
        let status = format!("{}/api/v2/status", self.url);
        within(&format!("a settled cluster of {peers}"), WAIT, async {
            loop {
                if let Ok(answer) = http("GET", &status, &[], Vec::new()).await
                    && let Ok(doc) = serde_json::from_str::<serde_json::Value>(&answer.body)
                    && doc["cluster"]["status"] == "ready"
                    && doc["cluster"]["peers"].as_array().map(Vec::len) == Some(peers)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }

    /// Posts alerts (a JSON array) to its v2 API.
    pub async fn post_alerts(&self, alerts: &serde_json::Value) {
        let answer = http(
            "POST",
            &format!("{}/api/v2/alerts", self.url),
            &[("Content-Type", "application/json")],
            serde_json::to_vec(alerts).expect("json"),
        )
        .await
        .expect("Alertmanager answers");
        assert_eq!(answer.status, 200, "posting alerts: {}", answer.body);
    }

    /// The sum of one of its own counters over every label set (its
    /// `/metrics`), e.g. `alertmanager_notifications_total`, for lines
    /// containing `filter`.
    pub async fn counter(&self, name: &str, filter: &str) -> f64 {
        let answer = http("GET", &format!("{}/metrics", self.url), &[], Vec::new())
            .await
            .expect("Alertmanager metrics");
        answer
            .body
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until its webhook notifications (sent, failed or not) reach `count`.
    pub async fn wait_notifications(&self, count: f64) {
        within(
            &format!("{count} webhook notifications from {}", self.url),
            WAIT,
            async {
                while self
                    .counter(
                        "alertmanager_notifications_total",
                        "integration=\"webhook\"",
                    )
                    .await
                    < count
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        )
        .await;
    }
}

/// `unix_ms` as RFC 3339 (UTC), as Alertmanager's API takes times.
pub fn rfc3339(unix_ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .expect("a time in range");
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}
