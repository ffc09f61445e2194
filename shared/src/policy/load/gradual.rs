//! A target's `gradual:` block (runbook section 2): steps, their delay, an
//! optional HTTP health check and metric gates. Same walker, same rule:
//! every problem is collected with its path.

use serde_json::Value;

use super::{Walker, join, kind_of, show};
use crate::gradual::{
    DEFAULT_DELAY_SECS, DEFAULT_EXPECT_STATUS, DEFAULT_HEALTH_TIMEOUT_SECS, Gate, Gradual,
    HealthCheck,
};
use crate::policy::rule_text::split_aggregation;
use crate::units::{self, Unit};

const GRADUAL_KEYS: &[&str] = &["step", "delay_secs", "health_check", "gates"];
const HEALTH_KEYS: &[&str] = &["url", "expect_status", "timeout_secs"];

impl Walker {
    /// `targets.<name>.gradual`; `units` reads a gate's bare number.
    pub(super) fn gradual(
        &mut self,
        value: &Value,
        path: &str,
        units: &dyn Fn(&str) -> Option<Unit>,
    ) -> Option<Gradual> {
        let before = self.problems.len();
        let map = self.map(value, path, GRADUAL_KEYS)?;
        let step = match map.get("step") {
            None => {
                self.problem(
                    &join(path, "step"),
                    "required: the most instances one step changes, e.g. 2",
                );
                None
            }
            Some(v) => match self.count(v, &join(path, "step")) {
                Some(0) => {
                    self.problem(&join(path, "step"), "expected a whole number >= 1");
                    None
                }
                other => other,
            },
        };
        let delay_secs = match map.get("delay_secs") {
            None => Some(DEFAULT_DELAY_SECS),
            Some(v) => self.secs(v, &join(path, "delay_secs")),
        };
        let health_check = match map.get("health_check") {
            None => Some(None),
            Some(v) => self.health_check(v, &join(path, "health_check")).map(Some),
        };
        let gates = match map.get("gates") {
            None => Some(Vec::new()),
            Some(v) => self.gates(v, &join(path, "gates"), units),
        };
        if self.problems.len() > before {
            return None;
        }
        Some(Gradual {
            step: step?,
            delay_secs: delay_secs?,
            health_check: health_check?,
            gates: gates?,
        })
    }

    fn health_check(&mut self, value: &Value, path: &str) -> Option<HealthCheck> {
        let map = self.map(value, path, HEALTH_KEYS)?;
        let url = match map.get("url") {
            None => {
                self.problem(
                    &join(path, "url"),
                    "required: the URL to GET after each step, e.g. \"http://api.internal/health\"",
                );
                None
            }
            Some(v) => self.string(v, &join(path, "url")).and_then(|url| {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                match rest {
                    Some(host) if !host.is_empty() && !url.contains(char::is_whitespace) => {
                        Some(url.to_string())
                    }
                    _ => {
                        self.problem(
                            &join(path, "url"),
                            format!("expected an http:// or https:// URL, found {url:?}"),
                        );
                        None
                    }
                }
            }),
        };
        let expect_status = match map.get("expect_status") {
            None => Some(DEFAULT_EXPECT_STATUS),
            Some(v) => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(n) if (100..=599).contains(&n) => Some(n),
                _ => {
                    self.problem(
                        &join(path, "expect_status"),
                        format!("expected an HTTP status 100..599, found {}", show(v)),
                    );
                    None
                }
            },
        };
        let timeout_secs = match map.get("timeout_secs") {
            None => Some(DEFAULT_HEALTH_TIMEOUT_SECS),
            Some(v) => match self.secs(v, &join(path, "timeout_secs")) {
                Some(0) => {
                    self.problem(&join(path, "timeout_secs"), "expected more than 0 seconds");
                    None
                }
                other => other,
            },
        };
        Some(HealthCheck {
            url: url?,
            expect_status: expect_status?,
            timeout_secs: timeout_secs?,
        })
    }

    fn gates(
        &mut self,
        value: &Value,
        path: &str,
        units: &dyn Fn(&str) -> Option<Unit>,
    ) -> Option<Vec<Gate>> {
        let map = match value {
            Value::String(s) if s == "default" => return Some(Gate::runbook_defaults()),
            Value::Object(map) => map,
            other => {
                self.problem(
                    path,
                    format!(
                        "expected `default` (error_rate 1%, p99_latency 500ms, avg_cpu 85%) or a map of metric to threshold, found {}",
                        match other {
                            Value::String(s) => format!("{s:?}"),
                            other => kind_of(other).to_string(),
                        }
                    ),
                );
                return None;
            }
        };
        let mut gates = Vec::new();
        let mut complete = true;
        for (name, threshold) in map {
            let at = join(path, name);
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                self.problem(&at, "a gate is a metric name such as error_rate or avg_cpu");
                complete = false;
                continue;
            }
            let (aggregation, metric) = split_aggregation(name);
            let text = match threshold {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    self.problem(
                        &at,
                        format!(
                            "expected a threshold such as 1%, 500ms or 1000, found {}",
                            kind_of(other)
                        ),
                    );
                    complete = false;
                    continue;
                }
            };
            let (number, written) = match units::parse_quantity(&text) {
                Ok(q) => q,
                Err(e) => {
                    self.problem(&at, e.to_string());
                    complete = false;
                    continue;
                }
            };
            let configured = units(metric);
            let unit = written.or(configured).unwrap_or(Unit::Count);
            if let (Some(written), Some(configured)) = (written, configured)
                && written.dimension() != configured.dimension()
            {
                self.problem(
                    &at,
                    format!(
                        "{text} is a {:?} but metric {metric} is measured as {:?}",
                        written.dimension(),
                        configured.dimension()
                    ),
                );
                complete = false;
                continue;
            }
            gates.push(Gate {
                name: name.clone(),
                aggregation,
                metric: metric.to_string(),
                threshold: unit.to_canonical(number),
                dimension: unit.dimension(),
            });
        }
        complete.then_some(gates)
    }
}

