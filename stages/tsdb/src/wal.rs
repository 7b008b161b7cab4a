//! The write-ahead log: every accepted batch is written here before
//! `append` returns, and replayed into the head on start.
//!
//! The log is a directory of numbered segment files (`00000000`,
//! `00000001`, …, each at most `segment_size` bytes) plus at most one
//! `checkpoint.NNNNNNNN` directory that condenses segments up to `NNNNNNNN`
//! once their data is in blocks. A record is framed as
//! `[len u32 LE][crc32 u32 LE][type u8][payload]`, the CRC covering type and
//! payload; records never span segments. Series records (reference and
//! labels) are separate from sample records (reference, timestamp, value),
//! and a series record is always written before the first sample that uses
//! it.
//!
//! A torn or corrupt record (short frame, CRC mismatch, zero length) ends the
//! replay: the segment is truncated there and later segments are removed,
//! with a warning — start-up never fails on a damaged tail.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use panoptes_model::{Label, Labels};

use crate::bits::{put_bytes, put_uvarint, put_varint, DecodeError, Decoder};

const REC_SERIES: u8 = 1;
const REC_SAMPLES: u8 = 2;
const REC_TOMBSTONES: u8 = 3;
const FRAME_HEADER: usize = 8;
/// Larger records than this are treated as corruption (a torn length field).
const MAX_RECORD: u32 = 256 << 20;

/// Default segment size: 128 MiB, as Prometheus.
pub const DEFAULT_SEGMENT_SIZE: u64 = 128 << 20;

/// When the WAL is fsynced.
///
/// The default is [`FsyncPolicy::Interval`] of one second. A write that has
/// returned survives the death of the process (it is in the kernel's page
/// cache), which is what `kill -9` and crashes test; fsync only adds
/// protection against power loss and kernel crashes, at a cost of
/// milliseconds per call on most disks. Once a second bounds that window the
/// way Prometheus's page-wise flushing does, without paying an fsync per
/// scrape. Choose [`FsyncPolicy::EveryBatch`] where losing the last second
/// on power loss is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before every append returns.
    EveryBatch,
    /// fsync when at least this long has passed since the last one, from a
    /// periodic tick ([`crate::Db::sync_if_due`]) and off the append path.
    Interval(Duration),
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_secs(1))
    }
}

/// A WAL failure.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("WAL record in {path} at byte {offset}: {source}")]
    Decode {
        path: PathBuf,
        offset: u64,
        #[source]
        source: DecodeError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One decoded WAL record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Series(Vec<(u32, Labels)>),
    Samples(Vec<RefSample>),
    /// Deleted intervals `(ref, mint, maxt)`, inclusive: samples logged
    /// before this record in those ranges are gone.
    Tombstones(Vec<(u32, i64, i64)>),
}

/// A sample addressed by series reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefSample {
    pub r: u32,
    pub t: i64,
    pub v: f64,
}

/// Encodes a series record payload.
pub fn encode_series(series: &[(u32, &Labels)], out: &mut Vec<u8>) {
    out.push(REC_SERIES);
    for (r, labels) in series {
        put_uvarint(out, *r as u64);
        put_uvarint(out, labels.len() as u64);
        for l in labels.iter() {
            put_bytes(out, l.name.as_bytes());
            put_bytes(out, l.value.as_bytes());
        }
    }
}

/// Encodes a samples record payload: a base timestamp, then per sample the
/// reference, the timestamp delta to the base and the raw value bits.
pub fn encode_samples(samples: &[RefSample], out: &mut Vec<u8>) {
    out.push(REC_SAMPLES);
    let base = samples.first().map_or(0, |s| s.t);
    put_varint(out, base);
    for s in samples {
        put_uvarint(out, s.r as u64);
        put_varint(out, s.t.wrapping_sub(base));
        out.extend_from_slice(&s.v.to_bits().to_le_bytes());
    }
}

/// Encodes a tombstones record payload.
pub fn encode_tombstones(ts: &[(u32, i64, i64)], out: &mut Vec<u8>) {
    out.push(REC_TOMBSTONES);
    for &(r, mint, maxt) in ts {
        put_uvarint(out, r as u64);
        put_varint(out, mint);
        put_varint(out, maxt);
    }
}

