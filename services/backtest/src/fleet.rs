//! A simulated fleet stepped in event time, and a delay line for the metrics
//! it reports.
//!
//! A backtest has to charge an autoscaler for the two delays that make
//! scaling hard in production: new instances are not ready until they have
//! warmed up, and the autoscaler sees metrics only after the pipeline has
//! carried them. [`Fleet`] models the first, [`MetricDelay`] the second. Time
//! is whatever the caller says (`now_ms`, unix or trace milliseconds), so a
//! two-month trace replays in seconds and every run is deterministic.
//!
//! The fleet's rules, chosen to match the live simulated backend
//! (`services/actuator/src/sim.rs`) and the usual cloud behaviour:
//!
//! - Initial instances are ready at once.
//! - A scale-up adds instances that become ready `warmup_secs` after the
//!   command; until then they are provisioned (billed) but serve nothing.
//! - A scale-down removes instances immediately: warming ones first, newest
//!   first (they are the furthest from serving), then ready ones.
//! - Ready instances serve up to `capacity_per_instance` requests per second
//!   each; load beyond that is dropped.
//! - CPU follows the fleet's [`CpuModel`]. By default it saturates, as a
//!   real cpu gauge does: `min(1, load / (ready · capacity_per_instance))`,
//!   the share of the ready capacity the served load uses. Under overload
//!   it reads 100 % however far behind the fleet is, so a proportional
//!   autoscaler (HPA's `desired = ⌈ready · cpu / target⌉`) underestimates
//!   the scale-up it needs: its real weakness, which the backtest must
//!   show. [`CpuModel::Unbounded`] keeps the earlier model, `load / (ready ·
//!   capacity_per_instance)` above 1 under overload (as if cpu measured the
//!   work asked for, not done), to compare with it. The request rate a
//!   replay reports is the offered load in both models, never capped.
//!   With no instance ready, cpu is 1 if there is any load (saturated: all
//!   of it is dropped) and 0 if there is none.
//! - The cpu averaged over all provisioned instances, warming ones at 0 (the
//!   HPA's rule for pods not yet ready), is the served load over provisioned
//!   capacity when saturating, the offered load when unbounded.

use nova_shared::units::secs_to_ms;
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A fleet that could not be built.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FleetError {
    /// The capacity of one instance is not a positive number.
    #[error("capacity per instance must be a positive number of requests per second, not {0}")]
    InvalidCapacity(f64),
}

/// How an instance's cpu answers a load beyond its capacity; see the module
/// docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuModel {
    /// `min(1, load / ready capacity)`: a real gauge, at most 100 %.
    #[default]
    Saturating,
    /// `load / ready capacity`, above 100 % under overload: the earlier
    /// model, which tells an autoscaler how far behind the fleet is.
    Unbounded,
}

impl CpuModel {
    /// The names [`FromStr`] accepts, in the order of the variants.
    pub const NAMES: [&'static str; 2] = ["saturating", "unbounded"];

    /// Its name, as [`FromStr`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            CpuModel::Saturating => Self::NAMES[0],
            CpuModel::Unbounded => Self::NAMES[1],
        }
    }
}

impl fmt::Display for CpuModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A cpu model name that is not one of [`CpuModel::NAMES`].
#[derive(Debug, Clone, PartialEq, Error)]
#[error("unknown cpu model {0:?}; expected saturating or unbounded")]
pub struct UnknownCpuModel(pub String);

impl FromStr for CpuModel {
    type Err = UnknownCpuModel;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "saturating" => Ok(CpuModel::Saturating),
            "unbounded" => Ok(CpuModel::Unbounded),
            other => Err(UnknownCpuModel(other.to_string())),
        }
    }
}

