//! Table tests of the alert rows: a trigger of source `alert` acts with its
//! rule's cooldown and bounds, on the wall clock; its rule's `while_firing`
//! hold starts with the firing alert and ends with the resolved one.

use super::*;
use crate::alert::{self, AlertRule};
use crate::policy::{Policy, from_yaml};

const POLICY: &str = r#"
targets:
  w: { rules: [q], max: 10, backend: { sim: { initial: 5 } } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 100", action: "add 1 instance", cooldown: 0 }
    scale_down: { condition: "queue_depth < 1", action: "remove 1 instance", cooldown: 0 }
alert_rules:
  hold:
    target: w
    alertname: Latency
    action: add 2 instances
    cooldown: 60
    max: 8
    while_firing: hold_scale_downs
  pause:
    target: w
    alertname: Incident
    while_firing: pause
  plain:
    target: w
    alertname: Disk
    action: set to 9 instances
  surge:
    target: w
    alertname: HighErrors
    action: emergency up
    cooldown: 60
  surge_by:
    target: w
    alertname: Errors
    action: emergency up by 3
    max: 7
  surge_to:
    target: w
    alertname: Saturation
    action: emergency up to 20
  surge_low:
    target: w
    alertname: Low
    action: emergency up to 4
"#;

fn policy() -> Policy {
    from_yaml(POLICY, "p.yaml").expect("policy")
}

fn rule<'p>(policy: &'p Policy, name: &str) -> &'p AlertRule {
    policy.targets["w"].alert_rule(name).expect("rule")
}

/// The trigger ingest makes of `rule`'s alert in `status`, at `now`.
fn alert_trigger(policy: &Policy, name: &str, status: &str, now: i64) -> Trigger {
    let r = rule(policy, name);
    let body = format!(
        r#"{{"version":"4","alerts":[{{"status":"{status}","labels":{{"alertname":"{}"}},"startsAt":"s","fingerprint":"fp-{name}"}}]}}"#,
        r.alertname
    );
    let webhook = alert::parse_webhook(body.as_bytes()).expect("payload");
    let routed = alert::route(std::slice::from_ref(r), &webhook, "rev", now);
    routed.triggers.into_iter().next().expect("a trigger")
}

fn rule_trigger(id: &str, down: bool, ts: i64) -> Trigger {
    let (rule, direction, action) = if down {
        ("q.scale_down", Direction::Down, ScaleAction::Remove(1))
    } else {
        ("q.scale_up", Direction::Up, ScaleAction::Add(1))
    };
    Trigger {
        v: Version::CURRENT,
        id: id.into(),
        ts,
        target: "w".into(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring::plain(rule, direction, action, rule)],
        policy_revision: None,
        alert: None,
    }
}

/// Decides `triggers` in turn from capacity 5, each at its own wall
/// clock; returns each outcome and its `to`.
fn run(policy: &Policy, triggers: &[(Trigger, i64)]) -> Vec<(String, Option<u32>, String)> {
    let target = &policy.targets["w"];
    let settings = ArbiterSettings::for_target(target, 30);
    let mut state = TargetState::default();
    let record = super::tests_support::capacity(5, 0);
    let mut out = Vec::new();
    for (trigger, now) in triggers {
        let verdict = decide_at(target, settings, &state, Some(&record), trigger, *now);
        out.push((
            verdict.decision.outcome.as_str().to_string(),
            verdict.decision.to,
            verdict.decision.reason.clone(),
        ));
        if let Some(next) = verdict.state {
            state = next;
        }
    }
    out
}

/// A case: its name, the triggers with their wall clocks, and each
/// expected outcome, `to` and a part of the reason.
type Case<'a> = (
    &'a str,
    Vec<(Trigger, i64)>,
    Vec<(&'a str, Option<u32>, &'a str)>,
);

