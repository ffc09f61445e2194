//! A pass-through HTTP proxy in front of moto that counts, in order, every
//! AWS call that reaches the backend, from outside the services.
//!
//! It speaks just enough HTTP/1.1 for the AWS SDKs: a request is its head
//! plus a `Content-Length` body, forwarded to moto on a fresh connection
//! with `Connection: close`, and moto's whole answer is sent back. Two AWS
//! protocols are understood:
//! - JSON (ECS): the operation is the tail of `X-Amz-Target`, the body a
//!   JSON document;
//! - query (RDS): a form-encoded POST, `Action=CreateDBInstanceReadReplica&
//!   Version=...&DBInstanceIdentifier=...`, with no `X-Amz-Target`; the
//!   operation is `Action`, and the form's fields (url-decoded) are recorded
//!   as a JSON object of strings, so [`Call::body`] and [`Call::resource`]
//!   read the same for both.
//!
//! Each call is recorded when it is forwarded, with how many calls for the
//! same resource were at the backend at that moment, so a test sees both
//! the order of the changes and whether two ever overlapped.
//!
//! A test can also script faults per operation, served to its next calls
//! in the order they were scripted (a fault for `times` calls, then the
//! next fault, then plain pass-through):
//! - [`CountingProxy::refuse`] / [`CountingProxy::refuse_with_status`]: an
//!   AWS error (`ThrottlingException` with 400, `InternalFailure` with 500)
//!   instead of moto's answer, in the call's protocol (JSON `__type`, or the
//!   query protocol's `<ErrorResponse>` XML), without forwarding;
//! - [`CountingProxy::delay`]: forwarded, so the change is made, but
//!   answered only after a while: past the SDK's call timeout the caller sees
//!   a timeout although the backend changed;
//! - [`CountingProxy::hold`]: forwarded and moto's answer never sent (the
//!   connection is left hanging until the caller goes away);
//!   [`CountingProxy::held`] waits until such a call took effect, so a test
//!   can kill the caller exactly between "the AWS call was made" and "the
//!   caller heard of it".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One AWS call as the backend received it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The API operation (`UpdateService`, `CreateDBInstanceReadReplica`),
    /// from `X-Amz-Target` or the query protocol's `Action`.
    pub operation: String,
    /// The request body: the JSON document, or the query form's fields as
    /// a JSON object of strings.
    pub body: serde_json::Value,
    /// When it was forwarded (or refused).
    pub at: Instant,
    /// Calls with the same `service` (or `DBInstanceIdentifier`) at the
    /// backend when this one was forwarded, this one included.
    pub concurrent: usize,
    /// The error code the proxy answered with instead of forwarding, if it
    /// refused the call.
    pub refused: Option<String>,
    /// How long the proxy kept moto's answer back, if it delayed it.
    pub delayed: Option<Duration>,
    /// Whether the proxy withholds moto's answer for good ([`CountingProxy::hold`]).
    pub withheld: bool,
}

impl Call {
    /// The resource the call is about: an ECS service name, or an RDS
    /// `DBInstanceIdentifier`.
    pub fn resource(&self) -> Option<&str> {
        resource(&self.body)
    }

    /// Whether the call reached moto (it was not refused), whatever became
    /// of moto's answer.
    pub fn forwarded(&self) -> bool {
        self.refused.is_none()
    }
}

fn resource(body: &serde_json::Value) -> Option<&str> {
    body.get("service")
        .or_else(|| body.get("DBInstanceIdentifier"))
        .and_then(|v| v.as_str())
}

/// What the proxy does with a call instead of passing moto's answer back.
#[derive(Debug, Clone)]
enum Fault {
    /// Answer with an AWS error; nothing is forwarded.
    Refuse { status: u16, code: String },
    /// Forward, and send moto's answer after this long.
    Delay(Duration),
    /// Forward, and never send moto's answer.
    Hold,
}

#[derive(Default)]
struct Recorder {
    calls: Vec<Call>,
    in_flight: HashMap<String, usize>,
    /// Per operation: the faults for its next calls, in order, each with
    /// how many more calls it takes.
    faults: HashMap<String, VecDeque<(Fault, usize)>>,
    /// Calls moto answered whose answer is withheld, in order, until
    /// [`CountingProxy::held`] returns them.
    withheld: VecDeque<Call>,
    /// Numbers the refusals' request ids.
    refusals: u64,
}

impl Recorder {
    /// The fault for the next call of `operation`, used up by this call.
    fn take_fault(&mut self, operation: &str) -> Option<Fault> {
        let queue = self.faults.get_mut(operation)?;
        let (fault, left) = queue.front_mut()?;
        let fault = fault.clone();
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        Some(fault)
    }
}

struct Shared {
    recorder: Mutex<Recorder>,
    /// Told whenever moto answered a call whose answer is withheld.
    withheld: Notify,
}

impl Shared {
    fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder.lock().expect("recorder")
    }
}

