//! Prometheus-style durations (`1h30m`, `5m`, `10s`, `250ms`, `1y`, `2w`), as
//! every config section and PromQL use them. Units: `y` (365 d), `w`, `d`,
//! `h`, `m`, `s`, `ms`, each at most once, largest first.

use std::fmt;
use std::time::Duration;

/// A duration string could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. 15s, 1m30s, 250ms, 2h, 1d, 1w, 1y)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration into milliseconds. `0` alone is allowed.
pub fn parse_duration_ms(s: &str) -> Result<u64, DurationError> {
    let err = |reason| DurationError {
        input: s.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(err("empty string"));
    }
    if s == "0" {
        return Ok(0);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen: units must strictly descend.
    let mut last_unit: Option<usize> = None;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(err("expected a number"));
        }
        let n: u64 = s[start..i].parse().map_err(|_| err("number too large"))?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[ustart..i];
        let idx = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(|| {
            err(if unit.is_empty() {
                "missing unit"
            } else {
                "unknown unit"
            })
        })?;
        if last_unit.is_some_and(|l| idx <= l) {
            return Err(err("units must appear once each, largest first"));
        }
        last_unit = Some(idx);
        total = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("duration too large"))?;
    }
    Ok(total)
}

/// Parses a Prometheus duration.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    parse_duration_ms(s).map(Duration::from_millis)
}

/// Formats milliseconds the way Prometheus prints durations (`1h30m`, `0s`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut rest = ms;
    let mut out = String::new();
    for (unit, size) in UNITS {
        // Prometheus prints weeks and years only when they divide exactly.
        if (unit == "y" || unit == "w") && !rest.is_multiple_of(size) {
            continue;
        }
        let n = rest / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            rest -= n * size;
        }
    }
    out
}

/// A `Duration` displayed in Prometheus style.
pub struct PromDuration(pub Duration);

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration_ms(self.0.as_millis() as u64))
    }
}

/// The JSON Schema `pattern` a duration string must match.
pub const DURATION_PATTERN: &str =
    "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("10s53ms").unwrap(), 10_053);
        assert_eq!(parse_duration_ms("1y").unwrap(), 31_536_000_000);
        assert_eq!(parse_duration_ms("0").unwrap(), 0);
        assert_eq!(parse_duration_ms("0s").unwrap(), 0);
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in ["", "5", "m", "5x", "1m1h", "1s1s", "-5m", "1.5h"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn formats_like_prometheus() {
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(15_000), "15s");
        assert_eq!(format_duration_ms(604_800_000), "1w");
        assert_eq!(format_duration_ms(86_400_000 * 8), "8d");
        assert_eq!(format_duration_ms(0), "0s");
    }
}
