//! Event-time rule evaluation: "condition for duration".
//!
//! Semantics (the README repeats them for operators):
//! - Time is the samples' event time (`ts`); the wall clock is used only to
//!   reject samples stamped too far in the future.
//! - Each (target, metric) keeps the latest value per instance. A rule's
//!   aggregate (avg, max, min, sum) is taken over the instances whose latest
//!   sample is younger than `staleness_secs` at the newest event time; older
//!   instances expire.
//! - A condition "holds for D" once it has been true on every evaluation for
//!   D seconds of event time without a gap longer than `staleness_secs`.
//! - While it keeps holding, the rule fires again every `max(D, refire_secs)`.
//! - A sample older than its instance's latest value, or equal to it, changes
//!   nothing (out of order or duplicate); the clock never moves backwards.
//!
//! - A target tracking rule recommends a capacity once per `interval` of
//!   event time, from the aggregate and the target's current capacity, and
//!   fires when its stabilized recommendation differs from that capacity
//!   (see [`crate::tracking`]).
//! - Vertical firings travel in triggers of their own, apart from the
//!   horizontal ones of the same instant.
//! - Up beats down whatever order a target's metrics arrive in: a trigger of
//!   only scale-downs at the target's newest event time `t` is held back
//!   until a sample of the target with a later `ts` arrives (any metric),
//!   and an up firing of `t` arriving meanwhile joins it, so the arbiter
//!   decides both in one trigger. A held trigger whose target falls silent
//!   is published once it has waited a wall-clock grace
//!   ([`DEFAULT_DOWN_GRACE_MS`]), through [`Evaluator::flush_held`], which
//!   the caller invokes with its clock. Up firings are never delayed. The
//!   rules are in `evaluate/hold.rs`.
//!
//! The same sample stream therefore yields the same triggers whether it is
//! replayed in one burst or arrives live (a trigger held at the end of the
//! stream comes out of [`Evaluator::drain_held`] or the grace).

use crate::units::secs_to_ms;
use std::collections::HashMap;

use thiserror::Error;

use crate::ids;
use crate::policy::{Aggregation, Policy, ThresholdRule, TrackingRule};
use crate::tracking::{self, Recommendations};
use crate::units::Dimension;
use crate::wire::{Direction, LoadReading, RuleFiring, Sample, ScaleAction, Trigger};

mod hold;

/// Why a sample was not evaluated.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EvalError {
    /// The sample's target is not in the policy.
    #[error("no target {0:?} in the policy")]
    UnknownTarget(String),
    /// The sample's event time is too far ahead of the receiver's clock.
    #[error(
        "sample {metric} at ts {ts} is {ahead_ms} ms ahead of the receiver's clock (limit {limit_ms} ms)"
    )]
    FromTheFuture {
        /// Metric.
        metric: String,
        /// Its event time.
        ts: i64,
        /// How far ahead.
        ahead_ms: i64,
        /// The limit.
        limit_ms: i64,
    },
    /// NaN or infinite.
    #[error("sample {metric} has a value that is not a finite number")]
    NotFinite {
        /// Metric.
        metric: String,
    },
}

/// What happened to one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleEffect {
    /// Evaluated against its rules.
    Evaluated,
    /// No rule uses this metric.
    Unused,
    /// Older than (or equal to) what its instance already reported.
    Stale,
}

struct RuleSlot {
    rule: ThresholdRule,
    /// Event time since which the condition has held.
    since: Option<i64>,
    /// Event time of the last evaluation of this rule.
    last_seen: Option<i64>,
    /// Event time this rule last fired in the current hold.
    last_fired: Option<i64>,
}

struct TrackingSlot {
    rule: TrackingRule,
    /// Raw recommendations inside the stabilization windows.
    recommendations: Recommendations,
    /// Event time of the last recommendation.
    last_recommended: Option<i64>,
}

#[derive(Default)]
struct MetricSlot {
    /// Indexes into the target's threshold rules.
    rules: Vec<usize>,
    /// Indexes into the target's tracking rules.
    tracking: Vec<usize>,
    /// Latest (instance, ts, value) per instance.
    instances: Vec<(Option<String>, i64, f64)>,
    /// Newest event time seen for this metric.
    clock: Option<i64>,
}

struct TargetSlot {
    rules: Vec<RuleSlot>,
    tracking: Vec<TrackingSlot>,
    metrics: HashMap<String, MetricSlot>,
    /// Current capacity, for `requests_per_instance` derived from `requests`.
    capacity: Option<u32>,
    /// The target's event time and the firings of its newest instant.
    instants: hold::Instants,
}

/// The metric whose rules may be fed from [`REQUESTS`] divided by capacity.
pub const REQUESTS_PER_INSTANCE: &str = "requests_per_instance";
/// Total request rate (summed over the instances that report it).
pub const REQUESTS: &str = "requests";

/// The evaluator's state for every target of a policy.
pub struct Evaluator {
    targets: HashMap<String, TargetSlot>,
    staleness_ms: i64,
    skew_ms: i64,
    refire_ms: i64,
    down_grace_ms: i64,
}

/// How long (wall clock, ms) a held-back scale-down waits for a later sample
/// of its target before it is published anyway: 2 s.
pub const DEFAULT_DOWN_GRACE_MS: u64 = 2_000;

