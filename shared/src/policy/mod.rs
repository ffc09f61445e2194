//! The policy file: which targets exist, which rules scale them, their
//! bounds and their backend. Loaded from YAML and validated whole, so an
//! operator sees every problem of a file at once, each with its path.
//!
//! Three kinds of rule scale a target:
//! - threshold rules (`horizontal_scaling_rules`): "condition for D: add or
//!   remove N", as the runbook writes them;
//! - target tracking rules (`target_tracking_rules`): keep a metric near a
//!   value, as the Kubernetes HPA does ([`crate::tracking`]);
//! - vertical rules (`vertical_scaling_rules`): "condition for D: move one
//!   step up the tier ladder", kept as threshold rules whose action is
//!   [`ScaleAction::NextTier`], with their ladder in [`Target::ladders`].
//!
//! - [`rule_text`]: the runbook grammar for conditions and actions.
//! - [`load`]: YAML to [`Policy`], collecting every [`Problem`].
//! - [`diff`]: what changes from one policy to another, one line per change.
//! - [`revision`]: a short content hash naming a policy on triggers and decisions.

pub mod diff;
pub mod load;
pub mod rule_text;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tracking::Behavior;
use crate::units::{Dimension, Unit};
use crate::wire::{Direction, ScaleAction};
pub use load::{PolicyError, Problem, from_yaml, load_file};
pub use rule_text::{Aggregation, Condition, Op};

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Targets by name.
    pub targets: BTreeMap<String, Target>,
    /// Unit publishers use for bare numbers, per metric.
    pub metric_units: BTreeMap<String, Unit>,
    /// Event-time evaluation settings.
    pub evaluation: EvaluationSettings,
    /// Named sets of targets for `novactl emergency ... GROUP`.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// The revision of a policy: the first 12 hex digits of the SHA-256 of its
/// validated form (as JSON, whose maps are ordered), so two replicas that
/// load the same rules agree on it whatever the file's comments, key order
/// or spacing. It changes with any change of meaning, and also when a
/// release changes how a policy is represented: replicas of two releases
/// may name one file differently, which only ever defers a trigger (see
/// `arbitrate::check_rules`), never decides one wrongly.
pub fn revision(policy: &Policy) -> String {
    use sha2::Digest;
    // A validated policy holds finite numbers and string keys only, so it
    // always serialises; the fallback keeps this total anyway.
    let canonical = serde_json::to_vec(policy).unwrap_or_default();
    let digest = sha2::Sha256::digest(&canonical);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A policy with its [`revision`], computed once: what a service runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Revised {
    /// The validated policy.
    pub policy: std::sync::Arc<Policy>,
    /// Its revision.
    pub revision: String,
}

impl Revised {
    /// `policy` with its revision.
    pub fn new(policy: std::sync::Arc<Policy>) -> Self {
        let revision = revision(&policy);
        Revised { policy, revision }
    }
}

impl From<std::sync::Arc<Policy>> for Revised {
    fn from(policy: std::sync::Arc<Policy>) -> Self {
        Revised::new(policy)
    }
}

impl From<Policy> for Revised {
    fn from(policy: Policy) -> Self {
        Revised::new(std::sync::Arc::new(policy))
    }
}

impl Policy {
    /// The unit a bare number of `metric` is in (count when unknown).
    pub fn metric_unit(&self, metric: &str) -> Unit {
        self.metric_units
            .get(metric)
            .copied()
            .unwrap_or(Unit::Count)
    }
}

/// How the evaluator treats time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationSettings {
    /// A sample older than this (event time) no longer counts for its
    /// instance, and a gap this long breaks a "for D" hold.
    pub staleness_secs: u64,
    /// Samples stamped further than this ahead of the receiver's clock are rejected.
    pub max_future_skew_secs: u64,
    /// Samples stamped further than this behind the receiver's clock are
    /// rejected: too late to scale on (0: no limit, for replays of history).
    pub max_sample_age_secs: u64,
    /// While a condition keeps holding, fire again at most this often.
    pub refire_secs: u64,
}

impl Default for EvaluationSettings {
    fn default() -> Self {
        EvaluationSettings {
            staleness_secs: 60,
            max_future_skew_secs: 300,
            max_sample_age_secs: 3600,
            refire_secs: 30,
        }
    }
}

