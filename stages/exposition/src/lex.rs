//! Token parsers shared by both formats: metric and label names, quoted label
//! values with their escapes, HELP text escapes, and numbers with the exact
//! acceptance rules of Prometheus's scrape parser (Go's `strconv` semantics).
//!
//! These are nom parsers over `&str` (each line is UTF-8-checked once before
//! it is parsed). Names are scanned with a byte class table and quoted
//! strings with `memchr`, and values are borrowed from the body unless an
//! escape forces a copy.

use std::borrow::Cow;

use memchr::memchr2;

use crate::error::{expected, invalid, Res};

const NAME_START: u8 = 1;
const NAME_CONT: u8 = 2;
const LABEL_START: u8 = 4;
const LABEL_CONT: u8 = 8;

/// Byte classes: metric names are `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names
/// `[a-zA-Z_][a-zA-Z0-9_]*`.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_';
        let digit = b.is_ascii_digit();
        let mut v = 0;
        if alpha || b == b':' {
            v |= NAME_START | NAME_CONT;
        }
        if digit {
            v |= NAME_CONT | LABEL_CONT;
        }
        if alpha {
            v |= LABEL_START | LABEL_CONT;
        }
        t[c] = v;
        c += 1;
    }
    t
};

fn ident<'a>(i: &'a str, start: u8, cont: u8, what: &'static str) -> Res<'a, &'a str> {
    let b = i.as_bytes();
    match b.first() {
        Some(&c) if CLASS[c as usize] & start != 0 => {
            let n = b[1..]
                .iter()
                .position(|&c| CLASS[c as usize] & cont == 0)
                .map_or(b.len(), |p| p + 1);
            // The bytes up to `n` are ASCII, so `n` is a char boundary.
            Ok((&i[n..], &i[..n]))
        }
        _ => expected(i, what),
    }
}

/// A metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub(crate) fn metric_name<'a>(i: &'a str, what: &'static str) -> Res<'a, &'a str> {
    ident(i, NAME_START, NAME_CONT, what)
}

/// Length of the metric name at the start of `b` (0 if there is none).
pub(crate) fn metric_name_len(b: &[u8]) -> usize {
    match b.first() {
        Some(&c) if CLASS[c as usize] & NAME_START != 0 => {
            1 + b[1..]
                .iter()
                .position(|&c| CLASS[c as usize] & NAME_CONT == 0)
                .unwrap_or(b.len() - 1)
        }
        _ => 0,
    }
}

/// A label name, `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn label_name<'a>(i: &'a str, what: &'static str) -> Res<'a, &'a str> {
    ident(i, LABEL_START, LABEL_CONT, what)
}

/// Whether `s` is a valid metric name as a whole.
pub fn is_valid_metric_name(s: &str) -> bool {
    matches!(metric_name(s, ""), Ok(("", _)))
}

/// Whether `s` is a valid label name as a whole.
pub fn is_valid_label_name(s: &str) -> bool {
    matches!(label_name(s, ""), Ok(("", _)))
}

/// The first `"` or `\\` in `b`.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    find_either(b, b'"', b'\\')
}

/// The first `x` or `y` in `b`. The strings searched (label values, label
/// sets) are mostly short, where scanning eight bytes at a time in a
/// register beats `memchr`'s vector setup; long ones go to `memchr2`.
pub(crate) fn find_either(b: &[u8], x: u8, y: u8) -> Option<usize> {
    const SHORT: usize = 64;
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let head = &b[..b.len().min(SHORT)];
    let mut chunks = head.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word_x = u64::from_le_bytes(word);
        // A byte of `word ^ pattern` is zero where the word has the byte;
        // the lowest flagged byte is exact (borrows only run upwards).
        let q = word_x ^ (ONES * u64::from(x));
        let s = word_x ^ (ONES * u64::from(y));
        let found = (q.wrapping_sub(ONES) & !q | s.wrapping_sub(ONES) & !s) & HIGHS;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    if let Some(i) = chunks.remainder().iter().position(|&c| c == x || c == y) {
        return Some(offset + i);
    }
    if b.len() > SHORT {
        memchr2(x, y, &b[SHORT..]).map(|n| n + SHORT)
    } else {
        None
    }
}