/// The proxy, serving until dropped.
pub struct CountingProxy {
    /// `http://127.0.0.1:<port>`: the endpoint to give the SDK.
    pub endpoint: String,
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
            recorder: Mutex::new(Recorder::default()),
            withheld: Notify::new(),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = serving.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    // A client that goes away (a killed service, an SDK
                    // that timed out) ends its connection; the call it sent
                    // is still counted.
                    let _ = serve(client, &upstream, &shared).await;
                });
            }
        });
        CountingProxy {
            endpoint,
            shared,
            task,
        }
    }

    fn script(&self, operation: &str, fault: Fault, times: usize) {
        if times == 0 {
            return;
        }
        self.shared
            .recorder()
            .faults
            .entry(operation.to_string())
            .or_default()
            .push_back((fault, times));
    }

    /// Answers the next `times` calls of `operation` (after the faults
    /// scripted before) with HTTP 400 and the AWS error `code`, without
    /// forwarding them (they are still recorded, with `refused` set).
    pub fn refuse(&self, operation: &str, code: &str, times: usize) {
        self.refuse_with_status(operation, 400, code, times);
    }

    /// [`refuse`](Self::refuse) with HTTP `status`: 500 `InternalFailure`
    /// or 503 `ServiceUnavailable` as AWS answers its own faults.
    pub fn refuse_with_status(&self, operation: &str, status: u16, code: &str, times: usize) {
        let fault = Fault::Refuse {
            status,
            code: code.to_string(),
        };
        self.script(operation, fault, times);
    }

    /// Forwards the next `times` calls of `operation` (after the faults
    /// scripted before), so moto makes the change, but sends moto's answer
    /// only `by` later: past the caller's call timeout, the caller sees a
    /// timeout although the backend changed.
    pub fn delay(&self, operation: &str, by: Duration, times: usize) {
        self.script(operation, Fault::Delay(by), times);
    }

    /// Forwards the next call of `operation` (after the faults scripted
    /// before) and withholds moto's answer for good: the caller's
    /// connection hangs until the caller goes away. [`held`](Self::held)
    /// says when moto has answered it.
    pub fn hold(&self, operation: &str) {
        self.script(operation, Fault::Hold, 1);
    }

    /// Waits (within [`crate::WAIT`]) until a call of `operation` whose
    /// answer is withheld has been answered by moto, i.e. the change it
    /// asks is made and its caller has not heard of it; returns that call.
    /// Each held call is returned once, in order: one `held` per `hold`.
    pub async fn held(&self, operation: &str) -> Call {
        let what = format!("a held {operation} call to be answered by moto");
        crate::within(&what, crate::WAIT, async {
            loop {
                // Registered before the check, so an answer between the
                // check and the wait is not missed.
                let answered = self.shared.withheld.notified();
                let found = {
                    let mut recorder = self.shared.recorder();
                    let at = recorder
                        .withheld
                        .iter()
                        .position(|c| c.operation == operation);
                    at.and_then(|at| recorder.withheld.remove(at))
                };
                if let Some(call) = found {
                    return call;
                }
                answered.await;
            }
        })
        .await
    }

    /// Every call so far whose operation is `operation`, in forwarding order.
    pub fn calls(&self, operation: &str) -> Vec<Call> {
        self.shared
            .recorder()
            .calls
            .iter()
            .filter(|c| c.operation == operation)
            .cloned()
            .collect()
    }
}

/// The AWS protocol of a request, which decides how a refusal is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `X-Amz-Target` and a JSON body (ECS).
    Json,
    /// A form-encoded body with `Action=` (RDS).
    Query,
}

/// What the proxy reads of one request.
struct Request {
    protocol: Protocol,
    operation: String,
    body: serde_json::Value,
}

impl Request {
    fn parse(head: &str, body: &[u8]) -> Request {
        if let Some(target) = header(head, "x-amz-target") {
            return Request {
                protocol: Protocol::Json,
                operation: target.rsplit('.').next().unwrap_or_default().to_string(),
                body: serde_json::from_slice(body).unwrap_or_default(),
            };
        }
        let fields = form_fields(body);
        Request {
            protocol: Protocol::Query,
            operation: fields
                .get("Action")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
            body: serde_json::Value::Object(fields),
        }
    }
}

