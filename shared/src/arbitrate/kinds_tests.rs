//! Decision-table rows for target tracking and vertical rules.

use super::*;
use crate::policy::{Policy, from_yaml};
use crate::wire::TriggerSource;

const POLICY: &str = r#"
targets:
  web: {rules: [cpu_target, cpu], min: 2, max: 40, backend: {sim: {initial: 10}}}
  db: {rules: [cpu_intensive, memory_intensive], max: 4, backend: {sim: {initial: 2, tier: c5.xlarge}}}
target_tracking_rules:
  cpu_target:
    metric: avg_cpu
    target: 60%
    behavior:
      scale_up: {policies: [{type: pods, value: 4, period: 60}]}
      scale_down: {stabilization_window: 300, policies: [{type: percent, value: 50, period: 60}]}
horizontal_scaling_rules:
  cpu:
    scale_up: {condition: "avg_cpu > 90% for 1 minute", action: "add 2 instances", cooldown: 60}
vertical_scaling_rules:
  instance_resize:
    cpu_intensive:
      trigger: "cpu_credits < 20 for 5 minutes"
      action: "upgrade to next CPU-optimized tier"
      options:
        - {from: t3.medium, to: c5.large}
        - {from: c5.large, to: c5.xlarge}
        - {from: c5.xlarge, to: c5.2xlarge}
    memory_intensive:
      trigger: "memory_pressure > 90% for 5 minutes"
      action: "upgrade to memory-optimized tier"
      options: [{from: c5.large, to: r5.large}]
"#;

fn policy() -> Policy {
    from_yaml(POLICY, "p.yaml").unwrap_or_else(|e| panic!("{e}"))
}

fn firing(rule: &str, action: ScaleAction) -> RuleFiring {
    RuleFiring::plain(rule, Direction::Up, action, "")
}

fn observed(target: &str, desired: u32, tier: Option<&str>) -> CapacityRecord {
    CapacityRecord {
        target: target.into(),
        desired,
        running: None,
        applied_seq: 0,
        tier: tier.map(str::to_string),
        observed_ms: 0,
        backend: "sim".into(),
        ..Default::default()
    }
}

fn run(
    policy: &Policy,
    target: &str,
    state: &TargetState,
    capacity: &CapacityRecord,
    secs: i64,
    firings: Vec<RuleFiring>,
) -> Verdict {
    let target = &policy.targets[target];
    let trigger = Trigger {
        v: Version::CURRENT,
        id: format!("t{secs}-{}", firings.len()),
        ts: secs * 1000,
        target: target.name.clone(),
        source: TriggerSource::Rule,
        firings,
        policy_revision: None,
        alert: None,
    };
    decide(
        target,
        ArbiterSettings::for_target(target, 30),
        state,
        Some(capacity),
        &trigger,
    )
}

