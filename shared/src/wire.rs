//! The messages on the wire. Outside programs publish [`MetricSampleIn`] and
//! read [`AuditRecord`]; the rest flows between stages. Every struct
//! tolerates unknown fields, so newer publishers do not break older readers.
//! The JSON Schemas in `schemas/` describe the same shapes.
//!
//! Across a rolling upgrade ([`open`]): stored records carry a [`Version`]
//! `v`, records that are read and written back keep unknown fields in
//! `extra`, and enums decode values they do not know as `Unknown`.

pub mod open;

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use open::open_enum;
pub use open::{Extra, Version, VersionProbe};

open_enum! {
    /// Scale direction, ordered so that the safest wins a `max`: Down < None
    /// < Up. An `Unknown` direction (a newer writer's) is never acted on.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum Direction {
        /// Remove capacity.
        Down = "down",
        /// Leave capacity as it is.
        None = "none",
        /// Add capacity.
        Up = "up",
    }
}

/// A sample's value as published: a number in the metric's configured unit,
/// or a string carrying its own unit (`"70%"`, `"500ms"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SampleValue {
    /// A number in the unit configured for the metric.
    Number(f64),
    /// A number with its unit, e.g. `"70%"`.
    Text(String),
}

/// A metric sample as publishers send it on `nova.metrics.<target>.<metric>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MetricSampleIn {
    /// Metric name; may be omitted when the subject names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// The measured value.
    pub value: SampleValue,
    /// Event time in unix milliseconds, integer or float (Python's
    /// `time.time() * 1000` works; a float is truncated) within +-9e15;
    /// receive time when absent or null.
    #[serde(
        default,
        deserialize_with = "de_opt_millis",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<f64>", range(min = -9.0e15, max = 9.0e15))
    )]
    pub ts: Option<i64>,
    /// Which instance measured it; samples of one metric from several
    /// instances are aggregated by the rule (`avg_cpu`, `max_cpu`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Free-form labels, carried but not interpreted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

// Hand-written visitors instead of `#[serde(untagged)]`: an untagged enum
// buffers every value before trying its variants, which made decoding the
// costliest part of ingest (see BENCHMARKS.md).
impl<'de> Deserialize<'de> for SampleValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl serde::de::Visitor<'_> for ValueVisitor {
            type Value = SampleValue;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, or a string with its unit such as \"70%\"")
            }

            fn visit_f64<E>(self, v: f64) -> Result<SampleValue, E> {
                Ok(SampleValue::Number(v))
            }

            fn visit_i64<E>(self, v: i64) -> Result<SampleValue, E> {
                Ok(SampleValue::Number(v as f64))
            }

            fn visit_u64<E>(self, v: u64) -> Result<SampleValue, E> {
                Ok(SampleValue::Number(v as f64))
            }

            fn visit_str<E>(self, v: &str) -> Result<SampleValue, E> {
                Ok(SampleValue::Text(v.to_string()))
            }

            fn visit_string<E>(self, v: String) -> Result<SampleValue, E> {
                Ok(SampleValue::Text(v))
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// What the visitors above accept: a number, or a string with a unit that
/// ingest reads (a number, then `%`, `ms` or `s`; a string ingest would
/// reject is refused here already).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for SampleValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SampleValue".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["number", "string"],
            "pattern": r"^\s*[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s*(?:%|ms|s)?\s*$",
        })
    }
}

/// Accepts integer or float milliseconds (Python's `time.time() * 1000` is a float).
fn de_opt_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct MillisVisitor;
    impl<'de> serde::de::Visitor<'de> for MillisVisitor {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a unix time in milliseconds")
        }

        fn visit_none<E>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Option<i64>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_i64<E>(self, ms: i64) -> Result<Option<i64>, E> {
            Ok(Some(ms))
        }

        fn visit_u64<E: serde::de::Error>(self, ms: u64) -> Result<Option<i64>, E> {
            i64::try_from(ms)
                .map(Some)
                .map_err(|_| E::custom(format!("ts {ms} is not a unix time in milliseconds")))
        }

        fn visit_f64<E: serde::de::Error>(self, ms: f64) -> Result<Option<i64>, E> {
            if ms.is_finite() && ms.abs() < 9.0e15 {
                Ok(Some(ms as i64))
            } else {
                Err(E::custom(format!(
                    "ts {ms:e} is not a unix time in milliseconds"
                )))
            }
        }
    }
    deserializer.deserialize_option(MillisVisitor)
}

/// A validated sample in canonical units (ratio, seconds, count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Sample {
    /// Metric name.
    pub metric: String,
    /// Value in the canonical unit of its dimension.
    pub value: f64,
    /// Event time, unix milliseconds.
    pub ts: i64,
    /// Instance that measured it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// Normalised samples for one target, as ingest publishes them on `nova.samples.<target>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SampleBatch {
    /// Target the samples belong to.
    pub target: String,
    /// The samples, in the order received.
    pub samples: Vec<Sample>,
}

