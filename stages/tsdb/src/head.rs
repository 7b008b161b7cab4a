//! The head: the in-memory, mutable part of the database holding the most
//! recent samples of every active series in Gorilla chunks, with an inverted
//! index (postings per label pair) for selection.
//!
//! Series are addressed by a `u32` reference that is also written to the WAL;
//! references are never reused while the process runs, so postings lists stay
//! sorted by construction (new series always get the largest id). A series
//! keeps the label set its samples arrive with (the scrape cache holds the
//! same allocation), and the postings' label strings are interned so that a
//! million series sharing `job="node"` index one copy of it. Closed chunks
//! live in `chunks_head/` files; a series keeps 20 bytes per closed chunk.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use panoptes_model::{Labels, Matcher, Sym};

use crate::chunk::{self, ChunkError, XorAppender, SAMPLES_PER_CHUNK};
use crate::head_chunks::{DiskChunk, HeadChunkFiles};
use crate::postings::{self, PostingsSource};
use thin_vec::ThinVec;

/// Why a sample was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Older than the newest sample of its series (and outside the
    /// out-of-order window).
    OutOfOrder,
    /// Same timestamp as the newest sample of its series, different value.
    Duplicate,
    /// Older than what the head may still accept: before the end of the
    /// newest persisted block, or further back than the out-of-order window
    /// (or half a block range when out-of-order is off) behind the head's
    /// newest sample.
    TooOld,
    /// A sample with an empty label set (no series can be made of it).
    EmptyLabels,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::OutOfOrder,
        RejectReason::Duplicate,
        RejectReason::TooOld,
        RejectReason::EmptyLabels,
    ];

    /// The label value used in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::Duplicate => "duplicate",
            RejectReason::TooOld => "too_old",
            RejectReason::EmptyLabels => "empty_labels",
        }
    }
}

/// What to do with one sample, decided before it is written anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append to the series' in-order chunk.
    InOrder,
    /// Keep in the series' out-of-order buffer.
    OutOfOrder,
    /// Identical to the newest sample (same timestamp, same bits): ignored
    /// without error, as Prometheus does.
    Ignored,
    Rejected(RejectReason),
}

/// Where a closed chunk's bytes are.
#[derive(Clone, Debug)]
pub enum ChunkData {
    /// In memory; shared so that cutting a block copies no sample data.
    Mem(Arc<[u8]>),
    /// In `chunks_head/` (see [`crate::head_chunks`]).
    Disk(DiskChunk),
}

/// A closed, immutable chunk of one series.
#[derive(Clone, Debug)]
pub struct HeadChunk {
    pub mint: i64,
    pub maxt: i64,
    pub data: ChunkData,
}

impl HeadChunk {
    /// A chunk held in memory.
    pub fn in_memory(mint: i64, maxt: i64, data: Arc<[u8]>) -> Self {
        HeadChunk {
            mint,
            maxt,
            data: ChunkData::Mem(data),
        }
    }

    /// The chunk's bytes, read from disk if needed.
    pub fn bytes<'a>(
        &'a self,
        files: Option<&HeadChunkFiles>,
    ) -> Result<std::borrow::Cow<'a, [u8]>, ChunkError> {
        match &self.data {
            ChunkData::Mem(b) => Ok(std::borrow::Cow::Borrowed(&b[..])),
            ChunkData::Disk(d) => {
                let files = files.ok_or_else(|| ChunkError::Io("no head chunk files".into()))?;
                files
                    .read(d)
                    .map(std::borrow::Cow::Owned)
                    .map_err(|e| ChunkError::Io(e.to_string()))
            }
        }
    }
}

/// A closed chunk of a series as the series keeps it: its time range and
/// where its bytes are. 20 bytes (4-byte aligned: `mint` is kept in two
/// halves): a series gains one every 120 samples and keeps them until the
/// block cut.
#[derive(Clone, Copy, Debug)]
struct ChunkRef {
    mint_lo: u32,
    mint_hi: i32,
    /// `maxt - mint`: a chunk never spans a block range, which is bounded.
    maxt_delta: u32,
    /// The chunk's file: [`HeadChunkFiles`] numbers them within 16 bits.
    file: u16,
    /// A chunk of at most 120 samples is at most ~2.3 KB.
    len: u16,
    offset: u32,
}

/// The largest chunk: a 2-byte count, the first sample (a 10-byte varint
/// time and 8 bytes of value), then at most 19 bytes a sample.
const _: () = assert!(2 + 18 + 19 * SAMPLES_PER_CHUNK as usize <= u16::MAX as usize);

impl ChunkRef {
    fn new(mint: i64, maxt: i64, at: DiskChunk) -> Self {
        ChunkRef {
            mint_lo: mint as u32,
            mint_hi: (mint >> 32) as i32,
            maxt_delta: u32::try_from(maxt.saturating_sub(mint)).unwrap_or(u32::MAX),
            file: u16::try_from(at.file).expect("head chunk files are numbered within 16 bits"),
            len: u16::try_from(at.len).expect("a head chunk is at most a few KB"),
            offset: at.offset,
        }
    }

    fn mint(&self) -> i64 {
        (i64::from(self.mint_hi) << 32) | i64::from(self.mint_lo)
    }

    fn at(&self) -> DiskChunk {
        DiskChunk {
            file: u32::from(self.file),
            offset: self.offset,
            len: u32::from(self.len),
        }
    }

    fn maxt(&self) -> i64 {
        self.mint().saturating_add(i64::from(self.maxt_delta))
    }
}

#[derive(Clone, Debug)]
struct OpenChunk {
    mint: i64,
    app: XorAppender,
}

impl OpenChunk {
    /// The newest sample's time: an open chunk always holds one, and the
    /// encoder keeps it.
    fn maxt(&self) -> i64 {
        self.app.last_t()
    }
}

/// One series in the head.
#[derive(Debug)]
pub struct MemSeries {
    /// The label set: the very allocation the samples arrive with (the
    /// scrape cache holds the same one), so a series' labels are in memory
    /// once however many stages keep them. See [`Head::adopt_labels`].
    labels: Labels,
    /// Closed chunks. Thin vectors (8 bytes, no allocation while empty):
    /// a `MemSeries` is boxed per series, and these two kept it in a
    /// larger allocator size class.
    chunks: ThinVec<ChunkRef>,
    open: Option<OpenChunk>,
    /// Accepted out-of-order samples, sorted by timestamp.
    ooo: ThinVec<(i64, f64)>,
    /// Newest in-order sample (timestamp, value bits); `i64::MIN` if none.
    last_t: i64,
    last_bits: u64,
    /// Whether `last_t`/`last_bits` is still a stored sample (a deletion
    /// may have removed it), so an instant read can answer from it.
    last_stored: bool,
    /// Whether `labels` came with appended samples (creation by an append,
    /// or adopted once after a WAL replay): see [`Head::wants_labels`].
    shares_labels: bool,
}

