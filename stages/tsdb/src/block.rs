//! Immutable on-disk blocks: the head's data for a time range, written once,
//! then memory-mapped for reads. See `LAYOUT.md` for the byte layout of the
//! index, chunk and tombstone files.
//!
//! A block is written into `<ulid>.tmp` and renamed into place only when
//! complete and fsynced, so a crash never leaves a half block under a real
//! name. Every file carries a CRC32; a block whose checksums fail is
//! quarantined by the database, not read.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use panoptes_model::{Label, Labels, Matcher, Sym};
use serde::{Deserialize, Serialize};

use crate::bits::{put_bytes, put_uvarint, put_varint, DecodeError, Decoder};
use crate::chunk::{self, ChunkError};
use crate::head::{merge_samples, HeadChunk, SelectedSeries, SeriesData};
use crate::packed;
use crate::postings::{self, PostingsSource};

const INDEX_MAGIC: &[u8; 4] = b"PTIX";
const CHUNKS_MAGIC: &[u8; 4] = b"PTCH";
const TOMBSTONES_MAGIC: &[u8; 4] = b"PTTS";
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
/// Six u64 section offsets and a CRC32.
const TOC_LEN: usize = 6 * 8 + 4;
/// Chunk segment files are cut at this size.
const CHUNK_FILE_SIZE: u64 = 512 << 20;

/// A block failure.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("block file {path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("block meta {path}: {source}")]
    Meta {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("chunk in {path} at byte {offset}: {source}")]
    Chunk {
        path: PathBuf,
        offset: u64,
        #[source]
        source: ChunkError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlockError + '_ {
    move |source| BlockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, what: impl Into<String>) -> BlockError {
    BlockError::Corrupt {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn decode_err(path: &Path) -> impl Fn(DecodeError) -> BlockError + '_ {
    move |e| corrupt(path, e.to_string())
}

/// `meta.json`: what a block holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockMeta {
    pub ulid: String,
    /// Inclusive lower bound of sample timestamps (ms).
    pub min_time: i64,
    /// Exclusive upper bound of sample timestamps (ms).
    pub max_time: i64,
    pub stats: BlockStats,
    pub compaction: CompactionMeta,
    pub version: u32,
}

/// Counts in `meta.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStats {
    pub num_samples: u64,
    pub num_series: u64,
    pub num_chunks: u64,
}

/// Compaction lineage in `meta.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactionMeta {
    /// 1 for a block cut from the head, +1 per compaction.
    pub level: u32,
    /// ULIDs of the level-1 blocks this block was built from.
    pub sources: Vec<String>,
}

/// One deleted interval of one series (inclusive bounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub series: u32,
    pub mint: i64,
    pub maxt: i64,
}

/// Chunk encoding in chunk files: a Gorilla XOR chunk.
pub const ENC_XOR: u8 = 1;
/// Chunk encoding in chunk files: a packed chunk (see [`crate::packed`]).
pub const ENC_PACKED: u8 = 2;
/// Chunk encoding in chunk files: a packed chunk whose timestamp and value
/// columns are separate zstd frames, the timestamps either inline or shared
/// with an earlier chunk of the same block. Payload: `0:u8 ts:bytes values`
/// or `1:u8 file:uvarint offset:uvarint values`, where `values` (the rest)
/// is a compressed value column and a shared reference points at an inline
/// `ENC_PACKED_SPLIT` chunk. Series scraped together have the same
/// timestamps, so a block stores each distinct column once.
pub const ENC_PACKED_SPLIT: u8 = 3;
const TS_INLINE: u8 = 0;
const TS_SHARED: u8 = 1;
/// Bytes of raw timestamp columns a block writer keeps to find repeats.
/// Past it new columns are still written (inline), just not remembered.
const SHARED_TS_BUDGET: usize = 16 << 20;

/// Decodes a head chunk into samples (reading it from disk if needed).
pub type ChunkDecoder<'a> = dyn Fn(&HeadChunk) -> Result<Vec<(i64, f64)>, ChunkError> + 'a;

/// Writes a block from head series data sorted by labels (Gorilla chunks are
/// decoded with `decode` and re-packed). Returns its meta.
pub fn write_block(
    parent: &Path,
    mint: i64,
    maxt: i64,
    series: &[SeriesData],
    compaction: CompactionMeta,
    decode: &ChunkDecoder,
) -> Result<BlockMeta, BlockError> {
    let symbols = series.iter().flat_map(|s| {
        s.labels
            .iter()
            .flat_map(|l| [l.name.clone(), l.value.clone()])
    });
    let mut w = BlockWriter::new(parent, symbols)?;
    let mut samples = Vec::new();
    for s in series {
        samples.clear();
        for c in &s.chunks {
            let part = match decode(c) {
                Ok(p) => p,
                Err(source) => {
                    w.abort();
                    return Err(BlockError::Chunk {
                        path: parent.to_path_buf(),
                        offset: 0,
                        source,
                    });
                }
            };
            samples = merge_samples(std::mem::take(&mut samples), &part);
        }
        samples.retain(|x| x.0 >= mint && x.0 < maxt);
        w.add_series(&s.labels, &samples)?;
    }
    w.finish(mint, maxt, compaction)
}

