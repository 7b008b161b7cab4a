//! Request parameters as Prometheus's HTTP API reads them: from the query
//! string and, for POST, from a form body; timestamps as Unix seconds
//! (fractions allowed) or RFC 3339; durations as Prometheus durations or
//! seconds. Errors are worded like Prometheus's so clients show the same.

use panoptes_model::parse_duration_ms;

/// All parameters of a request, in order, repeated names kept (`match[]`).
#[derive(Clone, Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

/// A bad parameter: Prometheus answers these with `bad_data` and 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamError(pub String);

impl Params {
    /// Query string plus (for POST with a form content type) the body.
    pub fn parse(query: Option<&str>, form_body: Option<&[u8]>) -> Params {
        let mut out = Vec::new();
        if let Some(q) = query {
            out.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        if let Some(b) = form_body {
            out.extend(form_urlencoded::parse(b).into_owned());
        }
        Params(out)
    }

    /// The first value of a parameter (form values take part too).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of a repeated parameter.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A timestamp parameter in ms, or `default` when absent.
    pub fn time_ms(&self, name: &str, default: i64) -> Result<i64, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_time_ms(v).ok_or_else(|| {
                ParamError(format!(
                    "invalid parameter \"{name}\": cannot parse \"{v}\" to a valid timestamp"
                ))
            }),
        }
    }

    /// A required duration parameter in ms.
    pub fn duration_ms(&self, name: &str) -> Result<Option<i64>, ParamError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => parse_duration_param_ms(v).map(Some).ok_or_else(|| {
                ParamError(format!(
                    "invalid parameter \"{name}\": cannot parse \"{v}\" to a valid duration"
                ))
            }),
        }
    }
}

/// Unix seconds with an optional fraction, or RFC 3339.
pub fn parse_time_ms(v: &str) -> Option<i64> {
    if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() {
            return None;
        }
        // Prometheus clamps absurd values to its min/max time rather than
        // failing; keep within i64 ms.
        let ms = (secs * 1000.0).round();
        if ms.abs() > 9.2e18 {
            return None;
        }
        return Some(ms as i64);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A Prometheus duration (`15s`) or float seconds (`15`, `0.5`).
pub fn parse_duration_param_ms(v: &str) -> Option<i64> {
    if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs.abs() > 9.2e15 {
            return None;
        }
        return Some((secs * 1000.0).round() as i64);
    }
    parse_duration_ms(v).ok().map(|d| d as i64)
}

/// Unix seconds as Prometheus's JSON writes them: `1700000000.123`.
pub fn json_time(ms: i64) -> serde_json::Value {
    if ms % 1000 == 0 {
        serde_json::Value::from(ms / 1000)
    } else {
        serde_json::Number::from_f64(ms as f64 / 1000.0)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)
    }
}

/// A sample value as Prometheus's JSON writes it: a string in Go's
/// `FormatFloat(v, 'f', -1, 64)` form, or `NaN`, `+Inf`, `-Inf`.
pub fn json_value(v: f64) -> String {
    panoptes_model::format_api_float(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_prometheus_reads_them() {
        assert_eq!(parse_time_ms("1700000000"), Some(1_700_000_000_000));
        assert_eq!(parse_time_ms("1700000000.123"), Some(1_700_000_000_123));
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500)
        );
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn durations_as_prometheus_reads_them() {
        assert_eq!(parse_duration_param_ms("15s"), Some(15_000));
        assert_eq!(parse_duration_param_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_param_ms("0.5"), Some(500));
        assert_eq!(parse_duration_param_ms("x"), None);
    }

    #[test]
    fn json_numbers() {
        assert_eq!(json_time(1_700_000_000_000), serde_json::json!(1700000000));
        assert_eq!(json_time(1_700_000_000_123).to_string(), "1700000000.123");
        assert_eq!(json_value(1e6), "1000000");
        assert_eq!(json_value(0.1), "0.1");
        assert_eq!(json_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn repeated_and_form_params() {
        let p = Params::parse(
            Some("match[]=up&match[]=a%7Bb%3D%22c%22%7D"),
            Some(b"query=up+%3D%3D+1"),
        );
        assert_eq!(p.all("match[]"), ["up", "a{b=\"c\"}"]);
        assert_eq!(p.get("query"), Some("up == 1"));
    }
}