impl MemSeries {
    fn new(labels: Labels) -> Self {
        MemSeries {
            labels,
            chunks: ThinVec::new(),
            open: None,
            ooo: ThinVec::new(),
            last_t: i64::MIN,
            last_bits: 0,
            last_stored: false,
            shares_labels: false,
        }
    }

    /// The newest sample when it lies in `[mint, maxt]` and is known
    /// without decoding (the common case for an instant read of live data).
    fn latest_within(&self, mint: i64, maxt: i64) -> Option<(i64, f64)> {
        (self.last_stored && self.last_t >= mint && self.last_t <= maxt)
            .then(|| (self.last_t, f64::from_bits(self.last_bits)))
    }

    /// Where an instant read of `[mint, maxt]` must start decoding: the
    /// newest sample at or before `maxt` is in the newest chunk that starts
    /// by `maxt`, so when that chunk starts inside the window, older chunks
    /// (and older out-of-order samples) cannot hold it.
    fn latest_read_start(&self, mint: i64, maxt: i64) -> i64 {
        let start = match &self.open {
            Some(o) if o.mint <= maxt => Some(o.mint),
            _ => self
                .chunks
                .iter()
                .rev()
                .find(|c| c.mint() <= maxt)
                .map(|c| c.mint()),
        };
        start.map_or(mint, |s| s.max(mint))
    }

    fn min_time(&self) -> Option<i64> {
        let a = self
            .chunks
            .first()
            .map(|c| c.mint())
            .or(self.open.as_ref().map(|o| o.mint));
        let b = self.ooo.first().map(|s| s.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn max_time(&self) -> Option<i64> {
        let a = (self.last_t != i64::MIN).then_some(self.last_t);
        let b = self.ooo.last().map(|s| s.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        match (self.min_time(), self.max_time()) {
            (Some(lo), Some(hi)) => lo <= maxt && hi >= mint,
            _ => false,
        }
    }

    /// Samples with `mint ≤ t ≤ maxt`, in-order data winning over
    /// out-of-order data at equal timestamps.
    pub fn samples(
        &self,
        files: &HeadChunkFiles,
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(i64, f64)>, ChunkError> {
        self.samples_with(mint, maxt, |c| {
            files
                .read(&c.at())
                .map(Cow::Owned)
                .map_err(|e| ChunkError::Io(e.to_string()))
        })
    }

    /// [`MemSeries::samples`] with closed chunks' bytes from `bytes_of`.
    fn samples_with<'c, 'b>(
        &'c self,
        mint: i64,
        maxt: i64,
        mut bytes_of: impl FnMut(&'c ChunkRef) -> Result<Cow<'b, [u8]>, ChunkError>,
    ) -> Result<Vec<(i64, f64)>, ChunkError> {
        // Room for the samples in range, estimated from the chunks' counts
        // and time spans (a window is often a part of one chunk), so that
        // the vector is not regrown while decoding.
        let mut estimate = 0usize;
        for c in &self.chunks {
            if c.maxt() >= mint && c.mint() <= maxt {
                estimate += share(c.mint(), c.maxt(), SAMPLES_PER_CHUNK as usize, mint, maxt);
            }
        }
        if let Some(o) = &self.open {
            if o.maxt() >= mint && o.mint <= maxt {
                estimate += share(o.mint, o.maxt(), o.app.count() as usize, mint, maxt);
            }
        }
        let lo = self.ooo.partition_point(|s| s.0 < mint);
        let hi = self.ooo.partition_point(|s| s.0 <= maxt);
        let mut out = Vec::with_capacity(estimate);
        for c in &self.chunks {
            if c.maxt() >= mint && c.mint() <= maxt {
                chunk::decode_range(&bytes_of(c)?, mint, maxt, &mut out)?;
            }
        }
        if let Some(o) = &self.open {
            if o.maxt() >= mint && o.mint <= maxt {
                o.app.decode_range(mint, maxt, &mut out)?;
            }
        }
        if lo < hi {
            out = merge_samples(out, &self.ooo[lo..hi]);
        }
        Ok(out)
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<ChunkRef>()
            + self.open.as_ref().map_or(0, |o| o.app.heap_bytes())
            + self.ooo.capacity() * 16
    }
}

/// About how many of the `n` samples of a chunk spanning `[cmint, cmaxt]`
/// fall in `[mint, maxt]` (assuming even spacing), rounded up.
fn share(cmint: i64, cmaxt: i64, n: usize, mint: i64, maxt: i64) -> usize {
    let span = cmaxt.saturating_sub(cmint);
    let lo = cmint.max(mint);
    let hi = cmaxt.min(maxt);
    if span <= 0 || hi < lo {
        return n.min(1);
    }
    let frac = (hi.saturating_sub(lo)) as f64 / span as f64;
    ((n as f64 * frac).ceil() as usize + 1).min(n)
}

/// Bytes of closed on-disk chunks read for one select. Chunks are sorted
/// by position and neighbours (at most [`READ_GAP`] apart) are read
/// together, so a select costs a few large `pread`s rather than one per
/// chunk: series whose chunks filled up in the same scrape sit side by side.
#[derive(Default)]
struct DiskReads {
    /// `(file, offset, len, buffer, start in buffer)`, sorted by position.
    index: Vec<(u32, u32, u32, u32, usize)>,
    bufs: Vec<Vec<u8>>,
}

/// Largest hole between two chunks that are still read in one go.
const READ_GAP: u64 = 4096;

/// Largest single read.
const READ_MAX: u64 = 64 << 10;

/// Initial buffer of an open chunk: a new chunk starts small and grows by a
/// quarter at a time, so that the open chunks (one per series, on average
/// half full) hold little unused capacity.
const OPEN_CHUNK_START_BYTES: usize = 48;

impl DiskReads {
    fn read(
        files: &HeadChunkFiles,
        chunks: impl Iterator<Item = DiskChunk>,
    ) -> Result<Self, ChunkError> {
        let mut want: Vec<DiskChunk> = chunks.collect();
        if want.is_empty() {
            return Ok(DiskReads::default());
        }
        want.sort_unstable_by_key(|d| (d.file, d.offset));
        want.dedup_by_key(|d| (d.file, d.offset));
        let mut out = DiskReads {
            index: Vec::with_capacity(want.len()),
            bufs: Vec::new(),
        };
        let mut i = 0;
        while i < want.len() {
            let first = want[i];
            let start = u64::from(first.offset);
            let mut end = start + u64::from(first.len);
            let mut j = i + 1;
            while let Some(d) = want.get(j) {
                let d_end = u64::from(d.offset) + u64::from(d.len);
                if d.file != first.file
                    || u64::from(d.offset) > end + READ_GAP
                    || d_end.max(end) - start > READ_MAX
                {
                    break;
                }
                end = end.max(d_end);
                j += 1;
            }
            let span = DiskChunk {
                file: first.file,
                offset: first.offset,
                len: (end - start) as u32,
            };
            let buf = files
                .read(&span)
                .map_err(|e| ChunkError::Io(e.to_string()))?;
            for d in &want[i..j] {
                out.index.push((
                    d.file,
                    d.offset,
                    d.len,
                    out.bufs.len() as u32,
                    (d.offset - first.offset) as usize,
                ));
            }
            out.bufs.push(buf);
            i = j;
        }
        Ok(out)
    }

    fn get(&self, d: &DiskChunk) -> Result<&[u8], ChunkError> {
        let k = self
            .index
            .binary_search_by_key(&(d.file, d.offset), |e| (e.0, e.1))
            .map_err(|_| ChunkError::Io("head chunk was not read".into()))?;
        let (_, _, len, buf, start) = self.index[k];
        self.bufs[buf as usize]
            .get(start..start + len.min(d.len) as usize)
            .ok_or_else(|| ChunkError::Io("head chunk was not read".into()))
    }
}

/// Samples in the first chunk of series `r` in a block range, 60 to 119 by
/// group of 1024 consecutive references. Series created together, and all
/// series at a block boundary, would otherwise fill and cut their chunks in
/// step: every open chunk nearly full at once, the head's memory peaking at
/// twice its average. Per group rather than per series, so that the series
/// of one group (created together) still cut together and their new chunk
/// buffers are allocated side by side, which the appends' locality needs
/// (per-series staggering cost ~6% of ingest CPU). Later chunks hold 120.
fn first_chunk_len(r: u32) -> u16 {
    let half = SAMPLES_PER_CHUNK / 2;
    let group = u64::from(r >> 10);
    let mixed = (group.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u16;
    half + mixed % half
}

/// Puts a closed chunk's bytes in the chunk files; if the disk refuses, in
/// memory rather than lose it (the WAL has the samples too).
fn store_chunk(files: &mut HeadChunkFiles, bytes: &[u8], maxt: i64) -> DiskChunk {
    files.write(bytes, maxt).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot write head chunk to disk; keeping it in memory");
        files.write_in_memory(bytes, maxt)
    })
}

/// Appends to a series' chunk list, growing it one entry at a time while
/// it is short (an allocation per two minutes of a series; a spare entry
/// would often push the list into the next allocator size class), then by a
/// quarter (every series has one, and it only grows until the block cut).
fn push_chunk(chunks: &mut ThinVec<ChunkRef>, c: ChunkRef) {
    if chunks.len() == chunks.capacity() {
        let len = chunks.len();
        chunks.reserve_exact(if len < 8 { 1 } else { len / 4 });
    }
    chunks.push(c);
}

/// Merges two sorted sample lists; on equal timestamps the first wins.
pub fn merge_samples(a: Vec<(i64, f64)>, b: &[(i64, f64)]) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j >= b.len() || (i < a.len() && a[i].0 <= b[j].0) {
            if j < b.len() && a[i].0 == b[j].0 {
                j += 1;
            }
            out.push(a[i]);
            i += 1;
        } else {
            out.push(b[j]);
            j += 1;
        }
    }
    out
}

/// One selected series: labels and samples in time order.
pub type SelectedSeries = (Labels, Vec<(i64, f64)>);

/// Per-series data handed to the block writer when the head is cut.
pub struct SeriesData {
    pub labels: Labels,
    /// Encoded chunks with their time ranges, in time order.
    pub chunks: Vec<HeadChunk>,
}

/// Counters describing the head, for self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadStats {
    pub series: u64,
    pub chunks: u64,
    pub bytes: u64,
    pub min_time: i64,
    pub max_time: i64,
}

/// The in-memory head.
#[derive(Debug)]
pub struct Head {
    series: Vec<Option<Box<MemSeries>>>,
    live: usize,
    by_hash: HashMap<u64, u32, IdentityHash>,
    /// Refs whose label hash collided with another live series' hash.
    collisions: HashMap<u64, Vec<u32>, IdentityHash>,
    postings: HashMap<Sym, HashMap<Sym, Vec<u32>>>,
    symbols: HashSet<Sym, SymbolHash>,
    /// Samples older than this are refused (end of the newest block).
    min_valid_t: i64,
    max_t: i64,
    min_t: i64,
    block_range: i64,
    ooo_window: i64,
    chunk_count: u64,
    /// Where closed chunks go (memory until a directory is set).
    files: HeadChunkFiles,
}

impl Head {
    pub fn new(block_range_ms: i64, ooo_window_ms: i64) -> Self {
        Head {
            series: Vec::new(),
            live: 0,
            by_hash: HashMap::default(),
            collisions: HashMap::default(),
            postings: HashMap::new(),
            symbols: HashSet::default(),
            min_valid_t: i64::MIN,
            max_t: i64::MIN,
            min_t: i64::MAX,
            block_range: block_range_ms.max(1),
            ooo_window: ooo_window_ms.max(0),
            chunk_count: 0,
            files: HeadChunkFiles::in_memory(),
        }
    }

