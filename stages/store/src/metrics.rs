//! The store's self-metrics, refreshed from TSDB counters: counters move by
//! the difference since the last refresh so they stay monotonic across
//! reloads that keep the database.

use parking_lot::Mutex;
use prometheus::{Counter, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use panoptes_tsdb::{Db, DbStats};

pub(crate) struct StoreMetrics {
    head_series: IntGauge,
    head_chunks: IntGauge,
    head_chunk_bytes: IntGauge,
    head_min_time: IntGauge,
    head_max_time: IntGauge,
    appended: IntCounter,
    ooo_appended: IntCounter,
    ignored: IntCounter,
    rejected: IntCounterVec,
    append_failures: IntCounter,
    series_created: IntCounter,
    wal_corruptions: IntCounter,
    wal_fsyncs: IntCounter,
    wal_fsync_seconds: Counter,
    wal_bytes: IntCounter,
    wal_disk_bytes: IntGauge,
    blocks: IntGauge,
    block_bytes: IntGauge,
    blocks_cut: IntCounter,
    compactions: IntCounter,
    compaction_failures: IntCounter,
    retention_deletions: IntCounter,
    quarantined: IntCounter,
    checkpoints: IntCounter,
    last: Mutex<DbStats>,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: T,
) -> Result<T, prometheus::Error> {
    match r.register(Box::new(c.clone())) {
        Ok(()) | Err(prometheus::Error::AlreadyReg) => Ok(c),
        Err(e) => Err(e),
    }
}

impl StoreMetrics {
    pub(crate) fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let g = |n: &str, h: &str| reg(r, IntGauge::new(n, h)?);
        let c = |n: &str, h: &str| reg(r, IntCounter::new(n, h)?);
        Ok(StoreMetrics {
            head_series: g("panoptes_tsdb_head_series", "Series in the head.")?,
            head_chunks: g("panoptes_tsdb_head_chunks", "Chunks in the head.")?,
            head_chunk_bytes: g(
                "panoptes_tsdb_head_chunk_bytes",
                "Bytes of compressed sample data in the head.",
            )?,
            head_min_time: g(
                "panoptes_tsdb_head_min_time",
                "Oldest sample timestamp in the head (ms).",
            )?,
            head_max_time: g(
                "panoptes_tsdb_head_max_time",
                "Newest sample timestamp in the head (ms).",
            )?,
            appended: c(
                "panoptes_tsdb_head_samples_appended_total",
                "Samples stored.",
            )?,
            ooo_appended: c(
                "panoptes_tsdb_out_of_order_samples_appended_total",
                "Samples stored inside the out-of-order window.",
            )?,
            ignored: c(
                "panoptes_tsdb_duplicate_samples_ignored_total",
                "Exact repeats of stored samples, ignored.",
            )?,
            rejected: reg(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "panoptes_tsdb_samples_rejected_total",
                        "Samples refused, by reason.",
                    ),
                    &["reason"],
                )?,
            )?,
            append_failures: c(
                "panoptes_tsdb_append_failures_total",
                "Batches that could not be written (e.g. disk full).",
            )?,
            series_created: c(
                "panoptes_tsdb_head_series_created_total",
                "Series created in the head.",
            )?,
            wal_corruptions: c(
                "panoptes_tsdb_wal_corruptions_total",
                "Damaged WAL records found (and dropped) on replay.",
            )?,
            wal_fsyncs: c("panoptes_tsdb_wal_fsyncs_total", "WAL fsync calls.")?,
            wal_fsync_seconds: reg(
                r,
                Counter::new(
                    "panoptes_tsdb_wal_fsync_duration_seconds_total",
                    "Time spent in WAL fsync.",
                )?,
            )?,
            wal_bytes: c(
                "panoptes_tsdb_wal_bytes_written_total",
                "Bytes written to the WAL.",
            )?,
            wal_disk_bytes: g("panoptes_tsdb_wal_storage_bytes", "Bytes of WAL on disk.")?,
            blocks: g("panoptes_tsdb_blocks_loaded", "Blocks on disk.")?,
            block_bytes: g(
                "panoptes_tsdb_storage_blocks_bytes",
                "Bytes of blocks on disk.",
            )?,
            blocks_cut: c(
                "panoptes_tsdb_head_blocks_cut_total",
                "Blocks cut from the head.",
            )?,
            compactions: c(
                "panoptes_tsdb_compactions_total",
                "Compactions that merged blocks.",
            )?,
            compaction_failures: c(
                "panoptes_tsdb_compactions_failed_total",
                "Compactions that failed.",
            )?,
            retention_deletions: c(
                "panoptes_tsdb_retention_deleted_blocks_total",
                "Blocks deleted by time or size retention.",
            )?,
            quarantined: c(
                "panoptes_tsdb_quarantined_blocks_total",
                "Corrupt blocks moved to quarantine/.",
            )?,
            checkpoints: c(
                "panoptes_tsdb_wal_checkpoints_total",
                "WAL checkpoints written.",
            )?,
            last: Mutex::new(DbStats::default()),
        })
    }

    /// Cheap refresh of the counters only (no head scan).
    pub(crate) fn refresh_counters(&self, db: &Db) {
        let mut s = self.last.lock().clone();
        let c = db.counters();
        s.samples_appended = c.samples_appended;
        s.out_of_order_appended = c.out_of_order_appended;
        s.ignored = c.ignored;
        s.rejected = c.rejected;
        s.append_failures = c.append_failures;
        s.series_created = c.series_created;
        self.apply(&s, false);
    }

    /// Full refresh including gauges.
    pub(crate) fn refresh(&self, s: &DbStats) {
        self.apply(s, true);
    }

    fn apply(&self, s: &DbStats, gauges: bool) {
        let mut last = self.last.lock();
        let d = |new: u64, old: u64| new.saturating_sub(old);
        self.appended
            .inc_by(d(s.samples_appended, last.samples_appended));
        self.ooo_appended
            .inc_by(d(s.out_of_order_appended, last.out_of_order_appended));
        self.ignored.inc_by(d(s.ignored, last.ignored));
        for (reason, n) in &s.rejected {
            let old = last
                .rejected
                .iter()
                .find(|(r, _)| r == reason)
                .map_or(0, |x| x.1);
            self.rejected
                .with_label_values(&[reason.as_str()])
                .inc_by(d(*n, old));
        }
        self.append_failures
            .inc_by(d(s.append_failures, last.append_failures));
        self.series_created
            .inc_by(d(s.series_created, last.series_created));
        if gauges {
            self.head_series.set(s.head_series as i64);
            self.head_chunks.set(s.head_chunks as i64);
            self.head_chunk_bytes.set(s.head_chunk_bytes as i64);
            if s.head_min_time != i64::MAX {
                self.head_min_time.set(s.head_min_time);
            }
            if s.head_max_time != i64::MIN {
                self.head_max_time.set(s.head_max_time);
            }
            self.wal_corruptions
                .inc_by(d(s.wal_corruptions, last.wal_corruptions));
            self.wal_fsyncs.inc_by(d(s.wal_fsyncs, last.wal_fsyncs));
            let secs = s.wal_fsync_seconds - last.wal_fsync_seconds;
            if secs > 0.0 {
                self.wal_fsync_seconds.inc_by(secs);
            }
            self.wal_bytes
                .inc_by(d(s.wal_bytes_written, last.wal_bytes_written));
            self.wal_disk_bytes.set(s.wal_disk_bytes as i64);
            self.blocks.set(s.blocks as i64);
            self.block_bytes.set(s.block_bytes as i64);
            self.blocks_cut.inc_by(d(s.blocks_cut, last.blocks_cut));
            self.compactions.inc_by(d(s.compactions, last.compactions));
            self.compaction_failures
                .inc_by(d(s.compaction_failures, last.compaction_failures));
            self.retention_deletions
                .inc_by(d(s.retention_deletions, last.retention_deletions));
            self.quarantined
                .inc_by(d(s.quarantined_blocks, last.quarantined_blocks));
            self.checkpoints.inc_by(d(s.checkpoints, last.checkpoints));
            *last = s.clone();
        } else {
            last.samples_appended = s.samples_appended;
            last.out_of_order_appended = s.out_of_order_appended;
            last.ignored = s.ignored;
            last.rejected = s.rejected.clone();
            last.append_failures = s.append_failures;
            last.series_created = s.series_created;
        }
    }
}
