//! The `alert_rules` section: which Alertmanager alerts scale which target
//! (see [`crate::alert`]). Same walker, same rule: every problem is
//! collected with its path, e.g. `alert_rules.latency.matchers[1]`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{DEFAULT_COOLDOWN_SECS, Walker, join, kind_of, with_bounds};
use crate::alert::{AlertRule, WhileFiring, parse_matcher};
use crate::policy::rule_text::parse_action;
use crate::wire::{Direction, ScaleAction};

const ALERT_KEYS: &[&str] = &[
    "target",
    "alertname",
    "matchers",
    "action",
    "cooldown",
    "while_firing",
];

impl Walker {
    /// `alert_rules`: the valid rules, by target. `targets` are the names
    /// the policy defines.
    pub(super) fn alert_rules(
        &mut self,
        value: &Value,
        targets: &[&str],
    ) -> BTreeMap<String, Vec<AlertRule>> {
        let mut by_target: BTreeMap<String, Vec<AlertRule>> = BTreeMap::new();
        let Value::Object(rules) = value else {
            self.problem(
                "alert_rules",
                format!("expected a map of rule names, found {}", kind_of(value)),
            );
            return by_target;
        };
        for (name, spec) in rules {
            if let Some(rule) = self.alert_rule(name, spec, targets) {
                by_target.entry(rule.target.clone()).or_default().push(rule);
            }
        }
        by_target
    }

    fn alert_rule(&mut self, name: &str, spec: &Value, targets: &[&str]) -> Option<AlertRule> {
        let path = join("alert_rules", name);
        let before = self.problems.len();
        let map = self.map(spec, &path, &with_bounds(ALERT_KEYS))?;
        let target = match map.get("target") {
            None => {
                self.problem(
                    &join(&path, "target"),
                    "required: the target the alert scales",
                );
                None
            }
            Some(v) => self.string(v, &join(&path, "target")).and_then(|t| {
                if targets.contains(&t) {
                    Some(t.to_string())
                } else {
                    self.problem(
                        &join(&path, "target"),
                        format!("no target {t:?}; defined: {}", targets.join(", ")),
                    );
                    None
                }
            }),
        };
        let alertname = match map.get("alertname") {
            None => {
                self.problem(
                    &join(&path, "alertname"),
                    "required: the alert's alertname label, e.g. \"HighRequestLatency\"",
                );
                None
            }
            Some(v) => self
                .string(v, &join(&path, "alertname"))
                .map(str::to_string),
        };
        let mut matchers = Vec::new();
        match map.get("matchers") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{}[{i}]", join(&path, "matchers"));
                    if let Some(text) = self.string(item, &at) {
                        match parse_matcher(text) {
                            Ok(m) => matchers.push(m),
                            Err(e) => self.problem(&at, e),
                        }
                    }
                }
            }
            Some(other) => self.problem(
                &join(&path, "matchers"),
                format!(
                    "expected a list of matchers such as severity=\"critical\", found {}",
                    kind_of(other)
                ),
            ),
        }
        let action = match map.get("action") {
            None => None,
            Some(v) => self.string(v, &join(&path, "action")).and_then(|text| {
                parse_alert_action(text)
                    .map_err(|e| self.problem(&join(&path, "action"), e))
                    .ok()
            }),
        };
        let while_firing = match map.get("while_firing") {
            None => WhileFiring::None,
            Some(Value::String(s)) if s == "none" => WhileFiring::None,
            Some(Value::String(s)) if s == "hold_scale_downs" => WhileFiring::HoldScaleDowns,
            Some(Value::String(s)) if s == "pause" => WhileFiring::Pause,
            Some(other) => {
                self.problem(
                    &join(&path, "while_firing"),
                    format!(
                        "expected none, hold_scale_downs or pause, found {}",
                        super::show(other)
                    ),
                );
                WhileFiring::None
            }
        };
        if map.get("action").is_none() && while_firing == WhileFiring::None {
            self.problem(
                &path,
                "give an action (\"add 2 instances\"), a while_firing (hold_scale_downs, pause), or both",
            );
        }
        let cooldown_secs = match map.get("cooldown") {
            Some(v) => self.secs(v, &join(&path, "cooldown")),
            None => Some(DEFAULT_COOLDOWN_SECS),
        };
        let (min, max) = self.rule_bounds(map, &path);
        if self.problems.len() > before {
            return None;
        }
        let direction = match &action {
            Some(ScaleAction::Add(_) | ScaleAction::EmergencyUp { .. } | ScaleAction::NextTier) => {
                Direction::Up
            }
            Some(ScaleAction::Remove(_)) => Direction::Down,
            _ => Direction::None,
        };
        Some(AlertRule {
            name: name.to_string(),
            target: target?,
            alertname: alertname?,
            matchers,
            direction,
            action,
            cooldown_secs: cooldown_secs?,
            min,
            max,
            while_firing,
        })
    }
}

