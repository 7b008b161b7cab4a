//! Tapping stage outputs: which outputs a tap request selects, and how a
//! tapped message is rendered as JSON lines (one per sample, target group
//! or alert) for `GET /api/v1/tap` and `panoptes tap`.

use std::collections::BTreeMap;

use globset::{Glob, GlobMatcher};
use serde_json::json;

use panoptes_model::{is_stale_nan, Labels};

use crate::port::Tapped;
use crate::stage::Message;

/// What a tap request asks for.
#[derive(Clone, Debug)]
pub struct TapFilter {
    /// The glob as given (`node`, `scrape_*`, `relabel.dropped`, `*`).
    pub pattern: String,
    matcher: GlobMatcher,
    /// Stop after this many lines.
    pub limit: Option<u64>,
    /// Keep one line in `every` (sampling).
    pub every: u64,
}

impl TapFilter {
    /// From query parameters `stage` (glob, default `*`), `limit`, `every`.
    pub fn from_query(q: &BTreeMap<String, String>) -> Result<TapFilter, String> {
        let pattern = q.get("stage").cloned().unwrap_or_else(|| "*".into());
        let matcher = Glob::new(&pattern)
            .map_err(|e| format!("invalid stage pattern {pattern:?}: {e}"))?
            .compile_matcher();
        let limit = match q.get("limit") {
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| format!("invalid limit {v:?}: expected a whole number"))?,
            ),
            None => None,
        };
        let every = match q.get("every") {
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("invalid every {v:?}: expected a whole number ≥ 1"))?,
            None => 1,
        };
        Ok(TapFilter {
            pattern,
            matcher,
            limit,
            every,
        })
    }

    /// Whether an output (`stage` or `stage.port`) is selected. A bare
    /// stage pattern also selects that stage's named ports.
    pub fn matches(&self, output: &str) -> bool {
        self.matcher.is_match(output)
            || output.split_once('.').is_some_and(|(stage, _)| {
                self.matcher.is_match(stage) && !self.pattern.contains('.')
            })
    }
}

fn labels_obj(l: &Labels) -> serde_json::Value {
    serde_json::Value::Object(
        l.iter()
            .map(|l| (l.name.to_string(), json!(&*l.value)))
            .collect(),
    )
}

/// A sample value as Prometheus's JSON API writes it, with staleness
/// markers spelled `stale`.
pub fn value_string(v: f64) -> String {
    if is_stale_nan(v) {
        "stale".into()
    } else {
        panoptes_model::format_api_float(v)
    }
}

/// One JSON object per item of the message.
pub fn message_to_json_lines(t: &Tapped) -> Vec<String> {
    let base = |kind: &str| json!({"stage": &*t.stage, "port": &*t.port, "type": kind});
    let mut out = Vec::new();
    match &t.message {
        Message::Samples(b) => {
            for s in &b.samples {
                let mut v = base("sample");
                v["source"] = json!(&*b.source);
                v["labels"] = labels_obj(&s.labels);
                v["timestamp"] = json!(s.timestamp_ms);
                v["value"] = json!(value_string(s.value));
                out.push(v.to_string());
            }
        }
        Message::Targets(ts) => {
            for g in &ts.groups {
                let mut v = base("target_group");
                v["provider"] = json!(&*ts.provider);
                v["source"] = json!(g.source);
                v["labels"] = labels_obj(&g.labels);
                v["targets"] = json!(g.targets.iter().map(labels_obj).collect::<Vec<_>>());
                out.push(v.to_string());
            }
        }
        Message::Alerts(a) => {
            for al in &a.alerts {
                let mut v = base("alert");
                v["source"] = json!(&*a.source);
                v["labels"] = labels_obj(&al.labels);
                v["annotations"] = labels_obj(&al.annotations);
                v["state"] = json!(format!("{:?}", al.state).to_lowercase());
                v["startsAt"] = json!(al.starts_at_ms);
                v["endsAt"] = json!(al.ends_at_ms);
                out.push(v.to_string());
            }
        }
    }
    out
}
