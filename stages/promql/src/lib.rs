//! The PromQL evaluator: instant and range queries over a SeriesSelect store
