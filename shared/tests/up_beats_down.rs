//! Up beats down whatever order the samples of one instant arrive in.
//!
//! Publishers send each metric on its own subject, so the samples of one
//! event time reach the evaluator as separate messages, in any order. Over
//! random instants (a few metrics of one target, each low, middling or high,
//! so up and down rules fire in any mix) every arrival order is replayed,
//! each sample its own message, followed by one of the ways an instant ends
//! (a later sample of the target, the wall-clock grace on a tick, a final
//! drain). The triggers that come out go through the arbiter's own
//! [`decide`] with its state carried, the actuator applying each command at
//! once. Whatever the order:
//! - at most one action is taken for the instant;
//! - if any up rule fired, no scale-down is taken, and there is a scale-up
//!   exactly when one message holding the whole instant gives one;
//! - with at most one up rule firing, the capacity ends exactly where that
//!   one message leaves it (two up rules arriving apart are two triggers,
//!   the second meeting the first's cooldown: ups are never delayed);
//! - every firing reaches the arbiter once.

use nova_shared::arbitrate::{ArbiterSettings, TargetState, decide};
use nova_shared::evaluate::{DEFAULT_DOWN_GRACE_MS, Evaluator};
use nova_shared::policy::{Policy, from_yaml};
use nova_shared::wire::{CapacityRecord, Direction, Sample, Trigger};
use proptest::prelude::*;

/// Four metrics, each with an up and a down rule that fire on one sample.
/// Scale-downs have no cooldown, so two downs of one instant decided apart
/// would both act; scale-ups keep the default cooldown.
const POLICY: &str = r#"
evaluation: {staleness_secs: 30, refire_secs: 10}
metrics: {cpu: {unit: percent}, memory: {unit: percent}}
targets:
  w: {rules: [cpu, q, mem, lat], min: 2, max: 12, backend: {sim: {initial: 6}}}
horizontal_scaling_rules:
  cpu:
    scale_up: {condition: "avg_cpu > 70%", action: "add 2 instances"}
    scale_down: {condition: "avg_cpu < 30%", action: "remove 1 instance", cooldown: 0}
  q:
    scale_up: {condition: "queue_depth > 1000", action: "add 5 workers"}
    scale_down: {condition: "queue_depth < 100", action: "remove 2 workers", cooldown: 0}
  mem:
    scale_up: {condition: "avg_memory > 80%", action: "add 1 instance"}
    scale_down: {condition: "avg_memory < 40%", action: "remove 3 instances", cooldown: 0}
  lat:
    scale_up: {condition: "p99_latency > 500ms", action: "add 4 instances"}
    scale_down: {condition: "p99_latency < 100ms", action: "remove 4 instances", cooldown: 0}
"#;

/// (metric, low value, middling value, high value) in canonical units.
const METRICS: [(&str, [f64; 3]); 4] = [
    ("cpu", [0.1, 0.5, 0.9]),
    ("queue_depth", [50.0, 500.0, 1500.0]),
    ("memory", [0.2, 0.6, 0.9]),
    ("p99_latency", [0.05, 0.3, 0.8]),
];

/// Event time of the instant, and the wall clock of the first arrival.
const T: i64 = 1_000_000;
const WALL: i64 = 2_000_000;

/// How the instant ends once all its samples have arrived.
#[derive(Debug, Clone, Copy)]
enum End {
    /// A later sample of the target: one of the metrics (middling), or
    /// `disk`, which no rule reads.
    Later(usize),
    /// The grace passes; the service's tick flushes.
    Grace,
    /// End of a replay (or shutdown).
    Drain,
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        (0usize..5).prop_map(End::Later),
        Just(End::Grace),
        Just(End::Drain),
    ]
}

/// The instant: for each metric, absent or low/middling/high.
fn instant() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec(prop::option::of(0usize..3), 4).prop_filter_map(
        "at least one sample",
        |levels| {
            let samples: Vec<(usize, usize)> = levels
                .into_iter()
                .enumerate()
                .filter_map(|(metric, level)| level.map(|l| (metric, l)))
                .collect();
            (!samples.is_empty()).then_some(samples)
        },
    )
}

fn sample(metric: &str, ts: i64, value: f64) -> Sample {
    Sample {
        metric: metric.into(),
        value,
        ts,
        instance: None,
    }
}

/// Every ordering of `items`.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            all.push(tail);
        }
    }
    all
}

