//! The `scrape` section: its JSON Schema and compiling it into a checked
//! [`ScrapeConfig`] with Prometheus's defaults and validation rules
//! (`scrape_config` in Prometheus's configuration).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use panoptes_engine::stage::{CompileContext, ConfigIssue};
use panoptes_model::{parse_duration, PromDuration, DURATION_PATTERN};
use panoptes_relabel::{compile_rules, relabel_rule_schema, RelabelRule};
use serde_json::{json, Map, Value};

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A secret given inline or by a file read at each scrape (so rotation
/// works without a reload, as in Prometheus).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("<secret>"),
            Secret::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

impl Secret {
    /// The secret's value; a file's content without its trailing newline.
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => {
                let s = std::fs::read_to_string(p)?;
                Ok(s.trim_end_matches(['\r', '\n']).to_string())
            }
        }
    }
}

/// `basic_auth` or `authorization`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    Basic {
        username: String,
        password: Option<Secret>,
    },
    Authorization {
        kind: String,
        credentials: Option<Secret>,
    },
}

/// `tls_config`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// Per-scrape limits; 0 means no limit, as in Prometheus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub sample_limit: usize,
    pub label_limit: usize,
    pub label_name_length_limit: usize,
    pub label_value_length_limit: usize,
    pub body_size_limit: u64,
}

/// A compiled `scrape` section.
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub metrics_path: String,
    pub params: BTreeMap<String, Vec<String>>,
    pub scheme: Scheme,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub auth: Option<Auth>,
    pub tls: TlsConfig,
    pub gzip: bool,
    pub relabel_configs: Vec<RelabelRule>,
    pub metric_relabel_configs: Vec<RelabelRule>,
    pub limits: Limits,
    /// The section as written, for change detection on reload.
    pub(crate) source: Value,
}

fn duration_schema(desc: &str) -> Value {
    json!({"type": "string", "pattern": DURATION_PATTERN, "description": desc})
}

fn file_schema(desc: &str) -> Value {
    json!({"type": "string", "minLength": 1, "description": desc})
}

fn limit_schema(desc: &str) -> Value {
    json!({"type": "integer", "minimum": 0, "description": desc})
}

/// The JSON Schema of the section (without `kind` and `inputs`).
pub fn schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "job_name": {"type": "string", "minLength": 1, "description": "The `job` label of scraped series (default: the stage id)."},
            "scrape_interval": duration_schema("How often to scrape each target (default: global scrape_interval)."),
            "scrape_timeout": duration_schema("Per-scrape timeout, at most scrape_interval (default: global scrape_timeout)."),
            "metrics_path": {"type": "string", "description": "HTTP path to scrape (default /metrics)."},
            "params": {
                "type": "object",
                "description": "URL query parameters.",
                "additionalProperties": {"type": "array", "items": {"type": "string"}}
            },
            "scheme": {"enum": ["http", "https"], "description": "Default http."},
            "honor_labels": {"type": "boolean", "description": "Keep scraped labels that clash with target labels (default false: rename them exported_*)."},
            "honor_timestamps": {"type": "boolean", "description": "Use timestamps from the body (default true)."},
            "gzip": {"type": "boolean", "description": "Ask for gzip-compressed responses (default true)."},
            "enable_compression": {"type": "boolean", "description": "Prometheus's name for `gzip`."},
            "basic_auth": {
                "type": "object",
                "additionalProperties": false,
                "required": ["username"],
                "properties": {
                    "username": {"type": "string"},
                    "password": {"type": "string"},
                    "password_file": file_schema("File holding the password, read at each scrape.")
                }
            },
            "authorization": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "type": {"type": "string", "description": "Default Bearer."},
                    "credentials": {"type": "string"},
                    "credentials_file": file_schema("File holding the credentials, read at each scrape.")
                }
            },
            "tls_config": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "ca_file": file_schema("PEM CA certificates to verify the target with."),
                    "cert_file": file_schema("PEM client certificate."),
                    "key_file": file_schema("PEM client key."),
                    "server_name": {"type": "string", "description": "Name to verify the target's certificate against instead of the URL's host (the SNI sent stays the URL's host)."},
                    "insecure_skip_verify": {"type": "boolean"}
                }
            },
            "relabel_configs": {"type": "array", "items": relabel_rule_schema(), "description": "Target relabeling, before scraping."},
            "metric_relabel_configs": {"type": "array", "items": relabel_rule_schema(), "description": "Series relabeling, after parsing."},
            "sample_limit": limit_schema("Fail a scrape with more samples than this after metric relabeling (0: no limit)."),
            "label_limit": limit_schema("Fail a scrape with a series of more labels than this (0: no limit)."),
            "label_name_length_limit": limit_schema("Fail a scrape with a longer label name (0: no limit)."),
            "label_value_length_limit": limit_schema("Fail a scrape with a longer label value (0: no limit)."),
            "body_size_limit": {
                "type": ["integer", "string"],
                "description": "Fail a scrape whose uncompressed body is larger: bytes, or a size such as 10MB (base 2; 0: no limit).",
                "minimum": 0,
                "pattern": "^[0-9]+(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?$"
            }
        }
    })
}

