//! Turning a published [`MetricSampleIn`] into a canonical [`Sample`]: the
//! metric named once, the value in canonical units, the event time set.

use thiserror::Error;

use crate::policy::Policy;
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
    Ok(Sample {
        metric,
        value,
        ts: sample.ts.unwrap_or(receive_ms),
        instance: sample.instance.clone(),
    })
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
}
