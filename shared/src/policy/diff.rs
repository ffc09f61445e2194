//! What a policy change will do, one line per change: targets added and
//! removed, and per target its bounds, settings and rules added, removed or
//! changed field by field. `novactl policy diff OLD NEW` prints it before a
//! reload, and the reload log names the revisions on either side.
//!
//! Lines read, for example:
//!
//! ```text
//! + target api: min 1, max 10, rules cpu_based.scale_up, cpu_based.scale_down, backend sim
//! - target old
//! ~ target web: max: 100 -> 200
//! + target web, rule burst.scale_up: when avg_cpu > 90%: add 4, cooldown 60 s
//! ~ target web, rule cpu_based.scale_up: condition: "avg_cpu > 70% for 2 minutes" -> "avg_cpu > 60% for 2 minutes"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::{Condition, Policy, Target, ThresholdRule, TrackingRule};

/// One change between two policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something new: `what` (`target api`, `target web, rule x`), with a summary.
    Added {
        /// What was added.
        what: String,
        /// Its main settings, one phrase.
        detail: String,
    },
    /// Something gone.
    Removed {
        /// What was removed.
        what: String,
    },
    /// One field of something that is in both.
    Changed {
        /// What changed.
        what: String,
        /// The field, as the policy file names it.
        field: &'static str,
        /// Its value before.
        old: String,
        /// Its value after.
        new: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { what, detail } if detail.is_empty() => write!(f, "+ {what}"),
            Change::Added { what, detail } => write!(f, "+ {what}: {detail}"),
            Change::Removed { what } => write!(f, "- {what}"),
            Change::Changed {
                what,
                field,
                old,
                new,
            } => write!(f, "~ {what}: {field}: {old} -> {new}"),
        }
    }
}

/// Every change from `old` to `new`, in a stable order: evaluation
/// settings, metric units, then targets by name. Empty when the policies
/// are equal. A difference no line below describes still gives one line,
/// so a change is never reported as none.
pub fn diff(old: &Policy, new: &Policy) -> Vec<Change> {
    let mut out = Vec::new();
    let (a, b) = (&old.evaluation, &new.evaluation);
    let what = "evaluation";
    field(
        &mut out,
        what,
        "staleness_secs",
        &a.staleness_secs,
        &b.staleness_secs,
    );
    field(
        &mut out,
        what,
        "max_future_skew_secs",
        &a.max_future_skew_secs,
        &b.max_future_skew_secs,
    );
    field(
        &mut out,
        what,
        "max_sample_age_secs",
        &a.max_sample_age_secs,
        &b.max_sample_age_secs,
    );
    field(
        &mut out,
        what,
        "refire_secs",
        &a.refire_secs,
        &b.refire_secs,
    );
    by_name(
        &mut out,
        &old.metric_units,
        &new.metric_units,
        |name, unit| (format!("metric {name}"), format!("unit {}", json(unit))),
        |out, name, a, b| {
            field(out, &format!("metric {name}"), "unit", &json(a), &json(b));
        },
    );
    by_name(
        &mut out,
        &old.targets,
        &new.targets,
        |name, target| (format!("target {name}"), target_summary(target)),
        target_changes,
    );
    if out.is_empty() && old != new {
        out.push(Change::Changed {
            what: "policy".into(),
            field: "(a setting this diff does not show)",
            old: "as before".into(),
            new: "different".into(),
        });
    }
    out
}

/// Added, removed and changed entries of two maps keyed by name.
fn by_name<T: PartialEq>(
    out: &mut Vec<Change>,
    old: &BTreeMap<String, T>,
    new: &BTreeMap<String, T>,
    added: impl Fn(&str, &T) -> (String, String),
    changed: impl Fn(&mut Vec<Change>, &str, &T, &T),
) {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        match (old.get(name), new.get(name)) {
            (Some(_), None) => out.push(Change::Removed {
                what: added(name, &old[name]).0,
            }),
            (None, Some(value)) => {
                let (what, detail) = added(name, value);
                out.push(Change::Added { what, detail });
            }
            (Some(a), Some(b)) if a != b => changed(out, name, a, b),
            _ => {}
        }
    }
}

