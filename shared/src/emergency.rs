//! The runbook's emergency operations, decided before they become
//! triggers: which capacity `novactl emergency up|down|reset` asks for on
//! one target, or why it is refused. The arbiter then submits the capacity
//! as a forced operator trigger (`arbitrate::EMERGENCY_*_RULE`), decided
//! and audited like any other, bounds included.
//!
//! | op      | asks for                                   | refused when                                               |
//! |---------|--------------------------------------------|------------------------------------------------------------|
//! | `up`    | `--to N`, else capacity + `--by N`, else double | scale-ups paused; `--to` not above the capacity       |
//! | `down`  | `--to N`, else capacity - `--by N` (not below the floor), else the floor | scale-downs paused; below the floor; nothing to shed; a scale-down condition says the load is above its threshold |
//! | `reset` | the target's `baseline`                    | no baseline; the direction it moves in is paused           |
//!
//! The floor is the target's `emergency_floor`, else its role's (3 for
//! `api`, 5 for `worker` by default), else its `min`.

use crate::arbitrate::TargetState;
use crate::policy::Target;
use crate::wire::{EmergencyOp, LoadReading};

/// What one emergency operation asks of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyAsk {
    /// The capacity to ask for.
    pub desired: u32,
    /// One clause for the reason: `double 5 -> 10`.
    pub how: String,
}

