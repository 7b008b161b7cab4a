//! Closed head chunks on disk (`chunks_head/`): once a head chunk is full it
//! is appended to a file and the head keeps only its location, so memory
//! holds one open chunk per series instead of hours of samples. Reads go
//! through the page cache (`pread`). The files are a cache of what the WAL
//! already holds: they are wiped on open and rebuilt by WAL replay, so they
//! need no checksums or recovery of their own.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Size at which a new chunk file starts (offsets then fit in 32 bits).
const FILE_SIZE: u64 = 128 << 20;

/// Closed chunks are gathered in memory and written in pieces of this size:
/// a `write` per chunk (one per series every 120 samples) costs more than
/// the rest of cutting the chunk.
const WRITE_BYTES: usize = 64 << 10;

/// Where a closed chunk lives: a file and a range in it. 12 bytes, as the
/// head keeps one per closed chunk of every series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskChunk {
    pub file: u32,
    pub offset: u32,
    pub len: u32,
}

/// What holds a chunk file's bytes.
enum Backing {
    /// A file in `chunks_head/`, read through the page cache; its last
    /// bytes may still be in `pending`, not yet written.
    Disk { file: Arc<File>, pending: Vec<u8> },
    /// Memory: for a head without a directory, and the fallback when the
    /// disk refuses a write (the WAL still has the samples).
    Mem(Vec<u8>),
}

struct ChunkFile {
    backing: Backing,
    size: u64,
    /// Newest sample time of any chunk in the file, for truncation.
    maxt: i64,
}

impl ChunkFile {
    /// Writes the pending bytes of a disk file, at their offset: after a
    /// failed (possibly partial) write, the next attempt writes them again
    /// in place.
    fn flush(&mut self) -> io::Result<()> {
        if let Backing::Disk { file, pending } = &mut self.backing {
            if !pending.is_empty() {
                file.write_all_at(pending, self.size - pending.len() as u64)?;
                pending.clear();
            }
        }
        Ok(())
    }
}

/// The open `chunks_head/` directory (or its in-memory stand-in).
pub struct HeadChunkFiles {
    dir: Option<PathBuf>,
    files: BTreeMap<u32, ChunkFile>,
    /// The disk file being written.
    current: Option<u32>,
    /// The memory file being written.
    current_mem: Option<u32>,
    next_id: u32,
}

impl std::fmt::Debug for HeadChunkFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadChunkFiles")
            .field("dir", &self.dir)
            .field("files", &self.files.len())
            .finish()
    }
}

impl HeadChunkFiles {
    /// Opens `dir`, discarding what a previous run left (the WAL replay
    /// rebuilds it).
    pub fn open(dir: &Path) -> io::Result<HeadChunkFiles> {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
        fs::create_dir_all(dir)?;
        let mut s = HeadChunkFiles {
            dir: Some(dir.to_path_buf()),
            ..HeadChunkFiles::in_memory()
        };
        s.new_disk_file()?;
        Ok(s)
    }

    /// Chunk "files" kept in memory: a head without a directory.
    pub fn in_memory() -> HeadChunkFiles {
        HeadChunkFiles {
            dir: None,
            files: BTreeMap::new(),
            current: None,
            current_mem: None,
            next_id: 1,
        }
    }