/// What the fleet looked like at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetObservation {
    /// Instances warmed up and serving.
    pub ready: u32,
    /// Instances ready or warming up: what is billed.
    pub provisioned: u32,
    /// Each ready instance's cpu, a ratio: at most 1 when saturating, the
    /// load over ready capacity when unbounded (see the module docs).
    pub cpu: f64,
    /// The cpu averaged over provisioned instances, warming ones at 0: what
    /// the HPA reads (its rule for pods not yet ready).
    pub provisioned_cpu: f64,
    /// Requests per second served.
    pub served_rps: f64,
    /// Requests per second dropped for want of ready capacity.
    pub dropped_rps: f64,
}

/// Instances added by one scale-up, ready together.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WarmingCohort {
    ready_at_ms: i64,
    count: u32,
}

/// A simulated fleet; see the module docs for its rules.
#[derive(Debug, Clone)]
pub struct Fleet {
    capacity_per_instance: f64,
    cpu_model: CpuModel,
    warmup_ms: i64,
    ready: u32,
    /// In the order they were added; one entry per scale-up, so a scale-up
    /// to millions of instances costs one entry, not millions.
    warming: VecDeque<WarmingCohort>,
}

impl Fleet {
    /// A fleet of `initial` ready instances that each serve
    /// `capacity_per_instance` requests per second, warm up for
    /// `warmup_secs` after a scale-up and report cpu by `cpu_model`.
    pub fn new(
        initial: u32,
        capacity_per_instance: f64,
        warmup_secs: u64,
        cpu_model: CpuModel,
    ) -> Result<Self, FleetError> {
        if !(capacity_per_instance.is_finite() && capacity_per_instance > 0.0) {
            return Err(FleetError::InvalidCapacity(capacity_per_instance));
        }
        Ok(Fleet {
            capacity_per_instance,
            cpu_model,
            warmup_ms: secs_to_ms(warmup_secs),
            ready: initial,
            warming: VecDeque::new(),
        })
    }

    /// Instances ready or warming up.
    pub fn provisioned(&self) -> u32 {
        // Never more than the last desired count, itself a u32.
        let warming: u32 = self.warming.iter().map(|cohort| cohort.count).sum();
        self.ready + warming
    }

    /// Scales to `desired` instances at `now_ms`: up by adding warming
    /// instances, down by removing warming ones (newest first), then ready ones.
    pub fn set_desired(&mut self, now_ms: i64, desired: u32) {
        self.promote(now_ms);
        let provisioned = self.provisioned();
        if desired > provisioned {
            self.warming.push_back(WarmingCohort {
                ready_at_ms: now_ms.saturating_add(self.warmup_ms),
                count: desired - provisioned,
            });
            return;
        }
        let mut to_remove = provisioned - desired;
        while to_remove > 0 {
            let Some(newest) = self.warming.back_mut() else {
                break;
            };
            let removed = newest.count.min(to_remove);
            newest.count -= removed;
            to_remove -= removed;
            if newest.count == 0 {
                self.warming.pop_back();
            }
        }
        self.ready -= to_remove;
    }

    /// Advances to `now_ms` and serves `load_rps` (a non-finite or negative
    /// load is served as none).
    pub fn step(&mut self, now_ms: i64, load_rps: f64) -> FleetObservation {
        self.promote(now_ms);
        let load_rps = if load_rps.is_finite() && load_rps > 0.0 {
            load_rps
        } else {
            0.0
        };
        let ready_capacity = f64::from(self.ready) * self.capacity_per_instance;
        let served_rps = load_rps.min(ready_capacity);
        // The work the cpu gauge counts: what is served when it saturates,
        // what is asked for when it does not.
        let busy_rps = match self.cpu_model {
            CpuModel::Saturating => served_rps,
            CpuModel::Unbounded => load_rps,
        };
        let cpu = if self.ready > 0 {
            busy_rps / ready_capacity
        } else if load_rps > 0.0 {
            1.0
        } else {
            0.0
        };
        let provisioned = self.provisioned();
        // At least one instance's capacity, so an empty fleet reads its load
        // (as before the models were named) rather than dividing by zero.
        let provisioned_capacity = f64::from(provisioned.max(1)) * self.capacity_per_instance;
        FleetObservation {
            ready: self.ready,
            provisioned,
            cpu,
            provisioned_cpu: busy_rps / provisioned_capacity,
            served_rps,
            dropped_rps: load_rps - served_rps,
        }
    }

