//! Target group documents: the `[{targets: [...], labels: {...}}]` shape shared
//! by `static_configs`, file_sd files (JSON or YAML) and http_sd responses,
//! and the checks Prometheus applies to them (target addresses, label names).

use panoptes_model::{Labels, LabelsBuilder, TargetGroup};

/// The label carrying a target's address.
pub const ADDRESS_LABEL: &str = "__address__";

/// One problem in a target group document, with the path of the bad entry
/// (`[1].targets[0]`, `[0].labels.foo-bar`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct GroupIssue {
    pub path: String,
    pub message: String,
}

impl GroupIssue {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        GroupIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why a target group document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("{}", join_issues(.0))]
    Invalid(Vec<GroupIssue>),
}

fn join_issues(issues: &[GroupIssue]) -> String {
    issues
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The encoding of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocFormat {
    Json,
    Yaml,
}

/// Whether `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a target address: `host`, `host:port` or `[ipv6]:port`, without a
/// scheme or path (Prometheus rejects anything with a `/`; the scheme and
/// path come from the scrape config). Returns why it is invalid.
pub fn check_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("empty target address".into());
    }
    if addr.contains('/') {
        return Err(format!(
            "{addr:?} is not a valid hostname (a target is host:port, without scheme or path)"
        ));
    }
    if addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{addr:?} contains whitespace"));
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err(format!("{addr:?}: missing ']' after IPv6 address"));
        };
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("{addr:?}: unexpected text after ']'")),
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{addr:?}: {host:?} is not an IPv6 address"));
        }
        (host, port)
    } else {
        match addr.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "{addr:?}: IPv6 addresses must be written in brackets, e.g. [::1]:9100"
                ))
            }
            Some((h, p)) => (h, Some(p)),
            None => (addr, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{addr:?}: missing host"));
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(_) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err(format!("{addr:?}: port {p:?} is not a number in 0-65535")),
        }
    }
    Ok(())
}

/// Builds one group from already-typed parts, checking every target and
/// label. `path` prefixes issue paths (e.g. `static_configs[2]`).
pub fn build_group(
    path: &str,
    source: String,
    targets: &[String],
    labels: &[(String, String)],
    extra_labels: &[(&str, &str)],
    issues: &mut Vec<GroupIssue>,
) -> TargetGroup {
    let mut out_targets = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        match check_address(t) {
            Ok(()) => out_targets.push(Labels::from_pairs([(ADDRESS_LABEL, t.as_str())])),
            Err(e) => issues.push(GroupIssue::new(format!("{path}.targets[{i}]"), e)),
        }
    }
    let mut b = LabelsBuilder::with_capacity(labels.len() + extra_labels.len());
    for (name, value) in labels {
        if !is_valid_label_name(name) {
            issues.push(GroupIssue::new(
                format!("{path}.labels.{name}"),
                format!("{name:?} is not a valid label name (expected [a-zA-Z_][a-zA-Z0-9_]*)"),
            ));
            continue;
        }
        b.set(name.as_str(), value.as_str());
    }
    for (name, value) in extra_labels {
        b.set(*name, *value);
    }
    TargetGroup {
        source,
        targets: out_targets,
        labels: b.build(),
    }
}

