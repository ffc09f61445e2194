//! The JSON Schemas of the wire messages in `schemas/`, generated from the
//! types (`schemars`, behind the feature `schema`, so the services do not
//! build it). [`files`] is the whole of them; the test
//! `tests/tests/schemas.rs` fails when a committed file differs from what
//! it generates (and writes them, run with `NOVA_WRITE_SCHEMAS=1`).
//!
//! What the types say (fields, their docs, types, which are required,
//! integer ranges, enum values) comes from the types. What they cannot say
//! is added here, file by file, and is the only hand-kept part: each file's
//! title, description and examples (typed values, so an example is always
//! a message this code writes), the patterns of names that are subject
//! tokens, and the rules across fields a producer guarantees (a trigger's
//! firings are all vertical or none is; an audit record's outcome matches
//! its kind).
//!
//! Enums list the values this version writes. Readers take more (a newer
//! version's values decode as `Unknown`), but a message of this version
//! has one of these, which is what the schemas check.
//!
//! Not generated: `policy.schema.json` (the policy file is read by a
//! hand-written loader from a YAML tree, `policy/load.rs`: no serde type
//! describes the file).

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, json_schema};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::audit_stats::{AuditStats, StatsRequest, TargetStats};
use crate::wire::{
    ActionResult, AuditKind, AuditQuery, AuditRecord, CapacityRecord, Command, ControlReply,
    ControlRequest, DeadLetter, Direction, DirectionRequest, ErrorReply, Extra, Lease,
    MetricSampleIn, Outcome, PlanProgress, ResultStatus, RuleFiring, Sample, SampleBatch,
    SampleValue, ScaleAction, ScaleRequest, Stage, TargetStatus, Trigger, TriggerSource, Version,
};

/// Where every schema's `$id` starts.
pub const ID_BASE: &str = "https://novacron.dev/schemas/";

/// Target and metric names: subject tokens.
const TOKEN: &str = "^[A-Za-z0-9_-]+$";

/// Said of the control request, a closed message.
const CLOSED: &str = "The arbiter refuses a field its verb does not take, so additional \
                      properties are not allowed.";

/// Said of the audit stats request, the other closed message.
const CLOSED_STATS: &str = "The audit service refuses a field the request does not have (the \
                            reply is then an error), so additional properties are not allowed.";

/// Said of every message: readers tolerate unknown fields.
const OPEN: &str = "Readers ignore fields they do not know, so additional properties are allowed.";

/// One generated file of `schemas/`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaFile {
    /// File name, e.g. `trigger.schema.json`.
    pub name: &'static str,
    /// The schema.
    pub schema: Value,
}

impl SchemaFile {
    /// The file's text as committed: pretty JSON, two-space indent, a final
    /// newline.
    pub fn text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.schema).expect("a schema is JSON");
        text.push('\n');
        text
    }
}

