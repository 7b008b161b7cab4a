//! The read contract between a store and its readers (PromQL, the query API,
//! rule stages). The TSDB implements it; the PromQL engine evaluates against
//! it; tests implement it over plain vectors.

use crate::{Labels, Matcher};

/// One selected series: its labels and its float samples in ascending time
/// order, `(timestamp_ms, value)`. Stale markers are included as
/// `stale_nan()` values so that PromQL can honour them.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Failures of a read.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage read failed: {0}")]
    Read(String),
    #[error("query canceled")]
    Canceled,
}

/// Series selection over a time range.
pub trait SeriesSelect: Send + Sync {
    /// All series matching every matcher that have samples in
    /// `[start_ms, end_ms]` (both inclusive), with those samples, sorted by
    /// labels.
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError>;

    /// Label names of series matching the matchers (all series if empty)
    /// with samples in the range, sorted and unique.
    fn label_names(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError>;

    /// Values of one label over matching series in the range, sorted and
    /// unique.
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError>;
}