    /// Makes every instance whose warm-up has ended by `now_ms` ready.
    fn promote(&mut self, now_ms: i64) {
        let mut newly_ready = 0;
        self.warming.retain(|cohort| {
            let warmed = cohort.ready_at_ms <= now_ms;
            if warmed {
                newly_ready += cohort.count;
            }
            !warmed
        });
        self.ready += newly_ready;
    }
}

/// An observation and when it was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelayedObservation<T> {
    /// When it was taken, in the caller's milliseconds.
    pub taken_ms: i64,
    /// What was observed.
    pub value: T,
}

/// A metric pipeline's delay: observations come out `delay_secs` after they
/// were taken, in the order they went in.
#[derive(Debug, Clone)]
pub struct MetricDelay<T> {
    delay_ms: i64,
    pending: VecDeque<DelayedObservation<T>>,
}

impl<T> MetricDelay<T> {
    /// A pipeline that delivers each observation `delay_secs` after it was taken.
    pub fn new(delay_secs: u64) -> Self {
        MetricDelay {
            delay_ms: secs_to_ms(delay_secs),
            pending: VecDeque::new(),
        }
    }

    /// Puts in an observation taken at `taken_ms`; push them in time order.
    pub fn push(&mut self, taken_ms: i64, value: T) {
        self.pending
            .push_back(DelayedObservation { taken_ms, value });
    }