/// A relative or absolute capacity change, as a rule states it: on the wire
/// `{"add": 2}`, `{"remove": 1}`, `{"set": 10}` or `"next_tier"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleAction {
    /// Add this many instances.
    Add(u32),
    /// Remove this many instances.
    Remove(u32),
    /// Set capacity to exactly this many instances.
    Set(u32),
    /// Move one step up the rule's tier ladder (vertical scaling); the
    /// number of instances stays.
    NextTier,
    /// Promote this read replica of an RDS replica set to a standalone DB
    /// instance (an operator's `novactl promote`): the set has one fewer.
    Promote(String),
    /// Hold off removing capacity while the rule's condition holds (an RDS
    /// replica set's `max_replica_lag`); changes nothing itself.
    HoldScaleDowns,
    /// What the operator's `novactl emergency up` would ask (`--by N`,
    /// `--to N`, else double), resolved by the arbiter at decision time
    /// from the target's capacity ([`crate::emergency::ask`]); an alert
    /// rule's `action: emergency up`. Unlike the operator's, it is not
    /// forced: the rule's cooldown and the bounds apply.
    EmergencyUp {
        /// Add this many instances.
        by: Option<u32>,
        /// Go to this many instances (only if above the capacity).
        to: Option<u32>,
    },
    /// An action this version does not know (a newer writer's), by its tag
    /// (`{"scale_by": 3}` is `Unknown("scale_by")`); never acted on.
    Unknown(String),
}

impl ScaleAction {
    /// The capacity this action asks for, from `current` (before bounds).
    /// An unknown action asks for no change.
    pub fn apply(&self, current: u32) -> u32 {
        match *self {
            ScaleAction::Add(n) => current.saturating_add(n),
            ScaleAction::Remove(n) => current.saturating_sub(n),
            ScaleAction::Set(n) => n,
            ScaleAction::Promote(_) => current.saturating_sub(1),
            ScaleAction::NextTier
            | ScaleAction::HoldScaleDowns
            | ScaleAction::EmergencyUp { .. }
            | ScaleAction::Unknown(_) => current,
        }
    }

    /// Operator wording: `add 2`, `remove 1`, `set to 20`.
    pub fn describe(&self) -> String {
        match self {
            ScaleAction::Add(n) => format!("add {n}"),
            ScaleAction::Remove(n) => format!("remove {n}"),
            ScaleAction::Set(n) => format!("set to {n}"),
            ScaleAction::NextTier => "upgrade to the next tier".to_string(),
            ScaleAction::Promote(replica) => format!("promote {replica} to a standalone instance"),
            ScaleAction::HoldScaleDowns => "hold off removing capacity".to_string(),
            ScaleAction::EmergencyUp { by: Some(n), .. } => format!("emergency up by {n}"),
            ScaleAction::EmergencyUp { to: Some(n), .. } => format!("emergency up to {n}"),
            ScaleAction::EmergencyUp { .. } => "emergency up".to_string(),
            ScaleAction::Unknown(tag) => format!("{tag} (an action this version does not know)"),
        }
    }

    /// Whether this version knows the action.
    pub fn is_known(&self) -> bool {
        !matches!(self, ScaleAction::Unknown(_))
    }
}

// By hand, so that an action of a newer version decodes as `Unknown` and
// the shape stays what serde derives for the known ones.
impl Serialize for ScaleAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ScaleAction::Add(n) => serializer.serialize_newtype_variant("ScaleAction", 0, "add", n),
            ScaleAction::Remove(n) => {
                serializer.serialize_newtype_variant("ScaleAction", 1, "remove", n)
            }
            ScaleAction::Set(n) => serializer.serialize_newtype_variant("ScaleAction", 2, "set", n),
            ScaleAction::NextTier => {
                serializer.serialize_unit_variant("ScaleAction", 3, "next_tier")
            }
            ScaleAction::Promote(replica) => {
                serializer.serialize_newtype_variant("ScaleAction", 4, "promote", replica)
            }
            ScaleAction::HoldScaleDowns => {
                serializer.serialize_unit_variant("ScaleAction", 5, "hold_scale_downs")
            }
            ScaleAction::EmergencyUp { by, to } => serializer.serialize_newtype_variant(
                "ScaleAction",
                6,
                "emergency_up",
                &EmergencyUpArgs { by: *by, to: *to },
            ),
            ScaleAction::Unknown(tag) => serializer.serialize_str(tag),
        }
    }
}

/// The body of `{"emergency_up": {"by": n}}` (or `"to"`, or neither).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmergencyUpArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<u32>,
}

/// The actions this version writes (a reader also takes a newer version's
/// unknown tag, as `Unknown`).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for ScaleAction {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ScaleAction".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                {
                    "type": "object",
                    "description": "A capacity change, externally tagged: exactly one key.",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "additionalProperties": false,
                    "properties": {
                        "add": {
                            "type": "integer", "minimum": 1, "maximum": u32::MAX,
                            "description": "Add this many instances.",
                        },
                        "remove": {
                            "type": "integer", "minimum": 1, "maximum": u32::MAX,
                            "description": "Remove this many instances.",
                        },
                        "set": {
                            "type": "integer", "minimum": 0, "maximum": u32::MAX,
                            "description": "Set capacity to exactly this many instances (a \"set to\" rule, an operator or fallback request, or a target tracking rule's recommendation).",
                        },
                        "emergency_up": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": {
                                "by": {"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "Add this many instances."},
                                "to": {"type": "integer", "minimum": 1, "maximum": u32::MAX, "description": "Go to this many instances."},
                            },
                            "description": "What the operator's emergency up would ask (by, to, else double), resolved by the arbiter from the target's capacity; an alert rule's action, under its cooldown and bounds.",
                        },
                        "promote": {
                            "type": "string", "minLength": 1,
                            "description": "Promote this read replica of an RDS replica set to a standalone DB instance (an operator's request): the set has one fewer.",
                        },
                    },
                },
                {
                    "const": "next_tier",
                    "description": "Move one step up the rule's tier ladder (vertical scaling); the number of instances stays.",
                },
                {
                    "const": "hold_scale_downs",
                    "description": "Hold off removing capacity while the rule's condition holds (an RDS replica set's replica lag); changes nothing itself.",
                },
            ],
        })
    }
}

