//! The Panoptes TSDB: a Gorilla-compressed in-memory head backed by a
//! write-ahead log, cut into immutable memory-mapped blocks that are
//! compacted and expired by retention. It implements
//! [`panoptes_model::SeriesSelect`] so PromQL and the query API read from it.
//! See `LAYOUT.md` for the directory layout.

pub mod analyze;
pub mod bits;
pub mod block;
pub mod chunk;
pub mod db;
pub mod head;
pub mod head_chunks;
pub mod packed;
pub mod postings;
mod source_refs;
pub mod wal;

pub use analyze::{Analysis, BlockChurn};
pub use db::{AppendOutcome, Db, DbStats, Options, TsdbError};
pub use head::RejectReason;
pub use wal::FsyncPolicy;