/// Decodes a record payload (type byte included).
pub fn decode_record(payload: &[u8]) -> Result<Record, DecodeError> {
    let mut d = Decoder::new(payload);
    match d.u8()? {
        REC_SERIES => {
            let mut out = Vec::new();
            while !d.is_empty() {
                let r = d.uvarint()? as u32;
                let n = d.uvarint()? as usize;
                let mut labels = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let name = d.str()?;
                    let value = d.str()?;
                    labels.push(Label::new(name, value));
                }
                let sorted = labels.windows(2).all(|w| w[0].name < w[1].name);
                let labels = if sorted {
                    Labels::from_sorted(labels)
                } else {
                    Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value)))
                };
                out.push((r, labels));
            }
            Ok(Record::Series(out))
        }
        REC_SAMPLES => {
            let mut out = Vec::new();
            if d.is_empty() {
                return Ok(Record::Samples(out));
            }
            let base = d.varint()?;
            while !d.is_empty() {
                let r = d.uvarint()? as u32;
                let t = base.wrapping_add(d.varint()?);
                let v = f64::from_bits(d.u64_le()?);
                out.push(RefSample { r, t, v });
            }
            Ok(Record::Samples(out))
        }
        REC_TOMBSTONES => {
            let mut out = Vec::new();
            while !d.is_empty() {
                let r = d.uvarint()? as u32;
                let mint = d.varint()?;
                let maxt = d.varint()?;
                out.push((r, mint, maxt));
            }
            Ok(Record::Tombstones(out))
        }
        _ => Err(DecodeError {
            offset: 0,
            what: "unknown record type",
        }),
    }
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Segment file name for an index.
pub fn segment_name(i: u32) -> String {
    format!("{i:08}")
}

fn checkpoint_name(i: u32) -> String {
    format!("checkpoint.{i:08}")
}

/// Segment indexes present in a directory, ascending.
fn list_segments(dir: &Path) -> Result<Vec<u32>, WalError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 8 && name.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(i) = name.parse() {
                out.push(i);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The newest complete checkpoint, removing unfinished ones.
fn find_checkpoint(dir: &Path) -> Result<Option<u32>, WalError> {
    let mut best = None;
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix("checkpoint.") else {
            continue;
        };
        if rest.ends_with(".tmp") {
            let p = e.path();
            tracing::warn!(path = %p.display(), "removing unfinished WAL checkpoint");
            fs::remove_dir_all(&p).map_err(io_err(&p))?;
            continue;
        }
        if let Ok(i) = rest.parse::<u32>() {
            best = best.max(Some(i));
        }
    }
    Ok(best)
}

/// Result of reading one file of records.
struct FileScan {
    /// Offset after the last good record.
    good_len: u64,
    corrupt: Option<String>,
}

/// Reads the records of one file, calling `f` for each; stops at the first
/// damaged frame and reports where. Streams through a buffered reader, so a
/// 128 MiB segment never sits in memory whole.
fn scan_file(path: &Path, f: &mut dyn FnMut(Record)) -> Result<FileScan, WalError> {
    let file = File::open(path).map_err(io_err(path))?;
    let file_len = file.metadata().map_err(io_err(path))?.len();
    let mut r = io::BufReader::with_capacity(1 << 20, file);
    let mut pos: u64 = 0;
    let mut header = [0u8; FRAME_HEADER];
    let mut payload = Vec::new();
    let damaged = |pos: u64, why: String| FileScan {
        good_len: pos,
        corrupt: Some(why),
    };
    while pos < file_len {
        if file_len - pos < FRAME_HEADER as u64 {
            return Ok(damaged(pos, "torn record header".into()));
        }
        r.read_exact(&mut header).map_err(io_err(path))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_RECORD {
            return Ok(damaged(pos, format!("invalid record length {len}")));
        }
        let avail = file_len - pos - FRAME_HEADER as u64;
        if len as u64 > avail {
            return Ok(damaged(
                pos,
                format!("torn record: {len} bytes announced, {avail} present"),
            ));
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload).map_err(io_err(path))?;
        if crc32fast::hash(&payload) != crc {
            return Ok(damaged(pos, "checksum mismatch".into()));
        }
        match decode_record(&payload) {
            Ok(rec) => f(rec),
            Err(e) => return Ok(damaged(pos, format!("undecodable record: {e}"))),
        }
        pos += FRAME_HEADER as u64 + len as u64;
    }
    Ok(FileScan {
        good_len: pos,
        corrupt: None,
    })
}

/// What a replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    /// Damaged records found (and dropped together with what followed).
    pub corruptions: u64,
    pub segments: u32,
}