impl Evaluator {
    /// An evaluator with empty state for every target in `policy`.
    pub fn new(policy: &Policy) -> Self {
        let targets = policy
            .targets
            .values()
            .map(|target| {
                let mut metrics: HashMap<String, MetricSlot> = HashMap::new();
                for (i, rule) in target.rules.iter().enumerate() {
                    metrics
                        .entry(rule.condition.metric.clone())
                        .or_default()
                        .rules
                        .push(i);
                }
                for (i, rule) in target.tracking.iter().enumerate() {
                    metrics
                        .entry(rule.metric.clone())
                        .or_default()
                        .tracking
                        .push(i);
                }
                if metrics.contains_key(REQUESTS_PER_INSTANCE) {
                    // Keep `requests` per instance so their sum can be divided by capacity.
                    metrics.entry(REQUESTS.to_string()).or_default();
                }
                let rules = target
                    .rules
                    .iter()
                    .map(|rule| RuleSlot {
                        rule: rule.clone(),
                        since: None,
                        last_seen: None,
                        last_fired: None,
                    })
                    .collect();
                let tracking = target
                    .tracking
                    .iter()
                    .map(|rule| TrackingSlot {
                        rule: rule.clone(),
                        recommendations: Recommendations::default(),
                        last_recommended: None,
                    })
                    .collect();
                let slot = TargetSlot {
                    rules,
                    tracking,
                    metrics,
                    capacity: None,
                    instants: hold::Instants::default(),
                };
                (target.name.clone(), slot)
            })
            .collect();
        let settings = &policy.evaluation;
        Evaluator {
            targets,
            staleness_ms: secs_to_ms(settings.staleness_secs),
            skew_ms: secs_to_ms(settings.max_future_skew_secs),
            refire_ms: secs_to_ms(settings.refire_secs),
            down_grace_ms: DEFAULT_DOWN_GRACE_MS as i64,
        }
    }

    /// Takes up a new policy, keeping what still holds:
    /// - a threshold rule the same in both (name, condition, action, bounds,
    ///   cooldown) keeps its hold: a "for 2 minutes" window in progress
    ///   goes on; a rule that is new or changed in any way starts afresh, as
    ///   if the evaluator had just started;
    /// - a tracking rule the same in both keeps its recommendations;
    /// - each metric still used by a target keeps its instances' latest
    ///   values and its clock, and each target its capacity;
    /// - targets and rules no longer in the policy are forgotten.
    ///
    /// Held-back scale-downs were computed under the old rules: they are
    /// returned, to be published before anything evaluated under the new
    /// ones (their instant is over as far as this evaluator knows, as at
    /// shutdown). The evaluation settings (staleness, skew, refire) apply
    /// from the next sample.
    pub fn reload(&mut self, policy: &Policy) -> Vec<Trigger> {
        let held = self.drain_held();
        let grace_ms = u64::try_from(self.down_grace_ms).unwrap_or(0);
        let mut next = Evaluator::new(policy).with_down_grace_ms(grace_ms);
        for (name, slot) in &mut next.targets {
            let Some(mut old) = self.targets.remove(name) else {
                continue;
            };
            slot.capacity = old.capacity;
            for rule in &mut slot.rules {
                if let Some(kept) = old.rules.iter().find(|o| o.rule == rule.rule) {
                    rule.since = kept.since;
                    rule.last_seen = kept.last_seen;
                    rule.last_fired = kept.last_fired;
                }
            }
            for rule in &mut slot.tracking {
                if let Some(i) = old.tracking.iter().position(|o| o.rule == rule.rule) {
                    let kept = old.tracking.swap_remove(i);
                    rule.recommendations = kept.recommendations;
                    rule.last_recommended = kept.last_recommended;
                }
            }
            for (metric, values) in &mut slot.metrics {
                if let Some(kept) = old.metrics.remove(metric) {
                    values.instances = kept.instances;
                    values.clock = kept.clock;
                }
            }
        }
        *self = next;
        held
    }

    /// Evaluates one sample of `target` at wall-clock `now_ms`; rules that
    /// fire at the sample's event time are appended to `firings`.
    pub fn observe(
        &mut self,
        target: &str,
        sample: &Sample,
        now_ms: i64,
        firings: &mut Vec<RuleFiring>,
    ) -> Result<SampleEffect, EvalError> {
        let slot = self
            .targets
            .get_mut(target)
            .ok_or_else(|| EvalError::UnknownTarget(target.to_string()))?;
        if !sample.value.is_finite() {
            return Err(EvalError::NotFinite {
                metric: sample.metric.clone(),
            });
        }
        let ahead_ms = sample.ts.saturating_sub(now_ms);
        if ahead_ms > self.skew_ms {
            return Err(EvalError::FromTheFuture {
                metric: sample.metric.clone(),
                ts: sample.ts,
                ahead_ms,
                limit_ms: self.skew_ms,
            });
        }
        let Some(metric) = slot.metrics.get_mut(&sample.metric) else {
            return Ok(SampleEffect::Unused);
        };
        let t = sample.ts;
        match metric
            .instances
            .iter_mut()
            .find(|(i, _, _)| *i == sample.instance)
        {
            Some((_, ts, _)) if *ts >= t => return Ok(SampleEffect::Stale),
            Some(entry) => {
                entry.1 = t;
                entry.2 = sample.value;
            }
            None => metric
                .instances
                .push((sample.instance.clone(), t, sample.value)),
        }
        if metric.clock.is_some_and(|clock| t < clock) {
            // A late sample from one instance updates that instance's value,
            // but the clock and the holds do not go back in time.
            return Ok(SampleEffect::Stale);
        }
        metric.clock = Some(t);
        let horizon = t.saturating_sub(self.staleness_ms);
        metric.instances.retain(|(_, ts, _)| *ts > horizon);
        for &i in &metric.rules {
            let rule_slot = &mut slot.rules[i];
            let value = aggregate(rule_slot.rule.condition.aggregation, &metric.instances);
            if let Some(firing) = step(rule_slot, value, t, self.staleness_ms, self.refire_ms) {
                firings.push(firing);
            }
        }
        if let Some(capacity) = slot.capacity {
            for &i in &metric.tracking {
                let tracking_slot = &mut slot.tracking[i];
                let value = aggregate(tracking_slot.rule.aggregation, &metric.instances);
                if let Some(firing) = track(tracking_slot, value, capacity, t) {
                    firings.push(firing);
                }
            }
        }
        // `requests` feeds `requests_per_instance`: the live instances' sum
        // divided by the target's capacity, as one series at this event time.
        let per_instance = (sample.metric == REQUESTS)
            .then(|| slot.capacity.filter(|c| *c > 0))
            .flatten()
            .and_then(|capacity| {
                let total = aggregate(Aggregation::Sum, &metric.instances)?;
                Some(total / f64::from(capacity))
            });
        if let Some(value) = per_instance {
            let derived = Sample {
                metric: REQUESTS_PER_INSTANCE.to_string(),
                value,
                ts: t,
                instance: None,
            };
            self.observe(target, &derived, now_ms, firings)?;
        }
        Ok(SampleEffect::Evaluated)
    }

