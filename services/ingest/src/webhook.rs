//! The Alertmanager webhook bridge: `POST /alertmanager` on a listener of
//! its own (`--webhook-addr`), so that its TLS and credentials apply to the
//! webhook and not to the Kubernetes probes of the ops server.
//!
//! A request goes through, in order:
//! 1. credentials (`Authorization: Bearer` or `Basic`, when configured):
//!    401 otherwise, with a `WWW-Authenticate` header; nothing is kept;
//! 2. the body limit: 413 past it, nothing is kept (the payload is not
//!    read past the limit, so there is nothing whole to dead-letter);
//! 3. parsing ([`nova_shared::alert::parse_webhook`]): 400 with the reason,
//!    and the body goes to `nova.dead.ingest`;
//! 4. routing through the live policy's `alert_rules`: one trigger per
//!    matching (alert, rule) on `nova.triggers.<target>` with a `Nats-Msg-Id`
//!    derived from (fingerprint, startsAt, status, rule), then its `fired`
//!    audit record; an alert no rule takes is valid input, not a dead
//!    letter: it is counted (`nova_webhook_alerts_total{outcome="unmatched"}`)
//!    and logged (it names no target to audit it under);
//! 5. 200 once every publish is acknowledged by its stream. A publish that
//!    fails is retried (bounded back-off, [`PUBLISH_TRIES`]); if it still
//!    fails (NATS down, no stream leader) the reply is 503, so Alertmanager
//!    sends the notification again; what was already stored is
//!    de-duplicated by its id then.
//!
//! TLS: rustls (ring, as the rest of the workspace) through tokio-rustls,
//! under axum's own `serve` via its `Listener` trait ([`TlsListener`]):
//! no server crate beyond axum, and the handshakes run in tasks of their
//! own so one slow client does not hold the accept loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nova_runtime::dead::DeadLetters;
use nova_runtime::publish::{Auditor, PublishError, publish_once};
use nova_runtime::reload::LivePolicy;
use nova_runtime::retry::Backoff;
use nova_runtime::telemetry::names;
use nova_shared::alert::{self, AlertRule};
use nova_shared::subjects;
use nova_shared::wire::{AuditRecord, Stage, Trigger};
use thiserror::Error;

/// The path Alertmanager posts to.
pub const PATH: &str = "/alertmanager";
/// The body limit unless configured: Alertmanager's payloads are a few KiB
/// per alert; 1 MiB takes a group of hundreds.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;
/// Tries of each publish before the request is answered 503.
pub const PUBLISH_TRIES: usize = 3;
/// The subject dead letters of the bridge name as where they came from.
const SOURCE: &str = "POST /alertmanager";

/// How a client proves it may post.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// Anyone may post (a listener on a private network).
    #[default]
    None,
    /// `Authorization: Bearer <token>` (Alertmanager's `authorization.credentials`).
    Bearer(String),
    /// `Authorization: Basic` (Alertmanager's `basic_auth`).
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    // Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(..)"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, ..)"),
        }
    }
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The webhook listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Credentials required of a client.
    pub auth: Auth,
    /// Serve HTTPS with this certificate; none: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Largest body taken, bytes.
    pub body_limit_bytes: usize,
}

impl WebhookConfig {
    /// Plain HTTP on `addr`, no credentials, the default body limit.
    pub fn new(addr: SocketAddr) -> Self {
        WebhookConfig {
            addr,
            auth: Auth::None,
            tls: None,
            body_limit_bytes: DEFAULT_BODY_LIMIT,
        }
    }
}