    /// Moves closed chunks to files from now on.
    pub fn set_chunk_files(&mut self, files: HeadChunkFiles) {
        self.files = files;
    }

    /// Bytes of closed chunks on disk.
    pub fn chunk_file_bytes(&self) -> u64 {
        self.files.size()
    }

    /// Decodes one closed chunk (for block writing).
    pub fn decode_chunk(&self, c: &HeadChunk) -> Result<Vec<(i64, f64)>, ChunkError> {
        chunk::decode(&c.bytes(Some(&self.files))?)
    }

    pub fn set_ooo_window(&mut self, ms: i64) {
        self.ooo_window = ms.max(0);
    }

    pub fn set_min_valid_time(&mut self, t: i64) {
        self.min_valid_t = self.min_valid_t.max(t);
    }

    pub fn min_valid_time(&self) -> i64 {
        self.min_valid_t
    }

    /// Newest sample timestamp in the head (`i64::MIN` when empty).
    pub fn max_time(&self) -> i64 {
        self.max_t
    }

    /// Oldest sample timestamp in the head (`i64::MAX` when empty).
    pub fn min_time(&self) -> i64 {
        self.min_t
    }

    pub fn stats(&self) -> HeadStats {
        HeadStats {
            series: self.live as u64,
            chunks: self.chunk_count,
            // Closed chunks kept in memory (no directory, or the disk
            // refused them) count as the in-memory chunks they replaced did.
            bytes: self
                .series
                .iter()
                .flatten()
                .map(|s| s.heap_bytes() as u64)
                .sum::<u64>()
                + self.files.memory_bytes(),
            min_time: self.min_t,
            max_time: self.max_t,
        }
    }

    pub fn num_series(&self) -> usize {
        self.live
    }

    /// The next reference that [`Head::create`] will hand out.
    pub fn next_ref(&self) -> u32 {
        self.series.len() as u32
    }

