//! The Alertmanager webhook bridge end to end: the real Alertmanager
//! delivers alerts to ingest's `POST /alertmanager`, and what comes out the
//! other end is counted (triggers in NOVA_TRIGGERS, decisions, capacity on
//! the sim backend, audit records, dead letters). Plus direct requests for
//! the refusals (401, 413, 400) and for NATS going away (503, then 200
//! with nothing lost); and the webhook over TLS, delivered by the real
//! Alertmanager trusting a self-signed certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use nova_e2e::alertmanager::{self, Alertmanager, http, rfc3339};
use nova_e2e::{AuditReader, NatsServer, Pipeline, WAIT, connect, stream_messages, within};
use nova_ingest::webhook::{Auth, Bridge, TlsFiles, WebhookConfig};
use nova_runtime::nats::{CAPACITY_BUCKET, DEAD_STREAM, TRIGGERS_STREAM};
use nova_runtime::reload::LivePolicy;
use nova_runtime::shutdown::{self, ShutdownTrigger};
use nova_shared::codec;
use nova_shared::policy::{Policy, from_yaml};
use nova_shared::subjects;
use nova_shared::wire::{
    AlertStatus, AuditKind, AuditRecord, CapacityRecord, DeadLetter, Direction, RuleFiring,
    ScaleAction, Stage, Trigger, TriggerSource, Version,
};
use serde_json::json;

/// `web` at 2 on the sim backend; the alert `HighLatency` of the web or api
/// service (not of severity info) adds 2 and holds scale-downs while it
/// fires; `HighErrors` asks what `novactl emergency up` would (double),
/// under its rule's max of 3; `SlowQueries` moves `db` one step up its
/// tier ladder; `q.scale_down` is the rule a test sends
/// scale-downs of.
const POLICY: &str = r#"
targets:
  web:
    rules: [q]
    max: 20
    backend: { sim: { initial: 2 } }
  db:
    rules: [cpu]
    max: 4
    backend: { sim: { initial: 2, tier: c5.large } }
horizontal_scaling_rules:
  q:
    scale_down: { condition: "queue_depth < 1 for 1 minute", action: "remove 1 instance", cooldown: 0 }
alert_rules:
  latency:
    target: web
    alertname: HighLatency
    matchers: ['service=~"web|api"', 'severity!="info"']
    action: add 2 instances
    cooldown: 0
    while_firing: hold_scale_downs
  surge:
    target: web
    alertname: HighErrors
    action: emergency up
    max_instances: 3
  bigger:
    target: db
    alertname: SlowQueries
    action: upgrade to the next tier
vertical_scaling_rules:
  resize:
    cpu:
      trigger: "cpu_credits < 20 for 5 minutes"
      action: "upgrade to next CPU-optimized tier"
      options: [{from: c5.large, to: c5.xlarge}]
"#;

const TOKEN: &str = "am-t0ken";

fn policy() -> Arc<Policy> {
    Arc::new(from_yaml(POLICY, "alertmanager.yaml").expect("policy"))
}

/// A bridge on a free port, serving until its trigger is dropped.
struct Served {
    url: String,
    _stop: ShutdownTrigger,
}

async fn bridge(nats_url: &str, auth: Auth, body_limit_bytes: usize) -> Served {
    bridge_with(nats_url, auth, body_limit_bytes, None).await
}

/// A bridge as [`bridge`], over HTTPS when `tls` is given.
async fn bridge_with(
    nats_url: &str,
    auth: Auth,
    body_limit_bytes: usize,
    tls: Option<TlsFiles>,
) -> Served {
    let mut config = WebhookConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.auth = auth;
    config.body_limit_bytes = body_limit_bytes;
    let scheme = if tls.is_some() { "https" } else { "http" };
    config.tls = tls;
    let bridge = Bridge::bind(config).await.expect("webhook binds");
    let url = format!(
        "{scheme}://{}{}",
        bridge.local_addr().expect("bound"),
        nova_ingest::webhook::PATH
    );
    let client = connect(nats_url, "webhook").await;
    let (stop, signal) = shutdown::channel();
    tokio::spawn(bridge.serve(LivePolicy::fixed(policy()), client, signal.signal()));
    Served { url, _stop: stop }
}

