//! Gradual scaling (runbook section 2, `gradual_scaling.py`): a command that
//! moves a target by more than its `gradual.step` walks there step by step,
//! waits `delay_secs` after each step, validates it (an HTTP health check,
//! metric gates on the latest samples), pauses for twice the delay when a
//! validation fails, and rolls back to the last step that passed when it
//! fails again.
//!
//! Pure: the clock is passed in, nothing here does I/O. The actuator
//! performs the [`Action`]s a [`Walk`] returns and feeds back what happened
//! as [`Event`]s:
//!
//! | state                 | event               | next state            | action                    |
//! |-----------------------|---------------------|-----------------------|---------------------------|
//! | `Apply i`             | `Applied`           | `Settling i`          | `Wait` for the delay      |
//! | `Apply i`             | `NewerWaiting`      | done: superseded      | `Finish` at the last good |
//! | `Settling i`/`Paused i` | `Elapsed`, due    | same                  | `Validate` step i         |
//! | `Settling i`          | `Checked` passed    | `Apply i+1` / done    | `Apply` / `Finish`        |
//! | `Settling i`          | `Checked` failed    | `Paused i`            | `Pause` for twice the delay |
//! | `Paused i`            | `Checked` passed    | `Apply i+1` / done    | `Apply` / `Finish`        |
//! | `Paused i`            | `Checked` failed    | `RollingBack`         | `RollBack` to the last good |
//! | `RollingBack`         | `Applied`           | done: rolled back     | `Finish`                  |
//!
//! Any other event leaves the state as it is and repeats its action, so a
//! repeated or stray event is harmless. "The last good" is the capacity of
//! the last step that passed validation, or the capacity the walk started
//! from when none has: a rollback never goes to a step that was not
//! validated.
//!
//! Differences from the runbook's script, on purpose: the last step lands
//! exactly on `desired` (the script's "final adjustment" skipped validation);
//! a failed health check pauses and re-checks like the metric gates do
//! instead of rolling back at once to the start; every step is an absolute
//! capacity, so repeating one after a crash is harmless.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::Aggregation;
use crate::units::Dimension;

/// The runbook's `step_delay` default, seconds.
pub const DEFAULT_DELAY_SECS: u64 = 60;
/// Time limit of one health check request unless set, seconds.
pub const DEFAULT_HEALTH_TIMEOUT_SECS: u64 = 5;
/// The status a health check expects unless set.
pub const DEFAULT_EXPECT_STATUS: u16 = 200;
/// Instances kept per gate metric; the oldest is forgotten beyond this.
pub const MAX_INSTANCES: usize = 1024;

/// A target's `gradual:` block, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gradual {
    /// Most instances changed per step (>= 1).
    pub step: u32,
    /// Seconds between a step and its validation (the pause after a failed
    /// validation is twice this).
    pub delay_secs: u64,
    /// Asked after each step, if set.
    pub health_check: Option<HealthCheck>,
    /// Checked on the target's latest samples after each step.
    pub gates: Vec<Gate>,
}

impl Gradual {
    /// Whether a move from `current` to `desired` walks in steps.
    pub fn applies(&self, current: u32, desired: u32) -> bool {
        current.abs_diff(desired) > self.step
    }

    /// The metrics the gates watch.
    pub fn metrics(&self) -> impl Iterator<Item = &str> {
        self.gates.iter().map(|g| g.metric.as_str())
    }
}

/// An HTTP GET that must answer `expect_status` within `timeout_secs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `http://` or `https://` URL.
    pub url: String,
    /// The status that means healthy.
    pub expect_status: u16,
    /// Time limit of the request, seconds.
    pub timeout_secs: u64,
}

/// A step fails when the latest `aggregation(metric)` is above `threshold`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// As written (`avg_cpu`, `error_rate`).
    pub name: String,
    /// How instances are combined (`avg_` prefix; max without one, as in
    /// rule conditions).
    pub aggregation: Aggregation,
    /// Metric name on the samples.
    pub metric: String,
    /// Highest passing value, canonical units.
    pub threshold: f64,
    /// What the metric measures.
    pub dimension: Dimension,
}

