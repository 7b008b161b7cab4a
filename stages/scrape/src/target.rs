//! From discovered target groups to scrape targets, as Prometheus's
//! `PopulateLabels`: group labels under target labels, the defaults `job`,
//! `__scheme__`, `__metrics_path__`, `__scrape_interval__`,
//! `__scrape_timeout__` and `__param_*`, target relabeling, a default port
//! for the scheme, `instance` defaulting to the address, and `__meta_*`
//! labels removed. The labels attached to scraped series are those not
//! starting with `__`.

use std::collections::BTreeMap;
use std::time::Duration;

use panoptes_model::{format_duration_ms, parse_duration, Labels, LabelsBuilder, TargetGroup};
use panoptes_relabel::process;

use crate::config::ScrapeConfig;

/// One target ready to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Labels as discovered (group labels merged in) with the scrape
    /// defaults (`job`, `__scheme__`, …) added, before relabeling — what
    /// Prometheus shows as `discoveredLabels`.
    pub discovered: Labels,
    /// Labels after relabeling, including `__` labels.
    pub full: Labels,
    /// The labels attached to scraped series (no `__` labels).
    pub labels: Labels,
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Target {
    /// A stable hash identifying the target (its labels and URL), also used
    /// to spread scrape loops over the interval.
    pub fn hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&self.labels.stable_hash().to_le_bytes());
        h.update(self.url.as_bytes());
        h.digest()
    }
}

/// What became of one discovered target.
#[derive(Clone, Debug, PartialEq)]
pub enum Populated {
    Target(Target),
    /// Dropped by relabeling (discovered labels kept for the targets view).
    Dropped(Labels),
    /// Unusable: no address, a bad interval label, … (logged).
    Invalid {
        discovered: Labels,
        reason: String,
    },
}

/// Turns every target of the groups into a scrape target.
pub fn populate_groups(groups: &[TargetGroup], cfg: &ScrapeConfig) -> Vec<Populated> {
    let mut out = Vec::new();
    for g in groups {
        for t in &g.targets {
            let mut b = g.labels.to_builder();
            for l in t.iter() {
                b.set(l.name.clone(), l.value.clone());
            }
            out.push(populate(b.build(), cfg));
        }
    }
    out
}

fn set_default(b: &mut LabelsBuilder, name: &str, value: &str) {
    if b.get(name).is_none_or(str::is_empty) {
        b.set(name, value);
    }
}

/// Populates one discovered label set.
pub fn populate(discovered: Labels, cfg: &ScrapeConfig) -> Populated {
    let invalid = |reason: String| Populated::Invalid {
        discovered: discovered.clone(),
        reason,
    };
    if discovered.get("__address__").is_none() {
        return invalid("no address".into());
    }
    let mut b = discovered.to_builder();
    set_default(&mut b, "job", &cfg.job_name);
    set_default(
        &mut b,
        "__scrape_interval__",
        &format_duration_ms(cfg.scrape_interval.as_millis() as u64),
    );
    set_default(
        &mut b,
        "__scrape_timeout__",
        &format_duration_ms(cfg.scrape_timeout.as_millis() as u64),
    );
    set_default(&mut b, "__metrics_path__", &cfg.metrics_path);
    set_default(&mut b, "__scheme__", cfg.scheme.as_str());
    for (k, v) in &cfg.params {
        if let Some(first) = v.first() {
            // Prometheus sets these unconditionally.
            b.set(format!("__param_{k}"), first.as_str());
        }
    }
    let preset = b.build();
    let Some(relabeled) = process(&preset, &cfg.relabel_configs) else {
        return Populated::Dropped(preset);
    };
    let Some(addr) = relabeled.get("__address__") else {
        return invalid("no address".into());
    };
    let scheme = relabeled.get("__scheme__").unwrap_or("");
    let mut b = relabeled.to_builder();
    let addr = if has_port(addr) {
        addr.to_string()
    } else {
        let port = match scheme {
            "http" | "" => "80",
            "https" => "443",
            other => return invalid(format!("invalid scheme: {other:?}")),
        };
        let a = format!("{addr}:{port}");
        b.set("__address__", a.as_str());
        a
    };
    if addr.contains('/') {
        return invalid(format!("{addr:?} is not a valid hostname"));
    }
    let interval = match relabeled.get("__scrape_interval__").map(parse_duration) {
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => return invalid("scrape interval cannot be 0".into()),
        Some(Err(e)) => return invalid(format!("error parsing scrape interval: {e}")),
        None => cfg.scrape_interval,
    };
    let timeout = match relabeled.get("__scrape_timeout__").map(parse_duration) {
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => return invalid("scrape timeout cannot be 0".into()),
        Some(Err(e)) => return invalid(format!("error parsing scrape timeout: {e}")),
        None => cfg.scrape_timeout,
    };
    if timeout > interval {
        return invalid(format!(
            "scrape timeout cannot be greater than scrape interval ({} > {})",
            format_duration_ms(timeout.as_millis() as u64),
            format_duration_ms(interval.as_millis() as u64)
        ));
    }
    b.retain(|l| !l.name.starts_with("__meta_"));
    if b.get("instance").is_none_or(str::is_empty) {
        b.set("instance", addr.as_str());
    }
    let full = b.build();
    let labels = Labels::from_sorted(
        full.iter()
            .filter(|l| !l.name.starts_with("__"))
            .cloned()
            .collect(),
    );
    let url = build_url(&full, &cfg.params);
    Populated::Target(Target {
        discovered: preset,
        full,
        labels,
        url,
        interval,
        timeout,
    })
}

