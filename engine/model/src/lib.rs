//! The shared vocabulary of Panoptes: label sets, samples, metadata, label
//! matchers, alerts, and the storage read contract that PromQL evaluates
//! against. Every stage crate depends on this small crate (and nothing heavy),
//! so the TSDB, the PromQL engine and the ingest stages agree on types without
//! depending on each other.

pub mod alert;
pub mod duration;
pub mod format;
pub mod goregex;
pub mod labels;
pub mod matcher;
pub mod sample;
pub mod storage;
pub mod targets;

pub use alert::{Alert, AlertBatch, AlertState};
pub use duration::{
    format_duration_ms, parse_duration, parse_duration_ms, DurationError, PromDuration,
    DURATION_PATTERN,
};
pub use format::{format_api_float, format_float, write_api_float, write_float};
pub use labels::{escape_label_value, Label, Labels, LabelsBuilder, Sym, METRIC_NAME};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use sample::{
    is_stale_nan, stale_nan, MetricMetadata, MetricType, Sample, SampleBatch, STALE_NAN_BITS,
};
pub use storage::{
    keep_latest, keep_latest_of_each, Series, SeriesSelect, StorageError, StoreStats,
};
pub use targets::{TargetGroup, TargetHealth, TargetSet, TargetStatus};