impl<'de> Deserialize<'de> for ScaleAction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ActionVisitor;
        impl<'de> serde::de::Visitor<'de> for ActionVisitor {
            type Value = ScaleAction;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"an action: {"add": n}, {"remove": n}, {"set": n} or "next_tier""#)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ScaleAction, E> {
                Ok(match v {
                    "next_tier" => ScaleAction::NextTier,
                    "hold_scale_downs" => ScaleAction::HoldScaleDowns,
                    "promote" => {
                        return Err(E::custom(
                            "action \"promote\" needs a replica: {\"promote\": \"<replica id>\"}",
                        ));
                    }
                    "add" | "remove" | "set" => {
                        return Err(E::custom(format!(
                            "action {v:?} needs a number: {{{v:?}: n}}"
                        )));
                    }
                    other => ScaleAction::Unknown(other.to_string()),
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ScaleAction, A::Error> {
                use serde::de::Error;
                let Some(tag) = map.next_key::<String>()? else {
                    return Err(A::Error::custom("an action map needs one key, found none"));
                };
                let action = match tag.as_str() {
                    "add" => ScaleAction::Add(map.next_value()?),
                    "remove" => ScaleAction::Remove(map.next_value()?),
                    "set" => ScaleAction::Set(map.next_value()?),
                    "promote" => ScaleAction::Promote(map.next_value()?),
                    "next_tier" => {
                        map.next_value::<()>()?;
                        ScaleAction::NextTier
                    }
                    "emergency_up" => {
                        let EmergencyUpArgs { by, to } = map.next_value()?;
                        ScaleAction::EmergencyUp { by, to }
                    }
                    _ => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        ScaleAction::Unknown(tag)
                    }
                };
                if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom("an action map has one key, found more"));
                }
                Ok(action)
            }
        }
        deserializer.deserialize_any(ActionVisitor)
    }
}

open_enum! {
    /// Where a trigger came from. The arbiter decides a trigger of an
    /// `Unknown` source like any other: the source does not change a decision.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum TriggerSource {
        /// A threshold rule held for its duration.
        Rule = "rule",
        /// An operator's request through `novactl` or the control subjects.
        Operator = "operator",
        /// The target's metric source went silent and the policy has a fallback.
        Fallback = "fallback",
        /// An Alertmanager alert matched one of the policy's `alert_rules`
        /// (ingest's webhook bridge); its [`Trigger::alert`] says which.
        Alert = "alert",
    }
}

open_enum! {
    /// An alert's status in an Alertmanager notification.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum AlertStatus {
        /// The alert fires.
        Firing = "firing",
        /// The alert has stopped firing.
        Resolved = "resolved",
    }
}

/// The alert behind a trigger of source `alert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AlertRef {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// Its `alertname` label.
    pub alertname: String,
    /// Alertmanager's fingerprint of its labels.
    pub fingerprint: String,
    /// When it started firing, RFC 3339 as Alertmanager wrote it.
    pub starts_at: String,
}

/// One rule that fired, with what it saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RuleFiring {
    /// Rule name, `<group>.<scale_up|scale_down>` for runbook rules.
    pub rule: String,
    /// Direction the rule pushes.
    pub direction: Direction,
    /// What the rule asks for.
    pub action: ScaleAction,
    /// The aggregated value that met the condition, canonical units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// The rule's threshold, canonical units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The rule's condition as written, e.g. `avg_cpu > 70% for 2 minutes`.
    #[serde(default)]
    pub condition: String,
    /// How long the condition has held, seconds of event time.
    #[serde(default)]
    pub held_secs: u64,
    /// Human sentence: what was seen and why it fired.
    #[serde(default)]
    pub reason: String,
}

impl RuleFiring {
    /// A firing that carries no measurement: no observed value, threshold
    /// or condition, held for no time (an operator's request, a schedule's
    /// or a test's).
    pub fn plain(
        rule: impl Into<String>,
        direction: Direction,
        action: ScaleAction,
        reason: impl Into<String>,
    ) -> Self {
        RuleFiring {
            rule: rule.into(),
            direction,
            action,
            observed: None,
            threshold: None,
            condition: String::new(),
            held_secs: 0,
            reason: reason.into(),
        }
    }
}