    /// The target's scale-down conditions read against its latest samples,
    /// their durations aside: what `emergency down` checks before it sheds
    /// capacity. `None` for a target this evaluator does not have.
    pub fn scale_down_readings(&self, target: &str) -> Option<Vec<LoadReading>> {
        let slot = self.targets.get(target)?;
        let readings = slot
            .rules
            .iter()
            .filter(|r| r.rule.direction == Direction::Down)
            .map(|r| {
                let c = &r.rule.condition;
                let value = slot
                    .metrics
                    .get(&c.metric)
                    .and_then(|m| aggregate(c.aggregation, &m.instances));
                let holds = value.is_some_and(|v| c.op.holds(v, c.threshold));
                let name = format!("{}_{}", c.aggregation.as_str(), c.metric);
                let text = match value {
                    None => format!("no recent sample of {}", c.metric),
                    Some(v) => format!(
                        "{name} {} is{} {} {}",
                        c.dimension.format(v),
                        if holds { "" } else { " not" },
                        c.op.as_str(),
                        c.dimension.format(c.threshold)
                    ),
                };
                LoadReading {
                    rule: r.rule.name.clone(),
                    condition: c.text.clone(),
                    value,
                    holds,
                    text,
                }
            })
            .collect();
        Some(readings)
    }

    /// Tells the evaluator a target's current capacity, which turns its
    /// `requests` samples into `requests_per_instance`. Unknown targets are ignored.
    pub fn set_capacity(&mut self, target: &str, capacity: u32) {
        if let Some(slot) = self.targets.get_mut(target) {
            slot.capacity = Some(capacity);
        }
    }

    /// Evaluates samples for one target (one message: a batch from ingest)
    /// and groups the firings into triggers, one per event time and kind
    /// (horizontal, vertical) at which rules fired. A group of only
    /// scale-downs at the target's newest event time is held back (see the
    /// module docs): it comes out of a later call, once a later sample of
    /// the target arrives, or out of [`Evaluator::flush_held`] once it has
    /// waited the grace. `now_ms` is the wall clock, for the future-skew
    /// check and the grace. Rejected samples are returned with their index
    /// so the caller can dead-letter them.
    pub fn observe_batch(
        &mut self,
        target: &str,
        samples: &[Sample],
        now_ms: i64,
    ) -> (Vec<Trigger>, Vec<(usize, EvalError)>) {
        let mut triggers: Vec<Trigger> = Vec::new();
        let mut rejected = Vec::new();
        let mut firings = Vec::new();
        for (i, sample) in samples.iter().enumerate() {
            let result = self.observe(target, sample, now_ms, &mut firings);
            let accepted = result.is_ok();
            if let Err(e) = result {
                rejected.push((i, e));
            }
            // A rejected sample moves no clock, unless it was rejected after
            // its rules ran (a derived `requests_per_instance` that is not
            // finite): then its firings count as an accepted sample's.
            if (accepted || !firings.is_empty())
                && let Some(slot) = self.targets.get_mut(target)
            {
                slot.instants
                    .record(target, sample.ts, firings.drain(..), &mut triggers);
            }
        }
        if let Some(slot) = self.targets.get_mut(target) {
            slot.instants.end_of_message(target, now_ms, &mut triggers);
        }
        for trigger in &mut triggers {
            trigger.id = trigger_id(trigger);
        }
        (triggers, rejected)
    }

    /// The held-back scale-down triggers that have waited the grace by
    /// wall-clock `now_ms`, ordered by target and event time. The service
    /// calls it on a periodic tick, so a target whose samples stop still
    /// scales down.
    pub fn flush_held(&mut self, now_ms: i64) -> Vec<Trigger> {
        let grace_ms = self.down_grace_ms;
        self.take_held(|instants, target, out| {
            instants.flush_due(target, now_ms, grace_ms, out);
        })
    }

    /// Every held-back trigger, whatever its wait: at the end of a replay,
    /// or when the service shuts down.
    pub fn drain_held(&mut self) -> Vec<Trigger> {
        self.take_held(|instants, target, out| instants.drain(target, out))
    }

