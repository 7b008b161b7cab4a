//! Target discovery: static, file-based and HTTP service discovery as
//! Prometheus does it, as the `discovery` stage kind. It takes no inputs and
//! emits, on its default output, the full set of target groups (a `Targets`
//! message whose provider is the stage id) at start and whenever it changes.
//!
//! Each target carries `__address__`; each group carries its configured
//! labels plus the `__meta_*` labels Prometheus sets (`__meta_filepath` for
//! file_sd, `__meta_url` for http_sd). `__scheme__`, `__metrics_path__` and
//! `__param_*` belong to the scrape config and are added by the scrape stage.

pub mod config;
pub mod file;
pub mod groups;
pub mod http;
mod run;

pub use config::{DiscoveryConfig, FileSdConfig, HttpSdConfig};
pub use run::Discovery;

use panoptes_engine::stage::{CompileContext, ConfigIssue, StageConfig, StageKind};

/// The `discovery` stage kind.
pub struct DiscoveryKind;

impl StageKind for DiscoveryKind {
    fn name(&self) -> &'static str {
        "discovery"
    }

    fn description(&self) -> &'static str {
        "Discovers scrape targets from static_configs, file_sd_configs and http_sd_configs (Targets output)"
    }

    fn config_schema(&self) -> serde_json::Value {
        config::schema()
    }

    fn compile(
        &self,
        ctx: &CompileContext,
        section: &serde_json::Value,
    ) -> Result<Box<dyn StageConfig>, Vec<ConfigIssue>> {
        config::compile(ctx, section).map(|c| Box::new(c) as Box<dyn StageConfig>)
    }
}
