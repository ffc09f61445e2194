//! The runbook's rule grammar: conditions such as `avg_cpu > 70% for 2 minutes`
//! or `queue_depth > 1000 messages`, and actions such as `add 2 instances`.
//!
//! ```text
//! condition := [agg "_"] metric op threshold [noun] ["for" duration]
//! agg       := avg | max | min | sum          (default: max, the cautious reading)
//! op        := > | >= | < | <=
//! threshold := number ["%" | "ms" | "s"]      (a bare number is in the metric's unit)
//! action    := ("add" | "remove") n noun | "set to" n [noun]
//! ```

use serde::{Deserialize, Serialize};

use crate::units::{self, Dimension, Unit};
use crate::wire::ScaleAction;

/// How samples from several instances are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Mean over live instances.
    Avg,
    /// Largest value over live instances.
    Max,
    /// Smallest value over live instances.
    Min,
    /// Sum over live instances.
    Sum,
}

impl Aggregation {
    /// The prefix as written in a condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregation::Avg => "avg",
            Aggregation::Max => "max",
            Aggregation::Min => "min",
            Aggregation::Sum => "sum",
        }
    }
}

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Op {
    /// True when `observed op threshold`.
    pub fn holds(self, observed: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => observed > threshold,
            Op::Ge => observed >= threshold,
            Op::Lt => observed < threshold,
            Op::Le => observed <= threshold,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// A parsed condition, threshold in canonical units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The text as written in the policy file.
    pub text: String,
    /// How instances are combined.
    pub aggregation: Aggregation,
    /// Metric name.
    pub metric: String,
    /// Comparison.
    pub op: Op,
    /// Threshold, canonical units.
    pub threshold: f64,
    /// What the threshold measures.
    pub dimension: Dimension,
    /// The unit the threshold was written in, if it had one.
    pub written_unit: Option<Unit>,
    /// How long the condition must hold, seconds (0: fires at once).
    pub for_secs: u64,
}

const NOUNS: &[&str] = &[
    "instance",
    "instances",
    "worker",
    "workers",
    "replica",
    "replicas",
    "task",
    "tasks",
    "node",
    "nodes",
    "pod",
    "pods",
    "container",
    "containers",
];

/// Parses a condition. `metric_unit` gives the unit of a bare-number
/// threshold for a metric (from the policy's `metrics` block), if configured.
pub fn parse_condition(
    text: &str,
    metric_unit: impl Fn(&str) -> Option<Unit>,
) -> Result<Condition, String> {
    let trimmed = text.trim();
    let (body, for_secs) = match trimmed.rfind(" for ") {
        Some(at) => {
            let duration = &trimmed[at + 5..];
            let secs = units::parse_duration_secs(duration).map_err(|e| e.to_string())?;
            (trimmed[..at].trim(), secs)
        }
        None => (trimmed, 0),
    };
    let (at, op, op_len) = [(">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)]
        .iter()
        .find_map(|(sym, op)| body.find(sym).map(|at| (at, *op, sym.len())))
        .ok_or_else(|| {
            format!("expected `<metric> <op> <threshold> [for <duration>]` with op one of > >= < <=, found {text:?}")
        })?;
    let lhs = body[..at].trim();
    let rhs = body[at + op_len..].trim();
    if lhs.is_empty() || !lhs.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "expected a metric name such as avg_cpu before {:?}, found {lhs:?}",
            op.as_str()
        ));
    }
    let (aggregation, metric) = split_aggregation(lhs);
    let mut words = rhs.split_whitespace();
    let quantity = words
        .next()
        .ok_or_else(|| format!("expected a threshold after {:?} in {text:?}", op.as_str()))?;
    let rest: Vec<&str> = words.collect();
    match rest.as_slice() {
        [] => {}
        [noun] if noun.chars().all(|c| c.is_ascii_alphabetic()) => {}
        _ => {
            return Err(format!(
                "expected `for <duration>` after the threshold, found {:?}",
                rest.join(" ")
            ));
        }
    }
    let (value, written) = units::parse_quantity(quantity).map_err(|e| e.to_string())?;
    let unit = written
        .or_else(|| metric_unit(metric))
        .unwrap_or(Unit::Count);
    Ok(Condition {
        text: trimmed.to_string(),
        aggregation,
        metric: metric.to_string(),
        op,
        threshold: unit.to_canonical(value),
        dimension: unit.dimension(),
        written_unit: written,
        for_secs,
    })
}

/// Splits `avg_cpu` into (avg, cpu); a name without a prefix reads as max.
pub(crate) fn split_aggregation(lhs: &str) -> (Aggregation, &str) {
    for (prefix, agg) in [
        ("avg_", Aggregation::Avg),
        ("max_", Aggregation::Max),
        ("min_", Aggregation::Min),
        ("sum_", Aggregation::Sum),
    ] {
        if let Some(metric) = lhs.strip_prefix(prefix).filter(|m| !m.is_empty()) {
            return (agg, metric);
        }
    }
    (Aggregation::Max, lhs)
}