/// Parses Prometheus's base-2 byte sizes (`512`, `100KB`, `10MB`, `1GiB`).
pub fn parse_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        "TB" | "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

struct Reader<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
    issues: &'a mut Vec<ConfigIssue>,
}

impl Reader<'_> {
    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn string(&mut self, key: &str) -> Option<String> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                let p = self.path(key);
                self.issues.push(ConfigIssue::new(p, "expected a string"));
                None
            }
        }
    }

    fn boolean(&mut self, key: &str) -> Option<bool> {
        match self.obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                let p = self.path(key);
                self.issues
                    .push(ConfigIssue::new(p, "expected true or false"));
                None
            }
        }
    }

    fn duration(&mut self, key: &str) -> Option<Duration> {
        let s = self.string(key)?;
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                let p = self.path(key);
                self.issues.push(ConfigIssue::new(p, e.to_string()));
                None
            }
        }
    }

    fn limit(&mut self, key: &str) -> usize {
        match self.obj.get(key) {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => n,
                None => {
                    let p = self.path(key);
                    self.issues
                        .push(ConfigIssue::new(p, "expected a non-negative integer"));
                    0
                }
            },
        }
    }

    fn file(&mut self, ctx: &CompileContext, key: &str) -> Option<PathBuf> {
        let s = self.string(key)?;
        let path = ctx.resolve(&s);
        if let Err(e) = std::fs::metadata(&path) {
            let p = self.path(key);
            self.issues.push(ConfigIssue::new(
                p,
                format!("cannot read {}: {e}", path.display()),
            ));
        }
        Some(path)
    }

    fn unknown_keys(&mut self, known: &[&str]) {
        for k in self.obj.keys() {
            if !known.contains(&k.as_str()) {
                let p = self.path(k);
                self.issues.push(ConfigIssue::new(
                    p,
                    format!("unknown field (expected one of {})", known.join(", ")),
                ));
            }
        }
    }
}

fn sub_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<&'a Map<String, Value>> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            issues.push(ConfigIssue::new(key, "expected a mapping"));
            None
        }
    }
}

const KNOWN: &[&str] = &[
    "job_name",
    "scrape_interval",
    "scrape_timeout",
    "metrics_path",
    "params",
    "scheme",
    "honor_labels",
    "honor_timestamps",
    "gzip",
    "enable_compression",
    "basic_auth",
    "authorization",
    "tls_config",
    "relabel_configs",
    "metric_relabel_configs",
    "sample_limit",
    "label_limit",
    "label_name_length_limit",
    "label_value_length_limit",
    "body_size_limit",
];

