//! The database: one directory holding the WAL and the blocks, a head in
//! memory, and the operations that tie them together — append (WAL first,
//! then head), replay on open, cutting the head into blocks, WAL
//! checkpoints, compaction, retention and quarantine of damaged blocks. It
//! implements [`SeriesSelect`] by merging the head and every block that
//! overlaps the query range.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use panoptes_model::{
    Labels, Matcher, MetricMetadata, SampleBatch, Series, SeriesSelect, StorageError,
};
use parking_lot::{Mutex, RwLock};

use crate::block::{self, Block, BlockError, CompactionMeta};
use crate::chunk::ChunkError;
use crate::head::{self, merge_samples, Head, RejectReason, Verdict};
use crate::postings::{self, PostingsSource};
use crate::source_refs::SourceRefs;
use crate::wal::{self, FsyncPolicy, Record, RefSample, Wal, WalError, WalOptions};

/// Milliseconds in an hour and a day.
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Options of a database.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Blocks whose newest sample is older than this (relative to the newest
    /// block) are deleted. Default 15 days.
    pub retention_ms: i64,
    /// Delete the oldest blocks while blocks plus WAL exceed this many bytes.
    pub retention_size: Option<u64>,
    /// How far behind the newest sample an out-of-order sample is still
    /// accepted. Default 0: refused, as Prometheus does.
    pub out_of_order_window_ms: i64,
    /// Range of a block cut from the head. Default 2 hours.
    pub block_duration_ms: i64,
    /// Largest block compaction builds; default 10% of retention (at least
    /// one block duration), as Prometheus.
    pub max_block_duration_ms: Option<i64>,
    pub wal_segment_size: u64,
    pub wal_fsync: FsyncPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retention_ms: 15 * DAY_MS,
            retention_size: None,
            out_of_order_window_ms: 0,
            block_duration_ms: 2 * HOUR_MS,
            max_block_duration_ms: None,
            wal_segment_size: wal::DEFAULT_SEGMENT_SIZE,
            wal_fsync: FsyncPolicy::default(),
        }
    }
}

impl Options {
    fn max_block_duration(&self) -> i64 {
        self.max_block_duration_ms
            .unwrap_or(self.retention_ms / 10)
            .max(self.block_duration_ms)
    }

    /// Compaction ranges: the block duration times 3, 9, 27 … up to the
    /// maximum block duration.
    pub fn compaction_ranges(&self) -> Vec<i64> {
        let mut out = Vec::new();
        let mut r = self.block_duration_ms.max(1);
        let max = self.max_block_duration();
        while let Some(next) = r.checked_mul(3) {
            if next > max {
                break;
            }
            out.push(next);
            r = next;
        }
        out
    }
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("head chunk: {0}")]
    Chunk(#[from] ChunkError),
    #[error("database directory {path} is in use by another process or store (lock held on {path}/lock)")]
    Locked { path: PathBuf },
    #[error("database directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TsdbError + '_ {
    move |source| TsdbError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one append did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Samples stored (in order and out of order).
    pub appended: u64,
    /// Of those, accepted inside the out-of-order window.
    pub out_of_order_appended: u64,
    /// Exact repeats of a stored sample, ignored without error.
    pub ignored: u64,
    /// Refused samples by reason.
    pub rejected: Vec<(RejectReason, u64)>,
    /// Series created by this batch.
    pub new_series: u64,
}

#[derive(Default)]
struct Counters {
    appended: AtomicU64,
    ooo_appended: AtomicU64,
    ignored: AtomicU64,
    rejected: [AtomicU64; 4],
    append_failures: AtomicU64,
    series_created: AtomicU64,
    wal_corruptions: AtomicU64,
    compactions: AtomicU64,
    compaction_failures: AtomicU64,
    blocks_cut: AtomicU64,
    retention_deletions: AtomicU64,
    quarantined: AtomicU64,
    checkpoints: AtomicU64,
}

fn reason_index(r: RejectReason) -> usize {
    match r {
        RejectReason::OutOfOrder => 0,
        RejectReason::Duplicate => 1,
        RejectReason::TooOld => 2,
        RejectReason::EmptyLabels => 3,
    }
}

/// A snapshot of the database's counters and sizes, for self-metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbStats {
    pub head_series: u64,
    pub head_chunks: u64,
    pub head_chunk_bytes: u64,
    pub head_min_time: i64,
    pub head_max_time: i64,
    pub samples_appended: u64,
    pub out_of_order_appended: u64,
    pub ignored: u64,
    pub rejected: Vec<(RejectReason, u64)>,
    pub append_failures: u64,
    pub series_created: u64,
    pub wal_corruptions: u64,
    pub wal_fsyncs: u64,
    pub wal_fsync_seconds: f64,
    pub wal_bytes_written: u64,
    pub wal_disk_bytes: u64,
    pub blocks: u64,
    pub block_bytes: u64,
    pub blocks_cut: u64,
    pub compactions: u64,
    pub compaction_failures: u64,
    pub retention_deletions: u64,
    pub quarantined_blocks: u64,
    pub checkpoints: u64,
}

/// Sources whose metadata is kept; metadata of sources beyond this is not
/// recorded (a pipeline with more distinct batch sources than this is
/// unusual, and the map must not grow without bound).
const MAX_METADATA_SOURCES: usize = 100_000;

/// The WAL plus scratch buffers reused by every append (the appender
/// lock guards both).
struct Appender {
    wal: Wal,
    hash_buf: Vec<u8>,
    refs: Vec<Option<u32>>,
    accepted: Vec<(RefSample, Verdict)>,
    samples_tmp: Vec<RefSample>,
    /// Per series reference: the number of the batch that last judged a
    /// sample of it, and that sample (so a batch judges its own repeats
    /// against what it accepted, without a map).
    judged_in: Vec<u32>,
    judged_last: Vec<(i64, u64)>,
    batch_no: u32,
    source_refs: SourceRefs,
    ooo_seen: HashMap<(u32, i64), u64, head::RefHash>,
    series_rec: Vec<u8>,
    samples_rec: Vec<u8>,
}

impl Appender {
    fn new(wal: Wal) -> Self {
        Appender {
            wal,
            hash_buf: Vec::new(),
            refs: Vec::new(),
            accepted: Vec::new(),
            samples_tmp: Vec::new(),
            judged_in: Vec::new(),
            judged_last: Vec::new(),
            batch_no: 0,
            source_refs: SourceRefs::default(),
            ooo_seen: HashMap::default(),
            series_rec: Vec::new(),
            samples_rec: Vec::new(),
        }
    }
}

impl std::ops::Deref for Appender {
    type Target = Wal;
    fn deref(&self) -> &Wal {
        &self.wal
    }
}

impl std::ops::DerefMut for Appender {
    fn deref_mut(&mut self) -> &mut Wal {
        &mut self.wal
    }
}