/// Whether `host:port` (or `[v6]:port`) carries a port.
fn has_port(addr: &str) -> bool {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest
            .find(']')
            .is_some_and(|i| rest[i + 1..].starts_with(':'));
    }
    // More than one colon without brackets is a bare IPv6 address.
    addr.matches(':').count() == 1
}

/// The scrape URL: scheme, address, path, and the query from `params`
/// with the first value of each overridden by its `__param_*` label, sorted
/// by name like Go's `url.Values.Encode`.
fn build_url(full: &Labels, params: &BTreeMap<String, Vec<String>>) -> String {
    let scheme = full.get("__scheme__").unwrap_or("http");
    let addr = full.get("__address__").unwrap_or("");
    let path = full.get("__metrics_path__").unwrap_or("");
    let mut query: BTreeMap<&str, Vec<&str>> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
        .collect();
    for l in full.iter() {
        if let Some(name) = l.name.strip_prefix("__param_") {
            let vals = query.entry(name).or_default();
            match vals.first_mut() {
                Some(first) => *first = &l.value,
                None => vals.push(&l.value),
            }
        }
    }
    let mut url = format!("{scheme}://{addr}{}", encode_path(path));
    let mut first = true;
    for (k, vals) in &query {
        for v in vals {
            url.push(if first { '?' } else { '&' });
            first = false;
            url.extend(url::form_urlencoded::byte_serialize(k.as_bytes()));
            url.push('=');
            url.extend(url::form_urlencoded::byte_serialize(v.as_bytes()));
        }
    }
    url
}

/// Escapes a path the way Go's `url.URL` does when printing.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::compile;
    use panoptes_engine::global::GlobalConfig;
    use panoptes_engine::stage::CompileContext;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> ScrapeConfig {
        let ctx = CompileContext {
            stage_id: "node".into(),
            base_dir: ".".into(),
            global: GlobalConfig::default(),
        };
        compile(&ctx, &v).unwrap()
    }

    fn target(p: Populated) -> Target {
        match p {
            Populated::Target(t) => t,
            other => panic!("expected a target, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_instance() {
        let c = cfg(json!({"params": {"module": ["a", "b"]}}));
        let t = target(populate(
            Labels::from_pairs([("__address__", "h:9100"), ("__meta_x", "1"), ("env", "p")]),
            &c,
        ));
        assert_eq!(
            t.labels,
            Labels::from_pairs([("env", "p"), ("instance", "h:9100"), ("job", "node")])
        );
        assert_eq!(t.url, "http://h:9100/metrics?module=a&module=b");
        assert_eq!(t.interval, Duration::from_secs(60));
        assert!(t.full.get("__meta_x").is_none());
    }

    #[test]
    fn default_port_and_relabeling() {
        let c = cfg(json!({
            "scheme": "https",
            "relabel_configs": [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"target_label": "__address__", "replacement": "exporter"},
                {"source_labels": ["env"], "regex": "dev", "action": "drop"}
            ]
        }));
        let t = target(populate(
            Labels::from_pairs([("__address__", "example.org")]),
            &c,
        ));
        assert_eq!(t.url, "https://exporter:443/metrics?target=example.org");
        assert_eq!(t.labels.get("instance"), Some("exporter:443"));
        let d = populate(
            Labels::from_pairs([("__address__", "x"), ("env", "dev")]),
            &c,
        );
        assert!(matches!(d, Populated::Dropped(_)));
    }

    #[test]
    fn per_target_interval_and_invalid_targets() {
        let c = cfg(json!({}));
        let t = target(populate(
            Labels::from_pairs([
                ("__address__", "h:1"),
                ("__scrape_interval__", "15s"),
                ("__scrape_timeout__", "5s"),
            ]),
            &c,
        ));
        assert_eq!(
            (t.interval, t.timeout),
            (Duration::from_secs(15), Duration::from_secs(5))
        );
        let bad = populate(
            Labels::from_pairs([("__address__", "h:1"), ("__scrape_interval__", "1s")]),
            &c,
        );
        assert!(
            matches!(bad, Populated::Invalid { .. }),
            "timeout 10s > interval 1s"
        );
        let bad = populate(Labels::from_pairs([("job", "x")]), &c);
        assert!(matches!(bad, Populated::Invalid { .. }));
        let bad = populate(Labels::from_pairs([("__address__", "h:1/x")]), &c);
        assert!(matches!(bad, Populated::Invalid { .. }));
    }

    #[test]
    fn ports() {
        assert!(has_port("h:1"));
        assert!(!has_port("h"));
        assert!(has_port("[::1]:9"));
        assert!(!has_port("[::1]"));
        assert!(!has_port("::1"));
    }
}
