//! Invariants of the decision logic, over random inputs (proptest):
//! - capacity never leaves [min, max];
//! - never two actions in one direction inside that direction's cooldown;
//! - the same sample stream gives the same triggers replayed in one burst or live;
//! - a tracking rule's scale-up never ends more above the capacity at the
//!   start of its period than its Pods policy allows;
//! - any trigger at all (unknown rules, empty, mixed kinds) gets a decision
//!   with a reason, and a command only inside the bounds.

use nova_shared::arbitrate::{ArbiterSettings, TargetState, decide};
use nova_shared::evaluate::Evaluator;
use nova_shared::policy::{Policy, from_yaml};
use nova_shared::wire::{
    CapacityRecord, Direction, RuleFiring, Sample, ScaleAction, Trigger, TriggerSource,
};
use proptest::prelude::*;

const POLICY: &str = r#"
evaluation: {staleness_secs: 30, refire_secs: 10}
targets:
  w: {rules: [q, cpu], min: 3, max: 40, backend: {sim: {initial: 5}}}
horizontal_scaling_rules:
  q:
    scale_up: {condition: "queue_depth > 1000", action: "add 5 workers", cooldown: 120, max_workers: 30}
    scale_down: {condition: "queue_depth < 100 for 15 minutes", action: "remove 2 workers", cooldown: 600, min_workers: 4}
  cpu:
    scale_up: {condition: "avg_cpu > 70% for 2 minutes", action: "add 2 instances", cooldown: 300}
    scale_down: {condition: "avg_cpu < 30% for 10 minutes", action: "remove 1 instance", cooldown: 60}
"#;

fn policy() -> Policy {
    from_yaml(POLICY, "p.yaml").expect("policy")
}

const RULES: [&str; 4] = [
    "q.scale_up",
    "q.scale_down",
    "cpu.scale_up",
    "cpu.scale_down",
];

/// Triggers at increasing event times, each with one or two of the rules.
fn triggers() -> impl Strategy<Value = Vec<(i64, Vec<usize>)>> {
    prop::collection::vec((1i64..400, prop::collection::vec(0usize..4, 1..3)), 1..80).prop_map(
        |steps| {
            let mut ts = 0;
            steps
                .into_iter()
                .map(|(gap, rules)| {
                    ts += gap * 1000;
                    (ts, rules)
                })
                .collect()
        },
    )
}

fn trigger(policy: &Policy, n: usize, ts: i64, rules: &[usize]) -> Trigger {
    let target = &policy.targets["w"];
    let firings = rules
        .iter()
        .map(|&r| {
            let rule = target.rule(RULES[r]).expect("rule");
            RuleFiring {
                rule: rule.name.clone(),
                direction: rule.direction.clone(),
                action: rule.action.clone(),
                observed: None,
                threshold: None,
                condition: rule.condition.text.clone(),
                held_secs: 0,
                reason: String::new(),
            }
        })
        .collect();
    Trigger {
        v: nova_shared::wire::Version::CURRENT,
        id: format!("t-{n}"),
        ts,
        target: "w".into(),
        source: TriggerSource::Rule,
        firings,
        policy_revision: None,
        alert: None,
    }
}

const TRACKING: &str = r#"
targets:
  w: {rules: [track], min: 2, max: 60, backend: {sim: {initial: 5}}}
target_tracking_rules:
  track:
    metric: avg_cpu
    target: 50%
    behavior:
      scale_up: {policies: [{type: pods, value: 3, period: 60}]}
"#;

const MIXED: &str = r#"
targets:
  m: {rules: [track, q, credits], min: 2, max: 30, backend: {sim: {initial: 5, tier: c5.large}}}
target_tracking_rules:
  track: {metric: avg_cpu, target: 50%}
horizontal_scaling_rules:
  q:
    scale_up: {condition: "queue_depth > 1000", action: "add 5 workers", cooldown: 60}
    scale_down: {condition: "queue_depth < 100", action: "remove 2 workers", cooldown: 60}