    /// The reference of an existing series.
    pub fn lookup(&self, labels: &Labels) -> Option<u32> {
        let mut key = Vec::new();
        let h = label_hash(labels, &mut key);
        self.lookup_key(&key, h)
    }

    /// [`Head::lookup`] by series key and hash, both as [`label_hash`]
    /// produces them.
    pub fn lookup_key(&self, key: &[u8], h: u64) -> Option<u32> {
        if let Some(&r) = self.by_hash.get(&h) {
            if self.get(r).is_some_and(|s| key_matches(&s.labels, key)) {
                return Some(r);
            }
        }
        self.collisions
            .get(&h)?
            .iter()
            .copied()
            .find(|&r| self.get(r).is_some_and(|s| key_matches(&s.labels, key)))
    }

    /// The label set of a series.
    pub fn labels_of(&self, s: &MemSeries) -> Labels {
        s.labels.clone()
    }

    /// Whether series `r` holds a label set of its own (read back from
    /// the WAL) that [`Head::adopt_labels`] should swap for the one its
    /// samples arrive with. Once only: a sender that builds new label sets
    /// for every batch must not make every batch swap.
    pub fn wants_labels(&self, r: u32) -> bool {
        self.get(r).is_some_and(|s| !s.shares_labels)
    }

    /// Makes series `r` keep `labels` (equal to its own) instead of its
    /// current allocation, so that it shares the one its samples arrive
    /// with (the scrape cache keeps it too).
    pub fn adopt_labels(&mut self, r: u32, labels: &Labels) {
        if let Some(s) = self
            .series
            .get_mut(r as usize)
            .and_then(|s| s.as_deref_mut())
        {
            if !s.shares_labels && s.labels == *labels {
                s.labels = labels.clone();
                s.shares_labels = true;
            }
        }
    }

    /// Labels of a series by reference.
    pub fn series_labels_of(&self, r: u32) -> Option<Labels> {
        self.get(r).map(|s| self.labels_of(s))
    }

    pub fn get(&self, r: u32) -> Option<&MemSeries> {
        self.series.get(r as usize)?.as_deref()
    }

    fn intern(&mut self, s: &Sym) -> Sym {
        if let Some(x) = self.symbols.get(s) {
            return x.clone();
        }
        self.symbols.insert(s.clone());
        s.clone()
    }

    /// Creates a series with a given reference (WAL replay) or the next one.
    /// Returns the existing reference if the label set is already present.
    pub fn create(&mut self, labels: &Labels, want_ref: Option<u32>) -> u32 {
        let mut key = Vec::new();
        let h = label_hash(labels, &mut key);
        self.create_keyed(labels, &key, h, want_ref)
    }

    /// [`Head::create`] with the series key and hash already computed by
    /// [`label_hash`].
    pub fn create_keyed(
        &mut self,
        labels: &Labels,
        key: &[u8],
        h: u64,
        want_ref: Option<u32>,
    ) -> u32 {
        if let Some(r) = self.lookup_key(key, h) {
            return r;
        }
        let r = match want_ref {
            Some(r) if (r as usize) >= self.series.len() => r,
            Some(r) if self.series[r as usize].is_none() => r,
            _ => self.series.len() as u32,
        };
        for l in labels.iter() {
            let (name, value) = (self.intern(&l.name), self.intern(&l.value));
            let list = self
                .postings
                .entry(name)
                .or_default()
                .entry(value)
                .or_default();
            insert_sorted(list, r);
        }
        match self.by_hash.get(&h) {
            Some(&other) if self.get(other).is_some() => {
                self.collisions.entry(h).or_default().push(r)
            }
            _ => {
                self.by_hash.insert(h, r);
            }
        }
        if (r as usize) >= self.series.len() {
            self.series.resize_with(r as usize + 1, || None);
        }
        let mut series = MemSeries::new(labels.clone());
        // Created by an append (no reference asked for): the labels are the
        // sender's. A WAL replay's are the head's own until adopted.
        series.shares_labels = want_ref.is_none();
        self.series[r as usize] = Some(Box::new(series));
        self.live += 1;
        r
    }

    /// Decides what to do with a sample given the series' newest sample
    /// `(last_t, last_bits)` (which may include earlier samples of the same
    /// batch) and its out-of-order buffer.
    pub fn verdict(&self, r: u32, last: (i64, u64), t: i64, v: f64) -> Verdict {
        let (last_t, last_bits) = last;
        if t < self.min_valid_t {
            return Verdict::Rejected(RejectReason::TooOld);
        }
        // As Prometheus: without an out-of-order window, nothing more than
        // half a block range behind the head's newest sample is accepted, so
        // the block about to be cut is not written into.
        if self.ooo_window == 0
            && self.max_t != i64::MIN
            && t < self.max_t.saturating_sub(self.block_range / 2)
        {
            return Verdict::Rejected(RejectReason::TooOld);
        }
        if last_t == i64::MIN || t > last_t {
            return Verdict::InOrder;
        }
        if t == last_t {
            return if v.to_bits() == last_bits {
                Verdict::Ignored
            } else {
                Verdict::Rejected(RejectReason::Duplicate)
            };
        }
        if self.ooo_window == 0 {
            return Verdict::Rejected(RejectReason::OutOfOrder);
        }
        let head_max = self.max_t.max(last_t);
        if t < head_max.saturating_sub(self.ooo_window) {
            return Verdict::Rejected(RejectReason::TooOld);
        }
        if let Some(s) = self.get(r) {
            if let Ok(i) = s.ooo.binary_search_by_key(&t, |x| x.0) {
                return if s.ooo[i].1.to_bits() == v.to_bits() {
                    Verdict::Ignored
                } else {
                    Verdict::Rejected(RejectReason::Duplicate)
                };
            }
        }
        Verdict::OutOfOrder
    }

    /// The newest in-order sample of a series, `(i64::MIN, 0)` if none.
    pub fn last_sample(&self, r: u32) -> (i64, u64) {
        self.get(r)
            .map_or((i64::MIN, 0), |s| (s.last_t, s.last_bits))
    }

