//! Fallback when a target's metric source goes silent (KEDA's `fallback`).
//!
//! Silence is measured on the receiver's wall clock, passed in: event time
//! cannot say that nothing arrived. A target with a `fallback` in the policy
//! that hears no sample for `after_secs` gets one trigger asking for the
//! fallback capacity; it falls back again only after samples have resumed
//! and stopped once more. The trigger id derives from the last sample's event
//! time, so every evaluator replica raises the same trigger and JetStream keeps one.

use crate::units::secs_to_ms;
use std::collections::HashMap;

use crate::evaluate::human_secs;
use crate::ids;
use crate::policy::{Fallback, Policy};
use crate::wire::{Direction, RuleFiring, ScaleAction, Trigger, TriggerSource, Version};

struct Watch {
    fallback: Fallback,
    /// Wall clock (ms) of the last sample received.
    heard_ms: i64,
    /// Event time of the newest sample received.
    last_event_ts: i64,
    /// A fallback trigger was raised for the current silence.
    fallen_back: bool,
}

/// Watches every target that has a fallback.
pub struct SilenceWatch {
    targets: HashMap<String, Watch>,
}

impl SilenceWatch {
    /// Starts watching at `now_ms`: a source that never speaks is silent too.
    pub fn new(policy: &Policy, now_ms: i64) -> Self {
        let targets = policy
            .targets
            .values()
            .filter_map(|t| {
                t.fallback.map(|fallback| {
                    let watch = Watch {
                        fallback,
                        heard_ms: now_ms,
                        last_event_ts: 0,
                        fallen_back: false,
                    };
                    (t.name.clone(), watch)
                })
            })
            .collect();
        SilenceWatch { targets }
    }

    /// Takes up a new policy at `now_ms`: a target still with a fallback
    /// keeps what was heard of it (its silence goes on, with the new
    /// `after_secs` and capacity); a new one starts watching at `now_ms`.
    pub fn reload(&mut self, policy: &Policy, now_ms: i64) {
        let mut next = SilenceWatch::new(policy, now_ms);
        for (target, watch) in &mut next.targets {
            if let Some(old) = self.targets.get(target) {
                watch.heard_ms = old.heard_ms;
                watch.last_event_ts = old.last_event_ts;
                // A changed fallback may fall back again for this silence.
                watch.fallen_back = old.fallen_back && old.fallback == watch.fallback;
            }
        }
        *self = next;
    }

    /// Stops watching the targets `keep` rejects (another evaluator partition's).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.targets.retain(|target, _| keep(target));
    }

    /// Samples for `target` arrived at `now_ms`, the newest stamped `event_ts`.
    pub fn heard(&mut self, target: &str, event_ts: i64, now_ms: i64) {
        if let Some(watch) = self.targets.get_mut(target) {
            watch.heard_ms = now_ms;
            watch.last_event_ts = watch.last_event_ts.max(event_ts);
            watch.fallen_back = false;
        }
    }

    /// Fallback triggers for the targets silent for longer than allowed.
    pub fn due(&mut self, now_ms: i64) -> Vec<Trigger> {
        let mut due = Vec::new();
        for (target, watch) in &mut self.targets {
            let silent_ms = now_ms.saturating_sub(watch.heard_ms);
            let limit_ms = secs_to_ms(watch.fallback.after_secs);
            if watch.fallen_back || silent_ms < limit_ms {
                continue;
            }
            watch.fallen_back = true;
            let capacity = watch.fallback.capacity;
            let reason = format!(
                "no samples for {target} for {} (fallback after {}): falling back to {capacity}",
                human_secs(u64::try_from(silent_ms / 1000).unwrap_or(0)),
                human_secs(watch.fallback.after_secs),
            );
            let last = watch.last_event_ts.to_be_bytes();
            due.push(Trigger {
                v: Version::CURRENT,
                id: ids::derive("t", &[target.as_bytes(), b"fallback", &last]),
                ts: now_ms,
                target: target.clone(),
                source: TriggerSource::Fallback,
                firings: vec![RuleFiring {
                    rule: "fallback".into(),
                    direction: Direction::None,
                    action: ScaleAction::Set(capacity),
                    observed: None,
                    threshold: None,
                    condition: format!("no samples for {}", human_secs(watch.fallback.after_secs)),
                    held_secs: u64::try_from(silent_ms / 1000).unwrap_or(0),
                    reason,
                }],
                policy_revision: None,
                alert: None,
            });
        }
        due.sort_by(|a, b| a.target.cmp(&b.target));
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::from_yaml;

    const POLICY: &str = r#"
targets:
  web: {rules: [g], max: 20, fallback: {after_secs: 60, capacity: 8}, backend: {sim: {initial: 2}}}
  db: {rules: [g], max: 20, backend: {sim: {initial: 2}}}
horizontal_scaling_rules:
  g:
    scale_up: {condition: "avg_cpu > 70%", action: "add 1 instance"}
"#;

    #[test]
    fn falls_back_once_per_silence() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let mut watch = SilenceWatch::new(&policy, 0);
        // (what happens, at wall-clock seconds, how many fallback triggers are due)
        let steps: [(&str, i64, usize); 7] = [
            ("nothing yet", 30, 0),
            ("a source that never spoke is silent", 60, 1),
            ("only once per silence", 90, 0),
            ("heard", 100, 0),
            ("not silent long enough", 159, 0),
            ("silent again", 160, 1),
            ("still once", 500, 0),
        ];
        for (what, secs, want) in steps {
            if what == "heard" {
                watch.heard("web", 95_000, secs * 1000);
                watch.heard("db", 95_000, secs * 1000);
                continue;
            }
            let due = watch.due(secs * 1000);
            assert_eq!(due.len(), want, "{what}");
            for trigger in &due {
                assert_eq!(trigger.target, "web", "db has no fallback");
                assert_eq!(trigger.firings[0].action, ScaleAction::Set(8));
                assert_eq!(trigger.source, TriggerSource::Fallback);
            }
        }
    }

    #[test]
    fn replicas_raise_the_same_trigger() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let (mut a, mut b) = (
            SilenceWatch::new(&policy, 0),
            SilenceWatch::new(&policy, 3_000),
        );
        a.heard("web", 42_000, 10_000);
        b.heard("web", 42_000, 11_000);
        let (ta, tb) = (a.due(80_000), b.due(90_000));
        assert_eq!(ta[0].id, tb[0].id);
        assert_eq!(
            ta[0].firings[0].reason,
            "no samples for web for 1m10s (fallback after 1m): falling back to 8"
        );
    }
}
