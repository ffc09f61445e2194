//! Elasticity metrics: how closely supply followed demand, in the SPEC
//! Research Group's definitions, so that two autoscalers replayed on the same
//! trace are compared with published, comparable numbers rather than with
//! figures invented for the occasion.
//!
//! Sources: N. Herbst, A. Bauer, S. Kounev et al., "Quantifying Cloud
//! Performance and Dependability: Taxonomy, Metric Design, and Emerging
//! Challenges", ACM TOMPECS 3(4), 2018; A. Bauer et al., "Chameleon: A Hybrid,
//! Proactive Auto-Scaling Mechanism on a Level-Playing Field", IEEE TPDS
//! 30(4), 2019.
//!
//! # Series
//!
//! The run is cut into `n` intervals of length `Δt` seconds, `T = n·Δt`.
//! In interval `t`:
//!
//! - `d_t`, **demand**: instances needed to serve the load,
//!   `d_t = max(1, ⌈load_t / capacity_per_instance⌉)` ([`demand_instances`]).
//!   The floor of 1 is a decision: a service needs one instance to answer at
//!   all, every real fleet has a minimum of at least 1, and without the floor
//!   each idle second of a bursty trace would count as over-provisioning that
//!   no autoscaler could avoid, and each 0↔1 flicker as a demand change.
//!   The ceiling forgives a relative error of 1e-9, so that 300 / 100 is 3 and
//!   not 4 when floating point makes it 3.0000000000000004.
//! - `s_t`, **supply**: instances *ready* (warmed up) to serve.
//! - `p_t`, **provisioned**: instances ready plus warming up: what is billed.
//!
//! # Metrics (ε = 1: the variant normalised by demand)
//!
//! ```text
//! θ_U = 100/T · Σ_t max(d_t − s_t, 0) / max(d_t, ε) · Δt      under-provisioning accuracy, %
//! θ_O = 100/T · Σ_t max(s_t − d_t, 0) / max(d_t, ε) · Δt      over-provisioning accuracy, %
//! τ_U = 100/T · Σ_t [d_t > s_t] · Δt                          under-provisioning timeshare, %
//! τ_O = 100/T · Σ_t [s_t > d_t] · Δt                          over-provisioning timeshare, %
//! υ   = 100/(T − Δt) · Σ_{t≥2} min(|sgn(Δs_t) − sgn(Δd_t)|, 1) · Δt     instability, %
//!       where Δs_t = s_t − s_{t−1}, Δd_t = d_t − d_{t−1}; υ = 0 when n = 1
//! j   = (E_S − E_D) / T                                      jitter, adaptations per hour (T in hours)
//!       where E_S = #{t ≥ 2 : s_t ≠ s_{t−1}}, E_D = #{t ≥ 2 : d_t ≠ d_{t−1}}
//! ```
//!
//! θ is how much was missing (or extra) relative to what was needed, on
//! average; τ is how often. υ is the share of time supply moved differently
//! from demand (one changed and the other did not, or they moved in opposite
//! directions). j < 0 means supply adapted less often than demand changed (too
//! inert), j > 0 more often (jittery). Lower is better for all of them, and
//! j is best at 0.
//!
//! Besides these, in the units an operator reads:
//!
//! ```text
//! SLO-violation time = Σ_t [load_t > s_t · capacity_per_instance] · Δt     seconds
//! instance-seconds   = Σ_t p_t · Δt                                        what was paid for
//! actions            = given by the caller, else #{t ≥ 2 : p_t ≠ p_{t−1}}
//! ```

use thiserror::Error;

/// Relative slack in [`demand_instances`]'s ceiling (see the module docs).
const DEMAND_CEILING_SLACK: f64 = 1e-9;

/// The ε of the normalised accuracy metrics: demand below it divides as ε.
const DEMAND_EPSILON: f64 = 1.0;

/// Instances needed to serve `load_rps`: `max(1, ⌈load / capacity⌉)`.
///
/// A non-finite or negative load needs 1; a capacity that is not positive
/// makes any load need `u32::MAX` (the caller validates capacities).
pub fn demand_instances(load_rps: f64, capacity_per_instance: f64) -> u32 {
    let needed = (load_rps / capacity_per_instance * (1.0 - DEMAND_CEILING_SLACK)).ceil();
    if needed.is_nan() {
        return if load_rps > 0.0 { u32::MAX } else { 1 };
    }
    // `as` saturates, which is the right answer for a huge ratio.
    (needed as u32).max(1)
}