/// Compiles a `scrape` section, reporting every problem.
pub fn compile(ctx: &CompileContext, section: &Value) -> Result<ScrapeConfig, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let empty = Map::new();
    let obj = match section {
        Value::Object(m) => m,
        Value::Null => &empty,
        _ => return Err(vec![ConfigIssue::new("", "expected a mapping")]),
    };
    let mut r = Reader {
        obj,
        prefix: String::new(),
        issues: &mut issues,
    };
    r.unknown_keys(KNOWN);
    let job_name = r.string("job_name").unwrap_or_else(|| ctx.stage_id.clone());
    let interval_given = r.duration("scrape_interval");
    let timeout_given = r.duration("scrape_timeout");
    let scrape_interval = interval_given.unwrap_or(ctx.global.scrape_interval);
    // Prometheus: without an explicit timeout, the global one, capped at
    // the job's interval.
    let scrape_timeout = timeout_given.unwrap_or(ctx.global.scrape_timeout.min(scrape_interval));
    let metrics_path = r
        .string("metrics_path")
        .unwrap_or_else(|| "/metrics".to_string());
    let scheme = match r.string("scheme").as_deref() {
        None | Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => {
            r.issues.push(ConfigIssue::new(
                "scheme",
                format!("unknown scheme {other:?} (expected http or https)"),
            ));
            Scheme::Http
        }
    };
    let honor_labels = r.boolean("honor_labels").unwrap_or(false);
    let honor_timestamps = r.boolean("honor_timestamps").unwrap_or(true);
    let gzip = match (r.boolean("gzip"), r.boolean("enable_compression")) {
        (Some(a), Some(b)) if a != b => {
            r.issues.push(ConfigIssue::new(
                "enable_compression",
                "contradicts `gzip`; set only one of them",
            ));
            a
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => true,
    };
    let limits = Limits {
        sample_limit: r.limit("sample_limit"),
        label_limit: r.limit("label_limit"),
        label_name_length_limit: r.limit("label_name_length_limit"),
        label_value_length_limit: r.limit("label_value_length_limit"),
        body_size_limit: match obj.get("body_size_limit") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n.as_u64().unwrap_or_else(|| {
                r.issues.push(ConfigIssue::new(
                    "body_size_limit",
                    "expected a non-negative size",
                ));
                0
            }),
            Some(Value::String(s)) => parse_size(s).unwrap_or_else(|| {
                r.issues.push(ConfigIssue::new(
                    "body_size_limit",
                    format!("invalid size {s:?} (expected bytes or e.g. 512KB, 10MB, 1GB)"),
                ));
                0
            }),
            Some(_) => {
                r.issues
                    .push(ConfigIssue::new("body_size_limit", "expected a size"));
                0
            }
        },
    };

    if scrape_timeout > scrape_interval {
        issues.push(ConfigIssue::new(
            if timeout_given.is_some() {
                "scrape_timeout"
            } else {
                "scrape_interval"
            },
            format!(
                "scrape_timeout ({}) is greater than scrape_interval ({})",
                PromDuration(scrape_timeout),
                PromDuration(scrape_interval)
            ),
        ));
    }
    if scrape_interval.is_zero() {
        issues.push(ConfigIssue::new(
            "scrape_interval",
            "must be greater than 0",
        ));
    }
    if !metrics_path.starts_with('/') {
        issues.push(ConfigIssue::new("metrics_path", "must start with `/`"));
    }

    let params = compile_params(obj.get("params"), &mut issues);
    let auth = compile_auth(ctx, obj, &mut issues);
    let tls = compile_tls(ctx, obj, &mut issues);

    let relabel_configs = obj
        .get("relabel_configs")
        .map(|v| compile_rules(v, "relabel_configs"))
        .transpose()
        .unwrap_or_else(|mut e| {
            issues.append(&mut e);
            None
        })
        .unwrap_or_default();
    let metric_relabel_configs = obj
        .get("metric_relabel_configs")
        .map(|v| compile_rules(v, "metric_relabel_configs"))
        .transpose()
        .unwrap_or_else(|mut e| {
            issues.append(&mut e);
            None
        })
        .unwrap_or_default();

    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(ScrapeConfig {
        job_name,
        scrape_interval,
        scrape_timeout,
        metrics_path,
        params,
        scheme,
        honor_labels,
        honor_timestamps,
        auth,
        tls,
        gzip,
        relabel_configs,
        metric_relabel_configs,
        limits,
        source: section.clone(),
    })
}

fn compile_params(
    v: Option<&Value>,
    issues: &mut Vec<ConfigIssue>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, vals) in m {
                match vals.as_array() {
                    Some(items) => {
                        let mut list = Vec::new();
                        for (i, item) in items.iter().enumerate() {
                            match item.as_str() {
                                Some(s) => list.push(s.to_string()),
                                None => issues.push(ConfigIssue::new(
                                    format!("params.{k}[{i}]"),
                                    "expected a string",
                                )),
                            }
                        }
                        out.insert(k.clone(), list);
                    }
                    None => issues.push(ConfigIssue::new(
                        format!("params.{k}"),
                        "expected a list of strings",
                    )),
                }
            }
        }
        Some(_) => issues.push(ConfigIssue::new(
            "params",
            "expected a mapping of name to list of values",
        )),
    }
    out
}