vertical_scaling_rules:
  resize:
    credits:
      trigger: "cpu_credits < 20"
      options: [{from: c5.large, to: c5.xlarge}]
"#;

fn any_firing() -> impl Strategy<Value = RuleFiring> {
    let rules = prop::sample::select(vec![
        "track",
        "q.scale_up",
        "q.scale_down",
        "resize.credits",
        "unknown",
        "",
    ]);
    let actions = prop_oneof![
        (0u32..100).prop_map(ScaleAction::Add),
        (0u32..100).prop_map(ScaleAction::Remove),
        (0u32..100).prop_map(ScaleAction::Set),
        Just(ScaleAction::NextTier),
    ];
    let directions = prop::sample::select(vec![Direction::Up, Direction::None, Direction::Down]);
    (rules, actions, directions)
        .prop_map(|(rule, action, direction)| RuleFiring::plain(rule, direction, action, ""))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_trigger_is_decided_with_a_reason_and_within_bounds(
        start in 0u32..40,
        tier in prop::sample::select(vec![None, Some("c5.large"), Some("c5.xlarge"), Some("t2.nano")]),
        steps in prop::collection::vec((0i64..120, prop::collection::vec(any_firing(), 0..4)), 1..40),
    ) {
        let policy = from_yaml(MIXED, "p.yaml").expect("policy");
        let target = &policy.targets["m"];
        let settings = ArbiterSettings::for_target(target, 30);
        let observed = CapacityRecord { target: "m".into(), desired: start, running: None, applied_seq: 0, tier: tier.map(str::to_string), observed_ms: 0, backend: "sim".into(), ..Default::default() };
        let mut state = TargetState::default();
        let mut ts = 0;
        for (n, (gap, firings)) in steps.into_iter().enumerate() {
            ts += gap * 1000;
            let trigger = Trigger { v: nova_shared::wire::Version::CURRENT, id: format!("t-{n}"), ts, target: "m".into(), source: TriggerSource::Rule, firings, policy_revision: None, alert: None, };
            let verdict = decide(target, settings, &state, Some(&observed), &trigger);
            prop_assert!(!verdict.decision.reason.is_empty());
            if let Some(command) = &verdict.command {
                let resize = command.tier.is_some();
                prop_assert!(resize || (2..=30).contains(&command.desired), "{command:?}");
            }
            state = verdict.state.unwrap_or(state);
        }
    }

    #[test]
    fn tracking_moves_stay_in_bounds_and_within_the_pods_policy(
        start in 2u32..=60,
        asks in prop::collection::vec((1i64..40, 0u32..100), 1..80),
    ) {
        let policy = from_yaml(TRACKING, "p.yaml").expect("policy");
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, 30);
        let observed = CapacityRecord { target: "w".into(), desired: start, running: None, applied_seq: 0, tier: None, observed_ms: 0, backend: "sim".into(), ..Default::default() };
        let mut state = TargetState::default();
        let mut current = start;
        let mut changes: Vec<(i64, i64)> = Vec::new();
        let mut ts = 0;
        for (n, (gap, asked)) in asks.iter().enumerate() {
            ts += gap * 1000;
            let direction = if *asked > current { Direction::Up } else { Direction::Down };
            let trigger = Trigger {
                v: nova_shared::wire::Version::CURRENT,
                id: format!("t-{n}"),
                ts,
                target: "w".into(),
                source: TriggerSource::Rule,
                firings: vec![RuleFiring::plain("track", direction, ScaleAction::Set(*asked), "")],
                policy_revision: None, alert: None, };
            let verdict = decide(target, settings, &state, Some(&observed), &trigger);
            if let Some(command) = &verdict.command {
                prop_assert!((2..=60).contains(&command.desired), "{command:?}");
                changes.push((ts, i64::from(command.desired) - i64::from(current)));
                // A scale-up ends at most 3 above the capacity 60 s before
                // (the net of every change since: removals free budget).
                if command.desired > current {
                    let net: i64 = changes.iter().filter(|(at, _)| ts - at < 60_000).map(|(_, c)| c).sum();
                    prop_assert!(net <= 3, "{net} net added within 60 s: {changes:?}");
                }
                current = command.desired;
            }
            state = verdict.state.unwrap_or(state);
        }
    }

    #[test]
    fn capacity_stays_in_bounds_and_cooldowns_hold(start in 3u32..=40, steps in triggers(), applied_lag in 0usize..3) {
        let policy = policy();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, policy.evaluation.refire_secs);
        let mut state = TargetState::default();
        let mut observed = CapacityRecord { target: "w".into(), desired: start, running: None, applied_seq: 0, tier: None, observed_ms: 0, backend: "sim".into(), ..Default::default() };
        let mut pending = Vec::new();
        let mut last_action: [Option<(i64, u64)>; 2] = [None, None];
        for (n, (ts, rules)) in steps.iter().enumerate() {
            let verdict = decide(target, settings, &state, Some(&observed), &trigger(&policy, n, *ts, rules));
            if let Some(command) = &verdict.command {
                prop_assert!((target.min..=target.max).contains(&command.desired), "{command:?} outside [{}, {}]", target.min, target.max);
                let dir = usize::from(command.desired > command.from);
                let cooldown = target.rule(command.rule.as_deref().unwrap()).unwrap().cooldown_secs;
                if let Some((at, secs)) = last_action[dir] {
                    prop_assert!(ts - at >= i64::try_from(secs * 1000).unwrap(), "two {} actions {}ms apart, cooldown {secs}s", if dir == 1 { "up" } else { "down" }, ts - at);
                }
                last_action[dir] = Some((*ts, cooldown));
                pending.push(command.clone());
            }
            state = verdict.state.unwrap_or(state);
            // The actuator applies commands after a lag of a few triggers.
            while pending.len() > applied_lag {
                let command = pending.remove(0);
                observed.desired = command.desired;
                observed.applied_seq = command.seq;
            }
        }
    }

    #[test]
    fn every_decision_has_a_reason_and_duplicates_change_nothing(steps in triggers()) {
        let policy = policy();
        let target = &policy.targets["w"];
        let settings = ArbiterSettings::for_target(target, policy.evaluation.refire_secs);
        let observed = CapacityRecord { target: "w".into(), desired: 10, running: None, applied_seq: 0, tier: None, observed_ms: 0, backend: "sim".into(), ..Default::default() };
        let mut state = TargetState::default();
        for (n, (ts, rules)) in steps.iter().enumerate() {
            let t = trigger(&policy, n, *ts, rules);
            let verdict = decide(target, settings, &state, Some(&observed), &t);
            prop_assert!(!verdict.decision.reason.is_empty());
            let next = verdict.state.expect("a new trigger changes state");
            let again = decide(target, settings, &next, Some(&observed), &t);
            prop_assert!(again.state.is_none() && again.command.is_none(), "a redelivered trigger acted again");
            state = next;
        }
    }

    #[test]
    fn replayed_in_one_burst_equals_live(values in prop::collection::vec((0u8..3, 0.0f64..1.0, 1i64..20), 1..300)) {
        let policy = policy();
        let mut ts = 1_000_000;
        let samples: Vec<Sample> = values
            .iter()
            .map(|(instance, value, gap)| {
                ts += gap * 1000;
                Sample { metric: "cpu".into(), value: *value, ts, instance: Some(format!("i-{instance}")) }
            })
            .collect();
        let (burst, _) = Evaluator::new(&policy).observe_batch("w", &samples, i64::MAX / 2);
        let mut live = Evaluator::new(&policy);
        let mut one_by_one = Vec::new();
        for sample in &samples {
            one_by_one.extend(live.observe_batch("w", std::slice::from_ref(sample), sample.ts).0);
        }
        prop_assert_eq!(burst, one_by_one);
    }
}

#[test]
fn the_up_direction_is_the_safest() {
    assert!(Direction::Down < Direction::None && Direction::None < Direction::Up);
}