/// A double-quoted label value with the escapes `\\`, `\"` and `\n` (the
/// only ones the text format's reference parser and the OpenMetrics grammar
/// allow). Borrowed from the input unless it contains an escape.
pub(crate) fn quoted_value(i: &str) -> Res<'_, Cow<'_, str>> {
    if !i.starts_with('"') {
        return expected(i, "a label value in double quotes");
    }
    let body = &i[1..];
    let Some(n) = quote_or_backslash(body.as_bytes()) else {
        return expected(&i[i.len()..], "'\"' closing the label value");
    };
    if body.as_bytes()[n] == b'"' {
        return Ok((&body[n + 1..], Cow::Borrowed(&body[..n])));
    }
    // Slow path: at least one escape, so the value is rebuilt.
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    let mut n = n;
    loop {
        out.push_str(&rest[..n]);
        let b = rest.as_bytes();
        if b[n] == b'"' {
            return Ok((&rest[n + 1..], Cow::Owned(out)));
        }
        // b[n] is a backslash.
        match b.get(n + 1) {
            Some(b'\\') => out.push('\\'),
            Some(b'"') => out.push('"'),
            Some(b'n') => out.push('\n'),
            Some(_) => {
                let seq: String = rest[n..].chars().take(2).collect();
                return invalid(
                    &rest[n..],
                    format!(
                        "invalid escape sequence {seq:?} in label value; \
                         only \\\\, \\\" and \\n are allowed"
                    ),
                );
            }
            None => return expected(&rest[rest.len()..], "'\"' closing the label value"),
        }
        rest = &rest[n + 2..];
        match quote_or_backslash(rest.as_bytes()) {
            Some(m) => n = m,
            None => return expected(&rest[rest.len()..], "'\"' closing the label value"),
        }
    }
}

/// Unescapes HELP text the way Prometheus's scrape parsers do: `\\` and
/// `\n` (and `\"` in OpenMetrics); any other backslash is kept as written.
pub(crate) fn unescape_help(text: &str, openmetrics: bool) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let mut lookahead = chars.clone();
        match lookahead.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if openmetrics => out.push('"'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars = lookahead;
    }
    Cow::Owned(out)
}

/// Why a number token was rejected (turned into a message by the caller,
/// which knows whether it was a value or a timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberError {
    Syntax,
    Unsupported,
    Range,
}

/// Parses a float like Prometheus does: Go's `strconv.ParseFloat` syntax
/// (decimal with optional exponent; `Inf`/`Infinity` with an optional sign
/// and `NaN`, case-insensitively) minus hexadecimal floats and underscores,
/// and an out-of-range literal such as `1e400` is an error, not infinity.
pub(crate) fn parse_float(tok: &str) -> Result<f64, NumberError> {
    let b = tok.as_bytes();
    // Fast path for the most common values, small non-negative integers
    // (counters, bucket counts): exact below 2^53, so no rounding question.
    if !b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_digit) {
        let n = b.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        return Ok(n as f64);
    }
    let unsigned = match b.first() {
        Some(b'+' | b'-') => &b[1..],
        _ => b,
    };
    match unsigned.first() {
        Some(c) if c.is_ascii_digit() || *c == b'.' => {
            if b.iter().any(|c| matches!(c, b'_' | b'p' | b'P')) {
                return Err(NumberError::Unsupported);
            }
            // Rust's decimal grammar is Go's (digits, optional fraction,
            // optional exponent); hexadecimal is rejected by both here.
            match tok.parse::<f64>() {
                Ok(v) if v.is_infinite() => Err(NumberError::Range),
                Ok(v) => Ok(v),
                Err(_) => Err(NumberError::Syntax),
            }
        }
        _ => {
            let negative = b.first() == Some(&b'-');
            let signed = unsigned.len() != b.len();
            if unsigned.eq_ignore_ascii_case(b"inf") || unsigned.eq_ignore_ascii_case(b"infinity") {
                Ok(if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                })
            } else if !signed && unsigned.eq_ignore_ascii_case(b"nan") {
                Ok(f64::NAN)
            } else if b.iter().any(|c| matches!(c, b'_' | b'p' | b'P')) {
                Err(NumberError::Unsupported)
            } else {
                Err(NumberError::Syntax)
            }
        }
    }
}

/// The explanation of a rejected number, for error messages. `kind` names
/// the token ("sample value", "timestamp", …).
pub(crate) fn number_message(kind: &str, tok: &str, err: NumberError) -> String {
    let example = if kind.contains("timestamp") {
        "a float number of seconds such as 1700000000.123"
    } else {
        "a float such as 1, -2.5e-3, NaN, +Inf or -Inf"
    };
    let hint = if tok.ends_with('\r') {
        " (lines must end in \\n, not \\r\\n)"
    } else {
        ""
    };
    match err {
        NumberError::Syntax => format!("invalid {kind} {tok:?}: expected {example}{hint}"),
        NumberError::Unsupported => format!(
            "invalid {kind} {tok:?}: '_' and hexadecimal floats ('p' exponents) are not supported"
        ),
        NumberError::Range => format!("{kind} {tok:?} is out of the range of a 64-bit float"),
    }
}

