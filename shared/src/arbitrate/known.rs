//! Whether this arbiter's policy knows what a trigger names, before it is
//! decided. A rule the policy does not have has no cooldown, bounds or
//! behavior to decide with, and defaults would be a guess; during a policy
//! rollout the evaluator may already run a revision the arbiter has not
//! loaded yet (or the other way round), and another replica may know it.
//!
//! | the trigger names                         | its `policy_revision`          | outcome  |
//! |-------------------------------------------|--------------------------------|----------|
//! | a known target and only known rules       | any                            | decided  |
//! | a target or a rule this policy lacks      | another than this arbiter's    | deferred |
//! | a target or a rule this policy lacks      | this arbiter's, or none        | rejected |
//!
//! Deferred: delivered again later (to any replica) and audited as
//! `deferred`, naming both revisions, until an arbiter that has the rule
//! decides it or the trigger is no longer relevant. Rejected: with the same
//! revision the evaluator had the same rules, so the message is wrong (an
//! outside publisher's, or a bug), and it is dead-lettered. A trigger
//! without a revision (an older evaluator's, an outside publisher's) cannot
//! say which policy it came from, so it is judged as if it had this one.
//! Only rule triggers name rules: operator and fallback firings have none.

use crate::policy::{Policy, Target};
use crate::wire::{Trigger, TriggerSource};

/// Why a trigger is not decided by this arbiter's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// Another revision may know it: leave it to a replica that does.
    Defer(String),
    /// Not in this policy, and the trigger says it was made with this
    /// policy (or says nothing): a bad message.
    Reject(String),
}

/// The trigger's target in `policy` (of `revision`) when the policy knows
/// the target and every rule the trigger names; otherwise what to do with it.
pub fn check_known<'p>(
    policy: &'p Policy,
    revision: &str,
    trigger: &Trigger,
) -> Result<&'p Target, Unknown> {
    let missing = match policy.targets.get(&trigger.target) {
        None => format!("no target {:?}", trigger.target),
        Some(target) => {
            let unknown = match trigger.source {
                TriggerSource::Rule => trigger.firings.iter().find(|f| {
                    target.rule(&f.rule).is_none() && target.tracking_rule(&f.rule).is_none()
                }),
                // An alert's rule is one of the target's `alert_rules`.
                TriggerSource::Alert => trigger
                    .firings
                    .iter()
                    .find(|f| target.alert_rule(&f.rule).is_none()),
                _ => None,
            };
            match unknown {
                None => return Ok(target),
                Some(firing) => format!("no rule {:?} for target {:?}", firing.rule, target.name),
            }
        }
    };
    Err(match trigger.policy_revision.as_deref() {
        Some(theirs) if theirs != revision => Unknown::Defer(format!(
            "{missing} in this arbiter's policy (revision {revision}); the trigger was \
             evaluated with revision {theirs}, left to an arbiter that has it"
        )),
        Some(_) => Unknown::Reject(format!(
            "{missing} in the policy (revision {revision}), which the trigger says it was \
             evaluated with"
        )),
        None => Unknown::Reject(format!(
            "{missing} in the policy (revision {revision}); the trigger names no policy \
             revision, so no other arbiter would know it better"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arbitrate::tests_support::fixture;
    use crate::policy::revision;

    #[test]
    fn unknown_rules_and_targets_are_deferred_to_another_revision_or_rejected() {
        let (policy, rule_trigger) = fixture();
        let ours = revision(&policy);
        let with = |target: &str, rule: &str, source: TriggerSource, rev: Option<&str>| {
            let mut t = rule_trigger.clone();
            t.target = target.into();
            t.firings[0].rule = rule.into();
            t.source = source;
            t.policy_revision = rev.map(str::to_string);
            t
        };
        #[derive(Debug, PartialEq)]
        enum Expect {
            Decided,
            Deferred,
            Rejected,
        }
        use Expect::*;
        use TriggerSource::{Fallback, Operator, Rule};
        let cases = [
            (
                "known rule, same revision",
                with("w", "q.scale_up", Rule, Some(&ours)),
                Decided,
            ),
            (
                "known rule, other revision",
                with("w", "q.scale_up", Rule, Some("0ther")),
                Decided,
            ),
            (
                "known rule, no revision",
                with("w", "q.scale_up", Rule, None),
                Decided,
            ),
            (
                "unknown rule, other revision",
                with("w", "new.scale_up", Rule, Some("0ther")),
                Deferred,
            ),
            (
                "unknown rule, same revision",
                with("w", "new.scale_up", Rule, Some(&ours)),
                Rejected,
            ),
            (
                "unknown rule, no revision",
                with("w", "new.scale_up", Rule, None),
                Rejected,
            ),
            (
                "unknown target, other revision",
                with("api", "q.scale_up", Rule, Some("0ther")),
                Deferred,
            ),
            (
                "unknown target, same revision",
                with("api", "q.scale_up", Rule, Some(&ours)),
                Rejected,
            ),
            (
                "unknown target, no revision",
                with("api", "q.scale_up", Rule, None),
                Rejected,
            ),
            (
                "operator firing names no rule",
                with("w", "operator", Operator, Some(&ours)),
                Decided,
            ),
            (
                "fallback firing names no rule",
                with("w", "fallback", Fallback, None),
                Decided,
            ),
            (
                "operator, unknown target, other revision",
                with("api", "operator", Operator, Some("0ther")),
                Deferred,
            ),
        ];
        for (name, trigger, expected) in cases {
            let got = match check_known(&policy, &ours, &trigger) {
                Ok(target) => {
                    assert_eq!(target.name, "w", "{name}");
                    Decided
                }
                Err(Unknown::Defer(why)) => {
                    assert!(
                        why.contains(&ours) && why.contains("0ther"),
                        "{name}: {why}"
                    );
                    Deferred
                }
                Err(Unknown::Reject(why)) => {
                    assert!(why.contains(&ours), "{name}: {why}");
                    Rejected
                }
            };
            assert_eq!(got, expected, "{name}");
        }
        let Err(Unknown::Defer(why)) = check_known(
            &policy,
            &ours,
            &with("w", "new.scale_up", Rule, Some("0ther")),
        ) else {
            unreachable!("deferred above")
        };
        assert!(
            why.contains("no rule \"new.scale_up\" for target \"w\""),
            "{why}"
        );
    }
}