#[cfg(test)]
mod tests {
    use crate::gradual::Gate;
    use crate::policy::{Aggregation, from_yaml};
    use crate::units::Dimension;

    const BASE: &str = "targets:\n  t:\n    rules: [g]\n    max: 20\n    backend: {sim: {initial: 1}}\n    gradual: GRADUAL\nhorizontal_scaling_rules:\n  g:\n    scale_up: {condition: \"avg_cpu > 70%\", action: \"add 1 instance\"}\n";

    fn with(gradual: &str) -> String {
        BASE.replace("GRADUAL", gradual)
    }

    fn problems(yaml: &str) -> Vec<String> {
        match from_yaml(yaml, "p.yaml") {
            Ok(_) => vec![],
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_full_block_loads_in_canonical_units() {
        let yaml = with(
            "{step: 2, delay_secs: 30, health_check: {url: \"http://api/health\", expect_status: 204, timeout_secs: 3}, gates: {error_rate: 1%, p99_latency: 500ms, avg_cpu: 85%, queue_depth: 1000}}",
        );
        let policy = from_yaml(&yaml, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
        let g = policy.targets["t"].gradual.clone().expect("gradual");
        assert_eq!((g.step, g.delay_secs), (2, 30));
        let check = g.health_check.expect("health check");
        assert_eq!(
            (check.url.as_str(), check.expect_status, check.timeout_secs),
            ("http://api/health", 204, 3)
        );
        let gates: Vec<(&str, Aggregation, &str, f64, Dimension)> = g
            .gates
            .iter()
            .map(|g| {
                (
                    g.name.as_str(),
                    g.aggregation,
                    g.metric.as_str(),
                    g.threshold,
                    g.dimension,
                )
            })
            .collect();
        assert_eq!(
            gates,
            [
                ("avg_cpu", Aggregation::Avg, "cpu", 0.85, Dimension::Ratio),
                (
                    "error_rate",
                    Aggregation::Max,
                    "error_rate",
                    0.01,
                    Dimension::Ratio
                ),
                (
                    "p99_latency",
                    Aggregation::Max,
                    "p99_latency",
                    0.5,
                    Dimension::Time
                ),
                (
                    "queue_depth",
                    Aggregation::Max,
                    "queue_depth",
                    1000.0,
                    Dimension::Count
                ),
            ]
        );
    }

    #[test]
    fn defaults_are_the_runbooks() {
        let policy = from_yaml(&with("{step: 1, gates: default}"), "p.yaml")
            .unwrap_or_else(|e| panic!("{e}"));
        let g = policy.targets["t"].gradual.clone().expect("gradual");
        assert_eq!(g.delay_secs, 60, "the runbook's step_delay default");
        assert_eq!(g.health_check, None);
        assert_eq!(g.gates, Gate::runbook_defaults());
        let none = from_yaml(&BASE.replace("    gradual: GRADUAL\n", ""), "p.yaml").unwrap();
        assert_eq!(none.targets["t"].gradual, None);
        // A bare number reads in the metric's unit: cpu thresholds are percent here.
        let bare = from_yaml(&with("{step: 1, gates: {avg_cpu: 90}}"), "p.yaml").unwrap();
        assert_eq!(
            bare.targets["t"].gradual.as_ref().unwrap().gates[0].threshold,
            0.9
        );
    }

    #[test]
    fn table_of_invalid_blocks() {
        let cases = [
            ("{delay_secs: 30}", "targets.t.gradual.step: required"),
            (
                "{step: 0}",
                "targets.t.gradual.step: expected a whole number >= 1",
            ),
            (
                "{step: -2}",
                "targets.t.gradual.step: expected a whole number >= 0, found -2",
            ),
            (
                "{step: 2, dealy_secs: 3}",
                "targets.t.gradual.dealy_secs: unknown field; did you mean `delay_secs`?",
            ),
            (
                "{step: 2, delay_secs: soon}",
                "targets.t.gradual.delay_secs: expected a duration",
            ),
            (
                "{step: 2, health_check: {}}",
                "targets.t.gradual.health_check.url: required",
            ),
            (
                "{step: 2, health_check: {url: \"ftp://x\"}}",
                "targets.t.gradual.health_check.url: expected an http:// or https:// URL",
            ),
            (
                "{step: 2, health_check: {url: \"http://x\", expect_status: 42}}",
                "targets.t.gradual.health_check.expect_status: expected an HTTP status 100..599, found 42",
            ),
            (
                "{step: 2, health_check: {url: \"http://x\", timeout_secs: 0}}",
                "targets.t.gradual.health_check.timeout_secs: expected more than 0 seconds",
            ),
            (
                "{step: 2, health_check: {url: \"http://x\", timeout: 3}}",
                "targets.t.gradual.health_check.timeout: unknown field; expected one of: url, expect_status, timeout_secs",
            ),
            (
                "{step: 2, gates: all}",
                "targets.t.gradual.gates: expected `default`",
            ),
            (
                "{step: 2, gates: {error_rate: lots}}",
                "targets.t.gradual.gates.error_rate: ",
            ),
            (
                "{step: 2, gates: {avg_cpu: 500ms}}",
                "targets.t.gradual.gates.avg_cpu: 500ms is a Time but metric cpu is measured as Ratio",
            ),
            (
                "{step: 2, gates: {\"a-b\": 1}}",
                "targets.t.gradual.gates.a-b: a gate is a metric name",
            ),
            ("[2]", "targets.t.gradual: expected a map, found a list"),
        ];
        for (block, want) in cases {
            let got = problems(&with(block));
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "{block}: want {want:?} in {got:#?}"
            );
        }
        // Every problem of one block at once.
        let got = problems(&with(
            "{step: 0, delay_secs: soon, health_check: {url: \"x\"}}",
        ));
        assert_eq!(got.len(), 3, "{got:#?}");
    }

    #[test]
    fn an_rds_instance_target_takes_no_gradual_block() {
        let yaml = r#"
targets:
  db: {rules: [credits], backend: {rds_instance: {region: us-east-1, instance: db1}}, gradual: {step: 1}}
vertical_scaling_rules:
  instance_resize:
    credits:
      trigger: "cpu_credits < 20 for 5 minutes"
      action: "upgrade to next CPU-optimized tier"
      options: [{from: db.t3.medium, to: db.r5.large}]
"#;
        let got = problems(yaml);
        assert!(
            got.iter()
                .any(|g| g
                    .starts_with("targets.db.gradual: an rds_instance target is one DB instance")),
            "{got:#?}"
        );
    }
}
