//! Backtesting: replays a load trace against a simulated fleet through the
//! same pure decision code as the live services, and through a reference of
//! the Kubernetes HPA algorithm, and measures both.
//!
//! Modules:
//! - [`trace`]: reading load traces (one number per line, or CSV with timestamps; plain or gzip),
//!   with scale, time compression and limit.
//! - [`fleet`]: a simulated fleet stepped in event time (warm-up, dropped load, and cpu that
//!   saturates at 100 % by default or, as a flag, grows with the overload), and a
//!   metric-pipeline delay.
//! - [`elasticity`]: the SPEC Research Group elasticity metrics (accuracy, timeshare,
//!   instability, jitter), SLO-violation time, instance-seconds and actions.
//! - [`chart`]: an SVG chart of demand and supply over time for the runs compared.
//! - [`progress`]: a progress bar on stderr for long replays.
//! - [`replay`]: the replay itself: NovaCron's evaluator and arbiter and the HPA reference,
//!   each against its own simulated fleet, on the same trace.
//! - [`report`]: the side-by-side table of the two runs.
#![warn(missing_docs)]

pub mod chart;
pub mod elasticity;
pub mod fleet;
pub mod progress;
pub mod replay;
pub mod report;
pub mod trace;