    /// Appends a sample already judged [`Verdict::InOrder`] or
    /// [`Verdict::OutOfOrder`]. Unknown references are ignored.
    pub fn apply(&mut self, r: u32, t: i64, v: f64, verdict: Verdict) {
        let range = self.block_range;
        let Some(s) = self
            .series
            .get_mut(r as usize)
            .and_then(|s| s.as_deref_mut())
        else {
            return;
        };
        match verdict {
            Verdict::InOrder => {
                if t <= s.last_t {
                    return;
                }
                let cut = match &s.open {
                    None => true,
                    Some(o) => {
                        let n = o.app.count();
                        let block = o.mint.div_euclid(range);
                        n >= SAMPLES_PER_CHUNK
                            || t.div_euclid(range) != block
                            // Checked once per chunk (at that count), not
                            // per sample: reading the chunk list is a cache
                            // miss.
                            || (n == first_chunk_len(r)
                                && s.chunks
                                    .last()
                                    .is_none_or(|c| c.mint().div_euclid(range) != block))
                    }
                };
                if cut {
                    if let Some(o) = s.open.take() {
                        let maxt = o.maxt();
                        let bytes = o.app.finish();
                        let at = store_chunk(&mut self.files, &bytes, maxt);
                        push_chunk(&mut s.chunks, ChunkRef::new(o.mint, maxt, at));
                    }
                    s.open = Some(OpenChunk {
                        mint: t,
                        app: XorAppender::with_capacity(OPEN_CHUNK_START_BYTES),
                    });
                    self.chunk_count += 1;
                }
                if let Some(o) = s.open.as_mut() {
                    o.app.append(t, v);
                }
                s.last_t = t;
                s.last_bits = v.to_bits();
                s.last_stored = true;
            }
            Verdict::OutOfOrder => match s.ooo.binary_search_by_key(&t, |x| x.0) {
                Ok(_) => return,
                Err(i) => s.ooo.insert(i, (t, v)),
            },
            Verdict::Ignored | Verdict::Rejected(_) => return,
        }
        self.max_t = self.max_t.max(t);
        self.min_t = self.min_t.min(t);
    }

    /// Applies a sample read back from the WAL: it was accepted once, so
    /// only what is now persisted in blocks or already present is skipped.
    pub fn apply_replayed(&mut self, r: u32, t: i64, v: f64) {
        if t < self.min_valid_t {
            return;
        }
        let (last_t, _) = self.last_sample(r);
        let verdict = if last_t == i64::MIN || t > last_t {
            Verdict::InOrder
        } else if t == last_t {
            return;
        } else {
            Verdict::OutOfOrder
        };
        self.apply(r, t, v, verdict);
    }

    /// Whether a series has samples in `[mint, maxt]`.
    pub fn has_samples(&self, r: u32, mint: i64, maxt: i64) -> bool {
        self.get(r).is_some_and(|s| {
            s.overlaps(mint, maxt)
                && s.samples(&self.files, mint, maxt)
                    .map_or(true, |v| !v.is_empty())
        })
    }

    /// Deletes a series' samples in `[mint, maxt]` (inclusive). The
    /// remaining samples are re-encoded into in-memory chunks; the newest
    /// timestamp stays what it was, so later appends must still be newer.
    pub fn delete_range(&mut self, r: u32, mint: i64, maxt: i64) -> Result<(), ChunkError> {
        let files = &self.files;
        let Some(s) = self.series.get(r as usize).and_then(|s| s.as_deref()) else {
            return Ok(());
        };
        let all = s.samples(files, i64::MIN, i64::MAX)?;
        if !all.iter().any(|x| x.0 >= mint && x.0 <= maxt) {
            return Ok(());
        }
        let in_order: Vec<(i64, f64)> = {
            // Rebuild from every stored sample: out-of-order ones are merged
            // into the chunks (their buffer is emptied).
            all.into_iter()
                .filter(|x| x.0 < mint || x.0 > maxt)
                .collect()
        };
        let Some(s) = self
            .series
            .get_mut(r as usize)
            .and_then(|s| s.as_deref_mut())
        else {
            return Ok(());
        };
        let before = s.chunks.len() as u64 + u64::from(s.open.is_some());
        let range = self.block_range;
        // Chunks must not span a block boundary (block cuts take whole
        // chunks), so split at boundaries as well as every 120 samples.
        let mut chunks = ThinVec::new();
        let mut start = 0;
        for i in 1..=in_order.len() {
            if i == in_order.len()
                || in_order[i].0.div_euclid(range) != in_order[start].0.div_euclid(range)
            {
                for c in encode_chunks(&in_order[start..i]) {
                    let bytes = c.bytes(None)?;
                    let at = store_chunk(&mut self.files, &bytes, c.maxt);
                    chunks.push(ChunkRef::new(c.mint, c.maxt, at));
                }
                start = i;
            }
        }
        s.chunks = chunks;
        s.open = None;
        s.ooo.clear();
        s.last_stored = false;
        let after = s.chunks.len() as u64;
        self.chunk_count = self.chunk_count.saturating_sub(before) + after;
        Ok(())
    }

