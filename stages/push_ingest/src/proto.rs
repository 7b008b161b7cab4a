//! The Prometheus client data model (`io.prometheus.client.MetricFamily`,
//! proto2) as hand-written prost messages, the length-delimited stream
//! format clients push, and the persistence file's messages.
//!
//! Pushed groups are held in this form, as the Pushgateway holds them: it
//! keeps help, type and per-metric structure (histogram buckets, summary
//! quantiles) that a flat sample list would lose.

use prost::Message;

/// `io.prometheus.client.MetricType` values.
pub mod metric_type {
    pub const COUNTER: i32 = 0;
    pub const GAUGE: i32 = 1;
    pub const SUMMARY: i32 = 2;
    pub const UNTYPED: i32 = 3;
    pub const HISTOGRAM: i32 = 4;
    pub const GAUGE_HISTOGRAM: i32 = 5;

    /// The enum name as Go prints it (`GAUGE`), for messages and the JSON API.
    pub fn name(t: i32) -> &'static str {
        match t {
            COUNTER => "COUNTER",
            GAUGE => "GAUGE",
            SUMMARY => "SUMMARY",
            UNTYPED => "UNTYPED",
            HISTOGRAM => "HISTOGRAM",
            GAUGE_HISTOGRAM => "GAUGE_HISTOGRAM",
            _ => "UNKNOWN",
        }
    }

    /// The `# TYPE` word of the text format.
    pub fn text_name(t: i32) -> &'static str {
        match t {
            COUNTER => "counter",
            GAUGE => "gauge",
            SUMMARY => "summary",
            HISTOGRAM | GAUGE_HISTOGRAM => "histogram",
            _ => "untyped",
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct LabelPair {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

impl LabelPair {
    pub fn new(name: &str, value: &str) -> Self {
        LabelPair {
            name: Some(name.to_string()),
            value: Some(value.to_string()),
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Counter {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Untyped {
    #[prost(double, optional, tag = "1")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Quantile {
    #[prost(double, optional, tag = "1")]
    pub quantile: Option<f64>,
    #[prost(double, optional, tag = "2")]
    pub value: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub quantile: Vec<Quantile>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    pub cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub upper_bound: Option<f64>,
    #[prost(double, optional, tag = "4")]
    pub cumulative_count_float: Option<f64>,
}

impl Bucket {
    /// The count, preferring the float form when set (float histograms).
    pub fn count(&self) -> f64 {
        match self.cumulative_count_float {
            Some(f) if f > 0.0 => f,
            _ => self.cumulative_count.unwrap_or(0) as f64,
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    pub sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    pub sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    pub bucket: Vec<Bucket>,
    #[prost(double, optional, tag = "4")]
    pub sample_count_float: Option<f64>,
}

impl Histogram {
    /// The count, preferring the float form when set (float histograms).
    pub fn count(&self) -> f64 {
        match self.sample_count_float {
            Some(f) if f > 0.0 => f,
            _ => self.sample_count.unwrap_or(0) as f64,
        }
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    #[prost(message, optional, tag = "2")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "3")]
    pub counter: Option<Counter>,
    #[prost(message, optional, tag = "4")]
    pub summary: Option<Summary>,
    #[prost(message, optional, tag = "5")]
    pub untyped: Option<Untyped>,
    #[prost(int64, optional, tag = "6")]
    pub timestamp_ms: Option<i64>,
    #[prost(message, optional, tag = "7")]
    pub histogram: Option<Histogram>,
}

impl Metric {
    /// The value of a counter, gauge or untyped metric (0 if unset), as
    /// Go's `getValue` reads it.
    pub fn simple_value(&self) -> f64 {
        if let Some(g) = &self.gauge {
            g.value.unwrap_or(0.0)
        } else if let Some(c) = &self.counter {
            c.value.unwrap_or(0.0)
        } else if let Some(u) = &self.untyped {
            u.value.unwrap_or(0.0)
        } else {
            0.0
        }
    }

    /// The protobuf text form Go prints in consistency errors
    /// (`label:<name:"job" value:"x" > gauge:<value:1 > `).
    pub fn debug_text(&self) -> String {
        let mut s = String::new();
        for l in &self.label {
            s.push_str(&format!(
                "label:<name:{:?} value:{:?} > ",
                l.name(),
                l.value()
            ));
        }
        let v = |name: &str, v: Option<f64>| match v {
            Some(x) => format!("{name}:<value:{} > ", fmt_go(x)),
            None => format!("{name}:<> "),
        };
        if let Some(g) = &self.gauge {
            s.push_str(&v("gauge", g.value));
        }
        if let Some(c) = &self.counter {
            s.push_str(&v("counter", c.value));
        }
        if let Some(u) = &self.untyped {
            s.push_str(&v("untyped", u.value));
        }
        if self.summary.is_some() {
            s.push_str("summary:<...> ");
        }
        if self.histogram.is_some() {
            s.push_str("histogram:<...> ");
        }
        if let Some(t) = self.timestamp_ms {
            s.push_str(&format!("timestamp_ms:{t} "));
        }
        s
    }
}

fn fmt_go(v: f64) -> String {
    let mut s = String::new();
    panoptes_exposition::format_float(&mut s, v);
    s
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricFamily {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub help: Option<String>,
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

impl MetricFamily {
    /// The type, COUNTER when unset (proto2 default of the enum's first value).
    pub fn metric_type(&self) -> i32 {
        self.r#type.unwrap_or(metric_type::COUNTER)
    }
}

/// A malformed protobuf push body.
#[derive(Debug, thiserror::Error)]
pub enum DelimitedError {
    #[error("invalid length prefix of message {index}")]
    Length { index: usize },
    #[error("message {index} is truncated: {len} bytes announced, {available} available")]
    Truncated {
        index: usize,
        len: usize,
        available: usize,
    },
    #[error("message {index} is not a valid MetricFamily: {source}")]
    Decode {
        index: usize,
        source: prost::DecodeError,
    },
}

/// Decodes a stream of varint-length-delimited `MetricFamily` messages, as
/// the Go client's `encoding=delimited` push bodies are. A later family with
/// the same name replaces an earlier one, as in the Pushgateway.
pub fn decode_delimited(mut body: &[u8]) -> Result<Vec<MetricFamily>, DelimitedError> {
    let mut out: Vec<MetricFamily> = Vec::new();
    let mut index = 0;
    while !body.is_empty() {
        let len = prost::encoding::decode_varint(&mut body)
            .map_err(|_| DelimitedError::Length { index })? as usize;
        if len > body.len() {
            return Err(DelimitedError::Truncated {
                index,
                len,
                available: body.len(),
            });
        }
        let mf = MetricFamily::decode(&body[..len])
            .map_err(|source| DelimitedError::Decode { index, source })?;
        body = &body[len..];
        if let Some(prev) = out.iter_mut().find(|f| f.name == mf.name) {
            *prev = mf;
        } else {
            out.push(mf);
        }
        index += 1;
    }
    Ok(out)
}

/// Encodes families as a delimited stream (tests and clients).
pub fn encode_delimited(families: &[MetricFamily]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        // Writing into a Vec cannot fail.
        let _ = f.encode_length_delimited(&mut out);
    }
    out
}

/// One family of one group in the persistence file.
#[derive(Clone, PartialEq, Message)]
pub struct PersistedFamily {
    #[prost(message, optional, tag = "1")]
    pub family: Option<MetricFamily>,
    /// When the push that set it happened, ms since the epoch.
    #[prost(int64, tag = "2")]
    pub pushed_at_ms: i64,
}

/// One group in the persistence file.
#[derive(Clone, PartialEq, Message)]
pub struct PersistedGroup {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub families: Vec<PersistedFamily>,
    /// Last change attempt (success or failure), for `expire_after`.
    #[prost(int64, tag = "3")]
    pub last_activity_ms: i64,
}

/// The persistence file: a magic-free, versioned protobuf message.
#[derive(Clone, PartialEq, Message)]
pub struct PersistedStore {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(message, repeated, tag = "2")]
    pub groups: Vec<PersistedGroup>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(name: &str, v: f64) -> MetricFamily {
        MetricFamily {
            name: Some(name.into()),
            help: Some("h".into()),
            r#type: Some(metric_type::GAUGE),
            metric: vec![Metric {
                label: vec![LabelPair::new("a", "b")],
                gauge: Some(Gauge { value: Some(v) }),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn delimited_round_trip_and_last_family_wins() {
        let body = encode_delimited(&[family("x", 1.0), family("y", 2.0), family("x", 3.0)]);
        let fams = decode_delimited(&body).unwrap();
        assert_eq!(fams.len(), 2);
        assert_eq!(fams[0].name(), "x");
        assert_eq!(fams[0].metric[0].simple_value(), 3.0);
        assert_eq!(fams[1].metric_type(), metric_type::GAUGE);
    }

    #[test]
    fn truncated_and_garbage_bodies_are_errors() {
        let body = encode_delimited(&[family("x", 1.0)]);
        let err = decode_delimited(&body[..body.len() - 2]).unwrap_err();
        assert!(
            matches!(err, DelimitedError::Truncated { index: 0, .. }),
            "{err}"
        );
        let err = decode_delimited(&[0x03, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(err, DelimitedError::Decode { .. }), "{err}");
    }
}