/// Rules that fired for one target at one event time: `nova.triggers.<target>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Trigger {
    /// Version of the message's shape (1 when absent: written before versions).
    #[serde(default = "Version::unversioned")]
    pub v: Version,
    /// Deterministic id (same inputs, same id), used as `Nats-Msg-Id`.
    pub id: String,
    /// Event time of the sample that completed the condition, unix ms.
    pub ts: i64,
    /// Target to scale.
    pub target: String,
    /// Where the trigger came from.
    pub source: TriggerSource,
    /// The rules that fired at this instant; the arbiter resolves them.
    pub firings: Vec<RuleFiring>,
    /// Revision of the policy the evaluator evaluated them with
    /// (`nova_shared::policy::revision`); absent from triggers written before
    /// revisions, and from operator and outside triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// The alert a trigger of source `alert` comes from: a resolved one ends
    /// what its firing started (`alert_rules[].while_firing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertRef>,
}

open_enum! {
    /// What the arbiter made of a trigger.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum Outcome {
        /// A command was issued.
        Scale = "scale",
        /// Not taken: the direction is cooling down.
        Cooldown = "cooldown",
        /// Not taken: already at the maximum.
        AtMax = "at_max",
        /// Not taken: already at the minimum.
        AtMin = "at_min",
        /// Not taken: a recent scale-up signal outranks this scale-down.
        Overridden = "overridden",
        /// Not taken: capacity would not change.
        NoChange = "no_change",
        /// Not taken: the target's capacity is not known yet.
        UnknownCapacity = "unknown_capacity",
        /// Not taken: this trigger was already decided (redelivery or replica).
        Duplicate = "duplicate",
        /// Not taken: an operator paused this direction.
        Paused = "paused",
        /// Not taken: the target is in dry-run mode; the reason says what would happen.
        DryRun = "dry_run",
        /// Not taken: capacity added by the last scale-up is still warming up.
        WarmingUp = "warming_up",
        /// Not taken: a target tracking rule's rate-limit policies allow no
        /// change now (or its direction is disabled).
        RateLimited = "rate_limited",
        /// Not taken: the target's tier is the top of the vertical rule's ladder
        /// (or on no step of it).
        AtTopTier = "at_top_tier",
        /// Not decided, yet: the trigger, the target's state or its capacity
        /// record is of a newer version than this arbiter understands (or
        /// holds a value it does not know that the decision depends on).
        /// Only audited, never stored: the trigger is redelivered until an
        /// arbiter that understands it decides it.
        Deferred = "deferred",
        /// Not taken: the rule fired before the target's last action, which a
        /// later trigger caused (decided first, after a broker outage or by
        /// another arbiter replica); an older view is not applied after a newer.
        Superseded = "superseded",
        /// Not taken: an `emergency up` holds scale-downs for its
        /// configured time (`emergency down`, `reset` or `scale --force`
        /// go past it).
        EmergencyHold = "emergency_hold",
        /// Replication lag is above the replica set's `max_replica_lag`:
        /// the alert when it starts, and a removal not taken while it lasts.
        ReplicaLag = "replica_lag",
    }
}

/// The arbiter's decision about one trigger, taken or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Version of the record's shape (1 when absent: written before versions).
    #[serde(default = "Version::unversioned")]
    pub v: Version,
    /// Deterministic id derived from the trigger id; the command's `Nats-Msg-Id`.
    pub id: String,
    /// The trigger decided on.
    pub trigger_id: String,
    /// Event time of the decision (the trigger's), unix ms.
    pub ts: i64,
    /// Target.
    pub target: String,
    /// What happened.
    pub outcome: Outcome,
    /// Direction of the winning firing.
    pub direction: Direction,
    /// The winning rule, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Capacity before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// Capacity asked for (only meaningful for `scale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// Instance tier before, for vertical decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_tier: Option<String>,
    /// Instance tier asked for, for vertical decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_tier: Option<String>,
    /// One sentence for operators: rule, value, threshold, and what shaped it.
    pub reason: String,
    /// Revision of the policy the arbiter decided with; absent from
    /// decisions written before revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// Fields of a newer version, kept as read: a decision is stored in the
    /// arbiter's state and written back with it.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An absolute capacity command on `nova.commands.<target>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Command {
    /// Version of the message's shape (1 when absent: written before versions).
    #[serde(default = "Version::unversioned")]
    pub v: Version,
    /// The decision that issued it; also the `Nats-Msg-Id`.
    pub decision_id: String,
    /// Per-target sequence number; the actuator never applies an older one.
    pub seq: u64,
    /// Event time of the decision, unix ms.
    pub ts: i64,
    /// Target.
    pub target: String,
    /// Capacity the arbiter believed the target had.
    pub from: u32,
    /// Absolute desired capacity.
    pub desired: u32,
    /// Instance tier to run (vertical scaling); the tier stays when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The read replica to promote, for an operator's promote (RDS replica
    /// sets): the actuator promotes it instead of deleting one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// Rule that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The decision's reason.
    pub reason: String,
    /// Fields of a newer version, kept as read: a command is stored in the
    /// arbiter's state and published again from it after a crash.
    #[serde(flatten)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub extra: Extra,
}

open_enum! {
    /// How a command ended.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum ResultStatus {
        /// The backend accepted the new capacity.
        Succeeded = "succeeded",
        /// The backend refused or could not be reached.
        Failed = "failed",
        /// Not applied again: this very command was already applied (a
        /// redelivery after the result was written).
        Skipped = "skipped",
        /// Not applied: a newer command for the target was already applied or is
        /// being applied, and commands take effect in decision order. Also a
        /// gradual walk stopped between steps for a newer command; its
        /// response names the step reached.
        Superseded = "superseded",
        /// A gradual walk's step failed validation twice and the capacity was
        /// set back to the last step that passed; a failure for the arbiter,
        /// its response naming the failing check and value.
        RolledBack = "rolled_back",
    }
}