/// The time-series database.
pub struct Db {
    dir: PathBuf,
    opts: RwLock<Options>,
    head: RwLock<Head>,
    /// Also the appender lock: appends are serialized through it, and head
    /// truncation takes it so that no append sits between judging its
    /// samples and applying them.
    wal: Mutex<Appender>,
    blocks: RwLock<Vec<Arc<Block>>>,
    counters: Counters,
    /// The latest metric metadata per batch source (a scrape target, a push
    /// group set), for `/api/v1/metadata`. Kept in memory only, as
    /// Prometheus keeps it in its scrape caches.
    metadata: RwLock<HashMap<Arc<str>, Arc<[MetricMetadata]>>>,
    maintenance: Mutex<()>,
    /// Holds an exclusive `flock` on `<dir>/lock` while open: two writers
    /// on one WAL would corrupt it.
    _lock: fs::File,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("dir", &self.dir).finish()
    }
}

fn is_block_name(name: &str) -> bool {
    name.len() == 26 && ulid::Ulid::from_string(name).is_ok()
}

impl Db {
    /// Opens (creating) a database in `dir`: loads blocks (quarantining
    /// damaged ones), then replays the WAL into the head.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Db, TsdbError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock = lock_dir(&dir)?;
        let counters = Counters::default();
        let mut blocks: Vec<Arc<Block>> = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            if name.ends_with(".tmp") && path.is_dir() {
                // An unfinished block write or deletion.
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
                continue;
            }
            if !is_block_name(&name) || !path.is_dir() {
                continue;
            }
            match Block::open(&path) {
                Ok(b) => blocks.push(Arc::new(b)),
                Err(err) => {
                    quarantine(&dir, &path, &err)?;
                    counters.quarantined.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // A crash after a compaction wrote its block but before its sources
        // were deleted leaves both: the compacted block supersedes them.
        let superseded: Vec<bool> = blocks
            .iter()
            .map(|b| {
                blocks.iter().any(|c| {
                    c.meta.ulid != b.meta.ulid
                        && c.meta.compaction.level > b.meta.compaction.level
                        && b.meta
                            .compaction
                            .sources
                            .iter()
                            .all(|s| c.meta.compaction.sources.contains(s))
                })
            })
            .collect();
        let mut kept = Vec::new();
        for (b, gone) in blocks.into_iter().zip(superseded) {
            if gone {
                tracing::info!(block = %b.meta.ulid, "removing block already merged by a compaction");
                remove_block_dir(&dir, b.dir())?;
            } else {
                kept.push(b);
            }
        }
        let mut blocks = kept;
        blocks.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));