#[test]
fn table_of_alert_rows() {
    let p = policy();
    let t = 1_000_000;
    let cases: Vec<Case> = vec![
        (
            "a firing alert acts, clamped at its rule's max",
            vec![(alert_trigger(&p, "hold", "firing", t), t)],
            vec![("scale", Some(7), "add 2")],
        ),
        (
            "a set-to alert resolves its direction against the capacity; max 10 applies",
            vec![(alert_trigger(&p, "plain", "firing", t), t)],
            vec![("scale", Some(9), "set to 9")],
        ),
        (
            "its cooldown is the rule's, on the wall clock",
            vec![
                (alert_trigger(&p, "hold", "firing", t), t),
                (alert_trigger(&p, "plain", "firing", t), t + 1_000),
            ],
            vec![
                ("scale", Some(7), ""),
                ("cooldown", Some(7), "cooling down"),
            ],
        ),
        (
            "a firing hold_scale_downs holds rule scale-downs, not scale-ups",
            vec![
                (alert_trigger(&p, "hold", "firing", t), t),
                (rule_trigger("d1", true, t + 120_000), t + 120_000),
                (rule_trigger("u1", false, t + 121_000), t + 121_000),
            ],
            vec![
                ("scale", Some(7), ""),
                (
                    "paused",
                    Some(7),
                    "waits while alert Latency fires (rule hold, hold_scale_downs)",
                ),
                ("scale", Some(8), ""),
            ],
        ),
        (
            "the resolved alert ends the hold",
            vec![
                (alert_trigger(&p, "hold", "firing", t), t),
                (alert_trigger(&p, "hold", "resolved", t + 1_000), t + 1_000),
                (rule_trigger("d1", true, t + 120_000), t + 120_000),
            ],
            vec![
                ("scale", Some(7), ""),
                (
                    "no_change",
                    None,
                    "w no longer holds scale-downs for this alert",
                ),
                ("scale", Some(6), ""),
            ],
        ),
        (
            "a pause without an action starts, pauses both directions, and ends",
            vec![
                (alert_trigger(&p, "pause", "firing", t), t),
                (rule_trigger("u1", false, t + 1_000), t + 1_000),
                (rule_trigger("d1", true, t + 2_000), t + 2_000),
                (alert_trigger(&p, "pause", "resolved", t + 3_000), t + 3_000),
                (rule_trigger("u2", false, t + 4_000), t + 4_000),
            ],
            vec![
                (
                    "no_change",
                    None,
                    "w holds scaling until the alert is resolved",
                ),
                (
                    "paused",
                    Some(5),
                    "scale-up of w waits while alert Incident fires",
                ),
                (
                    "paused",
                    Some(5),
                    "scale-down of w waits while alert Incident fires",
                ),
                ("no_change", None, "w no longer holds scaling"),
                ("scale", Some(6), ""),
            ],
        ),
        (
            "a resolved alert whose rule holds nothing ends nothing",
            vec![(alert_trigger(&p, "plain", "resolved", t), t)],
            vec![("no_change", None, "the rule holds nothing")],
        ),
        (
            "a resolved alert whose firing was not seen",
            vec![(alert_trigger(&p, "hold", "resolved", t), t)],
            vec![("no_change", None, "held no scale-downs for this alert")],
        ),
        (
            "an emergency up doubles the capacity, on the arbiter's read of it",
            vec![(alert_trigger(&p, "surge", "firing", t), t)],
            vec![(
                "scale",
                Some(10),
                "alert HighErrors firing (; fingerprint fp-surge, since s): rule surge asks emergency up: double, 5 -> 10",
            )],
        ),
        (
            "an emergency up by N is clamped at its rule's max",
            vec![(alert_trigger(&p, "surge_by", "firing", t), t)],
            vec![("scale", Some(7), "asks emergency up by 3: add 3, 5 -> 8")],
        ),
        (
            "an emergency up to N is not forced past the target's max",
            vec![(alert_trigger(&p, "surge_to", "firing", t), t)],
            vec![("scale", Some(10), "asks emergency up to 20: to 20, 5 -> 20")],
        ),
        (
            "an emergency up to N not above the capacity asks no change, never a scale-down",
            vec![(alert_trigger(&p, "surge_low", "firing", t), t)],
            vec![("no_change", Some(5), "--to 4 is not above w's capacity 5")],
        ),
        (
            "an emergency up meets the cooldown it started and then the rule's max",
            vec![
                (alert_trigger(&p, "surge", "firing", t), t),
                (
                    alert_trigger(&p, "surge_by", "firing", t + 1_000),
                    t + 1_000,
                ),
                (
                    alert_trigger(&p, "surge_to", "firing", t + 61_000),
                    t + 61_000,
                ),
            ],
            vec![
                ("scale", Some(10), "double, 5 -> 10"),
                ("cooldown", Some(10), "cooling down"),
                ("at_max", Some(10), "already at its maximum of 10"),
            ],
        ),
        (
            "an emergency up is paused by another alert's pause, not forced past it",
            vec![
                (alert_trigger(&p, "pause", "firing", t), t),
                (alert_trigger(&p, "surge", "firing", t + 1_000), t + 1_000),
            ],
            vec![
                ("no_change", None, "holds scaling"),
                (
                    "paused",
                    Some(5),
                    "scale-up of w waits while alert Incident fires",
                ),
            ],
        ),
        (
            "the same notification twice is decided once",
            vec![
                (alert_trigger(&p, "hold", "firing", t), t),
                (alert_trigger(&p, "hold", "firing", t + 5_000), t + 5_000),
            ],
            vec![
                ("scale", Some(7), ""),
                ("duplicate", None, "already decided"),
            ],
        ),
    ];
    for (name, triggers, expected) in cases {
        let got = run(&p, &triggers);
        assert_eq!(got.len(), expected.len(), "{name}");
        for (i, ((outcome, to, reason), (want, want_to, part))) in
            got.iter().zip(&expected).enumerate()
        {
            assert_eq!(
                (outcome.as_str(), *to),
                (*want, *want_to),
                "{name}, step {i}: {reason}"
            );
            assert!(reason.contains(part), "{name}, step {i}: {reason}");
        }
    }
}

