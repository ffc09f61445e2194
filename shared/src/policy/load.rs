//! Loading and validating a policy file. The YAML is read into a generic
//! tree first and then walked by hand, so that every problem in the file is
//! collected (with its path, e.g. `horizontal_scaling_rules.cpu_based.scale_up.condition`)
//! instead of stopping at the first one as a derived deserializer would.
//!
//! - [`kinds`]: the target tracking and vertical rule sections.

mod alerts;
mod emergency;
mod gradual;
mod kinds;
mod queue_depth;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};
use thiserror::Error;

use super::rule_text::{parse_action, parse_condition, split_aggregation};
use super::{
    Backend, ConnectionPool, EcsBackend, EvaluationSettings, LoadCurve, Policy, RdsInstanceBackend,
    RdsReplicasBackend, SimBackend, Target, TaskSize, ThresholdRule, TierStep, TrackingRule,
};
use crate::subjects::is_valid_token;
use crate::units::{self, Unit};
use crate::wire::{Direction, ScaleAction};

/// One thing wrong in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file, as a dotted path (`targets.api.max`); empty for the whole file.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A policy file that could not be used.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid policy; every problem is listed.
    #[error("{file}: {} problem(s):\n{}", problems.len(), render(file, problems))]
    Invalid {
        /// The file.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn render(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {file}: {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl PolicyError {
    /// The problems, if the file was readable.
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Read { .. } => &[],
            PolicyError::Invalid { problems, .. } => problems,
        }
    }
}

/// Reads and validates a policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        file: file.clone(),
        source,
    })?;
    from_yaml(&text, &file)
}

/// Validates policy YAML; `file` names it in errors.
pub fn from_yaml(text: &str, file: &str) -> Result<Policy, PolicyError> {
    let invalid = |problems| PolicyError::Invalid {
        file: file.to_string(),
        problems,
    };
    let tree: Value = serde_saphyr::from_str(text).map_err(|e| {
        invalid(vec![Problem {
            path: String::new(),
            message: format!("not valid YAML: {e}"),
        }])
    })?;
    let mut walker = Walker::default();
    let policy = walker.policy(&tree);
    match policy {
        Some(policy) if walker.problems.is_empty() => Ok(policy),
        _ => Err(invalid(walker.problems)),
    }
}

const TOP_KEYS: &[&str] = &[
    "targets",
    "horizontal_scaling_rules",
    "target_tracking_rules",
    "vertical_scaling_rules",
    "metrics",
    "evaluation",
    "emergency",
    "groups",
    "alert_rules",
];
const TARGET_KEYS: &[&str] = &[
    "rules",
    "min",
    "max",
    "backend",
    "dry_run",
    "flapping",
    "fallback",
    "warmup_secs",
    "role",
    "emergency_floor",
    "baseline",
    "gradual",
    "queue_depth",
];
/// A rule's floor and ceiling, as the runbook spells them for each noun.
const MIN_KEYS: &[&str] = &["min_instances", "min_workers", "min_replicas", "min"];
const MAX_KEYS: &[&str] = &["max_instances", "max_workers", "max_replicas", "max"];
const RULE_KEYS: &[&str] = &["condition", "action", "cooldown"];
const DEFAULT_COOLDOWN_SECS: u64 = 300;
/// Seconds an RDS replica drains before it is deleted, unless set.
const DEFAULT_DRAIN_SECS: u64 = 30;
/// The longest drain: the command waits it out inside its action.
const MAX_DRAIN_SECS: u64 = 900;
/// RDS DB instance identifiers are at most this long.
const RDS_ID_MAX: usize = 63;