#[test]
fn tracking_firings_are_rate_limited_by_their_behavior() {
    let policy = policy();
    struct Case {
        name: &'static str,
        current: u32,
        events: &'static [(i64, i64)],
        firings: Vec<RuleFiring>,
        outcome: Outcome,
        to: u32,
        reason: &'static str,
    }
    let set = |n| firing("cpu_target", ScaleAction::Set(n));
    let cases = [
        Case {
            name: "up by at most 4 pods per 60 s",
            current: 10,
            events: &[],
            firings: vec![set(30)],
            outcome: Outcome::Scale,
            to: 14,
            reason: "limited to 14 by policy 4 pods per 60s",
        },
        Case {
            name: "a spent budget: rate limited",
            current: 14,
            events: &[(80, 4)],
            firings: vec![set(30)],
            outcome: Outcome::RateLimited,
            to: 14,
            reason: "scale-up limited to 14 by policy 4 pods per 60s",
        },
        Case {
            name: "the budget frees up after the period",
            current: 14,
            events: &[(30, 4)],
            firings: vec![set(30)],
            outcome: Outcome::Scale,
            to: 18,
            reason: "limited to 18",
        },
        Case {
            name: "down by at most 50 % per 60 s",
            current: 10,
            events: &[],
            firings: vec![set(2)],
            outcome: Outcome::Scale,
            to: 5,
            reason: "scale-down limited to 5 by policy 50% per 60s",
        },
        Case {
            name: "the target's max still applies after the rate limit",
            current: 38,
            events: &[],
            firings: vec![set(60)],
            outcome: Outcome::Scale,
            to: 40,
            reason: "clamped at max 40",
        },
        Case {
            name: "the largest up wins: tracking (limited to 14) beats add 2",
            current: 10,
            events: &[],
            firings: vec![firing("cpu.scale_up", ScaleAction::Add(2)), set(30)],
            outcome: Outcome::Scale,
            to: 14,
            reason: "limited to 14",
        },
        Case {
            name: "within its limit a tracking firing is not shaped",
            current: 10,
            events: &[],
            firings: vec![set(12)],
            outcome: Outcome::Scale,
            to: 12,
            reason: "(set to 12)",
        },
    ];
    for case in cases {
        let state = TargetState {
            scale_events: case
                .events
                .iter()
                .map(|&(secs, change)| ScaleEvent {
                    ts: secs * 1000,
                    change,
                })
                .collect(),
            ..TargetState::default()
        };
        let mut firings = case.firings;
        for f in &mut firings {
            if let ScaleAction::Set(n) = f.action
                && n < case.current
            {
                f.direction = Direction::Down;
            }
        }
        let v = run(
            &policy,
            "web",
            &state,
            &observed("web", case.current, None),
            100,
            firings,
        );
        assert_eq!(
            v.decision.outcome, case.outcome,
            "{}: {}",
            case.name, v.decision.reason
        );
        assert_eq!(v.decision.to, Some(case.to), "{}", case.name);
        assert!(
            v.decision.reason.contains(case.reason),
            "{}: {:?} lacks {:?}",
            case.name,
            v.decision.reason,
            case.reason
        );
        if case.outcome == Outcome::Scale {
            let events = &v.state.expect("a scale stores state").scale_events;
            let last = events.back().expect("the action is recorded");
            assert_eq!(last.change, i64::from(case.to) - i64::from(case.current));
        }
    }
}

