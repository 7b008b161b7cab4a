//! The pipeline's `global:` section: defaults every stage may read.

use std::time::Duration;

use panoptes_model::Labels;

/// Defaults shared by stages, with Prometheus's defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalConfig {
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub evaluation_interval: Duration,
    /// Added to alerts and samples leaving the system (remote write,
    /// federation), as Prometheus's `external_labels`.
    pub external_labels: Labels,
    /// Whether admin endpoints (TSDB snapshot, delete_series) may be served:
    /// set by the host from `run --enable-admin-api`, never from YAML.
    pub enable_admin_api: bool,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            scrape_interval: Duration::from_secs(60),
            scrape_timeout: Duration::from_secs(10),
            evaluation_interval: Duration::from_secs(60),
            external_labels: Labels::empty(),
            enable_admin_api: false,
        }
    }
}