/// One alert as Prometheus posts it to Alertmanager's v2 API.
fn alert(service: &str, starts_ms: i64, ends_ms: Option<i64>) -> serde_json::Value {
    let mut alert = json!({
        "labels": { "alertname": "HighLatency", "service": service, "severity": "page" },
        "annotations": { "summary": "p99 latency above 500ms" },
        "startsAt": rfc3339(starts_ms),
        "generatorURL": "http://prometheus.example/graph",
    });
    if let Some(ends) = ends_ms {
        alert["endsAt"] = json!(rfc3339(ends));
    }
    alert
}

/// The alert triggers in NOVA_TRIGGERS.
async fn alert_triggers(client: &async_nats::Client) -> Vec<Trigger> {
    let triggers: Vec<Trigger> = stream_messages(client, TRIGGERS_STREAM).await;
    triggers
        .into_iter()
        .filter(|t| t.source == TriggerSource::Alert)
        .collect()
}

/// Waits until the actuator has recorded `desired` for `target`.
async fn wait_capacity(client: &async_nats::Client, target: &str, desired: u32) {
    let js = async_nats::jetstream::new(client.clone());
    let store = js.get_key_value(CAPACITY_BUCKET).await.expect("bucket");
    let mut watch = store.watch_with_history(target).await.expect("watch");
    within(&format!("capacity of {target} at {desired}"), WAIT, async {
        while let Some(entry) = watch.next().await {
            let record: CapacityRecord =
                codec::decode(&entry.expect("entry").value, codec::Encoding::MsgPack)
                    .expect("capacity record");
            if record.desired == desired && record.observed_ms > 0 {
                return;
            }
        }
        panic!("the capacity watch ended");
    })
    .await;
}

/// A scale-down of rule `q.scale_down`, as the evaluator would send it.
async fn scale_down(client: &async_nats::Client, id: &str) {
    let trigger = Trigger {
        v: Version::CURRENT,
        id: id.to_string(),
        ts: nova_runtime::now_ms(),
        target: "web".into(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring {
            rule: "q.scale_down".into(),
            direction: Direction::Down,
            action: ScaleAction::Remove(1),
            observed: Some(0.0),
            threshold: Some(1.0),
            condition: "queue_depth < 1 for 1 minute".into(),
            held_secs: 60,
            reason: "queue_depth 0 < 1 for 1m".into(),
        }],
        policy_revision: None,
        alert: None,
    };
    let js = async_nats::jetstream::new(client.clone());
    nova_runtime::publish::publish_once(&js, subjects::triggers("web"), id, &trigger)
        .await
        .expect("trigger stored");
}

fn decision_of(id: &str) -> impl Fn(&AuditRecord) -> bool + '_ {
    move |r| r.kind == AuditKind::Decision && r.trigger_id.as_deref() == Some(id)
}

struct World {
    nats: NatsServer,
    client: async_nats::Client,
    pipeline: Pipeline,
    audit: AuditReader,
}

async fn world() -> World {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, policy()).await;
    wait_capacity(&client, "web", 2).await;
    World {
        nats,
        client,
        pipeline,
        audit,
    }
}

/// The bridge and the Alertmanager [`one_alert`] leaves running. Keep it
/// bound (not `_`) for the whole test: dropping it stops both.
struct Bridged {
    served: Served,
    am: Alertmanager,
}