/// The capacity `op` asks of `target` from `base` (its capacity now), or
/// the one line that says why it is refused. `load` is the target's
/// scale-down conditions read now (`down` only; `None` when not read).
pub fn ask(
    op: EmergencyOp,
    target: &Target,
    state: &TargetState,
    base: Option<u32>,
    by: Option<u32>,
    to: Option<u32>,
    load: Option<&[LoadReading]>,
) -> Result<EmergencyAsk, String> {
    let name = &target.name;
    if by.is_some() && op == EmergencyOp::Reset {
        return Err(format!(
            "--by is for emergency up and down, not reset ({name})"
        ));
    }
    if by.is_some() && to.is_some() {
        return Err("give --by or --to, not both".to_string());
    }
    let paused = |up: bool| {
        let (paused, what) = if up {
            (state.paused_up, "scale-ups")
        } else {
            (state.paused_down, "scale-downs")
        };
        paused.then(|| {
            format!(
                "{name}'s {what} are paused by an operator; resume it first (novactl resume {name})"
            )
        })
    };
    let Some(base) = base else {
        return Err(format!(
            "capacity of {name} is not known yet (no actuator has reported it)"
        ));
    };
    match op {
        EmergencyOp::Up => {
            if let Some(why) = paused(true) {
                return Err(why);
            }
            let (desired, how) = match (to, by) {
                (Some(to), _) if to <= base => {
                    return Err(format!("--to {to} is not above {name}'s capacity {base}"));
                }
                (Some(to), _) => (to, format!("to {to}")),
                (None, Some(0)) => return Err("--by must be at least 1".to_string()),
                (None, Some(by)) => (base.saturating_add(by), format!("add {by}")),
                (None, None) => (base.saturating_mul(2).max(base + 1), "double".to_string()),
            };
            Ok(EmergencyAsk {
                desired,
                how: format!("{how}, {base} -> {desired}"),
            })
        }
        EmergencyOp::Down => {
            if let Some(why) = paused(false) {
                return Err(why);
            }
            let floor = target.emergency.floor.unwrap_or(target.min);
            let (desired, how) = match (to, by) {
                (Some(to), _) if to < floor => {
                    return Err(format!(
                        "--to {to} is below {name}'s emergency floor {floor}"
                    ));
                }
                (Some(to), _) => (to, format!("down to {to}")),
                (None, Some(0)) => return Err("--by must be at least 1".to_string()),
                // The runbook's `current - N`, never below the floor.
                (None, Some(by)) => {
                    let desired = base.saturating_sub(by).max(floor);
                    let floored = if desired == floor { " (its floor)" } else { "" };
                    (desired, format!("remove {by}, down to {desired}{floored}"))
                }
                (None, None) => (floor, format!("down to {floor} (its floor)")),
            };
            if desired >= base {
                return Err(format!(
                    "{name} is at {base}, not above {desired}: nothing to shed"
                ));
            }
            if let Some(busy) = load
                .into_iter()
                .flatten()
                .find(|r| r.value.is_some() && !r.holds)
            {
                return Err(format!(
                    "{name}'s load is above its scale-down threshold: {} (rule {}); emergency down refused",
                    busy.text, busy.rule
                ));
            }
            Ok(EmergencyAsk {
                desired,
                how: format!("{how}, {base} -> {desired}"),
            })
        }
        EmergencyOp::Reset => {
            let Some(baseline) = target.emergency.baseline else {
                return Err(format!(
                    "{name} has no baseline in the policy; add `baseline: N` to targets.{name}"
                ));
            };
            if baseline != base
                && let Some(why) = paused(baseline > base)
            {
                return Err(why);
            }
            Ok(EmergencyAsk {
                desired: baseline,
                how: format!("reset to its baseline, {base} -> {baseline}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::from_yaml;

    fn target(extra: &str) -> Target {
        let yaml = format!(
            "targets:\n  web:\n    rules: [cpu]\n    min: 1\n    max: 20\n{extra}    backend: {{sim: {{initial: 4}}}}\nhorizontal_scaling_rules:\n  cpu:\n    scale_up: {{condition: \"avg_cpu > 70%\", action: \"add 2 instances\"}}\n    scale_down: {{condition: \"avg_cpu < 30%\", action: \"remove 1 instance\"}}\n"
        );
        from_yaml(&yaml, "t.yaml")
            .unwrap_or_else(|e| panic!("{e}"))
            .targets
            .remove("web")
            .expect("web")
    }

    fn reading(value: Option<f64>, holds: bool) -> LoadReading {
        LoadReading {
            rule: "cpu.scale_down".into(),
            condition: "avg_cpu < 30%".into(),
            value,
            holds,
            text: format!("avg_cpu {value:?}"),
        }
    }

    #[test]
    fn each_operation_asks_for_its_capacity_or_says_why_not() {
        use EmergencyOp::*;
        let plain = target("");
        let api = target("    role: api\n    baseline: 6\n");
        let paused_up = TargetState {
            paused_up: true,
            ..Default::default()
        };
        let paused_down = TargetState {
            paused_down: true,
            ..Default::default()
        };
        let free = TargetState::default();
        let busy = [reading(Some(0.75), false)];
        let idle = [reading(Some(0.1), true)];
        let silent = [reading(None, false)];
        type Case<'a> = (
            EmergencyOp,
            &'a Target,
            &'a TargetState,
            Option<u32>,
            (Option<u32>, Option<u32>),
            Option<&'a [LoadReading]>,
            Result<u32, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (Up, &plain, &free, Some(5), (None, None), None, Ok(10)),
            (Up, &plain, &free, Some(0), (None, None), None, Ok(1)),
            (Up, &plain, &free, Some(5), (Some(3), None), None, Ok(8)),
            (Up, &plain, &free, Some(5), (None, Some(12)), None, Ok(12)),
            (
                Up,
                &plain,
                &free,
                Some(5),
                (None, Some(5)),
                None,
                Err("--to 5 is not above web's capacity 5"),
            ),
            (
                Up,
                &plain,
                &free,
                Some(5),
                (Some(0), None),
                None,
                Err("--by must be at least 1"),
            ),
            (
                Up,
                &plain,
                &free,
                Some(5),
                (Some(1), Some(9)),
                None,
                Err("give --by or --to, not both"),
            ),
            (
                Up,
                &plain,
                &paused_up,
                Some(5),
                (None, None),
                None,
                Err("web's scale-ups are paused by an operator; resume it first"),
            ),
            (
                Up,
                &plain,
                &free,
                None,
                (None, None),
                None,
                Err("capacity of web is not known yet"),
            ),
            // Down: to the role's floor, else the target's min.
            (Down, &api, &free, Some(8), (None, None), Some(&idle), Ok(3)),
            (Down, &plain, &free, Some(8), (None, None), None, Ok(1)),
            (Down, &api, &free, Some(8), (None, Some(4)), None, Ok(4)),
            (
                Down,
                &api,
                &free,
                Some(8),
                (None, Some(2)),
                None,
                Err("--to 2 is below web's emergency floor 3"),
            ),
            (
                Down,
                &api,
                &free,
                Some(3),
                (None, None),
                None,
                Err("web is at 3, not above 3: nothing to shed"),
            ),
            (
                Down,
                &api,
                &free,
                Some(8),
                (None, None),
                Some(&busy),
                Err(
                    "web's load is above its scale-down threshold: avg_cpu Some(0.75) (rule cpu.scale_down)",
                ),
            ),
            // No recent sample: nothing says the load is high.
            (
                Down,
                &api,
                &free,
                Some(8),
                (None, None),
                Some(&silent),
                Ok(3),
            ),
            (
                Down,
                &api,
                &paused_down,
                Some(8),
                (None, None),
                None,
                Err("web's scale-downs are paused"),
            ),
            (Down, &api, &free, Some(8), (Some(2), None), None, Ok(6)),
            (Down, &api, &free, Some(8), (Some(7), None), None, Ok(3)),
            (
                Reset,
                &api,
                &free,
                Some(8),
                (Some(1), None),
                None,
                Err("--by is for emergency up and down, not reset"),
            ),
            // Reset: to the baseline, refused when its direction is paused.
            (Reset, &api, &free, Some(12), (None, None), None, Ok(6)),
            (
                Reset,
                &api,
                &paused_down,
                Some(12),
                (None, None),
                None,
                Err("web's scale-downs are paused"),
            ),
            (
                Reset,
                &api,
                &paused_down,
                Some(2),
                (None, None),
                None,
                Ok(6),
            ),
            (
                Reset,
                &plain,
                &free,
                Some(12),
                (None, None),
                None,
                Err("web has no baseline in the policy; add `baseline: N` to targets.web"),
            ),
        ];
        for (op, target, state, base, (by, to), load, expected) in cases {
            let got = ask(op, target, state, base, by, to, load);
            let what = format!("{} base {base:?} by {by:?} to {to:?}", op.as_str());
            match (got, expected) {
                (Ok(ask), Ok(desired)) => assert_eq!(ask.desired, desired, "{what}: {}", ask.how),
                (Err(why), Err(start)) => assert!(why.starts_with(start), "{what}: {why}"),
                (got, expected) => panic!("{what}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
