//! The PromQL evaluator: instant and range queries over a `SeriesSelect`
//! store, with Prometheus 3.x semantics (left-open windows, 5m lookback,
//! staleness, delayed `__name__` removal), plus an in-memory store and the
//! runner for Prometheus's PromQL test scripts.
//!
//! ```
//! use panoptes_model::Labels;
//! use panoptes_promql::{Engine, MemStore, Value};
//!
//! let mut store = MemStore::new();
//! let up = Labels::from_pairs([("__name__", "up"), ("job", "node")]);
//! store.add(&up, 0, 1.0);
//! let r = Engine::default().instant_query(&store, "sum by (job) (up)", 10_000)?;
//! match r.value {
//!     Value::Vector(v) => assert_eq!(v[0].v, 1.0),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), panoptes_promql::QueryError>(())
//! ```
//!
//! `cargo run -p panoptes-promql --bin promqltest -- <dir>` runs a
//! directory of Prometheus `*.test` scripts (see `CONFORMANCE.md`).

mod aggregate;
mod binary;
pub mod engine;
mod functions;
mod info;
pub mod memstore;
pub mod promqltest;
pub mod value;

pub use engine::{Engine, EngineOptions};
pub use memstore::MemStore;
pub use panoptes_promql_parser as parser;
pub use value::{QueryError, QueryResult, RangeSeries, Sample, Value};
