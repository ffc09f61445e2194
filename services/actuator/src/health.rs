//! A gradual walk's HTTP health check: one GET per validation, healthy when
//! it answers the expected status within its time limit.
//!
//! The client is hyper 1's (`hyper-util`'s pooled client, rustls with ring
//! for `https://`): the stack the AWS SDK already builds, so it adds no
//! crate to the build (see the README's actuator section).

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nova_shared::gradual::HealthCheck;

/// One client for every target's checks (connections are pooled).
#[derive(Clone)]
pub struct HealthClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl HealthClient {
    /// A client that speaks http:// and https:// (the system's roots).
    pub fn new() -> Self {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let https = match builder.with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => builder,
            Err(error) => {
                // No system roots (a bare container): https checks will fail
                // with a certificate error naming the URL; http still works.
                tracing::warn!(%error, "no native TLS roots; https health checks cannot verify");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        }
        .https_or_http()
        .enable_http1()
        .build();
        HealthClient {
            client: Client::builder(TokioExecutor::new()).build(https),
        }
    }

    /// GETs `check.url`: `Ok` with one phrase when it answers
    /// `expect_status` in time, else `Err` with one phrase saying what it did.
    pub async fn check(&self, check: &HealthCheck) -> Result<String, String> {
        let url = &check.url;
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("health check {url}: not a URL: {e}"))?;
        let limit = Duration::from_secs(check.timeout_secs.max(1));
        match tokio::time::timeout(limit, self.client.get(uri)).await {
            Err(_) => Err(format!(
                "health check {url} did not answer within {} s",
                limit.as_secs()
            )),
            Ok(Err(error)) => Err(format!("health check {url} failed: {}", one_line(&error))),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                if status == check.expect_status {
                    Ok(format!("health check {url} answered {status}"))
                } else {
                    Err(format!(
                        "health check {url} answered {status}, expected {}",
                        check.expect_status
                    ))
                }
            }
        }
    }
}

impl Default for HealthClient {
    fn default() -> Self {
        Self::new()
    }
}

/// An error and its causes on one line.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
