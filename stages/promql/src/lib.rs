//! The PromQL evaluator: instant and range queries over a `SeriesSelect`
//! store, with Prometheus 3.x semantics (left-open windows, 5m lookback,
//! staleness, delayed `__name__` removal), plus an in-memory store and the
//! runner for Prometheus's PromQL test scripts.

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
pub use value::{format_api_float, QueryError, QueryResult, RangeSeries, Sample, Value};