/// A [`world`] whose bridge (bearer [`TOKEN`]; over HTTPS with `tls`)
/// takes the notifications of one Alertmanager (trusting `tls`'s
/// certificate; sending a group again after `repeat_interval`), which is
/// given `alerts`; returns once ingest has audited a fired trigger, with
/// that audit record.
async fn one_alert(
    alerts: serde_json::Value,
    tls: Option<TlsFiles>,
    repeat_interval: &str,
) -> (World, AuditRecord, Bridged) {
    let mut w = world().await;
    let ca = tls.as_ref().map(|t| t.cert.clone());
    let served = bridge_with(&w.nats.url, Auth::Bearer(TOKEN.into()), 1 << 20, tls).await;
    let config = alertmanager::config(&served.url, Some(TOKEN), ca.as_deref(), repeat_interval);
    let am = Alertmanager::start(&config, None).await;
    am.post_alerts(&alerts).await;
    let fired = w
        .audit
        .wait_for("the alert's trigger", |r| {
            r.stage == Stage::Ingest && r.kind == AuditKind::Trigger && r.outcome == "fired"
        })
        .await;
    (w, fired, Bridged { served, am })
}

/// Firing, a repeat, the hold it starts, and its resolution, all delivered
/// by a real Alertmanager (bearer token in its `http_config`).
#[tokio::test]
async fn an_alert_fires_repeats_and_resolves_through_a_real_alertmanager() {
    let started = nova_runtime::now_ms() - 5_000;
    // The db alert is in the same group (by alertname) and matches no rule.
    let alerts = json!([alert("web", started, None), alert("db", started, None)]);
    let (mut w, fired, bridged) = one_alert(alerts, None, "2s").await;
    assert_eq!(fired.rule.as_deref(), Some("latency"));
    assert!(
        fired.reason.contains("alert HighLatency firing"),
        "{}",
        fired.reason
    );
    let firing_id = fired.trigger_id.clone().expect("trigger id");
    let decided = w
        .audit
        .wait_for("the alert's decision", decision_of(&firing_id))
        .await;
    assert_eq!(
        (decided.outcome.as_str(), decided.from, decided.to),
        ("scale", Some(2), Some(4)),
        "{}",
        decided.reason
    );
    wait_capacity(&w.client, "web", 4).await;

    // Alertmanager sends the group again after repeat_interval: the same
    // notification, the same trigger id, stored once.
    bridged.am.wait_notifications(2.0).await;
    let triggers = alert_triggers(&w.client).await;
    assert_eq!(
        triggers.len(),
        1,
        "one trigger for a repeated alert: {triggers:?}"
    );
    assert_eq!(triggers[0].id, firing_id);

    // While it fires, scale-downs wait.
    scale_down(&w.client, "down-1").await;
    let held = w
        .audit
        .wait_for("the held scale-down", decision_of("down-1"))
        .await;
    assert_eq!(held.outcome, "paused", "{}", held.reason);
    assert!(
        held.reason.contains("alert HighLatency fires"),
        "{}",
        held.reason
    );

    // Resolved (endsAt in the past): the hold ends.
    let now = nova_runtime::now_ms();
    bridged
        .am
        .post_alerts(&json!([alert("web", started, Some(now - 1_000))]))
        .await;
    let resolved = w
        .audit
        .wait_for("the resolved alert's trigger", |r| {
            r.stage == Stage::Ingest && r.reason.contains("HighLatency resolved")
        })
        .await;
    let resolved_id = resolved.trigger_id.clone().expect("trigger id");
    assert_ne!(resolved_id, firing_id);
    let lifted = w
        .audit
        .wait_for("the resolution's decision", decision_of(&resolved_id))
        .await;
    assert_eq!(lifted.outcome, "no_change", "{}", lifted.reason);
    assert!(
        lifted.reason.contains("no longer holds scale-downs"),
        "{}",
        lifted.reason
    );

    scale_down(&w.client, "down-2").await;
    let down = w
        .audit
        .wait_for("the scale-down", decision_of("down-2"))
        .await;
    assert_eq!(
        (down.outcome.as_str(), down.to),
        ("scale", Some(3)),
        "{}",
        down.reason
    );
    wait_capacity(&w.client, "web", 3).await;

    let triggers = alert_triggers(&w.client).await;
    let statuses: Vec<AlertStatus> = triggers
        .iter()
        .filter_map(|t| t.alert.as_ref().map(|a| a.status.clone()))
        .collect();
    assert_eq!(statuses, [AlertStatus::Firing, AlertStatus::Resolved]);
    let dead: Vec<DeadLetter> = stream_messages(&w.client, DEAD_STREAM).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    w.pipeline.stop().await;
}