fn target_changes(out: &mut Vec<Change>, name: &str, a: &Target, b: &Target) {
    let what = format!("target {name}");
    field(out, &what, "min", &a.min, &b.min);
    field(out, &what, "max", &a.max, &b.max);
    field(out, &what, "warmup_secs", &a.warmup_secs, &b.warmup_secs);
    field(out, &what, "dry_run", &a.dry_run, &b.dry_run);
    field(
        out,
        &what,
        "fallback",
        &json(&a.fallback),
        &json(&b.fallback),
    );
    field(
        out,
        &what,
        "flapping",
        &json(&a.flapping),
        &json(&b.flapping),
    );
    field(out, &what, "backend", &json(&a.backend), &json(&b.backend));
    field(out, &what, "gradual", &json(&a.gradual), &json(&b.gradual));
    let rule_what = |rule: &str| format!("target {name}, rule {rule}");
    let threshold = |rules: &[ThresholdRule]| -> BTreeMap<String, ThresholdRule> {
        rules.iter().map(|r| (r.name.clone(), r.clone())).collect()
    };
    by_name(
        out,
        &threshold(&a.rules),
        &threshold(&b.rules),
        |rule, r| (rule_what(rule), threshold_summary(r)),
        |out, rule, x, y| {
            let what = rule_what(rule);
            field(
                out,
                &what,
                "direction",
                &x.direction.as_str(),
                &y.direction.as_str(),
            );
            field(
                out,
                &what,
                "condition",
                &condition(&x.condition, &y.condition),
                &condition(&y.condition, &x.condition),
            );
            field(
                out,
                &what,
                "action",
                &x.action.describe(),
                &y.action.describe(),
            );
            field(
                out,
                &what,
                "cooldown",
                &secs(x.cooldown_secs),
                &secs(y.cooldown_secs),
            );
            field(out, &what, "min", &opt(x.min), &opt(y.min));
            field(out, &what, "max", &opt(x.max), &opt(y.max));
        },
    );
    let tracking = |rules: &[TrackingRule]| -> BTreeMap<String, TrackingRule> {
        rules.iter().map(|r| (r.name.clone(), r.clone())).collect()
    };
    by_name(
        out,
        &tracking(&a.tracking),
        &tracking(&b.tracking),
        |rule, r| (rule_what(rule), tracking_summary(r)),
        |out, rule, x, y| {
            let what = rule_what(rule);
            let keep = |r: &TrackingRule| format!("{:?} (target {})", r.text, r.target);
            let (kx, ky) = if x.text == y.text {
                (keep(x), keep(y))
            } else {
                (format!("{:?}", x.text), format!("{:?}", y.text))
            };
            field(out, &what, "target", &kx, &ky);
            field(out, &what, "tolerance", &x.tolerance, &y.tolerance);
            field(
                out,
                &what,
                "interval",
                &secs(x.interval_secs),
                &secs(y.interval_secs),
            );
            field(
                out,
                &what,
                "cooldown",
                &secs(x.cooldown_secs),
                &secs(y.cooldown_secs),
            );
            field(out, &what, "min", &opt(x.min), &opt(y.min));
            field(out, &what, "max", &opt(x.max), &opt(y.max));
            field(
                out,
                &what,
                "behavior",
                &json(&x.behavior),
                &json(&y.behavior),
            );
        },
    );
    by_name(
        out,
        &a.ladders,
        &b.ladders,
        |rule, ladder| (format!("target {name}, ladder of {rule}"), json(ladder)),
        |out, rule, x, y| {
            field(
                out,
                &format!("target {name}, ladder of {rule}"),
                "options",
                &json(x),
                &json(y),
            );
        },
    );
}

/// A line for `field` of `what` when its two values differ.
fn field<T: PartialEq + fmt::Display + ?Sized>(
    out: &mut Vec<Change>,
    what: &str,
    field: &'static str,
    old: &T,
    new: &T,
) {
    if old != new {
        out.push(Change::Changed {
            what: what.to_string(),
            field,
            old: old.to_string(),
            new: new.to_string(),
        });
    }
}

/// A condition as written, or, when the text is the same as `other`'s but
/// its reading is not (a metric's unit changed), the threshold it reads as.
fn condition(this: &Condition, other: &Condition) -> String {
    if this.text == other.text && this != other {
        format!("{:?} (threshold {} canonical)", this.text, this.threshold)
    } else {
        format!("{:?}", this.text)
    }
}

fn target_summary(target: &Target) -> String {
    let rules: Vec<&str> = target
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .chain(target.tracking.iter().map(|r| r.name.as_str()))
        .collect();
    format!(
        "min {}, max {}, rules {}, backend {}",
        target.min,
        target.max,
        if rules.is_empty() {
            "none".to_string()
        } else {
            rules.join(", ")
        },
        target.backend.kind()
    )
}

fn threshold_summary(rule: &ThresholdRule) -> String {
    let mut text = format!(
        "when {}: {}, cooldown {}",
        rule.condition.text,
        rule.action.describe(),
        secs(rule.cooldown_secs)
    );
    bounds(&mut text, rule.min, rule.max);
    text
}

fn tracking_summary(rule: &TrackingRule) -> String {
    let mut text = format!("{}, cooldown {}", rule.text, secs(rule.cooldown_secs));
    bounds(&mut text, rule.min, rule.max);
    text
}

fn bounds(text: &mut String, min: Option<u32>, max: Option<u32>) {
    if let Some(min) = min {
        text.push_str(&format!(", min {min}"));
    }
    if let Some(max) = max {
        text.push_str(&format!(", max {max}"));
    }
}

fn secs(secs: u64) -> String {
    format!("{secs} s")
}

fn opt(value: Option<u32>) -> String {
    value.map_or_else(|| "none".to_string(), |n| n.to_string())
}