/// Every generated schema file.
pub fn files() -> Vec<SchemaFile> {
    vec![
        metric_sample(),
        file::<SampleBatch>(
            "sample-batch",
            "Sample batch",
            "Published by ingest on nova.samples.<target>: the validated samples of one message \
             for one target, in canonical units (ratio: 70% is 0.7; seconds: 500ms is 0.5; \
             count). Rust: nova_shared::wire::SampleBatch.",
            &[SampleBatch {
                target: "worker".into(),
                samples: vec![Sample {
                    metric: "queue_depth".into(),
                    value: 1500.0,
                    ts: 1_764_370_000_000,
                    instance: Some("queue-1".into()),
                }],
            }],
        ),
        trigger(),
        file::<Command>(
            "command",
            "Command",
            "Published by the arbiter on nova.commands.<target> (stream NOVA_COMMANDS, \
             Nats-Msg-Id = decision_id): an absolute desired capacity for one target and, for \
             vertical scaling, the instance tier to run. Rust: nova_shared::wire::Command.",
            &[command(None), command(Some("c5.xlarge"))],
        ),
        file::<ActionResult>(
            "action-result",
            "Action result",
            "Published by the actuator on nova.results.<target> (stream NOVA_RESULTS): how a \
             command ended. Rust: nova_shared::wire::ActionResult.",
            &[ActionResult {
                v: Version::CURRENT,
                decision_id: "d-0123456789abcdef".into(),
                seq: 7,
                target: "worker".into(),
                ts: 1_764_370_000_123,
                status: ResultStatus::Succeeded,
                backend: "ecs".into(),
                from: Some(5),
                desired: 10,
                tier: None,
                response: "desiredCount 5 -> 10".into(),
            }],
        ),
        audit_record(),
        file::<DeadLetter>(
            "dead-letter",
            "Dead letter",
            "Published on nova.dead.<stage> (stream NOVA_DEAD) for every message a stage could \
             not use. Rust: nova_shared::wire::DeadLetter.",
            &[DeadLetter {
                v: Version::CURRENT,
                stage: Stage::Ingest,
                subject: "nova.metrics.worker.queue_depth".into(),
                reason: "metric queue_depth: expected a number with an optional unit (70%, 0.7, \
                         500ms, 2s), found \"lots\""
                    .into(),
                ts: 1_764_370_000_000,
                payload: br#"{"value": "lots"}"#.to_vec(),
                payload_size: 17,
                payload_fnv64: format!("{:016x}", crate::ids::fnv64(&[br#"{"value": "lots"}"#])),
                truncated: false,
            }],
        ),
        file::<CapacityRecord>(
            "capacity-record",
            "Capacity record",
            "Value in KV bucket nova_capacity, key = target: the target's capacity as the \
             actuator last saw it. Rust: nova_shared::wire::CapacityRecord.",
            &[capacity(None), capacity(Some("c5.large")), walking()],
        ),
        file::<AuditQuery>(
            "audit-query",
            "Audit query",
            "Request to the audit service on nova.ctl.audit (request/reply). An empty payload \
             asks for the newest 50 records of every target. The reply is an array of audit \
             records (audit-record.schema.json), oldest first. Rust: \
             nova_shared::wire::AuditQuery.",
            &[
                AuditQuery::default(),
                AuditQuery {
                    target: Some("worker".into()),
                    limit: Some(10),
                },
            ],
        ),
        control_request(),
        file::<ControlReply>(
            "control-reply",
            "Control reply",
            "The arbiter's reply to a control request. Rust: nova_shared::wire::ControlReply.",
            &[ControlReply {
                ok: true,
                message: "scale-down of worker paused by an operator: deploy".into(),
                error: None,
                targets: vec![TargetStatus {
                    target: "worker".into(),
                    min: 10,
                    max: 200,
                    capacity: Some(capacity(None)),
                    desired: Some(12),
                    paused_up: false,
                    paused_down: true,
                    dry_run: false,
                    up_cooldown_until: 1_764_370_120_000,
                    down_cooldown_until: 0,
                    wall_up_cooldown_until: 0,
                    wall_down_cooldown_until: 0,
                    last_decision: Some("queue_depth 1500 > 1000: add 5 workers, 5 -> 10".into()),
                    backend_error: None,
                }],
            }],
        ),
        audit_stats_request(),
        audit_stats_reply(),
    ]
}

/// The audit stats request: closed, like the type (`deny_unknown_fields`,
/// which schemars reads as `additionalProperties: false`).
fn audit_stats_request() -> SchemaFile {
    let mut file = file::<StatsRequest>(
        "audit-stats-request",
        "Audit stats request",
        "Request to the audit service on nova.ctl.audit.stats (request/reply), from operators' \
         tools: which span and target the runbook's section 8 figures are wanted for. An empty \
         payload asks for every target over the last hour with a flap window of 1800 s. The \
         reply is audit-stats.schema.json. Rust: nova_shared::audit_stats::StatsRequest.",
        &[
            StatsRequest::default(),
            StatsRequest {
                target: Some("worker".into()),
                since_ms: Some(1_764_366_400_000),
                until_ms: Some(1_764_370_000_000),
                flap_window_secs: Some(600),
            },
        ],
    );
    file.schema["description"] = json!(
        file.schema["description"]
            .as_str()
            .expect("a description")
            .replace(OPEN, CLOSED_STATS)
    );
    assert_eq!(
        file.schema["additionalProperties"],
        json!(false),
        "StatsRequest denies unknown fields"
    );
    file
}

/// What the audit service answers on `nova.ctl.audit.stats`: the figures,
/// or `{error}` for a request it cannot read. Only the schema needs the two
/// as one type; a client decodes one or the other.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
enum StatsReply {
    /// The figures of every target with a record in the span.
    Stats(AuditStats),
    /// The request could not be read (not a stats request, an unknown
    /// field, a start after the end, a time before 1970); it was also
    /// dead-lettered on nova.dead.audit.
    Error(ErrorReply),
}

fn audit_stats_reply() -> SchemaFile {
    let worker = TargetStats {
        target: "worker".into(),
        actions: 4,
        successes: 3,
        failures: 1,
        success_rate: 0.75,
        scale_ups: 2,
        scale_downs: 1,
        capacity_moved: 9,
        scaling_velocity_per_hour: 9.0,
        flapping_episodes: 1,
        reversals: 1,
        flapping_notes: 0,
        max: Some(15),
        time_at_max_secs: 420.0,
        not_taken: [("cooldown".to_string(), 2), ("at_max".to_string(), 1)].into(),
    };
    let quiet = TargetStats {
        target: "api".into(),
        success_rate: 1.0,
        not_taken: [("no_change".to_string(), 1)].into(),
        ..TargetStats::default()
    };
    let stats = AuditStats {
        from_ms: 1_764_366_400_000,
        to_ms: 1_764_370_000_000,
        flap_window_secs: 1800,
        records: 23,
        targets: vec![quiet, worker],
    };
    let error = ErrorReply {
        error: "not an audit stats request: since_ms 1764370000000 is after until_ms \
                1764366400000: give a start before the end"
            .into(),
    };
    let mut file = file::<StatsReply>(
        "audit-stats",
        "Audit stats",
        "The audit service's reply on nova.ctl.audit.stats: the runbook's section 8 figures \
         (README: audit stats) per target with a record in the span, by name, over the records \
         the service keeps; or {error} for a request it cannot read. novactl audit stats \
         --output json prints the same figures. Rust: nova_shared::audit_stats::AuditStats, \
         or nova_shared::wire::ErrorReply.",
        &[
            StatsReply::Stats(stats),
            StatsReply::Stats(AuditStats {
                from_ms: 1_764_366_400_000,
                to_ms: 1_764_370_000_000,
                flap_window_secs: 1800,
                records: 0,
                targets: vec![],
            }),
            StatsReply::Error(error),
        ],
    );
    // Which of the two a reply is follows from `error` (a client tells them
    // apart the same way), so a bad reply is checked against the one it
    // means to be and its errors name the field, where `anyOf` would
    // report the closer miss of both.
    let Some(Value::Array(mut either)) =
        file.schema.as_object_mut().and_then(|m| m.remove("anyOf"))
    else {
        panic!("an untagged enum is an anyOf")
    };
    let (stats, error) = (either.remove(0), either.remove(0));
    file.schema["if"] = json!({
        "required": ["error"],
        "description": "A reply with an error is an error reply.",
    });
    file.schema["then"] = error;
    file.schema["else"] = stats;
    file
}

/// The schema of a control request's `direction`: the strings `up` or
/// `down` only (what `wire::up_or_down` reads), or absent.
pub(crate) fn up_or_down(_: &mut schemars::SchemaGenerator) -> Schema {
    json_schema!({
        "enum": ["up", "down", null],
        "description": "Only this direction; both when absent.",
    })
}

/// The control request: generated from [`ControlRequest`], a map tagged by
/// its `verb`, with one change the type cannot say. On the per-verb
/// subjects the subject names the verb, so `verb` may be left out; a
/// request without it matches every verb whose fields it has (a `pause`
/// body is a `resume` body), hence `anyOf` where serde's tag gives `oneOf`.
/// Unlike every other message, the control plane is closed: the arbiter
/// refuses a field its verb does not take, by name.
fn control_request() -> SchemaFile {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut root = generator
        .into_root_schema_for::<ControlRequest>()
        .to_value();
    refine(&mut root);
    let Value::Object(map) = &mut root else {
        panic!("a schema is an object")
    };
    let variants = map.remove("oneOf").expect("a tagged enum is a oneOf");
    let Value::Array(mut variants) = variants else {
        panic!("oneOf is an array")
    };
    for variant in &mut variants {
        let Value::Object(variant) = variant else {
            panic!("a variant is an object")
        };
        if let Some(Value::Array(required)) = variant.get_mut("required") {
            required.retain(|r| r != "verb");
            if required.is_empty() {
                variant.remove("required");
            }
        }
        if let Some(verb) = variant
            .get_mut("properties")
            .and_then(|p| p.get_mut("verb"))
        {
            verb["description"] = json!(
                "The verb: required on nova.ctl.arbiter; on a per-verb subject it may be \
                 left out and must match when present."
            );
        }
    }
    map.insert("anyOf".into(), Value::Array(variants));
    let direction = |direction| DirectionRequest {
        target: "worker".into(),
        direction,
        reason: Some("maintenance window".into()),
    };
    let mut file = finish(
        "control-request",
        "Control request",
        "Request to the arbiter (request/reply), tagged by its verb: on nova.ctl.arbiter the \
         verb is required; on nova.ctl.status, nova.ctl.pause, nova.ctl.resume or \
         nova.ctl.scale it may be left out (the subject names it) and must match when \
         present. The reply is a control reply; an unknown verb is refused by name. An empty \
         payload on nova.ctl.status asks for the status of every target. Rust: \
         nova_shared::wire::ControlRequest.",
        &[
            serde_json::to_value(ControlRequest::status(None)).expect("JSON"),
            serde_json::to_value(ControlRequest::Scale(ScaleRequest {
                target: "worker".into(),
                desired: 12,
                reason: Some("incident 42".into()),
                force: true,
            }))
            .expect("JSON"),
            serde_json::to_value(ControlRequest::Pause(direction(Some(Direction::Up))))
                .expect("JSON"),
            // As sent on nova.ctl.resume and nova.ctl.status: no verb.
            serde_json::to_value(direction(None)).expect("JSON"),
            json!({}),
        ],
        root,
    );
    file.schema["description"] = json!(
        file.schema["description"]
            .as_str()
            .expect("a description")
            .replace(OPEN, CLOSED)
    );
    file
}

/// The schema of a dead letter's payload: MessagePack bin on the wire, which
/// JSON tools see as an array of byte values or, after some converters, a
/// string.
pub(crate) fn dead_payload(_: &mut schemars::SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["array", "string"],
        "items": {
            "type": "integer", "minimum": 0, "maximum": 255,
            "description": "One byte value.",
        },
    })
}

/// The schema of `T` as a file: its `$id`, title, description and
/// examples, and the refinements every message gets.
fn file<T: JsonSchema>(
    stem: &'static str,
    title: &str,
    description: &str,
    examples: &[impl Serialize],
) -> SchemaFile {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut root = schema.to_value();
    refine(&mut root);
    finish(stem, title, description, examples, root)
}

/// Sets the file's own keys, in a fixed order at the top.
fn finish(
    stem: &'static str,
    title: &str,
    description: &str,
    examples: &[impl Serialize],
    root: Value,
) -> SchemaFile {
    let name: &'static str = match stem {
        "metric-sample" => "metric-sample.schema.json",
        "sample-batch" => "sample-batch.schema.json",
        "trigger" => "trigger.schema.json",
        "command" => "command.schema.json",
        "action-result" => "action-result.schema.json",
        "audit-record" => "audit-record.schema.json",
        "dead-letter" => "dead-letter.schema.json",
        "capacity-record" => "capacity-record.schema.json",
        "audit-query" => "audit-query.schema.json",
        "control-request" => "control-request.schema.json",
        "control-reply" => "control-reply.schema.json",
        "audit-stats-request" => "audit-stats-request.schema.json",
        "audit-stats" => "audit-stats.schema.json",
        other => panic!("no schema file for {other}"),
    };
    let mut out = Map::new();
    out.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    out.insert("$id".into(), json!(format!("{ID_BASE}{name}")));
    out.insert("title".into(), json!(title));
    out.insert("description".into(), json!(format!("{description} {OPEN}")));
    let Value::Object(rest) = root else {
        panic!("a schema is an object")
    };
    for (key, value) in rest {
        if !matches!(key.as_str(), "$schema" | "$id" | "title" | "description") {
            out.insert(key, value);
        }
    }
    let examples: Vec<Value> = examples
        .iter()
        .map(|e| serde_json::to_value(e).expect("an example is JSON"))
        .collect();
    out.insert("examples".into(), Value::Array(examples));
    SchemaFile {
        name,
        schema: Value::Object(out),
    }
}

