//! Target groups as they travel on `Targets` edges (discovery → scrape).
//!
//! A `Targets` edge is a latest-value edge: each message is the *full* current
//! set of groups of one provider, replacing the previous one.

use std::sync::Arc;

use crate::Labels;

/// One group of targets sharing common labels, as in Prometheus's
/// `static_configs` entries and file/HTTP SD documents.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TargetGroup {
    /// Where the group came from (config index, file path and index, URL):
    /// stable across refreshes so consumers can diff.
    pub source: String,
    /// One label set per target; each has at least `__address__`.
    pub targets: Vec<Labels>,
    /// Labels common to all targets of the group (including `__meta_*`).
    pub labels: Labels,
}

/// One message on a `Targets` edge.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TargetSet {
    /// The discovery stage (provider) that produced it.
    pub provider: Arc<str>,
    pub groups: Vec<TargetGroup>,
}

/// Health of a scrape target, as Prometheus's targets API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TargetHealth {
    #[default]
    Unknown,
    Up,
    Down,
}

impl TargetHealth {
    /// `up`, `down` or `unknown`, as in `/api/v1/targets`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetHealth::Unknown => "unknown",
            TargetHealth::Up => "up",
            TargetHealth::Down => "down",
        }
    }
}

/// The state of one active scrape target, for the targets view
/// (`/api/v1/targets`) and `panoptes` diagnostics.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TargetStatus {
    /// The scrape stage (Prometheus's scrape pool / job).
    pub scrape_pool: String,
    /// Labels as discovered, before target relabeling.
    pub discovered_labels: Labels,
    /// Labels after target relabeling (those attached to scraped series).
    pub labels: Labels,
    pub scrape_url: String,
    pub health: TargetHealth,
    /// Empty when the last scrape succeeded.
    pub last_error: String,
    /// Start of the last scrape, ms since the epoch (0 before the first).
    pub last_scrape_ms: i64,
    pub last_scrape_duration_seconds: f64,
    pub scrape_interval_ms: u64,
    pub scrape_timeout_ms: u64,
}
