//! Grouping one target's firings into triggers, with scale-downs held back
//! until their instant is over, so that up beats down whatever the order in
//! which a target's metrics arrive.
//!
//! Publishers send each metric on its own subject, so the samples of one
//! instant (event time `t`) reach the evaluator one by one, in any order. If
//! a down rule fired on the first and its trigger left at once, the arbiter
//! would act on it before the up rule of the same instant fired on the next.
//! A scale-down is never urgent, so it waits:
//!
//! - The firings of the target's newest instant form an *open* group (one
//!   for horizontal firings, one for vertical ones). Firings of that instant
//!   arriving later, in the same message or in later ones, join it.
//! - At the end of each message the group is published if it holds an up
//!   firing (ups are never delayed); vertical firings, which are ups, always
//!   are. A horizontal group of only scale-downs (direction `Down`) stays
//!   *held*.
//! - The held group is published, before anything else, as soon as the
//!   target's event time moves past `t`: any accepted sample of the target
//!   with a later `ts`, of any metric, even one no rule reads.
//! - An up firing of `t` that arrives while the group is held joins it, so
//!   the arbiter gets up and down in one trigger and up wins.
//! - If the target's samples stop, the held group is published once it has
//!   waited `grace` of wall clock (the caller passes the clock in: the
//!   service on a periodic tick, [`super::DEFAULT_DOWN_GRACE_MS`] by default).
//! - A firing at an instant the target's event time has already passed (a
//!   late metric) is published at once, held or not: its instant is over.
//!
//! A trigger's id is derived from its content when it is published
//! ([`super::trigger_id`]: target, event time, rule names), so a held trigger
//! has the same id on every replica that saw the same samples in the same
//! order, and JetStream de-duplicates it as before.

use crate::wire::{Direction, RuleFiring, ScaleAction, Trigger, TriggerSource, Version};

/// The open instant of one target and its event-time clock.
#[derive(Debug, Default)]
pub(super) struct Instants {
    /// The target's event time: the newest `ts` of any accepted sample.
    clock: Option<i64>,
    /// Firings at `clock` not yet published.
    open: Open,
}

#[derive(Debug, Default)]
struct Open {
    horizontal: Vec<RuleFiring>,
    vertical: Vec<RuleFiring>,
    /// Wall clock (ms) at which the horizontal group was first held back.
    held_since: Option<i64>,
}

impl Instants {
    /// Records an accepted sample at `ts` and the firings it caused; what
    /// is due for publishing is appended to `out`.
    pub(super) fn record(
        &mut self,
        target: &str,
        ts: i64,
        firings: impl IntoIterator<Item = RuleFiring>,
        out: &mut Vec<Trigger>,
    ) {
        if self.clock.is_none_or(|clock| ts > clock) {
            // The previous instant is over: publish all of it first.
            if let Some(previous) = self.clock {
                self.close(target, previous, out);
            }
            self.clock = Some(ts);
        }
        let late = self.clock != Some(ts);
        for firing in firings {
            let vertical = firing.action == ScaleAction::NextTier;
            match (late, vertical) {
                (true, _) => push(out, target, ts, vertical, vec![firing]),
                (false, true) => self.open.vertical.push(firing),
                (false, false) => self.open.horizontal.push(firing),
            }
        }
    }

    /// The end of one message: publishes the open instant's vertical
    /// firings, and its horizontal ones if any asks to scale up; holds a
    /// group of only scale-downs, noting `now_ms` when it was first held.
    pub(super) fn end_of_message(&mut self, target: &str, now_ms: i64, out: &mut Vec<Trigger>) {
        let Some(ts) = self.clock else { return };
        if self.open.horizontal.is_empty() || !self.is_held() {
            self.close(target, ts, out);
            return;
        }
        self.open.held_since.get_or_insert(now_ms);
        let vertical = std::mem::take(&mut self.open.vertical);
        if !vertical.is_empty() {
            push(out, target, ts, true, vertical);
        }
    }