impl Gate {
    /// The runbook's `check_health_metrics`: error rate above 1 %, latency
    /// above 500 ms, cpu above 85 % fail a step.
    pub fn runbook_defaults() -> Vec<Gate> {
        vec![
            Gate {
                name: "error_rate".into(),
                aggregation: Aggregation::Max,
                metric: "error_rate".into(),
                threshold: 0.01,
                dimension: Dimension::Ratio,
            },
            Gate {
                name: "p99_latency".into(),
                aggregation: Aggregation::Max,
                metric: "p99_latency".into(),
                threshold: 0.5,
                dimension: Dimension::Time,
            },
            Gate {
                name: "avg_cpu".into(),
                aggregation: Aggregation::Avg,
                metric: "cpu".into(),
                threshold: 0.85,
                dimension: Dimension::Ratio,
            },
        ]
    }
}

/// The capacities a walk from `from` to `desired` sets, `step` apart: each
/// moves at most `step`, they go one way, and the last is `desired`. Empty
/// when `from == desired`; a `step` of 0 is read as 1.
pub fn steps(from: u32, desired: u32, step: u32) -> Vec<u32> {
    let step = step.max(1);
    let mut out = Vec::new();
    let mut at = from;
    while at != desired {
        at = if desired > at {
            at.saturating_add(step).min(desired)
        } else {
            at.saturating_sub(step).max(desired)
        };
        out.push(at);
    }
    out
}

/// The latest value of each watched metric per instance, bounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latest {
    /// Metric -> instance (empty: none named) -> (event time ms, value).
    metrics: BTreeMap<String, BTreeMap<String, (i64, f64)>>,
}

impl Latest {
    /// Keeps `value` if it is the newest of its metric and instance. At
    /// [`MAX_INSTANCES`] instances the oldest is forgotten.
    pub fn record(&mut self, metric: &str, instance: Option<&str>, ts: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let instances = self.metrics.entry(metric.to_string()).or_default();
        let key = instance.unwrap_or_default();
        match instances.get_mut(key) {
            Some(slot) if slot.0 > ts => {}
            Some(slot) => *slot = (ts, value),
            None => {
                if instances.len() >= MAX_INSTANCES
                    && let Some(oldest) = instances
                        .iter()
                        .min_by_key(|(_, (t, _))| *t)
                        .map(|(k, _)| k.clone())
                {
                    instances.remove(&oldest);
                }
                instances.insert(key.to_string(), (ts, value));
            }
        }
    }

    /// `aggregation` over the instances of `metric` whose latest sample is
    /// at or after `since_ms`; none when no instance has one.
    pub fn value(&self, aggregation: Aggregation, metric: &str, since_ms: i64) -> Option<f64> {
        let values: Vec<f64> = self
            .metrics
            .get(metric)?
            .values()
            .filter(|(ts, _)| *ts >= since_ms)
            .map(|(_, v)| *v)
            .collect();
        if values.is_empty() {
            return None;
        }
        Some(match aggregation {
            Aggregation::Avg => values.iter().sum::<f64>() / values.len() as f64,
            Aggregation::Sum => values.iter().sum(),
            Aggregation::Max => values.iter().copied().fold(f64::MIN, f64::max),
            Aggregation::Min => values.iter().copied().fold(f64::MAX, f64::min),
        })
    }

    /// Instances kept for `metric`.
    pub fn instances(&self, metric: &str) -> usize {
        self.metrics.get(metric).map_or(0, BTreeMap::len)
    }
}

/// One failed check of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// `health check`, or the gate's name.
    pub check: String,
    /// The value seen, canonical units (gates only).
    pub observed: Option<f64>,
    /// The gate's threshold, canonical units (gates only).
    pub threshold: Option<f64>,
    /// One phrase: `error_rate 3% > 1%`, `health check http://... answered 503, expected 200`.
    pub text: String,
}