fn compile_auth(
    ctx: &CompileContext,
    obj: &Map<String, Value>,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Auth> {
    let basic = sub_object(obj, "basic_auth", issues);
    let authz = sub_object(obj, "authorization", issues);
    if basic.is_some() && authz.is_some() {
        issues.push(ConfigIssue::new(
            "authorization",
            "at most one of basic_auth and authorization may be set",
        ));
    }
    let mut out = None;
    if let Some(b) = basic {
        let mut r = Reader {
            obj: b,
            prefix: "basic_auth".into(),
            issues,
        };
        r.unknown_keys(&["username", "password", "password_file"]);
        let username = r.string("username").unwrap_or_default();
        let password = r.string("password");
        let file = r.file(ctx, "password_file");
        if password.is_some() && file.is_some() {
            issues.push(ConfigIssue::new(
                "basic_auth.password_file",
                "at most one of password and password_file may be set",
            ));
        }
        out = Some(Auth::Basic {
            username,
            password: password.map(Secret::Inline).or(file.map(Secret::File)),
        });
    }
    if let Some(a) = authz {
        let mut r = Reader {
            obj: a,
            prefix: "authorization".into(),
            issues,
        };
        r.unknown_keys(&["type", "credentials", "credentials_file"]);
        let kind = r.string("type").unwrap_or_else(|| "Bearer".to_string());
        let credentials = r.string("credentials");
        let file = r.file(ctx, "credentials_file");
        if kind.eq_ignore_ascii_case("basic") {
            issues.push(ConfigIssue::new(
                "authorization.type",
                "authorization type cannot be Basic; use basic_auth instead",
            ));
        }
        if credentials.is_some() && file.is_some() {
            issues.push(ConfigIssue::new(
                "authorization.credentials_file",
                "at most one of credentials and credentials_file may be set",
            ));
        }
        out = out.or(Some(Auth::Authorization {
            kind,
            credentials: credentials.map(Secret::Inline).or(file.map(Secret::File)),
        }));
    }
    out
}

fn compile_tls(
    ctx: &CompileContext,
    obj: &Map<String, Value>,
    issues: &mut Vec<ConfigIssue>,
) -> TlsConfig {
    let Some(t) = sub_object(obj, "tls_config", issues) else {
        return TlsConfig::default();
    };
    let mut r = Reader {
        obj: t,
        prefix: "tls_config".into(),
        issues,
    };
    r.unknown_keys(&[
        "ca_file",
        "cert_file",
        "key_file",
        "server_name",
        "insecure_skip_verify",
    ]);
    let tls = TlsConfig {
        ca_file: r.file(ctx, "ca_file"),
        cert_file: r.file(ctx, "cert_file"),
        key_file: r.file(ctx, "key_file"),
        server_name: r.string("server_name"),
        insecure_skip_verify: r.boolean("insecure_skip_verify").unwrap_or(false),
    };
    if let Some(name) = &tls.server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            issues.push(ConfigIssue::new(
                "tls_config.server_name",
                format!("{name:?} is not a valid DNS name or IP address"),
            ));
        }
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        issues.push(ConfigIssue::new(
            if tls.cert_file.is_some() {
                "tls_config.key_file"
            } else {
                "tls_config.cert_file"
            },
            "cert_file and key_file must be given together",
        ));
    }
    tls
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_engine::global::GlobalConfig;

    fn ctx() -> CompileContext {
        CompileContext {
            stage_id: "node".into(),
            base_dir: ".".into(),
            global: GlobalConfig::default(),
        }
    }

    #[test]
    fn defaults_follow_prometheus() {
        let c = compile(&ctx(), &json!({})).unwrap();
        assert_eq!(c.job_name, "node");
        assert_eq!(c.scrape_interval, Duration::from_secs(60));
        assert_eq!(c.scrape_timeout, Duration::from_secs(10));
        assert_eq!(c.metrics_path, "/metrics");
        assert!(c.honor_timestamps && !c.honor_labels && c.gzip);
        // A short interval caps the default timeout.
        let c = compile(&ctx(), &json!({"scrape_interval": "5s"})).unwrap();
        assert_eq!(c.scrape_timeout, Duration::from_secs(5));
    }

    #[test]
    fn reports_every_problem() {
        let bad = json!({
            "scrape_interval": "5s",
            "scrape_timeout": "10s",
            "scheme": "ftp",
            "basic_auth": {"username": "u", "password": "p"},
            "authorization": {"type": "Basic", "credentials": "c"},
            "metric_relabel_configs": [{"action": "drop", "regex": "("}],
            "body_size_limit": "10XB",
            "bogus": 1
        });
        let issues = compile(&ctx(), &bad).unwrap_err();
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for want in [
            "scrape_timeout",
            "scheme",
            "authorization",
            "authorization.type",
            "metric_relabel_configs[0].regex",
            "body_size_limit",
            "bogus",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    #[test]
    fn sizes_are_base_two() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5MB"), None);
        assert_eq!(parse_size("MB"), None);
    }
}
