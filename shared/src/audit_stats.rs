//! The runbook's section 8 figures ("Monitoring & Alerts", its
//! `ScalingMetricsDashboard`), computed from audit records: records in,
//! figures out, the time range passed in. The audit service serves them on
//! `nova.ctl.audit.stats` and `novactl audit stats` prints them; both call
//! [`compute`], so they cannot disagree.
//!
//! Definitions, per target, over the span `[from_ms, to_ms]`:
//!
//! | figure | definition |
//! |---|---|
//! | `actions` | result records of a capacity change that was tried: `succeeded`, `failed` or `rolled_back` (`skipped` and `superseded` change nothing and are not actions) |
//! | `successes`, `failures` | `succeeded`; `failed` + `rolled_back`. `actions = successes + failures` |
//! | `success_rate` | `successes / actions`, the runbook's `calculate_scaling_efficiency` as a ratio; 1.0 when there was no action, as the runbook's 100.0 for an empty list |
//! | `scale_ups`, `scale_downs` | successful actions by direction (`to` against `from`; the runbook's `direction`) |
//! | `capacity_moved` | the sum of `|to - from|` of successful actions (the runbook's `magnitude`) |
//! | `scaling_velocity_per_hour` | `capacity_moved` per hour of the span: the runbook names `scaling_velocity` and leaves it 0; capacity units changed per hour is what it can mean from these records |
//! | `flapping_episodes` | maximal runs of successful actions in which each action reverses the previous one's direction within the flap window (default the policy default, 1800 s): up then down within 30 min is one episode of one reversal; up, down, up is one episode of two |
//! | `reversals` | the reversals inside those episodes |
//! | `flapping_notes` | the arbiter's own `flapping` records (more than `flapping.max_reversals` in its window, cooldown raised) |
//! | `max` | the target's maximum as the records show it: the smallest capacity an `at_max` decision was taken at; unknown without one |
//! | `time_at_max_secs` | how long the capacity was at (or above) `max`, from the capacities the records show (a decision's `from`, a successful result's `to`), each held until the next; 0 when `max` is unknown |
//! | `not_taken` | decisions not taken, by outcome (`cooldown`, `at_max`, ...) |
//!
//! Records outside the span are ignored, except that the newest capacity
//! before the span tells what the span starts at.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::wire::{AuditKind, AuditRecord, Outcome, ResultStatus};

/// The policy default of the flap window (`flapping.window_secs`).
pub const DEFAULT_FLAP_WINDOW_SECS: u64 = 1800;

/// The control verb of stats requests: `nova.ctl.audit.stats`.
pub const STATS_VERB: &str = "audit.stats";

/// A request on `nova.ctl.audit.stats`. The reply is [`AuditStats`], or an
/// `ErrorReply` (`{error}`) for a request that cannot be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StatsRequest {
    /// Only this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Start of the span, unix ms, not before 1970 (default: an hour before
    /// `until_ms`, or 0 if that is earlier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0)))]
    pub since_ms: Option<i64>,
    /// End of the span, unix ms, not before 1970 (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0)))]
    pub until_ms: Option<i64>,
    /// The flap window, seconds (default 1800, the policy default of
    /// `flapping.window_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flap_window_secs: Option<u64>,
}

/// What a request asks for, with the defaults filled in against `now_ms`;
/// an error names what is wrong.
pub fn resolve(request: &StatsRequest, now_ms: i64) -> Result<Span, String> {
    for (name, value) in [
        ("since_ms", request.since_ms),
        ("until_ms", request.until_ms),
    ] {
        if let Some(ms) = value.filter(|ms| *ms < 0) {
            return Err(format!(
                "{name} {ms} is before 1970: give unix milliseconds, 0 or more"
            ));
        }
    }
    let to_ms = request.until_ms.unwrap_or(now_ms);
    let from_ms = request
        .since_ms
        .unwrap_or_else(|| to_ms.saturating_sub(3_600_000).max(0));
    if from_ms > to_ms {
        return Err(format!(
            "since_ms {from_ms} is after until_ms {to_ms}: give a start before the end"
        ));
    }
    Ok(Span { from_ms, to_ms })
}

/// A time range, unix ms, both ends included; `from_ms <= to_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Start.
    pub from_ms: i64,
    /// End.
    pub to_ms: i64,
}

