//! A pass-through HTTP proxy in front of moto that counts, in order, every
//! AWS call that reaches the backend, from outside the services.
//!
//! It speaks just enough HTTP/1.1 for the AWS SDK's JSON protocol: a request
//! is its head plus a `Content-Length` body, forwarded to moto on a fresh
//! connection with `Connection: close`, and moto's whole answer is sent
//! back. Each call is recorded when it is forwarded, with how many calls for
//! the same resource were at the backend at that moment, so a test sees
//! both the order of the changes and whether two ever overlapped.
//!
//! It can also refuse calls itself, as AWS would ([`CountingProxy::refuse`]):
//! the next calls of an operation get an AWS JSON error (a code such as
//! `ThrottlingException` or `AccessDeniedException`) instead of moto's answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One AWS call as the backend received it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The API operation (`UpdateService`), from `X-Amz-Target`.
    pub operation: String,
    /// The request body.
    pub body: serde_json::Value,
    /// When it was forwarded.
    pub at: Instant,
    /// Calls with the same `service` (or `DBInstanceIdentifier`) at the
    /// backend when this one was forwarded, this one included.
    pub concurrent: usize,
    /// The error code the proxy answered with instead of forwarding, if it
    /// refused the call.
    pub refused: Option<String>,
}

impl Call {
    /// The resource the call is about: an ECS service name.
    pub fn resource(&self) -> Option<&str> {
        self.body.get("service").and_then(|v| v.as_str())
    }
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
    in_flight: std::collections::HashMap<String, usize>,
    /// Per operation: the error code to answer with, and how many more times.
    refusals: std::collections::HashMap<String, (String, usize)>,
}

/// The proxy, serving until dropped.
pub struct CountingProxy {
    /// `http://127.0.0.1:<port>`: the endpoint to give the SDK.
    pub endpoint: String,
    recorder: Arc<Mutex<Recorder>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingProxy {
    /// Listens on a free loopback port and forwards to `upstream`
    /// (`http://host:port`).
    pub async fn start(upstream: &str) -> CountingProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("upstream is http://host:port")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let shared = recorder.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let recorder = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    // A client that goes away (a killed service) ends its
                    // connection; the call it sent is still counted.
                    let _ = serve(client, &upstream, &recorder).await;
                });
            }
        });
        CountingProxy {
            endpoint,
            recorder,
            task,
        }
    }

    /// Answers the next `times` calls of `operation` with HTTP 400 and the
    /// AWS error `code`, without forwarding them (they are still recorded,
    /// with `refused` set).
    pub fn refuse(&self, operation: &str, code: &str, times: usize) {
        self.recorder
            .lock()
            .expect("recorder")
            .refusals
            .insert(operation.to_string(), (code.to_string(), times));
    }

    /// Every call so far whose operation is `operation`, in forwarding order.
    pub fn calls(&self, operation: &str) -> Vec<Call> {
        self.recorder
            .lock()
            .expect("recorder")
            .calls
            .iter()
            .filter(|c| c.operation == operation)
            .cloned()
            .collect()
    }
}

/// Serves one client connection, request after request.
async fn serve(
    mut client: TcpStream,
    upstream: &str,
    recorder: &Mutex<Recorder>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut client, &mut buffer).await? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&head).to_string();
        let operation = header(&text, "x-amz-target")
            .and_then(|t| t.rsplit('.').next().map(str::to_string))
            .unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let resource = json
            .get("service")
            .or_else(|| json.get("DBInstanceIdentifier"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let refused = {
            let mut recorder = recorder.lock().expect("recorder");
            let refused = match recorder.refusals.get_mut(&operation) {
                Some((code, left)) if *left > 0 => {
                    *left -= 1;
                    Some(code.clone())
                }
                _ => None,
            };
            if let Some(code) = &refused {
                recorder.calls.push(Call {
                    operation: operation.clone(),
                    body: json.clone(),
                    at: Instant::now(),
                    concurrent: 1,
                    refused: Some(code.clone()),
                });
            }
            refused
        };
        if let Some(code) = refused {
            client.write_all(&refusal(&code)).await?;
            continue;
        }
        {
            let mut recorder = recorder.lock().expect("recorder");
            let concurrent = resource.as_ref().map_or(1, |r| {
                let n = recorder.in_flight.entry(r.clone()).or_default();
                *n += 1;
                *n
            });
            recorder.calls.push(Call {
                operation,
                body: json,
                at: Instant::now(),
                concurrent,
                refused: None,
            });
        }
        let answer = forward(upstream, &text, &body).await;
        if let Some(resource) = &resource {
            let mut recorder = recorder.lock().expect("recorder");
            if let Some(n) = recorder.in_flight.get_mut(resource) {
                *n = n.saturating_sub(1);
            }
        }
        let answer = answer?;
        client.write_all(&answer).await?;
        if header(&String::from_utf8_lossy(&answer), "connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return Ok(());
        }
    }
}

/// Reads one request: its head (through the blank line) and its body.
async fn read_request(
    client: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head: Vec<u8> = buffer.drain(..end).collect();
    let text = String::from_utf8_lossy(&head);
    assert!(
        header(&text, "transfer-encoding").is_none(),
        "the counting proxy handles Content-Length bodies only"
    );
    let length: usize = header(&text, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buffer.len() < length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer.drain(..length).collect();
    Ok(Some((head, body)))
}

/// Sends one request to moto on its own connection and reads all it says.
async fn forward(upstream: &str, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut request = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 && line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut moto = TcpStream::connect(upstream).await?;
    moto.write_all(request.as_bytes()).await?;
    moto.write_all(body).await?;
    let mut answer = Vec::new();
    moto.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// An AWS JSON 1.1 error answer with `code`, as ECS sends one.
fn refusal(code: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "__type": code,
        "message": format!("{code} (injected by the test proxy)"),
    })
    .to_string();
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
         x-amzn-ErrorType: {code}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A header's value in a request or response head (case-insensitive name).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
}
