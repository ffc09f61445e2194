//! Target tracking, the Kubernetes HPA algorithm: a rule keeps a metric near
//! a target value by asking for `ceil(current * observed / target)` instances,
//! shaped by the HPA's `behavior`:
//!
//! 1. [`recommend`]: the raw recommendation, with a tolerance band (0.1 by
//!    default) inside which the current capacity stands.
//! 2. [`Recommendations::stabilize`]: per-direction stabilization windows.
//!    A scale-up goes only as high as the *lowest* recommendation of the up
//!    window, a scale-down only as low as the *highest* of the down window
//!    (300 s by default), so a brief dip does not remove capacity.
//! 3. [`rate_limit`]: per-direction policies, each allowing a change of
//!    `Pods` instances or `Percent` of the capacity at the start of its
//!    period, combined by `selectPolicy` (`Max`: the policy allowing the
//!    biggest change, `Min`: the smallest, `Disabled`: no change at all).
//!
//! The live system splits the work: the evaluator, which sees every sample,
//! runs steps 1 and 2 every `interval` of event time; the arbiter, which
//! owns the record of past actions, runs step 3 and the bounds. [`Hpa`]
//! chains all three in one place, as the HPA controller does, and is the
//! reference the backtest compares against. Every function takes the time
//! as an argument.

use crate::units::secs_to_ms;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::wire::Direction;

/// The HPA's default tolerance: within 10 % of the target nothing changes.
pub const HPA_TOLERANCE: f64 = 0.1;
/// The HPA's default sync period, seconds.
pub const HPA_SYNC_SECS: u64 = 15;

/// How a rate-limit policy counts the change it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// A number of instances per period.
    Pods,
    /// A percentage of the capacity at the start of the period.
    Percent,
}

/// One rate-limit policy: at most `value` Pods or Percent per `period_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatePolicy {
    /// Pods or Percent.
    pub kind: PolicyKind,
    /// How many instances, or what percentage.
    pub value: u32,
    /// The period the change is counted over, seconds.
    pub period_secs: u64,
}

impl RatePolicy {
    /// `4 pods per 15s`, `100% per 15s`.
    pub fn describe(&self) -> String {
        match self.kind {
            PolicyKind::Pods => format!("{} pods per {}s", self.value, self.period_secs),
            PolicyKind::Percent => format!("{}% per {}s", self.value, self.period_secs),
        }
    }
}

/// How several policies of one direction combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    /// The policy allowing the biggest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

impl SelectPolicy {
    /// `max`, `min`, `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            SelectPolicy::Max => "max",
            SelectPolicy::Min => "min",
            SelectPolicy::Disabled => "disabled",
        }
    }
}

/// The behavior of one direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingRules {
    /// Seconds of recommendations a change must agree with.
    pub stabilization_window_secs: u64,
    /// How the policies combine.
    pub select: SelectPolicy,
    /// The rate limits (none: unlimited).
    pub policies: Vec<RatePolicy>,
}

/// Per-direction behavior, as the HPA's `spec.behavior`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behavior {
    /// Scale-up.
    pub scale_up: ScalingRules,
    /// Scale-down.
    pub scale_down: ScalingRules,
}

impl Default for Behavior {
    /// The HPA's documented defaults: up at once, by at most the larger of
    /// 100 % and 4 pods per 15 s; down after a 300 s window, by up to 100 %
    /// per 15 s.
    fn default() -> Self {
        Behavior {
            scale_up: ScalingRules {
                stabilization_window_secs: 0,
                select: SelectPolicy::Max,
                policies: vec![
                    RatePolicy {
                        kind: PolicyKind::Percent,
                        value: 100,
                        period_secs: 15,
                    },
                    RatePolicy {
                        kind: PolicyKind::Pods,
                        value: 4,
                        period_secs: 15,
                    },
                ],
            },
            scale_down: ScalingRules {
                stabilization_window_secs: 300,
                select: SelectPolicy::Max,
                policies: vec![RatePolicy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period_secs: 15,
                }],
            },
        }
    }
}

impl Behavior {
    /// The rules of `direction` (down for anything not up).
    pub fn rules(&self, direction: Direction) -> &ScalingRules {
        match direction {
            Direction::Up => &self.scale_up,
            _ => &self.scale_down,
        }
    }

    /// The longest period any policy counts over, seconds.
    pub fn longest_period_secs(&self) -> u64 {
        self.scale_up
            .policies
            .iter()
            .chain(&self.scale_down.policies)
            .map(|p| p.period_secs)
            .max()
            .unwrap_or(0)
    }
}

