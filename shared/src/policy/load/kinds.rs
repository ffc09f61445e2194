//! The two rule sections beside the runbook's horizontal rules:
//! `target_tracking_rules` (HPA-style) and `vertical_scaling_rules` (tier
//! ladders, as the runbook writes them). Same walker, same rule: every
//! problem is collected with its path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Walker, join, kind_of, show, with_bounds};
use crate::policy::rule_text::split_aggregation;
use crate::policy::{Aggregation, ThresholdRule, TierStep, TrackingRule};
use crate::tracking::{
    Behavior, HPA_SYNC_SECS, HPA_TOLERANCE, PolicyKind, RatePolicy, ScalingRules, SelectPolicy,
};
use crate::units::{self, Unit};
use crate::wire::{Direction, ScaleAction};

const TRACKING_KEYS: &[&str] = &[
    "metric",
    "target",
    "tolerance",
    "interval",
    "cooldown",
    "behavior",
];
const DIRECTION_KEYS: &[&str] = &["stabilization_window", "select_policy", "policies"];
const POLICY_KEYS: &[&str] = &["type", "value", "period"];
const VERTICAL_KEYS: &[&str] = &["trigger", "action", "options", "cooldown"];
/// A resize replaces instances, which takes minutes (an RDS class change
/// far longer), so a vertical rule rests longer than a horizontal one.
pub(super) const DEFAULT_VERTICAL_COOLDOWN_SECS: u64 = 1800;

/// A vertical rule: its trigger as a threshold rule, and its ladder.
pub(super) type VerticalRule = (ThresholdRule, Vec<TierStep>);

impl Walker {
    /// `target_tracking_rules`: name to rule (`None` when it has problems).
    pub(super) fn tracking_rules(
        &mut self,
        value: &Value,
        units: &BTreeMap<String, Unit>,
    ) -> BTreeMap<String, Option<TrackingRule>> {
        let section = "target_tracking_rules";
        let Some(map) = value.as_object() else {
            self.problem(
                section,
                format!("expected a map of rule names, found {}", kind_of(value)),
            );
            return BTreeMap::new();
        };
        map.iter()
            .map(|(name, spec)| {
                let path = join(section, name);
                (name.clone(), self.tracking_rule(name, spec, &path, units))
            })
            .collect()
    }