/// Writes one block series by series (in label order), so that a compaction
/// holds one series in memory at a time. Everything goes to `<ulid>.tmp/`
/// until [`BlockWriter::finish`] renames it into place.
pub struct BlockWriter {
    parent: PathBuf,
    ulid: String,
    tmp: PathBuf,
    chunks: ChunkFileWriter,
    sym_id: HashMap<Sym, u64>,
    index: Vec<u8>,
    series_off: u64,
    offsets: Vec<u64>,
    postings: HashMap<(u64, u64), Vec<u32>>,
    stats: BlockStats,
    last_labels: Option<Labels>,
    /// Raw timestamp columns already written inline → where.
    ts_columns: HashMap<Vec<u8>, (u32, u64)>,
    ts_columns_bytes: usize,
    payload: Vec<u8>,
}

impl BlockWriter {
    /// Starts a block whose series use (a subset of) these symbols.
    pub fn new(
        parent: &Path,
        symbols: impl IntoIterator<Item = Sym>,
    ) -> Result<BlockWriter, BlockError> {
        let ulid = ulid::Ulid::new().to_string();
        let tmp = parent.join(format!("{ulid}.tmp"));
        let chunks_dir = tmp.join("chunks");
        fs::create_dir_all(&chunks_dir).map_err(io_err(&chunks_dir))?;
        let mut syms: Vec<Sym> = symbols.into_iter().collect();
        syms.sort_unstable();
        syms.dedup();
        let mut index = Vec::with_capacity(1 << 16);
        index.extend_from_slice(INDEX_MAGIC);
        index.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0]);
        put_uvarint(&mut index, syms.len() as u64);
        for s in &syms {
            put_bytes(&mut index, s.as_bytes());
        }
        let series_off = index.len() as u64;
        let sym_id = syms
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i as u64))
            .collect();
        Ok(BlockWriter {
            parent: parent.to_path_buf(),
            ulid,
            tmp,
            chunks: ChunkFileWriter::new(&chunks_dir)?,
            sym_id,
            index,
            series_off,
            offsets: Vec::new(),
            postings: HashMap::new(),
            stats: BlockStats::default(),
            last_labels: None,
            ts_columns: HashMap::new(),
            ts_columns_bytes: 0,
            payload: Vec::new(),
        })
    }

    /// Adds a series with its samples (sorted, strictly increasing
    /// timestamps). Series must come in label order; empty ones are skipped.
    pub fn add_series(
        &mut self,
        labels: &Labels,
        samples: &[(i64, f64)],
    ) -> Result<(), BlockError> {
        if samples.is_empty() {
            return Ok(());
        }
        if self.last_labels.as_ref().is_some_and(|l| l >= labels) {
            return Err(corrupt(
                &self.tmp,
                format!("series {labels} added out of order"),
            ));
        }
        let mut metas = Vec::new();
        for part in samples.chunks(packed::SAMPLES_PER_PACKED_CHUNK) {
            let (file, off) = self.write_chunk(part)?;
            metas.push((part[0].0, part[part.len() - 1].0, file, off));
        }
        let id = self.offsets.len() as u32;
        self.offsets.push(self.index.len() as u64);
        put_uvarint(&mut self.index, labels.len() as u64);
        for l in labels.iter() {
            let (Some(&n), Some(&v)) = (self.sym_id.get(&l.name), self.sym_id.get(&l.value)) else {
                return Err(corrupt(
                    &self.tmp,
                    format!("series {labels} uses a symbol missing from the table"),
                ));
            };
            put_uvarint(&mut self.index, n);
            put_uvarint(&mut self.index, v);
            self.postings.entry((n, v)).or_default().push(id);
        }
        put_uvarint(&mut self.index, metas.len() as u64);
        for &(mint, maxt, file, off) in &metas {
            put_varint(&mut self.index, mint);
            put_uvarint(&mut self.index, maxt.wrapping_sub(mint) as u64);
            put_uvarint(&mut self.index, file as u64);
            put_uvarint(&mut self.index, off);
        }
        self.stats.num_series += 1;
        self.stats.num_chunks += metas.len() as u64;
        self.stats.num_samples += samples.len() as u64;
        self.last_labels = Some(labels.clone());
        Ok(())
    }

    /// Writes one `ENC_PACKED_SPLIT` chunk, sharing its timestamp column
    /// with an earlier chunk when they are equal.
    fn write_chunk(&mut self, part: &[(i64, f64)]) -> Result<(u32, u64), BlockError> {
        let ts = packed::timestamp_column(part);
        let values = packed::compress(&packed::value_column(part));
        self.payload.clear();
        let shared = self.ts_columns.get(&ts).copied();
        match shared {
            Some((file, off)) => {
                self.payload.push(TS_SHARED);
                put_uvarint(&mut self.payload, file as u64);
                put_uvarint(&mut self.payload, off);
            }
            None => {
                self.payload.push(TS_INLINE);
                put_bytes(&mut self.payload, &packed::compress(&ts));
            }
        }
        self.payload.extend_from_slice(&values);
        let payload = std::mem::take(&mut self.payload);
        let at = self.chunks.write(ENC_PACKED_SPLIT, &payload);
        self.payload = payload;
        let at = at?;
        if shared.is_none() && self.ts_columns_bytes + ts.len() <= SHARED_TS_BUDGET {
            self.ts_columns_bytes += ts.len();
            self.ts_columns.insert(ts, at);
        }
        Ok(at)
    }

    /// Writes the index, tombstones and meta, fsyncs and renames the block
    /// into place.
    pub fn finish(
        mut self,
        mint: i64,
        maxt: i64,
        compaction: CompactionMeta,
    ) -> Result<BlockMeta, BlockError> {
        let chunks = std::mem::replace(&mut self.chunks, ChunkFileWriter::closed());
        chunks.finish()?;
        let mut out = std::mem::take(&mut self.index);
        let series_offsets_off = out.len() as u64;
        for o in &self.offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        let mut keys: Vec<(u64, u64)> = self.postings.keys().copied().collect();
        keys.sort_unstable();
        let postings_off = out.len() as u64;
        let mut table = Vec::with_capacity(keys.len());
        for k in &keys {
            table.push((k.0, k.1, out.len() as u64));
            let list = &self.postings[k];
            put_uvarint(&mut out, list.len() as u64);
            let mut prev = 0u32;
            for &id in list {
                put_uvarint(&mut out, (id - prev) as u64);
                prev = id;
            }
        }
        let postings_table_off = out.len() as u64;
        put_uvarint(&mut out, table.len() as u64);
        for (n, v, off) in table {
            put_uvarint(&mut out, n);
            put_uvarint(&mut out, v);
            put_uvarint(&mut out, off);
        }
        for x in [
            HEADER_LEN as u64,
            self.series_off,
            series_offsets_off,
            self.offsets.len() as u64,
            postings_off,
            postings_table_off,
        ] {
            out.extend_from_slice(&x.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        write_synced(&self.tmp.join("index"), &out)?;
        write_synced(&self.tmp.join("tombstones"), &encode_tombstones(&[]))?;

        let mut compaction = compaction;
        if compaction.sources.is_empty() {
            compaction.sources.push(self.ulid.clone());
        }
        let meta = BlockMeta {
            ulid: self.ulid.clone(),
            min_time: mint,
            max_time: maxt,
            stats: self.stats.clone(),
            compaction,
            version: 1,
        };
        let meta_json = serde_json::to_vec_pretty(&meta).map_err(|source| BlockError::Meta {
            path: self.tmp.join("meta.json"),
            source,
        })?;
        write_synced(&self.tmp.join("meta.json"), &meta_json)?;
        sync_dir(&self.tmp.join("chunks"))?;
        sync_dir(&self.tmp)?;
        let dst = self.parent.join(&self.ulid);
        fs::rename(&self.tmp, &dst).map_err(io_err(&self.tmp))?;
        sync_dir(&self.parent)?;
        Ok(meta)
    }

    /// Abandons the block, removing its temporary directory.
    pub fn abort(self) {
        let _ = fs::remove_dir_all(&self.tmp);
    }
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), BlockError> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), BlockError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Appends chunks to numbered segment files under `chunks/`, streaming to
/// disk through a buffer. Each entry is `enc:u8 data:bytes crc32:u32`, the
/// CRC covering the encoding byte and the data.
struct ChunkFileWriter {
    dir: PathBuf,
    file_index: u32,
    file: Option<io::BufWriter<File>>,
    written: u64,
    rec: Vec<u8>,
}