/// The text format's timestamp: integer milliseconds, digits only (as in
/// Prometheus's scrape parser, which accepts no sign).
pub(crate) fn parse_int_timestamp(tok: &str) -> Result<i64, NumberError> {
    if tok.is_empty() {
        return Err(NumberError::Syntax);
    }
    let mut n: i64 = 0;
    let mut overflow = false;
    for c in tok.bytes() {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return Err(NumberError::Syntax);
        }
        // Keep validating the rest after an overflow: a non-digit later on
        // is a syntax error, as with the standard parser.
        match n.checked_mul(10).and_then(|m| m.checked_add(i64::from(d))) {
            Some(m) => n = m,
            None => overflow = true,
        }
    }
    if overflow {
        Err(NumberError::Range)
    } else {
        Ok(n)
    }
}

/// Converts an OpenMetrics timestamp (float seconds) to milliseconds,
/// truncating like Prometheus (`int64(ts * 1000)`).
pub(crate) fn seconds_to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_follow_go_parse_float() {
        for (tok, want) in [
            ("1", 1.0),
            ("-2.5e-3", -2.5e-3),
            ("1.", 1.0),
            (".5", 0.5),
            ("+7", 7.0),
            ("1E+06", 1e6),
            ("+Inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("Infinity", f64::INFINITY),
            ("-INFINITY", f64::NEG_INFINITY),
        ] {
            assert_eq!(parse_float(tok), Ok(want), "{tok}");
        }
        assert!(parse_float("NaN").is_ok_and(f64::is_nan));
        assert!(parse_float("nan").is_ok_and(f64::is_nan));
        for tok in [
            "", "+NaN", "-nan", "1z", "true", "0x1", ".", "1e", "--1", "Infx", "in",
        ] {
            assert_eq!(parse_float(tok), Err(NumberError::Syntax), "{tok}");
        }
        for tok in ["1_2", "0x1p-3", "0x1P-3"] {
            assert_eq!(parse_float(tok), Err(NumberError::Unsupported), "{tok}");
        }
        assert_eq!(parse_float("1e400"), Err(NumberError::Range));
        for tok in [
            "0",
            "7",
            "00012",
            "999999999999999",
            "9999999999999999",
            "123456789012345678",
        ] {
            assert_eq!(parse_float(tok), Ok(tok.parse::<f64>().unwrap()), "{tok}");
        }
        assert_eq!(parse_float("1e-400"), Ok(0.0));
    }

    #[test]
    fn quote_scan_finds_the_first_quote_or_backslash() {
        for len in 0..150 {
            for pos in 0..=len {
                for c in [b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    // Bytes that differ from the targets by one bit or by
                    // borrow-prone values must not be taken for them.
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = [b'a', b'#', b'!', 0x80, 0xff, b'[', 0x00][i % 7];
                    }
                    let want = if pos < len {
                        b[pos] = c;
                        Some(pos)
                    } else {
                        None
                    };
                    assert_eq!(quote_or_backslash(&b), want, "len {len} pos {pos}");
                }
            }
        }
    }

    #[test]
    fn quoted_values_borrow_unless_escaped() {
        let (rest, v) = quoted_value("\"plain\"} 1").unwrap();
        assert!(matches!(v, Cow::Borrowed("plain")));
        assert_eq!(rest, "} 1");
        let (rest, v) = quoted_value(r#""a\"b\\c\nd"}"#).unwrap();
        assert_eq!(v, "a\"b\\c\nd");
        assert_eq!(rest, "}");
        assert!(quoted_value(r#""bad \t""#).is_err());
        assert!(quoted_value(r#""open"#).is_err());
        assert!(quoted_value(r#""ends with \"#).is_err());
    }

    #[test]
    fn help_unescaping_is_lenient_like_prometheus() {
        assert_eq!(unescape_help(r"a\\b\nc", false), "a\\b\nc");
        assert_eq!(unescape_help(r#"C:\dir \"x\""#, false), r#"C:\dir \"x\""#);
        assert_eq!(unescape_help(r#"\"x\""#, true), "\"x\"");
        assert_eq!(unescape_help("trailing \\", false), "trailing \\");
    }

    #[test]
    fn names() {
        assert!(is_valid_metric_name("a:b_c9"));
        assert!(!is_valid_metric_name("9a"));
        assert!(is_valid_label_name("_x1"));
        assert!(!is_valid_label_name("a:b"));
        assert_eq!(metric_name("up{", "name").unwrap(), ("{", "up"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_int_timestamp("1712345678901"), Ok(1_712_345_678_901));
        assert_eq!(parse_int_timestamp("-1"), Err(NumberError::Syntax));
        assert_eq!(
            parse_int_timestamp("99999999999999999999"),
            Err(NumberError::Range)
        );
        assert_eq!(seconds_to_ms(1.5), 1500);
        assert_eq!(seconds_to_ms(1726839814.2239082), 1_726_839_814_223);
    }
}