        let mut head = Head::new(opts.block_duration_ms, opts.out_of_order_window_ms);
        let chunks_dir = dir.join("chunks_head");
        match crate::head_chunks::HeadChunkFiles::open(&chunks_dir) {
            Ok(files) => head.set_chunk_files(files),
            Err(e) => {
                tracing::warn!(path = %chunks_dir.display(), error = %e, "cannot use head chunk files; closed head chunks stay in memory")
            }
        }
        if let Some(maxt) = blocks.iter().map(|b| b.meta.max_time).max() {
            head.set_min_valid_time(maxt);
        }
        let mut ref_map: HashMap<u32, u32> = HashMap::new();
        let wal_opts = WalOptions {
            segment_size: opts.wal_segment_size,
            fsync: opts.wal_fsync,
        };
        let (wal, report) = Wal::open(&dir.join("wal"), wal_opts, &mut |rec| match rec {
            Record::Series(series) => {
                for (r, labels) in series {
                    let got = head.create(&labels, Some(r));
                    if got != r {
                        ref_map.insert(r, got);
                    }
                }
            }
            Record::Samples(samples) => {
                for s in samples {
                    let r = ref_map.get(&s.r).copied().unwrap_or(s.r);
                    head.apply_replayed(r, s.t, s.v);
                }
            }
            Record::Tombstones(ts) => {
                for (r, mint, maxt) in ts {
                    let r = ref_map.get(&r).copied().unwrap_or(r);
                    if let Err(e) = head.delete_range(r, mint, maxt) {
                        tracing::warn!(series = r, error = %e, "cannot replay a deletion");
                    }
                }
            }
        })?;
        counters
            .wal_corruptions
            .store(report.corruptions, Ordering::Relaxed);
        tracing::info!(
            path = %dir.display(),
            blocks = blocks.len(),
            series = head.num_series(),
            wal_records = report.records,
            "TSDB opened"
        );
        Ok(Db {
            dir,
            opts: RwLock::new(opts),
            head: RwLock::new(head),
            wal: Mutex::new(Appender::new(wal)),
            blocks: RwLock::new(blocks),
            counters,
            metadata: RwLock::default(),
            maintenance: Mutex::new(()),
            _lock: lock,
        })
    }

    /// Keeps the metadata a batch carries as its source's current metadata.
    /// Batches without metadata (a failed scrape, stale markers) leave the
    /// last known metadata in place, as a target's scrape cache does.
    fn record_metadata(&self, batch: &SampleBatch) {
        if batch.metadata.is_empty() {
            return;
        }
        let known = self.metadata.read().get(&batch.source).cloned();
        if known.is_some_and(|k| *k == *batch.metadata) {
            return;
        }
        let mut all = self.metadata.write();
        if all.len() >= MAX_METADATA_SOURCES && !all.contains_key(&batch.source) {
            return;
        }
        all.insert(batch.source.clone(), batch.metadata.as_slice().into());
    }

    /// Every source's metadata, sorted by family, without exact repeats.
    pub fn metadata(&self) -> Vec<MetricMetadata> {
        let mut out: Vec<MetricMetadata> = self
            .metadata
            .read()
            .values()
            .flat_map(|m| m.iter().cloned())
            .collect();
        out.sort_by(|a, b| {
            (&a.metric_family, a.metric_type.as_str(), &a.help, &a.unit).cmp(&(
                &b.metric_family,
                b.metric_type.as_str(),
                &b.help,
                &b.unit,
            ))
        });
        out.dedup();
        out
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> Options {
        self.opts.read().clone()
    }

    /// Applies options that can change while open: retention, retention
    /// size, out-of-order window, fsync policy. The block duration and
    /// segment size only take effect on the next open.
    pub fn set_options(&self, new: Options) {
        self.head.write().set_ooo_window(new.out_of_order_window_ms);
        self.wal.lock().set_fsync(new.wal_fsync);
        let mut o = self.opts.write();
        let keep_block = o.block_duration_ms;
        *o = new;
        o.block_duration_ms = keep_block;
    }

    /// Appends a batch: refused samples are counted by reason; accepted ones
    /// are written to the WAL, then to the head. When this returns `Ok`, the
    /// accepted samples survive a crash of the process.
    pub fn append(&self, batch: &SampleBatch) -> Result<AppendOutcome, TsdbError> {
        let mut out = AppendOutcome::default();
        self.record_metadata(batch);
        if batch.samples.is_empty() {
            return Ok(out);
        }
        let mut guard = self.wal.lock();
        let app = &mut *guard;
        let n = batch.samples.len();
        // Resolve series, creating the missing ones.
        app.source_refs
            .resolve_into(&batch.source, &batch.samples, &mut app.refs);
        if app.refs.iter().any(|r| r.is_none()) {
            // Series found by their labels rather than by the allocation
            // (first batch of a source, or after a WAL replay): the head
            // then keeps the incoming allocation, shared with the sender.
            let mut adopt = Vec::new();
            {
                let head = self.head.read();
                for (i, (s, r)) in batch.samples.iter().zip(app.refs.iter_mut()).enumerate() {
                    if r.is_none() {
                        let h = head::label_hash(&s.labels, &mut app.hash_buf);
                        *r = head.lookup_key(&app.hash_buf, h);
                        if r.is_some_and(|r| head.wants_labels(r)) {
                            adopt.push(i);
                        }
                    }
                }
            }
            if !adopt.is_empty() {
                let mut head = self.head.write();
                for i in adopt {
                    if let Some(r) = app.refs[i] {
                        head.adopt_labels(r, &batch.samples[i].labels);
                    }
                }
            }
        }
        let mut new_series: Vec<(u32, Labels)> = Vec::new();
        if app.refs.iter().any(|r| r.is_none()) {
            let mut head = self.head.write();
            for (i, s) in batch.samples.iter().enumerate() {
                if app.refs[i].is_none() && !s.labels.is_empty() {
                    let fresh = head.next_ref();
                    let h = head::label_hash(&s.labels, &mut app.hash_buf);
                    let r = head.create_keyed(&s.labels, &app.hash_buf, h, None);
                    if r >= fresh {
                        new_series.push((r, s.labels.clone()));
                    }
                    app.refs[i] = Some(r);
                }
            }
        }
        // Judge every sample against the head plus what this batch already
        // accepted.
        let mut rejected = [0u64; 4];
        app.accepted.clear();
        app.accepted.reserve(n);
        app.source_refs
            .remember(&batch.source, &batch.samples, &app.refs);
        app.ooo_seen.clear();
        app.batch_no = app.batch_no.wrapping_add(1);
        if app.batch_no == 0 {
            // Wrapped: old stamps could now look current.
            app.judged_in.fill(0);
            app.batch_no = 1;
        }
        {
            let head = self.head.read();
            let n_refs = head.next_ref() as usize;
            if app.judged_in.len() < n_refs {
                app.judged_in.resize(n_refs, 0);
                app.judged_last.resize(n_refs, (i64::MIN, 0));
            }
            for (s, r) in batch.samples.iter().zip(&app.refs) {
                let Some(r) = *r else {
                    rejected[reason_index(RejectReason::EmptyLabels)] += 1;
                    continue;
                };
                let ri = r as usize;
                let prev = if app.judged_in[ri] == app.batch_no {
                    app.judged_last[ri]
                } else {
                    app.judged_in[ri] = app.batch_no;
                    let p = head.last_sample(r);
                    app.judged_last[ri] = p;
                    p
                };
                let mut verdict = head.verdict(r, prev, s.timestamp_ms, s.value);
                if verdict == Verdict::OutOfOrder {
                    if let Some(&bits) = app.ooo_seen.get(&(r, s.timestamp_ms)) {
                        verdict = if bits == s.value.to_bits() {
                            Verdict::Ignored
                        } else {
                            Verdict::Rejected(RejectReason::Duplicate)
                        };
                    }
                }
                match verdict {
                    Verdict::InOrder => {
                        app.judged_last[ri] = (s.timestamp_ms, s.value.to_bits());
                    }
                    Verdict::OutOfOrder => {
                        app.ooo_seen.insert((r, s.timestamp_ms), s.value.to_bits());
                    }
                    Verdict::Ignored => {
                        out.ignored += 1;
                        continue;
                    }
                    Verdict::Rejected(reason) => {
                        rejected[reason_index(reason)] += 1;
                        continue;
                    }
                }
                app.accepted.push((
                    RefSample {
                        r,
                        t: s.timestamp_ms,
                        v: s.value,
                    },
                    verdict,
                ));
            }
        }
        // WAL first.
        app.series_rec.clear();
        if !new_series.is_empty() {
            let refs: Vec<(u32, &Labels)> = new_series.iter().map(|(r, l)| (*r, l)).collect();
            wal::encode_series(&refs, &mut app.series_rec);
        }
        app.samples_rec.clear();
        app.samples_tmp.clear();
        app.samples_tmp.extend(app.accepted.iter().map(|a| a.0));
        if !app.samples_tmp.is_empty() {
            wal::encode_samples(&app.samples_tmp, &mut app.samples_rec);
        }
        if let Err(e) = app.wal.log(&[&app.series_rec, &app.samples_rec]) {
            self.counters
                .append_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
        // Then the head.
        {
            let mut head = self.head.write();
            for (s, verdict) in &app.accepted {
                head.apply(s.r, s.t, s.v, *verdict);
            }
        }
        out.appended = app.accepted.len() as u64;
        out.out_of_order_appended = app
            .accepted
            .iter()
            .filter(|a| a.1 == Verdict::OutOfOrder)
            .count() as u64;
        drop(guard);
        out.new_series = new_series.len() as u64;
        for reason in RejectReason::ALL {
            let n = rejected[reason_index(reason)];
            if n > 0 {
                out.rejected.push((reason, n));
                self.counters.rejected[reason_index(reason)].fetch_add(n, Ordering::Relaxed);
            }
        }
        let c = &self.counters;
        c.appended.fetch_add(out.appended, Ordering::Relaxed);
        c.ooo_appended
            .fetch_add(out.out_of_order_appended, Ordering::Relaxed);
        c.ignored.fetch_add(out.ignored, Ordering::Relaxed);
        c.series_created
            .fetch_add(out.new_series, Ordering::Relaxed);
        Ok(out)
    }

    /// fsyncs the WAL if the interval policy says it is due, without
    /// blocking appends during the fsync. Call it from a periodic tick
    /// (the store stage does, twice a second).
    pub fn sync_if_due(&self) -> Result<(), TsdbError> {
        let handle = self.wal.lock().due_sync_handle()?;
        if let Some(f) = handle {
            let start = std::time::Instant::now();
            let r = f.sync_data();
            let secs = start.elapsed().as_secs_f64();
            self.wal.lock().record_sync(secs);
            r.map_err(|source| TsdbError::Io {
                path: self.dir.join("wal"),
                source,
            })?;
        }
        Ok(())
    }

    /// fsyncs the WAL.
    pub fn sync(&self) -> Result<(), TsdbError> {
        self.wal.lock().sync()?;
        Ok(())
    }

    /// Periodic housekeeping: fsync if due, cut the head into blocks when it
    /// spans more than 1.5 block ranges, checkpoint the WAL, compact blocks,
    /// apply retention. Call it every few seconds to a minute.
    pub fn maintain(&self) -> Result<(), TsdbError> {
        let _g = self.maintenance.lock();
        self.sync_if_due()?;
        self.cut_head_blocks()?;
        if let Err(e) = self.compact() {
            self.counters
                .compaction_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "compaction failed");
        }
        self.apply_retention()?;
        Ok(())
    }

    /// Cuts every complete block range out of the head. Also usable to
    /// force a cut in tests and benchmarks.
    pub fn cut_head_blocks(&self) -> Result<usize, TsdbError> {
        let range = self.opts.read().block_duration_ms.max(1);
        let mut cut = 0;
        let mut truncated_to = None;
        loop {
            let (mint, maxt) = {
                let h = self.head.read();
                (h.min_time(), h.max_time())
            };
            if mint == i64::MAX || maxt == i64::MIN || maxt.saturating_sub(mint) <= range / 2 * 3 {
                break;
            }
            let start = mint.div_euclid(range) * range;
            let end = start + range;
            if let Some(meta) = self.write_head_block(&self.dir, start, end)? {
                let b = Block::open(&self.dir.join(&meta.ulid))?;
                tracing::info!(block = %meta.ulid, min_time = start, max_time = end, series = meta.stats.num_series, samples = meta.stats.num_samples, "cut head block");
                let mut blocks = self.blocks.write();
                blocks.push(Arc::new(b));
                blocks.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
                cut += 1;
                self.counters.blocks_cut.fetch_add(1, Ordering::Relaxed);
            }
            {
                let mut app = self.wal.lock();
                self.head.write().truncate(end);
                // Dropped series free their references for reuse.
                app.source_refs.clear();
            }
            truncated_to = Some(end);
        }
        if let Some(t) = truncated_to {
            self.checkpoint_wal(t)?;
        }
        Ok(cut)
    }

    fn checkpoint_wal(&self, min_t: i64) -> Result<(), TsdbError> {
        let upto = self.wal.lock().rotate()?;
        let live: Vec<bool> = {
            let h = self.head.read();
            (0..h.next_ref()).map(|r| h.contains(r)).collect()
        };
        // Series created after the snapshot have refs beyond it; their records
        // are in segments ≥ upto, so keeping unknown refs is never needed.
        let keep = |r: u32| live.get(r as usize).copied().unwrap_or(false);
        let wal_dir = self.dir.join("wal");
        wal::checkpoint(&wal_dir, upto, &keep, min_t)?;
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Merges adjacent blocks into the next compaction range where a range
    /// window is complete. Returns how many compactions ran.
    pub fn compact(&self) -> Result<usize, TsdbError> {
        let ranges = self.opts.read().compaction_ranges();
        let mut done = 0;
        'plan: loop {
            let blocks = self.blocks.read().clone();
            let newest = blocks
                .iter()
                .map(|b| b.meta.max_time)
                .max()
                .unwrap_or(i64::MIN);
            for &r in &ranges {
                let mut groups: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
                for b in &blocks {
                    let w = b.meta.min_time.div_euclid(r);
                    if (b.meta.max_time - 1).div_euclid(r) == w {
                        groups.entry(w).or_default().push(b.clone());
                    }
                }
                for (w, group) in groups {
                    let window_end = (w + 1) * r;
                    if group.len() < 2 || window_end > newest {
                        continue;
                    }
                    self.merge_blocks(&group)?;
                    done += 1;
                    continue 'plan;
                }
            }
            break;
        }
        Ok(done)
    }

    fn merge_blocks(&self, group: &[Arc<Block>]) -> Result<(), TsdbError> {
        let symbols = group
            .iter()
            .flat_map(|b| b.symbols().iter().cloned())
            .collect::<Vec<_>>();
        let mut writer = block::BlockWriter::new(&self.dir, symbols)?;
        if let Err(e) = merge_series(group, &mut writer) {
            writer.abort();
            return Err(e);
        }
        let mint = group.iter().map(|b| b.meta.min_time).min().unwrap_or(0);
        let maxt = group.iter().map(|b| b.meta.max_time).max().unwrap_or(0);
        let level = group
            .iter()
            .map(|b| b.meta.compaction.level)
            .max()
            .unwrap_or(1)
            + 1;
        let mut sources: Vec<String> = group
            .iter()
            .flat_map(|b| b.meta.compaction.sources.iter().cloned())
            .collect();
        sources.sort();
        sources.dedup();
        let meta = writer.finish(mint, maxt, CompactionMeta { level, sources })?;
        let nb = Arc::new(Block::open(&self.dir.join(&meta.ulid))?);
        {
            let mut blocks = self.blocks.write();
            blocks.retain(|b| !group.iter().any(|g| Arc::ptr_eq(b, g)));
            blocks.push(nb);
            blocks.sort_by_key(|b| (b.meta.min_time, b.meta.max_time));
        }
        for b in group {
            remove_block_dir(&self.dir, b.dir())?;
        }
        tracing::info!(block = %meta.ulid, min_time = mint, max_time = maxt, level, merged = group.len(), "compacted blocks");
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Deletes whole blocks beyond the time and size retention. Returns how
    /// many were deleted.
    pub fn apply_retention(&self) -> Result<usize, TsdbError> {
        let (retention, size_limit) = {
            let o = self.opts.read();
            (o.retention_ms, o.retention_size)
        };
        let blocks = self.blocks.read().clone();
        let Some(newest) = blocks.iter().map(|b| b.meta.max_time).max() else {
            return Ok(0);
        };
        let mut doomed: Vec<Arc<Block>> = blocks
            .iter()
            .filter(|b| retention > 0 && newest - b.meta.max_time > retention)
            .cloned()
            .collect();
        if let Some(limit) = size_limit {
            let wal_size = wal::dir_size(&self.dir.join("wal"));
            let mut total: u64 = wal_size
                + blocks
                    .iter()
                    .filter(|b| !doomed.iter().any(|d| Arc::ptr_eq(d, b)))
                    .map(|b| b.size())
                    .sum::<u64>();
            for b in &blocks {
                if total <= limit {
                    break;
                }
                if doomed.iter().any(|d| Arc::ptr_eq(d, b)) {
                    continue;
                }
                total = total.saturating_sub(b.size());
                doomed.push(b.clone());
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        self.blocks
            .write()
            .retain(|b| !doomed.iter().any(|d| Arc::ptr_eq(d, b)));
        for b in &doomed {
            tracing::info!(block = %b.meta.ulid, max_time = b.meta.max_time, "deleting block beyond retention");
            remove_block_dir(&self.dir, b.dir())?;
        }
        self.counters
            .retention_deletions
            .fetch_add(doomed.len() as u64, Ordering::Relaxed);
        Ok(doomed.len())
    }

    /// Deletes the samples of matching series in `[mint, maxt]` (inclusive),
    /// in blocks (tombstones, made permanent by the next compaction) and in
    /// the head (logged to the WAL first, so the deletion survives a crash).
    /// Returns how many series had data deleted or tombstoned.
    pub fn delete_series(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<u64, TsdbError> {
        // No block cut, compaction or retention meanwhile.
        let _g = self.maintenance.lock();
        let mut affected = 0u64;
        let blocks = self.blocks();
        for b in &blocks {
            if !b.overlaps(mint, maxt) {
                continue;
            }
            let mut hit = Vec::new();
            for id in b.select_ids(matchers)? {
                let (_, chunks) = b.series(id)?;
                if chunks.iter().any(|c| c.mint <= maxt && c.maxt >= mint) {
                    hit.push(id);
                }
            }
            if hit.is_empty() {
                continue;
            }
            affected += hit.len() as u64;
            block::add_tombstones(b.dir(), b.tombstones(), &hit, mint, maxt)?;
            let reopened = Arc::new(Block::open(b.dir())?);
            let mut list = self.blocks.write();
            for slot in list.iter_mut() {
                if Arc::ptr_eq(slot, b) {
                    *slot = reopened.clone();
                }
            }
        }
        let mut app = self.wal.lock();
        let refs: Vec<u32> = {
            let head = self.head.read();
            head.select_refs(matchers)
                .into_iter()
                .filter(|&r| head.has_samples(r, mint, maxt))
                .collect()
        };
        if !refs.is_empty() {
            let ts: Vec<(u32, i64, i64)> = refs.iter().map(|&r| (r, mint, maxt)).collect();
            let mut rec = Vec::new();
            wal::encode_tombstones(&ts, &mut rec);
            app.wal.log(&[&rec])?;
            app.wal.sync()?;
            let mut head = self.head.write();
            for &r in &refs {
                head.delete_range(r, mint, maxt)?;
            }
            affected += refs.len() as u64;
        }
        Ok(affected)
    }

    /// Writes the head's samples in `[start, end)` as one level-1 block
    /// under `parent`; `None` when the head has nothing there.
    fn write_head_block(
        &self,
        parent: &Path,
        start: i64,
        end: i64,
    ) -> Result<Option<block::BlockMeta>, TsdbError> {
        let data = self.head.read().block_data(start, end)?;
        if data.is_empty() {
            return Ok(None);
        }
        let meta = block::write_block(
            parent,
            start,
            end,
            &data,
            CompactionMeta {
                level: 1,
                sources: Vec::new(),
            },
            // The head lock is taken per chunk, so appends go on while the
            // block is written.
            &|c| self.head.read().decode_chunk(c),
        )?;
        Ok(Some(meta))
    }

    /// Writes a consistent copy of the database into `target` (created; must
    /// not exist or be empty): every block hard-linked (copied across file
    /// systems), plus, with `with_head`, the head's current data as one more
    /// block. The result opens as a database of its own. Returns the block
    /// directories written.
    pub fn snapshot(&self, target: &Path, with_head: bool) -> Result<Vec<String>, TsdbError> {
        // Keep compaction and retention from deleting blocks meanwhile.
        let _g = self.maintenance.lock();
        fs::create_dir_all(target).map_err(io_err(target))?;
        let mut written = Vec::new();
        for b in self.blocks() {
            let dst = target.join(&b.meta.ulid);
            link_tree(b.dir(), &dst)?;
            written.push(b.meta.ulid.clone());
        }
        if with_head {
            let (mint, maxt) = {
                let h = self.head.read();
                (h.min_time(), h.max_time())
            };
            if mint != i64::MAX && maxt != i64::MIN {
                if let Some(meta) = self.write_head_block(target, mint, maxt.saturating_add(1))? {
                    written.push(meta.ulid);
                }
            }
        }
        Ok(written)
    }

    /// Label sets of every series in the head.
    pub fn head_series_labels(&self) -> Vec<Labels> {
        self.head
            .read()
            .all_series()
            .into_iter()
            .map(|(_, l)| l)
            .collect()
    }

    /// The open blocks, oldest first.
    pub fn blocks(&self) -> Vec<Arc<Block>> {
        self.blocks.read().clone()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> DbStats {
        let hs = self.head.read().stats();
        let (fsyncs, fsync_seconds, wal_bytes, wal_disk) = {
            let w = self.wal.lock();
            (w.fsyncs, w.fsync_seconds, w.bytes_written, w.disk_size())
        };
        let blocks = self.blocks.read();
        let c = &self.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DbStats {
            head_series: hs.series,
            head_chunks: hs.chunks,
            head_chunk_bytes: hs.bytes,
            head_min_time: hs.min_time,
            head_max_time: hs.max_time,
            samples_appended: ld(&c.appended),
            out_of_order_appended: ld(&c.ooo_appended),
            ignored: ld(&c.ignored),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (*r, ld(&c.rejected[reason_index(*r)])))
                .collect(),
            append_failures: ld(&c.append_failures),
            series_created: ld(&c.series_created),
            wal_corruptions: ld(&c.wal_corruptions),
            wal_fsyncs: fsyncs,
            wal_fsync_seconds: fsync_seconds,
            wal_bytes_written: wal_bytes,
            wal_disk_bytes: wal_disk,
            blocks: blocks.len() as u64,
            block_bytes: blocks.iter().map(|b| b.size()).sum(),
            blocks_cut: ld(&c.blocks_cut),
            compactions: ld(&c.compactions),
            compaction_failures: ld(&c.compaction_failures),
            retention_deletions: ld(&c.retention_deletions),
            quarantined_blocks: ld(&c.quarantined),
            checkpoints: ld(&c.checkpoints),
        }
    }

    /// The append counters only (cheap: no head scan, no disk access); the
    /// other fields are left at their defaults.
    pub fn counters(&self) -> DbStats {
        let c = &self.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DbStats {
            samples_appended: ld(&c.appended),
            out_of_order_appended: ld(&c.ooo_appended),
            ignored: ld(&c.ignored),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (*r, ld(&c.rejected[reason_index(*r)])))
                .collect(),
            append_failures: ld(&c.append_failures),
            series_created: ld(&c.series_created),
            ..DbStats::default()
        }
    }

    fn read_err(e: impl std::fmt::Display) -> StorageError {
        StorageError::Read(e.to_string())
    }

    /// Label sets of matching series with data overlapping the range,
    /// across head and blocks (unsorted, may repeat).
    fn matching_labels(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, StorageError> {
        let mut out = Vec::new();
        for b in self.blocks() {
            if !b.overlaps(mint, maxt) {
                continue;
            }
            for id in b.select_ids(matchers).map_err(Self::read_err)? {
                let (labels, chunks) = b.series(id).map_err(Self::read_err)?;
                if chunks.iter().any(|c| c.mint <= maxt && c.maxt >= mint) {
                    out.push(labels);
                }
            }
        }
        out.extend(self.head.read().series_labels(matchers, mint, maxt));
        Ok(out)
    }
}

/// Streams the union of the blocks' series, in label order, into `writer`:
/// a k-way merge over the blocks' (label-sorted) series, one series in
/// memory at a time; samples of the same series from several blocks are
/// merged and deduplicated (tombstones are applied on the way, so deletions
/// become permanent).
fn merge_series(group: &[Arc<Block>], writer: &mut block::BlockWriter) -> Result<(), TsdbError> {
    struct Cursor<'a> {
        block: &'a Block,
        next: u32,
        current: Option<(Labels, Vec<block::ChunkMeta>)>,
    }
    impl Cursor<'_> {
        fn advance(&mut self) -> Result<(), BlockError> {
            self.current = if self.next < self.block.num_series() {
                let s = self.block.series(self.next)?;
                self.next += 1;
                Some(s)
            } else {
                None
            };
            Ok(())
        }
    }
    let mut cursors = Vec::with_capacity(group.len());
    for b in group {
        let mut c = Cursor {
            block: b,
            next: 0,
            current: None,
        };
        c.advance()?;
        cursors.push(c);
    }
    while let Some(min) = cursors
        .iter()
        .filter_map(|c| c.current.as_ref().map(|s| &s.0))
        .min()
        .cloned()
    {
        let mut samples: Vec<(i64, f64)> = Vec::new();
        for c in cursors.iter_mut() {
            let Some((labels, chunks)) = &c.current else {
                continue;
            };
            if *labels != min {
                continue;
            }
            let part = c.block.samples(c.next - 1, chunks, i64::MIN, i64::MAX)?;
            samples = if samples
                .last()
                .is_some_and(|l| part.first().is_some_and(|f| f.0 > l.0))
            {
                samples.extend(part);
                samples
            } else {
                merge_samples(samples, &part)
            };
            c.advance()?;
        }
        writer.add_series(&min, &samples)?;
    }
    Ok(())
}

/// Takes an exclusive, non-blocking `flock` on `<dir>/lock`. The kernel
/// releases it when the process dies, so a crash never leaves it stale.
fn lock_dir(dir: &Path) -> Result<fs::File, TsdbError> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return if err.kind() == std::io::ErrorKind::WouldBlock {
            Err(TsdbError::Locked {
                path: dir.to_path_buf(),
            })
        } else {
            Err(io_err(&path)(err))
        };
    }
    Ok(f)
}

