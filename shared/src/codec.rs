//! Encoding on the wire: MessagePack maps with field names, so any language
//! can publish; JSON when the `Content-Type: application/json` header says so.
//!
//! Every decode here first passes the payload through [`scan`], which bounds
//! its size and nesting without recursion, so no outside payload can
//! exhaust the stack; records ([`decode_map`]) must be maps with field
//! names, never positional arrays.

pub mod scan;

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::wire::{MetricSampleIn, Sample, SampleBatch};

/// The header value that selects JSON.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// The header value for MessagePack (also the default when no header is set).
pub const CONTENT_TYPE_MSGPACK: &str = "application/msgpack";

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// MessagePack, the default.
    MsgPack,
    /// JSON.
    Json,
}

impl Encoding {
    /// JSON when the content type says so (parameters like `; charset=utf-8`
    /// are ignored), MessagePack otherwise.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(ct)
                if ct
                    .split(';')
                    .next()
                    .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(CONTENT_TYPE_JSON)) =>
            {
                Encoding::Json
            }
            _ => Encoding::MsgPack,
        }
    }
}

/// A payload that could not be decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// Refused before decoding: too large, too deep or malformed.
    #[error("unreadable payload: {0}")]
    Bounds(#[from] scan::ScanError),
    /// A record sent as something other than a map of named fields.
    #[error("expected a map of named fields, found {0}")]
    NotAMap(&'static str),
    /// More samples in one message than accepted.
    #[error("{count} samples in one message; at most {limit} are accepted, split them")]
    TooManySamples {
        /// How many were sent.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Not valid MessagePack for the expected shape.
    #[error("invalid MessagePack: {0}")]
    MsgPack(#[from] rmp_serde::decode::Error),
    /// Not valid JSON for the expected shape.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Could not encode (a bug: every wire type is encodable).
    #[error("could not encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encodes as a MessagePack map with field names.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Encodes `samples` of `target` as batches of at most `max_bytes` each
/// (the server's `max_payload`): a message that fit on the way in may not
/// once its samples are re-encoded with names and canonical values, and a
/// batch over the limit would be refused by the server as a whole. A batch
/// is halved until it fits; a single sample that cannot fit is returned in
/// the error list (it cannot happen for a sample that arrived in a message).
pub fn encode_batches(
    target: &str,
    samples: Vec<Sample>,
    max_bytes: usize,
) -> (Vec<Vec<u8>>, Vec<Sample>) {
    let mut out = Vec::new();
    let mut unfit = Vec::new();
    let mut pending = vec![samples];
    while let Some(chunk) = pending.pop() {
        if chunk.is_empty() {
            continue;
        }
        let batch = SampleBatch {
            target: target.to_string(),
            samples: chunk,
        };
        match encode(&batch) {
            Ok(bytes) if bytes.len() <= max_bytes => out.push(bytes),
            _ if batch.samples.len() == 1 => unfit.extend(batch.samples),
            _ => {
                let mut first = batch.samples;
                let second = first.split_off(first.len() / 2);
                // Second half pushed first, so batches keep the samples' order.
                pending.push(second);
                pending.push(first);
            }
        }
    }
    (out, unfit)
}

/// At most `max_chars` of outside text, for a reason or a reply: a reply
/// that quoted a megabyte name whole would itself be over the size limit.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes in all)", &text[..cut], text.len()),
    }
}

/// Most samples accepted in one message: far above what fits a NATS
/// server's default 1 MB payload, and a bound on one message's work.
pub const MAX_SAMPLES_PER_MESSAGE: usize = 100_000;

/// Decodes a payload in the given encoding, within [`scan::LIMITS`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8], encoding: Encoding) -> Result<T, CodecError> {
    scan::scan(bytes, encoding, scan::LIMITS)?;
    decode_unchecked(bytes, encoding)
}

/// Decodes a record: like [`decode`], and the top level must be a map of
/// named fields (a positional array could fill fields by accident).
pub fn decode_map<T: DeserializeOwned>(bytes: &[u8], encoding: Encoding) -> Result<T, CodecError> {
    match scan::scan(bytes, encoding, scan::LIMITS)? {
        scan::Top::Map => decode_unchecked(bytes, encoding),
        scan::Top::Array(_) => Err(CodecError::NotAMap("an array")),
        scan::Top::Scalar => Err(CodecError::NotAMap("a single value")),
    }
}

/// Decodes bytes already scanned.
fn decode_unchecked<T: DeserializeOwned>(
    bytes: &[u8],
    encoding: Encoding,
) -> Result<T, CodecError> {
    match encoding {
        Encoding::MsgPack => Ok(rmp_serde::from_slice(bytes)?),
        Encoding::Json => Ok(serde_json::from_slice(bytes)?),
    }
}

/// One element of a sample message: the sample or why it was rejected, with
/// the element's own bytes so it can be dead-lettered on its own.
pub type DecodedSample = Result<MetricSampleIn, (CodecError, Vec<u8>)>;

/// Decodes a metric message holding one sample or an array of them.
///
/// A malformed element of an array does not spoil its neighbours: each
/// element is returned on its own. Only a payload that is not a sample or an
/// array at all is an error for the whole message.
pub fn decode_samples(bytes: &[u8], encoding: Encoding) -> Result<Vec<DecodedSample>, CodecError> {
    let elements = match scan::scan(bytes, encoding, scan::LIMITS)? {
        scan::Top::Array(elements) => elements,
        scan::Top::Map => {
            return Ok(vec![
                decode_unchecked(bytes, encoding).map_err(|e| (e, bytes.to_vec())),
            ]);
        }
        scan::Top::Scalar => return Err(CodecError::NotAMap("a single value")),
    };
    if elements.len() > MAX_SAMPLES_PER_MESSAGE {
        return Err(CodecError::TooManySamples {
            count: elements.len(),
            limit: MAX_SAMPLES_PER_MESSAGE,
        });
    }
    // Fast path: the whole array is well formed.
    if let Ok(all) = decode_unchecked::<Vec<MetricSampleIn>>(bytes, encoding) {
        return Ok(all.into_iter().map(Ok).collect());
    }
    // Slow path: each element from its own bytes, so an element that is not
    // a sample (bad UTF-8, an ext or bin value, a positional array) is
    // refused alone, with exactly its bytes.
    Ok(elements
        .into_iter()
        .map(|span| {
            let raw = &bytes[span];
            match scan::scan(raw, encoding, scan::LIMITS) {
                Ok(scan::Top::Map) => decode_unchecked(raw, encoding),
                Ok(_) => Err(CodecError::NotAMap("an element that is not a map")),
                Err(error) => Err(error.into()),
            }
            .map_err(|e| (e, raw.to_vec()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::SampleValue;

    fn sample(value: f64) -> MetricSampleIn {
        MetricSampleIn {
            metric: Some("cpu".into()),
            value: SampleValue::Number(value),
            ts: Some(1_000),
            instance: None,
            labels: Default::default(),
        }
    }

    #[test]
    fn content_type_selects_encoding() {
        let cases = [
            (None, Encoding::MsgPack),
            (Some("application/json"), Encoding::Json),
            (Some("Application/JSON; charset=utf-8"), Encoding::Json),
            (Some("application/msgpack"), Encoding::MsgPack),
            (Some("text/plain"), Encoding::MsgPack),
        ];
        for (ct, want) in cases {
            assert_eq!(Encoding::from_content_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn decodes_one_or_many_in_both_encodings() {
        let one = encode(&sample(1.0)).unwrap();
        let many = encode(&vec![sample(1.0), sample(2.0)]).unwrap();
        assert_eq!(decode_samples(&one, Encoding::MsgPack).unwrap().len(), 1);
        assert_eq!(decode_samples(&many, Encoding::MsgPack).unwrap().len(), 2);
        let json = br#" [{"metric":"cpu","value":"70%","ts":1.5e3},{"value":3}]"#;
        let got = decode_samples(json, Encoding::Json).unwrap();
        let got: Vec<_> = got.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(got[0].value, SampleValue::Text("70%".into()));
        assert_eq!(got[0].ts, Some(1500));
        assert_eq!(got[1].value, SampleValue::Number(3.0));
    }

    #[test]
    fn a_bad_element_does_not_spoil_its_neighbours() {
        let json = br#"[{"metric":"cpu","value":1},{"metric":"cpu"},{"value":2,"extra":true}]"#;
        let got = decode_samples(json, Encoding::Json).unwrap();
        assert!(got[0].is_ok());
        let (err, raw) = got[1].as_ref().unwrap_err();
        assert!(err.to_string().contains("value"), "{err}");
        assert_eq!(raw, br#"{"metric":"cpu"}"#);
        assert!(got[2].is_ok(), "unknown fields are tolerated");
    }

    #[test]
    fn values_and_times_decode_in_every_shape_and_name_what_is_wrong() {
        // (JSON, Ok((value, ts)) or Err(part of the message))
        let cases: [(&str, Result<(SampleValue, Option<i64>), &str>); 8] = [
            (r#"{"value": 3}"#, Ok((SampleValue::Number(3.0), None))),
            (
                r#"{"value": -2, "ts": 5}"#,
                Ok((SampleValue::Number(-2.0), Some(5))),
            ),
            (
                r#"{"value": 0.5, "ts": 1500.7}"#,
                Ok((SampleValue::Number(0.5), Some(1500))),
            ),
            (
                r#"{"value": "70%", "ts": null}"#,
                Ok((SampleValue::Text("70%".into()), None)),
            ),
            (
                r#"{"value": true}"#,
                Err("a number, or a string with its unit"),
            ),
            (
                r#"{"value": 1, "ts": "soon"}"#,
                Err("a unix time in milliseconds"),
            ),
            (
                r#"{"value": 1, "ts": 1e300}"#,
                Err("ts 1e300 is not a unix time"),
            ),
            (
                r#"{"value": 1, "ts": 18446744073709551615}"#,
                Err("is not a unix time"),
            ),
        ];
        for (json, want) in cases {
            let got = decode::<MetricSampleIn>(json.as_bytes(), Encoding::Json);
            match (got, want) {
                (Ok(sample), Ok((value, ts))) => {
                    assert_eq!((sample.value, sample.ts), (value, ts), "{json}")
                }
                (Err(error), Err(part)) => {
                    assert!(error.to_string().contains(part), "{json}: {error}")
                }
                (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
            }
            // MessagePack carries the same shapes.
            if let Ok(tree) = serde_json::from_str::<serde_json::Value>(json) {
                let packed = rmp_serde::to_vec_named(&tree).unwrap();
                let via_msgpack = decode::<MetricSampleIn>(&packed, Encoding::MsgPack);
                assert_eq!(
                    via_msgpack.is_ok(),
                    decode::<MetricSampleIn>(json.as_bytes(), Encoding::Json).is_ok(),
                    "{json}"
                );
            }
        }
    }

    #[test]
    fn batches_split_under_the_limit_and_keep_order() {
        let samples: Vec<Sample> = (0..30_000)
            .map(|i| Sample {
                metric: "cpu".into(),
                value: f64::from(i),
                ts: 1_764_000_000_000 + i64::from(i),
                instance: Some(format!("i-{i}")),
            })
            .collect();
        let whole = encode(&SampleBatch {
            target: "t".into(),
            samples: samples.clone(),
        })
        .unwrap();
        let limit = 64 * 1024;
        assert!(whole.len() > limit);
        let (batches, unfit) = encode_batches("t", samples.clone(), limit);
        assert!(unfit.is_empty());
        assert!(batches.len() > 1 && batches.iter().all(|b| b.len() <= limit));
        let back: Vec<Sample> = batches
            .iter()
            .flat_map(|b| decode::<SampleBatch>(b, Encoding::MsgPack).unwrap().samples)
            .collect();
        assert_eq!(back, samples, "every sample once, in order");
        let (fits, _) = encode_batches("t", samples[..3].to_vec(), limit);
        assert_eq!(fits.len(), 1, "a small batch stays whole");
        let (none, unfit) = encode_batches("t", samples[..2].to_vec(), 10);
        assert!(none.is_empty() && unfit.len() == 2);
    }

    #[test]
    fn excerpts_are_bounded() {
        assert_eq!(excerpt("short", 10), "short");
        let long = "x".repeat(1_000_000);
        let cut = excerpt(&long, 64);
        assert!(
            cut.len() < 100 && cut.ends_with("(1000000 bytes in all)"),
            "{cut}"
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode_samples(b"\xc1garbage", Encoding::MsgPack).is_err());
        assert!(decode_samples(b"\x05", Encoding::MsgPack).is_err());
        assert!(decode_samples(b"[1,", Encoding::Json).is_err());
    }
}