/// Serves one client connection, request after request.
async fn serve(mut client: TcpStream, upstream: &str, shared: &Shared) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut client, &mut buffer).await? else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&head).to_string();
        let request = Request::parse(&text, &body);
        let resource = resource(&request.body).map(str::to_string);
        let fault = shared.recorder().take_fault(&request.operation);
        let call = |concurrent, refused| Call {
            operation: request.operation.clone(),
            body: request.body.clone(),
            at: Instant::now(),
            concurrent,
            refused,
            delayed: match &fault {
                Some(Fault::Delay(by)) => Some(*by),
                _ => None,
            },
            withheld: matches!(fault, Some(Fault::Hold)),
        };
        if let Some(Fault::Refuse { status, code }) = &fault {
            let answer = {
                let mut recorder = shared.recorder();
                recorder.calls.push(call(1, Some(code.clone())));
                recorder.refusals += 1;
                refusal(request.protocol, *status, code, recorder.refusals)
            };
            client.write_all(&answer).await?;
            continue;
        }
        let forwarded = {
            let mut recorder = shared.recorder();
            let concurrent = resource.as_ref().map_or(1, |r| {
                let n = recorder.in_flight.entry(r.clone()).or_default();
                *n += 1;
                *n
            });
            let forwarded = call(concurrent, None);
            recorder.calls.push(forwarded.clone());
            forwarded
        };
        let answer = forward(upstream, &text, &body).await;
        if let Some(resource) = &resource {
            let mut recorder = shared.recorder();
            if let Some(n) = recorder.in_flight.get_mut(resource) {
                *n = n.saturating_sub(1);
            }
        }
        let answer = answer?;
        match fault {
            Some(Fault::Hold) => {
                shared.recorder().withheld.push_back(forwarded);
                shared.withheld.notify_waiters();
                // The answer is never sent: the connection stays open, and
                // whatever the caller sends is ignored, until it goes away.
                let mut ignored = [0u8; 1024];
                while client.read(&mut ignored).await? > 0 {}
                return Ok(());
            }
            Some(Fault::Delay(by)) => tokio::time::sleep(by).await,
            Some(Fault::Refuse { .. }) | None => {}
        }
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

/// An AWS error answer with HTTP `status` and `code`, in `protocol`: a
/// JSON 1.1 error as ECS sends one, or the query protocol's XML as RDS
/// does (its SDK reads the code from `ErrorResponse/Error/Code`).
fn refusal(protocol: Protocol, status: u16, code: &str, number: u64) -> Vec<u8> {
    let message = format!("{code} (injected by the test proxy)");
    let request_id = format!("nova-test-proxy-{number}");
    let (content_type, extra, body) = match protocol {
        Protocol::Json => (
            "application/x-amz-json-1.1",
            format!("x-amzn-ErrorType: {code}\r\nx-amzn-RequestId: {request_id}\r\n"),
            serde_json::json!({ "__type": code, "message": message }).to_string(),
        ),
        Protocol::Query => (
            "text/xml",
            format!("x-amzn-RequestId: {request_id}\r\n"),
            format!(
                "<ErrorResponse><Error><Type>{}</Type><Code>{code}</Code>\
                 <Message>{message}</Message></Error><RequestId>{request_id}</RequestId>\
                 </ErrorResponse>",
                if status >= 500 { "Receiver" } else { "Sender" }
            ),
        ),
    };
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        reason_phrase(status),
        body.len()
    )
    .into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// The fields of an `application/x-www-form-urlencoded` body, url-decoded.
fn form_fields(body: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                url_decode(key),
                serde_json::Value::String(url_decode(value)),
            )
        })
        .collect()
}

/// `+` is a space and `%XY` a byte; anything else stays as it is.
fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|b| char::from(*b).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if hex(i + 1).is_some() && hex(i + 2).is_some() => {
                out.push(hex(i + 1).unwrap_or(0) * 16 + hex(i + 2).unwrap_or(0));
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_form_is_read_as_its_url_decoded_fields() {
        let body = b"Action=CreateDBInstanceReadReplica&Version=2014-10-31&\
                     DBInstanceIdentifier=orders-db-replica-1&Note=a+b%2Fc%3D%zz";
        let request = Request::parse("POST / HTTP/1.1\r\n\r\n", body);
        assert_eq!(request.protocol, Protocol::Query);
        assert_eq!(request.operation, "CreateDBInstanceReadReplica");
        assert_eq!(resource(&request.body), Some("orders-db-replica-1"));
        assert_eq!(request.body["Version"], "2014-10-31");
        assert_eq!(request.body["Note"], "a b/c=%zz");
    }

    #[test]
    fn a_json_call_is_read_from_its_target_header() {
        let head = "POST / HTTP/1.1\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.UpdateService\r\n\r\n";
        let request = Request::parse(head, br#"{"service": "svc", "desiredCount": 3}"#);
        assert_eq!(request.protocol, Protocol::Json);
        assert_eq!(request.operation, "UpdateService");
        assert_eq!(resource(&request.body), Some("svc"));
    }

    #[test]
    fn faults_are_served_in_the_order_scripted_then_none() {
        let mut recorder = Recorder::default();
        let queue = recorder.faults.entry("Op".into()).or_default();
        queue.push_back((
            Fault::Refuse {
                status: 400,
                code: "Throttling".into(),
            },
            2,
        ));
        queue.push_back((Fault::Hold, 1));
        let taken: Vec<String> = (0..4)
            .map(|_| format!("{:?}", recorder.take_fault("Op")))
            .collect();
        assert_eq!(
            taken,
            [
                r#"Some(Refuse { status: 400, code: "Throttling" })"#,
                r#"Some(Refuse { status: 400, code: "Throttling" })"#,
                "Some(Hold)",
                "None",
            ]
        );
        assert!(recorder.take_fault("Other").is_none());
    }
}