/// What every message schema gets beyond the types: integer ranges that
/// JSON Schema does not read from `format`, the patterns of names that are
/// subject tokens, and non-empty tiers.
fn refine(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(format) = map.get("format").and_then(Value::as_str) {
                let range: Option<(Value, Value)> = match format {
                    "uint8" => Some((json!(0), json!(u8::MAX))),
                    "uint16" => Some((json!(0), json!(u16::MAX))),
                    "uint32" => Some((json!(0), json!(u32::MAX))),
                    "uint64" | "uint" => Some((json!(0), json!(u64::MAX))),
                    "int64" | "int" => Some((json!(i64::MIN), json!(i64::MAX))),
                    _ => None,
                };
                if let Some((min, max)) = range {
                    map.entry("minimum").or_insert(min);
                    map.entry("maximum").or_insert(max);
                }
            }
            if let Some(Value::Object(properties)) = map.get_mut("properties") {
                for (name, property) in properties.iter_mut() {
                    let Value::Object(property) = property else {
                        continue;
                    };
                    let is_string = property.get("type").is_some_and(|t| {
                        t == "string" || t.as_array().is_some_and(|a| a.contains(&json!("string")))
                    });
                    if !is_string {
                        continue;
                    }
                    match name.as_str() {
                        "target" | "metric" => {
                            property.insert("pattern".into(), json!(TOKEN));
                        }
                        "tier" | "from_tier" | "to_tier" => {
                            property.insert("minLength".into(), json!(1));
                        }
                        "payload_fnv64" => {
                            property.insert("pattern".into(), json!("^[0-9a-f]{16}$"));
                        }
                        _ => {}
                    }
                }
            }
            for value in map.values_mut() {
                refine(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(refine),
        _ => {}
    }
}

/// One sample or an array of them.
fn metric_sample() -> SchemaFile {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut sample = generator
        .into_root_schema_for::<MetricSampleIn>()
        .to_value();
    refine(&mut sample);
    let Value::Object(mut sample) = sample else {
        panic!("a schema is an object")
    };
    let defs = sample.remove("$defs");
    sample.remove("$schema");
    sample.remove("title");
    sample.insert(
        "description".into(),
        json!("One measurement (Rust: nova_shared::wire::MetricSampleIn)."),
    );
    let mut defs = match defs {
        Some(Value::Object(defs)) => defs,
        _ => Map::new(),
    };
    defs.insert("sample".into(), Value::Object(sample));
    let root = json!({
        "type": ["object", "array"],
        "if": {"type": "array"},
        "then": {"items": {"$ref": "#/$defs/sample"}},
        "else": {"$ref": "#/$defs/sample"},
        "$defs": defs,
    });
    let one = MetricSampleIn {
        metric: None,
        value: SampleValue::Text("70%".into()),
        ts: Some(1_764_370_000_000),
        instance: Some("web-1".into()),
        labels: Default::default(),
    };
    let queue = MetricSampleIn {
        metric: Some("queue_depth".into()),
        value: SampleValue::Number(1500.0),
        ts: Some(1_764_370_000_000),
        instance: Some("queue-1".into()),
        labels: [("az".to_string(), "us-east-1a".to_string())].into(),
    };
    let bare = MetricSampleIn {
        metric: None,
        value: SampleValue::Text("1.2e3".into()),
        ts: None,
        instance: Some("queue-2".into()),
        labels: Default::default(),
    };
    finish(
        "metric-sample",
        "Metric sample message",
        "What a publisher sends on nova.metrics.<target>.<metric> (or nova.metrics.<target>, \
         when every sample names its metric): one sample, or an array of samples. A \
         MessagePack map with field names, or JSON when the header Content-Type: \
         application/json says so. Ingest validates each element of an array on its own and \
         dead-letters only the bad ones; this schema rejects the whole array if any element is \
         bad.",
        &[json!(one), json!([queue, bare])],
        root,
    )
}

/// Triggers: a producer never publishes one without firings, and a trigger's
/// firings are all vertical (`"next_tier"`, always up) or none is.
fn trigger() -> SchemaFile {
    let firing = |rule: &str, direction: Direction, action: ScaleAction| RuleFiring {
        rule: rule.into(),
        direction,
        action,
        observed: Some(0.82),
        threshold: Some(0.7),
        condition: "avg_cpu > 70% for 2 minutes".into(),
        held_secs: 120,
        reason: "avg cpu 82% > 70% for 2 minutes".into(),
    };
    let trigger = |id: &str, target: &str, firings| Trigger {
        v: Version::CURRENT,
        id: id.into(),
        ts: 1_764_370_000_000,
        target: target.into(),
        source: TriggerSource::Rule,
        firings,
        policy_revision: None,
        alert: None,
    };
    let tracking = RuleFiring {
        condition: "avg_cpu at 60%".into(),
        threshold: Some(0.6),
        observed: Some(0.9),
        held_secs: 0,
        reason: "avg_cpu 90% against a target of 60%: 10 -> 15 instances".into(),
        ..firing("cpu_target", Direction::Up, ScaleAction::Set(15))
    };
    let vertical = RuleFiring {
        condition: "cpu_credits < 20 for 5 minutes".into(),
        observed: Some(12.0),
        threshold: Some(20.0),
        held_secs: 300,
        reason: "max_cpu_credits 12 < 20 for 5m".into(),
        ..firing(
            "instance_resize.cpu_intensive",
            Direction::Up,
            ScaleAction::NextTier,
        )
    };
    let mut file = file::<Trigger>(
        "trigger",
        "Trigger",
        "Published by the evaluator on nova.triggers.<target> (stream NOVA_TRIGGERS, \
         Nats-Msg-Id = id): every rule that fired for one target at one event time; the \
         arbiter resolves them into one decision. Vertical firings (action \"next_tier\") \
         travel in triggers of their own, apart from the horizontal and target tracking \
         firings of the same instant. Rust: nova_shared::wire::Trigger.",
        &[
            trigger(
                "t-1f2e3d4c5b6a7980",
                "api",
                vec![firing(
                    "cpu_based.scale_up",
                    Direction::Up,
                    ScaleAction::Add(2),
                )],
            ),
            trigger("t-2a3b4c5d6e7f8091", "web", vec![tracking]),
            trigger("t-3b4c5d6e7f809102", "compute", vec![vertical]),
        ],
    );
    let vertical = json!({"const": "next_tier", "description": "A vertical firing."});
    let firings = &mut file.schema["properties"]["firings"];
    firings["minItems"] = json!(1);
    firings["anyOf"] = json!([
        {
            "description": "Horizontal and target tracking firings only.",
            "items": {"properties": {"action": {
                "not": {"const": "next_tier"}, "description": "Not a vertical firing."
            }}},
        },
        {
            "description": "Vertical firings only.",
            "items": {"properties": {"action": vertical}},
        },
    ]);
    file.schema["$defs"]["RuleFiring"]["allOf"] = json!([{
        "if": {"properties": {"action": vertical}, "required": ["action"]},
        "then": {"properties": {"direction": {
            "const": "up", "description": "A resize is a scale-up."
        }}},
    }]);
    file
}

/// The outcomes of the actuator's command records: a command picked up, a
/// retry, and a gradual walk's steps, validations, pauses and rollback.
const COMMAND_OUTCOMES: [&str; 6] = [
    "executing",
    "retrying",
    "step",
    "validated",
    "paused",
    "rollback",
];

/// Audit records: the outcome goes with the kind.
fn audit_record() -> SchemaFile {
    let mut decision = AuditRecord::new(
        "a-0123456789abcdef".into(),
        1_764_370_000_000,
        Stage::Arbiter,
        "worker",
        AuditKind::Decision,
        Outcome::Scale.as_str(),
        "queue_depth 1500 > 1000: add 5 workers, 5 -> 10".into(),
    );
    decision.rule = Some("queue_depth.scale_up".into());
    decision.observed = Some(1500.0);
    decision.threshold = Some(1000.0);
    decision.from = Some(5);
    decision.to = Some(10);
    decision.trigger_id = Some("t-0123456789abcdef".into());
    decision.decision_id = Some("d-0123456789abcdef".into());
    let mut result = AuditRecord::new(
        "a-fedcba9876543210".into(),
        1_764_370_000_123,
        Stage::Actuator,
        "worker",
        AuditKind::Result,
        ResultStatus::Succeeded.as_str(),
        "worker now at desired 10: desiredCount 5 -> 10".into(),
    );
    result.from = Some(5);
    result.to = Some(10);
    result.decision_id = Some("d-0123456789abcdef".into());
    result.backend_response = Some("desiredCount 5 -> 10".into());
    let mut step = AuditRecord::new(
        "a-00112233445566aa".into(),
        1_764_370_000_050,
        Stage::Actuator,
        "worker",
        AuditKind::Command,
        "step",
        "step 3 of 5: 9 -> 11 (walking 5 -> 15 by 2)".into(),
    );
    step.from = Some(9);
    step.to = Some(11);
    step.decision_id = Some("d-0123456789abcdef".into());
    step.backend_response = Some("desiredCount 9 -> 11".into());
    let mut rolled_back = AuditRecord::new(
        "a-fedcba98765432ff".into(),
        1_764_370_000_900,
        Stage::Actuator,
        "worker",
        AuditKind::Result,
        ResultStatus::RolledBack.as_str(),
        "worker rolled back to 9: step 3 of 5 (11) failed validation twice: error_rate 3% > 1%"
            .into(),
    );
    rolled_back.observed = Some(0.03);
    rolled_back.threshold = Some(0.01);
    rolled_back.from = Some(5);
    rolled_back.to = Some(15);
    rolled_back.decision_id = Some("d-0123456789abcdef".into());
    rolled_back.backend_response = Some("desiredCount 11 -> 9".into());
    let mut file = file::<AuditRecord>(
        "audit-record",
        "Audit record",
        "Published by each stage on nova.audit.<stage>.<target> (stream NOVA_AUDIT, \
         Nats-Msg-Id = id): one record per trigger, decision (taken or not), command picked \
         up and result. Also the items of the reply to an audit query on nova.ctl.audit. \
         Rust: nova_shared::wire::AuditRecord.",
        &[decision, result, step, rolled_back],
    );
    let mut decisions: Vec<&str> = Outcome::KNOWN.to_vec();
    decisions.push("flapping");
    let statuses = ResultStatus::KNOWN;
    let rule = |kind: &AuditKind, outcomes: Value, what: &str| {
        json!({
            "if": {
                "properties": {"kind": {"const": kind.as_str(), "description": format!("A {what} record.")}},
                "required": ["kind"],
            },
            "then": {"properties": {"outcome": {
                "enum": outcomes,
                "description": format!("The outcomes a {what} record can have."),
            }}},
        })
    };
    let rules: Vec<Value> = AuditKind::KNOWN
        .iter()
        .map(|kind| {
            let kind = AuditKind::from_wire(kind);
            match &kind {
                AuditKind::Trigger => rule(&kind, json!(["fired"]), "trigger"),
                AuditKind::Decision => rule(&kind, json!(decisions), "decision"),
                AuditKind::Command => rule(&kind, json!(COMMAND_OUTCOMES), "command"),
                AuditKind::Result => rule(&kind, json!(statuses), "result"),
                AuditKind::Control => rule(&kind, json!(["paused", "resumed"]), "control"),
                AuditKind::Unknown(name) => panic!("{name} is known"),
            }
        })
        .collect();
    file.schema["allOf"] = Value::Array(rules);
    file.schema["properties"]["outcome"]["description"] = json!(format!(
        "Depends on kind: trigger: fired; decision: {} (flapping: an extra record beside a \
         scale decision whose cooldown was raised); command: {} (step, validated, paused, rollback: a gradual walk's steps); result: {}; \
         control: paused, resumed.",
        Outcome::KNOWN.join(", "),
        COMMAND_OUTCOMES.join(", "),
        ResultStatus::KNOWN.join(", ")
    ));
    file
}

fn command(tier: Option<&str>) -> Command {
    Command {
        v: Version::CURRENT,
        decision_id: "d-0123456789abcdef".into(),
        seq: 7,
        ts: 1_764_370_000_000,
        target: "worker".into(),
        from: 5,
        desired: if tier.is_some() { 5 } else { 10 },
        tier: tier.map(str::to_string),
        promote: None,
        rule: Some("queue_depth.scale_up".into()),
        reason: "queue_depth 1500 > 1000: add 5 workers, 5 -> 10".into(),
        extra: Extra::new(),
    }
}

/// A capacity record with a gradual walk in flight, and a newer command
/// waiting for it.
fn walking() -> CapacityRecord {
    CapacityRecord {
        desired: 11,
        running: Some(9),
        plan: Some(PlanProgress {
            seq: 8,
            step: 3,
            of: 5,
            to: 11,
            from: 5,
            desired: 15,
            extra: Extra::new(),
        }),
        wanted_seq: 9,
        ..capacity(None)
    }
}

fn capacity(tier: Option<&str>) -> CapacityRecord {
    CapacityRecord {
        target: "worker".into(),
        desired: 10,
        running: Some(8),
        applied_seq: 7,
        tier: tier.map(str::to_string),
        observed_ms: 1_764_370_000_500,
        backend: "ecs".into(),
        claimed_seq: 8,
        lease: Some(Lease {
            decision_id: "d-1122334455667788".into(),
            owner: "actuator-7f3a".into(),
            expires_ms: 1_764_370_042_500,
            extra: Extra::new(),
        }),
        attempts: 1,
        ..CapacityRecord::default()
    }
}