/// What validating one step found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Every check that failed; the step passes when there is none.
    pub failures: Vec<Failure>,
    /// Checks that could not judge (a gate without a recent sample): they
    /// do not fail the step, and are named in the audit.
    pub unjudged: Vec<String>,
    /// Checks that passed, one phrase each.
    pub passed: Vec<String>,
}

impl Verdict {
    /// Whether the step passed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// One line: what failed, passed and could not be judged.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.failures.is_empty() {
            let failed: Vec<&str> = self.failures.iter().map(|f| f.text.as_str()).collect();
            parts.push(format!("failed: {}", failed.join("; ")));
        }
        if !self.passed.is_empty() {
            parts.push(format!("passed: {}", self.passed.join(", ")));
        }
        if !self.unjudged.is_empty() {
            parts.push(format!(
                "not judged (no recent sample): {}",
                self.unjudged.join(", ")
            ));
        }
        if parts.is_empty() {
            "nothing to check".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Judges a step: the health check's outcome (`None` when there is no
/// check; `Err` with one phrase when it failed) and every gate on the
/// values in `latest` no older than `since_ms`.
pub fn judge(
    gates: &[Gate],
    latest: &Latest,
    since_ms: i64,
    health: Option<Result<String, String>>,
) -> Verdict {
    let mut verdict = Verdict::default();
    match health {
        None => {}
        Some(Ok(passed)) => verdict.passed.push(passed),
        Some(Err(text)) => verdict.failures.push(Failure {
            check: "health check".into(),
            observed: None,
            threshold: None,
            text,
        }),
    }
    for gate in gates {
        let Some(value) = latest.value(gate.aggregation, &gate.metric, since_ms) else {
            verdict.unjudged.push(gate.name.clone());
            continue;
        };
        let shown = format!("{} {}", gate.name, gate.dimension.format(value));
        if value > gate.threshold {
            verdict.failures.push(Failure {
                check: gate.name.clone(),
                observed: Some(value),
                threshold: Some(gate.threshold),
                text: format!("{shown} > {}", gate.dimension.format(gate.threshold)),
            });
        } else {
            verdict.passed.push(format!(
                "{shown} <= {}",
                gate.dimension.format(gate.threshold)
            ));
        }
    }
    verdict
}

/// Where a walk stands.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Step `index` (from 0) is to be applied next.
    Apply {
        /// The step.
        index: usize,
    },
    /// Step `index` was applied; it is validated at `until_ms`.
    Settling {
        /// The step.
        index: usize,
        /// When to validate it.
        until_ms: i64,
        /// Its validation was asked for (only then is a verdict taken).
        checking: bool,
    },
    /// Step `index` failed its validation once; it is checked again at `until_ms`.
    Paused {
        /// The step.
        index: usize,
        /// When to check it again.
        until_ms: i64,
        /// Its validation was asked for (only then is a verdict taken).
        checking: bool,
    },
    /// Step `index` failed twice; the capacity is going back to `to`.
    RollingBack {
        /// The step that failed.
        index: usize,
        /// The last good capacity.
        to: u32,
        /// What failed the second time.
        failure: Failure,
    },
    /// Over.
    Done(End),
}

/// How a walk ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Every step passed; the target is at `desired`.
    Completed,
    /// Step `failed` (from 1) failed twice; the capacity went back to `to`.
    RolledBack {
        /// The step that failed, from 1.
        failed: usize,
        /// The capacity rolled back to (the last good).
        to: u32,
        /// What failed the second time.
        failure: Failure,
    },
    /// A newer command was waiting: the walk stopped at `reached` after
    /// `steps` validated steps.
    Superseded {
        /// Steps applied and validated.
        steps: usize,
        /// Their capacity (the start when none).
        reached: u32,
    },
}

