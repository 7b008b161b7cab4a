//! The `discovery` section: its JSON Schema, its typed form, and the pure
//! compile step that checks everything checkable before anything runs.

use std::path::PathBuf;
use std::time::Duration;

use panoptes_engine::stage::{CompileContext, ConfigIssue};
use panoptes_model::{parse_duration, TargetGroup, DURATION_PATTERN};
use serde::Deserialize;
use serde_json::json;

use crate::groups::{build_group, GroupIssue};

/// Prometheus's default `refresh_interval` for file_sd.
pub const DEFAULT_FILE_REFRESH: Duration = Duration::from_secs(300);
/// Prometheus's default `refresh_interval` for http_sd.
pub const DEFAULT_HTTP_REFRESH: Duration = Duration::from_secs(60);

/// The JSON Schema of the section (without the engine's `kind`/`inputs`).
pub fn schema() -> serde_json::Value {
    let duration = json!({"type": "string", "pattern": DURATION_PATTERN});
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "static_configs": {
                "type": "array",
                "description": "Fixed target groups, as Prometheus's static_configs.",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "targets": {"type": "array", "items": {"type": "string"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                }
            },
            "file_sd_configs": {
                "type": "array",
                "description": "Target groups read from JSON/YAML files, watched and re-read every refresh_interval.",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                        "refresh_interval": duration
                    }
                }
            },
            "http_sd_configs": {
                "type": "array",
                "description": "Target groups fetched as JSON from an HTTP endpoint every refresh_interval.",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["url"],
                    "properties": {
                        "url": {"type": "string"},
                        "refresh_interval": duration,
                        "basic_auth": {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["username"],
                            "properties": {
                                "username": {"type": "string"},
                                "password": {"type": "string"},
                                "password_file": {"type": "string"}
                            }
                        },
                        "authorization": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": {
                                "type": {"type": "string"},
                                "credentials": {"type": "string"},
                                "credentials_file": {"type": "string"}
                            }
                        },
                        "tls_config": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": {
                                "ca_file": {"type": "string"},
                                "cert_file": {"type": "string"},
                                "key_file": {"type": "string"},
                                "insecure_skip_verify": {"type": "boolean"}
                            }
                        }
                    }
                }
            }
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    #[serde(default)]
    static_configs: Vec<RawStatic>,
    #[serde(default)]
    file_sd_configs: Vec<RawFileSd>,
    #[serde(default)]
    http_sd_configs: Vec<RawHttpSd>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatic {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileSd {
    files: Vec<String>,
    refresh_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpSd {
    url: String,
    refresh_interval: Option<String>,
    basic_auth: Option<RawBasicAuth>,
    authorization: Option<RawAuthorization>,
    tls_config: Option<RawTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    password: Option<String>,
    password_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    #[serde(rename = "type")]
    kind: Option<String>,
    credentials: Option<String>,
    credentials_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// One file_sd config: glob patterns (resolved against the pipeline's
/// directory) and how often to re-read them besides watching.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSdConfig {
    pub patterns: Vec<PathBuf>,
    pub refresh_interval: Duration,
}

/// A secret given inline or read from a file at request time (so rotated
/// credentials are picked up, as Prometheus does).
#[derive(Clone, PartialEq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    /// Never prints the secret itself (configs end up in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(<secret>)"),
            Secret::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

impl Secret {
    /// The secret's current value.
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => Ok(std::fs::read_to_string(p)?.trim().to_string()),
        }
    }
}

/// HTTP authentication for http_sd.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpAuth {
    None,
    Basic {
        username: String,
        password: Option<Secret>,
    },
    /// `Authorization: <scheme> <credentials>` (scheme defaults to Bearer).
    Authorization {
        scheme: String,
        credentials: Secret,
    },
}

/// TLS settings for http_sd; certificate files are read at compile time so
/// a pipeline that validates cannot fail to start over them.
#[derive(Clone, PartialEq, Default)]
pub struct TlsSettings {
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, PEM, concatenated for reqwest's identity.
    pub identity_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

impl std::fmt::Debug for TlsSettings {
    /// Shows which parts are set, never the key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field(
                "ca",
                &self.ca_pem.as_ref().map(|b| format!("{} bytes", b.len())),
            )
            .field("client_identity", &self.identity_pem.is_some())
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish()
    }
}

/// One http_sd config.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSdConfig {
    pub url: String,
    pub refresh_interval: Duration,
    pub auth: HttpAuth,
    pub tls: TlsSettings,
}

