//! Criterion benchmark of the evaluator in process, one core: one round of
//! one sample per series through `Evaluator::observe`, 100k series, mixed
//! rules (see `workload`). Criterion reports samples per second from the
//! round's element count.
//!
//!     cargo bench -p nova-shared --bench evaluator_criterion

// The series-rule constants serve the other bench's memory figures.
#[allow(dead_code)]
mod workload;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use workload::Workload;

fn evaluator(c: &mut Criterion) {
    let mut workload = Workload::new(100_000);
    let mut firings = Vec::new();
    workload.start(&mut firings);
    let mut round = 0i64;
    let mut group = c.benchmark_group("evaluator");
    group.throughput(Throughput::Elements(workload.series() as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("observe_100k_series_mixed_rules", |b| {
        // Every round must move event time forward, so the state evolves as
        // live (holds, refires, expiry) instead of rejecting repeats.
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                round += 1;
                std::hint::black_box(workload.round(round * 10_000, &mut firings));
            }
            started.elapsed()
        });
    });
    group.finish();
}

criterion_group!(benches, evaluator);
criterion_main!(benches);