/// Recreates `src` at `dst` with hard links (copies if linking fails, e.g.
/// across file systems).
fn link_tree(src: &Path, dst: &Path) -> Result<(), TsdbError> {
    fs::create_dir_all(dst).map_err(io_err(dst))?;
    for e in fs::read_dir(src).map_err(io_err(src))? {
        let e = e.map_err(io_err(src))?;
        let from = e.path();
        let to = dst.join(e.file_name());
        if from.is_dir() {
            link_tree(&from, &to)?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(io_err(&from))?;
        }
    }
    Ok(())
}

/// Moves a damaged block aside into `quarantine/`, logging why.
fn quarantine(dir: &Path, block: &Path, err: &BlockError) -> Result<(), TsdbError> {
    let qdir = dir.join("quarantine");
    fs::create_dir_all(&qdir).map_err(io_err(&qdir))?;
    let name = block
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let dst = qdir.join(&name);
    tracing::error!(block = %block.display(), moved_to = %dst.display(), error = %err, "quarantining corrupt block");
    fs::rename(block, &dst).map_err(io_err(block))
}

/// Deletes a block directory: renamed to `.tmp` first (atomic), so a crash
/// mid-delete leaves something the next open removes, not a broken block.
fn remove_block_dir(dir: &Path, block: &Path) -> Result<(), TsdbError> {
    let name = block
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!("{name}.tmp"));
    fs::rename(block, &tmp).map_err(io_err(block))?;
    fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    Ok(())
}