/// The compiled discovery section.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryConfig {
    /// Static groups, fully built (sources `static:<i>`).
    pub static_groups: Vec<TargetGroup>,
    pub file_sd: Vec<FileSdConfig>,
    pub http_sd: Vec<HttpSdConfig>,
}

fn duration_or(
    raw: &Option<String>,
    default: Duration,
    path: String,
    issues: &mut Vec<ConfigIssue>,
) -> Duration {
    match raw {
        None => default,
        Some(s) => match parse_duration(s) {
            Ok(d) if d.is_zero() => {
                issues.push(ConfigIssue::new(path, "refresh_interval must be positive"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                issues.push(ConfigIssue::new(path, e.to_string()));
                default
            }
        },
    }
}

/// Whether a file_sd pattern names JSON or YAML files, as Prometheus
/// requires (`*.json`, `*.yml`, `*.yaml`).
fn has_sd_extension(p: &str) -> bool {
    let lower = p.to_ascii_lowercase();
    lower.ends_with(".json") || lower.ends_with(".yml") || lower.ends_with(".yaml")
}

/// Compiles the section, collecting every problem.
pub fn compile(
    ctx: &CompileContext,
    section: &serde_json::Value,
) -> Result<DiscoveryConfig, Vec<ConfigIssue>> {
    let raw: RawSection = serde_json::from_value(section.clone())
        .map_err(|e| vec![ConfigIssue::new("", e.to_string())])?;
    let mut issues = Vec::new();

    let mut static_groups = Vec::new();
    for (i, sc) in raw.static_configs.iter().enumerate() {
        let path = format!("static_configs[{i}]");
        let labels: Vec<(String, String)> = sc
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut group_issues: Vec<GroupIssue> = Vec::new();
        let g = build_group(
            &path,
            format!("static:{i}"),
            &sc.targets,
            &labels,
            &[],
            &mut group_issues,
        );
        issues.extend(
            group_issues
                .into_iter()
                .map(|gi| ConfigIssue::new(gi.path, gi.message)),
        );
        static_groups.push(g);
    }

    let mut file_sd = Vec::new();
    for (i, fc) in raw.file_sd_configs.iter().enumerate() {
        let base = format!("file_sd_configs[{i}]");
        if fc.files.is_empty() {
            issues.push(ConfigIssue::new(
                format!("{base}.files"),
                "at least one file pattern is required",
            ));
        }
        let mut patterns = Vec::new();
        for (j, f) in fc.files.iter().enumerate() {
            let path = format!("{base}.files[{j}]");
            if !has_sd_extension(f) {
                issues.push(ConfigIssue::new(
                    &path,
                    format!("{f:?} is not valid for file discovery: expected a .json, .yml or .yaml file or pattern"),
                ));
                continue;
            }
            let resolved = ctx.resolve(f);
            if let Err(e) = glob::Pattern::new(&resolved.to_string_lossy()) {
                issues.push(ConfigIssue::new(
                    &path,
                    format!("invalid glob pattern {f:?}: {e}"),
                ));
                continue;
            }
            patterns.push(resolved);
        }
        let refresh = duration_or(
            &fc.refresh_interval,
            DEFAULT_FILE_REFRESH,
            format!("{base}.refresh_interval"),
            &mut issues,
        );
        file_sd.push(FileSdConfig {
            patterns,
            refresh_interval: refresh,
        });
    }

    let mut http_sd = Vec::new();
    for (i, hc) in raw.http_sd_configs.iter().enumerate() {
        let base = format!("http_sd_configs[{i}]");
        match url::Url::parse(&hc.url) {
            Ok(u) if u.scheme() != "http" && u.scheme() != "https" => {
                issues.push(ConfigIssue::new(
                    format!("{base}.url"),
                    "URL scheme must be 'http' or 'https'",
                ))
            }
            Ok(u) if u.host_str().unwrap_or("").is_empty() => issues.push(ConfigIssue::new(
                format!("{base}.url"),
                "host is missing in URL",
            )),
            Ok(_) => {}
            Err(e) => issues.push(ConfigIssue::new(
                format!("{base}.url"),
                format!("invalid URL {:?}: {e}", hc.url),
            )),
        }
        let refresh = duration_or(
            &hc.refresh_interval,
            DEFAULT_HTTP_REFRESH,
            format!("{base}.refresh_interval"),
            &mut issues,
        );
        let auth = compile_auth(ctx, hc, &base, &mut issues);
        let tls = compile_tls(ctx, hc.tls_config.as_ref(), &base, &mut issues);
        http_sd.push(HttpSdConfig {
            url: hc.url.clone(),
            refresh_interval: refresh,
            auth,
            tls,
        });
    }

    if issues.is_empty() {
        Ok(DiscoveryConfig {
            static_groups,
            file_sd,
            http_sd,
        })
    } else {
        Err(issues)
    }
}

fn compile_auth(
    ctx: &CompileContext,
    hc: &RawHttpSd,
    base: &str,
    issues: &mut Vec<ConfigIssue>,
) -> HttpAuth {
    match (&hc.basic_auth, &hc.authorization) {
        (Some(_), Some(_)) => {
            issues.push(ConfigIssue::new(
                base,
                "at most one of basic_auth and authorization may be configured",
            ));
            HttpAuth::None
        }
        (Some(b), None) => {
            let password = match (&b.password, &b.password_file) {
                (Some(_), Some(_)) => {
                    issues.push(ConfigIssue::new(
                        format!("{base}.basic_auth"),
                        "at most one of password and password_file may be configured",
                    ));
                    None
                }
                (Some(p), None) => Some(Secret::Inline(p.clone())),
                (None, Some(f)) => Some(Secret::File(ctx.resolve(f))),
                (None, None) => None,
            };
            HttpAuth::Basic {
                username: b.username.clone(),
                password,
            }
        }
        (None, Some(a)) => {
            let scheme = a.kind.clone().unwrap_or_else(|| "Bearer".to_string());
            if scheme.eq_ignore_ascii_case("basic") {
                issues.push(ConfigIssue::new(
                    format!("{base}.authorization.type"),
                    "authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
                ));
            }
            let credentials = match (&a.credentials, &a.credentials_file) {
                (Some(_), Some(_)) => {
                    issues.push(ConfigIssue::new(
                        format!("{base}.authorization"),
                        "at most one of credentials and credentials_file may be configured",
                    ));
                    Secret::Inline(String::new())
                }
                (Some(c), None) => Secret::Inline(c.clone()),
                (None, Some(f)) => Secret::File(ctx.resolve(f)),
                (None, None) => {
                    issues.push(ConfigIssue::new(
                        format!("{base}.authorization"),
                        "credentials or credentials_file is required",
                    ));
                    Secret::Inline(String::new())
                }
            };
            HttpAuth::Authorization {
                scheme,
                credentials,
            }
        }
        (None, None) => HttpAuth::None,
    }
}

fn compile_tls(
    ctx: &CompileContext,
    tls: Option<&RawTls>,
    base: &str,
    issues: &mut Vec<ConfigIssue>,
) -> TlsSettings {
    let Some(t) = tls else {
        return TlsSettings::default();
    };
    let mut read = |field: &str, p: &str| -> Option<Vec<u8>> {
        let path = ctx.resolve(p);
        match std::fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) => {
                issues.push(ConfigIssue::new(
                    format!("{base}.tls_config.{field}"),
                    format!("cannot read {}: {e}", path.display()),
                ));
                None
            }
        }
    };
    let ca_pem = t.ca_file.as_deref().and_then(|p| read("ca_file", p));
    let identity_pem = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => {
            let cert = read("cert_file", c);
            let key = read("key_file", k);
            match (cert, key) {
                (Some(mut c), Some(k)) => {
                    c.push(b'\n');
                    c.extend_from_slice(&k);
                    Some(c)
                }
                _ => None,
            }
        }
        (None, None) => None,
        _ => {
            issues.push(ConfigIssue::new(
                format!("{base}.tls_config"),
                "cert_file and key_file must be configured together",
            ));
            None
        }
    };
    TlsSettings {
        ca_pem,
        identity_pem,
        insecure_skip_verify: t.insecure_skip_verify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let cfg = HttpSdConfig {
            url: "http://x/sd".into(),
            refresh_interval: DEFAULT_HTTP_REFRESH,
            auth: HttpAuth::Basic {
                username: "u".into(),
                password: Some(Secret::Inline("hunter2".into())),
            },
            tls: TlsSettings {
                ca_pem: Some(b"CA-PEM".to_vec()),
                identity_pem: Some(b"PRIVATE KEY".to_vec()),
                insecure_skip_verify: false,
            },
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("6 bytes"), "{shown}");
    }
}