/// The raw recommendation: `ceil(current * observed / target)`, or `current`
/// while `observed / target` is within `tolerance` of 1. From zero instances
/// the formula cannot move, so any load asks for one instance (activation).
pub fn recommend(current: u32, observed: f64, target: f64, tolerance: f64) -> u32 {
    if current == 0 {
        return u32::from(observed > 0.0);
    }
    let ratio = observed / target;
    if !ratio.is_finite() || (1.0 - ratio).abs() <= tolerance {
        return current;
    }
    let desired = (f64::from(current) * ratio).ceil();
    if desired >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        desired.max(0.0) as u32
    }
}

/// A recommendation kept for the stabilization windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    /// When it was made, event time ms.
    pub ts: i64,
    /// The raw recommendation.
    pub desired: u32,
}

/// What stabilization made of a raw recommendation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stabilized {
    /// The stabilized recommendation.
    pub desired: u32,
    /// Set when a window held the recommendation back: the direction whose
    /// window did it.
    pub held_by: Option<Direction>,
}

/// The recent raw recommendations of one rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendations {
    entries: VecDeque<Recommendation>,
}

impl Recommendations {
    /// Records `raw` at `now_ms` and returns the recommendation stabilized
    /// against the windows of `behavior`: no higher than the lowest
    /// recommendation of the up window, no lower than the highest of the
    /// down window, and `current` when those agree on no change.
    pub fn stabilize(
        &mut self,
        now_ms: i64,
        raw: u32,
        current: u32,
        behavior: &Behavior,
    ) -> Stabilized {
        let up_cutoff =
            now_ms.saturating_sub(secs_to_ms(behavior.scale_up.stabilization_window_secs));
        let down_cutoff =
            now_ms.saturating_sub(secs_to_ms(behavior.scale_down.stabilization_window_secs));
        let oldest_needed = up_cutoff.min(down_cutoff);
        while self.entries.front().is_some_and(|r| r.ts <= oldest_needed) {
            self.entries.pop_front();
        }
        let (mut up, mut down) = (raw, raw);
        for r in &self.entries {
            if r.ts > up_cutoff {
                up = up.min(r.desired);
            }
            if r.ts > down_cutoff {
                down = down.max(r.desired);
            }
        }
        self.entries.push_back(Recommendation {
            ts: now_ms,
            desired: raw,
        });
        let desired = current.max(up).min(down);
        let held_by = if desired == raw {
            None
        } else if raw > current {
            Some(Direction::Up)
        } else {
            Some(Direction::Down)
        };
        Stabilized { desired, held_by }
    }

    /// How many recommendations are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when none are kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A past change of capacity, counted by the rate-limit policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleEvent {
    /// When, event time ms.
    pub ts: i64,
    /// Instances added (positive) or removed (negative).
    pub change: i64,
}

/// What the rate-limit policies allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// The capacity allowed now, between `current` and the asked capacity.
    pub desired: u32,
    /// Why it is less than asked, if it is.
    pub limited_by: Option<String>,
}