/// One scalable thing: an ECS service, a simulated fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// Name, used in subjects.
    pub name: String,
    /// Lowest capacity any decision may set.
    pub min: u32,
    /// Highest capacity any decision may set.
    pub max: u32,
    /// The threshold and vertical rules bound to this target.
    pub rules: Vec<ThresholdRule>,
    /// The target tracking rules bound to this target.
    pub tracking: Vec<TrackingRule>,
    /// The tier ladder of each bound vertical rule, by rule name.
    pub ladders: BTreeMap<String, Vec<TierStep>>,
    /// Where capacity is changed.
    pub backend: Backend,
    /// Decide and audit, but issue no command.
    pub dry_run: bool,
    /// When reversals mean the target is flapping.
    pub flapping: FlapSettings,
    /// What to do when the target's metric source goes silent.
    pub fallback: Option<Fallback>,
    /// Seconds a new instance needs before it carries load: scale-downs wait
    /// this long after a scale-up (0: only the cooldowns apply).
    pub warmup_secs: u64,
    /// What the emergency verbs do with this target.
    #[serde(default)]
    pub emergency: EmergencyTarget,
    /// Walk changes larger than one step in validated steps
    /// ([`crate::gradual`]); none: every change in one call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradual: Option<crate::gradual::Gradual>,
    /// JetStream consumers whose lag ingest publishes as this target's
    /// `queue_depth` samples; none: no polling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue_depth: Vec<QueueDepthSource>,
    /// The `alert_rules` that scale this target (Alertmanager alerts, through
    /// ingest's webhook bridge), in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_rules: Vec<crate::alert::AlertRule>,
}

/// Seconds between two reads of a consumer's lag, unless `poll_every` says.
pub const DEFAULT_LAG_POLL_SECS: u64 = 10;

/// One JetStream consumer whose lag (pending plus ack-pending messages) is
/// a target's `queue_depth`, as KEDA's NATS JetStream scaler reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepthSource {
    /// The stream.
    pub stream: String,
    /// The durable consumer on it.
    pub consumer: String,
    /// Another NATS server (or cluster, comma-separated) to read it on,
    /// with `user:password@` in it when it needs them (the user decides the
    /// account); none: the services' own connection (and account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    /// Seconds between two reads.
    pub poll_every_secs: u64,
}

impl QueueDepthSource {
    /// The `instance` of its samples, `<stream>/<consumer>`: the same in
    /// every ingest replica, so replicas' readings of one consumer fill one
    /// slot of the evaluator's window (latest value wins) and never add up.
    pub fn instance(&self) -> String {
        format!("{}/{}", self.stream, self.consumer)
    }
}

/// The top-level `emergency:` settings, as every target gets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyDefaults {
    /// After `emergency up`, rules' and operators' scale-downs wait this long.
    pub hold_down_secs: u64,
    /// `emergency down` waits this long for drain acknowledgements.
    pub drain_timeout_secs: u64,
    /// Floor of `emergency down` for API-like targets.
    pub api_floor: u32,
    /// Floor of `emergency down` for worker-like targets.
    pub worker_floor: u32,
}

impl EmergencyDefaults {
    /// The operator's request waits for the drain: at most this long.
    pub const MAX_DRAIN_TIMEOUT_SECS: u64 = 300;
}

impl Default for EmergencyDefaults {
    /// The runbook's: floors of 3 API and 5 worker instances; a 30-minute
    /// hold and a 30 s drain.
    fn default() -> Self {
        EmergencyDefaults {
            hold_down_secs: 1800,
            drain_timeout_secs: 30,
            api_floor: 3,
            worker_floor: 5,
        }
    }
}

/// Whether a target serves requests or works a queue: its emergency floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Serves requests (floor 3 by default).
    Api,
    /// Works a queue (floor 5 by default).
    Worker,
}

/// One target's emergency settings, resolved from the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyTarget {
    /// See [`EmergencyDefaults::hold_down_secs`].
    pub hold_down_secs: u64,
    /// See [`EmergencyDefaults::drain_timeout_secs`].
    pub drain_timeout_secs: u64,
    /// The target's role, if given.
    pub role: Option<Role>,
    /// The lowest `emergency down` goes: `emergency_floor`, else the role's
    /// floor; none: the target's min.
    pub floor: Option<u32>,
    /// What `emergency reset` returns to; none: reset is refused.
    pub baseline: Option<u32>,
}

