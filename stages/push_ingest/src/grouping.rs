//! Grouping keys from push URLs: `/metrics/job/<job>{/<label>/<value>}`,
//! with `@base64` after a label name (or `job`) marking a URL-safe base64
//! value (`=` alone for the empty value), as the Pushgateway reads them.

use std::collections::BTreeMap;

use base64::Engine;

/// A problem with the grouping key in the URL (always a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("invalid base64 encoding in job name {job:?}: {reason}")]
    JobBase64 { job: String, reason: String },
    #[error("odd number of components in label string {0:?}")]
    OddComponents(String),
    #[error("improper label name {0:?}")]
    LabelName(String),
    #[error("invalid base64 encoding for label {name}={value:?}: {reason}")]
    LabelBase64 {
        name: String,
        value: String,
        reason: String,
    },
    #[error("job name is required")]
    MissingJob,
    #[error("invalid percent-encoding in the URL path")]
    PercentEncoding,
}

/// A group's identity: its labels (always including `job`), sorted by name.
/// Values may be empty (`instance@base64/=`), and are kept as such.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupingKey(pub BTreeMap<String, String>);

impl GroupingKey {
    /// A compact, unique string form (names and values joined by 0xff).
    pub fn id(&self) -> String {
        let mut s = String::new();
        for (i, (n, v)) in self.0.iter().enumerate() {
            if i > 0 {
                s.push('\u{ff}');
            }
            s.push_str(n);
            s.push('\u{ff}');
            s.push_str(v);
        }
        s
    }

    pub fn job(&self) -> &str {
        self.0.get("job").map(String::as_str).unwrap_or("")
    }
}

/// Decodes URL-safe base64, ignoring trailing `=` padding.
pub fn decode_base64(s: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "decoded value is not UTF-8".to_string())
}

/// Decodes `%XX` escapes of a URL path (Go's router matches on the decoded
/// path, so an encoded `/` separates components, as in the Pushgateway).
pub fn percent_decode(path: &str) -> Result<String, KeyError> {
    if !path.contains('%') {
        return Ok(path.to_string());
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(KeyError::PercentEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| KeyError::PercentEncoding)?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| KeyError::PercentEncoding)?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| KeyError::PercentEncoding)
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Parses what follows `/metrics/job` (or `/metrics/job@base64`):
/// `/<job>{/<label>/<value>}`, already percent-decoded.
pub fn parse_key(job_base64: bool, rest: &str) -> Result<GroupingKey, KeyError> {
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let (job_raw, labels) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let job = if job_base64 {
        decode_base64(job_raw).map_err(|reason| KeyError::JobBase64 {
            job: job_raw.to_string(),
            reason,
        })?
    } else {
        job_raw.to_string()
    };
    let mut map = BTreeMap::new();
    if labels.len() > 1 {
        let components: Vec<&str> = labels[1..].split('/').collect();
        if components.len() % 2 == 1 {
            return Err(KeyError::OddComponents(labels.to_string()));
        }
        for pair in components.chunks(2) {
            let (name, value) = (pair[0], pair[1]);
            let trimmed = name.strip_suffix("@base64").unwrap_or(name);
            if !valid_label_name(trimmed) {
                return Err(KeyError::LabelName(trimmed.to_string()));
            }
            if trimmed == name {
                map.insert(name.to_string(), value.to_string());
            } else {
                let decoded = decode_base64(value).map_err(|reason| KeyError::LabelBase64 {
                    name: trimmed.to_string(),
                    value: value.to_string(),
                    reason,
                })?;
                map.insert(trimmed.to_string(), decoded);
            }
        }
    }
    if job.is_empty() {
        return Err(KeyError::MissingJob);
    }
    // The job from the path wins over a `job` label in the label part.
    map.insert("job".to_string(), job);
    Ok(GroupingKey(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pairs: &[(&str, &str)]) -> GroupingKey {
        GroupingKey(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn plain_and_base64_keys() {
        assert_eq!(parse_key(false, "/j").unwrap(), key(&[("job", "j")]));
        assert_eq!(parse_key(false, "/j/").unwrap(), key(&[("job", "j")]));
        assert_eq!(
            parse_key(false, "/j/instance/i1/a/b").unwrap(),
            key(&[("job", "j"), ("instance", "i1"), ("a", "b")])
        );
        assert_eq!(
            parse_key(true, "/Zm9vL2Jhcg/path@base64/=").unwrap(),
            key(&[("job", "foo/bar"), ("path", "")])
        );
        assert_eq!(
            parse_key(false, "/j/path@base64/L3Zhci90bXA=").unwrap(),
            key(&[("job", "j"), ("path", "/var/tmp")])
        );
        // The job in the path wins.
        assert_eq!(
            parse_key(false, "/j/job/other").unwrap(),
            key(&[("job", "j")])
        );
    }

    #[test]
    fn bad_keys() {
        assert_eq!(
            parse_key(false, "/j/a").unwrap_err(),
            KeyError::OddComponents("/a".into())
        );
        assert_eq!(
            parse_key(false, "/j/__a/b").unwrap_err(),
            KeyError::LabelName("__a".into())
        );
        assert_eq!(
            parse_key(false, "/j/a-b/c").unwrap_err(),
            KeyError::LabelName("a-b".into())
        );
        assert!(matches!(
            parse_key(true, "/!!!").unwrap_err(),
            KeyError::JobBase64 { .. }
        ));
        assert_eq!(parse_key(false, "/").unwrap_err(), KeyError::MissingJob);
        assert_eq!(percent_decode("/a%2Fb").unwrap(), "/a/b");
        assert!(percent_decode("/a%zz").is_err());
    }
}