/// The result of executing a command, on `nova.results.<target>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ActionResult {
    /// Version of the message's shape (1 when absent: written before versions).
    #[serde(default = "Version::unversioned")]
    pub v: Version,
    /// The command's decision id.
    pub decision_id: String,
    /// The command's sequence number.
    pub seq: u64,
    /// Target.
    pub target: String,
    /// Wall-clock time the result was produced, unix ms.
    pub ts: i64,
    /// How it ended.
    pub status: ResultStatus,
    /// Backend kind (`ecs`, `sim`).
    pub backend: String,
    /// Capacity the backend reported before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// Capacity asked for.
    pub desired: u32,
    /// Instance tier asked for, for vertical commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Short summary of what the backend answered.
    pub response: String,
}

/// Capacity of a target as the actuator last saw it (KV `nova_capacity`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CapacityRecord {
    /// Version of the record's shape (1 when absent: written before
    /// versions). An actuator does not write back a record of a newer version.
    #[serde(default = "Version::unversioned")]
    pub v: Version,
    /// Target.
    pub target: String,
    /// Desired capacity set on the backend.
    pub desired: u32,
    /// Capacity actually running, when the backend reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
    /// Highest command sequence applied (0: none yet).
    #[serde(default)]
    pub applied_seq: u64,
    /// Instance tier the target runs, for backends with tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Wall-clock time of the observation, unix ms.
    pub observed_ms: i64,
    /// Backend kind.
    pub backend: String,
    /// Highest command sequence an actuator has started to apply (0: none).
    /// Commands older than this are superseded: see `nova_shared::lease`.
    #[serde(default)]
    pub claimed_seq: u64,
    /// The actuator applying command `claimed_seq` now, until its lease ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Backend attempts made for command `claimed_seq`.
    #[serde(default)]
    pub attempts: u32,
    /// The backend's last error, when the latest read or change failed
    /// (`desired` is then the last value read successfully).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<BackendFault>,
    /// The gradual walk of command `claimed_seq` in flight, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanProgress>,
    /// Highest command sequence that found the lease held by an older
    /// command and is waiting for it (0: none): a gradual walk stops
    /// between steps for it. A high-water mark, like `claimed_seq`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wanted_seq: u64,
    /// Highest command sequence whose action failed (settled without
    /// taking effect; 0: none): the arbiter lifts the cooldowns it started.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_seq: u64,
    /// The backend's own fencing token in the reading stored here, for a
    /// backend that keeps one: the simulated fleet, whose state in NATS KV
    /// carries the sequence of the command that last set it. ECS and RDS
    /// keep none. A later reading with an older token came from a copy
    /// that had not seen the last change, and is not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<u64>,
    /// Fields of a newer version, kept as read and written back unchanged.
    #[serde(flatten)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub extra: Extra,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How far a gradual walk (`nova_shared::gradual`) has come, in its
/// target's capacity record: `novactl status` shows "step 3 of 5".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlanProgress {
    /// The command walking.
    pub seq: u64,
    /// The step applied last (from 1).
    pub step: u32,
    /// Number of steps.
    pub of: u32,
    /// That step's capacity.
    pub to: u32,
    /// The capacity before the first step.
    pub from: u32,
    /// The walk's end: the command's desired capacity.
    pub desired: u32,
    /// Fields of a newer version, kept as read and written back unchanged.
    #[serde(flatten)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub extra: Extra,
}

/// An actuator's hold on a target while it applies one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Lease {
    /// The command's decision id.
    pub decision_id: String,
    /// The actuator process holding it.
    pub owner: String,
    /// Wall-clock end of the lease, unix ms: after it, another actuator may
    /// take the command over.
    pub expires_ms: i64,
    /// Fields of a newer version, kept as read and written back unchanged.
    #[serde(flatten)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub extra: Extra,
}

/// A backend error as stored for operators and the arbiter: one line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BackendFault {
    /// Wall-clock time of the failed call, unix ms.
    pub at_ms: i64,
    /// What is wrong and what to do, in one line.
    pub message: String,
    /// Fields of a newer version, kept as read and written back unchanged.
    #[serde(flatten)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub extra: Extra,
}

open_enum! {
    /// Which stage wrote an audit record or a dead letter.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum Stage {
        /// The ingest service.
        Ingest = "ingest",
        /// The evaluator service.
        Evaluator = "evaluator",
        /// The arbiter service.
        Arbiter = "arbiter",
        /// The actuator service.
        Actuator = "actuator",
        /// The audit service.
        Audit = "audit",
    }
}

open_enum! {
    /// What an audit record is about.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    pub enum AuditKind {
        /// A rule fired (evaluator).
        Trigger = "trigger",
        /// A decision, taken or not (arbiter).
        Decision = "decision",
        /// A command picked up for execution (actuator).
        Command = "command",
        /// A command's result (actuator).
        Result = "result",
        /// An operator's pause or resume (arbiter).
        Control = "control",
    }
}