/// Head series (distinct label sets) as the sorted answer of a select: a
/// sort is all the merge they need.
fn sorted_series(got: Vec<head::SelectedSeries>) -> Vec<Series> {
    let mut out: Vec<Series> = got
        .into_iter()
        .map(|(labels, samples)| Series { labels, samples })
        .collect();
    out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
    out
}

impl SeriesSelect for Db {
    fn metadata(&self) -> Vec<MetricMetadata> {
        Db::metadata(self)
    }

    fn series_upper_bound(&self, matchers: &[Matcher]) -> Option<usize> {
        let head = postings::upper_bound(&*self.head.read(), matchers).unwrap_or_default();
        let mut total = head?;
        for b in self.blocks() {
            total += postings::upper_bound(&*b, matchers).ok().flatten()?;
        }
        Some(total)
    }

    fn select_latest(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        if self.blocks().iter().any(|b| b.overlaps(start_ms, end_ms)) {
            // Older data in blocks: merge everything, then keep the newest.
            let mut all = self.select(matchers, start_ms, end_ms)?;
            panoptes_model::keep_latest_of_each(&mut all);
            return Ok(all);
        }
        let got = self
            .head
            .read()
            .select_latest(matchers, start_ms, end_ms)
            .map_err(Self::read_err)?;
        Ok(sorted_series(got))
    }

    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        let blocks: Vec<Arc<Block>> = self
            .blocks()
            .into_iter()
            .filter(|b| b.overlaps(start_ms, end_ms))
            .collect();
        if blocks.is_empty() {
            // Only the head: its series are distinct, so a sort is all the
            // merge there is to do (a map costs two searches per series).
            let got = self
                .head
                .read()
                .select(matchers, start_ms, end_ms)
                .map_err(Self::read_err)?;
            return Ok(sorted_series(got));
        }
        let mut merged: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        let mut add = |labels: Labels, samples: Vec<(i64, f64)>| match merged.get_mut(&labels) {
            Some(existing) => {
                let prev = std::mem::take(existing);
                *existing = merge_samples(prev, &samples);
            }
            None => {
                merged.insert(labels, samples);
            }
        };
        for b in blocks {
            let got = b
                .select(matchers, start_ms, end_ms)
                .map_err(|e| StorageError::Read(format!("block {}: {e}", b.meta.ulid)))?;
            for (l, s) in got {
                add(l, s);
            }
        }
        let got = self
            .head
            .read()
            .select(matchers, start_ms, end_ms)
            .map_err(Self::read_err)?;
        for (l, s) in got {
            add(l, s);
        }
        Ok(merged
            .into_iter()
            .map(|(labels, samples)| Series { labels, samples })
            .collect())
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        if matchers.is_empty() {
            for b in self.blocks() {
                if b.overlaps(start_ms, end_ms) {
                    names.extend(b.label_names());
                }
            }
            let head = self.head.read();
            if head.max_time() >= start_ms && head.min_time() <= end_ms {
                names.extend(head.label_names());
            }
        } else {
            for l in self.matching_labels(matchers, start_ms, end_ms)? {
                names.extend(l.iter().map(|l| l.name.to_string()));
            }
        }
        Ok(names.into_iter().collect())
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut values: BTreeSet<String> = BTreeSet::new();
        if matchers.is_empty() {
            for b in self.blocks() {
                if b.overlaps(start_ms, end_ms) {
                    values.extend(b.values_of(name).map_err(Self::read_err)?);
                }
            }
            let head = self.head.read();
            if head.max_time() >= start_ms && head.min_time() <= end_ms {
                match head.values_of(name) {
                    Ok(v) => values.extend(v),
                    Err(never) => match never {},
                }
            }
        } else {
            for l in self.matching_labels(matchers, start_ms, end_ms)? {
                if let Some(v) = l.get(name) {
                    values.insert(v.to_string());
                }
            }
        }
        Ok(values.into_iter().collect())
    }

    /// Prometheus's admin snapshot: `<dir>/snapshots/<name>/<block>/…`,
    /// the head written as one more block unless `skip_head`.
    fn snapshot(&self, skip_head: bool) -> Result<String, StorageError> {
        let name = ulid::Ulid::new().to_string();
        let target = self.dir().join("snapshots").join(&name);
        Db::snapshot(self, &target, !skip_head)
            .map_err(|e| StorageError::Write(format!("snapshot {}: {e}", target.display())))?;
        Ok(name)
    }

    fn delete_series(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<(), StorageError> {
        Db::delete_series(self, matchers, start_ms, end_ms)
            .map(|_| ())
            .map_err(|e| StorageError::Write(e.to_string()))
    }

    fn stats(&self) -> panoptes_model::StoreStats {
        let st = Db::stats(self);
        let mut out = panoptes_model::StoreStats {
            num_series: st.head_series,
            chunk_count: st.head_chunks,
            min_time_ms: st.head_min_time,
            max_time_ms: st.head_max_time,
            ..Default::default()
        };
        // Cardinality lists as Prometheus's status page shows them (top 10).
        if let Ok(a) = self.analyze(10) {
            out.series_count_by_metric_name = a.top_metrics;
            out.label_value_count_by_label_name = a.top_label_names;
            out.series_count_by_label_value_pair = a
                .top_label_pairs
                .into_iter()
                .map(|(n, v, c)| (format!("{n}={v}"), c))
                .collect();
            out.num_label_pairs = out.series_count_by_label_value_pair.len() as u64;
        }
        out
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Err(e) = self.wal.get_mut().sync() {
            tracing::error!(error = %e, "final WAL fsync failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::{stale_nan, MatchOp, Sample, STALE_NAN_BITS};

    fn opts() -> Options {
        Options {
            block_duration_ms: 10_000,
            retention_ms: 1_000_000,
            ..Options::default()
        }
    }

    fn batch(samples: &[(&str, i64, f64)]) -> SampleBatch {
        let mut b = SampleBatch::new("test");
        for (job, t, v) in samples {
            b.samples.push(Sample {
                labels: Labels::from_pairs([("__name__", "up"), ("job", *job)]),
                timestamp_ms: *t,
                value: *v,
            });
        }
        b
    }

    fn all(db: &Db) -> Vec<(String, Vec<(i64, u64)>)> {
        db.select(&[], i64::MIN, i64::MAX)
            .unwrap()
            .into_iter()
            .map(|s| {
                (
                    s.labels.get("job").unwrap_or("").to_string(),
                    s.samples.iter().map(|x| (x.0, x.1.to_bits())).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn snapshot_opens_as_a_database_with_the_same_data() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("db"), opts()).unwrap();
        for t in (0..40_000).step_by(700) {
            db.append(&batch(&[("a", t, t as f64), ("b", t, stale_nan())]))
                .unwrap();
        }
        db.cut_head_blocks().unwrap();
        assert!(!db.blocks().is_empty());
        let want = all(&db);
        let snap = dir.path().join("snap");
        let written = db.snapshot(&snap, true).unwrap();
        assert_eq!(written.len(), db.blocks().len() + 1);
        let copy = Db::open(&snap, opts()).unwrap();
        assert_eq!(all(&copy), want);
        // Without the head: only what is in blocks.
        let snap2 = dir.path().join("snap2");
        db.snapshot(&snap2, false).unwrap();
        let copy2 = Db::open(&snap2, opts()).unwrap();
        let max_block = db.blocks().iter().map(|b| b.meta.max_time).max().unwrap();
        assert!(all(&copy2)
            .iter()
            .all(|(_, s)| s.iter().all(|x| x.0 < max_block)));
    }

    #[test]
    fn deleted_series_stay_deleted_across_reopen_cut_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        for t in (0..40_000).step_by(500) {
            db.append(&batch(&[("a", t, t as f64), ("b", t, 1.0)]))
                .unwrap();
        }
        db.cut_head_blocks().unwrap();
        let m = [Matcher::equal("job", "a")];
        // Spans blocks and head.
        let n = db.delete_series(&m, 5_000, 32_000).unwrap();
        assert!(n >= 2, "{n}");
        let check = |db: &Db| {
            let got = db.select(&m, i64::MIN, i64::MAX).unwrap();
            let ts: Vec<i64> = got[0].samples.iter().map(|s| s.0).collect();
            assert!(ts.iter().all(|&t| !(5_000..=32_000).contains(&t)), "{ts:?}");
            assert_eq!(ts.first(), Some(&0));
            assert_eq!(ts.last(), Some(&39_500));
            let other = db
                .select(&[Matcher::equal("job", "b")], i64::MIN, i64::MAX)
                .unwrap();
            assert_eq!(other[0].samples.len(), 80);
        };
        check(&db);
        // Appends after the deletion still work and are kept.
        db.append(&batch(&[("a", 40_000, 1.0)])).unwrap();
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        let got = db.select(&m, 40_000, 40_000).unwrap();
        assert_eq!(got[0].samples.len(), 1);
        for t in (40_500..80_000).step_by(500) {
            db.append(&batch(&[("a", t, 1.0), ("b", t, 1.0)])).unwrap();
        }
        db.cut_head_blocks().unwrap();
        db.compact().unwrap();
        let got = db.select(&m, 0, 39_999).unwrap();
        let ts: Vec<i64> = got[0].samples.iter().map(|s| s.0).collect();
        assert!(ts.iter().all(|&t| !(5_000..=32_000).contains(&t)), "{ts:?}");
        assert_eq!(ts.len(), 10 + 15);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        assert!(matches!(
            Db::open(dir.path(), opts()),
            Err(TsdbError::Locked { .. })
        ));
        drop(db);
        Db::open(dir.path(), opts()).unwrap();
    }

    #[test]
    fn append_replay_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        let out = db
            .append(&batch(&[
                ("a", 1000, 1.0),
                ("b", 1000, 2.0),
                ("a", 2000, stale_nan()),
            ]))
            .unwrap();
        assert_eq!(out.appended, 3);
        assert_eq!(out.new_series, 2);
        let out = db
            .append(&batch(&[
                ("a", 1500, 1.0),
                ("b", 1000, 3.0),
                ("b", 1000, 2.0),
            ]))
            .unwrap();
        assert_eq!(out.appended, 0);
        assert_eq!(out.ignored, 1);
        assert_eq!(
            out.rejected,
            vec![(RejectReason::OutOfOrder, 1), (RejectReason::Duplicate, 1)]
        );
        let before = all(&db);
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(all(&db), before);
        assert_eq!(before[0].1[1].1, STALE_NAN_BITS);
    }

    #[test]
    fn blocks_are_cut_merged_with_head_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        for t in (0..40_000).step_by(500) {
            db.append(&batch(&[("a", t, t as f64), ("b", t, 1.0)]))
                .unwrap();
        }
        let before = all(&db);
        assert!(db.cut_head_blocks().unwrap() >= 2);
        assert_eq!(all(&db), before);
        let m = [Matcher::equal("job", "a")];
        let got = db.select(&m, 9_000, 11_000).unwrap();
        assert_eq!(got[0].samples.len(), 5);
        assert_eq!(
            db.label_values("job", &[], i64::MIN, i64::MAX).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            db.label_names(&m, 0, 5_000).unwrap(),
            vec!["__name__", "job"]
        );
        // Bounds from postings, head plus every block holding the series.
        let blocks = db.stats().blocks;
        assert_eq!(db.series_upper_bound(&m), Some(1 + blocks as usize));
        assert_eq!(
            db.series_upper_bound(&[Matcher::equal("job", "zz")]),
            Some(0)
        );
        let regex = Matcher::new(panoptes_model::MatchOp::RegexMatch, "job", "a|b").unwrap();
        assert_eq!(db.series_upper_bound(&[regex]), None);
        // Too old now that the range is in a block.
        let out = db.append(&batch(&[("c", 1000, 1.0)])).unwrap();
        assert_eq!(out.rejected, vec![(RejectReason::TooOld, 1)]);
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(all(&db), before);
        assert!(db.stats().blocks >= 2);
        // The WAL was checkpointed: only recent data is replayed.
        assert!(db.stats().head_min_time >= 20_000);
    }

    #[test]
    fn compaction_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let o = Options {
            block_duration_ms: 10_000,
            retention_ms: 100_000,
            max_block_duration_ms: Some(30_000),
            ..Options::default()
        };
        let db = Db::open(dir.path(), o.clone()).unwrap();
        for t in (0..75_000).step_by(1000) {
            db.append(&batch(&[("a", t, t as f64)])).unwrap();
        }
        db.cut_head_blocks().unwrap();
        let before = all(&db);
        assert_eq!(db.blocks().len(), 6);
        assert_eq!(db.compact().unwrap(), 2);
        let spans: Vec<(i64, i64)> = db
            .blocks()
            .iter()
            .map(|b| (b.meta.min_time, b.meta.max_time))
            .collect();
        assert_eq!(spans, vec![(0, 30_000), (30_000, 60_000)]);
        assert_eq!(all(&db), before);
        drop(db);
        let db = Db::open(dir.path(), o.clone()).unwrap();
        assert_eq!(all(&db), before);
        // Retention: push time forward so the first block ages out.
        for t in (75_000..200_000).step_by(1000) {
            db.append(&batch(&[("a", t, t as f64)])).unwrap();
        }
        db.cut_head_blocks().unwrap();
        db.compact().unwrap();
        assert!(db.apply_retention().unwrap() >= 1);
        assert!(db.blocks().iter().all(|b| b.meta.min_time >= 30_000));
        let got = db.select(&[], 0, 29_999).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn size_retention_deletes_oldest_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        for t in (0..60_000).step_by(100) {
            db.append(&batch(&[("a", t, t as f64)])).unwrap();
        }
        db.cut_head_blocks().unwrap();
        let n = db.blocks().len();
        let mut o = opts();
        o.retention_size = Some(1);
        db.set_options(o);
        assert_eq!(db.apply_retention().unwrap(), n);
        assert!(db.blocks().is_empty());
    }

    #[test]
    fn corrupt_block_is_quarantined_and_the_rest_works() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        for t in (0..40_000).step_by(1000) {
            db.append(&batch(&[("a", t, 1.0)])).unwrap();
        }
        db.cut_head_blocks().unwrap();
        let victim = db.blocks()[0].dir().to_path_buf();
        drop(db);
        let idx = victim.join("index");
        let mut bytes = fs::read(&idx).unwrap();
        bytes[10] ^= 0x55;
        fs::write(&idx, bytes).unwrap();
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_eq!(db.stats().quarantined_blocks, 1);
        assert!(dir
            .path()
            .join("quarantine")
            .join(victim.file_name().unwrap())
            .exists());
        assert!(!db.select(&[], 10_000, 40_000).unwrap().is_empty());
    }

    #[test]
    fn out_of_order_window_persists_through_replay_and_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let o = Options {
            out_of_order_window_ms: 5_000,
            ..opts()
        };
        let db = Db::open(dir.path(), o.clone()).unwrap();
        db.append(&batch(&[
            ("a", 9_000, 9.0),
            ("a", 7_000, 7.0),
            ("a", 8_000, 8.0),
        ]))
        .unwrap();
        let out = db.append(&batch(&[("a", 1_000, 1.0)])).unwrap();
        assert_eq!(out.rejected, vec![(RejectReason::TooOld, 1)]);
        drop(db);
        let db = Db::open(dir.path(), o).unwrap();
        let want = vec![(
            "a".to_string(),
            vec![
                (7_000, 7f64.to_bits()),
                (8_000, 8f64.to_bits()),
                (9_000, 9f64.to_bits()),
            ],
        )];
        assert_eq!(all(&db), want);
        for t in (10_000..40_000).step_by(1000) {
            db.append(&batch(&[("a", t, 1.0)])).unwrap();
        }
        db.cut_head_blocks().unwrap();
        let m = [Matcher::new(MatchOp::RegexMatch, "job", "a").unwrap()];
        let got = db.select(&m, 0, 9_000).unwrap();
        assert_eq!(
            got[0].samples,
            vec![(7_000, 7.0), (8_000, 8.0), (9_000, 9.0)]
        );
    }
}
