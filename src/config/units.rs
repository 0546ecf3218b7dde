//! Human units in the config — byte sizes (`32MiB`) and durations (`250ms`) — parsed with
//! errors that say which forms and units are accepted.

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;
use std::fmt;
use std::time::Duration;

/// What a byte count looks like, for messages ("expected …").
pub const SIZE_EXAMPLES: &str = "a size in bytes, like 33554432 or 32MiB";
/// The units a byte count accepts.
pub const SIZE_UNITS: &str =
    "units: B; KiB, MiB, GiB, TiB = 1024-based; KB, MB, GB, TB = 1000-based";
/// What a duration looks like, for messages ("expected …").
pub const DURATION_EXAMPLES: &str = "a duration like 250ms, 5s, 2m, 1h or 7d";
/// The units a duration accepts (humantime's, which `promptgate` has always parsed).
pub const DURATION_UNITS: &str = "units: ns, us, ms, s, m, h, d, w; combine as 1h 30m";

/// Parses a byte count: a whole number (`33554432`, `1024B`) or a number with a unit
/// (`32MiB`, `512 KiB`, `1.5GB`; units are case-insensitive). Returns bytes, or why not.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let not_a_size = || format!("{text:?} is not a size: expected {SIZE_EXAMPLES} ({SIZE_UNITS})");
    if number.is_empty() {
        return Err(not_a_size());
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{text:?} is not a size: unknown unit {unit:?}; expected {SIZE_EXAMPLES} ({SIZE_UNITS})"
            ))
        }
    };
    let not_a_size = || format!("{text:?} is not a size: expected {SIZE_EXAMPLES} ({SIZE_UNITS})");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') {
        return Err(not_a_size());
    }
    // Exact arithmetic: 1.5KiB is 1536 bytes; 1.3B is refused rather than rounded.
    let scale = 10u128
        .checked_pow(fraction.len() as u32)
        .ok_or_else(not_a_size)?;
    let digits: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| not_a_size())?;
    let scaled = digits
        .checked_mul(u128::from(multiplier))
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if scaled % scale != 0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    u64::try_from(scaled / scale).map_err(|_| format!("{text:?} is too large"))
}

/// Parses a duration (`250ms`, `5s`, `2m`, `1h 30m`, `7d`), or says which units are accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| duration_message(Some(text), &reason(&e)))
}

fn reason(e: &humantime::DurationError) -> String {
    match e {
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            "it has no unit".into()
        }
        humantime::DurationError::UnknownUnit { unit, .. } => format!("unknown unit {unit:?}"),
        humantime::DurationError::NumberOverflow => "it is too large".into(),
        humantime::DurationError::Empty => "it is empty".into(),
        _ => "it is not a number followed by a unit".into(),
    }
}

/// The message for a value that is not a duration: `input` (when known) and why not.
pub fn duration_message(input: Option<&str>, reason: &str) -> String {
    match input {
        Some(input) => format!(
            "{input:?} is not a duration ({reason}); expected {DURATION_EXAMPLES} ({DURATION_UNITS})"
        ),
        None => format!("not a duration ({reason}); expected {DURATION_EXAMPLES} ({DURATION_UNITS})"),
    }
}

/// `#[serde(deserialize_with = "units::bytes")]`: a byte count as a number or a human size.
pub fn bytes<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let n = deserializer.deserialize_any(BytesVisitor)?;
    T::try_from(n).map_err(|_| de::Error::custom(format!("{n} bytes is too large")))
}

struct BytesVisitor;

impl Visitor<'_> for BytesVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SIZE_EXAMPLES)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(format!("{v} is negative; expected {SIZE_EXAMPLES}")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // YAML reads `1e6` as a float; accept it when it is a whole, representable count.
        if v.fract() == 0.0 && (0.0..=9.0e15).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::custom(format!(
                "{v} is not a whole number of bytes; expected {SIZE_EXAMPLES}"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_bytes(v).map_err(E::custom)
    }
}

/// `#[serde(with = "units::duration")]`: a duration written as `5s`, shown the same way.
pub mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// `#[serde(default, with = "units::option_duration")]`: an optional duration.
pub mod option_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_option(OptionDurationVisitor)
    }

    struct OptionDurationVisitor;

    impl<'de> Visitor<'de> for OptionDurationVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(DURATION_EXAMPLES)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            duration::deserialize(d).map(Some)
        }
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(DURATION_EXAMPLES)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "{v} has no unit; expected {DURATION_EXAMPLES} ({DURATION_UNITS}), e.g. {v}s"
        )))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(duration_message(
            Some(&v.to_string()),
            "it is negative",
        )))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(duration_message(
            Some(&v.to_string()),
            "it has no unit",
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        for (text, bytes) in [
            ("33554432", 33554432),
            ("1024B", 1024),
            ("32MiB", 32 << 20),
            ("32 MiB", 32 << 20),
            ("32mib", 32 << 20),
            ("512KiB", 512 << 10),
            ("1GB", 1_000_000_000),
            ("1.5KiB", 1536),
            ("2TiB", 2 << 40),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for (text, needle) in [
            ("32M", "unknown unit \"M\""),
            ("MiB", "not a size"),
            ("1.3B", "whole number of bytes"),
            ("1.2.3MiB", "not a size"),
            ("99999999999TiB", "too large"),
            ("", "not a size"),
        ] {
            let err = parse_bytes(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(parse_bytes("32X").unwrap_err().contains("KiB, MiB"));
        assert!(parse_bytes("32X").unwrap_err().contains("32MiB"));
    }

    #[test]
    fn durations_name_the_accepted_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        let err = parse_duration("5x").unwrap_err();
        assert!(err.contains("unknown unit \"x\""), "{err}");
        assert!(err.contains("units: ns, us, ms, s, m, h, d"), "{err}");
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
    }
}