impl Default for EmergencyTarget {
    fn default() -> Self {
        let d = EmergencyDefaults::default();
        EmergencyTarget {
            hold_down_secs: d.hold_down_secs,
            drain_timeout_secs: d.drain_timeout_secs,
            role: None,
            floor: None,
            baseline: None,
        }
    }
}

/// After `after_secs` without any sample for a target (wall clock), ask for
/// `capacity` instances, as KEDA's fallback does. Without it, silence
/// changes nothing: missing data is never read as low load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    /// Seconds of silence before falling back.
    pub after_secs: u64,
    /// Capacity to ask for (still within the target's bounds).
    pub capacity: u32,
}

/// Flap damping: more than `max_reversals` changes of direction among the
/// actions of the last `window_secs` multiply every cooldown by
/// `cooldown_factor` until the window holds fewer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlapSettings {
    /// Reversals (up after down, or down after up) tolerated in the window.
    pub max_reversals: u32,
    /// The window, seconds of event time.
    pub window_secs: u64,
    /// What cooldowns are multiplied by while flapping.
    pub cooldown_factor: u32,
}

impl Default for FlapSettings {
    fn default() -> Self {
        FlapSettings {
            max_reversals: 3,
            window_secs: 1800,
            cooldown_factor: 3,
        }
    }
}

impl Target {
    /// The threshold or vertical rule with this name, if bound to this target.
    pub fn rule(&self, name: &str) -> Option<&ThresholdRule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// The target tracking rule with this name, if bound to this target.
    pub fn tracking_rule(&self, name: &str) -> Option<&TrackingRule> {
        self.tracking.iter().find(|r| r.name == name)
    }

    /// The alert rule with this name, if it scales this target.
    pub fn alert_rule(&self, name: &str) -> Option<&crate::alert::AlertRule> {
        self.alert_rules.iter().find(|r| r.name == name)
    }

    /// What the arbiter needs of the rule `name`, whatever its kind.
    pub fn limits(&self, name: &str) -> RuleLimits<'_> {
        if let Some(rule) = self.alert_rule(name) {
            return RuleLimits {
                cooldown_secs: rule.cooldown_secs,
                min: rule.min,
                max: rule.max,
                behavior: None,
            };
        }
        if let Some(rule) = self.rule(name) {
            return RuleLimits {
                cooldown_secs: rule.cooldown_secs,
                min: rule.min,
                max: rule.max,
                behavior: None,
            };
        }
        match self.tracking_rule(name) {
            Some(rule) => RuleLimits {
                cooldown_secs: rule.cooldown_secs,
                min: rule.min,
                max: rule.max,
                behavior: Some(&rule.behavior),
            },
            // Operator and fallback requests have no rule of their own.
            None => RuleLimits::default(),
        }
    }

    /// Where the vertical rule `rule` moves a target running `tier`.
    /// An alert rule's vertical step (`action: upgrade to the next tier`)
    /// moves along the target's one ladder.
    pub fn next_tier(&self, rule: &str, tier: &str) -> TierMove {
        let alert_ladder = || {
            self.alert_rule(rule)
                .filter(|r| r.action == Some(ScaleAction::NextTier))
                .filter(|_| self.ladders.len() == 1)
                .and_then(|_| self.ladders.values().next())
        };
        let Some(ladder) = self.ladders.get(rule).or_else(alert_ladder) else {
            return TierMove::OffLadder;
        };
        if let Some(step) = ladder.iter().find(|s| s.from == tier) {
            return TierMove::Next(step.to.clone());
        }
        if ladder.iter().any(|s| s.to == tier) {
            TierMove::AtTop
        } else {
            TierMove::OffLadder
        }
    }
}

/// The bounds, cooldown and behavior of one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RuleLimits<'a> {
    /// After the rule acts, its direction rests this long.
    pub cooldown_secs: u64,
    /// Floor for its scale-downs.
    pub min: Option<u32>,
    /// Ceiling for its scale-ups.
    pub max: Option<u32>,
    /// Rate limits, for target tracking rules.
    pub behavior: Option<&'a Behavior>,
}