    /// How many targets have a scale-down held back.
    pub fn held(&self) -> usize {
        self.targets.values().filter(|t| t.instants.holds()).count()
    }

    /// Sets how long (wall clock) a held-back scale-down waits for its
    /// instant to end before [`Evaluator::flush_held`] publishes it anyway.
    pub fn with_down_grace_ms(mut self, grace_ms: u64) -> Self {
        self.down_grace_ms = i64::try_from(grace_ms).unwrap_or(i64::MAX);
        self
    }

    fn take_held(
        &mut self,
        mut take: impl FnMut(&mut hold::Instants, &str, &mut Vec<Trigger>),
    ) -> Vec<Trigger> {
        let mut triggers = Vec::new();
        for (target, slot) in &mut self.targets {
            if slot.instants.holds() {
                take(&mut slot.instants, target, &mut triggers);
            }
        }
        triggers.sort_by(|a, b| (&a.target, a.ts).cmp(&(&b.target, b.ts)));
        for trigger in &mut triggers {
            trigger.id = trigger_id(trigger);
        }
        triggers
    }
}

/// Which targets an evaluator replica owns when evaluators scale out by
/// target: `index` of `count` partitions, by a stable hash of the target
/// name. Every target has exactly one owning partition, so two partitions
/// never evaluate (or fire for) the same target; replicas of one partition
/// evaluate the same targets and their identical triggers are de-duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    index: u64,
    count: u64,
}

impl Default for Partition {
    /// One partition owning every target.
    fn default() -> Self {
        Partition { index: 0, count: 1 }
    }
}

impl Partition {
    /// Partition `index` of `count`.
    pub fn new(index: u64, count: u64) -> Result<Self, String> {
        if count == 0 || index >= count {
            return Err(format!(
                "partition {index}/{count}: expected K/N with 0 <= K < N"
            ));
        }
        Ok(Partition { index, count })
    }

    /// True when this partition evaluates `target`.
    pub fn owns(&self, target: &str) -> bool {
        ids::fnv64(&[target.as_bytes()]) % self.count == self.index
    }
}

impl std::str::FromStr for Partition {
    type Err = String;

    /// Reads `K/N`, e.g. `0/3`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("expected a partition K/N such as 0/3, found {text:?}");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let k = k.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Partition::new(k, n)
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The deterministic id of a rule trigger: target, event time and rule names.
pub fn trigger_id(trigger: &Trigger) -> String {
    let ts = trigger.ts.to_be_bytes();
    let mut parts: Vec<&[u8]> = vec![trigger.target.as_bytes(), &ts];
    parts.extend(trigger.firings.iter().map(|f| f.rule.as_bytes()));
    ids::derive("t", &parts)
}

fn aggregate(aggregation: Aggregation, instances: &[(Option<String>, i64, f64)]) -> Option<f64> {
    let values = instances.iter().map(|(_, _, v)| *v);
    match aggregation {
        _ if instances.is_empty() => None,
        Aggregation::Avg => Some(values.sum::<f64>() / instances.len() as f64),
        Aggregation::Sum => Some(values.sum()),
        Aggregation::Max => values.reduce(f64::max),
        Aggregation::Min => values.reduce(f64::min),
    }
}

/// Advances one rule's hold to event time `t`; returns a firing if it fires.
fn step(
    slot: &mut RuleSlot,
    value: Option<f64>,
    t: i64,
    staleness_ms: i64,
    refire_ms: i64,
) -> Option<RuleFiring> {
    let condition = &slot.rule.condition;
    let gap = slot
        .last_seen
        .is_some_and(|seen| t.saturating_sub(seen) > staleness_ms);
    slot.last_seen = Some(t);
    let observed = value.filter(|v| condition.op.holds(*v, condition.threshold));
    let Some(observed) = observed else {
        slot.since = None;
        slot.last_fired = None;
        return None;
    };
    if gap {
        slot.last_fired = None;
    }
    let since = match slot.since {
        Some(since) if !gap => since,
        _ => *slot.since.insert(t),
    };
    let hold_ms = secs_to_ms(condition.for_secs);
    let held_ms = t.saturating_sub(since);
    let due = slot
        .last_fired
        .is_none_or(|fired| t.saturating_sub(fired) >= hold_ms.max(refire_ms));
    if held_ms < hold_ms || !due {
        return None;
    }
    slot.last_fired = Some(t);
    let held_secs = u64::try_from(held_ms / 1000).unwrap_or(0);
    Some(RuleFiring {
        rule: slot.rule.name.clone(),
        direction: slot.rule.direction.clone(),
        action: slot.rule.action.clone(),
        observed: Some(observed),
        threshold: Some(condition.threshold),
        condition: condition.text.clone(),
        held_secs,
        reason: firing_reason(&slot.rule, observed, held_secs),
    })
}

/// Recommends for one tracking rule at event time `t`, at most once per
/// interval; returns a firing when the stabilized recommendation differs
/// from the current capacity.
fn track(slot: &mut TrackingSlot, value: Option<f64>, capacity: u32, t: i64) -> Option<RuleFiring> {
    let rule = &slot.rule;
    let interval_ms = secs_to_ms(rule.interval_secs);
    let observed = value?;
    if slot
        .last_recommended
        .is_some_and(|last| t.saturating_sub(last) < interval_ms)
    {
        return None;
    }
    slot.last_recommended = Some(t);
    let raw = tracking::recommend(capacity, observed, rule.target, rule.tolerance);
    let stabilized = slot
        .recommendations
        .stabilize(t, raw, capacity, &rule.behavior);
    let desired = stabilized.desired;
    if desired == capacity {
        return None;
    }
    let direction = if desired > capacity {
        Direction::Up
    } else {
        Direction::Down
    };
    let dim = rule.dimension;
    let mut reason = format!(
        "{agg}_{metric} {value} against a target of {target}: {capacity} -> {raw} instances (rule {name}: \"{text}\")",
        agg = rule.aggregation.as_str(),
        metric = rule.metric,
        value = dim.format(observed),
        target = dim.format(rule.target),
        name = rule.name,
        text = rule.text,
    );
    if let Some(held) = stabilized.held_by {
        let (word, which) = match held {
            Direction::Up => ("scale-up", "lowest"),
            _ => ("scale-down", "highest"),
        };
        let window = rule.behavior.rules(held).stabilization_window_secs;
        reason.push_str(&format!(
            ", held at {desired} by the {} {word} stabilization window ({which} recommendation)",
            human_secs(window)
        ));
    }
    Some(RuleFiring {
        rule: rule.name.clone(),
        direction,
        action: ScaleAction::Set(desired),
        observed: Some(observed),
        threshold: Some(rule.target),
        condition: rule.text.clone(),
        held_secs: 0,
        reason,
    })
}

fn firing_reason(rule: &ThresholdRule, observed: f64, held_secs: u64) -> String {
    let c = &rule.condition;
    let dim: Dimension = c.dimension;
    let held = if c.for_secs == 0 {
        String::new()
    } else {
        format!(" for {}", human_secs(held_secs))
    };
    format!(
        "{agg}_{metric} {value} {op} {threshold}{held} (rule {name}: \"{text}\")",
        agg = c.aggregation.as_str(),
        metric = c.metric,
        value = dim.format(observed),
        op = c.op.as_str(),
        threshold = dim.format(c.threshold),
        name = rule.name,
        text = c.text,
    )
}

/// `90s`, `2m`, `2m30s`, `1h5m`.
pub fn human_secs(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m, s) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::from_yaml;
    use crate::wire::{Direction, ScaleAction};