    /// Series references matching the matchers, sorted.
    pub fn select_refs(&self, matchers: &[Matcher]) -> Vec<u32> {
        match postings::select(self, matchers) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// Matching series with their samples in `[mint, maxt]` (series without
    /// samples there are left out).
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, ChunkError> {
        self.select_with(matchers, mint, maxt, false)
    }

    /// [`Head::select`] keeping only each series' newest sample in the
    /// range, dropped series by series, so that memory stays one sample per
    /// series however wide the selection.
    pub fn select_latest(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, ChunkError> {
        self.select_with(matchers, mint, maxt, true)
    }

    fn select_with(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        latest_only: bool,
    ) -> Result<Vec<SelectedSeries>, ChunkError> {
        let mut out = Vec::new();
        if self.max_t < mint || self.min_t > maxt {
            return Ok(out);
        }
        let series: Vec<&MemSeries> = self
            .select_refs(matchers)
            .into_iter()
            .filter_map(|r| self.get(r))
            .filter(|s| s.overlaps(mint, maxt))
            .collect();
        // An instant read of live data needs only each series' newest
        // sample, which the series keeps: no chunk is decoded or read.
        let latest = |s: &MemSeries| {
            if latest_only {
                s.latest_within(mint, maxt)
            } else {
                None
            }
        };
        // An instant read decodes only the chunk its answer is in.
        let read_start = |s: &MemSeries| {
            if latest_only {
                s.latest_read_start(mint, maxt)
            } else {
                mint
            }
        };
        // Closed chunks on disk are read in few large reads rather than one
        // `pread` each: chunks that filled up together sit side by side.
        let disk = DiskReads::read(
            &self.files,
            series.iter().filter(|s| latest(s).is_none()).flat_map(|s| {
                let from = read_start(s);
                s.chunks
                    .iter()
                    .filter(move |c| c.maxt() >= from && c.mint() <= maxt)
                    .map(|c| c.at())
            }),
        )?;
        out.reserve(series.len());
        for s in series {
            if let Some(sample) = latest(s) {
                out.push((s.labels.clone(), vec![sample]));
                continue;
            }
            let from = read_start(s);
            let mut samples =
                s.samples_with(from, maxt, |c| disk.get(&c.at()).map(Cow::Borrowed))?;
            if latest_only {
                panoptes_model::keep_latest(&mut samples);
            }
            if !samples.is_empty() {
                out.push((s.labels.clone(), samples));
            }
        }
        Ok(out)
    }

    /// Label sets of matching series that have data overlapping the range.
    pub fn series_labels(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        if self.max_t < mint || self.min_t > maxt {
            return Vec::new();
        }
        self.select_refs(matchers)
            .into_iter()
            .filter_map(|r| self.get(r))
            .filter(|s| s.overlaps(mint, maxt))
            .map(|s| s.labels.clone())
            .collect()
    }

    /// Every label name in the head.
    pub fn label_names(&self) -> Vec<String> {
        self.postings.keys().map(|k| k.to_string()).collect()
    }

    /// Copies out the data of `[mint, maxt)` for a block: chunks entirely in
    /// the range are reused as they are; series with out-of-order samples in
    /// the range are re-encoded. Returned sorted by labels.
    pub fn block_data(&self, mint: i64, maxt: i64) -> Result<Vec<SeriesData>, ChunkError> {
        let mut out = Vec::new();
        for s in self.series.iter().flatten() {
            let has_ooo = s.ooo.iter().any(|x| x.0 >= mint && x.0 < maxt);
            let mut chunks = Vec::new();
            if has_ooo {
                let samples = s.samples(&self.files, mint, maxt - 1)?;
                chunks = encode_chunks(&samples);
            } else {
                for c in &s.chunks {
                    if c.mint() >= mint && c.maxt() < maxt {
                        chunks.push(HeadChunk {
                            mint: c.mint(),
                            maxt: c.maxt(),
                            data: ChunkData::Disk(c.at()),
                        });
                    }
                }
                if let Some(o) = &s.open {
                    if o.mint >= mint && o.maxt() < maxt {
                        chunks.push(HeadChunk::in_memory(
                            o.mint,
                            o.maxt(),
                            Arc::from(o.app.bytes().as_slice()),
                        ));
                    }
                }
            }
            if !chunks.is_empty() {
                out.push(SeriesData {
                    labels: self.labels_of(s),
                    chunks,
                });
            }
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Drops everything before `t` (now persisted in a block) and series left
    /// with no data; samples before `t` are refused from now on. Returns the
    /// references removed.
    pub fn truncate(&mut self, t: i64) -> Vec<u32> {
        self.set_min_valid_time(t);
        let mut removed = Vec::new();
        let mut min_t = i64::MAX;
        let mut dropped_chunks = 0u64;
        for (r, slot) in self.series.iter_mut().enumerate() {
            let Some(s) = slot.as_deref_mut() else {
                continue;
            };
            let before = s.chunks.len();
            s.chunks.retain(|c| c.maxt() >= t);
            dropped_chunks += (before - s.chunks.len()) as u64;
            if s.open.as_ref().is_some_and(|o| o.maxt() < t) {
                s.open = None;
                dropped_chunks += 1;
            }
            s.ooo.retain(|x| x.0 >= t);
            if s.chunks.is_empty() && s.open.is_none() && s.ooo.is_empty() {
                removed.push(r as u32);
            } else if let Some(m) = s.min_time() {
                min_t = min_t.min(m);
            }
        }
        self.chunk_count = self.chunk_count.saturating_sub(dropped_chunks);
        self.files.truncate(t);
        for &r in &removed {
            self.remove(r);
        }
        // `max_t` stays: it still bounds what the head accepts next.
        self.min_t = min_t;
        removed
    }

    fn remove(&mut self, r: u32) {
        let Some(labels) = self.series_labels_of(r) else {
            return;
        };
        self.series[r as usize] = None;
        self.live -= 1;
        for l in labels.iter() {
            if let Some(vals) = self.postings.get_mut(&l.name) {
                if let Some(list) = vals.get_mut(&l.value) {
                    if let Ok(i) = list.binary_search(&r) {
                        list.remove(i);
                    }
                    if list.is_empty() {
                        vals.remove(&l.value);
                    }
                }
                if vals.is_empty() {
                    self.postings.remove(&l.name);
                }
            }
        }
        let h = labels.stable_hash();
        if self.by_hash.get(&h) == Some(&r) {
            self.by_hash.remove(&h);
            // Promote a colliding series, if any, to the primary slot.
            if let Some(list) = self.collisions.get_mut(&h) {
                if let Some(other) = list.pop() {
                    self.by_hash.insert(h, other);
                }
                if list.is_empty() {
                    self.collisions.remove(&h);
                }
            }
        } else if let Some(list) = self.collisions.get_mut(&h) {
            list.retain(|&x| x != r);
            if list.is_empty() {
                self.collisions.remove(&h);
            }
        }
        // Symbols no longer referenced are freed when the last Arc goes; the
        // interning set itself is pruned here.
        for l in labels.iter() {
            for sym in [&l.name, &l.value] {
                if sym.strong_count() <= 2 {
                    self.symbols.remove(sym);
                }
            }
        }
    }

    /// Whether a live series has this reference (for WAL checkpoints).
    pub fn contains(&self, r: u32) -> bool {
        self.get(r).is_some()
    }

    /// Live series references and labels (for WAL checkpoints).
    pub fn all_series(&self) -> Vec<(u32, Labels)> {
        self.series
            .iter()
            .enumerate()
            .filter_map(|(r, s)| s.as_ref().map(|s| (r as u32, self.labels_of(s))))
            .collect()
    }
}

/// A hasher for keys that are already hashes.
#[derive(Clone, Copy, Default)]
pub struct IdentityHash;

impl std::hash::BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

/// See [`IdentityHash`].
#[derive(Default)]
pub struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ b as u64 ^ (self.0 >> 56);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The symbol table's hasher: XXH3 of the string in one call (SipHash
/// costs several times more on short label strings, and label strings are
/// looked up for every series a query selects). Seeded per process, so
/// label values chosen to collide cannot be prepared in advance.
#[derive(Clone, Copy)]
pub struct SymbolHash(u64);

impl Default for SymbolHash {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(0);
        SymbolHash(h.finish())
    }
}

impl std::hash::BuildHasher for SymbolHash {
    type Hasher = SymbolHasher;
    fn build_hasher(&self) -> SymbolHasher {
        SymbolHasher(self.0)
    }
}

/// See [`SymbolHash`].
pub struct SymbolHasher(u64);

impl std::hash::Hasher for SymbolHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, n: u8) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A fast hasher for small integer keys (series references) in per-batch
/// maps: one multiply instead of SipHash's rounds. Not DoS-resistant, which
/// is fine for keys the database assigns itself.
#[derive(Clone, Copy, Default)]
pub struct RefHash;

impl std::hash::BuildHasher for RefHash {
    type Hasher = RefHasher;
    fn build_hasher(&self) -> RefHasher {
        RefHasher(0)
    }
}

/// See [`RefHash`].
#[derive(Default)]
pub struct RefHasher(u64);

impl std::hash::Hasher for RefHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

/// The same value as [`Labels::stable_hash`], computed in one shot over a
/// reusable buffer (the streaming hasher is several times slower on short
/// label strings).
pub fn label_hash(labels: &Labels, buf: &mut Vec<u8>) -> u64 {
    buf.clear();
    for l in labels.iter() {
        buf.extend_from_slice(l.name.as_bytes());
        buf.push(0xff);
        buf.extend_from_slice(l.value.as_bytes());
        buf.push(0xff);
    }
    xxhash_rust::xxh3::xxh3_64(buf)
}

/// Whether `labels` encode to `key` as [`label_hash`] writes it, without
/// building the encoding.
fn key_matches(labels: &Labels, key: &[u8]) -> bool {
    let mut rest = key;
    for l in labels.iter() {
        for part in [l.name.as_bytes(), l.value.as_bytes()] {
            match rest
                .strip_prefix(part)
                .and_then(|r| r.strip_prefix(&[0xff]))
            {
                Some(r) => rest = r,
                None => return false,
            }
        }
    }
    rest.is_empty()
}

/// Encodes sorted samples into chunks of at most [`SAMPLES_PER_CHUNK`].
pub fn encode_chunks(samples: &[(i64, f64)]) -> Vec<HeadChunk> {
    samples
        .chunks(SAMPLES_PER_CHUNK as usize)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let mut a = XorAppender::new();
            for &(t, v) in c {
                a.append(t, v);
            }
            HeadChunk::in_memory(c[0].0, c[c.len() - 1].0, Arc::from(a.finish()))
        })
        .collect()
}

fn insert_sorted(list: &mut Vec<u32>, r: u32) {
    match list.last() {
        Some(&last) if last >= r => {
            if let Err(i) = list.binary_search(&r) {
                list.insert(i, r);
            }
        }
        _ => list.push(r),
    }
}

impl PostingsSource for Head {
    type Error = std::convert::Infallible;