/// One step of a tier ladder, as the runbook's `options` list them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierStep {
    /// The tier a target runs.
    pub from: String,
    /// The tier it moves to.
    pub to: String,
}

/// Where a vertical rule moves a target's tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierMove {
    /// One step up, to this tier.
    Next(String),
    /// The tier is the top of the ladder.
    AtTop,
    /// The tier is on no step of the ladder.
    OffLadder,
}

/// A target tracking rule: keep `aggregation(metric)` near `target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingRule {
    /// The rule's name in `target_tracking_rules`.
    pub name: String,
    /// How instances are combined (avg unless the metric says otherwise).
    pub aggregation: Aggregation,
    /// Metric name.
    pub metric: String,
    /// The value to keep the metric at, canonical units.
    pub target: f64,
    /// What the metric measures.
    pub dimension: Dimension,
    /// As written, e.g. `avg_cpu at 60%`.
    pub text: String,
    /// Relative band around the target inside which nothing changes.
    pub tolerance: f64,
    /// Seconds of event time between recommendations (the HPA's sync period).
    pub interval_secs: u64,
    /// Stabilization windows and rate limits per direction.
    pub behavior: Behavior,
    /// After the rule acts, its direction rests this long (0: only the behavior limits).
    pub cooldown_secs: u64,
    /// Floor for this rule's scale-downs.
    pub min: Option<u32>,
    /// Ceiling for this rule's scale-ups.
    pub max: Option<u32>,
}

/// A "condition for duration: action" rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdRule {
    /// `<group>.<scale_up|scale_down>`.
    pub name: String,
    /// Up for `add`, down for `remove`.
    pub direction: Direction,
    /// When it fires.
    pub condition: Condition,
    /// What it asks for.
    pub action: ScaleAction,
    /// After this rule acts, its direction rests this long (event time).
    pub cooldown_secs: u64,
    /// Floor for this rule's scale-downs.
    pub min: Option<u32>,
    /// Ceiling for this rule's scale-ups.
    pub max: Option<u32>,
}

/// Where a target's capacity lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// An AWS ECS service's desired count.
    Ecs(EcsBackend),
    /// A simulated fleet.
    Sim(SimBackend),
    /// The read replicas of an RDS primary.
    RdsReplicas(RdsReplicasBackend),
    /// One RDS DB instance's class, for vertical rules.
    RdsInstance(RdsInstanceBackend),
}

impl Backend {
    /// `ecs`, `sim`, `rds_replicas` or `rds_instance`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Ecs(_) => "ecs",
            Backend::Sim(_) => "sim",
            Backend::RdsReplicas(_) => "rds_replicas",
            Backend::RdsInstance(_) => "rds_instance",
        }
    }
}

/// An ECS service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EcsBackend {
    /// AWS region.
    pub region: String,
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name or ARN.
    pub service: String,
    /// Endpoint override (a moto server, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Task sizes by tier name, for vertical rules: moving to a tier
    /// registers a revision of the service's task definition with its sizes.
    pub tiers: BTreeMap<String, TaskSize>,
    /// Seconds to wait after a change for the service to be steady (running
    /// = desired, one deployment); 0 does not wait.
    pub steady_timeout_secs: u64,
}

impl EcsBackend {
    /// The default of `steady_timeout_secs`: ECS's own rolling deployment of
    /// a few tasks with health checks takes minutes.
    pub const DEFAULT_STEADY_TIMEOUT_SECS: u64 = 300;
}

/// An ECS task's size: task-level cpu units (1024 = 1 vCPU) and memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSize {
    /// CPU units.
    pub cpu: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
}