/// Limits a move from `current` to `desired` by the policies of its
/// direction, counting the changes of `events` inside each policy's period
/// (as the HPA's `calculateScaleUpLimitWithScalingRules`).
pub fn rate_limit(
    current: u32,
    desired: u32,
    now_ms: i64,
    events: &VecDeque<ScaleEvent>,
    behavior: &Behavior,
) -> RateLimited {
    let direction = match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Direction::Up,
        std::cmp::Ordering::Less => Direction::Down,
        std::cmp::Ordering::Equal => {
            return RateLimited {
                desired,
                limited_by: None,
            };
        }
    };
    let rules = behavior.rules(direction.clone());
    let word = if direction == Direction::Up {
        "scale-up"
    } else {
        "scale-down"
    };
    if rules.select == SelectPolicy::Disabled {
        return RateLimited {
            desired: current,
            limited_by: Some(format!("{word} is disabled (selectPolicy disabled)")),
        };
    }
    if rules.policies.is_empty() {
        return RateLimited {
            desired,
            limited_by: None,
        };
    }
    let current_i = i64::from(current);
    // Each policy's limit, from the capacity at the start of its period.
    let limits = rules.policies.iter().map(|policy| {
        let since = now_ms.saturating_sub(secs_to_ms(policy.period_secs));
        let changed: i64 = events
            .iter()
            .filter(|e| e.ts > since)
            .map(|e| e.change)
            .sum();
        let period_start = (current_i - changed).max(0);
        let limit = match (&direction, policy.kind) {
            (Direction::Up, PolicyKind::Pods) => period_start + i64::from(policy.value),
            (Direction::Up, PolicyKind::Percent) => {
                (period_start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i64
            }
            (_, PolicyKind::Pods) => period_start - i64::from(policy.value),
            (_, PolicyKind::Percent) => {
                (period_start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i64
            }
        };
        (policy, limit)
    });
    // Max means the biggest change: the highest limit up, the lowest down.
    let biggest_change = (direction == Direction::Up) == (rules.select == SelectPolicy::Max);
    let chosen = if biggest_change {
        limits.max_by_key(|(_, limit)| *limit)
    } else {
        limits.min_by_key(|(_, limit)| *limit)
    };
    let Some((policy, limit)) = chosen else {
        return RateLimited {
            desired,
            limited_by: None,
        };
    };
    // A limit behind the current capacity allows no change, never a reversal.
    let limit = if direction == Direction::Up {
        limit.max(current_i)
    } else {
        limit.min(current_i)
    };
    let limit = u32::try_from(limit.max(0)).unwrap_or(u32::MAX);
    let over = if direction == Direction::Up {
        desired > limit
    } else {
        desired < limit
    };
    if !over {
        return RateLimited {
            desired,
            limited_by: None,
        };
    }
    let how = if rules.policies.len() > 1 {
        format!(
            "{} (selectPolicy {} of {})",
            policy.describe(),
            rules.select.as_str(),
            rules
                .policies
                .iter()
                .map(RatePolicy::describe)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        policy.describe()
    };
    RateLimited {
        desired: limit,
        limited_by: Some(format!("{word} limited to {limit} by policy {how}")),
    }
}

/// Drops events older than `period_secs` (the longest period any policy
/// counts over), oldest first.
pub fn prune_events(events: &mut VecDeque<ScaleEvent>, now_ms: i64, period_secs: u64) {
    let horizon = now_ms.saturating_sub(secs_to_ms(period_secs));
    while events.front().is_some_and(|e| e.ts <= horizon) {
        events.pop_front();
    }
}

/// The HPA controller loop in one place, for one scale target: every sync
/// it recommends, stabilizes, rate-limits and bounds, as
/// `pkg/controller/podautoscaler` does for one metric with `behavior`.
#[derive(Debug, Clone)]
pub struct Hpa {
    /// The metric's target value.
    pub target: f64,
    /// The tolerance band.
    pub tolerance: f64,
    /// Behavior.
    pub behavior: Behavior,
    /// Lowest capacity.
    pub min: u32,
    /// Highest capacity.
    pub max: u32,
    recommendations: Recommendations,
    events: VecDeque<ScaleEvent>,
}

impl Hpa {
    /// An HPA with the documented defaults for `target` within `[min, max]`.
    pub fn new(target: f64, min: u32, max: u32) -> Self {
        Hpa {
            target,
            tolerance: HPA_TOLERANCE,
            behavior: Behavior::default(),
            min,
            max,
            recommendations: Recommendations::default(),
            events: VecDeque::new(),
        }
    }

    /// One sync at `now_ms` with the metric at `observed` and `current`
    /// instances: the capacity to set (equal to `current` for no change).
    pub fn sync(&mut self, now_ms: i64, current: u32, observed: f64) -> u32 {
        let raw = recommend(current, observed, self.target, self.tolerance);
        let stabilized = self
            .recommendations
            .stabilize(now_ms, raw, current, &self.behavior)
            .desired;
        prune_events(
            &mut self.events,
            now_ms,
            self.behavior.longest_period_secs(),
        );
        let limited = rate_limit(current, stabilized, now_ms, &self.events, &self.behavior).desired;
        let desired = limited.clamp(self.min, self.max.max(self.min));
        if desired != current {
            self.events.push_back(ScaleEvent {
                ts: now_ms,
                change: i64::from(desired) - i64::from(current),
            });
        }
        desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recommendation_follows_the_ratio_outside_the_tolerance() {
        // (current, observed, target, tolerance, expected)
        let cases = [
            (5, 0.60, 0.60, 0.1, 5),   // on target
            (5, 0.65, 0.60, 0.1, 5),   // ratio 1.083: inside the band
            (5, 0.54, 0.60, 0.1, 5),   // ratio 0.9: on the edge, inside
            (5, 0.90, 0.60, 0.1, 8),   // ratio 1.5: ceil(7.5)
            (5, 0.30, 0.60, 0.1, 3),   // ratio 0.5: ceil(2.5)
            (10, 0.67, 0.60, 0.0, 12), // no tolerance: ceil(11.17)
            (4, 0.0, 0.60, 0.1, 0),    // no load at all
            (0, 5.0, 0.60, 0.1, 1),    // activation from zero
            (0, 0.0, 0.60, 0.1, 0),    // stays at zero
        ];
        for (current, observed, target, tolerance, expected) in cases {
            assert_eq!(
                recommend(current, observed, target, tolerance),
                expected,
                "recommend({current}, {observed}, {target}, {tolerance})"
            );
        }
    }

    fn behavior(up_window: u64, down_window: u64) -> Behavior {
        let mut b = Behavior::default();
        b.scale_up.stabilization_window_secs = up_window;
        b.scale_down.stabilization_window_secs = down_window;
        b
    }

    #[test]
    fn stabilization_windows_hold_back_each_direction() {
        // A history of (secs, raw) fed with `current`, then the expected
        // stabilized value of the last one and which window held it.
        struct Case {
            name: &'static str,
            up_window: u64,
            down_window: u64,
            current: u32,
            history: &'static [(i64, u32)],
            expected: u32,
            held_by: Option<Direction>,
        }
        let cases = [
            Case {
                name: "down waits for the highest recommendation of 300 s",
                up_window: 0,
                down_window: 300,
                current: 10,
                history: &[(0, 10), (100, 6), (200, 4)],
                expected: 10,
                held_by: Some(Direction::Down),
            },
            Case {
                name: "down follows once the high one has left the window",
                up_window: 0,
                down_window: 300,
                current: 10,
                history: &[(0, 10), (100, 6), (200, 4), (301, 4)],
                expected: 6,
                held_by: Some(Direction::Down),
            },
            Case {
                name: "up is immediate without an up window",
                up_window: 0,
                down_window: 300,
                current: 4,
                history: &[(0, 4), (15, 9)],
                expected: 9,
                held_by: None,
            },
            Case {
                name: "an up window takes the lowest recommendation",
                up_window: 60,
                down_window: 300,
                current: 4,
                history: &[(0, 4), (15, 9), (30, 7)],
                expected: 4,
                held_by: Some(Direction::Up),
            },
            Case {
                name: "up window: all recommendations above current",
                up_window: 60,
                down_window: 300,
                current: 4,
                history: &[(0, 6), (15, 9), (30, 7)],
                expected: 6,
                held_by: Some(Direction::Up),
            },
            Case {
                name: "no windows: the raw recommendation",
                up_window: 0,
                down_window: 0,
                current: 10,
                history: &[(0, 12), (15, 3)],
                expected: 3,
                held_by: None,
            },
        ];
        for case in cases {
            let b = behavior(case.up_window, case.down_window);
            let mut recs = Recommendations::default();
            let mut last = None;
            for &(secs, raw) in case.history {
                last = Some(recs.stabilize(secs * 1000, raw, case.current, &b));
            }
            let last = last.expect("history is not empty");
            assert_eq!(last.desired, case.expected, "{}", case.name);
            assert_eq!(last.held_by, case.held_by, "{}", case.name);
        }
    }

    #[test]
    fn old_recommendations_are_dropped() {
        let b = behavior(0, 300);
        let mut recs = Recommendations::default();
        for secs in 0..100 {
            recs.stabilize(secs * 15_000, 5, 5, &b);
        }
        // 300 s of 15 s syncs: the ones strictly inside the window, plus the newest.
        assert_eq!(recs.len(), 20);
    }

    fn rules(select: SelectPolicy, policies: &[(PolicyKind, u32, u64)]) -> ScalingRules {
        ScalingRules {
            stabilization_window_secs: 0,
            select,
            policies: policies
                .iter()
                .map(|&(kind, value, period_secs)| RatePolicy {
                    kind,
                    value,
                    period_secs,
                })
                .collect(),
        }
    }

    #[test]
    fn rate_limits_follow_the_policies_and_select_policy() {
        use PolicyKind::{Percent, Pods};
        use SelectPolicy::{Disabled, Max, Min};
        struct Case {
            name: &'static str,
            up: ScalingRules,
            down: ScalingRules,
            current: u32,
            desired: u32,
            events: &'static [(i64, i64)],
            expected: u32,
        }
        let hpa = Behavior::default();
        let cases = [
            Case {
                name: "default up: max(100%, 4 pods) from 2 is 6",
                up: hpa.scale_up.clone(),
                down: hpa.scale_down.clone(),
                current: 2,
                desired: 20,
                events: &[],
                expected: 6,
            },
            Case {
                name: "default up: max(100%, 4 pods) from 10 is 20",
                up: hpa.scale_up.clone(),
                down: hpa.scale_down.clone(),
                current: 10,
                desired: 50,
                events: &[],
                expected: 20,
            },
            Case {
                name: "min select: the smaller change, 4 pods from 10",
                up: rules(Min, &[(Percent, 100, 15), (Pods, 4, 15)]),
                down: hpa.scale_down.clone(),
                current: 10,
                desired: 50,
                events: &[],
                expected: 14,
            },
            Case {
                name: "changes inside the period count against it",
                up: rules(Max, &[(Pods, 4, 60)]),
                down: hpa.scale_down.clone(),
                current: 13,
                desired: 30,
                events: &[(10, 3)],
                expected: 14,
            },
            Case {
                name: "changes older than the period do not",
                up: rules(Max, &[(Pods, 4, 60)]),
                down: hpa.scale_down.clone(),
                current: 13,
                desired: 30,
                events: &[(-60, 3)],
                expected: 17,
            },
            Case {
                name: "a spent budget allows no change, never a reversal",
                up: rules(Max, &[(Pods, 2, 60)]),
                down: hpa.scale_down.clone(),
                current: 15,
                desired: 30,
                events: &[(10, 5)],
                expected: 15,
            },
            Case {
                name: "within the limit the desired capacity stands",
                up: hpa.scale_up.clone(),
                down: hpa.scale_down.clone(),
                current: 10,
                desired: 12,
                events: &[],
                expected: 12,
            },
            Case {
                name: "up disabled",
                up: rules(Disabled, &[(Pods, 4, 15)]),
                down: hpa.scale_down.clone(),
                current: 10,
                desired: 12,
                events: &[],
                expected: 10,
            },
            Case {
                name: "down percent truncates: 10 * (1 - 0.25) = 7.5 -> 7",
                up: hpa.scale_up.clone(),
                down: rules(Max, &[(Percent, 25, 60)]),
                current: 10,
                desired: 1,
                events: &[],
                expected: 7,
            },
            Case {
                name: "down max select: the biggest change (lowest limit)",
                up: hpa.scale_up.clone(),
                down: rules(Max, &[(Percent, 10, 60), (Pods, 3, 60)]),
                current: 20,
                desired: 1,
                events: &[],
                expected: 17,
            },
            Case {
                name: "down min select: the smallest change (highest limit)",
                up: hpa.scale_up.clone(),
                down: rules(Min, &[(Percent, 10, 60), (Pods, 3, 60)]),
                current: 20,
                desired: 1,
                events: &[],
                expected: 18,
            },
            Case {
                name: "down counts removals inside the period",
                up: hpa.scale_up.clone(),
                down: rules(Max, &[(Pods, 3, 60)]),
                current: 18,
                desired: 1,
                events: &[(30, -2)],
                expected: 17,
            },
            Case {
                name: "down disabled",
                up: hpa.scale_up.clone(),
                down: rules(Disabled, &[]),
                current: 18,
                desired: 1,
                events: &[],
                expected: 18,
            },
        ];
        for case in cases {
            let behavior = Behavior {
                scale_up: case.up,
                scale_down: case.down,
            };
            let events: VecDeque<ScaleEvent> = case
                .events
                .iter()
                .map(|&(secs, change)| ScaleEvent {
                    ts: secs * 1000,
                    change,
                })
                .collect();
            let limited = rate_limit(case.current, case.desired, 40_000, &events, &behavior);
            assert_eq!(limited.desired, case.expected, "{}", case.name);
            assert_eq!(
                limited.limited_by.is_some(),
                case.expected != case.desired,
                "{}: {:?}",
                case.name,
                limited.limited_by
            );
        }
    }

    #[test]
    fn hpa_reference_scales_up_in_steps_and_down_after_the_window() {
        let mut hpa = Hpa::new(0.5, 1, 100);
        // A load of 16 instances' worth at the target arrives at once.
        let load = 8.0; // cpu-seconds per second
        let mut current = 2;
        let mut path = vec![current];
        for sync in 0..4 {
            current = hpa.sync(sync * 15_000, current, load / f64::from(current));
            path.push(current);
        }
        // 2 -> 6 (4 pods beats 100 %) -> 12 (100 %) -> 16 (on target) -> 16.
        assert_eq!(path, vec![2, 6, 12, 16, 16]);
        // The load halves: nothing until the last 16 has left the 300 s
        // window (it was made at 45 s), then down to 8 in one go.
        let mut downs = Vec::new();
        for sync in 4..30 {
            let now = sync * 15_000;
            let next = hpa.sync(now, current, load / 2.0 / f64::from(current));
            if next != current {
                downs.push((now / 1000, next));
            }
            current = next;
        }
        assert_eq!(downs, vec![(345, 8)]);
    }
}