/// Feeds `messages` (each a list of samples, arriving `gap_ms` apart, so all
/// within the grace; the service ticking after each), then ends the instant;
/// returns the triggers
/// in the order they were published.
fn publish(policy: &Policy, messages: &[Vec<Sample>], gap_ms: i64, end: End) -> Vec<Trigger> {
    let mut evaluator = Evaluator::new(policy);
    let mut out = Vec::new();
    let mut wall = WALL;
    for message in messages {
        out.extend(evaluator.observe_batch("w", message, wall).0);
        out.extend(evaluator.flush_held(wall));
        wall += gap_ms;
    }
    match end {
        End::Later(metric) => {
            let (name, value) = match METRICS.get(metric) {
                Some((name, levels)) => (*name, levels[1]),
                None => ("disk", 1.0),
            };
            let later = sample(name, T + 1_000, value);
            out.extend(evaluator.observe_batch("w", &[later], wall).0);
        }
        End::Grace => {
            let grace = i64::try_from(DEFAULT_DOWN_GRACE_MS).unwrap();
            out.extend(evaluator.flush_held(wall + grace));
        }
        End::Drain => out.extend(evaluator.drain_held()),
    }
    out
}

/// What the arbiter makes of `triggers`, the actuator applying each command
/// at once: the final capacity and the direction of every action.
fn arbitrate(policy: &Policy, start: u32, triggers: &[Trigger]) -> (u32, Vec<Direction>) {
    let target = &policy.targets["w"];
    let settings = ArbiterSettings::for_target(target, policy.evaluation.refire_secs);
    let mut state = TargetState::default();
    let mut capacity = start;
    let mut actions = Vec::new();
    for trigger in triggers {
        let observed = CapacityRecord {
            target: "w".into(),
            desired: capacity,
            running: None,
            applied_seq: state.seq,
            tier: None,
            observed_ms: trigger.ts,
            backend: "sim".into(),
            ..Default::default()
        };
        let verdict = decide(target, settings, &state, Some(&observed), trigger);
        if let Some(command) = &verdict.command {
            actions.push(if command.desired > capacity {
                Direction::Up
            } else {
                Direction::Down
            });
            capacity = command.desired;
        }
        if let Some(next) = verdict.state {
            state = next;
        }
    }
    (capacity, actions)
}

/// Rule names of every firing, sorted.
fn fired(triggers: &[Trigger]) -> Vec<String> {
    let mut rules: Vec<String> = triggers
        .iter()
        .flat_map(|t| t.firings.iter().map(|f| f.rule.clone()))
        .collect();
    rules.sort();
    rules
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn up_beats_down_in_every_arrival_order(
        instant in instant(),
        start in 2u32..=12,
        gap_ms in 0i64..400,
        end in end(),
    ) {
        let policy = from_yaml(POLICY, "p.yaml").expect("policy");
        let samples: Vec<Sample> = instant
            .iter()
            .map(|&(metric, level)| sample(METRICS[metric].0, T, METRICS[metric].1[level]))
            .collect();
        // The whole instant in one message: the behaviour the README promises.
        let together = publish(&policy, std::slice::from_ref(&samples), gap_ms, end);
        let (want_capacity, want_actions) = arbitrate(&policy, start, &together);
        let ups = together
            .iter()
            .flat_map(|t| &t.firings)
            .filter(|f| f.direction == Direction::Up)
            .count();
        for order in permutations(&samples) {
            let messages: Vec<Vec<Sample>> = order.iter().map(|s| vec![s.clone()]).collect();
            let triggers = publish(&policy, &messages, gap_ms, end);
            let (capacity, actions) = arbitrate(&policy, start, &triggers);
            let arrival: Vec<&str> = order.iter().map(|s| s.metric.as_str()).collect();
            prop_assert!(actions.len() <= 1, "{arrival:?}: actions {actions:?} from {triggers:#?}");
            prop_assert_eq!(fired(&triggers), fired(&together), "{:?}: every firing once", arrival);
            prop_assert!(triggers.iter().all(|t| t.ts == T), "{arrival:?}: {triggers:#?}");
            prop_assert_eq!(&actions, &want_actions, "{:?}: {:#?}", arrival, triggers);
            if ups > 0 {
                prop_assert!(capacity >= start, "{arrival:?}: scaled down from {start} to {capacity} though an up rule fired");
            }
            if ups <= 1 {
                prop_assert_eq!(capacity, want_capacity, "{:?}: {:#?}", arrival, triggers);
            }
        }
    }
}

#[test]
fn the_issue_case_down_on_cpu_then_up_on_queue_depth_is_one_scale_up() {
    let policy = from_yaml(POLICY, "p.yaml").expect("policy");
    let messages = [
        vec![sample("cpu", T, 0.1)],
        vec![sample("queue_depth", T, 1500.0)],
    ];
    let triggers = publish(&policy, &messages, 5, End::Drain);
    assert_eq!(triggers.len(), 1, "{triggers:#?}");
    assert_eq!(
        fired(&triggers),
        ["cpu.scale_down", "q.scale_up"],
        "both in one trigger"
    );
    assert_eq!(arbitrate(&policy, 4, &triggers), (9, vec![Direction::Up]));
}