    const POLICY: &str = r#"
evaluation: {staleness_secs: 30, max_future_skew_secs: 60, refire_secs: 10}
metrics: {cpu: {unit: percent}}
targets:
  web: {rules: [cpu, queue], min: 1, max: 50, backend: {sim: {initial: 2}}}
horizontal_scaling_rules:
  cpu:
    scale_up: {condition: "avg_cpu > 70% for 60 seconds", action: "add 2 instances"}
    scale_down: {condition: "max_cpu < 30% for 2 minutes", action: "remove 1 instance"}
  queue:
    scale_up: {condition: "queue_depth > 1000 messages", action: "add 5 workers"}
"#;

    fn evaluator() -> Evaluator {
        Evaluator::new(&from_yaml(POLICY, "p.yaml").unwrap())
    }

    const KINDS: &str = r#"
targets:
  web: {rules: [cpu_target, credits], max: 40, backend: {sim: {initial: 10, tier: c5.large}}}
  hot: {rules: [credits, burst], max: 40, backend: {sim: {initial: 10, tier: c5.large}}}
target_tracking_rules:
  cpu_target: {metric: avg_cpu, target: 60%, interval: 15}
horizontal_scaling_rules:
  burst:
    scale_up: {condition: "cpu_credits < 50", action: "add 1 instance"}
vertical_scaling_rules:
  instance_resize:
    credits:
      trigger: "cpu_credits < 20"
      action: "upgrade to next CPU-optimized tier"
      options: [{from: c5.large, to: c5.xlarge}]
"#;

    #[test]
    fn a_reload_keeps_the_window_of_an_unchanged_rule_and_restarts_a_changed_one() {
        // cpu.scale_up needs avg_cpu > 70% for 60 s. The cpu is at 80% from
        // 0 s, a sample every 10 s; the policy is reloaded at 30 s. (case,
        // new policy, rule watched, the second it first fires)
        let added = POLICY
            .replace("rules: [cpu, queue]", "rules: [cpu, queue, hot]")
            .replace(
                "  queue:\n",
                "  hot:\n    scale_up: {condition: \"avg_cpu > 75% for 60 seconds\", action: \"add 1 instance\"}\n  queue:\n",
            );
        let cases = [
            (
                "unchanged: the window goes on",
                POLICY.to_string(),
                "cpu.scale_up",
                Some(60),
            ),
            (
                "another rule changed: this one's window goes on",
                POLICY.replace("add 5 workers", "add 6 workers"),
                "cpu.scale_up",
                Some(60),
            ),
            (
                "its threshold changed: the window starts at the reload",
                POLICY.replace("avg_cpu > 70%", "avg_cpu > 65%"),
                "cpu.scale_up",
                Some(90),
            ),
            (
                "its action changed: the window starts at the reload",
                POLICY.replace("add 2 instances", "add 3 instances"),
                "cpu.scale_up",
                Some(90),
            ),
            (
                "a rule added: its window starts at the reload",
                added.clone(),
                "hot.scale_up",
                Some(90),
            ),
            (
                "the added rule's neighbour goes on",
                added,
                "cpu.scale_up",
                Some(60),
            ),
            (
                "unbound: it never fires",
                POLICY.replace("rules: [cpu, queue]", "rules: [queue]"),
                "cpu.scale_up",
                None,
            ),
        ];
        for (name, new, rule, fires_at) in cases {
            let mut ev = evaluator();
            let mut first = None;
            for secs in (0..=120).step_by(10) {
                if secs == 30 {
                    let held = ev.reload(&from_yaml(&new, "p.yaml").unwrap());
                    assert!(held.is_empty(), "{name}: nothing was held");
                }
                let mut firings = Vec::new();
                let cpu = sample("cpu", secs, 0.8, Some("a"));
                ev.observe("web", &cpu, secs * 1000, &mut firings).unwrap();
                if first.is_none() && firings.iter().any(|f| f.rule == rule) {
                    first = Some(secs);
                }
            }
            assert_eq!(first, fires_at, "{name}");
        }
    }

