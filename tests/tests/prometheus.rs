//! Observability end to end (issue 13, part 3): the five services as
//! processes, each with its own metrics port, scraped by the real
//! Prometheus (Debian's `prometheus`; `NOVA_PROMETHEUS` overrides).
//!
//! - Right after start each service's `/healthz` is 200, its `/readyz` is
//!   200 once it answers its ping, and its `/metrics` already shows its
//!   counters at 0 (registered at start).
//! - Each answers the NATS micro-services API: `$SRV.PING`, `$SRV.INFO`
//!   and `$SRV.STATS` of `nova-<stage>` reply with that name.
//! - After a scaling action on a sim target (samples in), Prometheus's
//!   query API returns `up` 1 for every service, decisions, commands,
//!   accepted samples, the action latency histogram, the audit service's
//!   per-target capacity and the consumer lag gauge.
//! - `/readyz` turns 503 (NATS disconnected) while nats-server is down,
//!   `/healthz` stays 200, and `/readyz` is 200 again once it is back.

use std::time::Duration;

use async_nats::jetstream;
use nova_e2e::http::{encode, free_port, get};
use nova_e2e::process::ServiceProcess;
use nova_e2e::{NatsServer, STAGES, WAIT, tool, wait_ready, within};
use nova_shared::codec;
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{MetricSampleIn, SampleValue, Stage};

const POLICY: &str = r#"
metrics:
  cpu: { unit: percent }
targets:
  web:
    rules: [cpu]
    min: 1
    max: 10
    backend: { sim: { initial: 2 } }
    queue_depth: { stream: JOBS, consumer: workers, poll_every: 1s }
horizontal_scaling_rules:
  cpu:
    scale_up: { condition: "avg_cpu > 70%", action: "add 2 instances", cooldown: 0, max_instances: 10 }
"#;

/// One running service and where its HTTP listener is.
struct Service {
    stage: Stage,
    /// Killed on drop.
    _process: ServiceProcess,
    addr: String,
}