/// What the actuator is to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Set the capacity to `capacity`: step `step` (from 1) of `of`. Answer
    /// [`Event::Applied`], or [`Event::NewerWaiting`] instead of applying
    /// when a newer command waits for the target.
    Apply {
        /// Absolute capacity.
        capacity: u32,
        /// From 1.
        step: usize,
        /// Number of steps.
        of: usize,
    },
    /// Wait until `until_ms`, then answer [`Event::Elapsed`].
    Wait {
        /// Wall clock, unix ms.
        until_ms: i64,
    },
    /// Step `step` failed a validation: wait until `until_ms` (twice the
    /// delay), then answer [`Event::Elapsed`].
    Pause {
        /// The step, from 1.
        step: usize,
        /// Wall clock, unix ms.
        until_ms: i64,
        /// What failed.
        failure: Failure,
    },
    /// Validate step `step` (from 1) and answer [`Event::Checked`].
    Validate {
        /// The step, from 1.
        step: usize,
        /// Its capacity.
        capacity: u32,
    },
    /// Step `failed` failed twice: set the capacity back to `to`, then
    /// answer [`Event::Applied`].
    RollBack {
        /// The failed step, from 1.
        failed: usize,
        /// The last good capacity.
        to: u32,
        /// What failed.
        failure: Failure,
    },
    /// Over.
    Finish(End),
}

/// What happened since the last action.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The capacity asked for was set.
    Applied,
    /// The wait is over.
    Elapsed,
    /// The step was validated.
    Checked(Verdict),
    /// A newer command for the target is waiting.
    NewerWaiting,
}

/// A walk from `from` through `steps`, one validated step at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Walk {
    /// The capacity before the first step.
    pub from: u32,
    /// The capacities to set, in order; the last is the command's desired.
    pub steps: Vec<u32>,
    /// The wait after a step before it is validated, ms.
    pub delay_ms: i64,
    /// Where it stands.
    pub state: State,
}

impl Walk {
    /// A walk from `from` to `desired` in steps of `step`, waiting `delay_secs`.
    pub fn new(from: u32, desired: u32, step: u32, delay_secs: u64) -> Walk {
        Walk {
            from,
            steps: steps(from, desired, step),
            delay_ms: crate::units::secs_to_ms(delay_secs),
            state: State::Apply { index: 0 },
        }
    }

    /// The same walk taken up again at step `step` (from 1; a step that was
    /// applied but perhaps not validated): it is applied again (an absolute
    /// capacity, so harmless) and validated. Steps before it passed.
    pub fn resume(mut self, step: usize) -> Walk {
        let index = step
            .saturating_sub(1)
            .min(self.steps.len().saturating_sub(1));
        self.state = State::Apply { index };
        self
    }

    /// Number of steps.
    pub fn of(&self) -> usize {
        self.steps.len()
    }

    /// The capacity of the last step before `index` (the start for 0): the
    /// last good while step `index` is applied or validated.
    pub fn good_before(&self, index: usize) -> u32 {
        index
            .checked_sub(1)
            .and_then(|i| self.steps.get(i))
            .copied()
            .unwrap_or(self.from)
    }

    /// The action the current state asks for (the first one after `new`).
    pub fn action(&self) -> Action {
        match &self.state {
            State::Apply { index } => match self.steps.get(*index) {
                Some(capacity) => Action::Apply {
                    capacity: *capacity,
                    step: index + 1,
                    of: self.of(),
                },
                None => Action::Finish(End::Completed),
            },
            // A pause was announced when it began; repeated, it is a wait.
            State::Settling {
                index,
                checking: true,
                ..
            }
            | State::Paused {
                index,
                checking: true,
                ..
            } => self.validate(*index),
            State::Settling { until_ms, .. } | State::Paused { until_ms, .. } => Action::Wait {
                until_ms: *until_ms,
            },
            State::RollingBack {
                index, to, failure, ..
            } => Action::RollBack {
                failed: index + 1,
                to: *to,
                failure: failure.clone(),
            },
            State::Done(end) => Action::Finish(end.clone()),
        }
    }

    /// Advances on `event` at wall-clock `now_ms`; see the module doc.
    pub fn next(&mut self, event: Event, now_ms: i64) -> Action {
        let state = std::mem::replace(&mut self.state, State::Done(End::Completed));
        let (state, action) = self.transition(state, event, now_ms);
        self.state = state;
        action
    }

