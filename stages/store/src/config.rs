//! The `store` section of a pipeline: parsing, checking and its JSON Schema.

use std::path::PathBuf;
use std::time::Duration;

use panoptes_engine::stage::{CompileContext, ConfigIssue};
use panoptes_model::{parse_duration_ms, DURATION_PATTERN};
use panoptes_tsdb::{FsyncPolicy, Options};
use serde_json::{json, Value};

/// Longest block duration: a head chunk spans at most one block, and its
/// span is kept in 32 bits of milliseconds (49 days).
const MAX_BLOCK_DURATION_MS: i64 = 31 * 24 * 3_600_000;

/// A checked `store` section.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Data directory; `None` means `<data dir>/<stage id>`, known at start.
    pub path: Option<PathBuf>,
    pub options: Options,
    /// How often blocks are cut, compacted and expired.
    pub maintenance_interval: Duration,
}

/// The schema of the section (without the engine's `kind` and `inputs`).
pub fn schema() -> Value {
    let size_pattern = "^[0-9]+(\\.[0-9]+)?(B|KB|MB|GB|TB|PB|EB|KiB|MiB|GiB|TiB|PiB|EiB)$";
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "path": {"type": "string", "minLength": 1,
                "description": "Data directory (relative to the pipeline file). Default: <run --data-dir>/<stage id>."},
            "retention": {"type": "string", "pattern": DURATION_PATTERN,
                "description": "Delete blocks older than this. Default 15d."},
            "retention_size": {"type": "string", "pattern": size_pattern,
                "description": "Delete the oldest blocks while blocks and WAL exceed this size, e.g. 50GB (units of 1024, as Prometheus)."},
            "out_of_order_window": {"type": "string", "pattern": DURATION_PATTERN,
                "description": "Accept samples up to this far behind a series' newest sample. Default 0 (refused and counted, as Prometheus)."},
            "block_duration": {"type": "string", "pattern": DURATION_PATTERN,
                "description": "Time range of a block cut from the head, 1s to 31d. Default 2h."},
            "max_block_duration": {"type": "string", "pattern": DURATION_PATTERN,
                "description": "Largest block compaction builds. Default 10% of retention."},
            "wal_fsync": {"type": "string", "enum": ["batch", "interval"],
                "description": "fsync the WAL after every batch, or at most every wal_fsync_interval (default: interval; a returned append survives a process crash either way)."},
            "wal_fsync_interval": {"type": "string", "pattern": DURATION_PATTERN,
                "description": "With wal_fsync: interval, the longest time between fsyncs. Default 1s."},
            "wal_segment_size": {"type": "string", "pattern": size_pattern,
                "description": "Size at which a new WAL segment file starts. Default 128MiB."},
            "maintenance_interval": {"type": "string", "pattern": DURATION_PATTERN,
                "description": "How often blocks are cut, compacted and expired. Default 1m."}
        }
    })
}

/// Parses `512MB`, `1.5GB`, `10GiB`: decimal-looking units are powers of
/// 1024, as in Prometheus's `--storage.tsdb.retention.size`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("size {s:?} has no unit (expected e.g. 512MB, 50GB)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: {num:?} is not a number"))?;
    let mult: u64 = match unit {
        "B" => 1,
        "KB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        "TB" | "TiB" => 1 << 40,
        "PB" | "PiB" => 1 << 50,
        "EB" | "EiB" => 1 << 60,
        _ => {
            return Err(format!(
                "size {s:?}: unknown unit {unit:?} (expected B, KB, MB, GB, TB, PB, EB)"
            ))
        }
    };
    let v = n * mult as f64;
    if !v.is_finite() || v >= u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(v as u64)
}