/// An alert rule's action: the horizontal rules' wording, `emergency up`
/// (`by N`, `to N`), which the arbiter resolves from the target's capacity
/// as `novactl emergency up` would, or a vertical step in the vertical
/// rules' wording (`upgrade to the next tier`, `raise max_connections`):
/// one step up the target's tier ladder.
fn parse_alert_action(text: &str) -> Result<ScaleAction, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let number = |n: &str| {
        n.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("expected a whole number above 0, found {n:?} in {text:?}"))
    };
    match words.as_slice() {
        ["emergency", "up"] => Ok(ScaleAction::EmergencyUp { by: None, to: None }),
        ["emergency", "up", "by", n] => Ok(ScaleAction::EmergencyUp {
            by: Some(number(n)?),
            to: None,
        }),
        ["emergency", "up", "to", n] => Ok(ScaleAction::EmergencyUp {
            by: None,
            to: Some(number(n)?),
        }),
        [verb, ..] if ["upgrade", "raise"].contains(&verb.to_ascii_lowercase().as_str()) => {
            Ok(ScaleAction::NextTier)
        }
        ["emergency", ..] => Err(format!(
            "expected `emergency up`, `emergency up by <n>` or `emergency up to <n>`, found {text:?}"
        )),
        _ => parse_action(text).map_err(|e| {
            format!("{e}, or `emergency up [by <n> | to <n>]`, or `upgrade to the next tier`")
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::from_yaml;

    const HEAD: &str = r#"
targets:
  web: { rules: [q], max: 10, backend: { sim: { initial: 2 } } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 10", action: "add 1 instance" }
"#;

    #[test]
    fn alert_rules_load_onto_their_target() {
        let yaml = format!(
            "{HEAD}alert_rules:\n  latency:\n    target: web\n    alertname: HighLatency\n    matchers: ['service=~\"web|api\"', 'severity!=info']\n    action: add 2 instances\n    cooldown: 1 minute\n    max_instances: 8\n    while_firing: hold_scale_downs\n"
        );
        let policy = from_yaml(&yaml, "p.yaml").expect("valid");
        let rule = policy.targets["web"].alert_rule("latency").expect("bound");
        assert_eq!(rule.alertname, "HighLatency");
        assert_eq!(rule.matchers.len(), 2);
        assert_eq!(rule.cooldown_secs, 60);
        assert_eq!(policy.targets["web"].limits("latency").max, Some(8));
        assert_eq!(
            rule.selector(),
            r#"HighLatency{service=~"web|api",severity!="info"}"#
        );
    }

    #[test]
    fn every_problem_of_alert_rules_is_reported_with_its_path() {
        let yaml = format!(
            "{HEAD}alert_rules:\n  a:\n    target: web\n    alertname: X\n    matchers: ['severity==\"page\"', 'service=~\"(api\"', 'ok=\"1\"']\n    action: add 1 instance\n  b:\n    target: nowhere\n    alertname: Y\n    action: grow a lot\n    while_firing: forever\n  c:\n    target: web\n    alertname: Z\n  d:\n    target: web\n    alertname: W\n    action: add 1 instance\n    colldown: 5\n"
        );
        let error = from_yaml(&yaml, "p.yaml").unwrap_err().to_string();
        for expected in [
            "alert_rules.a.matchers[0]: unknown matcher operator \"==\"",
            "alert_rules.a.matchers[1]: not a valid regex \"(api\"",
            "alert_rules.b.target: no target \"nowhere\"",
            "alert_rules.b.action: expected `add <n> instances`",
            "alert_rules.b.while_firing: expected none, hold_scale_downs or pause",
            "alert_rules.c: give an action",
            "alert_rules.d.colldown: unknown field; did you mean `cooldown`?",
        ] {
            assert!(
                error.contains(expected),
                "missing {expected:?} in:\n{error}"
            );
        }
        assert!(!error.contains("matchers[2]"), "{error}");
    }

    #[test]
    fn alert_actions_parse_or_say_why_not() {
        use crate::wire::ScaleAction::{self, *};
        let ok: &[(&str, ScaleAction)] = &[
            ("add 2 instances", Add(2)),
            ("set to 6", Set(6)),
            ("emergency up", EmergencyUp { by: None, to: None }),
            (
                "emergency  up by 3",
                EmergencyUp {
                    by: Some(3),
                    to: None,
                },
            ),
            (
                "emergency up to 12",
                EmergencyUp {
                    by: None,
                    to: Some(12),
                },
            ),
            ("upgrade to the next tier", NextTier),
            ("Raise max_connections", NextTier),
        ];
        for (text, want) in ok {
            assert_eq!(super::parse_alert_action(text).as_ref(), Ok(want), "{text}");
        }
        let bad: &[(&str, &str)] = &[
            ("emergency down", "expected `emergency up`"),
            ("emergency up by 0", "above 0, found \"0\""),
            ("emergency up to many", "found \"many\""),
            ("emergency up by 2 to 4", "expected `emergency up`"),
            ("grow a lot", "or `emergency up [by <n> | to <n>]`"),
        ];
        for (text, want) in bad {
            let error = super::parse_alert_action(text).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    #[test]
    fn an_emergency_up_rule_loads_as_a_scale_up() {
        let yaml = format!(
            "{HEAD}alert_rules:\n  errors:\n    target: web\n    alertname: HighErrors\n    action: emergency up by 3\n  bad:\n    target: web\n    alertname: X\n    action: emergency up by none\n"
        );
        let error = from_yaml(&yaml, "p.yaml").unwrap_err().to_string();
        assert!(
            error.contains("alert_rules.bad.action: expected a whole number above 0"),
            "{error}"
        );
        let yaml = format!(
            "{HEAD}alert_rules:\n  errors:\n    target: web\n    alertname: HighErrors\n    action: emergency up\n"
        );
        let policy = from_yaml(&yaml, "p.yaml").expect("valid");
        let rule = policy.targets["web"].alert_rule("errors").expect("bound");
        assert_eq!(rule.direction, crate::wire::Direction::Up);
        assert_eq!(
            rule.action,
            Some(crate::wire::ScaleAction::EmergencyUp { by: None, to: None })
        );
    }
}