    /// Publishes the held group if it has waited `grace_ms` by `now_ms`.
    pub(super) fn flush_due(
        &mut self,
        target: &str,
        now_ms: i64,
        grace_ms: i64,
        out: &mut Vec<Trigger>,
    ) {
        let due = self
            .open
            .held_since
            .is_some_and(|since| now_ms.saturating_sub(since) >= grace_ms);
        if let (true, Some(ts)) = (due, self.clock) {
            self.close(target, ts, out);
        }
    }

    /// Publishes the held group, if any, whatever its wait.
    pub(super) fn drain(&mut self, target: &str, out: &mut Vec<Trigger>) {
        if let Some(ts) = self.clock {
            self.close(target, ts, out);
        }
    }

    /// True while a group of only scale-downs waits for its instant to end.
    pub(super) fn holds(&self) -> bool {
        self.open.held_since.is_some()
    }

    fn is_held(&self) -> bool {
        self.open
            .horizontal
            .iter()
            .all(|f| f.direction == Direction::Down)
    }

    /// Publishes the open instant `ts`: horizontal group first, then vertical.
    fn close(&mut self, target: &str, ts: i64, out: &mut Vec<Trigger>) {
        let open = std::mem::take(&mut self.open);
        for (vertical, firings) in [(false, open.horizontal), (true, open.vertical)] {
            if !firings.is_empty() {
                push(out, target, ts, vertical, firings);
            }
        }
    }
}