/// One audit record on `nova.audit.<stage>.<target>`, kept in stream `NOVA_AUDIT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditRecord {
    /// Version of the record's shape (1 when absent: written before versions).
    #[serde(default = "Version::unversioned")]
    pub v: Version,
    /// Unique, deterministic id (also the `Nats-Msg-Id`).
    pub id: String,
    /// Unix ms: event time for triggers and decisions, wall time for actuation.
    pub ts: i64,
    /// Stage that wrote it.
    pub stage: Stage,
    /// Target.
    pub target: String,
    /// Trigger, decision, command or result.
    pub kind: AuditKind,
    /// `fired`, a decision [`Outcome`], `executing` or `retrying`, or a [`ResultStatus`].
    pub outcome: String,
    /// One sentence for an operator.
    pub reason: String,
    /// Rule involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Observed value, canonical units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// Threshold, canonical units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Capacity before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// Capacity after (asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// Trigger id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<String>,
    /// Decision id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// What the backend answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_response: Option<String>,
    /// Revision of the policy a trigger was evaluated or a decision taken
    /// with (trigger and decision records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// Fields of a newer version, kept as read: the audit service answers
    /// queries with the records as their writers wrote them.
    #[serde(flatten)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub extra: Extra,
}

impl AuditRecord {
    /// A record with only the required fields set.
    pub fn new(
        id: String,
        ts: i64,
        stage: Stage,
        target: &str,
        kind: AuditKind,
        outcome: &str,
        reason: String,
    ) -> Self {
        AuditRecord {
            v: Version::CURRENT,
            id,
            ts,
            stage,
            target: target.to_string(),
            kind,
            outcome: outcome.to_string(),
            reason,
            rule: None,
            observed: None,
            threshold: None,
            from: None,
            to: None,
            trigger_id: None,
            decision_id: None,
            backend_response: None,
            policy_revision: None,
            extra: Extra::new(),
        }
    }

    /// The `fired` record of one of `trigger`'s firings, as the stage that
    /// made the trigger (the evaluator, or ingest for an alert) writes it;
    /// its id is derived from the trigger's and the rule's, so a
    /// republished trigger writes the same record.
    pub fn fired(stage: Stage, trigger: &Trigger, firing: &RuleFiring) -> Self {
        let id = crate::ids::derive("a", &[trigger.id.as_bytes(), firing.rule.as_bytes()]);
        let mut record = AuditRecord::new(
            id,
            trigger.ts,
            stage,
            &trigger.target,
            AuditKind::Trigger,
            "fired",
            firing.reason.clone(),
        );
        record.rule = Some(firing.rule.clone());
        record.observed = firing.observed;
        record.threshold = firing.threshold;
        record.trigger_id = Some(trigger.id.clone());
        record.policy_revision = trigger.policy_revision.clone();
        record
    }
}

/// A message a stage could not use, on `nova.dead.<stage>`, kept in stream `NOVA_DEAD`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeadLetter {
    /// Version of the message's shape (1 when absent: written before versions).
    #[serde(default = "Version::unversioned")]
    pub v: Version,
    /// Stage that rejected it.
    pub stage: Stage,
    /// Subject it arrived on.
    pub subject: String,
    /// Why it was rejected.
    pub reason: String,
    /// Wall-clock time of rejection, unix ms.
    pub ts: i64,
    /// The original payload, byte for byte (or the rejected element of a
    /// batch), cut at [`DEAD_PAYLOAD_MAX`] bytes so the letter itself fits.
    #[serde(with = "serde_bytes")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::dead_payload")
    )]
    pub payload: Vec<u8>,
    /// The original payload's size in bytes.
    #[serde(default)]
    pub payload_size: u64,
    /// FNV-1a 64 of the whole original payload, 16 hex digits: tells two
    /// cut payloads apart.
    #[serde(default)]
    pub payload_fnv64: String,
    /// Whether `payload` was cut.
    #[serde(default)]
    pub truncated: bool,
}

/// Bytes of a rejected payload a dead letter carries: a payload near the
/// server's limit would make the letter itself too large to publish.
pub const DEAD_PAYLOAD_MAX: usize = 64 * 1024;

/// A query to the audit service on `nova.ctl.audit` (request/reply); the
/// reply is a list of [`AuditRecord`], oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditQuery {
    /// Only records about this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// At most this many of the newest records (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer to a request that could not be read, where a good request
/// gets a list (`nova.ctl.audit`): a map, so a client tells the two apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorReply {
    /// What is wrong with the request.
    pub error: String,
}

/// The control verb of capacity requests: `nova.ctl.capacity`, payload the
/// target's name, answered by an actuator with a [`CapacityAnswer`].
pub const CAPACITY_VERB: &str = "capacity";

/// An actuator's answer to a capacity request.
// One answer per request, never kept in bulk: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapacityAnswer {
    /// The capacity, just read from the backend and stored in KV.
    Capacity(CapacityRecord),
    /// Why it could not be read.
    Error(String),
}

/// The verbs of the arbiter's control plane, in [`ControlRequest::verb`]'s words.
pub const CONTROL_VERBS: [&str; 6] = ["status", "pause", "resume", "scale", "emergency", "promote"];