    fn all_postings(&self) -> Result<Vec<u32>, Self::Error> {
        Ok(self
            .series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(r, _)| r as u32)
            .collect())
    }

    fn values_of(&self, name: &str) -> Result<Vec<String>, Self::Error> {
        Ok(self
            .postings
            .get(name)
            .map(|m| m.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default())
    }

    fn postings(&self, name: &str, value: &str) -> Result<Vec<u32>, Self::Error> {
        Ok(self
            .postings
            .get(name)
            .and_then(|m| m.get(value))
            .cloned()
            .unwrap_or_default())
    }

    fn postings_ref(&self, name: &str, value: &str) -> Result<Cow<'_, [u32]>, Self::Error> {
        Ok(self
            .postings
            .get(name)
            .and_then(|m| m.get(value))
            .map_or(Cow::Borrowed(&[][..]), |l| Cow::Borrowed(&l[..])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::{stale_nan, MatchOp, STALE_NAN_BITS};

    /// A series is boxed on its own: at 128 bytes it sits in the
    /// allocator's 128-byte size class (it took 192 at 168 bytes).
    #[test]
    fn a_series_fits_in_128_bytes() {
        assert_eq!(std::mem::size_of::<ChunkRef>(), 20);
        assert!(
            std::mem::size_of::<MemSeries>() <= 128,
            "MemSeries is {} bytes",
            std::mem::size_of::<MemSeries>()
        );
    }

    fn lbl(name: &str, job: &str) -> Labels {
        Labels::from_pairs([("__name__", name), ("job", job)])
    }

    fn push(h: &mut Head, l: &Labels, t: i64, v: f64) -> Verdict {
        let r = h.create(l, None);
        let verdict = h.verdict(r, h.last_sample(r), t, v);
        h.apply(r, t, v, verdict);
        verdict
    }

    #[test]
    fn one_shot_hash_equals_stable_hash() {
        let mut buf = Vec::new();
        for l in [
            Labels::empty(),
            lbl("up", "api"),
            Labels::from_pairs([("a", "x".repeat(300)), ("b", "ü".to_string())]),
        ] {
            assert_eq!(label_hash(&l, &mut buf), l.stable_hash());
        }
    }

    #[test]
    fn select_reads_disk_chunks_in_batches_with_the_same_result() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Head::new(7_200_000, 0);
        h.set_chunk_files(HeadChunkFiles::open(&dir.path().join("chunks_head")).unwrap());
        let series: Vec<Labels> = (0..40)
            .map(|i| {
                Labels::from_pairs([
                    ("__name__", if i % 3 == 0 { "a" } else { "b" }),
                    ("i", &*i.to_string()),
                    ("job", "x"),
                ])
            })
            .collect();
        // 300 samples each, interleaved: chunks of different series close
        // one after another on disk.
        for t in 0..300i64 {
            for (k, l) in series.iter().enumerate() {
                if (t + k as i64) % 7 != 0 {
                    push(&mut h, l, t * 1000, (t * k as i64) as f64 * 0.25);
                }
            }
        }
        assert!(h.chunk_file_bytes() > 0);
        for (mint, maxt) in [
            (0, 400_000),
            (45_000, 105_000),
            (119_000, 121_000),
            (250_000, 260_000),
        ] {
            for m in [
                vec![Matcher::equal("job", "x")],
                vec![Matcher::equal("__name__", "a")],
            ] {
                let got = h.select(&m, mint, maxt).unwrap();
                let want: Vec<SelectedSeries> = h
                    .select_refs(&m)
                    .into_iter()
                    .filter_map(|r| h.get(r))
                    .map(|s| (h.labels_of(s), s.samples(&h.files, mint, maxt).unwrap()))
                    .filter(|x| !x.1.is_empty())
                    .collect();
                assert_eq!(got, want);
                assert!(!got.is_empty());
            }
        }
    }

    #[test]
    fn append_and_select_across_chunks() {
        let mut h = Head::new(7_200_000, 0);
        let a = lbl("up", "api");
        for i in 0..500 {
            assert_eq!(push(&mut h, &a, i * 1000, i as f64), Verdict::InOrder);
        }
        assert_eq!(h.stats().chunks, 5);
        let got = h
            .select(&[Matcher::equal("job", "api")], 10_000, 20_000)
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 11);
        assert_eq!(got[0].1[0], (10_000, 10.0));
        assert_eq!(got[0].1[10], (20_000, 20.0));
    }

    #[test]
    fn series_groups_cut_their_first_chunks_at_different_times() {
        let mut h = Head::new(7_200_000, 0);
        let n = 16 * 1024u32;
        let series: Vec<Labels> = (0..n).map(|i| lbl("up", &format!("j{i}"))).collect();
        let mut cut_by_90 = 0;
        for i in 0..250 {
            for a in &series {
                push(&mut h, a, i * 1000, i as f64);
            }
            if i == 90 {
                cut_by_90 = h.stats().chunks - u64::from(n);
            }
        }
        // First chunks hold 60 to 119 samples per group of 1024 series, so
        // at sample 90 some groups have cut and some have not.
        assert!(cut_by_90 > 0 && cut_by_90 < u64::from(n), "{cut_by_90}");
        for r in [0, 1023, 1024, 5000, n - 1] {
            let s = h.get(r).unwrap();
            let first = s.chunks[0];
            let len = (first.maxt() - first.mint()) / 1000 + 1;
            assert_eq!(len, i64::from(first_chunk_len(r)));
            assert!(s.chunks[1..]
                .iter()
                .all(|c| (c.maxt() - c.mint()) / 1000 + 1 == 120));
        }
        let got = h
            .select(&[Matcher::equal("job", "j5000")], 0, 249_000)
            .unwrap();
        assert_eq!(got[0].1.len(), 250);
    }

    #[test]
    fn replayed_series_adopt_the_senders_labels_once() {
        let mut h = Head::new(7_200_000, 0);
        // As a WAL replay creates it: the head's own allocation.
        let replayed = lbl("up", "a");
        let r = h.create(&replayed, Some(0));
        assert!(h.wants_labels(r));
        let sent = lbl("up", "a");
        assert!(!sent.same_allocation(&replayed));
        h.adopt_labels(r, &sent);
        assert!(h.series_labels_of(r).unwrap().same_allocation(&sent));
        assert!(!h.wants_labels(r));
        // Later batches with new allocations change nothing.
        h.adopt_labels(r, &lbl("up", "a"));
        assert!(h.series_labels_of(r).unwrap().same_allocation(&sent));
        // A series created by an append keeps what it came with.
        let appended = lbl("up", "b");
        let r2 = h.create(&appended, None);
        assert!(!h.wants_labels(r2));
        assert!(h.series_labels_of(r2).unwrap().same_allocation(&appended));
    }

    #[test]
    fn latest_sample_reads_survive_deleting_the_newest_samples() {
        let mut h = Head::new(7_200_000, 0);
        let a = lbl("up", "api");
        for i in 0..300 {
            push(&mut h, &a, i * 1000, i as f64);
        }
        let m = [Matcher::equal("job", "api")];
        let latest = |h: &Head, lo, hi| h.select_latest(&m, lo, hi).unwrap()[0].1.clone();
        assert_eq!(latest(&h, 0, 400_000), vec![(299_000, 299.0)]);
        assert_eq!(latest(&h, 0, 150_500), vec![(150_000, 150.0)]);
        let r = h.select_refs(&m)[0];
        h.delete_range(r, 250_000, 400_000).unwrap();
        assert_eq!(latest(&h, 0, 400_000), vec![(249_000, 249.0)]);
        push(&mut h, &a, 300_000, 7.0);
        assert_eq!(latest(&h, 0, 400_000), vec![(300_000, 7.0)]);
    }

    #[test]
    fn rejections_by_reason() {
        let mut h = Head::new(7_200_000, 0);
        let a = lbl("up", "api");
        push(&mut h, &a, 10_000, 1.0);
        assert_eq!(push(&mut h, &a, 10_000, 1.0), Verdict::Ignored);
        assert_eq!(
            push(&mut h, &a, 10_000, 2.0),
            Verdict::Rejected(RejectReason::Duplicate)
        );
        assert_eq!(
            push(&mut h, &a, 9_000, 2.0),
            Verdict::Rejected(RejectReason::OutOfOrder)
        );
        h.set_min_valid_time(20_000);
        assert_eq!(
            push(&mut h, &lbl("up", "new"), 15_000, 2.0),
            Verdict::Rejected(RejectReason::TooOld)
        );
        let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
        // The series created for the rejected sample has no data.
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, vec![(10_000, 1.0)]);
    }

