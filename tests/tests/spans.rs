//! Logs attribute work to the service (and, in the actuator, the command's
//! target) that did it, even with all five services on one thread.
//!
//! A span entered with a guard and held across an `.await` stays entered on
//! the thread while the task is parked, so whatever runs there next is
//! logged inside it, and spans created meanwhile take it as their parent.
//! On a current-thread runtime every service shares one thread, which makes
//! that visible at once: with the old guards the evaluator's span was a
//! child of the ingest's, and so on down the pipeline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nova_e2e::{AuditReader, NatsServer, Pipeline};
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::AuditKind;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const POLICY: &str = r#"
targets:
  web:
    rules: [q]
    max: 50
    backend: { sim: { initial: 2 } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 100", action: "add 1 instance", cooldown: 0 }
"#;

/// The services' spans, by name.
const SERVICE_SPANS: [&str; 5] = ["ingest", "evaluator", "arbiter", "actuator", "audit"];

/// One event as logged: the module it came from, its message, and the
/// spans it was in (outermost first) with their fields.
#[derive(Debug, Clone)]
struct Logged {
    module: String,
    message: String,
    scope: Vec<(String, HashMap<String, String>)>,
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").replace('"', ""),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

/// A layer that keeps every event with its span scope.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Logged>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<Fields>()
                            .map(|f| f.0.clone())
                            .unwrap_or_default();
                        (span.name().to_string(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().expect("capture").push(Logged {
            module: event.metadata().target().to_string(),
            message: fields.0.remove("message").unwrap_or_default(),
            scope,
        });
    }
}

/// All five services on the test's one thread: a sample scales the
/// simulated fleet, the services stop, and every event a service's crate
/// logged is inside that service's span and no other; the actuator's
/// "command done" is inside the command's span, which names the target.
#[tokio::test(flavor = "current_thread")]
async fn each_service_logs_inside_its_own_span_only() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let policy = Arc::new(from_yaml(POLICY, "spans.yaml").expect("policy"));
    let pipeline = Pipeline::start(&nats, policy).await;
    let mut audit = AuditReader::new(&client).await;
    let sample = serde_json::json!({"value": 500, "ts": nova_runtime::now_ms()});
    let payload = rmp_serde::to_vec_named(&sample).expect("encode");
    nova_e2e::publish(
        &client,
        subjects::metrics("web", "queue_depth"),
        payload,
        false,
    )
    .await;
    let result = audit
        .wait_for("the result", |r| r.kind == AuditKind::Result)
        .await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    pipeline.stop().await;

    let logged = capture.0.lock().expect("capture").clone();
    let mut seen = HashMap::new();
    for event in &logged {
        let in_services: Vec<&str> = event
            .scope
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| SERVICE_SPANS.contains(name))
            .collect();
        let Some(service) = SERVICE_SPANS
            .iter()
            .find(|s| event.module.starts_with(&format!("nova_{s}")))
        else {
            // Shared code (nova_runtime) runs inside whichever service
            // called it, but inside one only.
            if event.module.starts_with("nova_") {
                assert!(in_services.len() <= 1, "{event:?}");
            }
            continue;
        };
        assert_eq!(in_services, [*service], "{event:?}");
        *seen.entry(*service).or_insert(0) += 1;
    }
    for service in ["ingest", "arbiter", "actuator", "audit"] {
        // Each of these says it stopped, at least.
        assert!(
            seen.contains_key(service),
            "nothing logged by {service}: {seen:?}"
        );
    }
    let done = logged
        .iter()
        .find(|e| e.module.starts_with("nova_actuator") && e.message == "command done")
        .expect("the actuator logged the command");
    let (name, fields) = done.scope.last().expect("a span");
    assert_eq!(name, "command", "{done:?}");
    assert_eq!(
        fields.get("target").map(String::as_str),
        Some("web"),
        "{done:?}"
    );
}
