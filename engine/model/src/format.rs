//! Float formatting exactly as Prometheus prints sample values: in the text
//! exposition format (Go's `strconv.FormatFloat(v, 'g', -1, 64)` as expfmt
//! writes it: shortest round-tripping digits, exponent form below 1e-4 and
//! from 1e6) and in its HTTP API (`FormatFloat(v, 'f', -1, 64)`).

/// Formats a value as the text exposition format writes it: Go's
/// `FormatFloat(v, 'g', -1, 64)`, with expfmt's spellings of the specials
/// (`NaN`, `+Inf`, `-Inf`) and both zeros as `0`.
pub fn format_float(v: f64) -> String {
    let mut out = String::new();
    write_float(&mut out, v);
    out
}

/// Appends [`format_float`]'s output to a string without allocating.
pub fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if v == 0.0 {
        // expfmt writes both zeros as "0".
        out.push('0');
        return;
    }
    // Integers below 1e6 are the common case (counters): print directly.
    if v.fract() == 0.0 && v.abs() < 1e6 {
        let _ = std::fmt::Write::write_fmt(out, format_args!("{}", v as i64));
        return;
    }
    // Rust's `{:e}` gives the shortest round-tripping digits.
    let sci = format!("{v:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    if neg {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = std::fmt::Write::write_fmt(out, format_args!("{:02}", exp.abs()));
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
}

/// Formats a value as Prometheus's HTTP API writes sample values: Go's
/// `FormatFloat(v, 'f', -1, 64)`, switching to `'e'` below 1e-6 and from
/// 1e21 (as its JSON encoder does), and `NaN`, `+Inf`, `-Inf`.
pub fn format_api_float(v: f64) -> String {
    let mut out = Vec::with_capacity(24);
    write_api_float(&mut out, v);
    // Only ASCII digits, signs, '.', 'e', "NaN" and "Inf" are written.
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_api_float`] appended to a byte buffer, without a temporary
/// string in the common case (a query answer writes one per point).
pub fn write_api_float(out: &mut Vec<u8>, v: f64) {
    use std::io::Write as _;
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v != 0.0 && !(1e-6..1e21).contains(&v.abs()) {
        // Go's 'e' with precision -1: shortest digits, two-digit exponent.
        let sci = format!("{v:e}");
        let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{mant}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
    } else if v != 0.0 && v.fract() == 0.0 && v.abs() < INTEGRAL_EXACT {
        // Whole numbers (counters, byte counts) print as the integer they
        // are, which is what Go prints too; itoa skips the float formatter.
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        // Rust's Display prints the shortest round-tripping digits and never
        // an exponent: Go's 'f' with precision -1.
        let _ = write!(out, "{v}");
    }
}

/// Below 2^53 every whole f64 converts to i64 and back exactly.
const INTEGRAL_EXACT: f64 = 9_007_199_254_740_992.0;

#[cfg(test)]
mod tests {
    use super::format_float as f;

    #[test]
    fn api_format_like_prometheus_json() {
        use super::format_api_float as a;
        assert_eq!(a(1e6), "1000000");
        assert_eq!(a(0.000001), "0.000001");
        assert_eq!(a(1.5e-7), "1.5e-07");
        assert_eq!(a(1e21), "1e+21");
        assert_eq!(a(-2.5e300), "-2.5e+300");
        assert_eq!(a(123456789012345680000.0), "123456789012345680000");
        assert_eq!(a(-0.0), "-0");
        assert_eq!(a(f64::INFINITY), "+Inf");
        // Whole numbers take the integer path; compare with Display around
        // its edges.
        for v in [
            1.0,
            -1.0,
            16_530_186_240.0,
            -9_007_199_254_740_991.0,
            9_007_199_254_740_991.0,
            9_007_199_254_740_992.0,
            9_007_199_254_740_994.0,
            1e20,
            0.5,
            -0.0,
            0.0,
        ] {
            assert_eq!(a(v), format!("{v}"), "{v}");
        }
    }

    #[test]
    fn matches_go_g_format() {
        assert_eq!(f(1.0), "1");
        assert_eq!(f(0.5), "0.5");
        assert_eq!(f(-2.25), "-2.25");
        assert_eq!(f(1e6), "1e+06");
        assert_eq!(f(123456.0), "123456");
        assert_eq!(f(1234567.0), "1.234567e+06");
        assert_eq!(f(0.0001), "0.0001");
        assert_eq!(f(0.00001), "1e-05");
        assert_eq!(f(1.5e-7), "1.5e-07");
        assert_eq!(f(2.75), "2.75");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1.7976931348623157e308), "1.7976931348623157e+308");
        assert_eq!(f(f64::NAN), "NaN");
        assert_eq!(f(f64::INFINITY), "+Inf");
        assert_eq!(f(f64::NEG_INFINITY), "-Inf");
        assert_eq!(f(-0.0), "0");
        assert_eq!(f(100.5), "100.5");
        assert_eq!(f(999999.5), "999999.5");
    }
}