#[test]
fn an_alert_trigger_names_a_known_alert_rule_or_is_refused() {
    let p = policy();
    let ours = crate::policy::revision(&p);
    let mut trigger = alert_trigger(&p, "hold", "firing", 0);
    trigger.policy_revision = Some(ours.clone());
    assert!(check_known(&p, &ours, &trigger).is_ok());
    trigger.firings[0].rule = "q.scale_up".into();
    assert!(matches!(
        check_known(&p, &ours, &trigger),
        Err(Unknown::Reject(_))
    ));
}

/// A target with one tier ladder, and alert rules that step along it.
const VERTICAL: &str = r#"
targets:
  db: { rules: [cpu_intensive], max: 4, backend: { sim: { initial: 2, tier: c5.large } } }
vertical_scaling_rules:
  instance_resize:
    cpu_intensive:
      trigger: "cpu_credits < 20 for 5 minutes"
      action: "upgrade to next CPU-optimized tier"
      options:
        - {from: c5.large, to: c5.xlarge}
        - {from: c5.xlarge, to: c5.2xlarge}
alert_rules:
  bigger:
    target: db
    alertname: SlowQueries
    action: upgrade to the next tier
    cooldown: 60
  incident:
    target: db
    alertname: Incident
    while_firing: pause
"#;