    #[test]
    fn out_of_order_window_accepts_and_merges() {
        let mut h = Head::new(7_200_000, 60_000);
        let a = lbl("up", "api");
        push(&mut h, &a, 100_000, 1.0);
        push(&mut h, &a, 120_000, 3.0);
        assert_eq!(push(&mut h, &a, 110_000, 2.0), Verdict::OutOfOrder);
        assert_eq!(push(&mut h, &a, 110_000, 2.0), Verdict::Ignored);
        assert_eq!(
            push(&mut h, &a, 110_000, 5.0),
            Verdict::Rejected(RejectReason::Duplicate)
        );
        assert_eq!(
            push(&mut h, &a, 10_000, 5.0),
            Verdict::Rejected(RejectReason::TooOld)
        );
        let got = h.select(&[], 0, 200_000).unwrap();
        assert_eq!(
            got[0].1,
            vec![(100_000, 1.0), (110_000, 2.0), (120_000, 3.0)]
        );
        let blocks = h.block_data(0, 200_000).unwrap();
        assert_eq!(h.decode_chunk(&blocks[0].chunks[0]).unwrap().len(), 3);
    }

    #[test]
    fn stale_markers_are_returned_bit_exact() {
        let mut h = Head::new(7_200_000, 0);
        let a = lbl("up", "api");
        push(&mut h, &a, 1, 1.0);
        push(&mut h, &a, 2, stale_nan());
        let got = h.select(&[], 0, 10).unwrap();
        assert_eq!(got[0].1[1].1.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn chunks_do_not_span_block_boundaries_and_truncate_frees_series() {
        let mut h = Head::new(10_000, 0);
        let a = lbl("up", "api");
        let b = lbl("up", "db");
        push(&mut h, &b, 5_000, 1.0);
        for t in (0..30_000).step_by(1000) {
            push(&mut h, &a, t, 1.0);
        }
        let data = h.block_data(0, 10_000).unwrap();
        assert_eq!(data.len(), 2);
        assert!(data
            .iter()
            .all(|s| s.chunks.iter().all(|c| c.maxt < 10_000)));
        let removed = h.truncate(10_000);
        assert_eq!(removed.len(), 1);
        assert_eq!(h.num_series(), 1);
        assert!(h.lookup(&b).is_none());
        assert_eq!(
            h.select_refs(&[Matcher::equal("job", "db")]),
            Vec::<u32>::new()
        );
        let got = h.select(&[], 0, 100_000).unwrap();
        assert_eq!(got[0].1.first().map(|s| s.0), Some(10_000));
        // A recreated series gets a fresh reference.
        let r = h.create(&b, None);
        assert!(r > 1);
    }

    #[test]
    fn regex_and_negative_matchers() {
        let mut h = Head::new(7_200_000, 0);
        for job in ["api", "db", "cache"] {
            push(&mut h, &lbl("up", job), 1000, 1.0);
        }
        push(&mut h, &Labels::from_pairs([("__name__", "up")]), 1000, 1.0);
        let m = Matcher::new(MatchOp::RegexMatch, "job", "a.*|c.*").unwrap();
        assert_eq!(h.select(&[m], 0, 2000).unwrap().len(), 2);
        let m = Matcher::new(MatchOp::NotEqual, "job", "db").unwrap();
        assert_eq!(h.select(&[m], 0, 2000).unwrap().len(), 3);
        let m = Matcher::equal("job", "");
        assert_eq!(h.select(&[m], 0, 2000).unwrap().len(), 1);
    }
}
