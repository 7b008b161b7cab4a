//! Rendering samples as text format 0.0.4, as a Pushgateway's `GET /metrics`
//! serves them: families sorted by name, each with its `# HELP` and
//! `# TYPE` lines, and floats formatted exactly like Go's exposition library.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use panoptes_model::{escape_label_value, MetricMetadata, MetricType, Sample, METRIC_NAME};

use crate::parser::sample_suffixes;
use crate::Format;

/// Renders samples + metadata as text format 0.0.4 grouped by family with
/// `# HELP` / `# TYPE` lines (what a Pushgateway's `GET /metrics` returns);
/// with or without timestamps.
///
/// A sample belongs to the family whose metadata names it, directly or with
/// its type's suffix (`_bucket`, `_sum`, `_count`, `_total`, `_created`, …);
/// a sample without metadata is its own `untyped` family. Families come out
/// sorted by name, samples within a family in the order given, labels sorted
/// by name except that `le` (histograms) and `quantile` (summaries) come
/// last, as Go's writer puts them. Types the
/// text format lacks are written as their nearest text type (gaugehistogram
/// as histogram, info and stateset as gauge).
pub fn write_text(
    out: &mut String,
    metadata: &[MetricMetadata],
    samples: &[Sample],
    with_timestamps: bool,
) {
    let meta: HashMap<&str, &MetricMetadata> = metadata
        .iter()
        .map(|m| (m.metric_family.as_str(), m))
        .collect();
    let mut families: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        let name = s.labels.metric_name().unwrap_or("");
        families.entry(family_of(name, &meta)).or_default().push(s);
    }
    for (family, samples) in families {
        let m = meta.get(family).copied();
        let metric_type = m.map_or(MetricType::Unknown, |m| m.metric_type);
        // An OpenMetrics-style counter family `x` has samples `x_total`; the
        // text format names such a family after its samples.
        let header = match samples.first().and_then(|s| s.labels.metric_name()) {
            Some(first)
                if metric_type == MetricType::Counter
                    && first.len() == family.len() + "_total".len()
                    && first.starts_with(family)
                    && first.ends_with("_total") =>
            {
                first
            }
            _ => family,
        };
        if let Some(m) = m.filter(|m| !m.help.is_empty()) {
            out.push_str("# HELP ");
            out.push_str(header);
            out.push(' ');
            escape_help(out, &m.help);
            out.push('\n');
        }
        out.push_str("# TYPE ");
        out.push_str(header);
        out.push(' ');
        out.push_str(text_type_name(metric_type));
        out.push('\n');
        // Go's writer appends a bucket's `le` and a quantile's `quantile`
        // after the other labels; do the same so bodies match byte for byte.
        let last_label = match metric_type {
            MetricType::Histogram | MetricType::GaugeHistogram => Some("le"),
            MetricType::Summary => Some("quantile"),
            _ => None,
        };
        for s in samples {
            write_sample(out, s, last_label, with_timestamps);
        }
    }
}

/// The family a sample named `name` belongs to, given the known metadata.
fn family_of<'s>(name: &'s str, meta: &HashMap<&'s str, &'s MetricMetadata>) -> &'s str {
    if meta.contains_key(name) {
        return name;
    }
    for suffix in [
        "_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount", "_info",
    ] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some((family, m)) = meta.get_key_value(base) {
                if sample_suffixes(m.metric_type, Format::OpenMetrics).contains(&suffix) {
                    return family;
                }
            }
        }
    }
    name
}

fn text_type_name(t: MetricType) -> &'static str {
    match t {
        MetricType::Counter => "counter",
        MetricType::Gauge | MetricType::Info | MetricType::StateSet => "gauge",
        MetricType::Histogram | MetricType::GaugeHistogram => "histogram",
        MetricType::Summary => "summary",
        MetricType::Unknown => "untyped",
    }
}