/// An alert rule's `emergency up`: the arbiter doubles the capacity it
/// reads (2 -> 4), clamped at the rule's max of 3, not forced past it; the
/// reason says it was the alert's emergency up.
#[tokio::test]
async fn an_alert_asks_emergency_up_and_the_arbiter_decides_it_within_bounds() {
    let alerts = json!([{
        "labels": { "alertname": "HighErrors", "service": "web" },
        "startsAt": rfc3339(nova_runtime::now_ms() - 5_000),
    }]);
    let (mut w, fired, _bridged) = one_alert(alerts, None, "2s").await;
    assert_eq!(fired.rule.as_deref(), Some("surge"));
    let id = fired.trigger_id.clone().expect("trigger id");
    let decided = w
        .audit
        .wait_for("the emergency up's decision", decision_of(&id))
        .await;
    assert_eq!(
        (decided.outcome.as_str(), decided.from, decided.to),
        ("scale", Some(2), Some(3)),
        "{}",
        decided.reason
    );
    assert!(
        decided
            .reason
            .contains("alert HighErrors firing (service=\"web\"; fingerprint"),
        "{}",
        decided.reason
    );
    assert!(
        decided
            .reason
            .contains("rule surge asks emergency up: double, 2 -> 4"),
        "{}",
        decided.reason
    );
    wait_capacity(&w.client, "web", 3).await;
    let triggers = alert_triggers(&w.client).await;
    assert_eq!(triggers.len(), 1, "{triggers:?}");
    assert_eq!(
        triggers[0].firings[0].action,
        ScaleAction::EmergencyUp { by: None, to: None },
        "the trigger carries the ask; the arbiter resolves it"
    );
    w.pipeline.stop().await;
}

/// An alert rule's vertical step: `db` moves up its ladder, same count.
#[tokio::test]
async fn an_alert_moves_a_target_one_step_up_its_tier_ladder() {
    let alerts = json!([{
        "labels": { "alertname": "SlowQueries" },
        "startsAt": rfc3339(nova_runtime::now_ms() - 5_000),
    }]);
    let (mut w, fired, _bridged) = one_alert(alerts, None, "2s").await;
    let id = fired.trigger_id.clone().expect("trigger id");
    let decided = w
        .audit
        .wait_for("the vertical step's decision", decision_of(&id))
        .await;
    assert_eq!(decided.outcome, "scale", "{}", decided.reason);
    assert!(
        decided.reason.contains(
            "rule bigger asks to upgrade to the next tier; resizing db from c5.large to c5.xlarge (2 instances)"
        ),
        "{}",
        decided.reason
    );
    let js = async_nats::jetstream::new(w.client.clone());
    let store = js.get_key_value(CAPACITY_BUCKET).await.expect("bucket");
    let mut watch = store.watch_with_history("db").await.expect("watch");
    within("db at c5.xlarge", WAIT, async {
        while let Some(entry) = watch.next().await {
            let record: CapacityRecord =
                codec::decode(&entry.expect("entry").value, codec::Encoding::MsgPack)
                    .expect("capacity record");
            if record.tier.as_deref() == Some("c5.xlarge") && record.desired == 2 {
                return;
            }
        }
        panic!("the capacity watch ended");
    })
    .await;
    w.pipeline.stop().await;
}

