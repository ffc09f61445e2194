//! Decision-table rows for the clocks: rule triggers on event time,
//! operator and fallback triggers on the wall clock, and what an operator's
//! `scale` and `scale --force` may bypass. Every case runs a publisher whose
//! event time lags the wall clock by ten minutes (or, for the replay, by
//! hours), steps decided in order with the state carried between them.

use super::*;
use crate::policy::from_yaml;

const POLICY: &str = r#"
targets:
  w: {rules: [q], min: 2, max: 12, warmup_secs: 60, backend: {sim: {initial: 5}}}
horizontal_scaling_rules:
  q:
    scale_up: {condition: "queue_depth > 1000", action: "add 2 workers", cooldown: 120}
    scale_down: {condition: "queue_depth < 100", action: "remove 1 worker", cooldown: 120}
"#;

/// Who asks, and for what.
#[derive(Clone, Copy)]
enum Asks {
    /// A rule firing (`q.scale_up` or `q.scale_down`) at this event time, s.
    Rule(&'static str, i64),
    /// `novactl scale w N`.
    Operator(u32),
    /// `novactl scale w N --force`.
    Forced(u32),
    /// The fallback capacity of a silent source.
    Fallback(u32),
}

/// One step: a trigger decided at wall-clock second `now`.
struct Step {
    from: Asks,
    now: i64,
    want: Outcome,
    to: Option<u32>,
    reason_has: &'static str,
}

fn step(from: Asks, now: i64, want: Outcome, to: u32, reason_has: &'static str) -> Step {
    Step {
        from,
        now,
        want,
        to: Some(to),
        reason_has,
    }
}

fn trigger(from: Asks, now_secs: i64, id: String) -> Trigger {
    let (source, ts, rule, direction, action) = match from {
        Asks::Rule(rule, event) => {
            let (direction, action) = if rule.ends_with("up") {
                (Direction::Up, ScaleAction::Add(2))
            } else {
                (Direction::Down, ScaleAction::Remove(1))
            };
            (TriggerSource::Rule, event * 1000, rule, direction, action)
        }
        // The arbiter stamps an operator's trigger with its wall clock.
        Asks::Operator(n) => (
            TriggerSource::Operator,
            now_secs * 1000,
            OPERATOR_RULE,
            Direction::None,
            ScaleAction::Set(n),
        ),
        Asks::Forced(n) => (
            TriggerSource::Operator,
            now_secs * 1000,
            OPERATOR_FORCE_RULE,
            Direction::None,
            ScaleAction::Set(n),
        ),
        Asks::Fallback(n) => (
            TriggerSource::Fallback,
            now_secs * 1000,
            "fallback",
            Direction::None,
            ScaleAction::Set(n),
        ),
    };
    Trigger {
        v: crate::wire::Version::CURRENT,
        id,
        ts,
        target: "w".into(),
        source,
        firings: vec![RuleFiring::plain(rule, direction, action, "")],
        policy_revision: None,
        alert: None,
    }
}

fn capacity(desired: u32, applied_seq: u64) -> CapacityRecord {
    CapacityRecord {
        target: "w".into(),
        desired,
        applied_seq,
        backend: "sim".into(),
        ..Default::default()
    }
}

/// Runs the steps in order from `state` at capacity 5, each command applied
/// before the next step; checks each outcome, capacity and reason.
fn run(name: &str, target: &Target, start: TargetState, steps: &[Step]) -> TargetState {
    let settings = ArbiterSettings::for_target(target, 30);
    let mut state = start;
    let mut observed = capacity(5, 0);
    for (i, s) in steps.iter().enumerate() {
        let trigger = trigger(s.from, s.now, format!("{name}-{i}"));
        let v = decide_at(
            target,
            settings,
            &state,
            Some(&observed),
            &trigger,
            s.now * 1000,
        );
        let why = &v.decision.reason;
        assert_eq!(
            (v.decision.outcome, v.decision.to),
            (s.want.clone(), s.to),
            "{name}, step {i}: {why}"
        );
        assert!(
            why.contains(s.reason_has),
            "{name}, step {i}: {why:?} lacks {:?}",
            s.reason_has
        );
        if let Some(command) = &v.command {
            observed = capacity(command.desired, command.seq);
        }
        state = v.state.expect("a new state");
    }
    state
}

// Wall clock of the first step, s; a publisher ten minutes behind stamps
// its samples 600 s earlier.
const W: i64 = 1_000_000;
const LAG: i64 = 600;

#[test]
fn each_trigger_meets_every_hold_on_the_clock_it_was_stamped_on() {
    use Asks::*;
    use Outcome::*;
    let policy = from_yaml(POLICY, "p.yaml").unwrap();
    let target = &policy.targets["w"];
    let e = |wall: i64| wall - LAG;
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            // The rule acted one wall-clock minute ago: its two-minute
            // cooldown has one to go for the operator (mixed clocks read
            // the rule's event-time cooldown against the wall: no cooldown).
            "a rule's cooldown holds an operator for its length on the wall clock",
            vec![
                step(
                    Rule("q.scale_up", e(W)),
                    W,
                    Scale,
                    7,
                    "from 5 to 7 (add 2), cooldown 2m",
                ),
                step(
                    Operator(10),
                    W + 60,
                    Cooldown,
                    7,
                    "scale-up is cooling down for another 1m (novactl scale --force overrides)",
                ),
                step(
                    Operator(10),
                    W + 120,
                    Scale,
                    10,
                    "from 7 to 10 (set to 10), cooldown 0s",
                ),
            ],
        ),
        (
            // An operator's action at wall time W is no cooldown for the
            // lagging rule's samples (mixed clocks: 9m50s of cooldown).
            "an operator's action does not hold a lagging rule for the lag",
            vec![
                step(Operator(8), W, Scale, 8, "from 5 to 8 (set to 8)"),
                step(
                    Rule("q.scale_up", e(W + 10)),
                    W + 10,
                    Scale,
                    10,
                    "from 8 to 10 (add 2)",
                ),
            ],
        ),
        (
            // The operator's warm-up (60 s) holds rule scale-downs for 60
            // wall-clock seconds (mixed clocks: its 0 s cooldown, stamped
            // on the wall, held them for the lag, 9m30s more).
            "an operator's warm-up holds rule scale-downs on the wall clock",
            vec![
                step(Operator(9), W, Scale, 9, "from 5 to 9"),
                step(
                    Rule("q.scale_down", e(W + 30)),
                    W + 30,
                    WarmingUp,
                    9,
                    "still warming up for another 30s after an operator or fallback action (wall clock)",
                ),
                step(
                    Rule("q.scale_down", e(W + 61)),
                    W + 61,
                    Scale,
                    8,
                    "from 9 to 8 (remove 1)",
                ),
            ],
        ),
        (
            // A replay hours behind, decided within seconds of wall time:
            // the rules' cooldowns run on the samples' clock alone.
            "rules keep their own cooldowns on event time in a replay",
            vec![
                step(Rule("q.scale_up", 1000), W, Scale, 7, "from 5 to 7"),
                step(
                    Rule("q.scale_up", 1100),
                    W + 1,
                    Cooldown,
                    7,
                    "scale-up is cooling down for another 20s",
                ),
                step(Rule("q.scale_up", 1120), W + 2, Scale, 9, "from 7 to 9"),
                step(Rule("q.scale_down", 1300), W + 3, Scale, 8, "from 9 to 8"),
            ],
        ),
        (
            "a fallback meets a rule's cooldown on the wall clock",
            vec![
                step(Rule("q.scale_down", e(W)), W, Scale, 4, "from 5 to 4"),
                step(
                    Fallback(3),
                    W + 50,
                    Cooldown,
                    4,
                    "scale-down is cooling down for another 1m10s",
                ),
                step(Fallback(3), W + 120, Scale, 3, "from 4 to 3 (set to 3)"),
            ],
        ),
        (
            "the up-signal hold holds rule scale-downs, not an operator's",
            vec![
                step(Rule("q.scale_up", e(W)), W, Scale, 7, "from 5 to 7"),
                step(
                    Rule("q.scale_down", e(W) + 30),
                    W + 5,
                    Overridden,
                    7,
                    "q.scale_up asked for more capacity 30s ago",
                ),
                step(Operator(4), W + 130, Scale, 4, "from 7 to 4 (set to 4)"),
            ],
        ),
        (
            "force goes past a cooldown and the warm-up, never the bounds",
            vec![
                step(Rule("q.scale_up", e(W)), W, Scale, 7, "from 5 to 7"),
                step(
                    Forced(20),
                    W + 10,
                    Scale,
                    12,
                    "from 7 to 12 (set to 20, clamped at max 12), cooldown 0s, forced past: scale-up is cooling down for another 1m50s",
                ),
                step(
                    Forced(20),
                    W + 11,
                    AtMax,
                    12,
                    "already at its maximum of 12",
                ),
                step(
                    Forced(1),
                    W + 12,
                    Scale,
                    2,
                    "from 12 to 2 (set to 1, clamped at min 2), cooldown 0s, forced past: the last scale-up is still cooling down for another 1m48s",
                ),
                step(
                    Operator(9),
                    W + 13,
                    Cooldown,
                    2,
                    "scale-up is cooling down for another 1m47s",
                ),
            ],
        ),
    ];
    for (name, steps) in &cases {
        run(name, target, TargetState::default(), steps);
    }
}