/// What the fleet looked like in one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalSample {
    /// Requests per second offered in the interval.
    pub load_rps: f64,
    /// Instances ready to serve (supply, `s_t`).
    pub ready: u32,
    /// Instances ready or warming up (`p_t`, what is billed).
    pub provisioned: u32,
}

/// The elasticity of one run; see the module docs for the formulas.
/// Serialised with these field names by `novactl backtest --output json`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ElasticityMetrics {
    /// Intervals measured, `n`.
    pub intervals: u64,
    /// Time measured, `T`, in seconds.
    pub duration_secs: f64,
    /// θ_U: average shortfall relative to demand, in percent.
    pub under_provisioning_accuracy_pct: f64,
    /// θ_O: average excess relative to demand, in percent.
    pub over_provisioning_accuracy_pct: f64,
    /// τ_U: share of time with fewer ready instances than demand, in percent.
    pub under_provisioning_timeshare_pct: f64,
    /// τ_O: share of time with more ready instances than demand, in percent.
    pub over_provisioning_timeshare_pct: f64,
    /// υ: share of time supply moved differently from demand, in percent.
    pub instability_pct: f64,
    /// j: supply adaptations minus demand changes, per hour.
    pub jitter_per_hour: f64,
    /// E_S: how many times supply changed.
    pub supply_adaptations: u64,
    /// E_D: how many times demand changed.
    pub demand_changes: u64,
    /// Seconds in which the load exceeded what the ready instances could serve.
    pub slo_violation_secs: f64,
    /// Provisioned instances (ready or warming) integrated over time, in seconds.
    pub instance_secs: f64,
    /// Scaling actions: as given to [`ElasticityMeter::finish`], else changes of provisioned.
    pub actions: u64,
}

/// Metrics that could not be computed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ElasticityError {
    /// The interval length is not a positive number of seconds.
    #[error("interval must be a positive number of seconds, not {0}")]
    InvalidInterval(f64),
    /// The capacity of one instance is not a positive number.
    #[error("capacity per instance must be a positive number of requests per second, not {0}")]
    InvalidCapacity(f64),
    /// A load is not a finite number ≥ 0.
    #[error("interval {interval}: load must be a finite number ≥ 0, not {load_rps}")]
    InvalidLoad {
        /// The interval's index, from 0.
        interval: u64,
        /// The load given.
        load_rps: f64,
    },
    /// Nothing was recorded.
    #[error("no interval was recorded")]
    NoIntervals,
}

/// The previous interval, for the change-based metrics.
#[derive(Debug, Clone, Copy)]
struct Previous {
    demand: u32,
    supply: u32,
    provisioned: u32,
}

/// Accumulates the metrics interval by interval, so that a run of millions
/// of intervals needs no stored series.
#[derive(Debug, Clone)]
pub struct ElasticityMeter {
    interval_secs: f64,
    capacity_per_instance: f64,
    intervals: u64,
    /// Σ max(d − s, 0) / max(d, ε), without the Δt.
    relative_shortfall: f64,
    /// Σ max(s − d, 0) / max(d, ε), without the Δt.
    relative_excess: f64,
    under_intervals: u64,
    over_intervals: u64,
    unstable_intervals: u64,
    supply_adaptations: u64,
    demand_changes: u64,
    provisioned_changes: u64,
    slo_violation_intervals: u64,
    /// Σ p, without the Δt.
    provisioned_sum: u64,
    previous: Option<Previous>,
}

impl ElasticityMeter {
    /// A meter for intervals of `interval_secs` and instances that each serve
    /// `capacity_per_instance` requests per second.
    pub fn new(interval_secs: f64, capacity_per_instance: f64) -> Result<Self, ElasticityError> {
        if !(interval_secs.is_finite() && interval_secs > 0.0) {
            return Err(ElasticityError::InvalidInterval(interval_secs));
        }
        if !(capacity_per_instance.is_finite() && capacity_per_instance > 0.0) {
            return Err(ElasticityError::InvalidCapacity(capacity_per_instance));
        }
        Ok(ElasticityMeter {
            interval_secs,
            capacity_per_instance,
            intervals: 0,
            relative_shortfall: 0.0,
            relative_excess: 0.0,
            under_intervals: 0,
            over_intervals: 0,
            unstable_intervals: 0,
            supply_adaptations: 0,
            demand_changes: 0,
            provisioned_changes: 0,
            slo_violation_intervals: 0,
            provisioned_sum: 0,
            previous: None,
        })
    }