#[derive(Default)]
struct Walker {
    problems: Vec<Problem>,
    /// The top-level `emergency:` settings, read before the targets.
    emergency: crate::policy::EmergencyDefaults,
    /// The unit of each metric's bare numbers, once known (for targets'
    /// gradual gates).
    units: BTreeMap<String, Unit>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

impl Walker {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn map<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
        allowed: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(map) = value else {
            self.problem(path, format!("expected a map, found {}", kind_of(value)));
            return None;
        };
        for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
            let hint = suggest(key, allowed)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            self.problem(
                &join(path, key),
                format!(
                    "unknown field; {hint}expected one of: {}",
                    allowed.join(", ")
                ),
            );
        }
        Some(map)
    }

    fn string<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v str> {
        match value {
            Value::String(s) if !s.trim().is_empty() => Some(s),
            other => {
                self.problem(
                    path,
                    format!("expected a non-empty string, found {}", kind_of(other)),
                );
                None
            }
        }
    }

    fn count(&mut self, value: &Value, path: &str) -> Option<u32> {
        match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.problem(
                    path,
                    format!("expected a whole number >= 0, found {}", show(value)),
                );
                None
            }
        }
    }

    fn secs(&mut self, value: &Value, path: &str) -> Option<u64> {
        if let Some(n) = value.as_u64() {
            return Some(n);
        }
        if let Value::String(s) = value {
            match units::parse_duration_secs(s) {
                Ok(n) => return Some(n),
                Err(e) => {
                    self.problem(path, e.to_string());
                    return None;
                }
            }
        }
        self.problem(
            path,
            format!(
                "expected seconds (300) or a duration (\"5 minutes\"), found {}",
                show(value)
            ),
        );
        None
    }

    fn positive(&mut self, value: &Value, path: &str) -> Option<f64> {
        match value.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Some(x),
            _ => {
                self.problem(
                    path,
                    format!("expected a number > 0, found {}", show(value)),
                );
                None
            }
        }
    }

    fn non_negative(&mut self, value: &Value, path: &str) -> Option<f64> {
        match value.as_f64() {
            Some(x) if x.is_finite() && x >= 0.0 => Some(x),
            _ => {
                self.problem(
                    path,
                    format!("expected a number >= 0, found {}", show(value)),
                );
                None
            }
        }
    }

    fn policy(&mut self, tree: &Value) -> Option<Policy> {
        let top = self.map(tree, "", TOP_KEYS)?;
        let evaluation = top
            .get("evaluation")
            .map(|v| self.evaluation(v, "evaluation"))
            .unwrap_or_default();
        let mut metric_units = BTreeMap::new();
        if let Some(metrics) = top.get("metrics") {
            self.metrics(metrics, &mut metric_units);
        }
        let explicit_units = metric_units.clone();
        // Units written in thresholds (`70%`, `500ms`) tell how to read bare
        // numbers of the same metric, unless the metrics block says otherwise.
        // Horizontal conditions and vertical triggers alike sit two levels down.
        for (section, key) in [
            ("horizontal_scaling_rules", "condition"),
            ("vertical_scaling_rules", "trigger"),
        ] {
            let Some(Value::Object(groups)) = top.get(section) else {
                continue;
            };
            for rule in groups
                .values()
                .filter_map(Value::as_object)
                .flat_map(|g| g.values())
            {
                if let Some(Ok(c)) = rule
                    .get(key)
                    .and_then(Value::as_str)
                    .map(|text| parse_condition(text, |_| None))
                    && let Some(unit) = c.written_unit
                {
                    metric_units.entry(c.metric).or_insert(unit);
                }
            }
        }
        // A tracking rule's target written with a unit (`target: 60%`)
        // tells the same, so `cpu` published as 60 is not read as a count.
        if let Some(Value::Object(rules)) = top.get("target_tracking_rules") {
            for rule in rules.values().filter_map(Value::as_object) {
                let metric = rule.get("metric").and_then(Value::as_str);
                let target = rule.get("target").and_then(Value::as_str);
                if let (Some(metric), Some(target)) = (metric, target)
                    && let Ok((_, Some(unit))) = units::parse_quantity(target)
                {
                    let (_, metric) = split_aggregation(metric.trim());
                    metric_units.entry(metric.to_string()).or_insert(unit);
                }
            }
        }
        // A replica set's `max_replica_lag: 1000ms` tells the unit of
        // `replica_lag` the same way.
        if let Some(Value::Object(targets)) = top.get("targets") {
            let lags = targets
                .values()
                .filter_map(|t| t.pointer("/backend/rds_replicas/max_replica_lag"))
                .filter_map(Value::as_str);
            for lag in lags {
                if let Ok((_, Some(unit))) = units::parse_quantity(lag) {
                    metric_units
                        .entry(RdsReplicasBackend::REPLICA_LAG_METRIC.to_string())
                        .or_insert(unit);
                }
            }
        }
        let mut bindings: BTreeMap<String, Option<Binding>> =
            match top.get("horizontal_scaling_rules") {
                Some(v) => self
                    .rule_groups(v, &metric_units, &explicit_units)
                    .into_iter()
                    .map(|(name, rules)| (name, rules.map(Binding::Threshold)))
                    .collect(),
                None => BTreeMap::new(),
            };
        if let Some(v) = top.get("target_tracking_rules") {
            for (name, rule) in self.tracking_rules(v, &metric_units) {
                self.bind(
                    &mut bindings,
                    "target_tracking_rules",
                    name,
                    rule.map(Binding::Tracking),
                );
            }
        }
        if let Some(v) = top.get("vertical_scaling_rules") {
            let vertical = self.vertical_rules(v, &metric_units);
            // A vertical rule is bound by `category.rule`, or by `rule` alone
            // when no other category uses that name.
            let mut leaves: BTreeMap<String, usize> = BTreeMap::new();
            for full in vertical.keys() {
                let leaf = full.rsplit('.').next().unwrap_or(full);
                *leaves.entry(leaf.to_string()).or_default() += 1;
            }
            for (full, rule) in vertical {
                let leaf = full.rsplit('.').next().unwrap_or(&full).to_string();
                if leaves[&leaf] == 1 && !bindings.contains_key(&leaf) {
                    bindings.insert(leaf, rule.clone().map(Binding::Vertical));
                }
                self.bind(
                    &mut bindings,
                    "vertical_scaling_rules",
                    full,
                    rule.map(Binding::Vertical),
                );
            }
        }
        self.emergency = self.emergency_defaults(top.get("emergency"));
        let mut targets = BTreeMap::new();
        self.units = metric_units.clone();
        match top.get("targets") {
            None => self.problem("targets", "required: bind at least one target to rules"),
            Some(Value::Object(map)) => {
                if map.is_empty() {
                    self.problem("targets", "expected at least one target");
                }
                for (name, spec) in map {
                    if let Some(t) = self.target(name, spec, &bindings) {
                        targets.insert(name.clone(), t);
                    }
                }
            }
            Some(other) => self.problem(
                "targets",
                format!("expected a map of target names, found {}", kind_of(other)),
            ),
        }
        let names: Vec<&str> = match top.get("targets") {
            Some(Value::Object(map)) => map.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        let groups = self.groups(top.get("groups"), &names);
        if let Some(v) = top.get("alert_rules") {
            for (target, rules) in self.alert_rules(v, &names) {
                // A rule name is unique across its kinds: the arbiter finds
                // a firing's rule by name.
                for rule in &rules {
                    if let Some(t) = targets.get(&target)
                        && (t.rule(&rule.name).is_some() || t.tracking_rule(&rule.name).is_some())
                    {
                        self.problem(
                            &join("alert_rules", &rule.name),
                            format!("target {target} already binds a rule of this name; rule names must be unique"),
                        );
                    }
                    // A vertical step walks the target's one tier ladder.
                    if let Some(t) = targets.get(&target)
                        && rule.action == Some(ScaleAction::NextTier)
                        && t.ladders.len() != 1
                    {
                        let why = if t.ladders.is_empty() {
                            format!(
                                "target {target} has no tier ladder (no vertical rule with options binds it); a vertical step needs one"
                            )
                        } else {
                            let names: Vec<&str> = t.ladders.keys().map(String::as_str).collect();
                            format!(
                                "target {target} has {} tier ladders ({}); a vertical step needs exactly one",
                                names.len(),
                                names.join(", ")
                            )
                        };
                        self.problem(&join(&join("alert_rules", &rule.name), "action"), why);
                    }
                }
                if let Some(t) = targets.get_mut(&target) {
                    t.alert_rules = rules;
                }
            }
        }
        Some(Policy {
            targets,
            metric_units,
            evaluation,
            groups,
        })
    }

    fn evaluation(&mut self, value: &Value, path: &str) -> EvaluationSettings {
        let mut settings = EvaluationSettings::default();
        let keys = [
            "staleness_secs",
            "max_future_skew_secs",
            "max_sample_age_secs",
            "refire_secs",
        ];
        if let Some(map) = self.map(value, path, &keys) {
            let fields: [(&str, &mut u64); 4] = [
                ("staleness_secs", &mut settings.staleness_secs),
                ("max_future_skew_secs", &mut settings.max_future_skew_secs),
                ("max_sample_age_secs", &mut settings.max_sample_age_secs),
                ("refire_secs", &mut settings.refire_secs),
            ];
            for (key, slot) in fields {
                if let Some(v) = map.get(key)
                    && let Some(n) = self.secs(v, &join(path, key))
                {
                    *slot = n;
                }
            }
        }
        settings
    }

    fn metrics(&mut self, value: &Value, units: &mut BTreeMap<String, Unit>) {
        let Some(map) = value.as_object() else {
            self.problem(
                "metrics",
                format!("expected a map of metric names, found {}", kind_of(value)),
            );
            return;
        };
        for (metric, spec) in map {
            let path = join("metrics", metric);
            let Some(spec) = self.map(spec, &path, &["unit"]) else {
                continue;
            };
            let Some(unit) = spec.get("unit") else {
                self.problem(
                    &join(&path, "unit"),
                    format!("required: one of {}", Unit::NAMES),
                );
                continue;
            };
            match unit.as_str().and_then(Unit::from_name) {
                Some(u) => {
                    units.insert(metric.clone(), u);
                }
                None => self.problem(
                    &join(&path, "unit"),
                    format!("expected one of {}, found {}", Unit::NAMES, show(unit)),
                ),
            }
        }
    }

    fn rule_groups(
        &mut self,
        value: &Value,
        units: &BTreeMap<String, Unit>,
        explicit: &BTreeMap<String, Unit>,
    ) -> BTreeMap<String, Option<Vec<ThresholdRule>>> {
        let mut groups = BTreeMap::new();
        let Some(map) = value.as_object() else {
            self.problem(
                "horizontal_scaling_rules",
                format!("expected a map of rule groups, found {}", kind_of(value)),
            );
            return groups;
        };
        let mut dimensions: BTreeMap<String, (crate::units::Dimension, String)> = BTreeMap::new();
        for (metric, unit) in explicit {
            dimensions.insert(metric.clone(), (unit.dimension(), join("metrics", metric)));
        }
        for (group, spec) in map {
            let path = join("horizontal_scaling_rules", group);
            let Some(spec) = self.map(spec, &path, &["scale_up", "scale_down"]) else {
                continue;
            };
            if spec.is_empty() {
                self.problem(&path, "expected scale_up and/or scale_down");
            }
            let mut rules = Some(Vec::new());
            for (key, direction) in [("scale_up", Direction::Up), ("scale_down", Direction::Down)] {
                let Some(rule) = spec.get(key) else { continue };
                let rule_path = join(&path, key);
                let Some(raw) = self.rule(
                    &format!("{group}.{key}"),
                    direction,
                    rule,
                    &rule_path,
                    units,
                ) else {
                    rules = None;
                    continue;
                };
                {
                    let metric = raw.condition.metric.clone();
                    let dim = raw.condition.dimension;
                    match dimensions.get(&metric) {
                        Some((seen, where_)) if *seen != dim => self.problem(
                            &join(&rule_path, "condition"),
                            format!("metric {metric} is measured as {dim:?} here but as {seen:?} at {where_}"),
                        ),
                        Some(_) => {}
                        None => {
                            dimensions.insert(metric, (dim, join(&rule_path, "condition")));
                        }
                    }
                    if let Some(rules) = rules.as_mut() {
                        rules.push(raw);
                    }
                }
            }
            groups.insert(group.clone(), rules);
        }
        groups
    }

    fn rule(
        &mut self,
        name: &str,
        direction: Direction,
        value: &Value,
        path: &str,
        units: &BTreeMap<String, Unit>,
    ) -> Option<ThresholdRule> {
        // A rule with any problem (even an unknown key such as a misspelt
        // max_workers) is left out, so no bound is derived from half a rule.
        let problems_before = self.problems.len();
        let map = self.map(value, path, &with_bounds(RULE_KEYS))?;
        let condition =
            self.condition(map, path, "condition", "avg_cpu > 70% for 2 minutes", units);
        let action = match map.get("action") {
            None => {
                self.problem(&join(path, "action"), "required, e.g. \"add 2 instances\"");
                None
            }
            Some(v) => self.string(v, &join(path, "action")).and_then(|text| {
                parse_action(text)
                    .map_err(|e| self.problem(&join(path, "action"), e))
                    .ok()
            }),
        };
        if let Some(action) = &action {
            let wrong = match (&direction, action) {
                (Direction::Up, ScaleAction::Remove(_)) => Some("scale_up removes instances"),
                (Direction::Down, ScaleAction::Add(_)) => Some("scale_down adds instances"),
                _ => None,
            };
            if let Some(wrong) = wrong {
                self.problem(
                    &join(path, "action"),
                    format!("{wrong}; expected the action to match the rule's direction"),
                );
            }
        }
        let cooldown_secs = match map.get("cooldown") {
            Some(v) => self.secs(v, &join(path, "cooldown")),
            None => Some(DEFAULT_COOLDOWN_SECS),
        };
        let (min, max) = self.rule_bounds(map, path);
        if self.problems.len() > problems_before {
            return None;
        }
        Some(ThresholdRule {
            name: name.to_string(),
            direction,
            condition: condition?,
            action: action?,
            cooldown_secs: cooldown_secs?,
            min,
            max,
        })
    }

    /// The condition under `key` (required), parsed with the metrics' units.
    fn condition(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        key: &str,
        example: &str,
        units: &BTreeMap<String, Unit>,
    ) -> Option<super::Condition> {
        let at = join(path, key);
        match map.get(key) {
            None => {
                self.problem(&at, format!("required, e.g. {example:?}"));
                None
            }
            Some(v) => self.string(v, &at).and_then(|text| {
                parse_condition(text, |m| units.get(m).copied())
                    .map_err(|e| self.problem(&at, e))
                    .ok()
            }),
        }
    }

    /// A rule's own min and max (under any of their synonyms), in order.
    fn rule_bounds(&mut self, map: &Map<String, Value>, path: &str) -> (Option<u32>, Option<u32>) {
        let min = self.bound(map, path, MIN_KEYS);
        let max = self.bound(map, path, MAX_KEYS);
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.problem(path, format!("minimum {lo} is above maximum {hi}"));
        }
        (min, max)
    }

    /// Reads one of several synonymous bound keys (`max_instances`, `max_workers`, ...).
    fn bound(&mut self, map: &Map<String, Value>, path: &str, keys: &[&str]) -> Option<u32> {
        let present: Vec<&&str> = keys.iter().filter(|k| map.contains_key(**k)).collect();
        if present.len() > 1 {
            let names: Vec<&str> = present.iter().map(|k| **k).collect();
            self.problem(path, format!("give only one of {}", names.join(", ")));
        }
        let key = present.first()?;
        self.count(&map[**key], &join(path, key))
    }

    /// Adds a rule name of `section` to what targets can bind, unless another
    /// section already uses it.
    fn bind(
        &mut self,
        bindings: &mut BTreeMap<String, Option<Binding>>,
        section: &str,
        name: String,
        binding: Option<Binding>,
    ) {
        match bindings.entry(name) {
            std::collections::btree_map::Entry::Occupied(taken) => self.problem(
                &join(section, taken.key()),
                "this name is already used by another rule; rule names are bound by name and must be unique across sections",
            ),
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(binding);
            }
        }
    }

    /// Bindings map to `None` when one of their rules is invalid: that problem is
    /// already reported, and bounds derived from a partial group would only
    /// add noise.
    fn target(
        &mut self,
        name: &str,
        spec: &Value,
        groups: &BTreeMap<String, Option<Binding>>,
    ) -> Option<Target> {
        let path = join("targets", name);
        if !is_valid_token(name) {
            self.problem(&path, "a target name may hold only letters, digits, '-' and '_' (it is used in NATS subjects)");
        }
        let map = self.map(spec, &path, TARGET_KEYS)?;
        let mut rules = Vec::new();
        let mut tracking: Vec<TrackingRule> = Vec::new();
        let mut ladders: BTreeMap<String, Vec<TierStep>> = BTreeMap::new();
        let mut rules_complete = true;
        match map.get("rules") {
            None => {
                rules_complete = false;
                self.problem(
                    &join(&path, "rules"),
                    "required: a list of rules from horizontal_scaling_rules, target_tracking_rules or vertical_scaling_rules",
                );
            }
            Some(Value::Array(names)) => {
                for (i, group) in names.iter().enumerate() {
                    let item = format!("{}[{i}]", join(&path, "rules"));
                    let Some(group) = self.string(group, &item) else {
                        rules_complete = false;
                        continue;
                    };
                    match groups.get(group) {
                        Some(Some(Binding::Threshold(raw))) => rules.extend(raw.iter().cloned()),
                        Some(Some(Binding::Tracking(rule))) => tracking.push(rule.clone()),
                        Some(Some(Binding::Vertical((rule, ladder)))) => {
                            ladders.insert(rule.name.clone(), ladder.clone());
                            rules.push(rule.clone());
                        }
                        Some(None) => rules_complete = false,
                        None => {
                            rules_complete = false;
                            let known: Vec<&str> = groups.keys().map(String::as_str).collect();
                            let hint = suggest(group, &known)
                                .map(|s| format!("did you mean `{s}`? "))
                                .unwrap_or_default();
                            self.problem(
                                &item,
                                format!(
                                    "unknown rule {group:?}; {hint}defined: {}",
                                    if known.is_empty() {
                                        "none".to_string()
                                    } else {
                                        known.join(", ")
                                    }
                                ),
                            );
                        }
                    }
                }
            }
            Some(other) => {
                rules_complete = false;
                self.problem(
                    &join(&path, "rules"),
                    format!(
                        "expected a list of rule group names, found {}",
                        kind_of(other)
                    ),
                );
            }
        }
        let backend = match map.get("backend") {
            None => {
                self.problem(
                    &join(&path, "backend"),
                    "required: `ecs: {region, cluster, service}`, `rds_replicas: {region, primary}`, `rds_instance: {region, instance}` or `sim: {initial}`",
                );
                None
            }
            Some(v) => self.backend(v, &join(&path, "backend")),
        };
        if let Some(Backend::RdsReplicas(RdsReplicasBackend {
            max_replica_lag: Some(lag),
            ..
        })) = &backend
            && let Some(rule) = self.replica_lag_rule(
                &Value::String(lag.clone()),
                &join(&path, "backend.rds_replicas.max_replica_lag"),
            )
        {
            rules.push(rule);
        }
        let rule_mins = rules.iter().filter_map(|r| r.min);
        let rule_maxes = rules.iter().filter_map(|r| r.max);
        let min = match map.get("min") {
            Some(v) => self.count(v, &join(&path, "min")),
            None => Some(
                rule_mins
                    .chain(tracking.iter().filter_map(|r| r.min))
                    .min()
                    .unwrap_or(1),
            ),
        };
        let one_instance = matches!(backend, Some(Backend::RdsInstance(_)));
        let max = match map.get("max") {
            Some(v) => self.count(v, &join(&path, "max")),
            // An RDS instance target is the one instance.
            None if one_instance => Some(1),
            None => {
                let max = rule_maxes
                    .chain(tracking.iter().filter_map(|r| r.max))
                    .max();
                if max.is_none() && rules_complete {
                    self.problem(
                        &join(&path, "max"),
                        "required when no bound rule sets max_instances",
                    );
                }
                max
            }
        };
        if one_instance && (min, max) != (Some(1), Some(1)) && min.is_some() && max.is_some() {
            self.problem(
                &path,
                "an rds_instance target is one DB instance: leave out min and max, or set both to 1",
            );
        } else if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            self.problem(&path, format!("min {lo} is above max {hi}"));
        }
        let dry_run = match map.get("dry_run") {
            None => Some(false),
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.problem(
                    &join(&path, "dry_run"),
                    format!("expected true or false, found {}", show(other)),
                );
                None
            }
        };
        let flapping = match map.get("flapping") {
            None => Some(super::FlapSettings::default()),
            Some(v) => self.flapping(v, &join(&path, "flapping")),
        };
        let fallback = match map.get("fallback") {
            None => Some(None),
            Some(v) => self.fallback(v, &join(&path, "fallback")).map(Some),
        };
        let warmup_secs = match map.get("warmup_secs") {
            None => Some(0),
            Some(v) => self.secs(v, &join(&path, "warmup_secs")),
        };
        let gradual = match map.get("gradual") {
            None => Some(None),
            Some(v) => {
                let units = std::mem::take(&mut self.units);
                let gradual = self.gradual(v, &join(&path, "gradual"), &|m| units.get(m).copied());
                self.units = units;
                if gradual.is_some() && one_instance {
                    self.problem(
                        &join(&path, "gradual"),
                        "an rds_instance target is one DB instance: there is nothing to change in steps",
                    );
                }
                gradual.map(Some)
            }
        };
        let queue_depth = match map.get("queue_depth") {
            None => Some(Vec::new()),
            Some(v) => self.queue_depth(v, &join(&path, "queue_depth")),
        };
        if !ladders.is_empty()
            && let Some(backend) = &backend
        {
            self.check_tiers(backend, &ladders, &join(&path, "backend"));
        }
        if let Some(Backend::RdsInstance(_)) = &backend {
            let horizontal: Vec<&str> = rules
                .iter()
                .filter(|r| r.action != ScaleAction::NextTier)
                .map(|r| r.name.as_str())
                .chain(tracking.iter().map(|t| t.name.as_str()))
                .collect();
            if !horizontal.is_empty() {
                self.problem(
                    &join(&path, "rules"),
                    format!(
                        "an rds_instance target is one DB instance and takes only vertical rules; {} change a count: bind them to an rds_replicas target for the primary's read replicas",
                        horizontal.join(", ")
                    ),
                );
            } else if ladders.is_empty() {
                self.problem(
                    &join(&path, "rules"),
                    "an rds_instance target needs a vertical rule whose options are DB instance classes",
                );
            }
        }
        if let (Some(Backend::RdsReplicas(_)), Some(hi)) = (&backend, max)
            && hi > RdsReplicasBackend::MAX_REPLICAS
        {
            self.problem(
                &join(&path, "max"),
                format!(
                    "max {hi} is above the {} read replicas RDS allows one primary; bound the target's rules to at most {}",
                    RdsReplicasBackend::MAX_REPLICAS,
                    RdsReplicasBackend::MAX_REPLICAS
                ),
            );
        }
        let defaults = self.emergency;
        let emergency = self.emergency_target(map, &path, &defaults, (min, max));
        Some(Target {
            emergency: emergency?,
            warmup_secs: warmup_secs?,
            name: name.to_string(),
            min: min?,
            max: max?,
            rules,
            tracking,
            ladders,
            backend: backend?,
            dry_run: dry_run?,
            flapping: flapping?,
            fallback: fallback?,
            gradual: gradual?,
            queue_depth: queue_depth?,
            alert_rules: Vec::new(),
        })
    }

    /// A connection pool's ladders are values of its parameter, each step
    /// a raise.
    fn check_pool_ladders(
        &mut self,
        pool: &ConnectionPool,
        ladders: &BTreeMap<String, Vec<TierStep>>,
        names: &[&str],
        path: &str,
    ) {
        let value = |text: &str| text.parse::<u64>().ok().filter(|n| *n > 0);
        let mut odd: Vec<&str> = ladders
            .values()
            .flatten()
            .flat_map(|s| [s.from.as_str(), s.to.as_str()])
            .filter(|text| value(text).is_none())
            .collect();
        odd.sort_unstable();
        odd.dedup();
        if !odd.is_empty() {
            self.problem(
                &join(path, "rds_replicas.connection_pool"),
                format!(
                    "the vertical rules of a connection pool step {} (whole numbers above 0, such as 1000); {} of the bound vertical rules ({}) {} not",
                    pool.parameter,
                    odd.join(", "),
                    names.join(", "),
                    if odd.len() == 1 { "is" } else { "are" }
                ),
            );
        }
        let lowering: Vec<String> = ladders
            .values()
            .flatten()
            .filter(|s| matches!((value(&s.from), value(&s.to)), (Some(a), Some(b)) if b < a))
            .map(|s| format!("{} -> {}", s.from, s.to))
            .collect();
        if !lowering.is_empty() {
            self.problem(
                &join(path, "rds_replicas.connection_pool"),
                format!(
                    "a connection pool's rules only raise {}; {} of the bound vertical rules ({}) would lower it",
                    pool.parameter,
                    lowering.join(", "),
                    names.join(", ")
                ),
            );
        }
    }

    /// A target with vertical rules needs a backend that runs tiers, and a
    /// starting tier that some bound ladder knows.
    fn check_tiers(
        &mut self,
        backend: &Backend,
        ladders: &BTreeMap<String, Vec<TierStep>>,
        path: &str,
    ) {
        let names: Vec<&str> = ladders.keys().map(String::as_str).collect();
        match backend {
            Backend::RdsReplicas(RdsReplicasBackend {
                connection_pool: None,
                ..
            }) => self.problem(
                path,
                format!(
                    "vertical rules ({}) need a backend with instance tiers (ecs with tiers, rds_instance, sim); the {} backend changes only the number of replicas, and its connection_pool's value when it has one",
                    names.join(", "),
                    backend.kind()
                ),
            ),
            Backend::RdsReplicas(RdsReplicasBackend {
                connection_pool: Some(pool),
                ..
            }) => self.check_pool_ladders(pool, ladders, &names, path),
            Backend::RdsInstance(_) => {
                let mut odd: Vec<&str> = ladders
                    .values()
                    .flatten()
                    .flat_map(|s| [s.from.as_str(), s.to.as_str()])
                    .filter(|class| !class.starts_with("db."))
                    .collect();
                odd.sort_unstable();
                odd.dedup();
                if !odd.is_empty() {
                    self.problem(
                        path,
                        format!(
                            "the rds_instance backend's tiers are DB instance classes (db.r5.large); {} of the bound vertical rules ({}) {} not",
                            odd.join(", "),
                            names.join(", "),
                            if odd.len() == 1 { "is" } else { "are" }
                        ),
                    );
                }
            }
            Backend::Ecs(ecs) if ecs.tiers.is_empty() => self.problem(
                &join(path, "ecs.tiers"),
                format!(
                    "required with vertical rules ({}): each tier's task size, as `NAME: {{cpu: 1024, memory_mib: 2048}}`",
                    names.join(", ")
                ),
            ),
            Backend::Ecs(ecs) => {
                let mut missing: Vec<&str> = ladders
                    .values()
                    .flatten()
                    .flat_map(|s| [s.from.as_str(), s.to.as_str()])
                    .filter(|tier| !ecs.tiers.contains_key(*tier))
                    .collect();
                missing.sort_unstable();
                missing.dedup();
                if !missing.is_empty() {
                    self.problem(
                        &join(path, "ecs.tiers"),
                        format!(
                            "no task size for tier{} {} of the bound vertical rules ({}); add {}",
                            if missing.len() == 1 { "" } else { "s" },
                            missing.join(", "),
                            names.join(", "),
                            if missing.len() == 1 { "it" } else { "them" }
                        ),
                    );
                }
            }
            Backend::Sim(sim) => match &sim.tier {
                None => self.problem(
                    &join(path, "sim.tier"),
                    format!("required with vertical rules ({}): the fleet's starting tier", names.join(", ")),
                ),
                Some(tier) => {
                    let known = ladders
                        .values()
                        .flatten()
                        .any(|s| &s.from == tier || &s.to == tier);
                    if !known {
                        self.problem(
                            &join(path, "sim.tier"),
                            format!("tier {tier:?} is on no ladder of the bound vertical rules ({})", names.join(", ")),
                        );
                    }
                }
            },
        }
    }

    fn fallback(&mut self, value: &Value, path: &str) -> Option<super::Fallback> {
        let m = self.map(value, path, &["after_secs", "capacity"])?;
        let after_secs = match m.get("after_secs") {
            Some(v) => self.secs(v, &join(path, "after_secs")),
            None => {
                self.problem(
                    &join(path, "after_secs"),
                    "required: seconds of silence before falling back",
                );
                None
            }
        };
        let capacity = match m.get("capacity") {
            Some(v) => self.count(v, &join(path, "capacity")),
            None => {
                self.problem(
                    &join(path, "capacity"),
                    "required: the capacity to fall back to",
                );
                None
            }
        };
        if after_secs == Some(0) {
            self.problem(&join(path, "after_secs"), "expected more than 0 seconds");
            return None;
        }
        Some(super::Fallback {
            after_secs: after_secs?,
            capacity: capacity?,
        })
    }

    fn flapping(&mut self, value: &Value, path: &str) -> Option<super::FlapSettings> {
        let m = self.map(
            value,
            path,
            &["max_reversals", "window_secs", "cooldown_factor"],
        )?;
        let mut settings = super::FlapSettings::default();
        if let Some(v) = m.get("max_reversals") {
            settings.max_reversals = self.count(v, &join(path, "max_reversals"))?;
        }
        if let Some(v) = m.get("window_secs") {
            settings.window_secs = self.secs(v, &join(path, "window_secs"))?;
        }
        if let Some(v) = m.get("cooldown_factor") {
            let factor = self.count(v, &join(path, "cooldown_factor"))?;
            if factor == 0 {
                self.problem(
                    &join(path, "cooldown_factor"),
                    "expected a whole number >= 1",
                );
                return None;
            }
            settings.cooldown_factor = factor;
        }
        Some(settings)
    }

    fn backend(&mut self, value: &Value, path: &str) -> Option<Backend> {
        let map = self.map(value, path, &["ecs", "rds_replicas", "rds_instance", "sim"])?;
        if map.len() != 1 {
            self.problem(
                path,
                "expected exactly one of `ecs`, `rds_replicas`, `rds_instance` or `sim`",
            );
            return None;
        }
        if let Some(rds) = map.get("rds_replicas") {
            return self.rds_replicas(rds, &join(path, "rds_replicas"));
        }
        if let Some(rds) = map.get("rds_instance") {
            return self.rds_instance(rds, &join(path, "rds_instance"));
        }
        if let Some(ecs) = map.get("ecs") {
            let path = join(path, "ecs");
            let m = self.map(
                ecs,
                &path,
                &[
                    "region",
                    "cluster",
                    "service",
                    "endpoint_url",
                    "tiers",
                    "steady_timeout_secs",
                ],
            )?;
            let required = |walker: &mut Self, key: &str| match m.get(key) {
                Some(v) => walker.string(v, &join(&path, key)).map(str::to_string),
                None => {
                    walker.problem(&join(&path, key), "required");
                    None
                }
            };
            let region = required(self, "region");
            let cluster = required(self, "cluster");
            let service = required(self, "service");
            let endpoint_url = m.get("endpoint_url").and_then(|v| {
                self.string(v, &join(&path, "endpoint_url"))
                    .map(str::to_string)
            });
            let tiers = match m.get("tiers") {
                None => Some(BTreeMap::new()),
                Some(v) => self.task_sizes(v, &join(&path, "tiers")),
            };
            let steady_timeout_secs = m
                .get("steady_timeout_secs")
                .map_or(Some(EcsBackend::DEFAULT_STEADY_TIMEOUT_SECS), |v| {
                    self.secs(v, &join(&path, "steady_timeout_secs"))
                });
            return Some(Backend::Ecs(EcsBackend {
                region: region?,
                cluster: cluster?,
                service: service?,
                endpoint_url,
                tiers: tiers?,
                steady_timeout_secs: steady_timeout_secs?,
            }));
        }
        let path = join(path, "sim");
        let m = self.map(
            &map["sim"],
            &path,
            &[
                "initial",
                "tier",
                "warmup_secs",
                "capacity_per_instance",
                "load",
            ],
        )?;
        let initial = match m.get("initial") {
            Some(v) => self.count(v, &join(&path, "initial")),
            None => {
                self.problem(
                    &join(&path, "initial"),
                    "required: the fleet's starting capacity",
                );
                None
            }
        };
        let warmup_secs = m
            .get("warmup_secs")
            .map_or(Some(30), |v| self.secs(v, &join(&path, "warmup_secs")));
        let capacity_per_instance = m.get("capacity_per_instance").map_or(Some(100.0), |v| {
            self.positive(v, &join(&path, "capacity_per_instance"))
        });
        let load = match m.get("load") {
            None => Some(None),
            Some(v) => self.load(v, &join(&path, "load")).map(Some),
        };
        let tier = match m.get("tier") {
            None => Some(None),
            Some(v) => self
                .string(v, &join(&path, "tier"))
                .map(|t| Some(t.trim().to_string())),
        };
        Some(Backend::Sim(SimBackend {
            initial: initial?,
            tier: tier?,
            warmup_secs: warmup_secs?,
            capacity_per_instance: capacity_per_instance?,
            load: load?,
        }))
    }

    /// `tiers:` of an ECS backend: `name: {cpu: units, memory_mib: MiB}`.
    fn task_sizes(&mut self, value: &Value, path: &str) -> Option<BTreeMap<String, TaskSize>> {
        let Value::Object(entries) = value else {
            self.problem(
                path,
                format!(
                    "expected a map of tier name to {{cpu: units, memory_mib: MiB}}, found {}",
                    kind_of(value)
                ),
            );
            return None;
        };
        let mut sizes = BTreeMap::new();
        let mut ok = true;
        for (key, size) in entries {
            let name = key.trim();
            let here = join(path, name);
            let Some(m) = self.map(size, &here, &["cpu", "memory_mib"]) else {
                ok = false;
                continue;
            };
            let field = |walker: &mut Self, key: &str, what: &str| match m.get(key) {
                Some(v) => walker.count(v, &join(&here, key)).and_then(|n| {
                    if n == 0 {
                        walker.problem(&join(&here, key), "expected more than 0");
                        None
                    } else {
                        Some(n)
                    }
                }),
                None => {
                    walker.problem(&join(&here, key), format!("required: {what}"));
                    None
                }
            };
            let cpu = field(self, "cpu", "the task's cpu units (1024 = 1 vCPU)");
            let memory_mib = field(self, "memory_mib", "the task's memory in MiB");
            match (cpu, memory_mib) {
                (Some(cpu), Some(memory_mib)) => {
                    sizes.insert(name.to_string(), TaskSize { cpu, memory_mib });
                }
                _ => ok = false,
            }
        }
        ok.then_some(sizes)
    }

    fn rds_instance(&mut self, value: &Value, path: &str) -> Option<Backend> {
        let m = self.map(value, path, &["region", "instance", "endpoint_url"])?;
        let region = match m.get("region") {
            Some(v) => self.string(v, &join(path, "region")).map(str::to_string),
            None => {
                self.problem(&join(path, "region"), "required");
                None
            }
        };
        let instance = match m.get("instance") {
            Some(v) => self
                .string(v, &join(path, "instance"))
                .map(|s| s.trim().to_string()),
            None => {
                self.problem(
                    &join(path, "instance"),
                    "required: the identifier of the DB instance whose class is scaled",
                );
                None
            }
        };
        let endpoint_url = match m.get("endpoint_url") {
            None => Some(None),
            Some(v) => self
                .string(v, &join(path, "endpoint_url"))
                .map(|s| Some(s.trim().to_string())),
        };
        Some(Backend::RdsInstance(RdsInstanceBackend {
            region: region?,
            instance: instance?,
            endpoint_url: endpoint_url?,
        }))
    }

    fn rds_replicas(&mut self, value: &Value, path: &str) -> Option<Backend> {
        let m = self.map(
            value,
            path,
            &[
                "region",
                "primary",
                "endpoint_url",
                "instance_class",
                "drain_secs",
                "connection_pool",
                "max_replica_lag",
            ],
        )?;
        let region = match m.get("region") {
            Some(v) => self.string(v, &join(path, "region")).map(str::to_string),
            None => {
                self.problem(&join(path, "region"), "required");
                None
            }
        };
        let primary = match m.get("primary") {
            Some(v) => self
                .string(v, &join(path, "primary"))
                .and_then(|id| self.rds_primary(id, &join(path, "primary"))),
            None => {
                self.problem(
                    &join(path, "primary"),
                    "required: the identifier of the DB instance whose read replicas are scaled",
                );
                None
            }
        };
        let optional = |walker: &mut Self, key: &str| match m.get(key) {
            None => Some(None),
            Some(v) => walker
                .string(v, &join(path, key))
                .map(|s| Some(s.trim().to_string())),
        };
        let endpoint_url = optional(self, "endpoint_url");
        let instance_class = optional(self, "instance_class");
        let drain_secs = m.get("drain_secs").map_or(Some(DEFAULT_DRAIN_SECS), |v| {
            self.secs(v, &join(path, "drain_secs"))
        });
        if let Some(secs) = drain_secs
            && secs > MAX_DRAIN_SECS
        {
            self.problem(
                &join(path, "drain_secs"),
                format!("expected at most {MAX_DRAIN_SECS} seconds, found {secs}"),
            );
            return None;
        }
        let connection_pool = match m.get("connection_pool") {
            None => Some(None),
            Some(v) => self
                .connection_pool(v, &join(path, "connection_pool"))
                .map(Some),
        };
        let max_replica_lag = match m.get("max_replica_lag") {
            None => Some(None),
            Some(v) => self
                .replica_lag_rule(v, &join(path, "max_replica_lag"))
                .map(|_| v.as_str().map(|s| s.trim().to_string())),
        };
        Some(Backend::RdsReplicas(RdsReplicasBackend {
            region: region?,
            primary: primary?,
            endpoint_url: endpoint_url?,
            instance_class: instance_class?,
            drain_secs: drain_secs?,
            connection_pool: connection_pool?,
            max_replica_lag: max_replica_lag?,
        }))
    }

    /// The rule `max_replica_lag: <time>` binds: `max_replica_lag > <time>`,
    /// holding off removals while it fires.
    fn replica_lag_rule(&mut self, value: &Value, path: &str) -> Option<ThresholdRule> {
        // A bare number says no unit, which the problem below names.
        let text = match value {
            Value::Number(n) => n.to_string(),
            _ => self.string(value, path)?.trim().to_string(),
        };
        let timed = matches!(
            units::parse_quantity(&text),
            Ok((_, Some(Unit::Ms | Unit::Seconds)))
        );
        if !timed {
            self.problem(
                path,
                format!("expected a time with its unit, such as 1000ms or 1s, found {text:?}"),
            );
            return None;
        }
        let metric = RdsReplicasBackend::REPLICA_LAG_METRIC;
        let condition = parse_condition(&format!("max_{metric} > {text}"), |m| {
            self.units.get(m).copied()
        })
        .map_err(|e| self.problem(path, e))
        .ok()?;
        Some(ThresholdRule {
            name: RdsReplicasBackend::REPLICA_LAG_RULE.to_string(),
            direction: Direction::None,
            condition,
            action: ScaleAction::HoldScaleDowns,
            cooldown_secs: 0,
            min: None,
            max: None,
        })
    }

    /// `connection_pool: {parameter_group, parameter?, apply_method?}`.
    fn connection_pool(&mut self, value: &Value, path: &str) -> Option<ConnectionPool> {
        let m = self.map(
            value,
            path,
            &["parameter_group", "parameter", "apply_method"],
        )?;
        let text = |walker: &mut Self, key: &str| match m.get(key) {
            None => Some(None),
            Some(v) => walker
                .string(v, &join(path, key))
                .map(|s| Some(s.trim().to_string())),
        };
        let parameter_group = match text(self, "parameter_group") {
            Some(None) => {
                self.problem(
                    &join(path, "parameter_group"),
                    "required: the name of the primary's DB parameter group",
                );
                None
            }
            other => other.flatten(),
        };
        let parameter = text(self, "parameter")
            .map(|p| p.unwrap_or_else(|| ConnectionPool::DEFAULT_PARAMETER.to_string()));
        let apply_method = match text(self, "apply_method") {
            None => None,
            Some(None) => Some("immediate".to_string()),
            Some(Some(method)) if ConnectionPool::APPLY_METHODS.contains(&method.as_str()) => {
                Some(method)
            }
            Some(Some(method)) => {
                self.problem(
                    &join(path, "apply_method"),
                    format!(
                        "expected immediate (a dynamic parameter) or pending-reboot (a static one), found {method:?}"
                    ),
                );
                None
            }
        };
        Some(ConnectionPool {
            parameter_group: parameter_group?,
            parameter: parameter?,
            apply_method: apply_method?,
        })
    }

    /// A primary's identifier, checked against RDS's rules for the names
    /// derived from it (`<primary>-replica-<n>`), so a bad one is found
    /// here rather than on the first scale-up.
    fn rds_primary(&mut self, id: &str, path: &str) -> Option<String> {
        let longest = id.len() + "-replica-".len() + 2;
        let problem = if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
            Some("must start with a letter".to_string())
        } else if let Some(c) = id.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '-') {
            Some(format!(
                "{c:?} is not allowed: letters, digits and hyphens only"
            ))
        } else if id.contains("--") || id.ends_with('-') {
            Some("must not end with a hyphen or contain two in a row".to_string())
        } else if longest > RDS_ID_MAX {
            Some(format!(
                "too long: its replicas' identifiers ({id}-replica-NN) would exceed RDS's {RDS_ID_MAX} characters; at most {} characters",
                RDS_ID_MAX - (longest - id.len())
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                self.problem(
                    path,
                    format!("{id:?} is not an RDS instance identifier: {problem}"),
                );
                None
            }
            None => Some(id.to_string()),
        }
    }

    fn load(&mut self, value: &Value, path: &str) -> Option<LoadCurve> {
        let m = self.map(
            value,
            path,
            &[
                "base_rps",
                "amplitude_rps",
                "period_secs",
                "sample_every_secs",
            ],
        )?;
        let number = |walker: &mut Self, key: &str| match m.get(key) {
            Some(v) => walker.non_negative(v, &join(path, key)),
            None => {
                walker.problem(&join(path, key), "required");
                None
            }
        };
        let base_rps = number(self, "base_rps");
        let amplitude_rps = number(self, "amplitude_rps");
        let period_secs = match m.get("period_secs") {
            Some(v) => self.secs(v, &join(path, "period_secs")),
            None => {
                self.problem(&join(path, "period_secs"), "required");
                None
            }
        };
        let sample_every_secs = m
            .get("sample_every_secs")
            .map_or(Some(5), |v| self.secs(v, &join(path, "sample_every_secs")));
        Some(LoadCurve {
            base_rps: base_rps?,
            amplitude_rps: amplitude_rps?,
            period_secs: period_secs?.max(1),
            sample_every_secs: sample_every_secs?.max(1),
        })
    }
}

