//! Closed head chunks on disk (`chunks_head/`): once a head chunk is full it
//! is appended to a file and the head keeps only its location, so memory
//! holds one open chunk per series instead of hours of samples. Reads go
//! through the page cache (`pread`). The files are a cache of what the WAL
//! already holds: they are wiped on open and rebuilt by WAL replay, so they
//! need no checksums or recovery of their own.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Size at which a new chunk file starts.
const FILE_SIZE: u64 = 128 << 20;

/// Where a closed chunk lives on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskChunk {
    pub file: u32,
    pub offset: u64,
    pub len: u32,
}

struct ChunkFile {
    file: Arc<File>,
    size: u64,
    /// Newest sample time of any chunk in the file, for truncation.
    maxt: i64,
}

/// The open `chunks_head/` directory.
pub struct HeadChunkFiles {
    dir: PathBuf,
    files: BTreeMap<u32, ChunkFile>,
    current: u32,
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
            dir: dir.to_path_buf(),
            files: BTreeMap::new(),
            current: 0,
        };
        s.new_file()?;
        Ok(s)
    }

    fn new_file(&mut self) -> io::Result<()> {
        let index = self.current + 1;
        let path = self.dir.join(format!("{index:06}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        self.files.insert(
            index,
            ChunkFile {
                file: Arc::new(file),
                size: 0,
                maxt: i64::MIN,
            },
        );
        self.current = index;
        Ok(())
    }

    /// Appends a closed chunk whose newest sample is at `maxt`.
    pub fn write(&mut self, data: &[u8], maxt: i64) -> io::Result<DiskChunk> {
        let needs_new = self
            .files
            .get(&self.current)
            .is_none_or(|f| f.size > 0 && f.size + data.len() as u64 > FILE_SIZE);
        if needs_new {
            self.new_file()?;
        }
        let cur = self
            .files
            .get_mut(&self.current)
            .ok_or_else(|| io::Error::other("current head chunk file missing"))?;
        let offset = cur.size;
        (&*cur.file).write_all(data)?;
        cur.size += data.len() as u64;
        cur.maxt = cur.maxt.max(maxt);
        Ok(DiskChunk {
            file: self.current,
            offset,
            len: data.len() as u32,
        })
    }

    /// Reads a chunk back.
    pub fn read(&self, c: &DiskChunk) -> io::Result<Vec<u8>> {
        let f = self
            .files
            .get(&c.file)
            .ok_or_else(|| io::Error::other(format!("head chunk file {} is gone", c.file)))?;
        let mut buf = vec![0u8; c.len as usize];
        f.file.read_exact_at(&mut buf, c.offset)?;
        Ok(buf)
    }

    /// Deletes files all of whose chunks end before `t` (the head no longer
    /// references them), except the one being written.
    pub fn truncate(&mut self, t: i64) {
        let doomed: Vec<u32> = self
            .files
            .iter()
            .filter(|(i, f)| **i != self.current && f.maxt < t)
            .map(|(i, _)| *i)
            .collect();
        for i in doomed {
            self.files.remove(&i);
            let p = self.dir.join(format!("{i:06}"));
            if let Err(e) = fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove head chunk file");
            }
        }
    }

    /// Bytes in the files.
    pub fn size(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
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
}