    fn transition(&self, state: State, event: Event, now_ms: i64) -> (State, Action) {
        match (state, event) {
            (State::Apply { index }, Event::Applied) if index < self.of() => {
                let until_ms = now_ms.saturating_add(self.delay_ms);
                let state = State::Settling {
                    index,
                    until_ms,
                    checking: false,
                };
                (state, Action::Wait { until_ms })
            }
            (State::Apply { index }, Event::NewerWaiting) => {
                let end = End::Superseded {
                    steps: index,
                    reached: self.good_before(index),
                };
                (State::Done(end.clone()), Action::Finish(end))
            }
            (
                State::Settling {
                    index,
                    until_ms,
                    checking: false,
                },
                Event::Elapsed,
            ) if now_ms >= until_ms => {
                let state = State::Settling {
                    index,
                    until_ms,
                    checking: true,
                };
                (state, self.validate(index))
            }
            (
                State::Paused {
                    index,
                    until_ms,
                    checking: false,
                },
                Event::Elapsed,
            ) if now_ms >= until_ms => {
                let state = State::Paused {
                    index,
                    until_ms,
                    checking: true,
                };
                (state, self.validate(index))
            }
            (
                State::Settling {
                    index,
                    checking: true,
                    ..
                }
                | State::Paused {
                    index,
                    checking: true,
                    ..
                },
                Event::Checked(v),
            ) if v.ok() => self.passed(index),
            (
                State::Settling {
                    index,
                    checking: true,
                    ..
                },
                Event::Checked(v),
            ) => {
                let until_ms = now_ms.saturating_add(self.delay_ms.saturating_mul(2));
                let failure = v
                    .failures
                    .into_iter()
                    .next()
                    .unwrap_or_else(unknown_failure);
                (
                    State::Paused {
                        index,
                        until_ms,
                        checking: false,
                    },
                    Action::Pause {
                        step: index + 1,
                        until_ms,
                        failure,
                    },
                )
            }
            (
                State::Paused {
                    index,
                    checking: true,
                    ..
                },
                Event::Checked(v),
            ) => {
                let failure = v
                    .failures
                    .into_iter()
                    .next()
                    .unwrap_or_else(unknown_failure);
                let to = self.good_before(index);
                let action = Action::RollBack {
                    failed: index + 1,
                    to,
                    failure: failure.clone(),
                };
                (State::RollingBack { index, to, failure }, action)
            }
            (State::RollingBack { index, to, failure }, Event::Applied) => {
                let end = End::RolledBack {
                    failed: index + 1,
                    to,
                    failure,
                };
                (State::Done(end.clone()), Action::Finish(end))
            }
            // Anything else changes nothing: the state's action again.
            (state, _) => {
                let walk = Walk {
                    state,
                    ..self.clone()
                };
                let action = walk.action();
                (walk.state, action)
            }
        }
    }

    fn validate(&self, index: usize) -> Action {
        Action::Validate {
            step: index + 1,
            capacity: self.steps[index],
        }
    }

    fn passed(&self, index: usize) -> (State, Action) {
        let next = index + 1;
        if next >= self.of() {
            (State::Done(End::Completed), Action::Finish(End::Completed))
        } else {
            let state = State::Apply { index: next };
            let action = Action::Apply {
                capacity: self.steps[next],
                step: next + 1,
                of: self.of(),
            };
            (state, action)
        }
    }
}

