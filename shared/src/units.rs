//! Quantities as operators write them. Everything is converted to one
//! canonical unit per dimension as soon as it is read: ratios for
//! percentages (`70%` is 0.7), seconds for times (`500ms` is 0.5), plain
//! numbers for counts. Rules and samples then compare like with like.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The unit a number is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Percent: 70 means 70 %.
    Percent,
    /// Ratio: 0.7 means 70 %.
    Ratio,
    /// Milliseconds.
    Ms,
    /// Seconds.
    Seconds,
    /// A plain count (instances, messages, requests).
    Count,
}

/// What a canonical value measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// A fraction of a whole, canonical as a ratio (0.7 = 70 %).
    Ratio,
    /// A time, canonical in seconds.
    Time,
    /// A plain number.
    Count,
}

impl Unit {
    /// Every unit's name as accepted in files and configs.
    pub const NAMES: &'static str = "percent, ratio, ms, seconds, count";

    /// Parses a unit name (`percent`, `ratio`, `ms`, `seconds`/`s`, `count`).
    pub fn from_name(name: &str) -> Option<Unit> {
        Some(match name {
            "percent" | "%" => Unit::Percent,
            "ratio" => Unit::Ratio,
            "ms" | "millis" | "milliseconds" => Unit::Ms,
            "s" | "seconds" | "secs" => Unit::Seconds,
            "count" => Unit::Count,
            _ => return None,
        })
    }

    /// The dimension this unit measures.
    pub fn dimension(self) -> Dimension {
        match self {
            Unit::Percent | Unit::Ratio => Dimension::Ratio,
            Unit::Ms | Unit::Seconds => Dimension::Time,
            Unit::Count => Dimension::Count,
        }
    }

    /// Converts a number written in this unit into the canonical unit.
    pub fn to_canonical(self, value: f64) -> f64 {
        match self {
            Unit::Percent => value / 100.0,
            Unit::Ms => value / 1000.0,
            Unit::Ratio | Unit::Seconds | Unit::Count => value,
        }
    }
}

impl Dimension {
    /// Formats a canonical value the way an operator would write it.
    pub fn format(self, canonical: f64) -> String {
        match self {
            Dimension::Ratio => format!("{}%", trim(canonical * 100.0)),
            Dimension::Time if canonical.abs() < 1.0 => format!("{}ms", trim(canonical * 1000.0)),
            Dimension::Time => format!("{}s", trim(canonical)),
            Dimension::Count => trim(canonical),
        }
    }
}

/// Prints at most two decimals and no trailing zeros: 70, 70.5, 0.25.
fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// A quantity that could not be read.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuantityError {
    /// The text is not a number with an optional unit.
    #[error("expected a number with an optional unit (70%, 0.7, 500ms, 2s), found {0:?}")]
    Malformed(String),
    /// The number is NaN or infinite.
    #[error("{0:?} is not a finite number")]
    NotFinite(String),
    /// A duration was not understood.
    #[error(
        "expected a duration such as \"2 minutes\", \"90 seconds\", \"1 hour\" or \"30s\", found {0:?}"
    )]
    Duration(String),
}

/// Reads `70%`, `0.7`, `500ms`, `2s`, `1000` into (number, unit). A bare
/// number has unit `None`: its meaning depends on where it is used.
pub fn parse_quantity(text: &str) -> Result<(f64, Option<Unit>), QuantityError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(text.len());
    // "1e3ms" is fine, but a trailing 'e' belongs to no number: let parse decide.
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| QuantityError::Malformed(text.to_string()))?;
    if !value.is_finite() {
        return Err(QuantityError::NotFinite(text.to_string()));
    }
    let unit = match unit.trim() {
        "" => None,
        "%" => Some(Unit::Percent),
        "ms" => Some(Unit::Ms),
        "s" => Some(Unit::Seconds),
        _ => return Err(QuantityError::Malformed(text.to_string())),
    };
    Ok((value, unit))
}

/// Whole seconds as milliseconds of event time, saturating rather than
/// overflowing for absurd settings.
pub fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Reads a duration into whole seconds: `2 minutes`, `1 minute`, `90 seconds`,
/// `1 hour`, `30s`, `5m`, `1h`, `1.5 minutes`.
pub fn parse_duration_secs(text: &str) -> Result<u64, QuantityError> {
    let bad = || QuantityError::Duration(text.to_string());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "" if value == 0.0 => 1.0,
        _ => return Err(bad()),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 || secs.fract() != 0.0 {
        return Err(bad());
    }
    Ok(secs as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        let cases: &[(&str, Option<(f64, Option<Unit>)>)] = &[
            ("70%", Some((70.0, Some(Unit::Percent)))),
            ("0.7", Some((0.7, None))),
            ("500ms", Some((500.0, Some(Unit::Ms)))),
            ("2s", Some((2.0, Some(Unit::Seconds)))),
            ("1000", Some((1000.0, None))),
            (" 12.5 % ", Some((12.5, Some(Unit::Percent)))),
            ("seventy", None),
            ("70 percent", None),
            ("", None),
            ("NaN", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_quantity(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn parses_durations() {
        let cases: &[(&str, Option<u64>)] = &[
            ("2 minutes", Some(120)),
            ("1 minute", Some(60)),
            ("90 seconds", Some(90)),
            ("1 hour", Some(3600)),
            ("30s", Some(30)),
            ("5m", Some(300)),
            ("1.5 minutes", Some(90)),
            ("0", Some(0)),
            ("2 fortnights", None),
            ("minutes", None),
            ("0.5 seconds", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration_secs(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn converts_and_formats() {
        assert_eq!(Unit::Percent.to_canonical(70.0), 0.7);
        assert_eq!(Unit::Ms.to_canonical(500.0), 0.5);
        assert_eq!(Dimension::Ratio.format(0.7), "70%");
        assert_eq!(Dimension::Ratio.format(0.8456), "84.56%");
        assert_eq!(Dimension::Time.format(0.5), "500ms");
        assert_eq!(Dimension::Time.format(2.0), "2s");
        assert_eq!(Dimension::Count.format(1000.0), "1000");
    }
}
