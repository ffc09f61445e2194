//! A bounded look at a payload before any decoder sees it.
//!
//! Outside bytes are hostile: `rmp_serde` recurses once per nesting level,
//! and a few hundred nested one-element arrays overflow a thread's stack
//! long before its own depth limit of 1024 is reached, aborting the whole
//! process. This scanner walks a MessagePack or JSON value without
//! recursion (a counter per open container), so it is safe on any input,
//! and refuses a payload that is larger than [`Limits::max_bytes`], nested
//! deeper than [`Limits::max_depth`], truncated, or followed by stray bytes.
//! On the way it notes the byte span of each element of a top-level array,
//! so a sample batch can be decoded element by element and one bad element
//! is refused alone.

use std::ops::Range;

use thiserror::Error;

use super::Encoding;

/// What a payload may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and maps (a sample array holding samples
    /// with labels is 3).
    pub max_depth: usize,
}

/// The limits every decoder here applies: 8 MiB (above any NATS server's
/// usual `max_payload`; the server's own limit is met first) and a depth of
/// 32, far below what the stack takes and far above any message here.
pub const LIMITS: Limits = Limits {
    max_bytes: 8 * 1024 * 1024,
    max_depth: 32,
};

/// Why a payload was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScanError {
    /// Larger than allowed.
    #[error("payload of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Nested deeper than allowed.
    #[error("nested deeper than {limit} levels at byte {at}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the limit was crossed.
        at: usize,
    },
    /// Not well formed.
    #[error("malformed at byte {at}: {what}")]
    Malformed {
        /// Where.
        at: usize,
        /// What is wrong.
        what: &'static str,
    },
}

/// The shape of a scanned payload's top level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Top {
    /// A map (MessagePack) or object (JSON).
    Map,
    /// An array, with the byte span of each element.
    Array(Vec<Range<usize>>),
    /// Anything else (a number, a string, nil).
    Scalar,
}