#[test]
fn table_of_alert_vertical_steps() {
    let p = from_yaml(VERTICAL, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
    let target = &p.targets["db"];
    let settings = ArbiterSettings::for_target(target, 30);
    let fire = |name: &str, starts: &str, now: i64| {
        let r = target.alert_rule(name).expect("rule");
        let body = format!(
            r#"{{"version":"4","alerts":[{{"status":"firing","labels":{{"alertname":"{}"}},"startsAt":"{starts}","fingerprint":"fp-{name}"}}]}}"#,
            r.alertname
        );
        let webhook = alert::parse_webhook(body.as_bytes()).expect("payload");
        let routed = alert::route(std::slice::from_ref(r), &webhook, "rev", now);
        routed.triggers.into_iter().next().expect("a trigger")
    };
    let t = 1_000_000;
    // (case, tier, triggers at their wall clocks, outcome, to_tier, part of the reason)
    type Row<'a> = (
        &'a str,
        &'a str,
        Vec<(Trigger, i64)>,
        Vec<(Outcome, Option<&'a str>, &'a str)>,
    );
    let rows: Vec<Row> = vec![
        (
            "one step up the target's ladder, same count",
            "c5.large",
            vec![(fire("bigger", "s1", t), t)],
            vec![(
                Outcome::Scale,
                Some("c5.xlarge"),
                "rule bigger asks to upgrade to the next tier; resizing db from c5.large to c5.xlarge (2 instances), resize cooldown 1m",
            )],
        ),
        (
            "the alert rule's cooldown, on the wall clock",
            "c5.large",
            vec![
                (fire("bigger", "s1", t), t),
                (fire("bigger", "s2", t + 1_000), t + 1_000),
            ],
            vec![
                (Outcome::Scale, Some("c5.xlarge"), ""),
                (
                    Outcome::Cooldown,
                    None,
                    "the last resize is cooling down for another 59s",
                ),
            ],
        ),
        (
            "at the top of the ladder",
            "c5.2xlarge",
            vec![(fire("bigger", "s1", t), t)],
            vec![(
                Outcome::AtTopTier,
                None,
                "c5.2xlarge is the top tier of the ladder of bigger",
            )],
        ),
        (
            "paused by another alert's pause",
            "c5.large",
            vec![
                (fire("incident", "s1", t), t),
                (fire("bigger", "s1", t + 1_000), t + 1_000),
            ],
            vec![
                (Outcome::NoChange, None, "holds scaling"),
                (
                    Outcome::Paused,
                    None,
                    "scale-up of db waits while alert Incident fires",
                ),
            ],
        ),
    ];
    for (name, tier, triggers, expected) in rows {
        let mut state = TargetState::default();
        let mut record = super::tests_support::capacity(2, 0);
        record.target = "db".into();
        record.tier = Some(tier.into());
        assert_eq!(triggers.len(), expected.len(), "{name}");
        for (i, ((trigger, now), (outcome, to_tier, part))) in
            triggers.iter().zip(&expected).enumerate()
        {
            let v = decide_at(target, settings, &state, Some(&record), trigger, *now);
            let reason = &v.decision.reason;
            assert_eq!(&v.decision.outcome, outcome, "{name}, step {i}: {reason}");
            assert_eq!(
                v.decision.to_tier.as_deref(),
                *to_tier,
                "{name}, step {i}: {reason}"
            );
            assert!(reason.contains(part), "{name}, step {i}: {reason}");
            if let Some(command) = &v.command {
                assert_eq!(
                    (command.desired, command.tier.as_deref()),
                    (2, *to_tier),
                    "{name}"
                );
                record.tier = command.tier.clone();
            }
            if let Some(next) = v.state {
                state = next;
            }
        }
    }
}

#[test]
fn a_vertical_step_needs_the_target_to_have_one_tier_ladder() {
    let cases = [
        (
            "targets:\n  web: { max: 4, backend: { sim: { initial: 2 } } }\nalert_rules:\n  bigger: { target: web, alertname: X, action: upgrade to the next tier }\n",
            "alert_rules.bigger.action: target web has no tier ladder",
        ),
        (
            "targets:\n  db: { rules: [a, b], max: 4, backend: { sim: { initial: 2, tier: c5.large } } }\nvertical_scaling_rules:\n  r:\n    a: { trigger: \"cpu_credits < 20\", action: upgrade, options: [{from: c5.large, to: c5.xlarge}] }\n    b: { trigger: \"cpu_credits < 10\", action: upgrade, options: [{from: c5.large, to: r5.large}] }\nalert_rules:\n  bigger: { target: db, alertname: X, action: raise the tier }\n",
            "alert_rules.bigger.action: target db has 2 tier ladders (r.a, r.b); a vertical step needs exactly one",
        ),
    ];
    for (yaml, expected) in cases {
        let error = from_yaml(yaml, "p.yaml").unwrap_err().to_string();
        assert!(
            error.contains(expected),
            "missing {expected:?} in:\n{error}"
        );
    }
    let p = from_yaml(VERTICAL, "p.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.targets["db"].next_tier("bigger", "c5.large"),
        crate::policy::TierMove::Next("c5.xlarge".into())
    );
}