/// HELP text escaping of the text format: backslash and newline.
fn escape_help(out: &mut String, help: &str) {
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_sample(out: &mut String, s: &Sample, last_label: Option<&str>, with_timestamps: bool) {
    out.push_str(s.labels.metric_name().unwrap_or(""));
    let mut first = true;
    let is_last = |name: &str| Some(name) == last_label;
    let ordered = s
        .labels
        .iter()
        .filter(|l| &*l.name != METRIC_NAME && !is_last(&l.name))
        .chain(s.labels.iter().filter(|l| is_last(&l.name)));
    for l in ordered {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(&l.name);
        out.push_str("=\"");
        out.push_str(&escape_label_value(&l.value));
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    format_float(out, s.value);
    if with_timestamps {
        // Writing to a String cannot fail.
        let _ = write!(out, " {}", s.timestamp_ms);
    }
    out.push('\n');
}

/// Appends `v` formatted as Go's exposition library does: `1`, `0.5`,
/// `1e+06`, `1.5e-05`, `+Inf`, `-Inf`, `NaN` (Go's
/// `strconv.FormatFloat(v, 'g', -1, 64)`); shared with every writer of the
/// text format through the model crate.
pub fn format_float(out: &mut String, v: f64) {
    panoptes_model::write_float(out, v);
}

/// Appends `v` in OpenMetrics' float style, as Prometheus's
/// `FormatOpenMetricsFloat`: like [`format_float`] but with `.0` added to a
/// number that would otherwise have neither `.` nor `e` (`1.0`, `0.0`,
/// `10.0`, `1e+06`).
pub fn format_openmetrics_float(out: &mut String, v: f64) {
    let start = out.len();
    format_float(out, v);
    let written = &out[start..];
    if !v.is_finite() || written.contains(['.', 'e']) {
        return;
    }
    out.push_str(".0");
}

/// Prometheus 3's normalisation of bucket and quantile bounds: the value of
/// `le` on a histogram's samples or `quantile` on a summary's, when it parses
/// as a float, rewritten in OpenMetrics style (`le="1"` becomes `le="1.0"`),
/// so that text-format and OpenMetrics scrapes of one target give the same
/// series. Other labels and unparsable values are returned unchanged. The
/// parser leaves labels as written; a scraper applies this if it wants
/// Prometheus 3's behaviour (Prometheus 2 did not normalise).
pub fn normalize_float_label_value<'v>(
    metric_type: MetricType,
    label: &str,
    value: &'v str,
) -> std::borrow::Cow<'v, str> {
    let applies = (metric_type == MetricType::Histogram && label == "le")
        || (metric_type == MetricType::Summary && label == "quantile");
    if !applies {
        return std::borrow::Cow::Borrowed(value);
    }
    let Ok(v) = crate::lex::parse_float(value) else {
        return std::borrow::Cow::Borrowed(value);
    };
    let mut out = String::with_capacity(value.len() + 2);
    format_openmetrics_float(&mut out, v);
    if out == value {
        std::borrow::Cow::Borrowed(value)
    } else {
        std::borrow::Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::Labels;

    fn f(v: f64) -> String {
        let mut s = String::new();
        format_float(&mut s, v);
        s
    }

    #[test]
    fn floats_match_go() {
        let cases = [
            (1.0, "1"),
            (-1.0, "-1"),
            (0.0, "0"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (2.75, "2.75"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (100000.0, "100000"),
            (1e20, "1e+20"),
            (12.0, "12"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.5e-3, "-0.0025"),
            (1.7954560102096264e9, "1.7954560102096264e+09"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
        ];
        for (v, want) in cases {
            assert_eq!(f(v), want, "{v:e}");
        }
    }

    #[test]
    fn openmetrics_floats_and_bound_normalisation() {
        let om = |v: f64| {
            let mut s = String::new();
            format_openmetrics_float(&mut s, v);
            s
        };
        assert_eq!(om(1.0), "1.0");
        assert_eq!(om(0.0), "0.0");
        assert_eq!(om(10.0), "10.0");
        assert_eq!(om(0.25), "0.25");
        assert_eq!(om(1e6), "1e+06");
        assert_eq!(om(f64::INFINITY), "+Inf");
        assert_eq!(om(f64::NAN), "NaN");
        let n = |t, l, v| normalize_float_label_value(t, l, v).into_owned();
        assert_eq!(n(MetricType::Histogram, "le", "1"), "1.0");
        assert_eq!(n(MetricType::Histogram, "le", "+Inf"), "+Inf");
        assert_eq!(n(MetricType::Histogram, "le", "0.005"), "0.005");
        assert_eq!(n(MetricType::Summary, "quantile", "0"), "0.0");
        assert_eq!(n(MetricType::Summary, "le", "1"), "1");
        assert_eq!(n(MetricType::Gauge, "le", "1"), "1");
        assert_eq!(n(MetricType::Histogram, "le", "x"), "x");
    }

    #[test]
    fn text_is_grouped_by_family_with_metadata() {
        let meta = vec![
            MetricMetadata {
                metric_family: "rpc_seconds".into(),
                metric_type: MetricType::Histogram,
                help: "RPC latency\\with \"quotes\"\nand lines".into(),
                unit: String::new(),
            },
            MetricMetadata {
                metric_family: "jobs".into(),
                metric_type: MetricType::Counter,
                help: "Jobs done.".into(),
                unit: String::new(),
            },
        ];
        let s = |pairs: &[(&str, &str)], v: f64| Sample {
            labels: Labels::from_pairs(pairs.iter().copied()),
            timestamp_ms: 1000,
            value: v,
        };
        let samples = vec![
            s(&[("__name__", "some_metric"), ("job", "a\"b")], 3.25),
            s(&[("__name__", "rpc_seconds_bucket"), ("le", "0.5")], 1.0),
            s(&[("__name__", "rpc_seconds_bucket"), ("le", "+Inf")], 2.0),
            s(&[("__name__", "rpc_seconds_sum")], 1e6),
            s(&[("__name__", "rpc_seconds_count")], 2.0),
            s(&[("__name__", "jobs_total")], 7.0),
        ];
        let mut out = String::new();
        write_text(&mut out, &meta, &samples, false);
        assert_eq!(
            out,
            "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total 7\n\
             # HELP rpc_seconds RPC latency\\\\with \"quotes\"\\nand lines\n\
             # TYPE rpc_seconds histogram\nrpc_seconds_bucket{le=\"0.5\"} 1\n\
             rpc_seconds_bucket{le=\"+Inf\"} 2\nrpc_seconds_sum 1e+06\nrpc_seconds_count 2\n\
             # TYPE some_metric untyped\nsome_metric{job=\"a\\\"b\"} 3.25\n"
        );
        let mut out = String::new();
        write_text(&mut out, &[], &samples[..1], true);
        assert_eq!(
            out,
            "# TYPE some_metric untyped\nsome_metric{job=\"a\\\"b\"} 3.25 1000\n"
        );
    }
}