/// The webhook over TLS: a self-signed certificate made by the `openssl`
/// CLI, which the real Alertmanager trusts (`tls_config.ca_file`) and
/// delivers through; a plain-HTTP request to the TLS port is refused and
/// stores nothing. Skipped where there is no `openssl`.
#[tokio::test]
async fn the_webhook_over_tls_takes_alertmanager_and_refuses_plain_http() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("openssl failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            eprintln!("skipped: no openssl CLI ({e})");
            return;
        }
    }
    let tls = TlsFiles { cert, key };
    let alerts = json!([alert("web", nova_runtime::now_ms() - 5_000, None)]);
    let (mut w, fired, bridged) = one_alert(alerts, Some(tls), "1h").await;
    let served = &bridged.served;
    assert!(served.url.starts_with("https://"), "{}", served.url);

    // Plain HTTP to the TLS port: no answer with a status, nothing stored
    // (the count of triggers below).
    let plain = served.url.replacen("https://", "http://", 1);
    let answer = http(
        "POST",
        &plain,
        &[("authorization", &format!("Bearer {TOKEN}"))],
        payload("fp-plain"),
    )
    .await;
    assert!(answer.is_err(), "plain HTTP to the TLS port: {answer:?}");

    let id = fired.trigger_id.clone().expect("trigger id");
    let decided = w.audit.wait_for("its decision", decision_of(&id)).await;
    assert_eq!(
        (decided.outcome.as_str(), decided.to),
        ("scale", Some(4)),
        "{}",
        decided.reason
    );
    let triggers = alert_triggers(&w.client).await;
    assert_eq!(
        triggers.len(),
        1,
        "only Alertmanager's, over TLS: {triggers:?}"
    );
    w.pipeline.stop().await;
}

/// Two Alertmanagers in a cluster, each given the alert (as Prometheus
/// sends to every member), each delivering it: one trigger, one decision.
#[tokio::test]
async fn an_ha_pair_delivers_one_alert_twice_and_it_is_one_trigger() {
    let mut w = world().await;
    let served = bridge(&w.nats.url, Auth::None, 1 << 20).await;
    let config = alertmanager::config(&served.url, None, None, "1h");
    // A peer timeout this short makes the second member send before it
    // hears that the first did, as a partitioned pair would.
    let first = Alertmanager::start(&config, Some(&[])).await;
    let peer = first.cluster.clone().expect("cluster address");
    let second = Alertmanager::start(&config, Some(&[peer])).await;
    tokio::join!(first.wait_cluster(2), second.wait_cluster(2));
    let started = nova_runtime::now_ms() - 5_000;
    let alerts = json!([alert("api", started, None)]);
    tokio::join!(first.post_alerts(&alerts), second.post_alerts(&alerts));
    tokio::join!(
        first.wait_notifications(1.0),
        second.wait_notifications(1.0)
    );
    let fired = w
        .audit
        .wait_for("the alert's trigger", |r| {
            r.stage == Stage::Ingest && r.outcome == "fired"
        })
        .await;
    let id = fired.trigger_id.clone().expect("trigger id");
    let decided = w.audit.wait_for("its decision", decision_of(&id)).await;
    assert_eq!(decided.outcome, "scale", "{}", decided.reason);
    wait_capacity(&w.client, "web", 4).await;
    let triggers = alert_triggers(&w.client).await;
    assert_eq!(
        triggers.len(),
        1,
        "two deliveries, one trigger: {triggers:?}"
    );
    let decisions = w.audit.seen.iter().filter(|r| decision_of(&id)(r)).count();
    assert_eq!(decisions, 1);
    w.pipeline.stop().await;
}

/// A valid payload of one firing alert, as Alertmanager sends it.
fn payload(fingerprint: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "4", "status": "firing", "receiver": "nova", "groupKey": "{}:{alertname=\"HighLatency\"}",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": "HighLatency", "service": "web" },
            "annotations": {},
            "startsAt": "2026-12-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://p",
            "fingerprint": fingerprint,
        }],
    }))
    .expect("json")
}

