//! Hostile input for the decoders and the evaluator: properties over
//! arbitrary bytes, nesting and timestamps (the committed corpus of shapes
//! that once crashed a stage is replayed by `tests/tests/hostile.rs`).
//! Nothing here may panic or overflow the stack; every refusal names what
//! is wrong.

use nova_shared::codec::{self, Encoding};
use nova_shared::evaluate::Evaluator;
use nova_shared::policy::from_yaml;
use nova_shared::wire::{ControlRequest, MetricSampleIn, Sample, Trigger};
use proptest::prelude::*;

fn policy() -> nova_shared::policy::Policy {
    from_yaml(
        r#"
targets:
  t: {rules: [q], max: 50, backend: {sim: {initial: 2}}}
horizontal_scaling_rules:
  q:
    scale_up: {condition: "queue_depth > 100 for 1 minute", action: "add 2 instances"}
    scale_down: {condition: "queue_depth < 10 for 1 minute", action: "remove 1 instance"}
"#,
        "p.yaml",
    )
    .expect("policy")
}

fn nested(depth: usize, inner: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x91; depth];
    bytes.extend_from_slice(inner);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes at all: every decoder answers, none panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for encoding in [Encoding::MsgPack, Encoding::Json] {
            let _ = codec::decode_samples(&bytes, encoding);
            let _ = ControlRequest::decode(&bytes, encoding, None);
            let _ = ControlRequest::decode(&bytes, encoding, Some("pause"));
            let _ = codec::decode_map::<Trigger>(&bytes, encoding);
            let _ = codec::decode::<MetricSampleIn>(&bytes, encoding);
        }
    }

    /// Nesting of any depth, at the top or in an unknown field: refused past
    /// the limit with a reason, decoded within it, never a stack overflow.
    #[test]
    fn nesting_is_bounded(depth in 0usize..5000, in_field in any::<bool>()) {
        let bytes = if in_field {
            let mut b = vec![0x82, 0xa5];
            b.extend_from_slice(b"value");
            b.push(0x01);
            b.extend_from_slice(&[0xa1, b'x']);
            b.extend(nested(depth, &[0xc0]));
            b
        } else {
            nested(depth, &[0x80])
        };
        let result = codec::decode_samples(&bytes, Encoding::MsgPack);
        let limit = codec::scan::LIMITS.max_depth;
        let too_deep = if in_field { depth + 1 > limit } else { depth > limit };
        if too_deep {
            let error = result.expect_err("too deep").to_string();
            prop_assert!(error.contains("nested deeper than"), "{}", error);
        }
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let _ = codec::decode_samples(json.as_bytes(), Encoding::Json);
    }

    /// Any event times, including the extremes, in any order: the evaluator
    /// answers every sample and never panics (its arithmetic saturates).
    #[test]
    fn extreme_event_times_never_panic(
        times in proptest::collection::vec(
            prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64), any::<i64>()], 1..40),
        values in proptest::collection::vec(0.0f64..1000.0, 40),
    ) {
        let policy = policy();
        let mut evaluator = Evaluator::new(&policy);
        let samples: Vec<Sample> = times
            .iter()
            .zip(values.iter())
            .map(|(ts, value)| Sample {
                metric: "queue_depth".into(),
                value: *value,
                ts: *ts,
                instance: None,
            })
            .collect();
        for now in [i64::MIN, 0, 1_764_000_000_000, i64::MAX] {
            let _ = evaluator.observe_batch("t", &samples, now);
            let _ = evaluator.flush_held(now);
        }
    }
}
