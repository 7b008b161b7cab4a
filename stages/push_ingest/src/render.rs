//! Rendering held metrics: text format 0.0.4 lines exactly as Go's
//! `expfmt` writes them (label order as held, `le`/`quantile` last, an
//! implicit `+Inf` bucket, Go float formatting), the sort order Go's
//! gatherer applies, the JSON of `/api/v1/metrics`, and model samples for
//! the pipeline.

use std::cmp::Ordering;
use std::fmt::Write as _;

use panoptes_exposition::format_float;
use panoptes_model::{Label, Labels, MetricMetadata, MetricType, METRIC_NAME};

use crate::proto::{metric_type, LabelPair, Metric, MetricFamily};

/// How Go's gatherer orders the metrics of one family: fewer labels first,
/// then label values position by position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortKey(Vec<String>);

impl SortKey {
    pub fn of(m: &Metric) -> SortKey {
        SortKey(m.label.iter().map(|l| l.value().to_string()).collect())
    }
}

impl Ord for SortKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SortKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn float(v: f64) -> String {
    let mut s = String::new();
    format_float(&mut s, v);
    s
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes HELP text (backslash and newline only).
pub fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn line(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[LabelPair],
    extra: Option<(&str, f64)>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
        out.push('{');
        let mut first = true;
        for l in labels {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(l.name());
            out.push_str("=\"");
            escape_label(out, l.value());
            out.push('"');
        }
        if let Some((n, v)) = extra {
            if !first {
                out.push(',');
            }
            out.push_str(n);
            out.push_str("=\"");
            format_float(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    format_float(out, value);
    out.push('\n');
}

/// The text lines of one metric of a family of type `t`.
pub fn metric_text(name: &str, t: i32, m: &Metric) -> String {
    let mut out = String::new();
    match t {
        metric_type::SUMMARY => {
            let s = m.summary.clone().unwrap_or_default();
            for q in &s.quantile {
                line(
                    &mut out,
                    name,
                    "",
                    &m.label,
                    Some(("quantile", q.quantile.unwrap_or(0.0))),
                    q.value.unwrap_or(0.0),
                );
            }
            line(
                &mut out,
                name,
                "_sum",
                &m.label,
                None,
                s.sample_sum.unwrap_or(0.0),
            );
            line(
                &mut out,
                name,
                "_count",
                &m.label,
                None,
                s.sample_count.unwrap_or(0) as f64,
            );
        }
        metric_type::HISTOGRAM | metric_type::GAUGE_HISTOGRAM => {
            let h = m.histogram.clone().unwrap_or_default();
            let mut saw_inf = false;
            for b in &h.bucket {
                let ub = b.upper_bound.unwrap_or(0.0);
                if ub == f64::INFINITY {
                    saw_inf = true;
                }
                line(
                    &mut out,
                    name,
                    "_bucket",
                    &m.label,
                    Some(("le", ub)),
                    b.count(),
                );
            }
            if !saw_inf {
                line(
                    &mut out,
                    name,
                    "_bucket",
                    &m.label,
                    Some(("le", f64::INFINITY)),
                    h.count(),
                );
            }
            line(
                &mut out,
                name,
                "_sum",
                &m.label,
                None,
                h.sample_sum.unwrap_or(0.0),
            );
            line(&mut out, name, "_count", &m.label, None, h.count());
        }
        _ => line(&mut out, name, "", &m.label, None, m.simple_value()),
    }
    out
}

/// The `# HELP` / `# TYPE` header of a family.
pub fn family_header(out: &mut String, name: &str, help: Option<&str>, t: i32) {
    if let Some(h) = help {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(h));
    }
    let _ = writeln!(out, "# TYPE {name} {}", metric_type::text_name(t));
}

fn model_type(t: i32) -> MetricType {
    match t {
        metric_type::COUNTER => MetricType::Counter,
        metric_type::GAUGE => MetricType::Gauge,
        metric_type::SUMMARY => MetricType::Summary,
        metric_type::HISTOGRAM => MetricType::Histogram,
        metric_type::GAUGE_HISTOGRAM => MetricType::GaugeHistogram,
        _ => MetricType::Unknown,
    }
}

/// The metadata of a family for the pipeline.
pub fn metadata(f: &MetricFamily) -> MetricMetadata {
    MetricMetadata {
        metric_family: f.name().to_string(),
        metric_type: model_type(f.metric_type()),
        help: f.help.clone().unwrap_or_default(),
        unit: String::new(),
    }
}

fn labels_with(
    name: &str,
    suffix: &str,
    labels: &[LabelPair],
    extra: Option<(&str, f64)>,
) -> Labels {
    let mut v: Vec<Label> = Vec::with_capacity(labels.len() + 2);
    let full = format!("{name}{suffix}");
    v.push(Label::new(METRIC_NAME, full.as_str()));
    for l in labels {
        // Empty values mean "no label" in the data model.
        if !l.value().is_empty() {
            v.push(Label::new(l.name(), l.value()));
        }
    }
    if let Some((n, x)) = extra {
        v.push(Label::new(n, float(x).as_str()));
    }
    let mut b = panoptes_model::LabelsBuilder::with_capacity(v.len());
    for l in v {
        b.set(l.name, l.value);
    }
    b.build()
}

/// The samples a scrape of this metric would produce (labels with the
/// metric name; values only, the caller stamps the time).
pub fn metric_samples(name: &str, t: i32, m: &Metric, out: &mut Vec<(Labels, f64)>) {
    match t {
        metric_type::SUMMARY => {
            let s = m.summary.clone().unwrap_or_default();
            for q in &s.quantile {
                out.push((
                    labels_with(
                        name,
                        "",
                        &m.label,
                        Some(("quantile", q.quantile.unwrap_or(0.0))),
                    ),
                    q.value.unwrap_or(0.0),
                ));
            }
            out.push((
                labels_with(name, "_sum", &m.label, None),
                s.sample_sum.unwrap_or(0.0),
            ));
            out.push((
                labels_with(name, "_count", &m.label, None),
                s.sample_count.unwrap_or(0) as f64,
            ));
        }
        metric_type::HISTOGRAM | metric_type::GAUGE_HISTOGRAM => {
            let h = m.histogram.clone().unwrap_or_default();
            let mut saw_inf = false;
            for b in &h.bucket {
                let ub = b.upper_bound.unwrap_or(0.0);
                saw_inf |= ub == f64::INFINITY;
                out.push((
                    labels_with(name, "_bucket", &m.label, Some(("le", ub))),
                    b.count(),
                ));
            }
            if !saw_inf {
                out.push((
                    labels_with(name, "_bucket", &m.label, Some(("le", f64::INFINITY))),
                    h.count(),
                ));
            }
            out.push((
                labels_with(name, "_sum", &m.label, None),
                h.sample_sum.unwrap_or(0.0),
            ));
            out.push((labels_with(name, "_count", &m.label, None), h.count()));
        }
        _ => out.push((labels_with(name, "", &m.label, None), m.simple_value())),
    }
}

/// How many series a metric of type `t` exposes (for limits).
pub fn series_count(t: i32, m: &Metric) -> usize {
    match t {
        metric_type::SUMMARY => m.summary.as_ref().map_or(0, |s| s.quantile.len()) + 2,
        metric_type::HISTOGRAM | metric_type::GAUGE_HISTOGRAM => {
            let h = m.histogram.as_ref();
            let buckets = h.map_or(0, |h| h.bucket.len());
            let has_inf = h.is_some_and(|h| {
                h.bucket
                    .iter()
                    .any(|b| b.upper_bound == Some(f64::INFINITY))
            });
            buckets + usize::from(!has_inf) + 2
        }
        _ => 1,
    }
}

/// Appends `s` as a JSON string the way Go's `encoding/json` writes it
/// (HTML-sensitive characters escaped as `\u003c`, `\u003e`, `\u0026`).
pub fn json_str(out: &mut String, s: &str) {
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    if quoted.contains(['<', '>', '&']) {
        out.push_str(
            &quoted
                .replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026"),
        );
    } else {
        out.push_str(&quoted);
    }
}

/// Appends a JSON object of string values with keys in sorted order (as Go
/// marshals maps).
pub fn json_string_map<'a>(out: &mut String, pairs: impl IntoIterator<Item = (&'a str, String)>) {
    let mut pairs: Vec<(&str, String)> = pairs.into_iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        json_str(out, v);
    }
    out.push('}');
}