/// Wrong or missing credentials, a body over the limit and a bad payload
/// each get a clear refusal; only the bad payload is dead-lettered, and
/// nothing is published.
#[tokio::test]
async fn the_bridge_refuses_bad_requests_with_a_reason() {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let auth = Auth::Basic {
        user: "am".into(),
        password: "pw".into(),
    };
    let served = bridge(&nats.url, auth, 2048).await;
    let good = ("Authorization", "Basic YW06cHc="); // am:pw
    let json = ("Content-Type", "application/json");
    let cases: Vec<(&str, Vec<(&str, &str)>, Vec<u8>, u16, &str)> = vec![
        ("no credentials", vec![json], payload("f1"), 401, "missing credentials"),
        (
            "wrong password",
            vec![json, ("Authorization", "Basic YW06cHg=")],
            payload("f1"),
            401,
            "wrong user name or password",
        ),
        (
            "over the limit",
            vec![json, good],
            vec![b' '; 4096],
            413,
            "over the limit of 2048 bytes",
        ),
        (
            "bad payload",
            vec![json, good],
            br#"{"version":"4","alerts":[{"status":"pending","labels":{"alertname":"X"},"startsAt":"x","fingerprint":"f"}]}"#.to_vec(),
            400,
            "alerts[0]: status \"pending\"",
        ),
    ];
    for (name, headers, body, status, reason) in cases {
        let answer = http("POST", &served.url, &headers, body).await.expect(name);
        assert_eq!(answer.status, status, "{name}: {}", answer.body);
        assert!(answer.body.contains(reason), "{name}: {}", answer.body);
    }
    let dead: Vec<DeadLetter> = stream_messages(&client, DEAD_STREAM).await;
    assert_eq!(dead.len(), 1, "only the bad payload: {dead:?}");
    assert_eq!(dead[0].stage, Stage::Ingest);
    assert!(
        dead[0].reason.contains("status \"pending\""),
        "{}",
        dead[0].reason
    );
    assert!(alert_triggers(&client).await.is_empty());
    // And the right request is taken.
    let answer = http("POST", &served.url, &[json, good], payload("f1"))
        .await
        .expect("accepted");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(alert_triggers(&client).await.len(), 1);
}

/// While NATS is away the bridge answers 503 (Alertmanager retries); once
/// it is back the retry is stored, and what was accepted before is still
/// there.
#[tokio::test]
async fn nats_down_is_503_and_the_retry_is_stored_with_nothing_lost() {
    let mut nats = NatsServer::start().await;
    let client = nats.client().await;
    let served = bridge(&nats.url, Auth::None, 1 << 20).await;
    let json = ("Content-Type", "application/json");
    let before = http("POST", &served.url, &[json], payload("before"))
        .await
        .expect("answered");
    assert_eq!(before.status, 200, "{}", before.body);

    nats.stop().await;
    let refused = http("POST", &served.url, &[json], payload("during"))
        .await
        .expect("answered");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("retry later"), "{}", refused.body);

    nats.restart().await;
    // As Alertmanager does: send again until it is taken.
    within("the retry to be taken", WAIT, async {
        loop {
            let answer = http("POST", &served.url, &[json], payload("during"))
                .await
                .expect("answered");
            if answer.status == 200 {
                return;
            }
            assert_eq!(answer.status, 503, "{}", answer.body);
        }
    })
    .await;
    let client = if client.connection_state() == async_nats::connection::State::Connected {
        client
    } else {
        connect(&nats.url, "test-after").await
    };
    let fingerprints: Vec<String> = alert_triggers(&client)
        .await
        .iter()
        .filter_map(|t| t.alert.as_ref().map(|a| a.fingerprint.clone()))
        .collect();
    assert_eq!(fingerprints, ["before", "during"]);
}