/// Parses a document (a list of target groups), as file_sd and http_sd read
/// it. `source_prefix` names the groups (`<prefix>:<index>`), `extra_labels`
/// (`__meta_filepath`, `__meta_url`) are added to every group's labels.
/// Any invalid entry rejects the whole document, as Prometheus does, so a
/// half-broken file never replaces the last good one.
pub fn parse_document(
    text: &str,
    format: DocFormat,
    source_prefix: &str,
    extra_labels: &[(&str, &str)],
) -> Result<Vec<TargetGroup>, DocumentError> {
    let value: serde_json::Value = match format {
        DocFormat::Json => serde_json::from_str(text).map_err(|e| DocumentError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?,
        DocFormat::Yaml => {
            if text.trim().is_empty() {
                // An empty YAML file is an empty list of groups.
                serde_json::Value::Array(Vec::new())
            } else {
                serde_yaml::from_str(text).map_err(|e| DocumentError::Yaml(e.to_string()))?
            }
        }
    };
    let lenient = format == DocFormat::Yaml;
    let mut issues = Vec::new();
    let Some(items) = value.as_array() else {
        return Err(DocumentError::Invalid(vec![GroupIssue::new(
            "",
            "expected a list of target groups ([{targets: [...], labels: {...}}])",
        )]));
    };
    let mut groups = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("[{i}]");
        let Some(obj) = item.as_object() else {
            issues.push(GroupIssue::new(
                &path,
                "expected a target group object with `targets` and `labels`",
            ));
            continue;
        };
        let mut targets = Vec::new();
        let mut labels = Vec::new();
        for (key, v) in obj {
            match key.as_str() {
                "targets" => match v {
                    serde_json::Value::Array(list) => {
                        for (j, t) in list.iter().enumerate() {
                            match scalar_string(t, lenient) {
                                Some(s) => targets.push(s),
                                None => issues.push(GroupIssue::new(
                                    format!("{path}.targets[{j}]"),
                                    "expected a string host:port",
                                )),
                            }
                        }
                    }
                    serde_json::Value::Null => {}
                    _ => issues.push(GroupIssue::new(
                        format!("{path}.targets"),
                        "expected a list of host:port strings",
                    )),
                },
                "labels" => match v {
                    serde_json::Value::Object(map) => {
                        for (name, lv) in map {
                            match scalar_string(lv, lenient) {
                                Some(s) => labels.push((name.clone(), s)),
                                None => issues.push(GroupIssue::new(
                                    format!("{path}.labels.{name}"),
                                    "expected a string label value",
                                )),
                            }
                        }
                    }
                    serde_json::Value::Null => {}
                    _ => issues.push(GroupIssue::new(
                        format!("{path}.labels"),
                        "expected a map of label names to values",
                    )),
                },
                other if lenient => issues.push(GroupIssue::new(
                    format!("{path}.{other}"),
                    "unknown field (expected `targets` or `labels`)",
                )),
                // Prometheus decodes JSON groups leniently: unknown keys are
                // ignored.
                _ => {}
            }
        }
        let source = format!("{source_prefix}:{i}");
        groups.push(build_group(
            &path,
            source,
            &targets,
            &labels,
            extra_labels,
            &mut issues,
        ));
    }
    if issues.is_empty() {
        Ok(groups)
    } else {
        Err(DocumentError::Invalid(issues))
    }
}

/// A scalar as a string; YAML documents may write ports or label values as
/// bare numbers or booleans, which Prometheus's YAML decoder accepts.
fn scalar_string(v: &serde_json::Value, lenient: bool) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) if lenient => Some(n.to_string()),
        serde_json::Value::Bool(b) if lenient => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in [
            "localhost:9100",
            "localhost",
            "10.0.0.1:80",
            "[::1]:9090",
            "[fe80::1]",
            "my-host.example.com:443",
        ] {
            assert!(check_address(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "http://x:80",
            "host:port",
            "host:",
            "host:99999",
            "::1:9090",
            "[::1",
            "[zz]:80",
            ":80",
            "a b:80",
        ] {
            assert!(check_address(bad).is_err(), "{bad} should be invalid");
        }
    }

    #[test]
    fn label_names() {
        assert!(is_valid_label_name("job"));
        assert!(is_valid_label_name("_x9"));
        assert!(!is_valid_label_name("9x"));
        assert!(!is_valid_label_name("a-b"));
        assert!(!is_valid_label_name(""));
    }

    #[test]
    fn parses_json_document_with_meta_label() {
        let doc =
            r#"[{"targets": ["a:1", "b:2"], "labels": {"env": "prod"}}, {"targets": ["c:3"]}]"#;
        let groups = parse_document(
            doc,
            DocFormat::Json,
            "/x.json",
            &[("__meta_filepath", "/x.json")],
        )
        .unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].source, "/x.json:0");
        assert_eq!(groups[0].targets.len(), 2);
        assert_eq!(groups[0].targets[1].get("__address__"), Some("b:2"));
        assert_eq!(groups[0].labels.get("env"), Some("prod"));
        assert_eq!(groups[1].labels.get("__meta_filepath"), Some("/x.json"));
    }

    #[test]
    fn yaml_accepts_numeric_label_values_and_empty_files() {
        let doc = "- targets: ['a:1']\n  labels: {port: 9100}\n";
        let groups = parse_document(doc, DocFormat::Yaml, "f", &[]).unwrap();
        assert_eq!(groups[0].labels.get("port"), Some("9100"));
        assert!(parse_document("", DocFormat::Yaml, "f", &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn every_bad_entry_is_named() {
        let doc = r#"[{"targets": ["ok:1", "http://bad/x"], "labels": {"bad-name": "v"}}, 5]"#;
        let err = parse_document(doc, DocFormat::Json, "f", &[]).unwrap_err();
        let DocumentError::Invalid(issues) = err else {
            panic!("expected invalid, got {err}")
        };
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["[0].targets[1]", "[0].labels.bad-name", "[1]"]);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_document("[{\"targets\": [}", DocFormat::Json, "f", &[]).unwrap_err();
        assert!(matches!(err, DocumentError::Json { line: 1, .. }), "{err}");
        let err = parse_document("{not: a list}", DocFormat::Yaml, "f", &[]).unwrap_err();
        assert!(err.to_string().contains("expected a list"), "{err}");
    }
}