#[test]
fn every_action_stamps_its_holds_on_the_clocks_that_read_them() {
    let policy = from_yaml(POLICY, "p.yaml").unwrap();
    let target = &policy.targets["w"];
    let event = (W - LAG) * 1000;
    let rule = run(
        "rule",
        target,
        TargetState::default(),
        &[step(
            Asks::Rule("q.scale_up", W - LAG),
            W,
            Outcome::Scale,
            7,
            "",
        )],
    );
    // Event time for rules, wall clock for operators; nothing for rules on
    // the wall clock.
    assert_eq!(
        (rule.up_cooldown_until, rule.warming_until),
        (event + 120_000, event + 60_000)
    );
    assert_eq!(
        rule.wall_holds,
        Holds {
            up_cooldown_until: (W + 120) * 1000,
            down_cooldown_until: 0,
            warming_until: (W + 60) * 1000,
        }
    );
    assert_eq!(rule.operator_holds, Holds::default());
    let operator = run(
        "operator",
        target,
        TargetState::default(),
        &[step(Asks::Operator(9), W, Outcome::Scale, 9, "")],
    );
    let wall = Holds {
        up_cooldown_until: W * 1000,
        down_cooldown_until: 0,
        warming_until: (W + 60) * 1000,
    };
    assert_eq!((operator.wall_holds, operator.operator_holds), (wall, wall));
    assert_eq!(
        (
            operator.up_cooldown_until,
            operator.warming_until,
            operator.recent_actions.len(),
            operator.last_up_signal
        ),
        (0, 0, 0, None),
        "no event-time hold, flap entry or up signal from an operator"
    );
}