/// Checks `bytes` against `limits` and reports its top-level shape.
pub fn scan(bytes: &[u8], encoding: Encoding, limits: Limits) -> Result<Top, ScanError> {
    if bytes.len() > limits.max_bytes {
        return Err(ScanError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    match encoding {
        Encoding::MsgPack => msgpack(bytes, limits.max_depth),
        Encoding::Json => json(bytes, limits.max_depth),
    }
}

fn malformed(at: usize, what: &'static str) -> ScanError {
    ScanError::Malformed { at, what }
}

/// Reads a big-endian length of `width` bytes at `at`.
fn length(bytes: &[u8], at: usize, width: usize) -> Result<u64, ScanError> {
    let field = bytes
        .get(at..at + width)
        .ok_or_else(|| malformed(at, "truncated length"))?;
    Ok(field.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

/// What one MessagePack marker opens: a value of `skip` more bytes, or a
/// container of `items` values whose own header is `skip` more bytes.
struct Marker {
    skip: u64,
    items: Option<u64>,
    map: bool,
}

fn marker(bytes: &[u8], at: usize) -> Result<Marker, ScanError> {
    let b = bytes[at];
    let value = |skip| {
        Ok(Marker {
            skip,
            items: None,
            map: false,
        })
    };
    let sized = |width: usize, extra: u64| -> Result<Marker, ScanError> {
        let n = length(bytes, at + 1, width)?;
        Ok(Marker {
            skip: width as u64 + extra + n,
            items: None,
            map: false,
        })
    };
    let container = |width: usize, n: u64, map: bool| -> Result<Marker, ScanError> {
        Ok(Marker {
            skip: width as u64,
            items: Some(if map { n.saturating_mul(2) } else { n }),
            map,
        })
    };
    match b {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => value(0),
        0x80..=0x8f => container(0, u64::from(b & 0x0f), true),
        0x90..=0x9f => container(0, u64::from(b & 0x0f), false),
        0xa0..=0xbf => value(u64::from(b & 0x1f)),
        0xc1 => Err(malformed(at, "0xc1 is never used in MessagePack")),
        0xc4 | 0xd9 => sized(1, 0),
        0xc5 | 0xda => sized(2, 0),
        0xc6 | 0xdb => sized(4, 0),
        0xc7 => sized(1, 1),
        0xc8 => sized(2, 1),
        0xc9 => sized(4, 1),
        0xca | 0xce | 0xd2 => value(4),
        0xcb | 0xcf | 0xd3 => value(8),
        0xcc | 0xd0 => value(1),
        0xcd | 0xd1 => value(2),
        0xd4 => value(2),
        0xd5 => value(3),
        0xd6 => value(5),
        0xd7 => value(9),
        0xd8 => value(17),
        0xdc => container(2, length(bytes, at + 1, 2)?, false),
        0xdd => container(4, length(bytes, at + 1, 4)?, false),
        0xde => container(2, length(bytes, at + 1, 2)?, true),
        0xdf => container(4, length(bytes, at + 1, 4)?, true),
    }
}

fn msgpack(bytes: &[u8], max_depth: usize) -> Result<Top, ScanError> {
    if bytes.is_empty() {
        return Err(malformed(0, "empty payload"));
    }
    // Items still to read in each open container, outermost first.
    let mut open: Vec<u64> = Vec::new();
    let mut top = None;
    let mut elements = Vec::new();
    let mut element_start = 0;
    let mut at = 0usize;
    loop {
        if at >= bytes.len() {
            return Err(malformed(at, "truncated"));
        }
        if open.len() == 1 && matches!(top, Some(Top::Array(_))) {
            element_start = at;
        }
        let m = marker(bytes, at)?;
        let next = u64::try_from(at)
            .ok()
            .and_then(|a| a.checked_add(1 + m.skip))
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= bytes.len())
            .ok_or_else(|| malformed(at, "truncated"))?;
        if top.is_none() {
            top = Some(match (m.items, m.map) {
                (Some(_), true) => Top::Map,
                (Some(_), false) => Top::Array(Vec::new()),
                (None, _) => Top::Scalar,
            });
        }
        let at_element_depth = open.len() == 1;
        at = next;
        match m.items {
            Some(items) if items > 0 => {
                if open.len() >= max_depth {
                    return Err(ScanError::TooDeep {
                        limit: max_depth,
                        at,
                    });
                }
                open.push(items);
                continue;
            }
            _ => {}
        }
        // A value is complete: count it off its container, and every
        // container it completes in turn.
        let mut closed_element = at_element_depth;
        loop {
            match open.last_mut() {
                None => {
                    if at != bytes.len() {
                        return Err(malformed(at, "stray bytes after the value"));
                    }
                    return Ok(match top {
                        Some(Top::Array(_)) => Top::Array(elements),
                        other => other.unwrap_or(Top::Scalar),
                    });
                }
                Some(left) => {
                    *left -= 1;
                    let remaining = *left;
                    if closed_element && open.len() == 1 {
                        elements.push(element_start..at);
                    }
                    if remaining > 0 {
                        break;
                    }
                    open.pop();
                    closed_element = open.len() == 1;
                }
            }
        }
    }
}

fn json(bytes: &[u8], max_depth: usize) -> Result<Top, ScanError> {
    let mut depth = 0usize;
    let mut top = None;
    let mut elements = Vec::new();
    let mut element_start: Option<usize> = None;
    // One past the last byte that belongs to a value (not whitespace).
    let mut last_end = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // The top-level array or object has closed: only whitespace may follow
    // (a bare scalar's text is left to serde to check).
    let mut done = false;
    for (at, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    last_end = at + 1;
                }
                _ => {}
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if done {
            return Err(malformed(at, "stray bytes after the value"));
        }
        let in_top_array = depth == 1 && matches!(top, Some(Top::Array(_)));
        if in_top_array && element_start.is_none() && b != b']' && b != b',' {
            element_start = Some(at);
        }
        match b {
            b'[' | b'{' => {
                top.get_or_insert(if b == b'[' {
                    Top::Array(Vec::new())
                } else {
                    Top::Map
                });
                depth += 1;
                if depth > max_depth {
                    return Err(ScanError::TooDeep {
                        limit: max_depth,
                        at,
                    });
                }
            }
            b']' | b'}' => {
                if depth == 0 {
                    return Err(malformed(at, "unbalanced bracket"));
                }
                if in_top_array && let Some(start) = element_start.take() {
                    elements.push(start..last_end);
                }
                depth -= 1;
                done = depth == 0;
            }
            b',' if in_top_array => {
                if let Some(start) = element_start.take() {
                    elements.push(start..last_end);
                }
            }
            b'"' => {
                top.get_or_insert(Top::Scalar);
                in_string = true;
            }
            _ => {
                top.get_or_insert(Top::Scalar);
            }
        }
        last_end = at + 1;
    }
    if in_string || depth > 0 {
        return Err(malformed(bytes.len(), "truncated"));
    }
    match top {
        Some(Top::Array(_)) => Ok(Top::Array(elements)),
        Some(other) => Ok(other),
        None => Err(malformed(0, "empty payload")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut bytes = vec![0x91; depth];
        bytes.push(0xc0);
        bytes
    }

    #[test]
    fn msgpack_shapes() {
        let sample =
            rmp_serde::to_vec_named(&serde_json::json!({"value": 1, "labels": {"a": "b"}}))
                .unwrap();
        let pair =
            rmp_serde::to_vec_named(&serde_json::json!([{"value": 1}, {"value": [2, 3]}])).unwrap();
        let big_array_claim = vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0];
        let cases: Vec<(&str, Vec<u8>, Result<&str, &str>)> = vec![
            ("a map", sample.clone(), Ok("map")),
            ("a scalar", vec![0x05], Ok("scalar")),
            ("depth 32 passes", nested_arrays(31), Ok("array")),
            (
                "depth 33 is refused",
                nested_arrays(33),
                Err("nested deeper than 32"),
            ),
            (
                "the issue's 753 levels",
                nested_arrays(753),
                Err("nested deeper than 32"),
            ),
            ("truncated string", vec![0xa5, b'a'], Err("truncated")),
            ("0xc1", vec![0xc1], Err("never used")),
            ("stray bytes", vec![0xc0, 0xc0], Err("stray bytes")),
            ("empty", vec![], Err("empty payload")),
            (
                "an array claiming 4G items",
                big_array_claim,
                Err("truncated"),
            ),
            (
                "bin32 claiming 4 GB",
                vec![0xc6, 0xff, 0xff, 0xff, 0xff],
                Err("truncated"),
            ),
            ("an array of two", pair, Ok("array")),
        ];
        for (name, bytes, want) in cases {
            let got = scan(&bytes, Encoding::MsgPack, LIMITS);
            match (got, want) {
                (Ok(Top::Map), Ok("map"))
                | (Ok(Top::Scalar), Ok("scalar"))
                | (Ok(Top::Array(_)), Ok("array")) => {}
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn msgpack_array_elements_are_spanned() {
        let elements = [
            serde_json::json!({"value": 10}),
            serde_json::json!({"value": 20, "labels": {"k": [1, 2, {"x": null}]}}),
            serde_json::json!(7),
        ];
        let bytes = rmp_serde::to_vec_named(&elements).unwrap();
        let Ok(Top::Array(spans)) = scan(&bytes, Encoding::MsgPack, LIMITS) else {
            panic!("an array");
        };
        assert_eq!(spans.len(), 3);
        for (span, want) in spans.into_iter().zip(elements) {
            let got: serde_json::Value = rmp_serde::from_slice(&bytes[span]).unwrap();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn json_shapes_and_elements() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let cases: Vec<(&str, String, Result<usize, &str>)> = vec![
            (
                "elements",
                r#" [ {"value": 10}, {"value": "a,]}"}, 3 ] "#.into(),
                Ok(3),
            ),
            ("empty array", "[]".into(), Ok(0)),
            ("too deep", deep, Err("nested deeper than 32")),
            ("truncated", r#"[{"value": 1"#.into(), Err("truncated")),
            ("unbalanced", "]".into(), Err("unbalanced")),
            ("stray", "{} {}".into(), Err("stray bytes")),
        ];
        for (name, text, want) in cases {
            match (scan(text.as_bytes(), Encoding::Json, LIMITS), want) {
                (Ok(Top::Array(spans)), Ok(n)) => {
                    assert_eq!(spans.len(), n, "{name}");
                    for span in spans {
                        let element: serde_json::Value =
                            serde_json::from_slice(&text.as_bytes()[span]).unwrap();
                        assert!(!element.is_null(), "{name}");
                    }
                }
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn size_limit() {
        let limits = Limits {
            max_bytes: 4,
            max_depth: 32,
        };
        let got = scan(&[0xa4, b'a', b'b', b'c', b'd'], Encoding::MsgPack, limits);
        assert!(matches!(
            got,
            Err(ScanError::TooLarge { size: 5, limit: 4 })
        ));
    }
}