    /// Adds the next interval.
    pub fn record(&mut self, sample: IntervalSample) -> Result<(), ElasticityError> {
        if !(sample.load_rps.is_finite() && sample.load_rps >= 0.0) {
            return Err(ElasticityError::InvalidLoad {
                interval: self.intervals,
                load_rps: sample.load_rps,
            });
        }
        let demand = demand_instances(sample.load_rps, self.capacity_per_instance);
        let supply = sample.ready;
        let normaliser = f64::from(demand).max(DEMAND_EPSILON);
        let gap = f64::from(demand) - f64::from(supply);
        if gap > 0.0 {
            self.relative_shortfall += gap / normaliser;
            self.under_intervals += 1;
        } else if gap < 0.0 {
            self.relative_excess += -gap / normaliser;
            self.over_intervals += 1;
        }
        if sample.load_rps > f64::from(supply) * self.capacity_per_instance {
            self.slo_violation_intervals += 1;
        }
        self.provisioned_sum += u64::from(sample.provisioned);
        if let Some(previous) = self.previous {
            let supply_step = supply.cmp(&previous.supply);
            let demand_step = demand.cmp(&previous.demand);
            // min(|sgn Δs − sgn Δd|, 1) is 1 exactly when the signs differ.
            if supply_step != demand_step {
                self.unstable_intervals += 1;
            }
            self.supply_adaptations += u64::from(supply_step.is_ne());
            self.demand_changes += u64::from(demand_step.is_ne());
            self.provisioned_changes += u64::from(sample.provisioned != previous.provisioned);
        }
        self.previous = Some(Previous {
            demand,
            supply,
            provisioned: sample.provisioned,
        });
        self.intervals += 1;
        Ok(())
    }