#[test]
fn pause_stops_an_operator_scale_and_force_goes_past_it_but_not_dry_run() {
    use Asks::*;
    use Outcome::*;
    let policy = from_yaml(POLICY, "p.yaml").unwrap();
    let target = &policy.targets["w"];
    let paused = TargetState {
        paused_up: true,
        paused_down: true,
        ..TargetState::default()
    };
    run(
        "paused",
        target,
        paused.clone(),
        &[
            step(
                Operator(9),
                W,
                Paused,
                5,
                "scale-up of w is paused by an operator (novactl scale --force overrides)",
            ),
            step(
                Fallback(9),
                W,
                Paused,
                5,
                "scale-up of w is paused by an operator",
            ),
            step(
                Rule("q.scale_down", W - LAG),
                W,
                Paused,
                5,
                "scale-down of w is paused",
            ),
            step(
                Forced(9),
                W + 1,
                Scale,
                9,
                "from 5 to 9 (set to 9), cooldown 0s, forced past: scale-up of w is paused by an operator",
            ),
            step(
                Forced(3),
                W + 2,
                Scale,
                3,
                "forced past: scale-down of w is paused by an operator",
            ),
        ],
    );
    let state = run(
        "fallback hint",
        target,
        paused,
        &[step(Fallback(9), W, Paused, 5, "")],
    );
    let why = &state.last().unwrap().decision.reason;
    assert!(!why.contains("--force"), "only operators can force: {why}");

    let mut dry = target.clone();
    dry.dry_run = true;
    run(
        "dry run",
        &dry,
        TargetState::default(),
        &[step(
            Forced(9),
            W,
            DryRun,
            9,
            "dry run: would scale w from 5 to 9",
        )],
    );
    // A rule's firing named like a forced one forces nothing.
    let mut spoof = trigger(Asks::Rule("q.scale_up", W), W, "spoof".into());
    spoof.firings[0].rule = OPERATOR_FORCE_RULE.into();
    let v = decide_at(
        target,
        ArbiterSettings::for_target(target, 30),
        &TargetState {
            paused_up: true,
            ..TargetState::default()
        },
        Some(&capacity(5, 0)),
        &spoof,
        W * 1000,
    );
    assert_eq!(v.decision.outcome, Paused, "{}", v.decision.reason);
}

#[test]
fn a_state_stored_before_the_wall_holds_reads_as_having_none() {
    // A state stored by an arbiter without the wall-clock holds.
    let old = serde_json::json!({"seq": 3, "desired": 7, "up_cooldown_until": 5000});
    let state: TargetState = serde_json::from_value(old).expect("old state decodes");
    assert_eq!(
        (
            state.up_cooldown_until,
            state.wall_holds,
            state.operator_holds
        ),
        (5000, Holds::default(), Holds::default())
    );
}
