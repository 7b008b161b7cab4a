//! The Panoptes TSDB: Gorilla-compressed head, WAL, blocks, compaction, retention
