//! Turning a published [`MetricSampleIn`] into a canonical [`Sample`]: the
//! metric named once, the value in canonical units, the event time set.

use thiserror::Error;

use crate::policy::{EvaluationSettings, Policy};
use crate::subjects::is_valid_token;
use crate::units::{self, Dimension, QuantityError, Unit};
use crate::wire::{MetricSampleIn, Sample, SampleValue};

/// Why a sample was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SampleError {
    /// Neither the subject nor the payload names the metric.
    #[error("no metric: publish to nova.metrics.<target>.<metric> or set the `metric` field")]
    MissingMetric,
    /// Subject and payload disagree.
    #[error("subject names metric {subject:?} but the payload says {payload:?}")]
    MetricMismatch {
        /// From the subject.
        subject: String,
        /// From the payload.
        payload: String,
    },
    /// Not usable as a subject token.
    #[error("metric name {0:?} may hold only letters, digits, '-' and '_'")]
    InvalidMetric(String),
    /// The target is not in the policy.
    #[error("no target {0:?} in the policy")]
    UnknownTarget(String),
    /// The event time is outside the window the receiver accepts.
    #[error(
        "metric {metric}: ts {ts} is {distance} the receiver's clock (at most {limit_secs} s {side} \
         is accepted, `evaluation.{setting}`); send unix milliseconds from a synchronised clock"
    )]
    OutOfWindow {
        /// Metric.
        metric: String,
        /// The sample's `ts`.
        ts: i64,
        /// How far off, in words (`7200 s behind`).
        distance: String,
        /// The limit that applies.
        limit_secs: u64,
        /// `ahead` or `behind`.
        side: &'static str,
        /// The policy setting that holds the limit.
        setting: &'static str,
    },
    /// The value could not be read.
    #[error("metric {metric}: {source}")]
    Value {
        /// Metric.
        metric: String,
        /// Why.
        #[source]
        source: QuantityError,
    },
    /// The value's unit measures something else than the metric.
    #[error("metric {metric} is measured as {expected:?} but the value {value:?} is a {got:?}")]
    WrongDimension {
        /// Metric.
        metric: String,
        /// What the metric measures.
        expected: Dimension,
        /// What the value measures.
        got: Dimension,
        /// The value as sent.
        value: String,
    },
    /// A percentage or a time below zero.
    #[error("metric {metric}: {value} is negative, which a {dimension:?} cannot be")]
    Negative {
        /// Metric.
        metric: String,
        /// The canonical value.
        value: f64,
        /// Its dimension.
        dimension: Dimension,
    },
}

/// Validates one sample for `target`. `subject_metric` is the metric token
/// of the subject, if any; `receive_ms` stands in for a missing `ts`.
pub fn normalise(
    policy: &Policy,
    target: &str,
    subject_metric: Option<&str>,
    sample: &MetricSampleIn,
    receive_ms: i64,
) -> Result<Sample, SampleError> {
    if !policy.targets.contains_key(target) {
        return Err(SampleError::UnknownTarget(target.to_string()));
    }
    let metric = match (subject_metric, &sample.metric) {
        (Some(s), Some(p)) if s != p => {
            return Err(SampleError::MetricMismatch {
                subject: s.to_string(),
                payload: p.clone(),
            });
        }
        (_, Some(p)) => p.clone(),
        (Some(s), None) => s.to_string(),
        (None, None) => return Err(SampleError::MissingMetric),
    };
    if !is_valid_token(&metric) {
        return Err(SampleError::InvalidMetric(metric));
    }
    let configured = policy.metric_unit(&metric);
    let value = match &sample.value {
        SampleValue::Number(n) if n.is_finite() => configured.to_canonical(*n),
        SampleValue::Number(n) => {
            return Err(SampleError::Value {
                metric,
                source: QuantityError::NotFinite(n.to_string()),
            });
        }
        SampleValue::Text(text) => {
            let (n, unit) = match units::parse_quantity(text) {
                Ok(q) => q,
                Err(source) => return Err(SampleError::Value { metric, source }),
            };
            let unit = unit.unwrap_or(configured);
            let known = policy.metric_units.contains_key(&metric);
            if known && unit.dimension() != configured.dimension() {
                return Err(SampleError::WrongDimension {
                    metric,
                    expected: configured.dimension(),
                    got: unit.dimension(),
                    value: text.clone(),
                });
            }
            unit.to_canonical(n)
        }
    };
    let dimension = configured.dimension();
    if value < 0.0 && configured != Unit::Count {
        return Err(SampleError::Negative {
            metric,
            value,
            dimension,
        });
    }
    let ts = sample.ts.unwrap_or(receive_ms);
    check_window(&policy.evaluation, &metric, ts, receive_ms)?;
    Ok(Sample {
        metric,
        value,
        ts,
        instance: sample.instance.clone(),
    })
}