    /// The metrics over every interval recorded. `actions` is the number of
    /// scaling actions if the caller counted them; `None` counts changes of
    /// provisioned instances between intervals.
    pub fn finish(&self, actions: Option<u64>) -> Result<ElasticityMetrics, ElasticityError> {
        if self.intervals == 0 {
            return Err(ElasticityError::NoIntervals);
        }
        let intervals = self.intervals as f64;
        let duration_secs = intervals * self.interval_secs;
        // 100/T · Σ x·Δt = 100 · Σ x / n, as every interval has the same Δt.
        let percent_of_time = |sum: f64| 100.0 * sum / intervals;
        let instability_pct = if self.intervals > 1 {
            100.0 * self.unstable_intervals as f64 / (intervals - 1.0)
        } else {
            0.0
        };
        let duration_hours = duration_secs / 3600.0;
        Ok(ElasticityMetrics {
            intervals: self.intervals,
            duration_secs,
            under_provisioning_accuracy_pct: percent_of_time(self.relative_shortfall),
            over_provisioning_accuracy_pct: percent_of_time(self.relative_excess),
            under_provisioning_timeshare_pct: percent_of_time(self.under_intervals as f64),
            over_provisioning_timeshare_pct: percent_of_time(self.over_intervals as f64),
            instability_pct,
            jitter_per_hour: (self.supply_adaptations as f64 - self.demand_changes as f64)
                / duration_hours,
            supply_adaptations: self.supply_adaptations,
            demand_changes: self.demand_changes,
            slo_violation_secs: self.slo_violation_intervals as f64 * self.interval_secs,
            instance_secs: self.provisioned_sum as f64 * self.interval_secs,
            actions: actions.unwrap_or(self.provisioned_changes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_is_the_ceiling_with_a_floor_of_one() {
        let cases: &[(f64, f64, u32)] = &[
            (0.0, 100.0, 1),
            (0.001, 100.0, 1),
            (100.0, 100.0, 1),
            (100.1, 100.0, 2),
            (300.0, 100.0, 3),
            // 0.1 + 0.2 = 0.30000000000000004: still 3 instances of 0.1.
            (0.1 + 0.2, 0.1, 3),
            (350.0, 100.0, 4),
            (1e300, 1e-300, u32::MAX),
            (f64::NAN, 100.0, 1),
            (-5.0, 100.0, 1),
            (5.0, 0.0, u32::MAX),
        ];
        for (load, capacity, want) in cases {
            assert_eq!(
                demand_instances(*load, *capacity),
                *want,
                "{load} / {capacity}"
            );
        }
    }

    fn measure(
        interval_secs: f64,
        samples: &[(f64, u32, u32)],
        actions: Option<u64>,
    ) -> ElasticityMetrics {
        // Capacity 1 request per second per instance: demand is the load's ceiling.
        let mut meter = ElasticityMeter::new(interval_secs, 1.0).expect("valid meter");
        for (load_rps, ready, provisioned) in samples {
            meter
                .record(IntervalSample {
                    load_rps: *load_rps,
                    ready: *ready,
                    provisioned: *provisioned,
                })
                .expect("valid sample");
        }
        meter.finish(actions).expect("some intervals")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn matches_hand_computed_series() {
        struct Case {
            name: &'static str,
            interval_secs: f64,
            /// (load = demand here, ready, provisioned)
            samples: &'static [(f64, u32, u32)],
            actions: Option<u64>,
            /// θ_U, θ_O, τ_U, τ_O, υ, j
            want: [f64; 6],
            /// E_S, E_D, SLO-violation secs, instance-secs, actions
            counts: (u64, u64, f64, f64, u64),
        }
        let cases = [
            Case {
                name: "perfect tracking",
                interval_secs: 60.0,
                samples: &[(2.0, 2, 2), (4.0, 4, 4), (4.0, 4, 4), (1.0, 1, 1)],
                actions: None,
                // No gap; supply and demand change together.
                want: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                counts: (2, 2, 0.0, 660.0, 2),
            },
            Case {
                name: "late scale-up",
                interval_secs: 60.0,
                // d = 2,4,4,4; s = 2,2,3,4; p = 2,4,4,4.
                samples: &[(2.0, 2, 2), (4.0, 2, 4), (4.0, 3, 4), (4.0, 4, 4)],
                actions: None,
                // θ_U = 100/4 · (0 + 2/4 + 1/4 + 0) = 18.75
                // τ_U = 100 · 2/4 = 50
                // υ: t2 Δs=0,Δd=+ → 1; t3 Δs=+,Δd=0 → 1; t4 Δs=+,Δd=0 → 1: 100 · 3/3
                // j = (E_S 2 − E_D 1) / (4 min = 1/15 h) = 15
                want: [18.75, 0.0, 50.0, 0.0, 100.0, 15.0],
                // SLO: load 4 > 2 and 4 > 3 → 2 intervals = 120 s.
                // instance-s = (2+4+4+4)·60 = 840; actions: p changed once.
                counts: (2, 1, 120.0, 840.0, 1),
            },
            Case {
                name: "over-provisioned, idle demand floors at 1",
                interval_secs: 1.0,
                // d = 1,1,2; s = 3,3,3.
                samples: &[(0.0, 3, 3), (0.5, 3, 3), (1.5, 3, 3)],
                actions: Some(7),
                // θ_O = 100/3 · (2/1 + 2/1 + 1/2) = 150
                // τ_O = 100; υ: t2 0,0 → 0; t3 Δs=0,Δd=+ → 1: 100 · 1/2 = 50
                // j = (0 − 1) / (3 s in hours) = −1200
                want: [0.0, 150.0, 0.0, 100.0, 50.0, -1200.0],
                counts: (0, 1, 0.0, 9.0, 7),
            },
            Case {
                name: "opposite directions and no ready instance",
                interval_secs: 10.0,
                // d = 2,3,1; s = 0,4,2; p = 2,4,2.
                samples: &[(2.0, 0, 2), (3.0, 4, 4), (1.0, 2, 2)],
                actions: None,
                // θ_U = 100/3 · (2/2) = 33.33…; θ_O = 100/3 · (1/3 + 1/1) = 44.44…
                // τ_U = 100 · 1/3; τ_O = 100 · 2/3
                // υ: t2 Δs=+,Δd=+ → 0; t3 Δs=−,Δd=− → 0: 0
                // j = (2 − 2) / T = 0
                want: [100.0 / 3.0, 400.0 / 9.0, 100.0 / 3.0, 200.0 / 3.0, 0.0, 0.0],
                // SLO: 2 > 0 → 10 s. instance-s = (2+4+2)·10. actions: 2.
                counts: (2, 2, 10.0, 80.0, 2),
            },
            Case {
                name: "single interval",
                interval_secs: 5.0,
                samples: &[(3.0, 1, 2)],
                actions: None,
                // θ_U = 100 · 2/3; τ_U = 100; υ = 0 with one interval.
                want: [200.0 / 3.0, 0.0, 100.0, 0.0, 0.0, 0.0],
                counts: (0, 0, 5.0, 10.0, 0),
            },
        ];
        for case in cases {
            let m = measure(case.interval_secs, case.samples, case.actions);
            let got = [
                m.under_provisioning_accuracy_pct,
                m.over_provisioning_accuracy_pct,
                m.under_provisioning_timeshare_pct,
                m.over_provisioning_timeshare_pct,
                m.instability_pct,
                m.jitter_per_hour,
            ];
            for (index, (got_value, want_value)) in got.iter().zip(case.want).enumerate() {
                assert!(
                    close(*got_value, want_value),
                    "{}: metric {index}: {got:?} != {:?}",
                    case.name,
                    case.want
                );
            }
            let counts = (
                m.supply_adaptations,
                m.demand_changes,
                m.slo_violation_secs,
                m.instance_secs,
                m.actions,
            );
            assert_eq!(counts, case.counts, "{}", case.name);
            assert_eq!(m.intervals, case.samples.len() as u64, "{}", case.name);
            assert_eq!(
                m.duration_secs,
                case.samples.len() as f64 * case.interval_secs,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn capacity_scales_demand_and_slo() {
        // Capacity 100: load 250 needs 3; 2 ready serve only 200.
        let mut meter = ElasticityMeter::new(1.0, 100.0).expect("valid");
        meter
            .record(IntervalSample {
                load_rps: 250.0,
                ready: 2,
                provisioned: 3,
            })
            .expect("valid");
        let m = meter.finish(None).expect("one interval");
        assert!(close(m.under_provisioning_accuracy_pct, 100.0 / 3.0));
        assert_eq!(m.slo_violation_secs, 1.0);
        // Exactly at capacity is no violation.
        let mut meter = ElasticityMeter::new(1.0, 100.0).expect("valid");
        meter
            .record(IntervalSample {
                load_rps: 200.0,
                ready: 2,
                provisioned: 2,
            })
            .expect("valid");
        assert_eq!(meter.finish(None).expect("one").slo_violation_secs, 0.0);
    }

    #[test]
    fn rejects_bad_input() {
        let cases: &[(f64, f64, ElasticityError)] = &[
            (0.0, 1.0, ElasticityError::InvalidInterval(0.0)),
            (-1.0, 1.0, ElasticityError::InvalidInterval(-1.0)),
            (
                f64::INFINITY,
                1.0,
                ElasticityError::InvalidInterval(f64::INFINITY),
            ),
            (1.0, 0.0, ElasticityError::InvalidCapacity(0.0)),
            (1.0, -2.0, ElasticityError::InvalidCapacity(-2.0)),
        ];
        for (interval, capacity, want) in cases {
            assert_eq!(
                ElasticityMeter::new(*interval, *capacity).err().as_ref(),
                Some(want)
            );
        }
        let mut meter = ElasticityMeter::new(1.0, 1.0).expect("valid");
        assert_eq!(meter.finish(None), Err(ElasticityError::NoIntervals));
        for (interval, load_rps) in [(0, -1.0), (0, f64::INFINITY)] {
            assert_eq!(
                meter.record(IntervalSample {
                    load_rps,
                    ready: 1,
                    provisioned: 1
                }),
                Err(ElasticityError::InvalidLoad { interval, load_rps })
            );
        }
        // A rejected sample is not counted.
        assert_eq!(meter.finish(None), Err(ElasticityError::NoIntervals));
    }
}