/// The webhook listener could not start.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// The address is taken or not ours.
    #[error("cannot listen for webhooks on {addr}: {source}; pick another --webhook-addr")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file could not be read.
    #[error("cannot read the webhook's TLS {what} from {path}: {reason}")]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the pair.
    #[error("the webhook's TLS certificate and key do not make a server config: {0}")]
    Tls(#[source] rustls::Error),
    /// The server stopped with an error.
    #[error("the webhook server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// A bound webhook listener, not yet serving.
pub struct Bridge {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: WebhookConfig,
}

impl Bridge {
    /// Binds the address and loads the TLS files: every start-up problem
    /// shows here, before anything is served.
    pub async fn bind(config: WebhookConfig) -> Result<Bridge, WebhookError> {
        let tls = config.tls.as_ref().map(acceptor).transpose()?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| WebhookError::Bind {
                addr: config.addr,
                source,
            })?;
        Ok(Bridge {
            listener,
            tls,
            config,
        })
    }

    /// The address it listens on (the port, when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then finishes the requests in hand (each
    /// one ends once its publishes are acked or given up).
    pub async fn serve(
        self,
        policy: LivePolicy,
        client: async_nats::Client,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebhookError> {
        let js = nova_runtime::nats::jetstream(&client);
        let state = Arc::new(Shared {
            policy,
            auth: self.config.auth.clone(),
            body_limit_bytes: self.config.body_limit_bytes,
            dead: DeadLetters::new(js.clone(), Stage::Ingest),
            auditor: Auditor::new(js.clone(), Stage::Ingest),
            js,
        });
        let app = axum::Router::new()
            .route(PATH, axum::routing::post(receive))
            .with_state(state);
        tracing::info!(addr = %self.config.addr, tls = self.tls.is_some(), "webhook listening");
        match self.tls {
            None => axum::serve(self.listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(WebhookError::Serve),
            Some(tls) => axum::serve(TlsListener::new(self.listener, tls), app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(WebhookError::Serve),
        }
    }
}

fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, WebhookError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pem_error = |what, path: &PathBuf| {
        let path = path.clone();
        move |e: rustls_pki_types::pem::Error| WebhookError::Pem {
            what,
            path,
            reason: e.to_string(),
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(pem_error("certificate", &files.cert))?
        .collect::<Result<_, _>>()
        .map_err(pem_error("certificate", &files.cert))?;
    if certs.is_empty() {
        return Err(WebhookError::Pem {
            what: "certificate",
            path: files.cert.clone(),
            reason: "no CERTIFICATE block in it".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem_error("key", &files.key))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(WebhookError::Tls)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(WebhookError::Tls)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// TCP connections handed to axum once their TLS handshake is done; each
/// handshake in a task of its own, within [`HANDSHAKE_TIMEOUT`].
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: std::io::Result<SocketAddr>,
    _accepting: tokio::task::JoinHandle<()>,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsListener {
    fn new(listener: tokio::net::TcpListener, tls: tokio_rustls::TlsAcceptor) -> Self {
        let local = listener.local_addr();
        let (sender, ready) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors, say: wait, as axum's own loop does.
                        tracing::warn!(%error, "webhook accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let tls = tls.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(%peer, %error, "webhook TLS handshake failed");
                        }
                        Err(_) => tracing::warn!(%peer, "webhook TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener {
            ready,
            local,
            _accepting: accepting,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self._accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task ended: it never does while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(addr) => Ok(*addr),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

struct Shared {
    policy: LivePolicy,
    auth: Auth,
    body_limit_bytes: usize,
    dead: DeadLetters,
    auditor: Auditor,
    js: async_nats::jetstream::Context,
}

fn reply(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if let Err(why) = check_auth(&shared.auth, &headers) {
        metrics::counter!(names::WEBHOOK_REQUESTS, "outcome" => "unauthorized").increment(1);
        tracing::warn!(%why, "webhook request refused");
        let challenge = match shared.auth {
            Auth::Basic { .. } => "Basic realm=\"nova-ingest\"",
            _ => "Bearer",
        };
        let mut response = reply(StatusCode::UNAUTHORIZED, why);
        if let Ok(value) = challenge.parse() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        return response;
    }
    // Read no further than the limit: a larger body is refused whole.
    let limit = shared.body_limit_bytes;
    let body: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(error) => {
            metrics::counter!(names::WEBHOOK_REQUESTS, "outcome" => "too_large").increment(1);
            let why = format!(
                "the body is over the limit of {limit} bytes ({error}); raise --webhook-body-limit or set the receiver's max_alerts"
            );
            tracing::warn!(%why, "webhook request refused");
            return reply(StatusCode::PAYLOAD_TOO_LARGE, why);
        }
    };
    let webhook = match alert::parse_webhook(&body) {
        Ok(webhook) => webhook,
        Err(why) => {
            metrics::counter!(names::WEBHOOK_REQUESTS, "outcome" => "bad_payload").increment(1);
            shared.dead.send(SOURCE, why.clone(), &body).await;
            return reply(StatusCode::BAD_REQUEST, why);
        }
    };
    let revised = shared.policy.current();
    let rules: Vec<AlertRule> = revised
        .policy
        .targets
        .values()
        .flat_map(|t| t.alert_rules.iter().cloned())
        .collect();
    let routed = alert::route(&rules, &webhook, &revised.revision, nova_runtime::now_ms());
    for alert in &routed.unmatched {
        metrics::counter!(names::WEBHOOK_ALERTS, "outcome" => "unmatched").increment(1);
        tracing::info!(
            alertname = alert.name(),
            fingerprint = %alert.fingerprint,
            status = %alert.status,
            "alert matches no alert rule"
        );
    }
    for trigger in &routed.triggers {
        if let Err(error) = emit(&shared, trigger).await {
            metrics::counter!(names::WEBHOOK_REQUESTS, "outcome" => "unavailable").increment(1);
            tracing::error!(%error, trigger = %trigger.id, "cannot store an alert's trigger; answering 503");
            return reply(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot store the alert's trigger in JetStream ({error}); retry later"),
            );
        }
        metrics::counter!(names::WEBHOOK_ALERTS, "outcome" => "matched").increment(1);
    }
    metrics::counter!(names::WEBHOOK_REQUESTS, "outcome" => "accepted").increment(1);
    reply(
        StatusCode::OK,
        format!(
            "{} alert(s): {} trigger(s) stored, {} alert(s) matched no rule",
            webhook.alerts.len(),
            routed.triggers.len(),
            routed.unmatched.len()
        ),
    )
}

/// Publishes a trigger, then its `fired` audit record, each retried with
/// back-off; both are de-duplicated by id, so a retry (or Alertmanager's
/// next try) repeats nothing.
async fn emit(shared: &Shared, trigger: &Trigger) -> Result<(), PublishError> {
    let subject = subjects::triggers(&trigger.target);
    let duplicate =
        retried(|| publish_once(&shared.js, subject.clone(), &trigger.id, trigger)).await?;
    if !duplicate {
        metrics::counter!(names::TRIGGERS, "target" => trigger.target.clone()).increment(1);
    }
    for firing in &trigger.firings {
        let record = AuditRecord::fired(Stage::Ingest, trigger, firing);
        retried(|| shared.auditor.record(&record)).await?;
    }
    Ok(())
}

async fn retried<T, F, Fut>(mut attempt: F) -> Result<T, PublishError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PublishError>>,
{
    let mut backoff = Backoff::bounded(
        Duration::from_millis(100),
        Duration::from_secs(1),
        PUBLISH_TRIES - 1,
    );
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                metrics::counter!(names::RETRIES, "stage" => "ingest").increment(1);
                if !backoff.wait().await {
                    return Err(error);
                }
                tracing::warn!(%error, "retrying a publish");
            }
        }
    }
}

/// Checks the `Authorization` header against `auth`; the error says what
/// was wrong, never what was expected.
pub fn check_auth(auth: &Auth, headers: &HeaderMap) -> Result<(), String> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth {
        Auth::None => Ok(()),
        Auth::Bearer(token) => {
            let Some(given) = given.and_then(|g| g.strip_prefix("Bearer ")) else {
                return Err("missing credentials: send Authorization: Bearer <token> (Alertmanager: http_config.authorization)".into());
            };
            if same(given.trim().as_bytes(), token.as_bytes()) {
                Ok(())
            } else {
                Err("wrong bearer token".into())
            }
        }
        Auth::Basic { user, password } => {
            use base64::Engine;
            let Some(given) = given.and_then(|g| g.strip_prefix("Basic ")) else {
                return Err("missing credentials: send Authorization: Basic (Alertmanager: http_config.basic_auth)".into());
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(given.trim())
                .map_err(|_| "Basic credentials are not base64".to_string())?;
            let expected = format!("{user}:{password}");
            if same(&decoded, expected.as_bytes()) {
                Ok(())
            } else {
                Err("wrong user name or password".into())
            }
        }
    }
}

/// Equal bytes, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_credentials() {
        use base64::Engine;
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        let bearer = Auth::Bearer("s3cret".into());
        let user = Auth::Basic {
            user: "am".into(),
            password: "pw".into(),
        };
        let cases: Vec<(&Auth, Option<String>, Result<(), &str>)> = vec![
            (&Auth::None, None, Ok(())),
            (&bearer, Some("Bearer s3cret".into()), Ok(())),
            (
                &bearer,
                Some("Bearer s3cre".into()),
                Err("wrong bearer token"),
            ),
            (&bearer, None, Err("missing credentials")),
            (&bearer, Some(basic("am:pw")), Err("missing credentials")),
            (&user, Some(basic("am:pw")), Ok(())),
            (
                &user,
                Some(basic("am:px")),
                Err("wrong user name or password"),
            ),
            (&user, Some("Basic %%%".into()), Err("not base64")),
            (&user, None, Err("missing credentials")),
        ];
        for (auth, header_value, expected) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = &header_value {
                headers.insert(header::AUTHORIZATION, v.parse().unwrap());
            }
            match (check_auth(auth, &headers), expected) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(part)) => assert!(got.contains(part), "{header_value:?}: {got}"),
                (got, want) => panic!("{auth:?} {header_value:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(format!("{bearer:?}"), "Bearer(..)");
    }
}