    /// A number for a new file, within 16 bits (a series keeps its closed
    /// chunks' file numbers in two bytes), skipping numbers still in use
    /// after it wraps.
    fn new_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = if id >= u32::from(u16::MAX) { 1 } else { id + 1 };
            if !self.files.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_disk_file(&mut self) -> io::Result<u32> {
        let dir = self
            .dir
            .clone()
            .ok_or_else(|| io::Error::other("head chunks are kept in memory"))?;
        let index = self.new_id();
        let path = dir.join(format!("{index:06}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        self.files.insert(
            index,
            ChunkFile {
                backing: Backing::Disk {
                    file: Arc::new(file),
                    pending: Vec::new(),
                },
                size: 0,
                maxt: i64::MIN,
            },
        );
        self.current = Some(index);
        Ok(index)
    }

    /// The file to append `len` bytes to: the current one, or a new one
    /// when it is full.
    fn target(&mut self, len: usize, disk: bool) -> io::Result<u32> {
        let current = if disk { self.current } else { self.current_mem };
        if let Some(i) = current {
            if let Some(f) = self.files.get(&i) {
                if f.size == 0 || f.size + len as u64 <= FILE_SIZE {
                    return Ok(i);
                }
            }
        }
        if disk {
            if let Some(f) = current.and_then(|i| self.files.get_mut(&i)) {
                f.flush()?;
            }
            self.new_disk_file()
        } else {
            let i = self.new_id();
            self.files.insert(
                i,
                ChunkFile {
                    backing: Backing::Mem(Vec::new()),
                    size: 0,
                    maxt: i64::MIN,
                },
            );
            self.current_mem = Some(i);
            Ok(i)
        }
    }

    /// Appends a closed chunk whose newest sample is at `maxt`: to disk
    /// when there is a directory, else to memory.
    pub fn write(&mut self, data: &[u8], maxt: i64) -> io::Result<DiskChunk> {
        self.append(data, maxt, self.dir.is_some())
    }

    /// Appends a closed chunk to memory whatever the directory (after the
    /// disk refused it).
    pub fn write_in_memory(&mut self, data: &[u8], maxt: i64) -> DiskChunk {
        match self.append(data, maxt, false) {
            Ok(d) => d,
            Err(_) => unreachable!("appending to memory does not fail"),
        }
    }

    fn append(&mut self, data: &[u8], maxt: i64, disk: bool) -> io::Result<DiskChunk> {
        let len = u32::try_from(data.len())
            .map_err(|_| io::Error::other("head chunk larger than 4 GiB"))?;
        let i = self.target(data.len(), disk)?;
        let cur = self
            .files
            .get_mut(&i)
            .ok_or_else(|| io::Error::other("current head chunk file missing"))?;
        let offset = cur.size as u32;
        match &mut cur.backing {
            Backing::Disk { pending, .. } => pending.extend_from_slice(data),
            Backing::Mem(v) => v.extend_from_slice(data),
        }
        cur.size += data.len() as u64;
        cur.maxt = cur.maxt.max(maxt);
        let full =
            matches!(&cur.backing, Backing::Disk { pending, .. } if pending.len() >= WRITE_BYTES);
        if full {
            if let Err(e) = cur.flush() {
                // Not written: forget the chunk rather than hand out a
                // location that reads garbage (the caller keeps it in
                // memory instead).
                cur.size -= data.len() as u64;
                if let Backing::Disk { pending, .. } = &mut cur.backing {
                    pending.truncate(pending.len() - data.len());
                }
                return Err(e);
            }
        }
        Ok(DiskChunk {
            file: i,
            offset,
            len,
        })
    }

    /// Reads a chunk back.
    pub fn read(&self, c: &DiskChunk) -> io::Result<Vec<u8>> {
        let f = self
            .files
            .get(&c.file)
            .ok_or_else(|| io::Error::other(format!("head chunk file {} is gone", c.file)))?;
        match &f.backing {
            Backing::Disk { file, pending } => {
                let start = u64::from(c.offset);
                let end = start + u64::from(c.len);
                let written = f.size - pending.len() as u64;
                if end > f.size {
                    return Err(io::Error::other("head chunk beyond its file"));
                }
                let mut buf = vec![0u8; c.len as usize];
                let on_disk = (written.min(end).saturating_sub(start)) as usize;
                if on_disk > 0 {
                    file.read_exact_at(&mut buf[..on_disk], start)?;
                }
                let rest = buf.len() - on_disk;
                if rest > 0 {
                    let from = (start + on_disk as u64 - written) as usize;
                    buf[on_disk..].copy_from_slice(&pending[from..from + rest]);
                }
                Ok(buf)
            }
            Backing::Mem(v) => v
                .get(c.offset as usize..c.offset as usize + c.len as usize)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::other("head chunk beyond its memory file")),
        }
    }