/// The figures of every target with a record in the span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditStats {
    /// Start of the span, unix ms.
    #[cfg_attr(feature = "schema", schemars(range(min = 0)))]
    pub from_ms: i64,
    /// End of the span, unix ms (not before `from_ms`).
    #[cfg_attr(feature = "schema", schemars(range(min = 0)))]
    pub to_ms: i64,
    /// The flap window used, seconds.
    pub flap_window_secs: u64,
    /// Records read in the span.
    pub records: usize,
    /// One entry per target, by name.
    pub targets: Vec<TargetStats>,
}

/// One target's figures (see the module doc for each definition).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TargetStats {
    /// The target.
    pub target: String,
    /// Capacity changes tried (successes + failures).
    pub actions: u32,
    /// Actions that succeeded.
    pub successes: u32,
    /// Actions that failed or were rolled back.
    pub failures: u32,
    /// successes / actions, 1.0 without actions.
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1)))]
    pub success_rate: f64,
    /// Successful actions that added capacity.
    pub scale_ups: u32,
    /// Successful actions that removed capacity.
    pub scale_downs: u32,
    /// Sum of |to - from| of successful actions.
    pub capacity_moved: u64,
    /// capacity_moved per hour of the span.
    #[cfg_attr(feature = "schema", schemars(range(min = 0)))]
    pub scaling_velocity_per_hour: f64,
    /// Runs of direction reversals within the flap window.
    pub flapping_episodes: u32,
    /// Reversals inside those runs.
    pub reversals: u32,
    /// The arbiter's `flapping` records.
    pub flapping_notes: u32,
    /// The maximum as the records show it.
    pub max: Option<u32>,
    /// Seconds at or above `max`.
    #[cfg_attr(feature = "schema", schemars(range(min = 0)))]
    pub time_at_max_secs: f64,
    /// Decisions not taken, by outcome.
    pub not_taken: BTreeMap<String, u32>,
}

/// The figures of `records` (any order) in `span`, per target (only
/// `target` if given), with flap window `flap_window_secs`.
pub fn compute(
    records: &[AuditRecord],
    span: Span,
    target: Option<&str>,
    flap_window_secs: u64,
) -> AuditStats {
    let mut by_target: BTreeMap<&str, Vec<&AuditRecord>> = BTreeMap::new();
    for record in records {
        if target.is_none_or(|t| t == record.target) && record.ts <= span.to_ms {
            by_target
                .entry(record.target.as_str())
                .or_default()
                .push(record);
        }
    }
    let mut in_span = 0;
    let mut targets = Vec::new();
    for (name, mut mine) in by_target {
        mine.sort_by_key(|r| r.ts);
        let inside = mine.iter().filter(|r| r.ts >= span.from_ms).count();
        if inside == 0 {
            continue;
        }
        in_span += inside;
        targets.push(target_stats(name, &mine, span, flap_window_secs));
    }
    AuditStats {
        from_ms: span.from_ms,
        to_ms: span.to_ms,
        flap_window_secs,
        records: in_span,
        targets,
    }
}

/// A successful action: when, and the capacity before and after.
struct Move {
    ts: i64,
    from: u32,
    to: u32,
}