impl ChunkFileWriter {
    fn new(dir: &Path) -> Result<Self, BlockError> {
        let mut w = ChunkFileWriter {
            dir: dir.to_path_buf(),
            file_index: 0,
            file: None,
            written: 0,
            rec: Vec::new(),
        };
        w.start_file()?;
        Ok(w)
    }

    /// A writer with no open file (a placeholder after `finish`).
    fn closed() -> Self {
        ChunkFileWriter {
            dir: PathBuf::new(),
            file_index: 0,
            file: None,
            written: 0,
            rec: Vec::new(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("{:06}", self.file_index))
    }

    fn start_file(&mut self) -> Result<(), BlockError> {
        self.close_file()?;
        self.file_index += 1;
        let p = self.path();
        let f = File::create(&p).map_err(io_err(&p))?;
        let mut f = io::BufWriter::with_capacity(1 << 20, f);
        f.write_all(CHUNKS_MAGIC).map_err(io_err(&p))?;
        f.write_all(&[FORMAT_VERSION, 0, 0, 0])
            .map_err(io_err(&p))?;
        self.file = Some(f);
        self.written = HEADER_LEN as u64;
        Ok(())
    }

    fn close_file(&mut self) -> Result<(), BlockError> {
        if let Some(f) = self.file.take() {
            let p = self.path();
            let f = f.into_inner().map_err(|e| io_err(&p)(e.into_error()))?;
            f.sync_all().map_err(io_err(&p))?;
        }
        Ok(())
    }

    fn write(&mut self, enc: u8, data: &[u8]) -> Result<(u32, u64), BlockError> {
        self.rec.clear();
        self.rec.push(enc);
        put_bytes(&mut self.rec, data);
        let mut h = crc32fast::Hasher::new();
        h.update(&[enc]);
        h.update(data);
        self.rec.extend_from_slice(&h.finalize().to_le_bytes());
        if self.written + self.rec.len() as u64 > CHUNK_FILE_SIZE
            && self.written > HEADER_LEN as u64
        {
            self.start_file()?;
        }
        let off = self.written;
        let p = self.path();
        if let Some(f) = self.file.as_mut() {
            f.write_all(&self.rec).map_err(io_err(&p))?;
        }
        self.written += self.rec.len() as u64;
        Ok((self.file_index, off))
    }

    fn finish(mut self) -> Result<(), BlockError> {
        self.close_file()
    }
}

/// Adds tombstones for series `ids` over `[mint, maxt]` to a block's
/// `existing` ones, replacing its tombstones file atomically (the open
/// `Block` must be reopened to see them).
pub fn add_tombstones(
    dir: &Path,
    existing: &[Tombstone],
    ids: &[u32],
    mint: i64,
    maxt: i64,
) -> Result<(), BlockError> {
    let mut ts = existing.to_vec();
    ts.extend(ids.iter().map(|&series| Tombstone { series, mint, maxt }));
    let tmp = dir.join("tombstones.tmp");
    write_synced(&tmp, &encode_tombstones(&ts))?;
    let dst = dir.join("tombstones");
    fs::rename(&tmp, &dst).map_err(io_err(&tmp))?;
    sync_dir(dir)
}

/// Encodes a tombstones file.
pub fn encode_tombstones(ts: &[Tombstone]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(TOMBSTONES_MAGIC);
    out.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0]);
    put_uvarint(&mut out, ts.len() as u64);
    for t in ts {
        put_uvarint(&mut out, t.series as u64);
        put_varint(&mut out, t.mint);
        put_varint(&mut out, t.maxt);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_tombstones(path: &Path, data: &[u8]) -> Result<Vec<Tombstone>, BlockError> {
    if data.len() < HEADER_LEN + 4 || &data[..4] != TOMBSTONES_MAGIC {
        return Err(corrupt(path, "bad tombstones header"));
    }
    let body = &data[..data.len() - 4];
    let crc = u32::from_le_bytes([
        data[data.len() - 4],
        data[data.len() - 3],
        data[data.len() - 2],
        data[data.len() - 1],
    ]);
    if crc32fast::hash(body) != crc {
        return Err(corrupt(path, "tombstones checksum mismatch"));
    }
    let mut d = Decoder::at(body, HEADER_LEN);
    let n = d.uvarint().map_err(decode_err(path))?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Tombstone {
            series: d.uvarint().map_err(decode_err(path))? as u32,
            mint: d.varint().map_err(decode_err(path))?,
            maxt: d.varint().map_err(decode_err(path))?,
        });
    }
    Ok(out)
}