    /// Deletes files all of whose chunks end before `t` (the head no longer
    /// references them), except the ones being written.
    pub fn truncate(&mut self, t: i64) {
        let doomed: Vec<u32> = self
            .files
            .iter()
            .filter(|(i, f)| {
                Some(**i) != self.current && Some(**i) != self.current_mem && f.maxt < t
            })
            .map(|(i, _)| *i)
            .collect();
        for i in doomed {
            let Some(f) = self.files.remove(&i) else {
                continue;
            };
            if let (Backing::Disk { .. }, Some(dir)) = (&f.backing, &self.dir) {
                let p = dir.join(format!("{i:06}"));
                if let Err(e) = fs::remove_file(&p) {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove head chunk file");
                }
            }
        }
    }

    /// Bytes in the files on disk.
    pub fn size(&self) -> u64 {
        self.files
            .values()
            .filter(|f| matches!(f.backing, Backing::Disk { .. }))
            .map(|f| f.size)
            .sum()
    }

    /// Bytes of chunks held in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.files
            .values()
            .filter(|f| matches!(f.backing, Backing::Mem(_)))
            .map(|f| f.size)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = HeadChunkFiles::open(&dir.path().join("chunks_head")).unwrap();
        let a = f.write(b"hello", 10).unwrap();
        let b = f.write(b"world!", 20).unwrap();
        assert_eq!(f.read(&a).unwrap(), b"hello");
        assert_eq!(f.read(&b).unwrap(), b"world!");
        f.truncate(100);
        // The current file is never removed.
        assert_eq!(f.read(&b).unwrap(), b"world!");
        assert_eq!(f.size(), 11);
        // Reopening wipes the directory.
        drop(f);
        let f = HeadChunkFiles::open(&dir.path().join("chunks_head")).unwrap();
        assert!(f.read(&a).is_err());
    }

    #[test]
    fn reads_span_written_and_pending_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = HeadChunkFiles::open(&dir.path().join("chunks_head")).unwrap();
        // Enough chunks that some are written and the last are pending.
        let chunks: Vec<(DiskChunk, Vec<u8>)> = (0..300u32)
            .map(|i| {
                let data: Vec<u8> = (0..(200 + i % 700)).map(|b| (b ^ i) as u8).collect();
                (f.write(&data, i64::from(i)).unwrap(), data)
            })
            .collect();
        assert!(
            fs::metadata(dir.path().join("chunks_head/000001"))
                .unwrap()
                .len()
                > 0
        );
        for (at, data) in &chunks {
            assert_eq!(&f.read(at).unwrap(), data);
        }
        // A read across the boundary of written and pending bytes.
        let (first, last) = (chunks[0].0, chunks[299].0);
        let span = DiskChunk {
            file: first.file,
            offset: 0,
            len: last.offset + last.len,
        };
        let all: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.clone()).collect();
        assert_eq!(f.read(&span).unwrap(), all);
        assert_eq!(f.size(), all.len() as u64);
    }

    #[test]
    fn file_numbers_wrap_within_16_bits_past_those_in_use() {
        let mut m = HeadChunkFiles::in_memory();
        let a = m.write(b"abc", 5).unwrap();
        assert_eq!(a.file, 1);
        m.next_id = u32::from(u16::MAX);
        assert_eq!(m.new_id(), u32::from(u16::MAX));
        // 1 holds `a`: the numbering goes on at 2.
        assert_eq!(m.new_id(), 2);
        assert_eq!(m.read(&a).unwrap(), b"abc");
    }

    #[test]
    fn memory_files_and_the_fallback() {
        let mut m = HeadChunkFiles::in_memory();
        let a = m.write(b"abc", 5).unwrap();
        assert_eq!(m.read(&a).unwrap(), b"abc");
        assert_eq!((m.size(), m.memory_bytes()), (0, 3));
        let dir = tempfile::tempdir().unwrap();
        let mut f = HeadChunkFiles::open(&dir.path().join("chunks_head")).unwrap();
        let d = f.write(b"disk", 10).unwrap();
        let m = f.write_in_memory(b"mem", 20);
        assert_ne!(d.file, m.file);
        assert_eq!(f.read(&d).unwrap(), b"disk");
        assert_eq!(f.read(&m).unwrap(), b"mem");
        assert_eq!((f.size(), f.memory_bytes()), (4, 3));
    }
}