/// A request to the arbiter's control plane, tagged by its verb:
/// `{"verb": "scale", "target": "web", "desired": 12}`. On
/// `nova.ctl.arbiter` the `verb` is required; on the per-verb subjects
/// `nova.ctl.status`, `nova.ctl.pause`, `nova.ctl.resume` and
/// `nova.ctl.scale` it may be left out (the subject names it) and must
/// match when present. Read requests with [`ControlRequest::decode`].
///
/// The control plane is strict: a request is a map of its verb's fields
/// only, an unknown verb is refused by name, and a field of the wrong kind
/// is an error, never a default (an unknown `direction` must not mean
/// "both").
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Each target's capacity, bounds, pauses, cooldowns and last decision.
    Status(StatusRequest),
    /// Stop a target scaling, in one direction or both.
    Pause(DirectionRequest),
    /// Let a paused target scale again.
    Resume(DirectionRequest),
    /// Ask for a capacity, decided like a rule's trigger.
    Scale(ScaleRequest),
    /// The runbook's emergency operations on a target, a group or all.
    Emergency(EmergencyRequest),
    /// Promote a read replica of an RDS replica set to a standalone
    /// instance (the set has one fewer), decided like an operator's scale.
    Promote(PromoteRequest),
}

/// `promote`: PromoteReadReplica on one replica of a `rds_replicas`
/// target, as a forced operator decision (past pauses and cooldowns, not
/// below `min`).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The target: an RDS replica set.
    pub target: String,
    /// The replica's DB instance identifier (`db-replica-2`).
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub replica: String,
    /// Who asks and why, for the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `emergency`: the runbook's emergency operations (`emergency-scale.sh`),
/// each an audited decision per target.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmergencyRequest {
    /// `up`, `down` or `reset`.
    pub op: EmergencyOp,
    /// A target, a group of the policy's `groups`, or `all`.
    pub target: String,
    /// `up`: add this many (default: double the capacity); `down`: remove
    /// this many, not below the floor (default: to the floor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<u32>,
    /// `up` and `down`: go to this capacity (`up`: instead of doubling;
    /// `down`: instead of the floor, and not below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u32>,
    /// Who asks and why, for the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an [`EmergencyRequest`] does.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmergencyOp {
    /// Double (or `by`, or `to`) past cooldowns but not `max`, and hold
    /// scale-downs for the policy's `emergency.hold_down_secs`.
    Up,
    /// Drain, then go to the target's floor (or `to`), past cooldowns;
    /// refused while its load is above a scale-down threshold.
    Down,
    /// Back to the target's `baseline`, past cooldowns.
    Reset,
}

impl EmergencyOp {
    /// `up`, `down` or `reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            EmergencyOp::Up => "up",
            EmergencyOp::Down => "down",
            EmergencyOp::Reset => "reset",
        }
    }
}

/// What `emergency down` publishes on `nova.drain.<target>` before it
/// scales down: workers of the target stop taking work and answer (any
/// payload) on the reply subject; the arbiter waits for `expected` answers
/// or the policy's drain timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRequest {
    /// The target.
    pub target: String,
    /// Its capacity now.
    pub from: u32,
    /// The capacity it goes to.
    pub to: u32,
    /// Acknowledgements waited for: the instances to go.
    pub expected: u32,
    /// Who asked and why.
    pub reason: String,
}

/// The evaluator's answer on `nova.ctl.load`: the latest value of each of
/// the target's scale-down conditions, read now (their durations aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReply {
    /// The target.
    pub target: String,
    /// One per scale-down rule.
    pub readings: Vec<LoadReading>,
}

/// One scale-down condition against the latest samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReading {
    /// The rule.
    pub rule: String,
    /// Its condition as written.
    pub condition: String,
    /// The aggregated value now, canonical units; none without a recent
    /// sample.
    pub value: Option<f64>,
    /// Whether the condition's comparison holds now (the load is below the
    /// scale-down threshold).
    pub holds: bool,
    /// One line: `avg_cpu 75% is not < 30%`.
    pub text: String,
}

/// `status`: one target, or all of them.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// The target; every target when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `pause` and `resume`.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionRequest {
    /// The target.
    pub target: String,
    /// Only this direction (`up` or `down`); both when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "up_or_down"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::schema::up_or_down")
    )]
    pub direction: Option<Direction>,
    /// Who asks and why, for the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `scale`: set a target's capacity through the trigger stream.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The target.
    pub target: String,
    /// The capacity to set.
    pub desired: u32,
    /// Who asks and why, for the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Go past the target's pause, cooldowns and warm-up (never its bounds
    /// or dry-run mode); see `nova_shared::arbitrate`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Why a payload is not a control request.
#[derive(Debug, thiserror::Error)]
pub enum ControlRequestError {
    /// Too large, too deep, not a map, or not MessagePack/JSON at all.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// A `verb` the arbiter does not know.
    #[error(
        "unknown verb {0:?} (the arbiter answers status, pause, resume, scale, emergency and promote)"
    )]
    UnknownVerb(String),
    /// No `verb`, on a subject that does not name one.
    #[error("no verb: say \"verb\": status, pause, resume, scale, emergency or promote")]
    NoVerb,
    /// A `verb` other than the subject's.
    #[error("verb {found:?} sent on nova.ctl.{subject}")]
    VerbMismatch {
        /// The payload's verb.
        found: String,
        /// The subject's verb.
        subject: String,
    },
    /// The verb's fields are wrong: unknown, missing, or of the wrong kind.
    #[error("{0}")]
    Fields(String),
}