/// Where one chunk lives, and its time range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    pub mint: i64,
    pub maxt: i64,
    pub file: u32,
    pub offset: u64,
}

/// An open, memory-mapped block.
pub struct Block {
    dir: PathBuf,
    pub meta: BlockMeta,
    index: Mmap,
    index_path: PathBuf,
    chunk_files: Vec<(PathBuf, Mmap)>,
    symbols: Vec<Sym>,
    /// name → sorted (value, offset of its postings list).
    postings_table: HashMap<Sym, Vec<(Sym, u64)>>,
    series_offsets_off: usize,
    num_series: u32,
    tombstones: Vec<Tombstone>,
    size: u64,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish()
    }
}

fn map(path: &Path) -> Result<Mmap, BlockError> {
    let f = File::open(path).map_err(io_err(path))?;
    // SAFETY: block files are immutable once renamed into place; the
    // database never writes to them, only deletes whole blocks (which keeps
    // existing mappings valid on Unix).
    unsafe { Mmap::map(&f) }.map_err(io_err(path))
}

impl Block {
    /// Opens a block directory, verifying its checksums.
    pub fn open(dir: &Path) -> Result<Block, BlockError> {
        let meta_path = dir.join("meta.json");
        let meta_bytes = fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: BlockMeta =
            serde_json::from_slice(&meta_bytes).map_err(|source| BlockError::Meta {
                path: meta_path.clone(),
                source,
            })?;
        if meta.min_time >= meta.max_time {
            return Err(corrupt(&meta_path, "minTime is not below maxTime"));
        }
        let index_path = dir.join("index");
        let index = map(&index_path)?;
        let n = index.len();
        if n < HEADER_LEN + TOC_LEN || &index[..4] != INDEX_MAGIC {
            return Err(corrupt(&index_path, "bad index header"));
        }
        let crc = u32::from_le_bytes([index[n - 4], index[n - 3], index[n - 2], index[n - 1]]);
        if crc32fast::hash(&index[..n - 4]) != crc {
            return Err(corrupt(&index_path, "index checksum mismatch"));
        }
        let mut toc = Decoder::at(&index, n - TOC_LEN);
        let mut next = || toc.u64_le().map_err(decode_err(&index_path));
        let symbols_off = next()? as usize;
        let _series_off = next()?;
        let series_offsets_off = next()? as usize;
        let num_series = next()?;
        let _postings_off = next()?;
        let postings_table_off = next()? as usize;
        if num_series > u32::MAX as u64
            || series_offsets_off.saturating_add(num_series as usize * 8) > n
        {
            return Err(corrupt(&index_path, "series table out of bounds"));
        }

        let mut d = Decoder::at(&index, symbols_off);
        let count = d.uvarint().map_err(decode_err(&index_path))?;
        let mut symbols = Vec::with_capacity(count.min(1 << 24) as usize);
        for _ in 0..count {
            symbols.push(Sym::from(d.str().map_err(decode_err(&index_path))?));
        }
        let sym = |i: u64| -> Result<Sym, BlockError> {
            symbols
                .get(i as usize)
                .cloned()
                .ok_or_else(|| corrupt(&index_path, format!("symbol {i} out of range")))
        };
        let mut d = Decoder::at(&index, postings_table_off);
        let count = d.uvarint().map_err(decode_err(&index_path))?;
        let mut postings_table: HashMap<Sym, Vec<(Sym, u64)>> = HashMap::new();
        for _ in 0..count {
            let name = sym(d.uvarint().map_err(decode_err(&index_path))?)?;
            let value = sym(d.uvarint().map_err(decode_err(&index_path))?)?;
            let off = d.uvarint().map_err(decode_err(&index_path))?;
            postings_table.entry(name).or_default().push((value, off));
        }

        let chunks_dir = dir.join("chunks");
        let mut chunk_files = Vec::new();
        let mut names: Vec<String> = fs::read_dir(&chunks_dir)
            .map_err(io_err(&chunks_dir))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        for (i, name) in names.iter().enumerate() {
            let p = chunks_dir.join(name);
            if name.parse::<usize>().ok() != Some(i + 1) {
                return Err(corrupt(&p, "unexpected chunk file name"));
            }
            let m = map(&p)?;
            if m.len() < HEADER_LEN || &m[..4] != CHUNKS_MAGIC {
                return Err(corrupt(&p, "bad chunk file header"));
            }
            chunk_files.push((p, m));
        }
        let ts_path = dir.join("tombstones");
        let tombstones = match fs::read(&ts_path) {
            Ok(data) => decode_tombstones(&ts_path, &data)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&ts_path)(e)),
        };
        let size = crate::wal::dir_size(dir);
        Ok(Block {
            dir: dir.to_path_buf(),
            meta,
            index,
            index_path,
            chunk_files,
            symbols,
            postings_table,
            series_offsets_off,
            num_series: num_series as u32,
            tombstones,
            size,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.min_time <= maxt && self.meta.max_time > mint
    }

    fn symbol(&self, i: u64) -> Result<Sym, BlockError> {
        self.symbols
            .get(i as usize)
            .cloned()
            .ok_or_else(|| corrupt(&self.index_path, format!("symbol {i} out of range")))
    }

    /// Labels and chunk metas of one series.
    pub fn series(&self, id: u32) -> Result<(Labels, Vec<ChunkMeta>), BlockError> {
        if id >= self.num_series {
            return Err(corrupt(
                &self.index_path,
                format!("series {id} out of range"),
            ));
        }
        let mut d = Decoder::at(&self.index, self.series_offsets_off + id as usize * 8);
        let off = d.u64_le().map_err(decode_err(&self.index_path))? as usize;
        let mut d = Decoder::at(&self.index, off);
        let de = decode_err(&self.index_path);
        let nl = d.uvarint().map_err(&de)?;
        let mut labels = Vec::with_capacity(nl.min(128) as usize);
        for _ in 0..nl {
            let n = self.symbol(d.uvarint().map_err(&de)?)?;
            let v = self.symbol(d.uvarint().map_err(&de)?)?;
            labels.push(Label { name: n, value: v });
        }
        if !labels.windows(2).all(|w| w[0].name < w[1].name) {
            return Err(corrupt(
                &self.index_path,
                format!("series {id} labels unsorted"),
            ));
        }
        let nc = d.uvarint().map_err(&de)?;
        let mut chunks = Vec::with_capacity(nc.min(1 << 16) as usize);
        for _ in 0..nc {
            let mint = d.varint().map_err(&de)?;
            let maxt = mint.wrapping_add(d.uvarint().map_err(&de)? as i64);
            let file = d.uvarint().map_err(&de)? as u32;
            let offset = d.uvarint().map_err(&de)?;
            chunks.push(ChunkMeta {
                mint,
                maxt,
                file,
                offset,
            });
        }
        Ok((Labels::from_sorted(labels), chunks))
    }

    /// The encoding and bytes of one chunk, checksum verified.
    pub fn chunk(&self, m: &ChunkMeta) -> Result<(u8, &[u8]), BlockError> {
        let Some((path, data)) = (m.file as usize)
            .checked_sub(1)
            .and_then(|i| self.chunk_files.get(i))
        else {
            return Err(corrupt(
                &self.index_path,
                format!("chunk file {} missing", m.file),
            ));
        };
        let mut d = Decoder::at(data, m.offset as usize);
        let enc = d.u8().map_err(decode_err(path))?;
        let bytes = d.bytes().map_err(decode_err(path))?;
        let crc = d.u32_le().map_err(decode_err(path))?;
        let mut h = crc32fast::Hasher::new();
        h.update(&[enc]);
        h.update(bytes);
        if h.finalize() != crc {
            return Err(corrupt(
                path,
                format!("chunk checksum mismatch at byte {}", m.offset),
            ));
        }
        Ok((enc, bytes))
    }

    /// Decodes one chunk's samples in `[mint, maxt]` into `out`.
    fn decode_chunk(
        &self,
        m: &ChunkMeta,
        mint: i64,
        maxt: i64,
        out: &mut Vec<(i64, f64)>,
    ) -> Result<(), BlockError> {
        let (enc, bytes) = self.chunk(m)?;
        let path = || {
            self.chunk_files
                .get((m.file as usize).saturating_sub(1))
                .map(|f| f.0.clone())
                .unwrap_or_default()
        };
        match enc {
            ENC_XOR => {
                chunk::decode_range(bytes, mint, maxt, out).map_err(|source| BlockError::Chunk {
                    path: path(),
                    offset: m.offset,
                    source,
                })
            }
            ENC_PACKED => {
                let all = packed::decode(bytes)
                    .map_err(|e| corrupt(&path(), format!("chunk at byte {}: {e}", m.offset)))?;
                out.extend(all.into_iter().filter(|s| s.0 >= mint && s.0 <= maxt));
                Ok(())
            }
            ENC_PACKED_SPLIT => {
                let start = out.len();
                self.decode_split(bytes, out)
                    .map_err(|e| corrupt(&path(), format!("chunk at byte {}: {e}", m.offset)))?;
                // A chunk straddling the range: keep only its part inside.
                let mut keep = start;
                for i in start..out.len() {
                    if out[i].0 >= mint && out[i].0 <= maxt {
                        out[keep] = out[i];
                        keep += 1;
                    }
                }
                out.truncate(keep);
                Ok(())
            }
            other => Err(corrupt(
                &path(),
                format!("unknown chunk encoding {other} at byte {}", m.offset),
            )),
        }
    }

    /// Decodes an `ENC_PACKED_SPLIT` chunk's samples into `out`.
    fn decode_split(&self, bytes: &[u8], out: &mut Vec<(i64, f64)>) -> Result<(), String> {
        let mut d = Decoder::new(bytes);
        let ts = match d.u8().map_err(|e| e.to_string())? {
            TS_INLINE => inline_timestamps(&mut d)?,
            TS_SHARED => {
                let file = d.uvarint().map_err(|e| e.to_string())?;
                let offset = d.uvarint().map_err(|e| e.to_string())?;
                self.shared_timestamps(file, offset)
                    .map_err(|e| format!("shared timestamps: {e}"))?
            }
            other => return Err(format!("unknown timestamp column kind {other}")),
        };
        packed::decode_values(&bytes[d.position()..], &ts, out).map_err(|e| e.to_string())
    }

    /// The timestamp column an `ENC_PACKED_SPLIT` chunk shares from the
    /// inline chunk at `file`/`offset`.
    fn shared_timestamps(&self, file: u64, offset: u64) -> Result<Vec<i64>, String> {
        let file = u32::try_from(file).map_err(|_| format!("file {file} out of range"))?;
        let m = ChunkMeta {
            mint: 0,
            maxt: 0,
            file,
            offset,
        };
        let (enc, bytes) = self.chunk(&m).map_err(|e| e.to_string())?;
        let mut d = Decoder::new(bytes);
        if enc != ENC_PACKED_SPLIT || d.u8().ok() != Some(TS_INLINE) {
            return Err(format!(
                "chunk at file {file} byte {offset} holds no inline timestamps"
            ));
        }
        inline_timestamps(&mut d)
    }

    fn deleted(&self, id: u32, t: i64) -> bool {
        self.tombstones
            .iter()
            .any(|ts| ts.series == id && t >= ts.mint && t <= ts.maxt)
    }

    /// Samples of one series in `[mint, maxt]`, tombstones applied.
    pub fn samples(
        &self,
        id: u32,
        chunks: &[ChunkMeta],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<(i64, f64)>, BlockError> {
        let mut out = Vec::new();
        for m in chunks {
            if m.maxt < mint || m.mint > maxt {
                continue;
            }
            let mut part = Vec::new();
            self.decode_chunk(m, mint, maxt, &mut part)?;
            out = if out
                .last()
                .is_some_and(|l: &(i64, f64)| part.first().is_some_and(|f| f.0 <= l.0))
            {
                merge_samples(out, &part)
            } else {
                out.extend(part);
                out
            };
        }
        if !self.tombstones.is_empty() {
            out.retain(|s| !self.deleted(id, s.0));
        }
        Ok(out)
    }

    /// Matching series ids.
    pub fn select_ids(&self, matchers: &[Matcher]) -> Result<Vec<u32>, BlockError> {
        postings::select(self, matchers)
    }

    /// Matching series with samples in `[mint, maxt]`.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SelectedSeries>, BlockError> {
        if !self.overlaps(mint, maxt) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for id in self.select_ids(matchers)? {
            let (labels, chunks) = self.series(id)?;
            let samples = self.samples(id, &chunks, mint, maxt)?;
            if !samples.is_empty() {
                out.push((labels, samples));
            }
        }
        Ok(out)
    }

    /// The block's symbol table (every label name and value it uses).
    pub fn symbols(&self) -> &[Sym] {
        &self.symbols
    }

    /// Label names present in the block.
    pub fn label_names(&self) -> Vec<String> {
        self.postings_table.keys().map(|k| k.to_string()).collect()
    }

    pub fn num_series(&self) -> u32 {
        self.num_series
    }

    /// The block's tombstones.
    pub fn tombstones(&self) -> &[Tombstone] {
        &self.tombstones
    }

    /// Adds tombstones for matching series over `[mint, maxt]`, rewriting the
    /// tombstones file atomically.
    pub fn delete(
        &mut self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<usize, BlockError> {
        let ids = self.select_ids(matchers)?;
        let mut ts = self.tombstones.clone();
        for &id in &ids {
            ts.push(Tombstone {
                series: id,
                mint,
                maxt,
            });
        }
        let tmp = self.dir.join("tombstones.tmp");
        write_synced(&tmp, &encode_tombstones(&ts))?;
        let dst = self.dir.join("tombstones");
        fs::rename(&tmp, &dst).map_err(io_err(&tmp))?;
        sync_dir(&self.dir)?;
        self.tombstones = ts;
        Ok(ids.len())
    }
}

/// Reads an inline timestamp column (its zstd frame) from `d`.
fn inline_timestamps(d: &mut Decoder) -> Result<Vec<i64>, String> {
    let frame = d.bytes().map_err(|e| e.to_string())?;
    packed::decode_timestamps(frame).map_err(|e| e.to_string())
}

impl PostingsSource for Block {
    type Error = BlockError;

    fn all_postings(&self) -> Result<Vec<u32>, BlockError> {
        Ok((0..self.num_series).collect())
    }

    fn values_of(&self, name: &str) -> Result<Vec<String>, BlockError> {
        Ok(self
            .postings_table
            .get(name)
            .map(|v| v.iter().map(|(s, _)| s.to_string()).collect())
            .unwrap_or_default())
    }

    fn postings_len(&self, name: &str, value: &str) -> Result<usize, BlockError> {
        let Some(values) = self.postings_table.get(name) else {
            return Ok(0);
        };
        let Ok(i) = values.binary_search_by(|(v, _)| (**v).cmp(value)) else {
            return Ok(0);
        };
        let n = Decoder::at(&self.index, values[i].1 as usize)
            .uvarint()
            .map_err(decode_err(&self.index_path))?;
        Ok((n as usize).min(self.num_series as usize))
    }

    fn postings(&self, name: &str, value: &str) -> Result<Vec<u32>, BlockError> {
        let Some(values) = self.postings_table.get(name) else {
            return Ok(Vec::new());
        };
        let Ok(i) = values.binary_search_by(|(v, _)| (**v).cmp(value)) else {
            return Ok(Vec::new());
        };
        let de = decode_err(&self.index_path);
        let mut d = Decoder::at(&self.index, values[i].1 as usize);
        let n = d.uvarint().map_err(&de)?;
        let mut out = Vec::with_capacity(n.min(self.num_series as u64) as usize);
        let mut cur = 0u64;
        for _ in 0..n {
            cur += d.uvarint().map_err(&de)?;
            if cur >= self.num_series as u64 {
                return Err(corrupt(&self.index_path, "posting out of range"));
            }
            out.push(cur as u32);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::encode_chunks;
    use panoptes_model::MatchOp;

    fn mem(c: &HeadChunk) -> Result<Vec<(i64, f64)>, ChunkError> {
        c.bytes(None).and_then(|b| chunk::decode(&b))
    }

    fn data() -> Vec<SeriesData> {
        let mut v: Vec<SeriesData> = ["api", "db", "web"]
            .iter()
            .enumerate()
            .map(|(i, job)| SeriesData {
                labels: Labels::from_pairs([("__name__", "up"), ("job", job)]),
                chunks: encode_chunks(
                    &(0..300)
                        .map(|t| (t * 1000, (t + i as i64) as f64))
                        .collect::<Vec<_>>(),
                ),
            })
            .collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }

    /// Writes the block of [`data`] under `dir`.
    fn write_test_block(dir: &Path) -> BlockMeta {
        write_block(
            dir,
            0,
            300_000,
            &data(),
            CompactionMeta {
                level: 1,
                sources: vec![],
            },
            &mem,
        )
        .unwrap()
    }

    #[test]
    fn write_open_select() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_test_block(dir.path());
        assert_eq!(meta.stats.num_samples, 900);
        let b = Block::open(&dir.path().join(&meta.ulid)).unwrap();
        let got = b
            .select(
                &[Matcher::new(MatchOp::RegexMatch, "job", "a.*|w.*").unwrap()],
                10_000,
                12_000,
            )
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.get("job"), Some("api"));
        assert_eq!(
            got[1].1,
            vec![(10_000, 12.0), (11_000, 13.0), (12_000, 14.0)]
        );
        assert_eq!(b.num_series(), 3);
        // 300 samples fit one packed chunk.
        assert_eq!(b.series(0).unwrap().1.len(), 1);
        assert!(b.symbols().iter().any(|s| &**s == "web"));
    }

    #[test]
    fn tombstones_hide_samples_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_test_block(dir.path());
        let path = dir.path().join(&meta.ulid);
        let mut b = Block::open(&path).unwrap();
        assert_eq!(
            b.delete(&[Matcher::equal("job", "db")], 0, 100_000)
                .unwrap(),
            1
        );
        drop(b);
        let b = Block::open(&path).unwrap();
        let got = b
            .select(&[Matcher::equal("job", "db")], 0, 300_000)
            .unwrap();
        assert_eq!(got[0].1.first().map(|s| s.0), Some(101_000));
    }

    #[test]
    fn corrupt_index_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_test_block(dir.path());
        let idx = dir.path().join(&meta.ulid).join("index");
        let mut bytes = fs::read(&idx).unwrap();
        bytes[20] ^= 0xff;
        fs::write(&idx, bytes).unwrap();
        assert!(matches!(
            Block::open(&dir.path().join(&meta.ulid)),
            Err(BlockError::Corrupt { .. })
        ));
    }

    #[test]
    fn corrupt_chunk_is_an_error_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_test_block(dir.path());
        let f = dir.path().join(&meta.ulid).join("chunks").join("000001");
        let mut bytes = fs::read(&f).unwrap();
        bytes[30] ^= 0xff;
        fs::write(&f, bytes).unwrap();
        let b = Block::open(&dir.path().join(&meta.ulid)).unwrap();
        assert!(b.select(&[], 0, 300_000).is_err());
    }

    #[test]
    fn series_scraped_together_store_their_timestamps_once() {
        let dir = tempfile::tempdir().unwrap();
        // Jittered timestamps, the same for every series of a "target".
        let ts: Vec<i64> = (0..1000i64).map(|i| i * 1000 + (i * 7919) % 13).collect();
        let series: Vec<SeriesData> = (0..20)
            .map(|k| SeriesData {
                labels: Labels::from_pairs([("__name__", "m"), ("k", &format!("{k:02}"))]),
                chunks: encode_chunks(
                    &ts.iter()
                        .enumerate()
                        .map(|(i, &t)| (t, (i * k) as f64))
                        .collect::<Vec<_>>(),
                ),
            })
            .collect();
        let meta = write_block(
            dir.path(),
            0,
            2_000_000,
            &series,
            CompactionMeta {
                level: 1,
                sources: vec![],
            },
            &mem,
        )
        .unwrap();
        let b = Block::open(&dir.path().join(&meta.ulid)).unwrap();
        for id in 0..20u32 {
            let (_, chunks) = b.series(id).unwrap();
            let got = b.samples(id, &chunks, 5_000, 9_999).unwrap();
            let want: Vec<(i64, f64)> = ts
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, (i * id as usize) as f64))
                .filter(|s| s.0 >= 5_000 && s.0 <= 9_999)
                .collect();
            assert_eq!(got, want, "series {id}");
        }
        // Only the first series carries the timestamp column.
        let sizes: Vec<usize> = (0..20u32)
            .map(|id| {
                let (_, c) = b.series(id).unwrap();
                b.chunk(&c[0]).unwrap().1.len()
            })
            .collect();
        let ts_frame = packed::compress(&packed::timestamp_column(
            &ts.iter().map(|&t| (t, 0.0)).collect::<Vec<_>>(),
        ))
        .len();
        assert!(
            sizes[1..].iter().all(|&n| n < ts_frame),
            "{sizes:?} vs {ts_frame}"
        );
    }

    #[test]
    fn a_broken_shared_timestamp_reference_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let meta = write_test_block(dir.path());
        let path = dir.path().join(&meta.ulid);
        let b = Block::open(&path).unwrap();
        let (_, c0) = b.series(0).unwrap();
        let (_, c1) = b.series(1).unwrap();
        let first_len = b.chunk(&c0[0]).unwrap().1.len();
        assert!(b.chunk(&c1[0]).unwrap().1.len() < first_len);
        drop(b);
        // Flip a byte inside the first (inline) chunk: the second series'
        // reads fail with a corruption error naming the chunk, no panic.
        let f = path.join("chunks").join("000001");
        let mut bytes = fs::read(&f).unwrap();
        bytes[HEADER_LEN + 4] ^= 0x55;
        fs::write(&f, bytes).unwrap();
        let b = Block::open(&path).unwrap();
        let err = b.samples(1, &c1, 0, 300_000).unwrap_err().to_string();
        assert!(err.contains("shared timestamps"), "{err}");
    }
}
