//! The scrape stage: one loop per target, Prometheus semantics.
//!
//! `kind: scrape` consumes `Targets` (the latest full set of each discovery
//! provider), applies target relabeling, scrapes each target every
//! `scrape_interval` over HTTP(S), parses the body with
//! `panoptes-exposition`, applies metric relabeling and limits, and emits
//! one `Samples` batch per scrape with the synthetic series (`up`,
//! `scrape_duration_seconds`, …) and stale markers for series and targets
//! that went away. A targets view feeds `/api/v1/targets`.

pub mod cache;
pub mod config;
pub mod error;
pub mod http;
mod metrics;
pub mod recording;
pub mod scrape_loop;
mod stage;
pub mod target;
mod tls;
mod view;

pub use config::ScrapeConfig;
pub use error::ScrapeError;
pub use recording::{fetch_mode, set_fetch_mode, FetchMode};
pub use stage::ScrapeKind;