    fn tracking_rule(
        &mut self,
        name: &str,
        value: &Value,
        path: &str,
        units: &BTreeMap<String, Unit>,
    ) -> Option<TrackingRule> {
        let problems_before = self.problems.len();
        let map = self.map(value, path, &with_bounds(TRACKING_KEYS))?;
        let metric_path = join(path, "metric");
        let metric = match map.get("metric") {
            None => {
                self.problem(&metric_path, "required, e.g. avg_cpu");
                None
            }
            Some(v) => self.string(v, &metric_path).and_then(|text| {
                let text = text.trim();
                if text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    // Tracking keeps an average near its target, as the HPA
                    // does, unless the name asks for another aggregation.
                    let (aggregation, metric) = match split_aggregation(text) {
                        (_, metric) if metric == text => (Aggregation::Avg, metric),
                        split => split,
                    };
                    Some((aggregation, metric.to_string()))
                } else {
                    self.problem(
                        &metric_path,
                        format!("expected a metric name such as avg_cpu, found {text:?}"),
                    );
                    None
                }
            }),
        };
        let target_path = join(path, "target");
        let target = match (map.get("target"), &metric) {
            (None, _) => {
                self.problem(
                    &target_path,
                    "required: the value to keep the metric at, e.g. 60%",
                );
                None
            }
            (Some(v), metric) => {
                let written = match v {
                    Value::Number(n) => n.as_f64().map(|x| (x, None)),
                    Value::String(s) => units::parse_quantity(s)
                        .map_err(|e| self.problem(&target_path, e.to_string()))
                        .ok(),
                    other => {
                        self.problem(
                            &target_path,
                            format!(
                                "expected a number or a quantity such as 60%, found {}",
                                kind_of(other)
                            ),
                        );
                        None
                    }
                };
                written.and_then(|(value, unit)| {
                    let unit = unit
                        .or_else(|| metric.as_ref().and_then(|(_, m)| units.get(m).copied()))
                        .unwrap_or(Unit::Count);
                    let canonical = unit.to_canonical(value);
                    if canonical > 0.0 {
                        Some((canonical, unit))
                    } else {
                        self.problem(
                            &target_path,
                            format!("expected a target above 0, found {}", show(v)),
                        );
                        None
                    }
                })
            }
        };
        let tolerance = match map.get("tolerance") {
            None => Some(HPA_TOLERANCE),
            Some(v) => match v.as_f64() {
                Some(t) if (0.0..1.0).contains(&t) => Some(t),
                _ => {
                    self.problem(
                        &join(path, "tolerance"),
                        format!(
                            "expected a fraction from 0 to below 1 (0.1 is 10 %), found {}",
                            show(v)
                        ),
                    );
                    None
                }
            },
        };
        let interval_secs = match map.get("interval") {
            None => Some(HPA_SYNC_SECS),
            Some(v) => self.secs(v, &join(path, "interval")).and_then(|secs| {
                if secs == 0 {
                    self.problem(&join(path, "interval"), "expected at least 1 second");
                    None
                } else {
                    Some(secs)
                }
            }),
        };
        let cooldown_secs = match map.get("cooldown") {
            None => Some(0),
            Some(v) => self.secs(v, &join(path, "cooldown")),
        };
        let behavior = match map.get("behavior") {
            None => Some(Behavior::default()),
            Some(v) => self.behavior(v, &join(path, "behavior")),
        };
        let (min, max) = self.rule_bounds(map, path);
        if self.problems.len() > problems_before {
            return None;
        }
        let (aggregation, metric) = metric?;
        let (target, unit) = target?;
        let dimension = unit.dimension();
        Some(TrackingRule {
            name: name.to_string(),
            text: format!(
                "{}_{metric} at {}",
                aggregation.as_str(),
                dimension.format(target)
            ),
            aggregation,
            metric,
            target,
            dimension,
            tolerance: tolerance?,
            interval_secs: interval_secs?,
            behavior: behavior?,
            cooldown_secs: cooldown_secs?,
            min,
            max,
        })
    }

    /// A `behavior` block; a direction or field left out keeps the HPA default.
    fn behavior(&mut self, value: &Value, path: &str) -> Option<Behavior> {
        let map = self.map(value, path, &["scale_up", "scale_down"])?;
        let defaults = Behavior::default();
        let scale_up = match map.get("scale_up") {
            None => Some(defaults.scale_up),
            Some(v) => self.scaling_rules(v, &join(path, "scale_up"), defaults.scale_up),
        };
        let scale_down = match map.get("scale_down") {
            None => Some(defaults.scale_down),
            Some(v) => self.scaling_rules(v, &join(path, "scale_down"), defaults.scale_down),
        };
        Some(Behavior {
            scale_up: scale_up?,
            scale_down: scale_down?,
        })
    }

    fn scaling_rules(
        &mut self,
        value: &Value,
        path: &str,
        default: ScalingRules,
    ) -> Option<ScalingRules> {
        let map = self.map(value, path, DIRECTION_KEYS)?;
        let window = match map.get("stabilization_window") {
            None => Some(default.stabilization_window_secs),
            Some(v) => self.secs(v, &join(path, "stabilization_window")),
        };
        let select = match map.get("select_policy") {
            None => Some(default.select),
            Some(v) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("max") => Some(SelectPolicy::Max),
                Some("min") => Some(SelectPolicy::Min),
                Some("disabled") => Some(SelectPolicy::Disabled),
                _ => {
                    self.problem(
                        &join(path, "select_policy"),
                        format!("expected max, min or disabled, found {}", show(v)),
                    );
                    None
                }
            },
        };
        let policies = match map.get("policies") {
            None => Some(default.policies),
            Some(Value::Array(items)) => {
                let parsed: Vec<Option<RatePolicy>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.rate_policy(item, &format!("{}[{i}]", join(path, "policies")))
                    })
                    .collect();
                parsed.into_iter().collect()
            }
            Some(other) => {
                self.problem(
                    &join(path, "policies"),
                    format!(
                        "expected a list of {{type, value, period}}, found {}",
                        kind_of(other)
                    ),
                );
                None
            }
        };
        Some(ScalingRules {
            stabilization_window_secs: window?,
            select: select?,
            policies: policies?,
        })
    }

    fn rate_policy(&mut self, value: &Value, path: &str) -> Option<RatePolicy> {
        let map = self.map(value, path, POLICY_KEYS)?;
        let kind = match map.get("type") {
            None => {
                self.problem(&join(path, "type"), "required: pods or percent");
                None
            }
            Some(v) => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("pods") => Some(PolicyKind::Pods),
                Some("percent") => Some(PolicyKind::Percent),
                _ => {
                    self.problem(
                        &join(path, "type"),
                        format!("expected pods or percent, found {}", show(v)),
                    );
                    None
                }
            },
        };
        let value = self.required_count(map, path, "value");
        let period = match map.get("period") {
            None => {
                self.problem(&join(path, "period"), "required: seconds, e.g. 15");
                None
            }
            Some(v) => self.secs(v, &join(path, "period")),
        };
        if value == Some(0) || period == Some(0) {
            self.problem(path, "a policy allowing 0, or over 0 seconds, allows nothing; use select_policy: disabled");
            return None;
        }
        Some(RatePolicy {
            kind: kind?,
            value: value?,
            period_secs: period?,
        })
    }

    fn required_count(&mut self, map: &Map<String, Value>, path: &str, key: &str) -> Option<u32> {
        match map.get(key) {
            Some(v) => self.count(v, &join(path, key)),
            None => {
                self.problem(&join(path, key), "required");
                None
            }
        }
    }

    /// `vertical_scaling_rules`: `<category>.<rule>` to rule and ladder
    /// (`None` when it has problems).
    pub(super) fn vertical_rules(
        &mut self,
        value: &Value,
        units: &BTreeMap<String, Unit>,
    ) -> BTreeMap<String, Option<VerticalRule>> {
        let section = "vertical_scaling_rules";
        let mut rules = BTreeMap::new();
        let Some(categories) = value.as_object() else {
            self.problem(
                section,
                format!(
                    "expected a map of categories (e.g. instance_resize), found {}",
                    kind_of(value)
                ),
            );
            return rules;
        };
        for (category, spec) in categories {
            let path = join(section, category);
            let Some(map) = spec.as_object() else {
                self.problem(
                    &path,
                    format!(
                        "expected a map of rules (e.g. cpu_intensive), found {}",
                        kind_of(spec)
                    ),
                );
                continue;
            };
            for (name, spec) in map {
                let full = format!("{category}.{name}");
                let rule = self.vertical_rule(&full, spec, &join(&path, name), units);
                rules.insert(full, rule);
            }
        }
        rules
    }

    fn vertical_rule(
        &mut self,
        name: &str,
        value: &Value,
        path: &str,
        units: &BTreeMap<String, Unit>,
    ) -> Option<VerticalRule> {
        let problems_before = self.problems.len();
        let map = self.map(value, path, VERTICAL_KEYS)?;
        let condition = self.condition(
            map,
            path,
            "trigger",
            "cpu_credits < 20 for 5 minutes",
            units,
        );
        // The action is the operator's wording; what it does is the ladder's next step.
        if let Some(v) = map.get("action")
            && let Some(text) = self.string(v, &join(path, "action"))
            && !["upgrade", "raise"]
                .iter()
                .any(|verb| text.trim_start().to_ascii_lowercase().starts_with(verb))
        {
            self.problem(
                &join(path, "action"),
                format!("expected an upgrade along the options, e.g. \"upgrade to next CPU-optimized tier\" or \"raise max_connections\", found {text:?}"),
            );
        }
        let cooldown_secs = match map.get("cooldown") {
            None => Some(DEFAULT_VERTICAL_COOLDOWN_SECS),
            Some(v) => self.secs(v, &join(path, "cooldown")),
        };
        let ladder = match map.get("options") {
            None => {
                self.problem(
                    &join(path, "options"),
                    "required: a list of {from, to} tier steps",
                );
                None
            }
            Some(v) => self.ladder(v, &join(path, "options")),
        };
        if self.problems.len() > problems_before {
            return None;
        }
        let rule = ThresholdRule {
            name: name.to_string(),
            direction: Direction::Up,
            condition: condition?,
            action: ScaleAction::NextTier,
            cooldown_secs: cooldown_secs?,
            min: None,
            max: None,
        };
        Some((rule, ladder?))
    }

    /// The `options` list: each tier has at most one next tier, and
    /// following the steps never comes back to a tier (no cycles).
    fn ladder(&mut self, value: &Value, path: &str) -> Option<Vec<TierStep>> {
        let Value::Array(items) = value else {
            self.problem(
                path,
                format!("expected a list of {{from, to}}, found {}", kind_of(value)),
            );
            return None;
        };
        if items.is_empty() {
            self.problem(path, "expected at least one {from, to} step");
            return None;
        }
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Some(map) = self.map(item, &item_path, &["from", "to"]) else {
                continue;
            };
            let tier = |walker: &mut Self, key: &str| match map.get(key) {
                // A parameter's value (an rds_parameter ladder: 500 -> 1000).
                Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
                Some(v) => walker
                    .string(v, &join(&item_path, key))
                    .map(|s| s.trim().to_string()),
                None => {
                    walker.problem(
                        &join(&item_path, key),
                        "required: an instance tier such as c5.large",
                    );
                    None
                }
            };
            let (Some(from), Some(to)) = (tier(self, "from"), tier(self, "to")) else {
                continue;
            };
            if from == to {
                self.problem(
                    &item_path,
                    format!("a step from {from} to itself changes nothing"),
                );
            } else if let Some(j) = steps.iter().position(|s: &TierStep| s.from == from) {
                self.problem(
                    &item_path,
                    format!(
                        "{from} already steps to {} at {path}[{j}]; a tier has one next tier",
                        steps[j].to
                    ),
                );
            } else {
                steps.push(TierStep { from, to });
            }
        }
        for start in &steps {
            let mut tier = &start.to;
            for _ in 0..=steps.len() {
                match steps.iter().find(|s| &s.from == tier) {
                    Some(next) if next.to == start.from => {
                        self.problem(
                            path,
                            format!("the steps go round in a circle through {}", start.from),
                        );
                        return None;
                    }
                    Some(next) => tier = &next.to,
                    None => break,
                }
            }
        }
        Some(steps)
    }
}
