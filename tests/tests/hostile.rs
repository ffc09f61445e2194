//! The committed hostile corpus through the decoders, then hostile
//! publishers against `novactl run` (every stage in one process,
//! the shape in which one bad message once took all of them down): the
//! committed corpus, a message of 30,000 samples, malformed and oversized
//! control requests. Every message is answered or dead-lettered, counted
//! from outside, and every stage still answers afterwards.

use futures_util::StreamExt;
use nova_e2e::process::{ServiceProcess, binary};
use nova_e2e::{NatsServer, STAGES, WAIT, corpus, wait_ready, within};
use nova_shared::codec::{self, Encoding};
use nova_shared::subjects;
use nova_shared::wire::{ControlReply, ControlRequest, DeadLetter, ErrorReply, SampleBatch};

const POLICY: &str = r#"
targets:
  t:
    rules: [q]
    max: 50
    backend: { sim: { initial: 2 } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 100000", action: "add 1 instance" }
"#;

/// Each corpus file through the decoders alone: decoded, or refused with
/// its reason; good samples beside a bad one are kept.
#[test]
fn every_corpus_shape_is_decoded_or_refused_with_its_reason() {
    let cases = corpus::cases();
    assert!(cases.len() >= 13, "the corpus is all there");
    for case in cases {
        let encoding = if case.is_json() {
            Encoding::Json
        } else {
            Encoding::MsgPack
        };
        let outcome: Result<(usize, usize), String> = match case.kind.as_str() {
            "sample" => codec::decode_samples(&case.bytes, encoding)
                .map(|elements| {
                    let ok = elements.iter().filter(|e| e.is_ok()).count();
                    (ok, elements.len() - ok)
                })
                .map_err(|e| e.to_string()),
            // Sent on nova.ctl.pause, as the pipeline test below does.
            "control" => ControlRequest::decode(&case.bytes, encoding, Some("pause"))
                .map(|_| (1, 0))
                .map_err(|e| e.to_string()),
            other => panic!("{}: unknown kind {other}", case.file),
        };
        let expected = case.expected.as_str();
        match (outcome, expected.split_once(": ")) {
            (Err(reason), Some(("refused", want))) => {
                assert!(
                    reason.contains(want),
                    "{}: {reason:?} lacks {want:?}",
                    case.file
                )
            }
            (Ok((ok, bad)), Some(("elements", want))) => {
                assert_eq!(format!("{ok}/{bad}"), want, "{}", case.file)
            }
            (Ok((_, 0)), None) if expected == "accepted" => {}
            (got, _) => panic!("{}: got {got:?}, expected {expected}", case.file),
        }
    }
}

async fn request(
    client: &async_nats::Client,
    subject: String,
    payload: Vec<u8>,
    json: bool,
) -> async_nats::Message {
    let mut headers = async_nats::HeaderMap::new();
    if json {
        headers.insert("Content-Type", codec::CONTENT_TYPE_JSON);
    }
    let asked = client.request_with_headers(subject.clone(), headers, payload.into());
    within(&format!("an answer on {subject}"), WAIT, asked)
        .await
        .unwrap_or_else(|e| panic!("no answer on {subject}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_publishers_are_answered_and_dead_lettered_and_every_stage_survives() {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let policy = tempfile::NamedTempFile::new().expect("policy file");
    std::fs::write(policy.path(), POLICY).expect("write policy");
    let args: Vec<String> = [
        "run",
        "--nats-url",
        &nats.url,
        "--policy",
        &policy.path().display().to_string(),
        "--no-sim-load",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = ServiceProcess::spawn(binary("novactl"), &args, &[]);
    for stage in STAGES {
        wait_ready(&nats.url, stage, 1).await;
    }
    let mut dead = client.subscribe("nova.dead.>").await.expect("subscribe");
    let mut forwarded = client
        .subscribe(subjects::samples("t"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");

    // The corpus: samples on a metric subject, control requests as pauses.
    let mut expected_dead = 0;
    // Good samples beside bad ones are forwarded too.
    let mut good_neighbours = 0;
    for case in corpus::cases() {
        good_neighbours += case.good_elements();
        if case.kind == "sample" {
            let subject = subjects::metrics("t", "queue_depth");
            nova_e2e::publish(&client, subject, case.bytes.clone(), case.is_json()).await;
        } else {
            let pause = subjects::control("pause");
            let answer = request(&client, pause, case.bytes.clone(), case.is_json()).await;
            let reply: ControlReply =
                codec::decode(&answer.payload, Encoding::MsgPack).expect("a control reply");
            let file = &case.file;
            assert!(
                !reply.ok,
                "{file}: a malformed pause is refused: {}",
                reply.message
            );
            assert!(
                reply.message.starts_with("not a control request"),
                "{file}: {}",
                reply.message
            );
        }
        expected_dead += 1;
    }

    // A malformed audit query gets an answer, not silence.
    let answer = request(
        &client,
        subjects::control("audit"),
        b"\x91\x05".to_vec(),
        false,
    )
    .await;
    let reply: ErrorReply = codec::decode(&answer.payload, Encoding::MsgPack).expect("error reply");
    assert!(reply.error.contains("expected a map"), "{}", reply.error);
    expected_dead += 1;

    // A ~1 MB unknown target name: the answer quotes a bounded prefix.
    let request_body = ControlRequest::status(Some("x".repeat(900_000)));
    let payload = codec::encode(&request_body).expect("encode");
    let answer = request(&client, subjects::control("status"), payload, false).await;
    let reply: ControlReply = codec::decode(&answer.payload, Encoding::MsgPack).expect("reply");
    assert!(
        !reply.ok && reply.message.contains("900000 bytes in all"),
        "{}",
        reply.message
    );
    assert!(
        answer.payload.len() < 1_000,
        "a bounded answer: {} bytes",
        answer.payload.len()
    );

    // Nothing paused by any of it.
    let status = request(&client, subjects::control("status"), Vec::new(), false).await;
    let status: ControlReply = codec::decode(&status.payload, Encoding::MsgPack).expect("status");
    assert!(
        !status.targets[0].paused_up && !status.targets[0].paused_down,
        "{status:?}"
    );

    // A payload near the server's limit: its dead letter still fits, cut,
    // with the size and hash of the whole.
    let near_limit = vec![0xc1u8; 1_000_000];
    nova_e2e::publish(
        &client,
        subjects::metrics("t", "queue_depth"),
        near_limit,
        false,
    )
    .await;
    expected_dead += 1;

    let mut letters = Vec::new();
    within(&format!("{expected_dead} dead letters"), WAIT, async {
        while letters.len() < expected_dead {
            let message = dead.next().await.expect("dead letter");
            let letter: DeadLetter =
                codec::decode(&message.payload, Encoding::MsgPack).expect("letter");
            letters.push(letter);
        }
    })
    .await;
    let big = letters
        .iter()
        .find(|l| l.payload_size == 1_000_000)
        .expect("the near-limit payload's dead letter");
    assert!(big.truncated && big.payload.len() == nova_shared::wire::DEAD_PAYLOAD_MAX);
    assert_eq!(big.payload_fnv64.len(), 16);
    let reasons: Vec<&String> = letters.iter().map(|l| &l.reason).collect();

    // 30,000 samples in one message: over the server's limit once ingest
    // re-encodes them, so they are forwarded in several batches, all of them.
    let many: Vec<serde_json::Value> = (0..30_000)
        .map(|i| serde_json::json!({"value": 1, "instance": format!("i{i}")}))
        .collect();
    let bytes = rmp_serde::to_vec_named(&many).expect("encode");
    assert!(bytes.len() < 1024 * 1024, "the message itself fits");
    nova_e2e::publish(&client, subjects::metrics("t", "queue_depth"), bytes, false).await;
    let mut arrived = 0;
    let wanted = 30_000 + good_neighbours;
    within("30,000 samples forwarded", WAIT, async {
        while arrived < wanted {
            let message = forwarded.next().await.expect("batch");
            let batch: SampleBatch =
                codec::decode(&message.payload, Encoding::MsgPack).expect("batch");
            arrived += batch.samples.len();
        }
    })
    .await;
    assert_eq!(arrived, wanted, "every accepted sample forwarded once");

    // Every stage still answers, and no more dead letters than messages.
    for stage in STAGES {
        wait_ready(&nats.url, stage, 1).await;
    }
    assert!(
        process.lines_with("panic").is_empty(),
        "no panic: {:?}",
        process.lines_with("panic")
    );
    assert_eq!(reasons.len(), expected_dead, "{reasons:#?}");
}