impl Service {
    async fn start(stage: Stage, nats_url: &str, policy: &std::path::Path) -> Service {
        // Port 0: the service binds a free port and logs it.
        let process = ServiceProcess::stage(
            stage.clone(),
            nats_url,
            policy,
            &["--metrics-addr", "127.0.0.1:0"],
            &[],
        );
        let line = process.wait_line("serving /metrics").await;
        let addr = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("bound="))
            .unwrap_or_else(|| panic!("no bound= in {line:?}"))
            .to_string();
        Service {
            stage,
            _process: process,
            addr,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        get(&format!("http://{}{path}", self.addr))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.stage.as_str()))
    }

    /// Polls `/readyz` until its status is `status`.
    async fn readyz_becomes(&self, status: u16) -> String {
        let what = format!("{} /readyz to answer {status}", self.stage.as_str());
        within(&what, WAIT, async {
            loop {
                if let Ok((got, body)) = get(&format!("http://{}/readyz", self.addr)).await
                    && got == status
                {
                    return body;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }
}

/// A `$SRV` request to one service; the reply as JSON.
async fn micro(client: &async_nats::Client, verb: &str, name: &str) -> serde_json::Value {
    let subject = format!("$SRV.{verb}.{name}");
    let reply = within(&subject, WAIT, client.request(subject.clone(), "".into()))
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap_or_else(|e| panic!("{subject}: {e}"))
}

/// Runs `query` on Prometheus until `accept` takes its result vector.
async fn query_until(
    prometheus: &str,
    query: &str,
    accept: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let url = format!("http://{prometheus}/api/v1/query?query={}", encode(query));
    let mut last = String::new();
    let found = tokio::time::timeout(WAIT * 2, async {
        loop {
            if let Ok((200, body)) = get(&url).await {
                let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                let result = answer["data"]["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if accept(&result) {
                    return result;
                }
                last = body;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("Prometheus never accepted {query}; last answer: {last}"))
}

/// The value of one result of an instant vector.
fn value(result: &serde_json::Value) -> f64 {
    result["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_service_and_reads_a_scaling_action_back() {
    let mut nats = NatsServer::start().await;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    nova_e2e::jobs_stream(&js).await;
    from_yaml(POLICY, "prometheus.yaml").expect("the test policy is valid");
    let policy = tempfile::NamedTempFile::new().expect("policy file");
    std::fs::write(policy.path(), POLICY).expect("write policy");

    let mut services = Vec::new();
    for stage in STAGES {
        services.push(Service::start(stage, &nats.url, policy.path()).await);
    }
    for service in &services {
        wait_ready(&nats.url, service.stage.clone(), 1).await;
        assert_eq!(service.get("/healthz").await.0, 200);
        assert_eq!(service.readyz_becomes(200).await, "ready\n");
    }

    // Counters registered at zero before anything happened.
    let zero = [
        (
            Stage::Ingest,
            "nova_ingest_samples_total{outcome=\"rejected\"} 0",
        ),
        (Stage::Evaluator, "nova_triggers_total{target=\"web\"} 0"),
        (Stage::Arbiter, "nova_decisions_total{outcome=\"scale\"} 0"),
        (
            Stage::Actuator,
            "nova_commands_total{status=\"succeeded\"} 0",
        ),
        (
            Stage::Audit,
            "nova_audit_target_records_total{target=\"web\"} ",
        ),
        (Stage::Ingest, "nova_dead_letters_total{stage=\"ingest\"} 0"),
    ];
    for (stage, line) in zero {
        let service = services.iter().find(|s| s.stage == stage).expect("running");
        let (status, page) = service.get("/metrics").await;
        assert_eq!(status, 200);
        assert!(
            page.lines().any(|l| l.starts_with(line)),
            "{} /metrics lacks {line:?}:\n{page}",
            stage.as_str()
        );
        assert!(page.contains("# HELP "), "described metrics: {page}");
    }

    // The NATS micro-services API.
    for service in &services {
        let name = format!("nova-{}", service.stage.as_str());
        let ping = micro(&client, "PING", &name).await;
        assert_eq!(ping["name"], name.as_str(), "{ping}");
        assert_eq!(ping["type"], "io.nats.micro.v1.ping_response", "{ping}");
        assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"), "{ping}");
        let info = micro(&client, "INFO", &name).await;
        assert_eq!(info["name"], name.as_str(), "{info}");
        assert_eq!(info["metadata"]["stage"], service.stage.as_str(), "{info}");
        let stats = micro(&client, "STATS", &name).await;
        assert_eq!(stats["name"], name.as_str(), "{stats}");
        assert_eq!(stats["type"], "io.nats.micro.v1.stats_response", "{stats}");
    }

    // Prometheus, scraping every service each second.
    let dir = tempfile::tempdir().expect("prometheus dir");
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for service in &services {
        config.push_str(&format!(
            "  - job_name: nova-{}\n    static_configs:\n      - targets: [\"{}\"]\n",
            service.stage.as_str(),
            service.addr
        ));
    }
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).expect("write prometheus.yml");
    let prometheus = format!("127.0.0.1:{}", free_port());
    let _prometheus = ServiceProcess::spawn(
        tool("prometheus", "NOVA_PROMETHEUS"),
        &[
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={prometheus}"),
        ],
        &[],
    );
    within("Prometheus to be ready", WAIT, async {
        while !matches!(
            get(&format!("http://{prometheus}/-/ready")).await,
            Ok((200, _))
        ) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;

    // A scaling action: cpu 95% on web, 2 -> 4.
    let sample = MetricSampleIn {
        metric: None,
        value: SampleValue::Number(95.0),
        ts: Some(nova_runtime::now_ms()),
        instance: Some("web-1".into()),
        labels: Default::default(),
    };
    client
        .publish(
            subjects::metrics("web", "cpu"),
            codec::encode(&sample).expect("encode").into(),
        )
        .await
        .expect("publish a sample");
    client.flush().await.expect("flush");

    let up = query_until(&prometheus, "up{job=~\"nova-.*\"}", |r| {
        r.len() == STAGES.len() && r.iter().all(|s| value(s) == 1.0)
    })
    .await;
    assert_eq!(up.len(), 5);
    let positive = |r: &[serde_json::Value]| r.iter().any(|s| value(s) > 0.0);
    for query in [
        "nova_ingest_samples_total{outcome=\"accepted\"}",
        "nova_triggers_total{target=\"web\"}",
        "nova_decisions_total{outcome=\"scale\"}",
        "nova_commands_total{status=\"succeeded\"}",
        "nova_action_duration_seconds_count{status=\"succeeded\"}",
        "nova_audit_target_records_total{target=\"web\"}",
        "nova_lag_polls_total{outcome=\"read\"}",
    ] {
        query_until(&prometheus, query, positive).await;
    }
    query_until(
        &prometheus,
        "nova_audit_target_capacity{target=\"web\"}",
        |r| r.iter().any(|s| value(s) == 4.0),
    )
    .await;
    let lag = query_until(
        &prometheus,
        "nova_consumer_lag_messages{stream=\"JOBS\",consumer=\"workers\"}",
        |r| !r.is_empty(),
    )
    .await;
    assert_eq!(value(&lag[0]), 0.0, "nothing published to JOBS: {lag:?}");
    assert_eq!(lag[0]["metric"]["target"], "web");

    // NATS down: not ready, still alive; back: ready again.
    nats.stop().await;
    for service in &services {
        let reason = service.readyz_becomes(503).await;
        assert!(reason.contains("NATS disconnected"), "{reason}");
        assert_eq!(service.get("/healthz").await.0, 200);
    }
    nats.restart().await;
    for service in &services {
        service.readyz_becomes(200).await;
    }
}
