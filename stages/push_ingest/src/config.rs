//! The `push_ingest` section: its JSON Schema, its typed form and the pure
//! compile step.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use panoptes_engine::stage::{CompileContext, ConfigIssue};
use panoptes_model::{parse_duration, DURATION_PATTERN};
use serde::Deserialize;
use serde_json::json;

use crate::store::Limits;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:9091";
pub const DEFAULT_PERSISTENCE_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_GROUP_SERIES: usize = 10_000;
pub const DEFAULT_MAX_TOTAL_SERIES: usize = 1_000_000;
pub const DEFAULT_MAX_PUSH_BYTES: usize = 32 << 20;

/// The JSON Schema of the section (without the engine's `kind`/`inputs`).
pub fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "listen": {"type": "string", "description": "Address of the Pushgateway API listener (default 0.0.0.0:9091)."},
            "interval": {"description": "How often the held groups are emitted as one Samples batch (default global.scrape_interval).", "type": "string", "pattern": DURATION_PATTERN},
            "persistence_file": {"type": "string", "description": "File the groups are saved to (atomically) and restored from."},
            "persistence_interval": {"description": "Minimum time between two writes of persistence_file (default 5m).", "type": "string", "pattern": DURATION_PATTERN},
            "expire_after": {"description": "Drop a group not pushed successfully for this long (off by default).", "type": "string", "pattern": DURATION_PATTERN},
            "max_group_series": {"type": "integer", "minimum": 0, "description": "Series one group may hold (0 = unlimited; default 10000)."},
            "max_total_series": {"type": "integer", "minimum": 0, "description": "Series all groups may hold together (0 = unlimited; default 1000000)."},
            "max_push_bytes": {"type": "integer", "minimum": 1, "description": "Largest accepted push body, after gzip decoding (default 32 MiB)."},
            "enable_admin_api": {"type": "boolean", "description": "Serve PUT /api/v1/admin/wipe (off by default, as in the Pushgateway)."}
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    interval: Option<String>,
    persistence_file: Option<String>,
    persistence_interval: Option<String>,
    expire_after: Option<String>,
    max_group_series: Option<usize>,
    max_total_series: Option<usize>,
    max_push_bytes: Option<usize>,
    #[serde(default)]
    enable_admin_api: bool,
}

/// Settings that may change in place on reload.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub interval: Duration,
    pub persistence_interval: Duration,
    pub expire_after: Option<Duration>,
    pub limits: Limits,
    pub max_push_bytes: usize,
    pub enable_admin_api: bool,
}

/// The compiled section.
#[derive(Clone, Debug, PartialEq)]
pub struct PushIngestConfig {
    pub listen: SocketAddr,
    pub persistence_file: Option<PathBuf>,
    pub settings: Settings,
}

fn duration(
    raw: &Option<String>,
    field: &str,
    positive: bool,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Duration> {
    let s = raw.as_ref()?;
    match parse_duration(s) {
        Ok(d) if positive && d.is_zero() => {
            issues.push(ConfigIssue::new(field, "must be a positive duration"));
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            issues.push(ConfigIssue::new(field, e.to_string()));
            None
        }
    }
}

/// Compiles the section, collecting every problem.
pub fn compile(
    ctx: &CompileContext,
    section: &serde_json::Value,
) -> Result<PushIngestConfig, Vec<ConfigIssue>> {
    let raw: Raw = serde_json::from_value(section.clone())
        .map_err(|e| vec![ConfigIssue::new("", e.to_string())])?;
    let mut issues = Vec::new();
    let listen_str = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match listen_str.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            issues.push(ConfigIssue::new(
                "listen",
                format!("{listen_str:?} is not an address of the form host:port with an IP host (e.g. 0.0.0.0:9091, 127.0.0.1:9091, [::]:9091)"),
            ));
            // Only reported; never used because compile fails.
            SocketAddr::from(([0, 0, 0, 0], 9091))
        }
    };
    let interval = duration(&raw.interval, "interval", true, &mut issues)
        .unwrap_or(ctx.global.scrape_interval);
    let persistence_interval = duration(
        &raw.persistence_interval,
        "persistence_interval",
        true,
        &mut issues,
    )
    .unwrap_or(DEFAULT_PERSISTENCE_INTERVAL);
    let expire_after = duration(&raw.expire_after, "expire_after", true, &mut issues);
    let persistence_file = match raw.persistence_file.as_deref() {
        Some("") => {
            issues.push(ConfigIssue::new("persistence_file", "must not be empty"));
            None
        }
        Some(p) => {
            let path = ctx.resolve(p);
            if path.is_dir() {
                issues.push(ConfigIssue::new(
                    "persistence_file",
                    format!("{} is a directory, expected a file path", path.display()),
                ));
            }
            Some(path)
        }
        None => None,
    };
    if raw.max_push_bytes == Some(0) {
        issues.push(ConfigIssue::new("max_push_bytes", "must be at least 1"));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(PushIngestConfig {
        listen,
        persistence_file,
        settings: Settings {
            interval,
            persistence_interval,
            expire_after,
            limits: Limits {
                max_group_series: raw.max_group_series.unwrap_or(DEFAULT_MAX_GROUP_SERIES),
                max_total_series: raw.max_total_series.unwrap_or(DEFAULT_MAX_TOTAL_SERIES),
            },
            max_push_bytes: raw.max_push_bytes.unwrap_or(DEFAULT_MAX_PUSH_BYTES),
            enable_admin_api: raw.enable_admin_api,
        },
    })
}