/// Options of the WAL.
#[derive(Clone, Copy, Debug)]
pub struct WalOptions {
    pub segment_size: u64,
    pub fsync: FsyncPolicy,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::default(),
        }
    }
}

/// The open WAL, appending to its newest segment.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    file: File,
    index: u32,
    size: u64,
    last_sync: Instant,
    dirty: bool,
    buf: Vec<u8>,
    /// Total time spent in fsync and the number of calls, for metrics.
    pub fsync_seconds: f64,
    pub fsyncs: u64,
    pub bytes_written: u64,
}

impl Wal {
    /// Opens (creating) the WAL in `dir`, replaying every intact record into
    /// `f` in order: the checkpoint first, then the segments after it.
    /// Damaged tails are cut off. New records go to a fresh segment.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        f: &mut dyn FnMut(Record),
    ) -> Result<(Wal, ReplayReport), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut report = ReplayReport::default();
        let checkpoint = find_checkpoint(dir)?;
        let mut count = |rec: Record| {
            report.records += 1;
            f(rec)
        };
        if let Some(cp) = checkpoint {
            let cp_dir = dir.join(checkpoint_name(cp));
            for seg in list_segments(&cp_dir)? {
                let p = cp_dir.join(segment_name(seg));
                let scan = scan_file(&p, &mut count)?;
                if let Some(why) = scan.corrupt {
                    // A checkpoint is fsynced before it is renamed into place,
                    // so this is media damage: keep what was readable.
                    tracing::warn!(path = %p.display(), offset = scan.good_len, reason = %why, "damaged WAL checkpoint record; the rest of the checkpoint is skipped");
                    report.corruptions += 1;
                    break;
                }
            }
        }
        let all_segments = list_segments(dir)?;
        if let Some(cp) = checkpoint {
            // Segments the checkpoint covers (left by a crash between writing
            // it and deleting them).
            for &seg in all_segments.iter().filter(|&&s| s <= cp) {
                let p = dir.join(segment_name(seg));
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        let segments: Vec<u32> = all_segments
            .into_iter()
            .filter(|&s| checkpoint.is_none_or(|cp| s > cp))
            .collect();
        let mut last = checkpoint.unwrap_or(0);
        let mut damaged_at: Option<usize> = None;
        for (i, &seg) in segments.iter().enumerate() {
            let p = dir.join(segment_name(seg));
            let scan = scan_file(&p, &mut count)?;
            report.segments += 1;
            last = last.max(seg);
            if let Some(why) = scan.corrupt {
                tracing::warn!(path = %p.display(), offset = scan.good_len, reason = %why, "damaged WAL record: truncating the WAL there and dropping what follows");
                report.corruptions += 1;
                let file = OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(io_err(&p))?;
                file.set_len(scan.good_len).map_err(io_err(&p))?;
                file.sync_all().map_err(io_err(&p))?;
                damaged_at = Some(i);
                break;
            }
        }
        if let Some(i) = damaged_at {
            for &seg in &segments[i + 1..] {
                let p = dir.join(segment_name(seg));
                tracing::warn!(path = %p.display(), "removing WAL segment after damaged record");
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        let index = if segments.is_empty() && checkpoint.is_none() {
            0
        } else {
            last + 1
        };
        let (file, path) = create_segment(dir, index)?;
        sync_dir(dir)?;
        drop(path);
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                opts,
                file,
                index,
                size: 0,
                last_sync: Instant::now(),
                dirty: false,
                buf: Vec::with_capacity(64 << 10),
                fsync_seconds: 0.0,
                fsyncs: 0,
                bytes_written: 0,
            },
            report,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes the fsync policy of the open WAL.
    pub fn set_fsync(&mut self, fsync: FsyncPolicy) {
        self.opts.fsync = fsync;
    }

    /// Index of the segment being written.
    pub fn current_segment(&self) -> u32 {
        self.index
    }

    /// Writes records (payloads from [`encode_series`] /
    /// [`encode_samples`]) with one `write` call, so that when this returns
    /// they are in the kernel and survive the process; fsyncs per policy.
    pub fn log(&mut self, payloads: &[&[u8]]) -> Result<(), WalError> {
        self.buf.clear();
        for p in payloads.iter().filter(|p| !p.is_empty()) {
            frame(p, &mut self.buf);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.size > 0 && self.size + self.buf.len() as u64 > self.opts.segment_size {
            self.rotate()?;
        }
        let path = self.dir.join(segment_name(self.index));
        if let Err(e) = self.file.write_all(&self.buf) {
            // A partial write (disk full) leaves a torn record: cut it off so
            // later records stay readable, then report the failure.
            let _ = self.file.set_len(self.size);
            return Err(io_err(&path)(e));
        }
        self.size += self.buf.len() as u64;
        self.bytes_written += self.buf.len() as u64;
        self.dirty = true;
        // With the interval policy the fsync happens off the append path
        // (see `due_sync_handle`), so a slow disk never stalls ingestion.
        if self.opts.fsync == FsyncPolicy::EveryBatch {
            self.sync()?;
        }
        Ok(())
    }

    /// fsyncs the current segment if anything was written since the last
    /// sync.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if !self.dirty {
            return Ok(());
        }
        let start = Instant::now();
        self.file
            .sync_data()
            .map_err(io_err(&self.dir.join(segment_name(self.index))))?;
        self.fsync_seconds += start.elapsed().as_secs_f64();
        self.fsyncs += 1;
        self.last_sync = Instant::now();
        self.dirty = false;
        Ok(())
    }

    /// fsyncs if the interval policy says it is due (for a periodic tick).
    pub fn sync_if_due(&mut self) -> Result<(), WalError> {
        match self.opts.fsync {
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync(),
            _ => Ok(()),
        }
    }

    /// When an interval fsync is due: a second handle on the current
    /// segment, to be fsynced by the caller *without* holding the WAL lock
    /// (appends go on meanwhile; what was written before this call is what
    /// the fsync covers). The WAL counts it as synced.
    pub fn due_sync_handle(&mut self) -> Result<Option<File>, WalError> {
        let due = match self.opts.fsync {
            FsyncPolicy::Interval(d) => self.dirty && self.last_sync.elapsed() >= d,
            FsyncPolicy::EveryBatch => false,
        };
        if !due {
            return Ok(None);
        }
        let f = self
            .file
            .try_clone()
            .map_err(io_err(&self.dir.join(segment_name(self.index))))?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(Some(f))
    }

    /// Records an fsync done on a handle from [`Wal::due_sync_handle`].
    pub fn record_sync(&mut self, seconds: f64) {
        self.fsync_seconds += seconds;
        self.fsyncs += 1;
    }

    /// Closes the current segment and starts the next one; returns the new
    /// segment's index.
    pub fn rotate(&mut self) -> Result<u32, WalError> {
        self.dirty = true;
        self.sync()?;
        let (file, _) = create_segment(&self.dir, self.index + 1)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.index += 1;
        self.size = 0;
        Ok(self.index)
    }

    /// Bytes of all WAL files on disk.
    pub fn disk_size(&self) -> u64 {
        dir_size(&self.dir)
    }
}

fn create_segment(dir: &Path, index: u32) -> Result<(File, PathBuf), WalError> {
    let path = dir.join(segment_name(index));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    Ok((file, path))
}

/// fsyncs a directory so that created, renamed and removed entries persist.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Total size of the files under a directory (recursively).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Condenses every segment before `upto` (exclusive; the caller rotated
/// first, so nothing writes there any more) and the previous checkpoint into
/// `checkpoint.(upto-1)`, keeping series records for which `keep_series` is
/// true and samples at or after `min_t` of kept series; then deletes what it
/// replaced. Runs without the WAL lock: appends go to segments ≥ `upto`.
pub fn checkpoint(
    dir: &Path,
    upto: u32,
    keep_series: &dyn Fn(u32) -> bool,
    min_t: i64,
) -> Result<(), WalError> {
    if upto == 0 {
        return Ok(());
    }
    let previous = find_checkpoint(dir)?;
    let segments: Vec<u32> = list_segments(dir)?
        .into_iter()
        .filter(|&s| s < upto && previous.is_none_or(|cp| s > cp))
        .collect();
    if segments.is_empty() && previous.is_some_and(|cp| cp >= upto - 1) {
        return Ok(());
    }
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(cp) = previous {
        let cp_dir = dir.join(checkpoint_name(cp));
        for seg in list_segments(&cp_dir)? {
            files.push(cp_dir.join(segment_name(seg)));
        }
    }
    files.extend(segments.iter().map(|&s| dir.join(segment_name(s))));

    let name = checkpoint_name(upto - 1);
    let tmp = dir.join(format!("{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let seg_path = tmp.join(segment_name(0));
    let mut out = File::create(&seg_path).map_err(io_err(&seg_path))?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut payload = Vec::new();
    let mut write_err: Option<io::Error> = None;
    let mut flush = |buf: &mut Vec<u8>, out: &mut File, force: bool| {
        if (force || buf.len() > 1 << 20) && write_err.is_none() {
            if let Err(e) = out.write_all(buf) {
                write_err = Some(e);
            }
            buf.clear();
        }
    };

    // Two streaming passes, so replay meets every series record before the
    // samples that use it: series first (few), then samples (many; never
    // held in memory all at once).
    let mut series: Vec<(u32, Labels)> = Vec::new();
    for p in &files {
        let scan = scan_file(p, &mut |rec| {
            if let Record::Series(s) = rec {
                series.extend(s.into_iter().filter(|(r, _)| keep_series(*r)));
            }
        })?;
        if let Some(why) = scan.corrupt {
            tracing::warn!(path = %p.display(), offset = scan.good_len, reason = %why, "damaged record while checkpointing; the rest of that file is skipped");
        }
    }
    // A series logged twice under the same ref (replayed, then re-logged)
    // needs one record.
    series.sort_by_key(|s| s.0);
    series.dedup_by_key(|s| s.0);
    for group in series.chunks(1000) {
        payload.clear();
        let refs: Vec<(u32, &Labels)> = group.iter().map(|(r, l)| (*r, l)).collect();
        encode_series(&refs, &mut payload);
        frame(&payload, &mut buf);
        flush(&mut buf, &mut out, false);
    }
    drop(series);
    let mut kept: Vec<RefSample> = Vec::new();
    for p in &files {
        scan_file(p, &mut |rec| match rec {
            Record::Samples(s) => {
                kept.clear();
                kept.extend(s.into_iter().filter(|x| x.t >= min_t && keep_series(x.r)));
                if !kept.is_empty() {
                    payload.clear();
                    encode_samples(&kept, &mut payload);
                    frame(&payload, &mut buf);
                    flush(&mut buf, &mut out, false);
                }
            }
            // In sequence with the samples, so replay deletes exactly what
            // was logged before them.
            Record::Tombstones(ts) => {
                let ts: Vec<(u32, i64, i64)> = ts
                    .into_iter()
                    .filter(|t| t.2 >= min_t && keep_series(t.0))
                    .collect();
                if !ts.is_empty() {
                    payload.clear();
                    encode_tombstones(&ts, &mut payload);
                    frame(&payload, &mut buf);
                    flush(&mut buf, &mut out, false);
                }
            }
            Record::Series(_) => {}
        })?;
    }
    flush(&mut buf, &mut out, true);
    if let Some(e) = write_err {
        return Err(io_err(&seg_path)(e));
    }
    out.sync_all().map_err(io_err(&seg_path))?;
    sync_dir(&tmp)?;
    let final_dir = dir.join(&name);
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(io_err(&final_dir))?;
    }
    fs::rename(&tmp, &final_dir).map_err(io_err(&tmp))?;
    sync_dir(dir)?;
    for s in segments {
        let p = dir.join(segment_name(s));
        fs::remove_file(&p).map_err(io_err(&p))?;
    }
    if let Some(cp) = previous {
        if cp != upto - 1 {
            let p = dir.join(checkpoint_name(cp));
            fs::remove_dir_all(&p).map_err(io_err(&p))?;
        }
    }
    sync_dir(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(i: u32) -> Labels {
        Labels::from_pairs([("__name__", "m".to_string()), ("i", i.to_string())])
    }

    fn write_some(wal: &mut Wal, from: u32, n: u32) {
        for i in from..from + n {
            let mut s = Vec::new();
            encode_series(&[(i, &labels(i))], &mut s);
            let mut p = Vec::new();
            encode_samples(
                &[RefSample {
                    r: i,
                    t: i as i64 * 1000,
                    v: i as f64,
                }],
                &mut p,
            );
            wal.log(&[&s, &p]).unwrap();
        }
    }

    fn replay(dir: &Path) -> (Vec<Record>, ReplayReport) {
        let mut recs = Vec::new();
        let (_w, rep) = Wal::open(dir, WalOptions::default(), &mut |r| recs.push(r)).unwrap();
        (recs, rep)
    }

    #[test]
    fn records_round_trip_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_size: 200,
            fsync: FsyncPolicy::EveryBatch,
        };
        let (mut wal, _) = Wal::open(dir.path(), opts, &mut |_| {}).unwrap();
        write_some(&mut wal, 0, 20);
        assert!(wal.current_segment() > 2);
        drop(wal);
        let (recs, rep) = replay(dir.path());
        assert_eq!(rep.corruptions, 0);
        assert_eq!(recs.len(), 40);
        assert_eq!(recs[0], Record::Series(vec![(0, labels(0))]));
        let mut t = Vec::new();
        encode_tombstones(&[(7, -3, 99), (1, 0, 0)], &mut t);
        assert_eq!(
            decode_record(&t).unwrap(),
            Record::Tombstones(vec![(7, -3, 99), (1, 0, 0)])
        );
        let stale = panoptes_model::stale_nan();
        let mut p = Vec::new();
        encode_samples(
            &[RefSample {
                r: 3,
                t: -5,
                v: stale,
            }],
            &mut p,
        );
        match decode_record(&p).unwrap() {
            Record::Samples(s) => assert_eq!(s[0].v.to_bits(), panoptes_model::STALE_NAN_BITS),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn interval_fsync_is_handed_out_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::Interval(Duration::from_millis(0)),
        };
        let (mut wal, _) = Wal::open(dir.path(), opts, &mut |_| {}).unwrap();
        assert!(
            wal.due_sync_handle().unwrap().is_none(),
            "nothing written yet"
        );
        write_some(&mut wal, 0, 2);
        let f = wal.due_sync_handle().unwrap().expect("due after a write");
        f.sync_data().unwrap();
        wal.record_sync(0.001);
        assert!(wal.due_sync_handle().unwrap().is_none(), "already synced");
        assert_eq!(wal.fsyncs, 1);
        wal.set_fsync(FsyncPolicy::Interval(Duration::from_secs(3600)));
        write_some(&mut wal, 2, 1);
        assert!(
            wal.due_sync_handle().unwrap().is_none(),
            "not due for an hour"
        );
    }

    #[test]
    fn torn_tail_is_dropped_and_later_appends_survive() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default(), &mut |_| {}).unwrap();
        write_some(&mut wal, 0, 5);
        let seg = dir.path().join(segment_name(wal.current_segment()));
        drop(wal);
        // Tear the last record in half.
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let (recs, rep) = replay(dir.path());
        assert_eq!(rep.corruptions, 1);
        assert_eq!(recs.len(), 9);
        // Replay again: the damage is gone, the new segment is empty.
        let (recs, rep) = replay(dir.path());
        assert_eq!(rep.corruptions, 0);
        assert_eq!(recs.len(), 9);
    }

    #[test]
    fn flipped_bit_truncates_and_drops_following_segments() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WalOptions {
            segment_size: 100,
            fsync: FsyncPolicy::EveryBatch,
        };
        let (mut wal, _) = Wal::open(dir.path(), opts, &mut |_| {}).unwrap();
        write_some(&mut wal, 0, 10);
        drop(wal);
        let first = dir.path().join(segment_name(1));
        let mut data = fs::read(&first).unwrap();
        let n = data.len();
        data[n - 3] ^= 0x10;
        fs::write(&first, data).unwrap();
        let (recs, rep) = replay(dir.path());
        assert_eq!(rep.corruptions, 1);
        assert!(recs.len() < 20);
        assert!(!recs.is_empty());
    }

    #[test]
    fn checkpoint_keeps_live_series_and_recent_samples() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), WalOptions::default(), &mut |_| {}).unwrap();
        write_some(&mut wal, 0, 10);
        let upto = wal.rotate().unwrap();
        write_some(&mut wal, 10, 2);
        checkpoint(dir.path(), upto, &|r| r % 2 == 0, 4000).unwrap();
        drop(wal);
        let (recs, _) = replay(dir.path());
        let n_records = recs.len();
        let mut series = vec![];
        let mut samples = vec![];
        for r in recs {
            match r {
                Record::Series(s) => series.extend(s.into_iter().map(|x| x.0)),
                Record::Samples(s) => samples.extend(s.into_iter().map(|x| x.r)),
                Record::Tombstones(_) => {}
            }
        }
        assert_eq!(series, vec![0, 2, 4, 6, 8, 10, 11]);
        assert_eq!(samples, vec![4, 6, 8, 10, 11]);
        assert!(!dir.path().join(segment_name(0)).exists());
        // A segment the checkpoint covers, left behind by a crash, is
        // ignored and removed on open.
        fs::write(dir.path().join(segment_name(0)), b"junk").unwrap();
        let (recs, rep) = replay(dir.path());
        assert_eq!(rep.corruptions, 0);
        assert_eq!(recs.len(), n_records);
        assert!(!dir.path().join(segment_name(0)).exists());
    }
}
