//! The scrape stage: one loop per target, Prometheus semantics