/// Appends firings of instant `ts` to `out`: to a trigger of the same
/// instant and kind among the last two (one horizontal, one vertical), or to
/// a new one. Ids are set by the caller once the triggers are complete.
fn push(out: &mut Vec<Trigger>, target: &str, ts: i64, vertical: bool, firings: Vec<RuleFiring>) {
    let same_instant = out.iter_mut().rev().take(2).find(|t| {
        t.ts == ts
            && t.target == target
            && (t.firings[0].action == ScaleAction::NextTier) == vertical
    });
    match same_instant {
        Some(trigger) => trigger.firings.extend(firings),
        None => out.push(Trigger {
            v: Version::CURRENT,
            id: String::new(),
            ts,
            target: target.to_string(),
            source: TriggerSource::Rule,
            firings,
            policy_revision: None,
            alert: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::evaluate::{Evaluator, trigger_id};
    use crate::policy::from_yaml;
    use crate::wire::{Sample, Trigger};

    const POLICY: &str = r#"
evaluation: {staleness_secs: 30, refire_secs: 10}
metrics: {cpu: {unit: percent}}
targets:
  web: {rules: [cpu, queue, credits], min: 1, max: 50, backend: {sim: {initial: 4, tier: c5.large}}}
horizontal_scaling_rules:
  cpu:
    scale_up: {condition: "avg_cpu > 70%", action: "add 2 instances"}
    scale_down: {condition: "avg_cpu < 30%", action: "remove 1 instance"}
  queue:
    scale_up: {condition: "queue_depth > 1000", action: "add 5 workers"}
    scale_down: {condition: "queue_depth < 100", action: "remove 2 workers"}
vertical_scaling_rules:
  instance_resize:
    credits:
      trigger: "cpu_credits < 20"
      action: "upgrade to next CPU-optimized tier"
      options: [{from: c5.large, to: c5.xlarge}]
"#;

    /// Wall clock of the first message; samples are stamped far before it.
    const WALL: i64 = 1_000_000;
    const DOWN: &str = "cpu.scale_down";
    const UP: &str = "queue.scale_up";
    const Q_DOWN: &str = "queue.scale_down";
    const RESIZE: &str = "instance_resize.credits";

    /// One input to the evaluator, at a wall clock `WALL + ms`.
    enum Step {
        /// One message of (metric, event time in s, value).
        Msg(i64, &'static [(&'static str, i64, f64)]),
        /// The service's periodic tick.
        Tick(i64),
        /// End of a replay, or shutdown.
        Drain,
    }
    use Step::{Drain, Msg, Tick};

    /// What a step publishes: (event time in s, rules) per trigger, in order.
    type Out = &'static [(i64, &'static [&'static str])];

    fn sample(metric: &str, secs: i64, value: f64) -> Sample {
        Sample {
            metric: metric.into(),
            value,
            ts: secs * 1000,
            instance: None,
        }
    }

    fn apply(ev: &mut Evaluator, step: &Step) -> Vec<Trigger> {
        match step {
            Msg(ms, samples) => {
                let samples: Vec<Sample> =
                    samples.iter().map(|&(m, s, v)| sample(m, s, v)).collect();
                ev.observe_batch("web", &samples, WALL + ms).0
            }
            Tick(ms) => ev.flush_held(WALL + ms),
            Drain => ev.drain_held(),
        }
    }

    fn shape(triggers: &[Trigger]) -> Vec<(i64, Vec<String>)> {
        triggers
            .iter()
            .map(|t| {
                (
                    t.ts / 1000,
                    t.firings.iter().map(|f| f.rule.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn hold_back_table() {
        let cases: Vec<(&str, Vec<(Step, Out)>)> = vec![
            (
                "an up alone is published at once",
                vec![(Msg(0, &[("queue_depth", 10, 1500.0)]), &[(10, &[UP])])],
            ),
            (
                "a down alone waits for a later sample of the target",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(5, &[("queue_depth", 11, 500.0)]), &[(10, &[DOWN])]),
                ],
            ),
            (
                "a later sample of a metric no rule reads ends the instant too",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(5, &[("disk", 11, 1.0)]), &[(10, &[DOWN])]),
                ],
            ),
            (
                "down, then up of the same instant: one trigger, published with the up",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(5, &[("queue_depth", 10, 1500.0)]), &[(10, &[DOWN, UP])]),
                    (Msg(6, &[("queue_depth", 11, 500.0)]), &[]),
                    (Drain, &[]),
                ],
            ),
            (
                "up, then down of the same instant: the up at once, the down held",
                vec![
                    (Msg(0, &[("queue_depth", 10, 1500.0)]), &[(10, &[UP])]),
                    (Msg(5, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(6, &[("queue_depth", 11, 500.0)]), &[(10, &[DOWN])]),
                ],
            ),
            (
                "two downs of one instant join one trigger",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(5, &[("queue_depth", 10, 50.0)]), &[]),
                    (Msg(6, &[("cpu", 11, 0.5)]), &[(10, &[DOWN, Q_DOWN])]),
                ],
            ),
            (
                "a down whose target falls silent is published after the grace",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Tick(1_999), &[]),
                    (Tick(2_000), &[(10, &[DOWN])]),
                    (Tick(9_000), &[]),
                    (Msg(9_001, &[("queue_depth", 11, 500.0)]), &[]),
                ],
            ),
            (
                "the grace runs from when the instant was first held",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(1_500, &[("queue_depth", 10, 50.0)]), &[]),
                    (Tick(2_000), &[(10, &[DOWN, Q_DOWN])]),
                ],
            ),
            (
                "an up after the grace is its own trigger",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Tick(2_000), &[(10, &[DOWN])]),
                    (Msg(2_001, &[("queue_depth", 10, 1500.0)]), &[(10, &[UP])]),
                ],
            ),
            (
                "drain publishes what is held",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Drain, &[(10, &[DOWN])]),
                    (Drain, &[]),
                ],
            ),
            (
                "a down of a later instant publishes the held one and is held itself",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(5, &[("queue_depth", 11, 50.0)]), &[(10, &[DOWN])]),
                    (Drain, &[(11, &[Q_DOWN])]),
                ],
            ),
            (
                "an up of the next instant comes after the held down",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (
                        Msg(5, &[("queue_depth", 11, 1500.0)]),
                        &[(10, &[DOWN]), (11, &[UP])],
                    ),
                ],
            ),
            (
                "in one message: the instant's firings together, ended by the later sample",
                vec![(
                    Msg(
                        0,
                        &[
                            ("cpu", 10, 0.1),
                            ("queue_depth", 10, 1500.0),
                            ("queue_depth", 11, 500.0),
                        ],
                    ),
                    &[(10, &[DOWN, UP])],
                )],
            ),
            (
                "in one message, a down followed by a later sample",
                vec![(
                    Msg(0, &[("cpu", 10, 0.1), ("queue_depth", 11, 500.0)]),
                    &[(10, &[DOWN])],
                )],
            ),
            (
                "a down at an instant already past is published at once",
                vec![
                    (Msg(0, &[("queue_depth", 20, 500.0)]), &[]),
                    (Msg(5, &[("cpu", 10, 0.1)]), &[(10, &[DOWN])]),
                ],
            ),
            (
                "a rejected sample does not end the instant",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(5, &[("queue_depth", 11, f64::NAN)]), &[]),
                    // 400 s ahead of the wall clock: beyond the 300 s skew.
                    (Msg(6, &[("queue_depth", 1_400, 500.0)]), &[]),
                    (Drain, &[(10, &[DOWN])]),
                ],
            ),
            (
                "a resize (an up) of the instant is published at once, the down stays held",
                vec![
                    (Msg(0, &[("cpu", 10, 0.1)]), &[]),
                    (Msg(5, &[("cpu_credits", 10, 5.0)]), &[(10, &[RESIZE])]),
                    (Msg(6, &[("queue_depth", 11, 500.0)]), &[(10, &[DOWN])]),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut ev = Evaluator::new(&from_yaml(POLICY, "p.yaml").unwrap());
            for (i, (step, want)) in steps.iter().enumerate() {
                let got = apply(&mut ev, step);
                let want: Vec<(i64, Vec<String>)> = want
                    .iter()
                    .map(|(ts, rules)| (*ts, rules.iter().map(|r| r.to_string()).collect()))
                    .collect();
                assert_eq!(shape(&got), want, "{name}, step {i}");
                for trigger in &got {
                    assert_eq!(trigger.id, trigger_id(trigger), "{name}: id from content");
                }
            }
            assert_eq!(ev.held(), 0, "{name}: nothing left held");
        }
    }

    #[test]
    fn a_held_trigger_has_the_id_its_content_gives_on_any_path() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let run = |steps: &[Step]| -> Vec<Trigger> {
            let mut ev = Evaluator::new(&policy);
            steps.iter().flat_map(|s| apply(&mut ev, s)).collect()
        };
        // Up and down of one instant: in one message, or in two.
        let one = run(&[Msg(0, &[("cpu", 10, 0.1), ("queue_depth", 10, 1500.0)])]);
        let two = run(&[
            Msg(0, &[("cpu", 10, 0.1)]),
            Msg(5, &[("queue_depth", 10, 1500.0)]),
        ]);
        assert_eq!(one, two);
        assert_eq!(one.len(), 1);
        // A down alone: flushed by event time, by the grace, or drained.
        let by_event_time = run(&[Msg(0, &[("cpu", 10, 0.1)]), Msg(5, &[("disk", 11, 1.0)])]);
        let by_grace = run(&[Msg(0, &[("cpu", 10, 0.1)]), Tick(2_000)]);
        let drained = run(&[Msg(0, &[("cpu", 10, 0.1)]), Drain]);
        assert_eq!(by_event_time, by_grace);
        assert_eq!(by_event_time, drained);
        assert_eq!(by_event_time.len(), 1);
        assert_ne!(by_event_time[0].id, one[0].id, "other content, other id");
    }

    #[test]
    fn the_grace_is_configurable() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let mut ev = Evaluator::new(&policy).with_down_grace_ms(10_000);
        assert!(apply(&mut ev, &Msg(0, &[("cpu", 10, 0.1)])).is_empty());
        assert!(ev.flush_held(WALL + 9_999).is_empty());
        assert_eq!(ev.held(), 1);
        assert_eq!(ev.flush_held(WALL + 10_000).len(), 1);
    }
}