/// What a name in a target's `rules` list binds.
#[derive(Debug, Clone)]
enum Binding {
    /// A horizontal group: its scale_up and scale_down rules.
    Threshold(Vec<ThresholdRule>),
    /// A target tracking rule.
    Tracking(TrackingRule),
    /// A vertical rule and its ladder.
    Vertical(kinds::VerticalRule),
}

/// A rule's own keys followed by the bound keys every rule kind accepts.
fn with_bounds(keys: &[&'static str]) -> Vec<&'static str> {
    [keys, MIN_KEYS, MAX_KEYS].concat()
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind_of(other).to_string(),
    }
}

/// The closest allowed word, if it is within two edits (Levenshtein, by
/// characters).
fn suggest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (strsim::levenshtein(word, a), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Aggregation;

    const RUNBOOK: &str = include_str!("../../../deploy/policies/runbook.yaml");
    const DEMO: &str = include_str!("../../../deploy/policies/demo.yaml");

    #[test]
    fn bare_numbers_take_the_unit_written_in_thresholds_and_tracking_targets() {
        let yaml = r#"
targets:
  w: {rules: [g, track], max: 9, backend: {sim: {initial: 1}}}
horizontal_scaling_rules:
  g:
    scale_up: {condition: "p99_latency > 500ms", action: "add 1 instance"}
target_tracking_rules:
  track: {metric: avg_cpu, target: 60%}
"#;
        let policy = from_yaml(yaml, "p.yaml").unwrap();
        let cases = [
            ("cpu", Unit::Percent),
            ("p99_latency", Unit::Ms),
            ("queue_depth", Unit::Count),
        ];
        for (metric, want) in cases {
            assert_eq!(policy.metric_unit(metric), want, "{metric}");
        }
    }

    fn problems(yaml: &str) -> Vec<String> {
        match from_yaml(yaml, "p.yaml") {
            Ok(_) => vec![],
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn the_runbook_block_loads_as_written() {
        let policy = from_yaml(RUNBOOK, "runbook.yaml").unwrap_or_else(|e| panic!("{e}"));
        let api = &policy.targets["api"];
        assert_eq!(api.rules.len(), 8);
        assert_eq!((api.min, api.max), (3, 150));
        let up = api.rule("cpu_based.scale_up").unwrap();
        assert_eq!(up.condition.aggregation, Aggregation::Avg);
        assert_eq!(up.condition.threshold, 0.7);
        assert_eq!(up.condition.for_secs, 120);
        assert_eq!(up.action, ScaleAction::Add(2));
        assert_eq!((up.cooldown_secs, up.max), (300, Some(100)));
        // Section 2's gradual_scaling.py: steps of 2, 120 s apart, the
        // health endpoint and the script's metric gates.
        let gradual = api.gradual.as_ref().expect("api walks gradually");
        assert_eq!((gradual.step, gradual.delay_secs), (2, 120));
        let health = gradual.health_check.as_ref().expect("a health check");
        assert_eq!(
            (health.url.as_str(), health.expect_status),
            ("https://api.novacron.io/health", 200)
        );
        assert_eq!(gradual.gates, crate::gradual::Gate::runbook_defaults());
        let worker = &policy.targets["worker"];
        assert_eq!(worker.gradual, None);
        assert_eq!((worker.min, worker.max), (10, 200));
        assert_eq!(
            worker.rule("queue_depth.scale_up").unwrap().action,
            ScaleAction::Add(5)
        );
        assert_eq!(policy.metric_unit("cpu"), Unit::Percent);
        assert_eq!(policy.metric_unit("p99_latency"), Unit::Ms);
        let compute = &policy.targets["compute"];
        let credits = compute.rule("instance_resize.cpu_intensive").unwrap();
        assert_eq!(credits.action, ScaleAction::NextTier);
        assert_eq!(credits.condition.for_secs, 300);
        assert_eq!(credits.condition.threshold, 20.0);
        assert_eq!(
            compute.next_tier("instance_resize.cpu_intensive", "c5.large"),
            super::super::TierMove::Next("c5.xlarge".into())
        );
        assert_eq!(
            compute.next_tier("instance_resize.cpu_intensive", "c5.2xlarge"),
            super::super::TierMove::AtTop
        );
        let cache = &policy.targets["cache"];
        assert_eq!(cache.ladders.len(), 2);
        let network = cache.rule("instance_resize.network_intensive").unwrap();
        assert_eq!(network.condition.threshold, 0.8);
        from_yaml(DEMO, "demo.yaml").unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let broken = RUNBOOK
            .replace("avg_cpu > 70% for 2 minutes", "avg_cpu > 70% fr 2 minutes")
            .replace("add 4 instances", "add four instances")
            .replace("max_workers: 200", "max_wrokers: 200")
            .replace("[queue_depth]", "[queue_dept]");
        let got = problems(&broken);
        let want = [
            "horizontal_scaling_rules.cpu_based.scale_up.condition: expected `for <duration>`",
            "horizontal_scaling_rules.latency_based.scale_up.action: expected a whole number",
            "horizontal_scaling_rules.queue_depth.scale_up.max_wrokers: unknown field; did you mean `max_workers`?",
            "targets.worker.rules[0]: unknown rule \"queue_dept\"; did you mean `queue_depth`?",
        ];
        for w in want {
            assert!(
                got.iter().any(|g| g.starts_with(w)),
                "missing {w:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
        let err = from_yaml(&broken, "p.yaml").unwrap_err().to_string();
        assert!(err.starts_with("p.yaml: 4 problem(s):"), "{err}");
    }

    #[test]
    fn table_of_invalid_policies() {
        let base = "targets:\n  t:\n    rules: [g]\n    backend: {sim: {initial: 1}}\nhorizontal_scaling_rules:\n  g:\n    scale_up: {condition: \"avg_cpu > 70%\", action: \"add 1 instance\", max_instances: 5}\n";
        let cases = [
            (
                base.replace("add 1", "remove 1"),
                "scale_up.action: scale_up removes instances",
            ),
            (
                base.replace("max_instances: 5", "max_instances: -5"),
                "max_instances: expected a whole number",
            ),
            (
                base.replace(", max_instances: 5", ""),
                "targets.t.max: required",
            ),
            (
                base.replace("{sim: {initial: 1}}", "{}"),
                "targets.t.backend: expected exactly one",
            ),
            (
                base.replace("{sim: {initial: 1}}", "{ecs: {region: r}}"),
                "targets.t.backend.ecs.cluster: required",
            ),
            (
                base.replace("targets:\n  t:", "targets:\n  t.x:"),
                "targets.t.x: a target name may hold only",
            ),
            (
                base.replace("cooldown", "x") + "evaluation: {staleness_secs: soon}\n",
                "evaluation.staleness_secs: expected a duration",
            ),
            (
                format!("{base}metrics: {{cpu: {{unit: ms}}}}\n"),
                "metric cpu is measured as Ratio here but as Time at metrics.cpu",
            ),
            ("targets: [\n".to_string(), "not valid YAML"),
            (
                "horizontal_scaling_rules: {}\n".to_string(),
                "targets: required",
            ),
        ];
        for (yaml, want) in cases {
            let got = problems(&yaml);
            assert!(
                got.iter().any(|g| g.contains(want)),
                "want {want:?} in {got:#?}"
            );
        }
        assert!(problems(base).is_empty(), "{:?}", problems(base));
    }

    #[test]
    fn table_of_invalid_tracking_and_vertical_rules() {
        let base = r#"
targets:
  t: {rules: [track, credits], max: 9, backend: {sim: {initial: 1, tier: c5.large}}}
target_tracking_rules:
  track:
    metric: avg_cpu
    target: 60%
    behavior:
      scale_down: {stabilization_window: 120, select_policy: min, policies: [{type: pods, value: 2, period: 60}]}
vertical_scaling_rules:
  resize:
    credits:
      trigger: "cpu_credits < 20 for 5 minutes"
      action: "upgrade to next CPU-optimized tier"
      options: [{from: c5.large, to: c5.xlarge}, {from: c5.xlarge, to: c5.2xlarge}]
"#;
        let cases = [
            (
                base.replace("target: 60%", "target: 0%"),
                "target_tracking_rules.track.target: expected a target above 0",
            ),
            (
                base.replace("target: 60%", ""),
                "target_tracking_rules.track.target: required",
            ),
            (
                base.replace("metric: avg_cpu", "metric: avg cpu"),
                "target_tracking_rules.track.metric: expected a metric name",
            ),
            (
                base.replace("select_policy: min", "select_policy: most"),
                "behavior.scale_down.select_policy: expected max, min or disabled",
            ),
            (
                base.replace("type: pods", "type: nodes"),
                "behavior.scale_down.policies[0].type: expected pods or percent",
            ),
            (
                base.replace("value: 2", "value: 0"),
                "behavior.scale_down.policies[0]: a policy allowing 0",
            ),
            (
                base.replace("stabilization_window: 120", "stabilisation_window: 120"),
                "did you mean `stabilization_window`?",
            ),
            (
                base.replace("target: 60%", "target: 60%\n    tolerance: 1.5"),
                "track.tolerance: expected a fraction",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{ecs: {region: r, cluster: c, service: s}}",
                ),
                "targets.t.backend.ecs.tiers: required with vertical rules (resize.credits): each tier's task size",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{ecs: {region: r, cluster: c, service: s, tiers: {c5.large: {cpu: 2048, memory_mib: 4096}, c5.xlarge: {cpu: 4096, memory_mib: 8192}}}}",
                ),
                "targets.t.backend.ecs.tiers: no task size for tier c5.2xlarge of the bound vertical rules (resize.credits); add it",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{ecs: {region: r, cluster: c, service: s, tiers: {c5.large: {cpu: 0, memory: 4096}}}}",
                ),
                "targets.t.backend.ecs.tiers.c5.large.cpu: expected more than 0",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{ecs: {region: r, cluster: c, service: s, tiers: {c5.large: {cpu: 1024}}}}",
                ),
                "targets.t.backend.ecs.tiers.c5.large.memory_mib: required: the task's memory in MiB",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{ecs: {region: r, cluster: c, service: s, steady_timeout_secs: soon}}",
                ),
                "targets.t.backend.ecs.steady_timeout_secs: expected",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{rds_replicas: {region: r, primary: db}}",
                ),
                "targets.t.backend: vertical rules (resize.credits) need a backend with instance tiers",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{rds_instance: {region: r, instance: db}}",
                ),
                "targets.t.rules: an rds_instance target is one DB instance and takes only vertical rules; track change a count",
            ),
            (
                base.replace("[track, credits]", "[credits]").replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{rds_instance: {region: r, instance: db}}",
                ),
                "targets.t.backend: the rds_instance backend's tiers are DB instance classes (db.r5.large); c5.2xlarge, c5.large, c5.xlarge of the bound vertical rules (resize.credits) are not",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{rds_instance: {region: r}}",
                ),
                "targets.t.backend.rds_instance.instance: required: the identifier of the DB instance",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{rds_replicas: {region: r, primary: db, connection_pool: {parameter_group: g}}}",
                ),
                "targets.t.backend.rds_replicas.connection_pool: the vertical rules of a connection pool step max_connections (whole numbers above 0, such as 1000); c5.2xlarge, c5.large, c5.xlarge of the bound vertical rules (resize.credits) are not",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{rds_replicas: {region: r, primary: db, connection_pool: {parameter_group: g}}}",
                )
                .replace(
                    "[{from: c5.large, to: c5.xlarge}, {from: c5.xlarge, to: c5.2xlarge}]",
                    "[{from: 1000, to: 500}]",
                ),
                "targets.t.backend.rds_replicas.connection_pool: a connection pool's rules only raise max_connections; 1000 -> 500 of the bound vertical rules (resize.credits) would lower it",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{rds_replicas: {region: r, primary: db, connection_pool: {parameter_group: g, apply_method: later}}}",
                ),
                "targets.t.backend.rds_replicas.connection_pool.apply_method: expected immediate (a dynamic parameter) or pending-reboot (a static one), found \"later\"",
            ),
            (
                base.replace(
                    "{sim: {initial: 1, tier: c5.large}}",
                    "{rds_replicas: {region: r, primary: db, connection_pool: {parameter: max_connections}}}",
                ),
                "targets.t.backend.rds_replicas.connection_pool.parameter_group: required: the name of the primary's DB parameter group",
            ),
            (
                base.replace(", tier: c5.large", ""),
                "targets.t.backend.sim.tier: required with vertical rules",
            ),
            (
                base.replace("tier: c5.large}", "tier: m5.large}"),
                "tier \"m5.large\" is on no ladder",
            ),
            (
                base.replace("to: c5.2xlarge", "to: c5.large"),
                "the steps go round in a circle",
            ),
            (
                base.replace(
                    "{from: c5.xlarge, to: c5.2xlarge}",
                    "{from: c5.large, to: c5.2xlarge}",
                ),
                "c5.large already steps to c5.xlarge",
            ),
            (
                base.replace("action: \"upgrade", "action: \"downgrade"),
                "resize.credits.action: expected an upgrade",
            ),
            (
                base.replace("options: [", "optoins: ["),
                "resize.credits.optoins: unknown field; did you mean `options`?",
            ),
            (
                base.replace("[track, credits]", "[track, credit]"),
                "unknown rule \"credit\"; did you mean `credits`?",
            ),
            (
                format!(
                    "{base}horizontal_scaling_rules:\n  track:\n    scale_up: {{condition: \"avg_cpu > 90%\", action: \"add 1 instance\"}}\n"
                ),
                "target_tracking_rules.track: this name is already used",
            ),
        ];
        for (yaml, want) in cases {
            let got = problems(&yaml);
            assert!(
                got.iter().any(|g| g.contains(want)),
                "want {want:?} in {got:#?}"
            );
        }
        let policy = from_yaml(base, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        let t = &policy.targets["t"];
        let track = t.tracking_rule("track").unwrap();
        assert_eq!(
            (track.aggregation, track.target, track.interval_secs),
            (Aggregation::Avg, 0.6, 15)
        );
        assert_eq!(track.text, "avg_cpu at 60%");
        // Given fields override the HPA defaults; the rest stay.
        let down = &track.behavior.scale_down;
        assert_eq!(
            (down.stabilization_window_secs, down.select),
            (120, crate::tracking::SelectPolicy::Min)
        );
        assert_eq!(
            track.behavior.scale_up,
            crate::tracking::Behavior::default().scale_up
        );
        // Bound by its leaf name, named by its full one.
        assert!(t.rule("resize.credits").is_some());
    }

    #[test]
    fn bare_numbers_follow_the_configured_unit() {
        let yaml = "metrics: {cpu: {unit: ratio}}\ntargets:\n  t:\n    rules: [g]\n    max: 9\n    backend: {sim: {initial: 1}}\nhorizontal_scaling_rules:\n  g:\n    scale_up: {condition: \"avg_cpu > 0.7\", action: \"add 1 instance\"}\n";
        let policy = from_yaml(yaml, "p.yaml").unwrap();
        assert_eq!(policy.targets["t"].rules[0].condition.threshold, 0.7);
        assert_eq!(policy.metric_unit("cpu"), Unit::Ratio);
    }

    #[test]
    fn max_replica_lag_binds_a_rule_that_holds_removals() {
        let yaml = "targets:\n  db:\n    rules: [reads]\n    backend:\n      rds_replicas: {region: us-east-1, primary: orders-db, max_replica_lag: 1000ms}\nhorizontal_scaling_rules:\n  reads:\n    scale_up: {condition: \"read_queue > 100\", action: \"add 1 replica\", max_replicas: 5}\n";
        let policy = from_yaml(yaml, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        let db = &policy.targets["db"];
        let lag = db
            .rule(RdsReplicasBackend::REPLICA_LAG_RULE)
            .expect("the lag rule is bound");
        assert_eq!(
            (&lag.direction, &lag.action, lag.condition.threshold),
            (&Direction::None, &ScaleAction::HoldScaleDowns, 1.0)
        );
        assert_eq!(lag.condition.metric, "replica_lag");
        // Published bare, replica_lag is in the limit's unit.
        assert_eq!(policy.metric_unit("replica_lag"), Unit::Ms);
        for (value, problem) in [
            (
                "1000",
                "expected a time with its unit, such as 1000ms or 1s, found \"1000\"",
            ),
            ("80%", "expected a time with its unit"),
            ("soon", "expected a time with its unit"),
        ] {
            let bad = yaml.replace("1000ms", value);
            let err = from_yaml(&bad, "p.yaml").expect_err(value).to_string();
            assert!(
                err.contains(&format!(
                    "targets.db.backend.rds_replicas.max_replica_lag: {problem}"
                )),
                "{value}: {err}"
            );
        }
    }

    #[test]
    fn a_replica_set_with_a_connection_pool_takes_a_numeric_ladder() {
        let yaml = "targets:\n  db:\n    rules: [reads, connection_pool]\n    backend:\n      rds_replicas: {region: us-east-1, primary: orders-db, connection_pool: {parameter_group: novacron-params}}\nhorizontal_scaling_rules:\n  reads:\n    scale_up: {condition: \"db_connection_usage > 90%\", action: \"add 1 replica\", max_replicas: 5}\nvertical_scaling_rules:\n  database:\n    connection_pool:\n      trigger: \"db_connection_usage > 80% for 2 minutes\"\n      action: \"raise max_connections\"\n      options: [{from: 500, to: 1000}, {from: 1000, to: 2000}]\n";
        let policy = from_yaml(yaml, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        let db = &policy.targets["db"];
        let Backend::RdsReplicas(rds) = &db.backend else {
            panic!("not an rds_replicas backend")
        };
        assert_eq!(
            rds.connection_pool,
            Some(ConnectionPool {
                parameter_group: "novacron-params".into(),
                parameter: "max_connections".into(),
                apply_method: "immediate".into(),
            })
        );
        assert_eq!(
            db.ladders["database.connection_pool"],
            [
                TierStep {
                    from: "500".into(),
                    to: "1000".into()
                },
                TierStep {
                    from: "1000".into(),
                    to: "2000".into()
                }
            ]
        );
    }

    #[test]
    fn an_rds_replica_set_loads_with_its_defaults() {
        let yaml = "targets:\n  db:\n    rules: [g]\n    backend:\n      rds_replicas: {region: us-east-1, primary: orders-db}\nhorizontal_scaling_rules:\n  g:\n    scale_up: {condition: \"avg_cpu > 70%\", action: \"add 1 replica\", max_replicas: 5}\n";
        let policy = from_yaml(yaml, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        let Backend::RdsReplicas(rds) = &policy.targets["db"].backend else {
            panic!("not an rds_replicas backend")
        };
        assert_eq!(
            rds,
            &RdsReplicasBackend {
                region: "us-east-1".into(),
                primary: "orders-db".into(),
                endpoint_url: None,
                instance_class: None,
                drain_secs: DEFAULT_DRAIN_SECS,
                connection_pool: None,
                max_replica_lag: None,
            }
        );
        assert_eq!(rds.replica_id(3), "orders-db-replica-3");
        let full = yaml.replace(
            "primary: orders-db}",
            "primary: orders-db, endpoint_url: \"http://127.0.0.1:5000\", instance_class: db.r6g.large, drain_secs: \"2 minutes\"}",
        );
        let policy = from_yaml(&full, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        let Backend::RdsReplicas(rds) = &policy.targets["db"].backend else {
            panic!("not an rds_replicas backend")
        };
        assert_eq!(rds.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(rds.instance_class.as_deref(), Some("db.r6g.large"));
        assert_eq!(rds.drain_secs, 120);
        let zero = yaml.replace("primary: orders-db}", "primary: orders-db, drain_secs: 0}");
        let policy = from_yaml(&zero, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(&policy.targets["db"].backend, Backend::RdsReplicas(r) if r.drain_secs == 0)
        );
    }

    #[test]
    fn emergency_settings_are_checked_with_their_paths() {
        let base = "emergency: {hold_down_secs: 600}\ngroups: {front: [web]}\ntargets:\n  web:\n    rules: [g]\n    min: 2\n    max: 10\n    role: api\n    baseline: 4\n    backend: {sim: {initial: 4}}\nhorizontal_scaling_rules:\n  g:\n    scale_up: {condition: \"avg_cpu > 70%\", action: \"add 1 instance\"}\n";
        let policy = from_yaml(base, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        let web = &policy.targets["web"].emergency;
        assert_eq!(
            (web.hold_down_secs, web.floor, web.baseline),
            (600, Some(3), Some(4))
        );
        assert_eq!(policy.groups["front"], ["web"]);
        let cases = [
            (
                base.replace("role: api", "role: db"),
                "targets.web.role: expected api or worker",
            ),
            (
                base.replace("baseline: 4", "baseline: 40"),
                "targets.web.baseline: 40 is outside the target's bounds 2..=10",
            ),
            (
                base.replace("role: api", "emergency_floor: 1"),
                "targets.web.emergency_floor: 1 is outside the target's bounds 2..=10",
            ),
            (
                base.replace("[web]}", "[web, wbe]}"),
                "groups.front[1]: unknown target \"wbe\"; targets: web",
            ),
            (
                base.replace("front: [web]", "web: [web]"),
                "groups.web: \"web\" already names a target",
            ),
            (
                base.replace("front: [web]", "all: [web]"),
                "groups.all: \"all\" already names every target",
            ),
            (
                base.replace(
                    "hold_down_secs: 600",
                    "hold_down_secs: 600, drain_timeout_secs: 900",
                ),
                "emergency.drain_timeout_secs: expected at most 300 seconds",
            ),
            (
                base.replace("hold_down_secs: 600", "hold_down_sec: 600"),
                "emergency.hold_down_sec: unknown field; did you mean `hold_down_secs`?",
            ),
        ];
        for (yaml, expected) in cases {
            let found = problems(&yaml);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "missing {expected:?} in {found:#?}"
            );
        }
        // A role's floor below the target's min is the min.
        let low = from_yaml(&base.replace("min: 2", "min: 4"), "p.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(low.targets["web"].emergency.floor, Some(4));
    }

    #[test]
    fn a_bad_rds_replica_set_lists_every_problem() {
        let base = "targets:\n  db:\n    rules: [g]\n    backend:\n      rds_replicas: {region: us-east-1, primary: orders-db}\nhorizontal_scaling_rules:\n  g:\n    scale_up: {condition: \"avg_cpu > 70%\", action: \"add 1 replica\", max_replicas: 5}\n";
        let path = "targets.db.backend.rds_replicas";
        let long = "a".repeat(53);
        let cases: Vec<(String, Vec<String>)> = vec![
            (
                base.replace("{region: us-east-1, primary: orders-db}", "{}"),
                vec![
                    format!("{path}.region: required"),
                    format!("{path}.primary: required"),
                ],
            ),
            (
                // Unknown keys and bad values, all at once.
                base.replace(
                    "primary: orders-db}",
                    "primary: 9db, drain_sec: 5, drain_secs: soon, instance_class: \"\"}",
                ),
                vec![
                    format!("{path}.drain_sec: unknown field; did you mean `drain_secs`?"),
                    format!(
                        "{path}.primary: \"9db\" is not an RDS instance identifier: must start with a letter"
                    ),
                    format!("{path}.instance_class: expected a non-empty string"),
                    format!("{path}.drain_secs: "),
                ],
            ),
            (
                base.replace("primary: orders-db", "primary: orders_db"),
                vec![format!(
                    "{path}.primary: \"orders_db\" is not an RDS instance identifier: '_' is not allowed"
                )],
            ),
            (
                base.replace("primary: orders-db", "primary: orders--db"),
                vec![format!(
                    "{path}.primary: \"orders--db\" is not an RDS instance identifier: must not end"
                )],
            ),
            (
                base.replace("primary: orders-db", &format!("primary: {long}")),
                vec![format!(
                    "{path}.primary: \"{long}\" is not an RDS instance identifier: too long"
                )],
            ),
            (
                base.replace(
                    "primary: orders-db}",
                    "primary: orders-db, drain_secs: 901}",
                ),
                vec![format!(
                    "{path}.drain_secs: expected at most 900 seconds, found 901"
                )],
            ),
            (
                base.replace("max_replicas: 5", "max_replicas: 16"),
                vec![
                    "targets.db.max: max 16 is above the 15 read replicas RDS allows one primary"
                        .into(),
                ],
            ),
            (
                base.replace(
                    "{region: us-east-1, primary: orders-db}",
                    "{region: us-east-1, primary: orders-db}\n      sim: {initial: 1}",
                ),
                vec![
                    "targets.db.backend: expected exactly one of `ecs`, `rds_replicas`, `rds_instance` or `sim`"
                        .into(),
                ],
            ),
        ];
        for (yaml, want) in cases {
            let got = problems(&yaml);
            for w in &want {
                assert!(
                    got.iter().any(|g| g.starts_with(w.as_str())),
                    "missing {w:?} in {got:#?}"
                );
            }
            assert_eq!(got.len(), want.len(), "{got:#?}");
        }
        // The longest primary that leaves room for two-digit replica numbers loads.
        let longest = "a".repeat(52);
        assert!(
            problems(&base.replace("primary: orders-db", &format!("primary: {longest}")))
                .is_empty()
        );
    }
}