    /// The oldest observation delivered by `now_ms`, if any; call until
    /// `None` to take all of them.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<DelayedObservation<T>> {
        let oldest = self.pending.front()?;
        if oldest.taken_ms.saturating_add(self.delay_ms) <= now_ms {
            self.pending.pop_front()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command or a step, at a time in seconds.
    enum Event {
        Desire(u32),
        Step(f64),
    }
    use Event::{Desire, Step};

    /// Expected (ready, provisioned, cpu, served, dropped) after a step.
    type Seen = (u32, u32, f64, f64, f64);

    #[test]
    fn follows_commands_with_warm_up() {
        struct Case {
            name: &'static str,
            initial: u32,
            warmup_secs: u64,
            events: Vec<(i64, Event, Option<Seen>)>,
        }
        let cases = [
            Case {
                name: "steady fleet serves up to capacity",
                initial: 2,
                warmup_secs: 30,
                events: vec![
                    (0, Step(100.0), Some((2, 2, 0.5, 100.0, 0.0))),
                    (1, Step(200.0), Some((2, 2, 1.0, 200.0, 0.0))),
                    // Saturated: the cpu of an overload is 100 %.
                    (2, Step(300.0), Some((2, 2, 1.0, 200.0, 100.0))),
                    (3, Step(0.0), Some((2, 2, 0.0, 0.0, 0.0))),
                ],
            },
            Case {
                name: "scale-up is billed at once, serves after warm-up",
                initial: 1,
                warmup_secs: 30,
                events: vec![
                    (0, Desire(3), None),
                    (0, Step(200.0), Some((1, 3, 1.0, 100.0, 100.0))),
                    (29, Step(200.0), Some((1, 3, 1.0, 100.0, 100.0))),
                    (30, Step(200.0), Some((3, 3, 200.0 / 300.0, 200.0, 0.0))),
                ],
            },
            Case {
                name: "scale-down removes the newest warming first, then ready",
                initial: 2,
                warmup_secs: 60,
                events: vec![
                    (0, Desire(4), None),  // +2 ready at 60
                    (10, Desire(6), None), // +2 ready at 70
                    (20, Desire(3), None), // drops both of the 70 cohort, one of the 60
                    (20, Step(0.0), Some((2, 3, 0.0, 0.0, 0.0))),
                    (60, Step(0.0), Some((3, 3, 0.0, 0.0, 0.0))),
                    (70, Step(0.0), Some((3, 3, 0.0, 0.0, 0.0))),
                    (71, Desire(1), None),
                    (71, Step(100.0), Some((1, 1, 1.0, 100.0, 0.0))),
                ],
            },
            Case {
                name: "warmed instances count before a scale-down",
                initial: 1,
                warmup_secs: 10,
                events: vec![
                    (0, Desire(3), None),
                    // At 10 all three are ready, so going to 2 removes a ready one.
                    (10, Desire(2), None),
                    (10, Step(100.0), Some((2, 2, 0.5, 100.0, 0.0))),
                ],
            },
            Case {
                name: "no instance ready: cpu 1 under load, 0 without",
                initial: 0,
                warmup_secs: 5,
                events: vec![
                    (0, Step(0.0), Some((0, 0, 0.0, 0.0, 0.0))),
                    (1, Step(50.0), Some((0, 0, 1.0, 0.0, 50.0))),
                    (1, Desire(1), None),
                    (2, Step(50.0), Some((0, 1, 1.0, 0.0, 50.0))),
                    (6, Step(50.0), Some((1, 1, 0.5, 50.0, 0.0))),
                    (7, Desire(0), None),
                    (7, Step(50.0), Some((0, 0, 1.0, 0.0, 50.0))),
                ],
            },
            Case {
                name: "zero warm-up is ready at once; same desire is no change",
                initial: 1,
                warmup_secs: 0,
                events: vec![
                    (0, Desire(2), None),
                    (0, Desire(2), None),
                    (0, Step(100.0), Some((2, 2, 0.5, 100.0, 0.0))),
                ],
            },
            Case {
                name: "bad loads are served as none",
                initial: 1,
                warmup_secs: 0,
                events: vec![
                    (0, Step(f64::NAN), Some((1, 1, 0.0, 0.0, 0.0))),
                    (1, Step(-5.0), Some((1, 1, 0.0, 0.0, 0.0))),
                    (2, Step(f64::INFINITY), Some((1, 1, 0.0, 0.0, 0.0))),
                ],
            },
            Case {
                name: "huge scale-up and back",
                initial: 0,
                warmup_secs: u64::MAX,
                events: vec![
                    (0, Desire(u32::MAX), None),
                    (
                        i64::MAX,
                        Step(0.0),
                        Some((u32::MAX, u32::MAX, 0.0, 0.0, 0.0)),
                    ),
                    (i64::MAX, Desire(0), None),
                    (i64::MAX, Step(1.0), Some((0, 0, 1.0, 0.0, 1.0))),
                ],
            },
        ];
        for case in cases {
            let mut fleet = Fleet::new(case.initial, 100.0, case.warmup_secs, CpuModel::default())
                .expect("valid fleet");
            for (index, (at_secs, event, seen)) in case.events.into_iter().enumerate() {
                let now_ms = at_secs.saturating_mul(1000);
                match event {
                    Desire(n) => fleet.set_desired(now_ms, n),
                    Step(load) => {
                        let o = fleet.step(now_ms, load);
                        let got = (o.ready, o.provisioned, o.cpu, o.served_rps, o.dropped_rps);
                        assert_eq!(Some(got), seen, "{}: event {index}", case.name);
                    }
                }
            }
        }
    }

    #[test]
    fn cpu_follows_its_model() {
        use CpuModel::{Saturating, Unbounded};
        // Ready and warming instances, load; then (cpu, provisioned cpu)
        // saturating and unbounded. 100 rps per instance.
        type Row = (&'static str, u32, u32, f64, (f64, f64), (f64, f64));
        let rows: [Row; 8] = [
            ("under capacity", 2, 0, 100.0, (0.5, 0.5), (0.5, 0.5)),
            ("at capacity", 2, 0, 200.0, (1.0, 1.0), (1.0, 1.0)),
            (
                "overloaded three times",
                2,
                0,
                600.0,
                (1.0, 1.0),
                (3.0, 3.0),
            ),
            // Warming instances count at 0 % in the provisioned average.
            (
                "overloaded, two warming",
                2,
                2,
                600.0,
                (1.0, 0.5),
                (3.0, 1.5),
            ),
            (
                "under capacity, two warming",
                2,
                2,
                100.0,
                (0.5, 0.25),
                (0.5, 0.25),
            ),
            // Nothing ready: the gauge of a dropped load is 100 %; nothing is
            // served, so a saturating fleet's provisioned average is 0.
            (
                "none ready, one warming",
                0,
                1,
                50.0,
                (1.0, 0.0),
                (1.0, 0.5),
            ),
            (
                "none at all, under load",
                0,
                0,
                50.0,
                (1.0, 0.0),
                (1.0, 0.5),
            ),
            ("none at all, no load", 0, 0, 0.0, (0.0, 0.0), (0.0, 0.0)),
        ];
        for (name, ready, warming, load, saturating, unbounded) in rows {
            for (model, want) in [(Saturating, saturating), (Unbounded, unbounded)] {
                let mut fleet = Fleet::new(ready, 100.0, 60, model).expect("valid fleet");
                fleet.set_desired(0, ready + warming);
                let o = fleet.step(1000, load);
                assert_eq!((o.ready, o.provisioned), (ready, ready + warming), "{name}");
                assert_eq!((o.cpu, o.provisioned_cpu), want, "{name}, {model}");
                // Serving does not depend on how cpu is gauged.
                let served = load.min(f64::from(ready) * 100.0);
                assert_eq!(
                    (o.served_rps, o.dropped_rps),
                    (served, load - served),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn cpu_models_by_name() {
        for (name, model) in CpuModel::NAMES
            .iter()
            .zip([CpuModel::Saturating, CpuModel::Unbounded])
        {
            assert_eq!(name.parse::<CpuModel>(), Ok(model));
            assert_eq!(model.to_string(), *name);
        }
        assert_eq!(CpuModel::default(), CpuModel::Saturating);
        assert_eq!(
            "capped".parse::<CpuModel>().unwrap_err().to_string(),
            "unknown cpu model \"capped\"; expected saturating or unbounded"
        );
    }

    #[test]
    fn rejects_bad_capacity() {
        for capacity in [0.0, -1.0, f64::INFINITY] {
            assert_eq!(
                Fleet::new(1, capacity, 0, CpuModel::default()).err(),
                Some(FleetError::InvalidCapacity(capacity))
            );
        }
        assert!(Fleet::new(1, f64::NAN, 0, CpuModel::default()).is_err());
    }

    #[test]
    fn delays_metrics() {
        let cases: &[(&str, u64, &[i64], &[(i64, &[i64])])] = &[
            (
                "each comes out delay after it was taken",
                15,
                &[0, 10_000, 20_000],
                &[
                    (14_999, &[]),
                    (15_000, &[0]),
                    (30_000, &[10_000]),
                    (60_000, &[20_000]),
                    (90_000, &[]),
                ],
            ),
            ("no delay", 0, &[5, 6], &[(4, &[]), (6, &[5, 6])]),
            (
                "huge delay never overflows",
                u64::MAX,
                &[0],
                &[(i64::MAX - 1, &[])],
            ),
        ];
        for (name, delay_secs, pushes, pops) in cases {
            let mut delay = MetricDelay::new(*delay_secs);
            for (index, taken_ms) in pushes.iter().enumerate() {
                delay.push(*taken_ms, index);
            }
            for (now_ms, want) in *pops {
                let got: Vec<i64> = std::iter::from_fn(|| delay.pop_due(*now_ms))
                    .map(|due| {
                        assert_eq!(pushes[due.value], due.taken_ms, "{name}");
                        due.taken_ms
                    })
                    .collect();
                assert_eq!(&got, want, "{name} at {now_ms}");
            }
        }
    }
}
