//! Criterion benchmark of decoding published samples: what the bounded
//! scan (`codec::scan`, depth and size checked without recursion) costs
//! next to the whole decode of a message. One message of 1,000 samples as
//! publishers send them (value, ts, instance), MessagePack and JSON.
//!
//!     cargo bench -p nova-shared --bench codec

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nova_shared::codec::{self, Encoding, scan};

fn message(json: bool) -> Vec<u8> {
    let samples: Vec<serde_json::Value> = (0..1000)
        .map(|i| serde_json::json!({"value": 50.0 + f64::from(i % 40), "ts": 1_764_000_000_000i64 + i64::from(i), "instance": format!("web-{i}")}))
        .collect();
    if json {
        serde_json::to_vec(&samples).expect("json")
    } else {
        rmp_serde::to_vec_named(&samples).expect("msgpack")
    }
}

fn decoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_1000_samples");
    group.throughput(Throughput::Elements(1000));
    group.measurement_time(Duration::from_secs(5));
    for (name, encoding) in [("msgpack", Encoding::MsgPack), ("json", Encoding::Json)] {
        let bytes = message(encoding == Encoding::Json);
        group.bench_function(format!("{name}_scan_only"), |b| {
            b.iter(|| scan::scan(std::hint::black_box(&bytes), encoding, scan::LIMITS).expect("ok"))
        });
        group.bench_function(format!("{name}_decode_samples"), |b| {
            b.iter(|| codec::decode_samples(std::hint::black_box(&bytes), encoding).expect("ok"))
        });
    }
    group.finish();
}

criterion_group!(benches, decoding);
criterion_main!(benches);