    #[test]
    fn a_reload_keeps_the_instances_and_hands_back_held_downs() {
        let at_once = POLICY.replace("max_cpu < 30% for 2 minutes", "avg_cpu < 7% for 0 seconds");
        // A scale-down held back at the newest instant is handed back.
        let mut ev = Evaluator::new(&from_yaml(&at_once, "p.yaml").unwrap());
        let (now, _) = ev.observe_batch("web", &[sample("cpu", 5, 0.05, Some("a"))], 5000);
        assert!(now.is_empty() && ev.held() == 1, "a down is held: {now:?}");
        let back = ev.reload(&from_yaml(POLICY, "p.yaml").unwrap());
        assert_eq!(back.len(), 1, "{back:?}");
        assert_eq!(back[0].firings[0].rule, "cpu.scale_down");
        assert_eq!(ev.held(), 0);
        // Two instances before the reload, an average rule after it: both count.
        let mut ev = evaluator();
        ev.observe_batch("web", &[sample("cpu", 0, 0.05, Some("a"))], 0);
        ev.observe_batch("web", &[sample("cpu", 1, 0.10, Some("b"))], 1000);
        assert!(
            ev.reload(&from_yaml(&at_once, "p.yaml").unwrap())
                .is_empty()
        );
        ev.observe_batch("web", &[sample("cpu", 3, 0.05, Some("a"))], 3000);
        assert_eq!(ev.held(), 0, "b's 10% keeps the average at 7.5%");
        ev.observe_batch("web", &[sample("cpu", 4, 0.06, Some("b"))], 4000);
        assert_eq!(ev.held(), 1, "the average of 5% and 6% is below 7%");
    }

    #[test]
    fn tracking_recommends_once_per_interval_and_stabilizes_downs() {
        let mut ev = Evaluator::new(&from_yaml(KINDS, "p.yaml").unwrap());
        // (secs, avg cpu, capacity, expected firing)
        let feed: &[(i64, f64, u32, Option<(Direction, u32)>)] = &[
            (0, 0.62, 10, None),                       // within the tolerance
            (5, 0.90, 10, None),                       // inside the 15 s interval
            (15, 0.90, 10, Some((Direction::Up, 15))), // ceil(10 * 1.5)
            (30, 0.60, 15, None),                      // on target
            (45, 0.30, 15, None),                      // 8 asked, held by the 15 of 30 s
            (200, 0.30, 15, None),                     // still inside 300 s of the 15
            (316, 0.30, 15, None), // the 15 made at 30 s (on target) is in the window
            (331, 0.30, 15, Some((Direction::Down, 8))),
        ];
        for (secs, cpu, capacity, want) in feed.iter().cloned() {
            ev.set_capacity("web", capacity);
            let mut firings = Vec::new();
            ev.observe(
                "web",
                &sample("cpu", secs, cpu, Some("a")),
                secs * 1000,
                &mut firings,
            )
            .unwrap();
            let got = firings.first().map(|f| match &f.action {
                ScaleAction::Set(n) => (f.direction.clone(), *n),
                other => panic!("unexpected action {other:?}"),
            });
            assert_eq!(got, want, "at {secs}s: {firings:?}");
            if let Some(f) = firings.first() {
                assert!(f.reason.contains("against a target of 60%"), "{}", f.reason);
            }
        }
    }

    #[test]
    fn a_tracking_rule_waits_for_the_capacity() {
        let mut ev = Evaluator::new(&from_yaml(KINDS, "p.yaml").unwrap());
        let mut firings = Vec::new();
        ev.observe("web", &sample("cpu", 0, 0.99, Some("a")), 0, &mut firings)
            .unwrap();
        assert!(firings.is_empty(), "{firings:?}");
    }

    #[test]
    fn vertical_firings_travel_apart_from_horizontal_ones() {
        let mut ev = Evaluator::new(&from_yaml(KINDS, "p.yaml").unwrap());
        let (triggers, rejected) =
            ev.observe_batch("hot", &[sample("cpu_credits", 10, 5.0, None)], 10_000);
        assert!(rejected.is_empty());
        let kinds: Vec<Vec<ScaleAction>> = triggers
            .iter()
            .map(|t| t.firings.iter().map(|f| f.action.clone()).collect())
            .collect();
        assert_eq!(
            kinds,
            vec![vec![ScaleAction::Add(1)], vec![ScaleAction::NextTier]]
        );
        assert_ne!(triggers[0].id, triggers[1].id);
        assert_eq!(triggers[1].firings[0].rule, "instance_resize.credits");
    }

    fn sample(metric: &str, secs: i64, value: f64, instance: Option<&str>) -> Sample {
        Sample {
            metric: metric.into(),
            value,
            ts: secs * 1000,
            instance: instance.map(Into::into),
        }
    }