/// Parses an action: `add 2 instances`, `remove 1 instance`, `add 5 workers`, `set to 20 instances`.
pub fn parse_action(text: &str) -> Result<ScaleAction, String> {
    let expected = || {
        format!(
            "expected `add <n> instances`, `remove <n> instances` or `set to <n> instances`, found {text:?}"
        )
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let (verb, count, noun) = match words.as_slice() {
        ["set", "to", n] => ("set", *n, None),
        ["set", "to", n, noun] => ("set", *n, Some(*noun)),
        [verb @ ("add" | "remove"), n, noun] => (*verb, *n, Some(*noun)),
        _ => return Err(expected()),
    };
    if let Some(noun) = noun.filter(|noun| !NOUNS.contains(noun)) {
        return Err(format!(
            "expected a unit such as instances or workers, found {noun:?} in {text:?}"
        ));
    }
    let n: u32 = count.parse().map_err(|_| {
        format!("expected a whole number of instances, found {count:?} in {text:?}")
    })?;
    match verb {
        "add" if n > 0 => Ok(ScaleAction::Add(n)),
        "remove" if n > 0 => Ok(ScaleAction::Remove(n)),
        "set" => Ok(ScaleAction::Set(n)),
        _ => Err(format!(
            "adding or removing 0 instances does nothing, in {text:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(text: &str) -> Result<(Aggregation, String, Op, f64, Dimension, u64), String> {
        parse_condition(text, |m| (m == "mem").then_some(Unit::Ratio)).map(|c| {
            (
                c.aggregation,
                c.metric,
                c.op,
                c.threshold,
                c.dimension,
                c.for_secs,
            )
        })
    }

    #[test]
    fn parses_every_runbook_condition() {
        use Aggregation::*;
        use Dimension::*;
        let cases = [
            (
                "avg_cpu > 70% for 2 minutes",
                (Avg, "cpu", Op::Gt, 0.7, Ratio, 120),
            ),
            (
                "avg_cpu < 30% for 10 minutes",
                (Avg, "cpu", Op::Lt, 0.3, Ratio, 600),
            ),
            (
                "avg_memory > 80% for 3 minutes",
                (Avg, "memory", Op::Gt, 0.8, Ratio, 180),
            ),
            (
                "requests_per_instance > 1000 for 1 minute",
                (Max, "requests_per_instance", Op::Gt, 1000.0, Count, 60),
            ),
            (
                "p99_latency > 500ms for 2 minutes",
                (Max, "p99_latency", Op::Gt, 0.5, Time, 120),
            ),
            (
                "p99_latency < 100ms for 30 minutes",
                (Max, "p99_latency", Op::Lt, 0.1, Time, 1800),
            ),
            (
                "queue_depth > 1000 messages",
                (Max, "queue_depth", Op::Gt, 1000.0, Count, 0),
            ),
            (
                "queue_depth < 100 for 15 minutes",
                (Max, "queue_depth", Op::Lt, 100.0, Count, 900),
            ),
            (
                "sum_queue_depth >= 10 for 30s",
                (Sum, "queue_depth", Op::Ge, 10.0, Count, 30),
            ),
            ("avg_mem <= 0.4", (Avg, "mem", Op::Le, 0.4, Ratio, 0)),
        ];
        for (text, (agg, metric, op, threshold, dim, secs)) in cases {
            let got = cond(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                got,
                (agg, metric.to_string(), op, threshold, dim, secs),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_malformed_conditions_with_what_was_expected() {
        let cases = [
            ("avg_cpu >> 70%", "threshold"),
            ("avg_cpu 70%", "op one of"),
            ("avg_cpu > seventy", "expected a number"),
            ("avg_cpu > 70% fr 2 minutes", "expected `for <duration>`"),
            ("avg_cpu > 70% for 2 fortnights", "duration"),
            ("avg cpu > 70%", "metric name"),
            ("> 70%", "metric name"),
        ];
        for (text, needle) in cases {
            let err = cond(text).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn parses_actions() {
        let cases: &[(&str, Option<ScaleAction>)] = &[
            ("add 2 instances", Some(ScaleAction::Add(2))),
            ("remove 1 instance", Some(ScaleAction::Remove(1))),
            ("add 5 workers", Some(ScaleAction::Add(5))),
            ("remove 2 workers", Some(ScaleAction::Remove(2))),
            ("set to 20 instances", Some(ScaleAction::Set(20))),
            ("set to 0", Some(ScaleAction::Set(0))),
            ("add two instances", None),
            ("add 0 instances", None),
            ("add 2 potatoes", None),
            ("double it", None),
            ("remove -1 instance", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_action(text).ok(), *want, "{text}");
        }
    }
}