#[test]
fn vertical_firings_move_one_step_up_the_ladder() {
    let policy = policy();
    let cpu = || firing("instance_resize.cpu_intensive", ScaleAction::NextTier);
    let memory = || firing("instance_resize.memory_intensive", ScaleAction::NextTier);
    struct Case {
        name: &'static str,
        tier: Option<&'static str>,
        state: TargetState,
        firings: Vec<RuleFiring>,
        outcome: Outcome,
        to_tier: Option<&'static str>,
        reason: &'static str,
    }
    let cases = [
        Case {
            name: "one step up",
            tier: Some("c5.large"),
            state: TargetState::default(),
            firings: vec![cpu()],
            outcome: Outcome::Scale,
            to_tier: Some("c5.xlarge"),
            reason: "resizing db from c5.large to c5.xlarge (2 instances), resize cooldown 30m",
        },
        Case {
            name: "at the top of the ladder",
            tier: Some("c5.2xlarge"),
            state: TargetState::default(),
            firings: vec![cpu()],
            outcome: Outcome::AtTopTier,
            to_tier: None,
            reason: "c5.2xlarge is the top tier of the ladder of instance_resize.cpu_intensive",
        },
        Case {
            name: "a tier on no step of the ladder",
            tier: Some("m5.large"),
            state: TargetState::default(),
            firings: vec![cpu()],
            outcome: Outcome::NoChange,
            to_tier: None,
            reason: "m5.large is on no step of the ladder",
        },
        Case {
            name: "the first bound rule wins",
            tier: Some("c5.large"),
            state: TargetState::default(),
            firings: vec![memory(), cpu()],
            outcome: Outcome::Scale,
            to_tier: Some("c5.xlarge"),
            reason: "instance_resize.cpu_intensive",
        },
        Case {
            name: "resize cooling down",
            tier: Some("c5.large"),
            state: TargetState {
                resize_cooldown_until: 200_000,
                ..TargetState::default()
            },
            firings: vec![cpu()],
            outcome: Outcome::Cooldown,
            to_tier: None,
            reason: "the last resize is cooling down for another 1m40s",
        },
        Case {
            name: "scale-up paused",
            tier: Some("c5.large"),
            state: TargetState {
                paused_up: true,
                ..TargetState::default()
            },
            firings: vec![cpu()],
            outcome: Outcome::Paused,
            to_tier: None,
            reason: "paused by an operator",
        },
        Case {
            name: "tier not known",
            tier: None,
            state: TargetState::default(),
            firings: vec![cpu()],
            outcome: Outcome::UnknownCapacity,
            to_tier: None,
            reason: "the tier of db is not known yet",
        },
        Case {
            name: "the commanded tier counts until the backend applies it",
            tier: Some("c5.large"),
            state: TargetState {
                seq: 1,
                desired: Some(2),
                tier: Some("c5.xlarge".into()),
                ..TargetState::default()
            },
            firings: vec![cpu()],
            outcome: Outcome::Scale,
            to_tier: Some("c5.2xlarge"),
            reason: "from c5.xlarge to c5.2xlarge",
        },
    ];
    for case in cases {
        let v = run(
            &policy,
            "db",
            &case.state,
            &observed("db", 2, case.tier),
            100,
            case.firings,
        );
        let d = &v.decision;
        assert_eq!(d.outcome, case.outcome, "{}: {}", case.name, d.reason);
        assert_eq!(d.to_tier.as_deref(), case.to_tier, "{}", case.name);
        assert!(
            d.reason.contains(case.reason),
            "{}: {:?} lacks {:?}",
            case.name,
            d.reason,
            case.reason
        );
        assert_eq!((d.from, d.to), (Some(2), Some(2)), "{}", case.name);
        match &v.command {
            Some(command) => {
                assert_eq!(case.outcome, Outcome::Scale, "{}", case.name);
                assert_eq!(command.tier.as_deref(), case.to_tier, "{}", case.name);
                assert_eq!(command.desired, 2, "{}", case.name);
            }
            None => assert_ne!(case.outcome, Outcome::Scale, "{}", case.name),
        }
    }
}

#[test]
fn a_resize_in_dry_run_names_the_next_tier_and_sends_nothing() {
    let mut policy = policy();
    policy.targets.get_mut("db").expect("db").dry_run = true;
    let v = run(
        &policy,
        "db",
        &TargetState::default(),
        &observed("db", 2, Some("t3.medium")),
        100,
        vec![firing(
            "instance_resize.cpu_intensive",
            ScaleAction::NextTier,
        )],
    );
    assert_eq!(v.decision.outcome, Outcome::DryRun);
    assert_eq!(v.decision.to_tier.as_deref(), Some("c5.large"));
    assert!(
        v.decision
            .reason
            .contains("would resize db from t3.medium to c5.large")
    );
    assert!(v.command.is_none());
}

#[test]
fn a_trigger_without_firings_changes_nothing() {
    let policy = policy();
    let v = run(
        &policy,
        "db",
        &TargetState::default(),
        &observed("db", 2, Some("c5.large")),
        100,
        vec![],
    );
    assert_eq!(
        v.decision.outcome,
        Outcome::NoChange,
        "{}",
        v.decision.reason
    );
    assert!(v.command.is_none());
}

#[test]
fn a_capacity_outside_the_bounds_is_brought_inside_by_the_first_action() {
    let policy = policy();
    // (current, firing, expected desired, reason)
    let cases = [
        (
            0,
            firing("cpu.scale_up", ScaleAction::Add(1)),
            2,
            "raised to the target's min 2",
        ),
        (
            60,
            {
                let mut f = firing("cpu_target", ScaleAction::Set(50));
                f.direction = Direction::Down;
                f
            },
            40,
            "lowered to the target's max 40",
        ),
    ];
    for (current, f, want, reason) in cases {
        let v = run(
            &policy,
            "web",
            &TargetState::default(),
            &observed("web", current, None),
            100,
            vec![f],
        );
        assert_eq!(v.decision.to, Some(want), "{}", v.decision.reason);
        assert!(v.decision.reason.contains(reason), "{}", v.decision.reason);
    }
}
