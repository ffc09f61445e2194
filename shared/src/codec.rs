//! Encoding on the wire: MessagePack maps with field names, so any language
//! can publish; JSON when the `Content-Type: application/json` header says so.

use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

use crate::wire::MetricSampleIn;

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

/// Decodes a payload in the given encoding.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], encoding: Encoding) -> Result<T, CodecError> {
    match encoding {
        Encoding::MsgPack => Ok(rmp_serde::from_slice(bytes)?),
        Encoding::Json => Ok(serde_json::from_slice(bytes)?),
    }
}

/// True when the payload's top level is an array (MessagePack or JSON).
fn is_array(bytes: &[u8], encoding: Encoding) -> bool {
    match encoding {
        Encoding::MsgPack => bytes
            .first()
            .is_some_and(|b| (0x90..=0x9f).contains(b) || *b == 0xdc || *b == 0xdd),
        Encoding::Json => bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'['),
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
    if !is_array(bytes, encoding) {
        return Ok(vec![
            decode(bytes, encoding).map_err(|e| (e, bytes.to_vec())),
        ]);
    }
    // Fast path: the whole array is well formed.
    if let Ok(all) = decode::<Vec<MetricSampleIn>>(bytes, encoding) {
        return Ok(all.into_iter().map(Ok).collect());
    }
    // Slow path: decode element by element through a generic value.
    let elements: Vec<serde_json::Value> = decode(bytes, encoding)?;
    Ok(elements
        .into_iter()
        .map(|element| {
            serde_json::from_value::<MetricSampleIn>(element.clone()).map_err(|e| {
                let raw = match encoding {
                    Encoding::Json => serde_json::to_vec(&element).unwrap_or_default(),
                    Encoding::MsgPack => rmp_serde::to_vec_named(&element).unwrap_or_default(),
                };
                (CodecError::Json(e), raw)
            })
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
    fn garbage_is_an_error() {
        assert!(decode_samples(b"\xc1garbage", Encoding::MsgPack).unwrap()[0].is_err());
        assert!(decode_samples(b"[1,", Encoding::Json).is_err());
    }
}
