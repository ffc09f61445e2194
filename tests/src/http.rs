//! Plain HTTP GETs for the tests: the services' `/metrics`, `/healthz` and
//! `/readyz`, and Prometheus's query API. hyper's client (already built for
//! the actuator's health checks) with a deadline on every request.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long one request may take.
const REQUEST: Duration = Duration::from_secs(5);

/// GETs `url`: the status and the body as text, or the error as text (the
/// server not listening yet is an answer too, for a test that waits).
pub async fn get(url: &str) -> Result<(u16, String), String> {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let response = tokio::time::timeout(REQUEST, client.get(uri))
        .await
        .map_err(|_| format!("{url}: no answer within {REQUEST:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(REQUEST, response.into_body().collect())
        .await
        .map_err(|_| format!("{url}: body not read within {REQUEST:?}"))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A free loopback port now (bound, then released), for a program that
/// cannot report the port it bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `text` percent-encoded for a query string.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