fn unknown_failure() -> Failure {
    Failure {
        check: "validation".into(),
        observed: None,
        threshold: None,
        text: "validation failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn steps_table() {
        let cases: [(u32, u32, u32, &[u32]); 8] = [
            (5, 5, 2, &[]),
            (5, 15, 2, &[7, 9, 11, 13, 15]),
            (5, 10, 2, &[7, 9, 10]),
            (15, 5, 2, &[13, 11, 9, 7, 5]),
            (10, 5, 2, &[8, 6, 5]),
            (3, 4, 2, &[4]),
            (0, 3, 0, &[1, 2, 3]),
            (u32::MAX - 1, u32::MAX, 5, &[u32::MAX]),
        ];
        for (from, desired, step, want) in cases {
            assert_eq!(
                steps(from, desired, step),
                want,
                "{from} -> {desired} by {step}"
            );
        }
    }

    #[test]
    fn applies_only_beyond_one_step() {
        let g = Gradual {
            step: 2,
            delay_secs: 1,
            health_check: None,
            gates: vec![],
        };
        let cases = [
            (5, 7, false),
            (5, 8, true),
            (8, 5, true),
            (7, 5, false),
            (5, 5, false),
        ];
        for (from, to, want) in cases {
            assert_eq!(g.applies(from, to), want, "{from} -> {to}");
        }
    }

    fn latest(values: &[(&str, Option<&str>, i64, f64)]) -> Latest {
        let mut l = Latest::default();
        for (m, i, ts, v) in values {
            l.record(m, *i, *ts, *v);
        }
        l
    }

    #[test]
    fn gate_verdicts() {
        let gates = Gate::runbook_defaults();
        let since = 1_000;
        type Case<'a> = (
            &'a str,
            Latest,
            Option<Result<String, String>>,
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: Vec<Case> = vec![
            (
                "no samples: nothing judged, passes",
                latest(&[]),
                None,
                &[],
                &["error_rate", "p99_latency", "avg_cpu"],
            ),
            (
                "all under",
                latest(&[
                    ("error_rate", None, 2_000, 0.005),
                    ("p99_latency", None, 2_000, 0.2),
                    ("cpu", Some("a"), 2_000, 0.5),
                ]),
                None,
                &[],
                &[],
            ),
            (
                "error rate above 1%",
                latest(&[
                    ("error_rate", None, 2_000, 0.03),
                    ("p99_latency", None, 2_000, 0.2),
                    ("cpu", None, 2_000, 0.5),
                ]),
                None,
                &["error_rate 3% > 1%"],
                &[],
            ),
            (
                "at the threshold passes",
                latest(&[
                    ("error_rate", None, 2_000, 0.01),
                    ("p99_latency", None, 2_000, 0.5),
                    ("cpu", None, 2_000, 0.85),
                ]),
                None,
                &[],
                &[],
            ),
            (
                "avg over instances: 0.8 and 0.95 average 0.875 > 85%",
                latest(&[
                    ("cpu", Some("a"), 2_000, 0.8),
                    ("cpu", Some("b"), 2_000, 0.95),
                ]),
                None,
                &["avg_cpu 87.5% > 85%"],
                &["error_rate", "p99_latency"],
            ),
            (
                "a stale sample is not judged",
                latest(&[("p99_latency", None, 999, 2.0)]),
                None,
                &[],
                &["error_rate", "p99_latency", "avg_cpu"],
            ),
            (
                "latency in seconds, shown in ms",
                latest(&[("p99_latency", None, 2_000, 0.75)]),
                None,
                &["p99_latency 750ms > 500ms"],
                &["error_rate", "avg_cpu"],
            ),
            (
                "health check failure comes first",
                latest(&[("error_rate", None, 2_000, 0.5)]),
                Some(Err(
                    "health check http://x/h answered 503, expected 200".into()
                )),
                &[
                    "health check http://x/h answered 503, expected 200",
                    "error_rate 50% > 1%",
                ],
                &["p99_latency", "avg_cpu"],
            ),
        ];
        for (name, latest, health, failed, unjudged) in cases {
            let v = judge(&gates, &latest, since, health);
            let got: Vec<&str> = v.failures.iter().map(|f| f.text.as_str()).collect();
            assert_eq!(got, failed, "{name}");
            assert_eq!(v.unjudged, unjudged, "{name}");
            assert_eq!(v.ok(), failed.is_empty(), "{name}");
        }
    }

    #[test]
    fn latest_keeps_the_newest_and_stays_bounded() {
        let mut l = latest(&[("cpu", Some("a"), 10, 0.5), ("cpu", Some("a"), 5, 0.9)]);
        assert_eq!(
            l.value(Aggregation::Max, "cpu", 0),
            Some(0.5),
            "older sample ignored"
        );
        l.record("cpu", Some("a"), 11, f64::NAN);
        assert_eq!(
            l.value(Aggregation::Max, "cpu", 0),
            Some(0.5),
            "NaN ignored"
        );
        for i in 0..(MAX_INSTANCES + 10) {
            l.record("cpu", Some(&format!("i{i}")), 100 + i as i64, 0.1);
        }
        assert_eq!(l.instances("cpu"), MAX_INSTANCES);
    }

    fn pass() -> Event {
        Event::Checked(Verdict::default())
    }

    fn fail(text: &str) -> Event {
        Event::Checked(Verdict {
            failures: vec![Failure {
                check: "health check".into(),
                observed: None,
                threshold: None,
                text: text.into(),
            }],
            ..Verdict::default()
        })
    }

    /// Drives a walk of 5 steps (5 -> 15 by 2, delay 1 s) with `verdicts`
    /// for successive validations; returns the actions it asked for.
    fn drive(verdicts: &[bool]) -> (Vec<Action>, End) {
        let mut walk = Walk::new(5, 15, 2, 1);
        let mut now = 0;
        let mut actions = vec![walk.action()];
        let mut verdicts = verdicts.iter();
        loop {
            let event = match actions.last().unwrap() {
                Action::Apply { .. } | Action::RollBack { .. } => Event::Applied,
                Action::Wait { until_ms } | Action::Pause { until_ms, .. } => {
                    now = *until_ms;
                    Event::Elapsed
                }
                Action::Validate { .. } => match verdicts.next() {
                    Some(true) | None => pass(),
                    Some(false) => fail("unhealthy"),
                },
                Action::Finish(end) => {
                    let end = end.clone();
                    return (actions, end);
                }
            };
            actions.push(walk.next(event, now));
        }
    }

    fn applied(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Apply { capacity, .. } => Some(*capacity),
                Action::RollBack { to, .. } => Some(*to),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn walks_table() {
        let cases: [(&str, &[bool], &[u32], End); 5] = [
            ("all pass", &[], &[7, 9, 11, 13, 15], End::Completed),
            (
                "a failure that clears on the re-check goes on",
                &[true, false, true],
                &[7, 9, 11, 13, 15],
                End::Completed,
            ),
            (
                "unhealthy from step 3: rolled back to step 2",
                &[true, true, false, false],
                &[7, 9, 11, 9],
                End::RolledBack {
                    failed: 3,
                    to: 9,
                    failure: Failure {
                        check: "health check".into(),
                        observed: None,
                        threshold: None,
                        text: "unhealthy".into(),
                    },
                },
            ),
            (
                "the first step failing twice goes back to the start",
                &[false, false],
                &[7, 5],
                End::RolledBack {
                    failed: 1,
                    to: 5,
                    failure: Failure {
                        check: "health check".into(),
                        observed: None,
                        threshold: None,
                        text: "unhealthy".into(),
                    },
                },
            ),
            (
                "the last step failing twice goes back to step 4",
                &[true, true, true, true, false, false],
                &[7, 9, 11, 13, 15, 13],
                match drive(&[true, true, true, true, false, false]).1 {
                    e @ End::RolledBack {
                        failed: 5, to: 13, ..
                    } => e,
                    other => panic!("{other:?}"),
                },
            ),
        ];
        for (name, verdicts, want_applied, want_end) in cases {
            let (actions, end) = drive(verdicts);
            assert_eq!(applied(&actions), want_applied, "{name}");
            assert_eq!(end, want_end, "{name}");
        }
    }

    #[test]
    fn pause_is_twice_the_delay_and_waits_are_honoured() {
        let mut walk = Walk::new(5, 15, 2, 30);
        assert_eq!(
            walk.next(Event::Applied, 1_000),
            Action::Wait { until_ms: 31_000 }
        );
        // Too early: the wait is asked for again.
        assert_eq!(
            walk.next(Event::Elapsed, 30_999),
            Action::Wait { until_ms: 31_000 }
        );
        assert_eq!(
            walk.next(Event::Elapsed, 31_000),
            Action::Validate {
                step: 1,
                capacity: 7
            }
        );
        match walk.next(fail("x"), 31_500) {
            Action::Pause {
                step: 1, until_ms, ..
            } => assert_eq!(until_ms, 91_500),
            other => panic!("{other:?}"),
        }
        // A stray event repeats the wait, it does not skip it.
        assert_eq!(walk.next(pass(), 40_000), Action::Wait { until_ms: 91_500 });
    }

    #[test]
    fn a_newer_command_stops_the_walk_at_the_last_good_step() {
        let mut walk = Walk::new(5, 15, 2, 1);
        walk.next(Event::Applied, 0);
        walk.next(Event::Elapsed, 1_000);
        assert_eq!(
            walk.next(pass(), 1_000),
            Action::Apply {
                capacity: 9,
                step: 2,
                of: 5
            }
        );
        assert_eq!(
            walk.next(Event::NewerWaiting, 1_000),
            Action::Finish(End::Superseded {
                steps: 1,
                reached: 7
            })
        );
        // Before any step: stays at the start.
        let mut fresh = Walk::new(5, 15, 2, 1);
        assert_eq!(
            fresh.next(Event::NewerWaiting, 0),
            Action::Finish(End::Superseded {
                steps: 0,
                reached: 5
            })
        );
    }

    #[test]
    fn resuming_applies_the_step_reached_again() {
        let walk = Walk::new(5, 15, 2, 1).resume(3);
        assert_eq!(
            walk.action(),
            Action::Apply {
                capacity: 11,
                step: 3,
                of: 5
            }
        );
        let beyond = Walk::new(5, 15, 2, 1).resume(9);
        assert_eq!(
            beyond.action(),
            Action::Apply {
                capacity: 15,
                step: 5,
                of: 5
            }
        );
    }

    proptest! {
        #[test]
        fn steps_are_monotone_bounded_and_end_at_desired(
            from in 0u32..500, desired in 0u32..500, step in 1u32..50,
        ) {
            let s = steps(from, desired, step);
            let mut prev = from;
            for &c in &s {
                prop_assert!(c.abs_diff(prev) <= step && c != prev);
                prop_assert!((desired >= from && c > prev) || (desired < from && c < prev));
                prev = c;
            }
            prop_assert_eq!(s.last().copied().unwrap_or(from), desired);
            prop_assert_eq!(s.len() as u32, from.abs_diff(desired).div_ceil(step));
        }

        #[test]
        fn a_rollback_target_is_a_step_that_passed(
            from in 0u32..60, desired in 0u32..60, step in 1u32..8,
            verdicts in proptest::collection::vec(any::<bool>(), 0..40),
            newer_at in proptest::option::of(0usize..20),
        ) {
            let mut walk = Walk::new(from, desired, step, 1);
            let mut passed = vec![from];
            let mut now = 0;
            let mut action = walk.action();
            let mut verdicts = verdicts.into_iter();
            let mut applies = 0usize;
            let end = loop {
                let event = match &action {
                    Action::Apply { capacity, .. } => {
                        applies += 1;
                        if newer_at == Some(applies) { Event::NewerWaiting } else {
                            prop_assert!(walk.steps.contains(capacity));
                            Event::Applied
                        }
                    }
                    Action::RollBack { to, .. } => {
                        prop_assert!(passed.contains(to), "rollback to {} not among passed {:?}", to, passed);
                        Event::Applied
                    }
                    Action::Wait { until_ms } | Action::Pause { until_ms, .. } => {
                        now = *until_ms;
                        Event::Elapsed
                    }
                    Action::Validate { capacity, .. } => {
                        let ok = verdicts.next().unwrap_or(true);
                        if ok { passed.push(*capacity); pass() } else { fail("no") }
                    }
                    Action::Finish(end) => break end.clone(),
                };
                action = walk.next(event, now);
                prop_assert!(applies <= 2 * walk.of() + 2, "runaway walk");
            };
            match end {
                End::Completed => prop_assert_eq!(passed.last().copied(), Some(desired)),
                End::RolledBack { to, .. } => prop_assert!(passed.contains(&to)),
                End::Superseded { reached, .. } => prop_assert_eq!(passed.last().copied(), Some(reached)),
            }
        }
    }
}