/// Compact JSON, for settings without a wording of their own.
fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::from_yaml;

    const BASE: &str = r#"
targets:
  web:
    rules: [cpu_based]
    max: 100
    backend: { sim: { initial: 2 } }
horizontal_scaling_rules:
  cpu_based:
    scale_up:   { condition: "avg_cpu > 70% for 2 minutes",  action: "add 2 instances",   cooldown: 300, max_instances: 100 }
    scale_down: { condition: "avg_cpu < 30% for 10 minutes", action: "remove 1 instance", cooldown: 600, min_instances: 3 }
"#;

    fn load(text: &str) -> Policy {
        from_yaml(text, "test.yaml").expect("valid policy")
    }

    fn lines(old: &str, new: &str) -> Vec<String> {
        diff(&load(old), &load(new))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn each_change_is_one_line() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("the same file", BASE, &[]),
            (
                "a threshold",
                &BASE.replace("avg_cpu > 70%", "avg_cpu > 60%"),
                &[
                    r#"~ target web, rule cpu_based.scale_up: condition: "avg_cpu > 70% for 2 minutes" -> "avg_cpu > 60% for 2 minutes""#,
                ],
            ),
            (
                "an action and a cooldown",
                &BASE.replace("add 2 instances\",   cooldown: 300", "add 3 instances\",   cooldown: 120"),
                &[
                    "~ target web, rule cpu_based.scale_up: action: add 2 -> add 3",
                    "~ target web, rule cpu_based.scale_up: cooldown: 300 s -> 120 s",
                ],
            ),
            (
                "a target's max and a rule's min",
                &BASE.replace("max: 100\n", "max: 150\n").replace("min_instances: 3", "min_instances: 4"),
                &[
                    // The target's min defaults to the smallest rule minimum.
                    "~ target web: min: 3 -> 4",
                    "~ target web: max: 100 -> 150",
                    "~ target web, rule cpu_based.scale_down: min: 3 -> 4",
                ],
            ),
            (
                "a rule bound and a target added",
                &BASE.replace("rules: [cpu_based]", "rules: [cpu_based, burst]").replace(
                    "horizontal_scaling_rules:\n",
                    "  api:\n    rules: [burst]\n    backend: { sim: { initial: 1 } }\nhorizontal_scaling_rules:\n  burst:\n    scale_up: { condition: \"avg_cpu > 90%\", action: \"add 4 instances\", cooldown: 60, max: 50 }\n",
                ),
                &[
                    "+ target api: min 1, max 50, rules burst.scale_up, backend sim",
                    "+ target web, rule burst.scale_up: when avg_cpu > 90%: add 4, cooldown 60 s, max 50",
                ],
            ),
            (
                "a target removed, an evaluation setting changed",
                &BASE.replace("targets:\n", "evaluation: { refire_secs: 60 }\ntargets:\n").replace(
                    "horizontal_scaling_rules:\n",
                    "  api:\n    rules: [cpu_based]\n    backend: { sim: { initial: 1 } }\nhorizontal_scaling_rules:\n",
                ),
                &[
                    "~ evaluation: refire_secs: 30 -> 60",
                    "+ target api: min 3, max 100, rules cpu_based.scale_up, cpu_based.scale_down, backend sim",
                ],
            ),
        ];
        for (name, new, expected) in cases {
            assert_eq!(lines(BASE, new), *expected, "{name}");
        }
        // And back: what was added is removed.
        let with_api = BASE.replace(
            "horizontal_scaling_rules:\n",
            "  api:\n    rules: [cpu_based]\n    backend: { sim: { initial: 1 } }\nhorizontal_scaling_rules:\n",
        );
        assert_eq!(lines(&with_api, BASE), ["- target api"]);
    }

    #[test]
    fn a_unit_change_that_keeps_the_text_shows_the_new_reading() {
        let bare = BASE.replace("avg_cpu > 70% for 2 minutes", "avg_cpu > 70 for 2 minutes");
        let ratio = format!("metrics:\n  cpu: {{ unit: ratio }}\n{bare}");
        let percent = format!("metrics:\n  cpu: {{ unit: percent }}\n{bare}");
        let got = lines(&percent, &ratio);
        assert_eq!(
            got[0], r#"~ metric cpu: unit: "percent" -> "ratio""#,
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|l| l.contains("condition") && l.contains("threshold 70 canonical")),
            "{got:?}"
        );
    }

    #[test]
    fn equal_policies_have_equal_revisions_and_different_ones_do_not() {
        let spaced = format!(
            "# a comment\n{}",
            BASE.replace("max: 100\n", "max:    100\n")
        );
        assert_eq!(
            super::super::revision(&load(BASE)),
            super::super::revision(&load(&spaced))
        );
        let changed = BASE.replace("max: 100\n", "max: 101\n");
        let (a, b) = (
            super::super::revision(&load(BASE)),
            super::super::revision(&load(&changed)),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
