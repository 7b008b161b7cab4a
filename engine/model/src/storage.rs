//! The read contract between a store and its readers (PromQL, the query API,
//! rule stages). The TSDB implements it; the PromQL engine evaluates against
//! it; tests implement it over plain vectors.

use crate::{Labels, Matcher, MetricMetadata};

/// One selected series: its labels and its float samples in ascending time
/// order, `(timestamp_ms, value)`. Stale markers are included as
/// `stale_nan()` values so that PromQL can honour them.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

/// Reduces samples sorted by time to the newest one.
pub fn keep_latest(samples: &mut Vec<(i64, f64)>) {
    if let Some(&last) = samples.last() {
        *samples = vec![last];
    }
}

/// Reduces every series to its newest sample.
pub fn keep_latest_of_each(series: &mut [Series]) {
    for s in series {
        keep_latest(&mut s.samples);
    }
}

/// Failures of a read.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage read failed: {0}")]
    Read(String),
    #[error("query canceled")]
    Canceled,
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
    #[error("storage write failed: {0}")]
    Write(String),
}

/// Head statistics of a store, for `/api/v1/status/tsdb` and
/// `panoptes tsdb analyze`. The top-N lists are `(name, count)`, largest
/// first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreStats {
    pub num_series: u64,
    pub num_label_pairs: u64,
    pub chunk_count: u64,
    pub min_time_ms: i64,
    pub max_time_ms: i64,
    pub series_count_by_metric_name: Vec<(String, u64)>,
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
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

    /// Like [`SeriesSelect::select`], but only the newest sample of each
    /// series in `[start_ms, end_ms]`: what an instant vector selector reads
    /// (the last sample within the lookback window). Stores override it to
    /// avoid holding every sample of the window for every series at once.
    fn select_latest(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        let mut all = self.select(matchers, start_ms, end_ms)?;
        keep_latest_of_each(&mut all);
        Ok(all)
    }

    /// An upper bound on how many series `matchers` can select, when the
    /// store can tell cheaply (from its index); `None` when it cannot. The
    /// query API runs queries that touch few series on the request's own
    /// thread and hands the others to a blocking thread.
    fn series_upper_bound(&self, _matchers: &[Matcher]) -> Option<usize> {
        None
    }

    /// The latest metadata (type, help, unit) seen per metric family, for
    /// `/api/v1/metadata`. Stores that keep none return nothing.
    fn metadata(&self) -> Vec<MetricMetadata> {
        Vec::new()
    }

    /// Head statistics (cardinality), for `/api/v1/status/tsdb`.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    /// Writes a consistent copy of the store's data (head included unless
    /// `skip_head`) into a new directory under its own `snapshots/`, and
    /// returns that directory's name. The admin API's `snapshot`.
    fn snapshot(&self, _skip_head: bool) -> Result<String, StorageError> {
        Err(StorageError::Unsupported("snapshot"))
    }

    /// Deletes the samples of matching series in `[start_ms, end_ms]`
    /// (tombstones). The admin API's `delete_series`.
    fn delete_series(
        &self,
        _matchers: &[Matcher],
        _start_ms: i64,
        _end_ms: i64,
    ) -> Result<(), StorageError> {
        Err(StorageError::Unsupported("delete_series"))
    }

    /// Rewrites blocks without deleted data. The admin API's
    /// `clean_tombstones`.
    fn clean_tombstones(&self) -> Result<(), StorageError> {
        Err(StorageError::Unsupported("clean_tombstones"))
    }
}