    /// Feeds (secs, instance, value) cpu samples; returns (secs, rule) of each firing.
    fn run(feed: &[(i64, Option<&str>, f64)]) -> Vec<(i64, String)> {
        let mut ev = evaluator();
        let mut out = Vec::new();
        for (secs, instance, value) in feed {
            let mut firings = Vec::new();
            ev.observe(
                "web",
                &sample("cpu", *secs, *value, *instance),
                i64::MAX / 2,
                &mut firings,
            )
            .unwrap();
            out.extend(firings.into_iter().map(|f| (*secs, f.rule)));
        }
        out
    }

    fn every(from: i64, to: i64, step: i64, value: f64) -> Vec<(i64, Option<&'static str>, f64)> {
        (from..=to)
            .step_by(step as usize)
            .map(|s| (s, None, value))
            .collect()
    }

    #[test]
    fn condition_for_duration_table() {
        let up = "cpu.scale_up".to_string();
        let down = "cpu.scale_down".to_string();
        type Feed<'a> = Vec<(i64, Option<&'a str>, f64)>;
        let cases: Vec<(&str, Feed, Vec<(i64, String)>)> = vec![
            (
                "fires once held for 60s",
                every(0, 60, 10, 0.9),
                vec![(60, up.clone())],
            ),
            ("not before 60s", every(0, 50, 10, 0.9), vec![]),
            (
                "at the threshold does not hold",
                every(0, 90, 10, 0.7),
                vec![],
            ),
            (
                "refires every max(D, refire) while holding",
                every(0, 180, 10, 0.9),
                vec![(60, up.clone()), (120, up.clone()), (180, up.clone())],
            ),
            (
                "a dip resets the hold",
                [
                    every(0, 50, 10, 0.9),
                    vec![(55, None, 0.5)],
                    every(60, 110, 10, 0.9),
                ]
                .concat(),
                vec![],
            ),
            (
                "a gap longer than staleness breaks the hold",
                [every(0, 30, 10, 0.9), every(70, 120, 10, 0.9)].concat(),
                vec![],
            ),
            (
                "a gap within staleness keeps it",
                [every(0, 30, 10, 0.9), every(55, 60, 5, 0.9)].concat(),
                vec![(60, up.clone())],
            ),
            (
                "scale down after 2 minutes low",
                every(0, 120, 20, 0.1),
                vec![(120, down.clone())],
            ),
        ];
        for (name, feed, want) in cases {
            assert_eq!(run(&feed), want, "{name}");
        }
    }

    #[test]
    fn aggregates_across_instances_and_expires_stale_ones() {
        // a at 90% and b at 40%: avg 65% does not hold; max 90% blocks the down rule.
        let mut feed = Vec::new();
        for s in (0..=120).step_by(10) {
            feed.push((s, Some("a"), 0.9));
            feed.push((s, Some("b"), 0.4));
        }
        assert_eq!(run(&feed), vec![]);
        // b stops reporting at 0s: after 30s of staleness only a counts, avg 90%.
        let mut feed = vec![(0, Some("b"), 0.1)];
        feed.extend((0..=100).step_by(10).map(|s| (s, Some("a"), 0.9)));
        assert_eq!(
            run(&feed),
            vec![(90, "cpu.scale_up".to_string())],
            "hold starts once b expires at 30+"
        );
    }

    #[test]
    fn scale_down_conditions_are_read_against_the_latest_samples_without_their_duration() {
        // The down rule is "max_cpu < 30% for 2 minutes"; its duration does
        // not matter to the reading, the aggregation does.
        let cases: Vec<(Vec<(Option<&str>, f64)>, Option<f64>, bool, &str)> = vec![
            (vec![], None, false, "no recent sample of cpu"),
            (
                vec![(Some("a"), 0.1), (Some("b"), 0.2)],
                Some(0.2),
                true,
                "max_cpu 20% is < 30%",
            ),
            (
                vec![(Some("a"), 0.1), (Some("b"), 0.5)],
                Some(0.5),
                false,
                "max_cpu 50% is not < 30%",
            ),
        ];
        for (instances, value, holds, text) in cases {
            let mut ev = evaluator();
            let mut firings = Vec::new();
            for (instance, v) in &instances {
                ev.observe(
                    "web",
                    &sample("cpu", 10, *v, *instance),
                    100_000,
                    &mut firings,
                )
                .expect("observed");
            }
            let readings = ev.scale_down_readings("web").expect("web is known");
            assert_eq!(readings.len(), 1, "one scale-down rule");
            let r = &readings[0];
            assert_eq!(
                (r.rule.as_str(), r.value, r.holds, r.text.as_str()),
                ("cpu.scale_down", value, holds, text)
            );
        }
        assert_eq!(evaluator().scale_down_readings("nope"), None);
    }

    #[test]
    fn out_of_order_and_duplicate_samples_change_nothing() {
        let mut feed = every(0, 60, 10, 0.9);
        feed.insert(4, (30, None, 0.1)); // same ts as the instance's latest: a duplicate
        feed.insert(6, (5, None, 0.1)); // late
        assert_eq!(run(&feed), vec![(60, "cpu.scale_up".to_string())]);
    }

    #[test]
    fn rejects_future_samples_unknown_targets_and_nan() {
        let mut ev = evaluator();
        let mut f = Vec::new();
        let now = 1_000_000;
        let future = Sample {
            ts: now + 61_000,
            ..sample("cpu", 0, 0.5, None)
        };
        assert!(matches!(
            ev.observe("web", &future, now, &mut f),
            Err(EvalError::FromTheFuture {
                ahead_ms: 61_000,
                ..
            })
        ));
        let soon = Sample {
            ts: now + 59_000,
            ..future.clone()
        };
        assert_eq!(
            ev.observe("web", &soon, now, &mut f),
            Ok(SampleEffect::Evaluated)
        );
        assert!(matches!(
            ev.observe("nope", &soon, now, &mut f),
            Err(EvalError::UnknownTarget(_))
        ));
        let nan = Sample {
            value: f64::NAN,
            ..soon.clone()
        };
        assert!(matches!(
            ev.observe("web", &nan, now, &mut f),
            Err(EvalError::NotFinite { .. })
        ));
        assert_eq!(
            ev.observe("web", &sample("disk", 1, 1.0, None), now, &mut f),
            Ok(SampleEffect::Unused)
        );
    }

    #[test]
    fn batch_groups_firings_by_instant_with_stable_ids_and_reasons() {
        let samples = vec![
            sample("queue_depth", 10, 1500.0, None),
            sample("queue_depth", 11, 900.0, None),
        ];
        let (a, rejected) = evaluator().observe_batch("web", &samples, i64::MAX / 2);
        let (b, _) = evaluator().observe_batch("web", &samples, i64::MAX / 2);
        assert!(rejected.is_empty());
        assert_eq!(a, b, "same input, same triggers and ids");
        assert_eq!(a.len(), 1);
        let firing = &a[0].firings[0];
        assert_eq!(
            (&firing.direction, &firing.action),
            (&Direction::Up, &ScaleAction::Add(5))
        );
        assert_eq!(
            firing.reason,
            "max_queue_depth 1500 > 1000 (rule queue.scale_up: \"queue_depth > 1000 messages\")"
        );
        assert!(a[0].id.starts_with("t-"));
    }

    #[test]
    fn replay_in_one_burst_equals_live() {
        let feed: Vec<Sample> = (0..600)
            .map(|s| sample("cpu", s, if (s / 100) % 2 == 0 { 0.95 } else { 0.05 }, None))
            .collect();
        let (burst, _) = evaluator().observe_batch("web", &feed, i64::MAX / 2);
        let mut live = evaluator();
        let mut one_by_one = Vec::new();
        for s in &feed {
            one_by_one.extend(live.observe_batch("web", std::slice::from_ref(s), s.ts).0);
        }
        assert_eq!(burst, one_by_one);
        assert!(!burst.is_empty());
    }

    #[test]
    fn requests_per_instance_is_total_requests_over_capacity() {
        let policy = from_yaml(
            "targets:\n  api: {rules: [r], max: 50, backend: {sim: {initial: 5}}}\n\
             horizontal_scaling_rules:\n  r:\n    scale_up: {condition: \"requests_per_instance > 1000 for 1 minute\", action: \"add 3 instances\"}\n",
            "p.yaml",
        )
        .unwrap();
        let feed = |ev: &mut Evaluator| {
            let mut fired = Vec::new();
            for secs in (0..=70).step_by(10) {
                for (instance, rate) in [("lb-a", 3500.0), ("lb-b", 2500.0)] {
                    let sample = Sample {
                        metric: "requests".into(),
                        value: rate,
                        ts: secs * 1000,
                        instance: Some(instance.into()),
                    };
                    ev.observe("api", &sample, i64::MAX / 2, &mut fired)
                        .unwrap();
                }
            }
            fired
        };
        let mut unknown = Evaluator::new(&policy);
        assert!(
            feed(&mut unknown).is_empty(),
            "no capacity, no per-instance rate"
        );
        let mut five = Evaluator::new(&policy);
        five.set_capacity("api", 5);
        let fired = feed(&mut five);
        // At 0 s only lb-a has reported (3500 / 5 = 700); from 10 s both count
        // (6000 / 5 = 1200), so the minute is complete at 70 s.
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].held_secs, 60);
        assert_eq!(
            fired[0].observed,
            Some(1200.0),
            "6000 requests/s over 5 instances"
        );
        let mut ten = Evaluator::new(&policy);
        ten.set_capacity("api", 10);
        assert!(feed(&mut ten).is_empty(), "600 per instance is below 1000");
    }

    #[test]
    fn every_target_has_exactly_one_owning_partition() {
        let partitions: Vec<Partition> = (0..3).map(|k| Partition::new(k, 3).unwrap()).collect();
        let mut owned = [0usize; 3];
        for t in 0..300 {
            let target = format!("target-{t}");
            let owners: Vec<usize> = (0..3).filter(|&k| partitions[k].owns(&target)).collect();
            assert_eq!(owners.len(), 1, "{target}");
            owned[owners[0]] += 1;
        }
        assert!(owned.iter().all(|&n| n > 60), "spread: {owned:?}");
        assert!(Partition::default().owns("anything"));
        for (text, ok) in [
            ("0/3", true),
            ("2/3", true),
            ("3/3", false),
            ("1/0", false),
            ("a/3", false),
            ("3", false),
        ] {
            assert_eq!(text.parse::<Partition>().is_ok(), ok, "{text}");
        }
    }

    #[test]
    fn formats_durations() {
        for (secs, want) in [
            (0, "0s"),
            (90, "1m30s"),
            (120, "2m"),
            (3600, "1h"),
            (3900, "1h5m"),
        ] {
            assert_eq!(human_secs(secs), want);
        }
    }
}