impl ControlRequest {
    /// The request's verb.
    pub fn verb(&self) -> &'static str {
        match self {
            ControlRequest::Status(_) => "status",
            ControlRequest::Pause(_) => "pause",
            ControlRequest::Resume(_) => "resume",
            ControlRequest::Scale(_) => "scale",
            ControlRequest::Emergency(_) => "emergency",
            ControlRequest::Promote(_) => "promote",
        }
    }

    /// `status` of one target, or of every target.
    pub fn status(target: Option<String>) -> Self {
        ControlRequest::Status(StatusRequest { target })
    }

    /// Decodes a control request (after [`crate::codec::decode_map`]'s
    /// checks). `subject_verb` is the verb of the per-verb subject it came
    /// on, `None` on `nova.ctl.arbiter`. An empty payload on a per-verb
    /// subject is a request without fields (`status`: every target).
    pub fn decode(
        bytes: &[u8],
        encoding: crate::codec::Encoding,
        subject_verb: Option<&str>,
    ) -> Result<Self, ControlRequestError> {
        use serde_json::{Map, Value};
        let mut fields: Map<String, Value> = if bytes.is_empty() {
            Map::new()
        } else {
            crate::codec::decode_map(bytes, encoding)?
        };
        let excerpt = |verb: &str| crate::codec::excerpt(verb, 32);
        match (fields.get("verb"), subject_verb) {
            (None, None) => return Err(ControlRequestError::NoVerb),
            (None, Some(verb)) => {
                fields.insert("verb".into(), Value::String(verb.into()));
            }
            (Some(Value::String(found)), subject) => {
                if !CONTROL_VERBS.contains(&found.as_str()) {
                    return Err(ControlRequestError::UnknownVerb(excerpt(found)));
                }
                if let Some(subject) = subject.filter(|s| s != found) {
                    return Err(ControlRequestError::VerbMismatch {
                        found: found.clone(),
                        subject: excerpt(subject),
                    });
                }
            }
            (Some(other), _) => {
                return Err(ControlRequestError::Fields(format!(
                    "verb must be a string, found {}",
                    crate::codec::excerpt(&other.to_string(), 32)
                )));
            }
        }
        if let Some(verb) = subject_verb.filter(|v| !CONTROL_VERBS.contains(v)) {
            return Err(ControlRequestError::UnknownVerb(excerpt(verb)));
        }
        serde_json::from_value(Value::Object(fields))
            .map_err(|e| ControlRequestError::Fields(e.to_string()))
    }
}

#[cfg(test)]
mod control_tests;

/// `direction` of a control request: the strings `up` or `down` only (serde's
/// derived enum would also take a variant index, so `1` would read as `none`).
fn up_or_down<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Direction>, D::Error> {
    use serde::de::Error;
    let text: Option<String> = Option::deserialize(deserializer)?;
    match text.as_deref() {
        None => Ok(None),
        Some("up") => Ok(Some(Direction::Up)),
        Some("down") => Ok(Some(Direction::Down)),
        Some(other) => Err(D::Error::custom(format!(
            "direction must be \"up\" or \"down\", found {:?}",
            crate::codec::excerpt(other, 32)
        ))),
    }
}

/// The reply to a control request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ControlReply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What was done, or what is wrong with the request.
    pub message: String,
    /// The state of the targets concerned, after the request.
    #[serde(default)]
    pub targets: Vec<TargetStatus>,
    /// What is wrong, exactly when `ok` is false (the same text as
    /// `message`): a failed reply also reads as an [`ErrorReply`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlReply {
    /// A request carried out.
    pub fn done(message: String, targets: Vec<TargetStatus>) -> Self {
        ControlReply {
            ok: true,
            message,
            targets,
            error: None,
        }
    }

    /// A request refused or failed, and why.
    pub fn failed(message: String) -> Self {
        ControlReply {
            ok: false,
            error: Some(message.clone()),
            message,
            targets: vec![],
        }
    }
}

/// One target as the arbiter sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TargetStatus {
    /// Target.
    pub target: String,
    /// Bounds from the policy.
    pub min: u32,
    /// Bounds from the policy.
    pub max: u32,
    /// Capacity the backend last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityRecord>,
    /// Desired capacity of the arbiter's last command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    /// Scale-ups paused.
    pub paused_up: bool,
    /// Scale-downs paused.
    pub paused_down: bool,
    /// Dry-run mode from the policy.
    pub dry_run: bool,
    /// Event time (unix ms) until which rule scale-ups rest.
    pub up_cooldown_until: i64,
    /// Event time (unix ms) until which rule scale-downs rest.
    pub down_cooldown_until: i64,
    /// Wall clock (unix ms) until which scale-ups rest for operator and
    /// fallback requests: every action's cooldown, from when it was decided.
    #[serde(default)]
    pub wall_up_cooldown_until: i64,
    /// Wall clock (unix ms) until which scale-downs rest for operator and
    /// fallback requests.
    #[serde(default)]
    pub wall_down_cooldown_until: i64,
    /// The last decision's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    /// Why the backend cannot be read or changed now, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_error: Option<String>,
}
