//! The runbook's emergency operations in the policy (section 2,
//! `emergency-scale.sh`): the top-level `emergency:` settings, `groups:` of
//! targets that `novactl emergency ... GROUP` acts on, and each target's
//! `role`, `emergency_floor` and `baseline`. Same walker: every problem is
//! collected with its path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Walker, join, kind_of};
use crate::policy::{EmergencyDefaults, EmergencyTarget, Role};

pub(super) const EMERGENCY_KEYS: &[&str] = &["hold_down_secs", "drain_timeout_secs", "floors"];

impl Walker {
    /// The top-level `emergency:` block; its defaults when absent.
    pub(super) fn emergency_defaults(&mut self, value: Option<&Value>) -> EmergencyDefaults {
        let mut defaults = EmergencyDefaults::default();
        let Some(value) = value else {
            return defaults;
        };
        let Some(m) = self.map(value, "emergency", EMERGENCY_KEYS) else {
            return defaults;
        };
        if let Some(v) = m.get("hold_down_secs")
            && let Some(secs) = self.secs(v, "emergency.hold_down_secs")
        {
            defaults.hold_down_secs = secs;
        }
        if let Some(v) = m.get("drain_timeout_secs")
            && let Some(secs) = self.secs(v, "emergency.drain_timeout_secs")
        {
            if secs > EmergencyDefaults::MAX_DRAIN_TIMEOUT_SECS {
                self.problem(
                    "emergency.drain_timeout_secs",
                    format!(
                        "expected at most {} seconds (the operator waits for the reply), found {secs}",
                        EmergencyDefaults::MAX_DRAIN_TIMEOUT_SECS
                    ),
                );
            } else {
                defaults.drain_timeout_secs = secs;
            }
        }
        if let Some(v) = m.get("floors")
            && let Some(floors) = self.map(v, "emergency.floors", &["api", "worker"])
        {
            for (role, slot) in [
                ("api", &mut defaults.api_floor),
                ("worker", &mut defaults.worker_floor),
            ] {
                if let Some(n) = floors
                    .get(role)
                    .and_then(|v| self.count(v, &join("emergency.floors", role)))
                {
                    *slot = n;
                }
            }
        }
        defaults
    }

    /// A target's emergency settings from its `role`, `emergency_floor` and
    /// `baseline`, within its bounds.
    pub(super) fn emergency_target(
        &mut self,
        map: &Map<String, Value>,
        path: &str,
        defaults: &EmergencyDefaults,
        bounds: (Option<u32>, Option<u32>),
    ) -> Option<EmergencyTarget> {
        let role = match map.get("role") {
            None => Some(None),
            Some(Value::String(s)) if s == "api" => Some(Some(Role::Api)),
            Some(Value::String(s)) if s == "worker" => Some(Some(Role::Worker)),
            Some(other) => {
                self.problem(
                    &join(path, "role"),
                    format!(
                        "expected api or worker (the emergency floors' kinds), found {}",
                        super::show(other)
                    ),
                );
                None
            }
        };
        let explicit_floor = match map.get("emergency_floor") {
            None => Some(None),
            Some(v) => self.count(v, &join(path, "emergency_floor")).map(Some),
        };
        let baseline = match map.get("baseline") {
            None => Some(None),
            Some(v) => self.count(v, &join(path, "baseline")).map(Some),
        };
        let (role, explicit_floor, baseline) = (role?, explicit_floor?, baseline?);
        let (min, max) = bounds;
        // A role's floor is a default: below the target's min it is the min
        // (the arbiter would stop there anyway). What the file says of this
        // target must be within its bounds.
        let role_floor = match role {
            Some(Role::Api) => Some(defaults.api_floor),
            Some(Role::Worker) => Some(defaults.worker_floor),
            None => None,
        }
        .map(|floor| min.map_or(floor, |lo| floor.max(lo)));
        let floor = explicit_floor.or(role_floor);
        let mut ok = true;
        for (key, value) in [("emergency_floor", explicit_floor), ("baseline", baseline)] {
            let (Some(n), Some(lo), Some(hi)) = (value, min, max) else {
                continue;
            };
            if n < lo || n > hi {
                self.problem(
                    &join(path, key),
                    format!("{n} is outside the target's bounds {lo}..={hi}"),
                );
                ok = false;
            }
        }
        ok.then_some(EmergencyTarget {
            hold_down_secs: defaults.hold_down_secs,
            drain_timeout_secs: defaults.drain_timeout_secs,
            role,
            floor,
            baseline,
        })
    }

    /// `groups:`: names for sets of targets, none of them a target's name
    /// or `all`.
    pub(super) fn groups(
        &mut self,
        value: Option<&Value>,
        targets: &[&str],
    ) -> BTreeMap<String, Vec<String>> {
        let mut groups = BTreeMap::new();
        let Some(value) = value else {
            return groups;
        };
        let Value::Object(entries) = value else {
            self.problem(
                "groups",
                format!(
                    "expected a map of group name to a list of targets, found {}",
                    kind_of(value)
                ),
            );
            return groups;
        };
        for (name, members) in entries {
            let path = join("groups", name);
            if name == "all" || targets.contains(&name.as_str()) {
                self.problem(
                    &path,
                    format!(
                        "{name:?} already names {}",
                        if name == "all" {
                            "every target"
                        } else {
                            "a target"
                        }
                    ),
                );
                continue;
            }
            let Value::Array(members) = members else {
                self.problem(
                    &path,
                    format!("expected a list of targets, found {}", kind_of(members)),
                );
                continue;
            };
            let mut names = Vec::new();
            for (i, member) in members.iter().enumerate() {
                let item = format!("{path}[{i}]");
                match member.as_str() {
                    Some(m) if targets.contains(&m) => names.push(m.to_string()),
                    Some(m) => self.problem(
                        &item,
                        format!("unknown target {m:?}; targets: {}", targets.join(", ")),
                    ),
                    None => self.problem(
                        &item,
                        format!("expected a target name, found {}", kind_of(member)),
                    ),
                }
            }
            if names.is_empty() && !members.is_empty() {
                continue;
            }
            if names.is_empty() {
                self.problem(&path, "expected at least one target");
                continue;
            }
            groups.insert(name.clone(), names);
        }
        groups
    }
}