/// Event time must be near the receiver's clock: at most
/// `max_future_skew_secs` ahead and `max_sample_age_secs` behind (0: no
/// limit behind), and never before 1970. The arithmetic saturates, so no
/// `ts` overflows.
fn check_window(
    settings: &EvaluationSettings,
    metric: &str,
    ts: i64,
    receive_ms: i64,
) -> Result<(), SampleError> {
    let out = |distance: String, limit_secs, side, setting| SampleError::OutOfWindow {
        metric: metric.to_string(),
        ts,
        distance,
        limit_secs,
        side,
        setting,
    };
    let ahead_ms = ts.saturating_sub(receive_ms);
    if ahead_ms > units::secs_to_ms(settings.max_future_skew_secs) {
        let distance = format!("{} s ahead of", ahead_ms / 1000);
        let limit = settings.max_future_skew_secs;
        return Err(out(distance, limit, "ahead", "max_future_skew_secs"));
    }
    let behind_ms = receive_ms.saturating_sub(ts);
    let age_limit = settings.max_sample_age_secs;
    if ts < 0 || (age_limit > 0 && behind_ms > units::secs_to_ms(age_limit)) {
        let distance = format!("{} s behind", behind_ms / 1000);
        return Err(out(distance, age_limit, "behind", "max_sample_age_secs"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::from_yaml;

    const POLICY: &str = r#"
metrics: {cpu: {unit: percent}, mem: {unit: ratio}}
targets:
  web: {rules: [g], max: 9, backend: {sim: {initial: 1}}}
horizontal_scaling_rules:
  g:
    scale_up: {condition: "p99_latency > 500ms", action: "add 1 instance"}
"#;

    fn input(metric: Option<&str>, value: SampleValue, ts: Option<i64>) -> MetricSampleIn {
        MetricSampleIn {
            metric: metric.map(Into::into),
            value,
            ts,
            instance: Some("i-1".into()),
            labels: Default::default(),
        }
    }

    #[test]
    fn normalisation_table() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let num = SampleValue::Number;
        let text = |s: &str| SampleValue::Text(s.into());
        let cases: Vec<(
            &str,
            Option<&str>,
            MetricSampleIn,
            Result<(String, f64, i64), &str>,
        )> = vec![
            (
                "web",
                Some("cpu"),
                input(None, num(70.0), Some(5)),
                Ok(("cpu".into(), 0.7, 5)),
            ),
            (
                "web",
                Some("cpu"),
                input(None, text("70%"), None),
                Ok(("cpu".into(), 0.7, 99)),
            ),
            (
                "web",
                None,
                input(Some("mem"), num(0.7), None),
                Ok(("mem".into(), 0.7, 99)),
            ),
            (
                "web",
                None,
                input(Some("mem"), text("0.7"), None),
                Ok(("mem".into(), 0.7, 99)),
            ),
            (
                "web",
                Some("p99_latency"),
                input(None, num(500.0), None),
                Ok(("p99_latency".into(), 0.5, 99)),
            ),
            (
                "web",
                Some("p99_latency"),
                input(None, text("0.5s"), None),
                Ok(("p99_latency".into(), 0.5, 99)),
            ),
            (
                "web",
                Some("queue"),
                input(None, num(-3.0), None),
                Ok(("queue".into(), -3.0, 99)),
            ),
            ("web", None, input(None, num(1.0), None), Err("no metric")),
            (
                "web",
                Some("cpu"),
                input(Some("mem"), num(1.0), None),
                Err("subject names metric \"cpu\" but the payload says \"mem\""),
            ),
            (
                "web",
                None,
                input(Some("a.b"), num(1.0), None),
                Err("may hold only"),
            ),
            (
                "db",
                Some("cpu"),
                input(None, num(1.0), None),
                Err("no target \"db\""),
            ),
            (
                "web",
                Some("cpu"),
                input(None, text("lots"), None),
                Err("expected a number"),
            ),
            (
                "web",
                Some("cpu"),
                input(None, text("500ms"), None),
                Err("measured as Ratio but the value \"500ms\" is a Time"),
            ),
            (
                "web",
                Some("cpu"),
                input(None, num(-1.0), None),
                Err("negative"),
            ),
            (
                "web",
                Some("cpu"),
                input(None, num(f64::INFINITY), None),
                Err("not a finite number"),
            ),
        ];
        for (target, subject_metric, sample, want) in cases {
            let got = normalise(&policy, target, subject_metric, &sample, 99);
            match (got, want) {
                (Ok(s), Ok(w)) => assert_eq!((s.metric, s.value, s.ts), w, "{sample:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{sample:?}: {e}"),
                (got, want) => panic!("{sample:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn event_time_window() {
        let receive = 1_764_000_000_000;
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let mut no_age_limit = policy.clone();
        no_age_limit.evaluation.max_sample_age_secs = 0;
        let cases: [(&str, &Policy, i64, Result<(), &str>); 9] = [
            ("now", &policy, receive, Ok(())),
            ("300 s ahead: the limit", &policy, receive + 300_000, Ok(())),
            (
                "301 s ahead",
                &policy,
                receive + 301_000,
                Err("301 s ahead of the receiver's clock (at most 300 s ahead"),
            ),
            (
                "an hour behind: the limit",
                &policy,
                receive - 3_600_000,
                Ok(()),
            ),
            (
                "an hour and a second behind",
                &policy,
                receive - 3_601_000,
                Err(
                    "3601 s behind the receiver's clock (at most 3600 s behind is accepted, `evaluation.max_sample_age_secs`)",
                ),
            ),
            ("i64::MAX", &policy, i64::MAX, Err("ahead of")),
            ("i64::MIN", &policy, i64::MIN, Err("behind")),
            (
                "no age limit: a day behind",
                &no_age_limit,
                receive - 86_400_000,
                Ok(()),
            ),
            (
                "no age limit: still never before 1970",
                &no_age_limit,
                -1,
                Err("behind"),
            ),
        ];
        for (name, policy, ts, want) in cases {
            let sample = input(None, SampleValue::Number(1.0), Some(ts));
            let got = normalise(policy, "web", Some("cpu"), &sample, receive).map(|_| ());
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