fn target_stats(
    name: &str,
    records: &[&AuditRecord],
    span: Span,
    flap_window_secs: u64,
) -> TargetStats {
    let mut stats = TargetStats {
        target: name.to_string(),
        ..Default::default()
    };
    // The decision's capacities, for a result that does not carry `from`.
    let decided: BTreeMap<&str, (Option<u32>, Option<u32>)> = records
        .iter()
        .filter(|r| r.kind == AuditKind::Decision && r.outcome == Outcome::Scale.as_str())
        .filter_map(|r| Some((r.decision_id.as_deref()?, (r.from, r.to))))
        .collect();
    let mut moves = Vec::new();
    // (ts, capacity) the records show, in time order.
    let mut capacity: Vec<(i64, u32)> = Vec::new();
    for record in records {
        let inside = record.ts >= span.from_ms;
        match record.kind {
            AuditKind::Decision => {
                if let Some(from) = record.from {
                    capacity.push((record.ts, from));
                }
                if record.outcome == Outcome::AtMax.as_str()
                    && let Some(at) = record.from
                {
                    stats.max = Some(stats.max.map_or(at, |m| m.min(at)));
                }
                if !inside {
                    continue;
                }
                if record.outcome == "flapping" {
                    stats.flapping_notes += 1;
                } else if record.outcome != Outcome::Scale.as_str() {
                    *stats.not_taken.entry(record.outcome.clone()).or_default() += 1;
                }
            }
            AuditKind::Result => {
                let status = ResultStatus::from_wire(&record.outcome);
                if status == ResultStatus::Succeeded
                    && let Some(to) = record.to
                {
                    capacity.push((record.ts, to));
                }
                if !inside {
                    continue;
                }
                match status {
                    ResultStatus::Succeeded => {
                        stats.successes += 1;
                        let decision = record
                            .decision_id
                            .as_deref()
                            .and_then(|id| decided.get(id))
                            .copied()
                            .unwrap_or_default();
                        if let (Some(from), Some(to)) =
                            (record.from.or(decision.0), record.to.or(decision.1))
                        {
                            moves.push(Move {
                                ts: record.ts,
                                from,
                                to,
                            });
                        }
                    }
                    ResultStatus::Failed | ResultStatus::RolledBack => stats.failures += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    stats.actions = stats.successes + stats.failures;
    stats.success_rate = if stats.actions == 0 {
        1.0
    } else {
        f64::from(stats.successes) / f64::from(stats.actions)
    };
    for m in &moves {
        match m.to.cmp(&m.from) {
            std::cmp::Ordering::Greater => stats.scale_ups += 1,
            std::cmp::Ordering::Less => stats.scale_downs += 1,
            std::cmp::Ordering::Equal => {}
        }
        stats.capacity_moved += u64::from(m.to.abs_diff(m.from));
    }
    let hours = span_ms(span) as f64 / 3_600_000.0;
    stats.scaling_velocity_per_hour = if hours > 0.0 {
        stats.capacity_moved as f64 / hours
    } else {
        0.0
    };
    let (episodes, reversals) = flapping(&moves, flap_window_secs);
    stats.flapping_episodes = episodes;
    stats.reversals = reversals;
    if let Some(max) = stats.max {
        stats.time_at_max_secs = time_at(&capacity, span, |c| c >= max) as f64 / 1000.0;
    }
    stats
}

fn span_ms(span: Span) -> i64 {
    span.to_ms.saturating_sub(span.from_ms).max(0)
}

/// Flapping episodes and the reversals in them (see the module doc).
fn flapping(moves: &[Move], window_secs: u64) -> (u32, u32) {
    let window_ms = i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let direction = |m: &Move| m.to.cmp(&m.from);
    let mut episodes = 0;
    let mut reversals = 0;
    let mut in_episode = false;
    let mut last: Option<&Move> = None;
    for m in moves.iter().filter(|m| m.to != m.from) {
        let reversed = last.is_some_and(|prev| {
            direction(prev) != direction(m) && m.ts.saturating_sub(prev.ts) <= window_ms
        });
        if reversed {
            reversals += 1;
            if !in_episode {
                episodes += 1;
                in_episode = true;
            }
        } else {
            in_episode = false;
        }
        last = Some(m);
    }
    (episodes, reversals)
}

/// Milliseconds of `span` in which the capacity (each point held until the
/// next) satisfies `at`. Before the first point the capacity is unknown.
fn time_at(points: &[(i64, u32)], span: Span, at: impl Fn(u32) -> bool) -> i64 {
    let mut points = points.to_vec();
    points.sort_by_key(|p| p.0);
    let mut total = 0;
    for (i, &(ts, capacity)) in points.iter().enumerate() {
        let end = points.get(i + 1).map_or(span.to_ms, |next| next.0);
        let (start, end) = (ts.max(span.from_ms), end.min(span.to_ms));
        if end > start && at(capacity) {
            total += end - start;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Stage;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    /// A record of decision `id` moving `from -> to`, as `stage` writes it.
    fn moved(
        stage: Stage,
        kind: AuditKind,
        audit_id: String,
        ts: i64,
        outcome: &str,
        (id, from, to): (&str, u32, u32),
    ) -> AuditRecord {
        let mut r = AuditRecord::new(audit_id, ts, stage, "web", kind, outcome, String::new());
        r.from = Some(from);
        r.to = Some(to);
        r.decision_id = Some(id.into());
        r
    }

    fn decision(ts: i64, outcome: &str, id: &str, from: u32, to: u32) -> AuditRecord {
        let audit_id = format!("a-{id}-{outcome}");
        moved(
            Stage::Arbiter,
            AuditKind::Decision,
            audit_id,
            ts,
            outcome,
            (id, from, to),
        )
    }

    fn result(ts: i64, status: &str, id: &str, from: u32, to: u32) -> AuditRecord {
        let audit_id = format!("a-{id}-result");
        moved(
            Stage::Actuator,
            AuditKind::Result,
            audit_id,
            ts,
            status,
            (id, from, to),
        )
    }

    /// A decided and applied scale `from -> to` at `ts`.
    fn scaled(ts: i64, id: &str, from: u32, to: u32, status: &str) -> Vec<AuditRecord> {
        vec![
            decision(ts, "scale", id, from, to),
            result(ts + 1000, status, id, from, to),
        ]
    }

    fn span(minutes: i64) -> Span {
        Span {
            from_ms: 0,
            to_ms: minutes * MIN,
        }
    }

    #[test]
    fn figures_follow_the_runbook_definitions() {
        struct Case {
            name: &'static str,
            records: Vec<AuditRecord>,
            want: fn(&TargetStats),
        }
        let cases = [
            Case {
                name: "no action: the runbook's 100 % efficiency",
                records: vec![decision(MIN, "cooldown", "d0", 4, 4)],
                want: |s| {
                    assert_eq!((s.actions, s.successes, s.failures), (0, 0, 0));
                    assert_eq!(s.success_rate, 1.0);
                    assert_eq!(s.not_taken.get("cooldown"), Some(&1));
                },
            },
            Case {
                name: "one success, one failure, one rollback, one superseded",
                records: [
                    scaled(MIN, "d1", 2, 4, "succeeded"),
                    scaled(2 * MIN, "d2", 4, 6, "failed"),
                    scaled(3 * MIN, "d3", 4, 6, "rolled_back"),
                    scaled(4 * MIN, "d4", 4, 6, "superseded"),
                ]
                .concat(),
                want: |s| {
                    assert_eq!((s.actions, s.successes, s.failures), (3, 1, 2));
                    assert!((s.success_rate - 1.0 / 3.0).abs() < 1e-9);
                    assert_eq!((s.scale_ups, s.scale_downs, s.capacity_moved), (1, 0, 2));
                    // 2 units in 60 minutes.
                    assert!((s.scaling_velocity_per_hour - 2.0).abs() < 1e-9);
                },
            },
            Case {
                name: "up, down, up inside the window: one episode, two reversals",
                records: [
                    scaled(MIN, "d1", 2, 4, "succeeded"),
                    scaled(5 * MIN, "d2", 4, 3, "succeeded"),
                    scaled(9 * MIN, "d3", 3, 5, "succeeded"),
                ]
                .concat(),
                want: |s| {
                    assert_eq!((s.flapping_episodes, s.reversals), (1, 2));
                    assert_eq!((s.scale_ups, s.scale_downs, s.capacity_moved), (2, 1, 5));
                },
            },
            Case {
                name: "a reversal after the window is not flapping",
                records: [
                    scaled(MIN, "d1", 2, 4, "succeeded"),
                    scaled(40 * MIN, "d2", 4, 3, "succeeded"),
                ]
                .concat(),
                want: |s| assert_eq!((s.flapping_episodes, s.reversals), (0, 0)),
            },
            Case {
                name: "two episodes split by two moves the same way",
                records: [
                    scaled(MIN, "d1", 2, 4, "succeeded"),
                    scaled(2 * MIN, "d2", 4, 3, "succeeded"),
                    scaled(3 * MIN, "d3", 3, 2, "succeeded"),
                    scaled(4 * MIN, "d4", 2, 5, "succeeded"),
                ]
                .concat(),
                want: |s| assert_eq!((s.flapping_episodes, s.reversals), (2, 2)),
            },
            Case {
                name: "time at max: from the at_max decision's capacity on",
                records: [
                    scaled(10 * MIN, "d1", 2, 5, "succeeded"),
                    vec![decision(20 * MIN, "at_max", "d2", 5, 5)],
                    scaled(40 * MIN, "d3", 5, 3, "succeeded"),
                ]
                .concat(),
                // At 5 from the result at 10 min + 1 s to the down result at 40 min + 1 s.
                want: |s| {
                    assert_eq!(s.max, Some(5));
                    assert_eq!(s.time_at_max_secs, 30.0 * 60.0);
                    assert_eq!(s.not_taken.get("at_max"), Some(&1));
                },
            },
            Case {
                name: "no at_max record: the maximum is unknown",
                records: scaled(MIN, "d1", 2, 5, "succeeded"),
                want: |s| assert_eq!((s.max, s.time_at_max_secs), (None, 0.0)),
            },
            Case {
                name: "the arbiter's flapping notes are counted, not as non-actions",
                records: vec![decision(MIN, "flapping", "d1", 2, 2)],
                want: |s| {
                    assert_eq!(s.flapping_notes, 1);
                    assert!(s.not_taken.is_empty());
                },
            },
        ];
        for case in cases {
            let stats = compute(&case.records, span(60), None, DEFAULT_FLAP_WINDOW_SECS);
            assert_eq!(stats.targets.len(), 1, "{}", case.name);
            (case.want)(&stats.targets[0]);
        }
    }

    #[test]
    fn the_span_and_the_target_select_records() {
        let mut records = [
            scaled(MIN, "d1", 2, 4, "succeeded"),
            scaled(90 * MIN, "d2", 4, 6, "succeeded"),
        ]
        .concat();
        let mut db = decision(MIN, "cooldown", "x", 1, 1);
        db.target = "db".into();
        records.push(db);
        let all = compute(&records, span(60), None, 1800);
        let names: Vec<&str> = all.targets.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(all.targets[1].actions, 1, "the 90-minute action is outside");
        let web = compute(&records, span(60), Some("web"), 1800);
        assert_eq!(web.targets.len(), 1);
        assert_eq!(web.records, 2);
        let later = Span {
            from_ms: 61 * MIN,
            to_ms: 120 * MIN,
        };
        assert_eq!(compute(&records, later, Some("db"), 1800).targets, []);
    }

    #[test]
    fn a_request_resolves_against_the_clock() {
        let now = 10 * HOUR;
        let ask = |since_ms, until_ms| StatsRequest {
            since_ms,
            until_ms,
            ..Default::default()
        };
        let ok = |from_ms, to_ms| Ok(Span { from_ms, to_ms });
        // (request, what it resolves to, or a word of its error)
        let cases: [(StatsRequest, Result<Span, &str>); 8] = [
            (StatsRequest::default(), ok(now - HOUR, now)),
            (ask(Some(HOUR), None), ok(HOUR, now)),
            (ask(None, Some(3 * HOUR)), ok(2 * HOUR, 3 * HOUR)),
            (ask(Some(0), Some(0)), ok(0, 0)),
            // An hour before a time in 1970's first hour is 1970's start.
            (ask(None, Some(60_000)), ok(0, 60_000)),
            (ask(Some(now), Some(now - 1)), Err("after")),
            (ask(Some(-1), None), Err("since_ms -1 is before 1970")),
            (ask(None, Some(-5)), Err("until_ms -5 is before 1970")),
        ];
        for (request, want) in cases {
            match (resolve(&request, now), want) {
                (Ok(span), Ok(want)) => assert_eq!(span, want, "{request:?}"),
                (Err(error), Err(word)) => assert!(error.contains(word), "{request:?}: {error}"),
                (got, want) => panic!("{request:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn any_record() -> impl Strategy<Value = AuditRecord> {
            let outcomes = prop_oneof![
                Just("scale"),
                Just("cooldown"),
                Just("at_max"),
                Just("flapping"),
                Just("succeeded"),
                Just("failed"),
                Just("rolled_back"),
                Just("skipped"),
            ];
            (0i64..7_200_000, outcomes, 0u32..5, 0u32..20, 0u32..20).prop_map(
                |(ts, outcome, id, from, to)| {
                    let id = format!("d{id}");
                    match outcome {
                        "succeeded" | "failed" | "rolled_back" | "skipped" => {
                            result(ts, outcome, &id, from, to)
                        }
                        _ => decision(ts, outcome, &id, from, to),
                    }
                },
            )
        }

        proptest! {
            #[test]
            fn the_figures_hold_together(
                records in proptest::collection::vec(any_record(), 0..60),
                from in 0i64..3_600_000,
                len in 0i64..7_200_000,
                window in 0u64..4000,
            ) {
                let span = Span { from_ms: from, to_ms: from + len };
                let stats = compute(&records, span, None, window);
                for s in &stats.targets {
                    prop_assert_eq!(s.actions, s.successes + s.failures);
                    prop_assert!((0.0..=1.0).contains(&s.success_rate));
                    prop_assert!(s.time_at_max_secs >= 0.0);
                    prop_assert!(s.time_at_max_secs <= len as f64 / 1000.0 + 1e-9);
                    prop_assert!(s.scale_ups + s.scale_downs <= s.successes);
                    prop_assert!(s.flapping_episodes <= s.reversals);
                    prop_assert!(s.reversals < s.successes.max(1));
                    prop_assert!(s.scaling_velocity_per_hour >= 0.0);
                }
                prop_assert!(stats.records <= records.len());
            }
        }
    }
}