/// Compiles a section, collecting every problem.
pub fn compile(ctx: &CompileContext, section: &Value) -> Result<StoreConfig, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let mut options = Options::default();
    let get_str = |key: &str| section.get(key).and_then(Value::as_str);
    let duration = |key: &str, issues: &mut Vec<ConfigIssue>| -> Option<i64> {
        let s = get_str(key)?;
        match parse_duration_ms(s) {
            Ok(ms) if ms <= i64::MAX as u64 => Some(ms as i64),
            Ok(_) => {
                issues.push(ConfigIssue::new(
                    key,
                    format!("duration {s:?} is too large"),
                ));
                None
            }
            Err(e) => {
                issues.push(ConfigIssue::new(key, e.to_string()));
                None
            }
        }
    };
    if let Some(ms) = duration("retention", &mut issues) {
        options.retention_ms = ms;
    }
    if let Some(ms) = duration("out_of_order_window", &mut issues) {
        options.out_of_order_window_ms = ms;
    }
    if let Some(ms) = duration("block_duration", &mut issues) {
        if ms < 1000 {
            issues.push(ConfigIssue::new(
                "block_duration",
                "block_duration must be at least 1s (default 2h)",
            ));
        } else if ms > MAX_BLOCK_DURATION_MS {
            // The head keeps a chunk's time span in 32 bits of milliseconds.
            issues.push(ConfigIssue::new(
                "block_duration",
                "block_duration must be at most 31d (default 2h)",
            ));
        } else {
            options.block_duration_ms = ms;
        }
    }
    if let Some(ms) = duration("max_block_duration", &mut issues) {
        options.max_block_duration_ms = Some(ms);
    }
    let mut fsync_interval = Duration::from_secs(1);
    if let Some(ms) = duration("wal_fsync_interval", &mut issues) {
        fsync_interval = Duration::from_millis(ms as u64);
    }
    options.wal_fsync = match get_str("wal_fsync") {
        Some("batch") => FsyncPolicy::EveryBatch,
        Some("interval") | None => FsyncPolicy::Interval(fsync_interval),
        Some(other) => {
            issues.push(ConfigIssue::new(
                "wal_fsync",
                format!("unknown wal_fsync {other:?} (expected batch or interval)"),
            ));
            FsyncPolicy::Interval(fsync_interval)
        }
    };
    let mut maintenance_interval = Duration::from_secs(60);
    if let Some(ms) = duration("maintenance_interval", &mut issues) {
        if ms == 0 {
            issues.push(ConfigIssue::new("maintenance_interval", "must be above 0"));
        } else {
            maintenance_interval = Duration::from_millis(ms as u64);
        }
    }
    for (key, target) in [("retention_size", 0), ("wal_segment_size", 1)] {
        let Some(s) = get_str(key) else { continue };
        match parse_bytes(s) {
            Ok(n) if target == 0 => options.retention_size = Some(n),
            Ok(n) if n < 1 << 16 => issues.push(ConfigIssue::new(
                key,
                format!("{s:?} is too small (at least 64KiB)"),
            )),
            Ok(n) => options.wal_segment_size = n,
            Err(e) => issues.push(ConfigIssue::new(key, e)),
        }
    }
    let path = match section.get("path") {
        None => None,
        Some(Value::String(p)) if !p.is_empty() => Some(ctx.resolve(p)),
        Some(_) => {
            issues.push(ConfigIssue::new("path", "path must be a non-empty string"));
            None
        }
    };
    if issues.is_empty() {
        Ok(StoreConfig {
            path,
            options,
            maintenance_interval,
        })
    } else {
        Err(issues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> CompileContext {
        CompileContext {
            stage_id: "tsdb".into(),
            base_dir: PathBuf::from("/etc/panoptes"),
            global: Default::default(),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let c = compile(&ctx(), &json!({})).unwrap();
        assert_eq!(c.path, None);
        assert_eq!(c.options, Options::default());
        let c = compile(
            &ctx(),
            &json!({"path": "data", "retention": "30d", "retention_size": "50GB",
                    "out_of_order_window": "10m", "block_duration": "1h", "wal_fsync": "batch"}),
        )
        .unwrap();
        assert_eq!(c.path, Some(PathBuf::from("/etc/panoptes/data")));
        assert_eq!(c.options.retention_ms, 30 * 86_400_000);
        assert_eq!(c.options.retention_size, Some(50 << 30));
        assert_eq!(c.options.out_of_order_window_ms, 600_000);
        assert_eq!(c.options.block_duration_ms, 3_600_000);
        assert_eq!(c.options.wal_fsync, FsyncPolicy::EveryBatch);
    }

    #[test]
    fn every_problem_is_reported() {
        let issues = compile(
            &ctx(),
            &json!({"retention": "15x", "retention_size": "10 parsecs", "block_duration": "10ms"}),
        )
        .unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, vec!["retention", "block_duration", "retention_size"]);
    }

    #[test]
    fn sizes_use_powers_of_1024() {
        assert_eq!(parse_bytes("512MB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5KiB").unwrap(), 1536);
        assert!(parse_bytes("12").is_err());
        assert!(parse_bytes("1ZB").is_err());
    }
}
