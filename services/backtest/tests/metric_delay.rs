//! A metric pipeline's delay slows both autoscalers down by about the delay,
//! whatever its length: on the synthetic step (200 → 2,000 rps) with the
//! shipped demo policy, each still acts and covers the step. A delay of the
//! HPA's metric window (15 s) or more once left the HPA reference with no
//! reading at all, so it never acted.

use std::path::PathBuf;

use nova_backtest::replay::{Comparison, ReplayConfig, replay};
use nova_backtest::report::time_to_cover;
use nova_backtest::trace::{TraceOptions, read_trace};
use nova_shared::policy::load_file;

fn step_with_delay(metric_delay_secs: u64) -> Comparison {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trace = read_trace(&root.join("data/step.txt"), &TraceOptions::default())
        .unwrap_or_else(|error| panic!("{error}"));
    let policy = load_file(&root.join("../../deploy/policies/demo.yaml"))
        .unwrap_or_else(|error| panic!("{error}"));
    let config = ReplayConfig {
        metric_delay_secs,
        ..ReplayConfig::for_target("web")
    };
    replay(&policy, &trace, &config, |_| {}).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn both_autoscalers_cover_the_step_whatever_the_metric_delay() {
    let undelayed = step_with_delay(0);
    let cover = |c: &Comparison| {
        (
            time_to_cover(&c.demand, &c.novacron.supply),
            time_to_cover(&c.demand, &c.hpa.supply),
        )
    };
    let (Some(nova_0), Some(hpa_0)) = cover(&undelayed) else {
        panic!("without delay both cover the step: {:?}", cover(&undelayed));
    };
    // Below, at and above the HPA's 15 s sync period and metric window.
    for delay in [1_u64, 14, 15, 16, 30, 60] {
        let delayed = step_with_delay(delay);
        let (nova, hpa) = cover(&delayed);
        let delay = delay as usize;
        assert!(
            delayed.hpa.metrics.actions > 0,
            "delay {delay} s: the HPA never acted"
        );
        let hpa = hpa.unwrap_or_else(|| panic!("delay {delay} s: the HPA never covers the step"));
        // The delay, plus at most one sync period for where the delayed step
        // falls against the sync grid.
        assert!(
            hpa >= hpa_0 && hpa <= hpa_0 + delay + 15,
            "delay {delay} s: the HPA covers after {hpa} s, {hpa_0} s undelayed"
        );
        let nova =
            nova.unwrap_or_else(|| panic!("delay {delay} s: NovaCron never covers the step"));
        // The delay, plus at most one more of the rule's steps (add 3, one
        // every 30 s: it refires every max(15 s hold, 10 s refire) against a
        // 20 s cooldown), because a delayed fleet may start the step from
        // fewer instances (it overshot and came down before the step).
        assert!(
            nova >= nova_0 && nova <= nova_0 + delay + 30,
            "delay {delay} s: NovaCron covers after {nova} s, {nova_0} s undelayed"
        );
    }
}
