//! One provisioning step, from outside, as an operator and Kubernetes see
//! it: `novactl provision` and the services' start-up checks, as processes
//! on a real nats-server.
//!
//! - A service started before provisioning waits, then fails with one line
//!   naming the missing object and the command to run.
//! - `novactl provision` creates everything, reports `unchanged` when run
//!   again, and applies a changed ack wait to the consumer; a service
//!   waiting for it starts as soon as it is done.
//! - A setting a service relies on that differs (a bucket with direct
//!   gets, an actuator consumer's ack wait shorter than its calls) fails
//!   the service with one line; provisioning puts it back.
//! - `NOVA_AUDIT`'s retention and replicas are the operator's
//!   (`--audit-max-age`, `--audit-replicas`): a second run updates the
//!   existing stream, and the server's config says so.

use std::time::Duration;

use nova_e2e::process::{ServiceProcess, binary};
use nova_e2e::{NatsServer, WAIT, connect, wait_ready, within, workspace_root};
use nova_runtime::nats::{ARBITER_CONSUMER, AUDIT_STREAM, CAPACITY_BUCKET, TRIGGERS_STREAM};
use nova_runtime::provision::PROVISION_PATIENCE;
use nova_shared::wire::Stage;

/// What `novactl provision` printed, and whether it succeeded.
struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: Vec<String>,
    stderr: String,
}