/// The read replicas of an RDS DB instance: capacity is their number. New
/// replicas are named `<primary>-replica-<n>`, so a repeated call finds the
/// one it made before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdsReplicasBackend {
    /// AWS region.
    pub region: String,
    /// The source DB instance's identifier.
    pub primary: String,
    /// Endpoint override (a moto server, a VPC endpoint).
    pub endpoint_url: Option<String>,
    /// Instance class of new replicas; none: the primary's.
    pub instance_class: Option<String>,
    /// Seconds between choosing a replica to remove and deleting it, for
    /// readers to move off it; 0 deletes at once.
    pub drain_secs: u64,
    /// The primary's connection pool, raised by the vertical rules bound to
    /// the target; none: the target takes no vertical rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Replication lag above this (as written: `1000ms`, `1s`) holds off
    /// removing replicas while it lasts: the loader binds the target a rule
    /// [`RdsReplicasBackend::REPLICA_LAG_RULE`] on metric `replica_lag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_lag: Option<String>,
}

/// The runbook's connection pool: one parameter of the primary's DB
/// parameter group (`max_connections` of `novacron-params`) whose value
/// moves along the bound vertical rules' ladder (500 -> 1000 -> 2000)
/// through ModifyDBParameterGroup, as the target's tier. The ladder's last
/// value is the policy's maximum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionPool {
    /// The DB parameter group's name (the primary's).
    pub parameter_group: String,
    /// The parameter (default `max_connections`).
    pub parameter: String,
    /// `immediate` (the runbook's, for a dynamic parameter such as MySQL's
    /// max_connections) or `pending-reboot` (a static one, such as
    /// PostgreSQL's: it takes effect at the instance's next reboot).
    pub apply_method: String,
}

impl ConnectionPool {
    /// The parameter the runbook's connection-pool rule raises.
    pub const DEFAULT_PARAMETER: &str = "max_connections";
    /// The ApplyMethod values RDS takes.
    pub const APPLY_METHODS: [&str; 2] = ["immediate", "pending-reboot"];
}

impl RdsReplicasBackend {
    /// The most read replicas RDS gives one primary (MySQL, MariaDB,
    /// PostgreSQL; fewer for Oracle and SQL Server).
    pub const MAX_REPLICAS: u32 = 15;

    /// The metric a replica set's lag is published as (the largest over
    /// its replicas counts).
    pub const REPLICA_LAG_METRIC: &str = "replica_lag";
    /// The name of the rule `max_replica_lag` binds.
    pub const REPLICA_LAG_RULE: &str = "rds.max_replica_lag";

    /// The identifier of replica `n` (from 1).
    pub fn replica_id(&self, n: u32) -> String {
        format!("{}-replica-{n}", self.primary)
    }
}

/// One RDS DB instance whose class moves along the bound vertical rules'
/// ladder (the runbook's db.r5.large -> db.r5.xlarge -> db.r5.2xlarge),
/// through ModifyDBInstance with ApplyImmediately. Its capacity is the one
/// instance; its read replicas are an `rds_replicas` target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdsInstanceBackend {
    /// AWS region.
    pub region: String,
    /// The DB instance's identifier.
    pub instance: String,
    /// Endpoint override (a moto server, a VPC endpoint).
    pub endpoint_url: Option<String>,
}

/// A simulated fleet: capacity follows commands after a warm-up delay; it can
/// emit its own cpu and queue-depth samples from a load curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimBackend {
    /// Capacity when the fleet is first seen.
    pub initial: u32,
    /// Instance tier when the fleet is first seen, for vertical rules.
    pub tier: Option<String>,
    /// Seconds before a new instance counts as running.
    pub warmup_secs: u64,
    /// Requests per second one instance serves at 100 % cpu.
    pub capacity_per_instance: f64,
    /// The load the fleet emits samples for, if any.
    pub load: Option<LoadCurve>,
}

/// A load that rises and falls: `base + amplitude * (1 - cos(2πt/period)) / 2`
/// requests per second, so it starts at `base` and peaks at `base + amplitude`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadCurve {
    /// Requests per second at the trough.
    pub base_rps: f64,
    /// Extra requests per second at the peak.
    pub amplitude_rps: f64,
    /// Seconds from trough to trough.
    pub period_secs: u64,
    /// Seconds between emitted samples.
    pub sample_every_secs: u64,
}

impl LoadCurve {
    /// Requests per second at `secs` since the curve started.
    pub fn rps_at(&self, secs: f64) -> f64 {
        let phase = std::f64::consts::TAU * secs / self.period_secs.max(1) as f64;
        self.base_rps + self.amplitude_rps * (1.0 - phase.cos()) / 2.0
    }
}
