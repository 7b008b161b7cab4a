//! Samples and the batches of them that travel on `Samples` edges.

use std::sync::Arc;

use crate::labels::Labels;

/// Prometheus's staleness marker: a NaN with this exact bit pattern means
/// "this series ended here". Ordinary NaNs are values like any other.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether a value is the staleness marker (and not just any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One float sample of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub value: f64,
}

/// The metric types of the text and OpenMetrics formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    #[default]
    Unknown,
}

impl MetricType {
    /// The name used in Prometheus's metadata API (`counter`, `gauge`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }

    /// Parses a `# TYPE` word (case-sensitive, as the formats require).
    /// `untyped` (text format) maps to `Unknown`.
    pub fn parse(s: &str) -> Option<MetricType> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "unknown" | "untyped" => MetricType::Unknown,
            _ => return None,
        })
    }
}

/// Metadata of one metric family, as carried by `# HELP`, `# TYPE`, `# UNIT`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MetricMetadata {
    pub metric_family: String,
    pub metric_type: MetricType,
    pub help: String,
    pub unit: String,
}

/// One message on a `Samples` edge: everything one scrape, push or rule
/// evaluation produced. Batches, not single samples, cross channels.
#[derive(Clone, Debug, Default)]
pub struct SampleBatch {
    /// Who produced it (stage id, and target or group where relevant), for
    /// logs, `tap` and drop accounting.
    pub source: Arc<str>,
    pub samples: Vec<Sample>,
    /// Metadata of the families in this batch (may be empty).
    pub metadata: Vec<MetricMetadata>,
}

impl SampleBatch {
    pub fn new(source: impl Into<Arc<str>>) -> Self {
        SampleBatch {
            source: source.into(),
            samples: Vec::new(),
            metadata: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_nan_is_distinguished_from_nan() {
        assert!(is_stale_nan(stale_nan()));
        assert!(stale_nan().is_nan());
        assert!(!is_stale_nan(f64::NAN));
    }
}