/// Appends one metric as `/api/v1/metrics` shows it: a map with sorted keys
/// (`buckets`, `count`, `labels`, `quantiles`, `sum`, `value`), values as
/// Go's `fmt.Sprint` prints them.
pub fn write_metric_json(out: &mut String, t: i32, m: &Metric) {
    // Sorted key order: buckets, count, labels, quantiles, sum, value.
    let labels = |out: &mut String| {
        out.push_str("\"labels\":");
        json_string_map(
            out,
            m.label.iter().map(|l| (l.name(), l.value().to_string())),
        );
    };
    out.push('{');
    match t {
        metric_type::SUMMARY => {
            let s = m.summary.clone().unwrap_or_default();
            out.push_str("\"count\":");
            json_str(out, &s.sample_count.unwrap_or(0).to_string());
            out.push(',');
            labels(out);
            out.push_str(",\"quantiles\":");
            let q: Vec<(String, String)> = s
                .quantile
                .iter()
                .map(|q| {
                    (
                        float(q.quantile.unwrap_or(0.0)),
                        float(q.value.unwrap_or(0.0)),
                    )
                })
                .collect();
            json_string_map(out, q.iter().map(|(k, v)| (k.as_str(), v.clone())));
            out.push_str(",\"sum\":");
            json_str(out, &float(s.sample_sum.unwrap_or(0.0)));
        }
        metric_type::HISTOGRAM | metric_type::GAUGE_HISTOGRAM => {
            let h = m.histogram.clone().unwrap_or_default();
            let b: Vec<(String, String)> = h
                .bucket
                .iter()
                .map(|b| {
                    let count = match b.cumulative_count_float {
                        Some(f) if f > 0.0 => float(f),
                        _ => b.cumulative_count.unwrap_or(0).to_string(),
                    };
                    (float(b.upper_bound.unwrap_or(0.0)), count)
                })
                .collect();
            out.push_str("\"buckets\":");
            json_string_map(out, b.iter().map(|(k, v)| (k.as_str(), v.clone())));
            let count = match h.sample_count_float {
                Some(f) if f > 0.0 => float(f),
                _ => h.sample_count.unwrap_or(0).to_string(),
            };
            out.push_str(",\"count\":");
            json_str(out, &count);
            out.push(',');
            labels(out);
            out.push_str(",\"sum\":");
            json_str(out, &float(h.sample_sum.unwrap_or(0.0)));
        }
        _ => {
            labels(out);
            out.push_str(",\"value\":");
            json_str(out, &float(m.simple_value()));
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Bucket, Histogram, Untyped};

    fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
        pairs.iter().map(|(n, v)| LabelPair::new(n, v)).collect()
    }

    #[test]
    fn histogram_text_adds_inf_bucket_and_puts_le_last() {
        let m = Metric {
            label: labels(&[("instance", ""), ("job", "j"), ("z", "1")]),
            histogram: Some(Histogram {
                sample_count: Some(1_000_000),
                sample_sum: Some(1.5),
                bucket: vec![Bucket {
                    upper_bound: Some(0.5),
                    cumulative_count: Some(3),
                    cumulative_count_float: None,
                }],
                sample_count_float: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            metric_text("h", metric_type::HISTOGRAM, &m),
            "h_bucket{instance=\"\",job=\"j\",z=\"1\",le=\"0.5\"} 3\n\
             h_bucket{instance=\"\",job=\"j\",z=\"1\",le=\"+Inf\"} 1e+06\n\
             h_sum{instance=\"\",job=\"j\",z=\"1\"} 1.5\n\
             h_count{instance=\"\",job=\"j\",z=\"1\"} 1e+06\n"
        );
        let mut samples = Vec::new();
        metric_samples("h", metric_type::HISTOGRAM, &m, &mut samples);
        assert_eq!(samples.len(), 4);
        assert_eq!(series_count(metric_type::HISTOGRAM, &m), 4);
        assert_eq!(samples[1].0.get("le"), Some("+Inf"));
        // The empty instance label is no label in the data model.
        assert_eq!(samples[1].0.get("instance"), None);
        assert_eq!(samples[3].0.metric_name(), Some("h_count"));
    }

    #[test]
    fn escaping_and_sorting() {
        let m = Metric {
            label: labels(&[("a", "x\\y\"z\nw")]),
            untyped: Some(Untyped { value: Some(1.0) }),
            ..Default::default()
        };
        assert_eq!(
            metric_text("esc", metric_type::UNTYPED, &m),
            "esc{a=\"x\\\\y\\\"z\\nw\"} 1\n"
        );
        let short = SortKey(vec!["z".into()]);
        let long = SortKey(vec!["a".into(), "a".into()]);
        assert!(short < long);
        assert!(
            SortKey(vec!["a".into(), "b".into()])
                < long.clone().max(SortKey(vec!["a".into(), "c".into()]))
        );
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }
}
