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