async fn novactl_provision(url: &str, extra: &[&str]) -> Run {
    let out = within(
        "novactl provision",
        WAIT * 2,
        tokio::process::Command::new(binary("novactl"))
            .args(["provision", "--nats-url", url])
            .args(extra)
            .env_remove("NOVA_STREAM_REPLICAS")
            .env_remove("NOVA_ARBITER_ACK_WAIT_SECS")
            .env_remove("NOVA_ACTUATOR_ACK_WAIT_SECS")
            .env_remove("NOVA_AUDIT_MAX_AGE")
            .env_remove("NOVA_AUDIT_REPLICAS")
            .output(),
    )
    .await
    .expect("novactl runs");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn policy() -> std::path::PathBuf {
    workspace_root().join("deploy/policies/demo.yaml")
}

/// A service process on `url` with the demo policy.
fn service(stage: Stage, url: &str, extra: &[&str]) -> ServiceProcess {
    ServiceProcess::stage(stage, url, &policy(), extra, &[])
}

/// How long a service that waits for provisioning in vain takes to fail:
/// its patience, plus start-up and a last check.
const FAILS_WITHIN: Duration = Duration::from_secs(PROVISION_PATIENCE.as_secs() + 10);

/// Waits for `process` to fail and returns the one line it wrote that is
/// not a log line (a log line starts with its timestamp): what is wrong.
async fn fails_with_one_line(process: &mut ServiceProcess) -> String {
    let status = process.wait_exit(FAILS_WITHIN).await;
    assert_eq!(status.code(), Some(1), "{status:?}");
    let line = process.wait_line("(waited ").await;
    let plain: Vec<String> = process
        .stderr
        .lock()
        .expect("stderr lines")
        .iter()
        .filter(|l| !l.starts_with("20"))
        .cloned()
        .collect();
    assert_eq!(
        plain,
        std::slice::from_ref(&line),
        "one line says what is wrong"
    );
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_before_provisioning_waits_then_fails_in_one_line() {
    let nats = NatsServer::start().await;
    let mut ingest = service(Stage::Ingest, &nats.url, &[]);
    let waiting = ingest.wait_line("waiting for provisioning").await;
    assert!(
        waiting.contains("stream NOVA_TRIGGERS is missing"),
        "{waiting}"
    );
    let line = fails_with_one_line(&mut ingest).await;
    let expected = format!(
        "stream NOVA_TRIGGERS is missing: run `novactl provision --nats-url {}` (waited ",
        nats.url
    );
    assert!(line.starts_with(&expected), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_creates_reports_unchanged_applies_an_ack_wait_and_services_start() {
    let nats = NatsServer::start().await;
    // Started first, as Kubernetes may: it waits for the provisioning Job.
    let arbiter = service(Stage::Arbiter, &nats.url, &[]);
    arbiter.wait_line("waiting for provisioning").await;

    let first = novactl_provision(&nats.url, &[]).await;
    assert!(first.ok, "{}", first.stderr);
    assert_eq!(first.stdout.len(), 10, "{:?}", first.stdout);
    for object in [
        "stream NOVA_TRIGGERS",
        "stream NOVA_COMMANDS",
        "stream NOVA_RESULTS",
        "stream NOVA_AUDIT",
        "stream NOVA_DEAD",
        "KV bucket nova_arbiter",
        "KV bucket nova_capacity",
        "KV bucket nova_sim",
        "consumer arbiter on stream NOVA_TRIGGERS",
        "consumer actuator on stream NOVA_COMMANDS",
    ] {
        let line = format!("{object}: created");
        assert!(first.stdout.contains(&line), "{line} in {:?}", first.stdout);
    }
    wait_ready(&nats.url, Stage::Arbiter, 1).await;
    arbiter.wait_line("ack_wait_secs=30").await;

    let again = novactl_provision(&nats.url, &[]).await;
    assert!(again.ok, "{}", again.stderr);
    assert!(
        again
            .stdout
            .iter()
            .all(|line| line.ends_with(": unchanged")),
        "{:?}",
        again.stdout
    );

    let changed = novactl_provision(&nats.url, &["--arbiter-ack-wait-secs", "3"]).await;
    assert!(changed.ok, "{}", changed.stderr);
    let updated: Vec<&String> = changed
        .stdout
        .iter()
        .filter(|line| !line.ends_with(": unchanged"))
        .collect();
    assert_eq!(
        updated,
        ["consumer arbiter on stream NOVA_TRIGGERS: updated: ack_wait 30s -> 3s"],
        "{:?}",
        changed.stdout
    );
    let js = async_nats::jetstream::new(connect(&nats.url, "check").await);
    let stream = js.get_stream(TRIGGERS_STREAM).await.expect("stream");
    let info = stream
        .consumer_info(ARBITER_CONSUMER)
        .await
        .expect("consumer");
    assert_eq!(info.config.ack_wait, Duration::from_secs(3));

    // A new replica reads the ack wait from the consumer.
    let second = service(Stage::Arbiter, &nats.url, &[]);
    wait_ready(&nats.url, Stage::Arbiter, 2).await;
    second.wait_line("ack_wait_secs=3").await;
    // The actuator's calls fit the default 60 s ack wait.
    let _actuator = service(Stage::Actuator, &nats.url, &["--call-timeout-secs", "2"]);
    wait_ready(&nats.url, Stage::Actuator, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_with_direct_gets_fails_a_service_until_provisioned_again() {
    let nats = NatsServer::start().await;
    assert!(novactl_provision(&nats.url, &[]).await.ok);
    // As async-nats's create_key_value makes a bucket: direct gets on.
    let js = async_nats::jetstream::new(connect(&nats.url, "older").await);
    let name = format!("KV_{CAPACITY_BUCKET}");
    let mut config = js
        .get_stream(&name)
        .await
        .expect("bucket")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    config.allow_direct = true;
    js.update_stream(&config).await.expect("update");

    let mut evaluator = service(Stage::Evaluator, &nats.url, &[]);
    let line = fails_with_one_line(&mut evaluator).await;
    assert!(
        line.starts_with(&format!(
            "KV bucket nova_capacity has allow_direct on, so a read could come from a \
             follower that has not seen the last write: run `novactl provision --nats-url {}` \
             (waited ",
            nats.url
        )),
        "{line}"
    );

    let fixed = novactl_provision(&nats.url, &[]).await;
    assert!(fixed.ok, "{}", fixed.stderr);
    assert!(
        fixed
            .stdout
            .contains(&"KV bucket nova_capacity: updated: allow_direct true -> false".to_string()),
        "{:?}",
        fixed.stdout
    );
    let _evaluator = service(Stage::Evaluator, &nats.url, &[]);
    wait_ready(&nats.url, Stage::Evaluator, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_wait_shorter_than_the_actuators_calls_fails_it_in_one_line() {
    let nats = NatsServer::start().await;
    assert!(
        novactl_provision(&nats.url, &["--actuator-ack-wait-secs", "10"])
            .await
            .ok
    );
    let mut actuator = service(Stage::Actuator, &nats.url, &["--call-timeout-secs", "20"]);
    let line = fails_with_one_line(&mut actuator).await;
    assert!(
        line.starts_with(
            "nova-actuator failed: consumer actuator on stream NOVA_COMMANDS has ack_wait 10s, \
             shorter than the 1m this service needs (three times --call-timeout-secs 20): run \
             `novactl provision --nats-url URL --actuator-ack-wait-secs 60` (waited "
        ),
        "{line}"
    );
    let fixed = novactl_provision(&nats.url, &[]).await;
    assert!(
        fixed.stdout.contains(
            &"consumer actuator on stream NOVA_COMMANDS: updated: ack_wait 10s -> 1m".to_string()
        ),
        "{:?}",
        fixed.stdout
    );
    let _actuator = service(Stage::Actuator, &nats.url, &["--call-timeout-secs", "20"]);
    wait_ready(&nats.url, Stage::Actuator, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_without_nats_is_one_line_and_exit_code_3() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let run = novactl_provision("nats://127.0.0.1:1", &[]).await;
    assert_eq!(run.code, Some(3), "NATS unreachable");
    assert!(run.stdout.is_empty(), "{:?}", run.stdout);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(
        lines[0].starts_with("novactl: cannot connect to NATS at nats://127.0.0.1:1: "),
        "{}",
        run.stderr
    );
}

/// What the server holds as stream `NOVA_AUDIT`'s config.
async fn audit_config(client: &async_nats::Client) -> async_nats::jetstream::stream::Config {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(AUDIT_STREAM).await.expect("audit stream");
    stream.info().await.expect("stream info").config.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_streams_retention_and_replicas_are_set_and_updated_by_provision() {
    let nats = NatsServer::start().await;
    let client = connect(&nats.url, "test").await;
    let first = novactl_provision(&nats.url, &[]).await;
    assert!(first.ok, "{}", first.stderr);
    let config = audit_config(&client).await;
    assert_eq!(
        config.max_age,
        Duration::from_secs(30 * 86_400),
        "the default"
    );
    assert_eq!(config.num_replicas, 1);

    let second = novactl_provision(
        &nats.url,
        &["--audit-max-age", "12h", "--audit-replicas", "1"],
    )
    .await;
    assert!(second.ok, "{}", second.stderr);
    assert!(
        second
            .stdout
            .contains(&"stream NOVA_AUDIT: updated: max_age 30d -> 12h".to_string()),
        "{:?}",
        second.stdout
    );
    assert!(
        second
            .stdout
            .contains(&"stream NOVA_TRIGGERS: unchanged".to_string()),
        "only the audit stream changes: {:?}",
        second.stdout
    );
    assert_eq!(
        audit_config(&client).await.max_age,
        Duration::from_secs(12 * 3600)
    );

    // The same through the environment, and back to a week.
    let out = within(
        "novactl provision",
        WAIT * 2,
        tokio::process::Command::new(binary("novactl"))
            .args(["provision", "--nats-url", &nats.url])
            .env("NOVA_AUDIT_MAX_AGE", "7d")
            .output(),
    )
    .await
    .expect("novactl runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        audit_config(&client).await.max_age,
        Duration::from_secs(7 * 86_400)
    );

    // A bad duration: one line, nothing touched.
    let bad = novactl_provision(&nats.url, &["--audit-max-age", "soon"]).await;
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("\"soon\" is not a duration") && bad.stderr.contains("30d"),
        "{}",
        bad.stderr
    );
    // Three replicas on one server: refused with the server's reason and the hint.
    let three = novactl_provision(&nats.url, &["--audit-replicas", "3"]).await;
    assert!(!three.ok, "{:?}", three.stdout);
    assert_eq!(three.stderr.trim().lines().count(), 1, "{}", three.stderr);
    assert!(three.stderr.contains("replicas"), "{}", three.stderr);
    assert_eq!(audit_config(&client).await.num_replicas, 1);
}
