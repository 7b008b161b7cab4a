//! Text format 0.0.4 push bodies → metric families, grouping samples into
//! families as the Go text parser does: a sample belongs to the family of its
//! exact name if one exists, else to the summary or histogram whose name it
//! extends with `_sum`/`_count` (`_bucket`), else to a new untyped family.
//! Summary quantiles and histogram buckets of the same label set form one
//! metric. Syntax is checked by `panoptes-exposition`'s parser.

use std::collections::HashMap;

use panoptes_exposition::{Entry, Format, Parser};
use panoptes_model::MetricType;

use crate::proto::{
    metric_type, Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, Quantile,
    Summary, Untyped,
};

/// A text body that cannot be turned into metric families.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TextError {
    #[error("text format parsing error in {0}")]
    Syntax(#[from] panoptes_exposition::ParseError),
    #[error("text format parsing error in line {line}: {message}")]
    Semantic { line: usize, message: String },
}

fn proto_type(t: MetricType) -> i32 {
    match t {
        MetricType::Counter => metric_type::COUNTER,
        MetricType::Gauge => metric_type::GAUGE,
        MetricType::Summary => metric_type::SUMMARY,
        MetricType::Histogram => metric_type::HISTOGRAM,
        MetricType::GaugeHistogram => metric_type::GAUGE_HISTOGRAM,
        _ => metric_type::UNTYPED,
    }
}

/// Which part of a summary or histogram a sample is.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Plain,
    Sum,
    Count,
    Bucket,
}

struct Builder {
    families: Vec<MetricFamily>,
    by_name: HashMap<String, usize>,
    /// (family index, label signature) → metric index, for the metrics that
    /// collect several lines (summaries and histograms).
    composite: HashMap<(usize, Vec<(String, String)>), usize>,
}

impl Builder {
    fn family(&mut self, name: &str) -> usize {
        if let Some(i) = self.by_name.get(name) {
            return *i;
        }
        self.families.push(MetricFamily {
            name: Some(name.to_string()),
            ..Default::default()
        });
        let i = self.families.len() - 1;
        self.by_name.insert(name.to_string(), i);
        i
    }

    /// The family and part a sample name belongs to.
    fn resolve(&mut self, name: &str) -> (usize, Part) {
        if let Some(i) = self.by_name.get(name) {
            return (*i, Part::Plain);
        }
        for (suffix, part) in [("_sum", Part::Sum), ("_count", Part::Count)] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(&i) = self.by_name.get(base) {
                    let t = self.families[i].r#type;
                    if t == Some(metric_type::SUMMARY) || t == Some(metric_type::HISTOGRAM) {
                        return (i, part);
                    }
                }
            }
        }
        if let Some(base) = name.strip_suffix("_bucket") {
            if let Some(&i) = self.by_name.get(base) {
                if self.families[i].r#type == Some(metric_type::HISTOGRAM) {
                    return (i, Part::Bucket);
                }
            }
        }
        (self.family(name), Part::Plain)
    }
}

/// Parses a text body into families (in order of first appearance).
pub fn parse_text(body: &[u8]) -> Result<Vec<MetricFamily>, TextError> {
    let mut b = Builder {
        families: Vec::new(),
        by_name: HashMap::new(),
        composite: HashMap::new(),
    };
    // Duplicate HELP/TYPE lines and TYPE after samples are errors for the
    // Pushgateway (it parses with the strict text parser), unlike scrapes.
    for entry in Parser::new(body, Format::PrometheusText).strict_metadata() {
        match entry? {
            Entry::Help { family, help } => {
                let i = b.family(family);
                b.families[i].help = Some(help.into_owned());
            }
            Entry::Type {
                family,
                metric_type,
            } => {
                let i = b.family(family);
                b.families[i].r#type = Some(proto_type(metric_type));
            }
            Entry::Unit { .. } => {}
            Entry::Sample(s) => {
                let series = s.series;
                let line = || line_of(body, series);
                let (fi, part) = b.resolve(s.name);
                let fam_type = *b.families[fi].r#type.get_or_insert(metric_type::UNTYPED);
                let mut labels: Vec<(String, String)> = Vec::with_capacity(s.labels.len());
                let mut special: Option<f64> = None;
                let special_name = match (fam_type, part) {
                    (metric_type::SUMMARY, Part::Plain) => Some("quantile"),
                    (metric_type::HISTOGRAM, Part::Bucket) => Some("le"),
                    _ => None,
                };
                for (n, v) in &s.labels {
                    if Some(*n) == special_name {
                        let parsed = parse_go_float(v).ok_or_else(|| TextError::Semantic {
                            line: line(),
                            message: format!(
                                "expected float as value for '{n}' label, got {:?}",
                                v.as_ref()
                            ),
                        })?;
                        special = Some(parsed);
                        continue;
                    }
                    labels.push((n.to_string(), v.to_string()));
                }
                if let Some(sn) = special_name {
                    if special.is_none() {
                        return Err(TextError::Semantic {
                            line: line(),
                            message: format!("missing label {sn:?} for metric {:?}", s.name),
                        });
                    }
                }
                let label_pairs = || -> Vec<LabelPair> {
                    labels.iter().map(|(n, v)| LabelPair::new(n, v)).collect()
                };
                let value = s.value;
                match fam_type {
                    metric_type::SUMMARY | metric_type::HISTOGRAM => {
                        let key = (fi, labels.clone());
                        let mi = match b.composite.get(&key) {
                            Some(mi) => *mi,
                            None => {
                                let mut m = Metric {
                                    label: label_pairs(),
                                    ..Default::default()
                                };
                                if fam_type == metric_type::SUMMARY {
                                    m.summary = Some(Summary::default());
                                } else {
                                    m.histogram = Some(Histogram::default());
                                }
                                b.families[fi].metric.push(m);
                                let mi = b.families[fi].metric.len() - 1;
                                b.composite.insert(key, mi);
                                mi
                            }
                        };
                        let m = &mut b.families[fi].metric[mi];
                        if s.timestamp_ms.is_some() {
                            m.timestamp_ms = s.timestamp_ms;
                        }
                        if let Some(sm) = m.summary.as_mut() {
                            match part {
                                Part::Sum => sm.sample_sum = Some(value),
                                Part::Count => sm.sample_count = Some(value as u64),
                                _ => sm.quantile.push(Quantile {
                                    quantile: special,
                                    value: Some(value),
                                }),
                            }
                        } else if let Some(h) = m.histogram.as_mut() {
                            match part {
                                Part::Sum => h.sample_sum = Some(value),
                                Part::Count => h.sample_count = Some(value as u64),
                                Part::Bucket => h.bucket.push(Bucket {
                                    upper_bound: special,
                                    cumulative_count: Some(value as u64),
                                    cumulative_count_float: None,
                                }),
                                Part::Plain => {
                                    return Err(TextError::Semantic {
                                        line: line(),
                                        message: format!(
                                            "sample {:?} of histogram {:?} must end in _bucket, _sum or _count",
                                            s.name,
                                            b.families[fi].name()
                                        ),
                                    })
                                }
                            }
                        }
                    }
                    t => {
                        let mut m = Metric {
                            label: label_pairs(),
                            timestamp_ms: s.timestamp_ms,
                            ..Default::default()
                        };
                        match t {
                            metric_type::COUNTER => {
                                m.counter = Some(Counter { value: Some(value) })
                            }
                            metric_type::GAUGE => m.gauge = Some(Gauge { value: Some(value) }),
                            _ => m.untyped = Some(Untyped { value: Some(value) }),
                        }
                        b.families[fi].metric.push(m);
                    }
                }
            }
        }
    }
    // As Go's text parser: families declared by HELP/TYPE lines alone are
    // dropped (so a POST of them replaces nothing).
    b.families.retain(|f| !f.metric.is_empty());
    Ok(b.families)
}

/// The 1-based line of `part`, a slice borrowed from `body` (only computed
/// for error messages).
fn line_of(body: &[u8], part: &str) -> usize {
    let offset = (part.as_ptr() as usize).saturating_sub(body.as_ptr() as usize);
    let offset = offset.min(body.len());
    body[..offset].iter().filter(|b| **b == b'\n').count() + 1
}

/// Parses a float the way Go's `strconv.ParseFloat` reads label values such
/// as `le="+Inf"` or `quantile="0.5"`.
pub fn parse_go_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_histograms_and_summaries_into_metrics() {
        let body = b"# HELP h a hist\n# TYPE h histogram\nh_bucket{le=\"0.5\",x=\"a\"} 1\nh_bucket{x=\"a\",le=\"+Inf\"} 3\nh_sum{x=\"a\"} 2.5\nh_count{x=\"a\"} 3\n# TYPE s summary\ns{quantile=\"0.9\"} 2\ns_sum 10\ns_count 4\nh_total 7\n";
        let fams = parse_text(body).unwrap();
        let names: Vec<&str> = fams.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["h", "s", "h_total"]);
        let only_meta = parse_text(b"# HELP x X.\n# TYPE y gauge\nz 1\n").unwrap();
        assert_eq!(only_meta.len(), 1);
        let h = &fams[0];
        assert_eq!(h.help.as_deref(), Some("a hist"));
        assert_eq!(h.metric.len(), 1);
        let hist = h.metric[0].histogram.as_ref().unwrap();
        assert_eq!(hist.bucket.len(), 2);
        assert_eq!(hist.bucket[1].upper_bound, Some(f64::INFINITY));
        assert_eq!(hist.sample_count, Some(3));
        assert_eq!(h.metric[0].label, vec![LabelPair::new("x", "a")]);
        let s = fams[1].metric[0].summary.as_ref().unwrap();
        assert_eq!(s.quantile[0].quantile, Some(0.9));
        assert_eq!(s.sample_sum, Some(10.0));
        assert_eq!(fams[2].metric_type(), metric_type::UNTYPED);
    }

    #[test]
    fn timestamps_are_kept_for_the_store_to_reject() {
        let fams = parse_text(b"a 1 1000\n").unwrap();
        assert_eq!(fams[0].metric[0].timestamp_ms, Some(1000));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_text(b"ok 1\nsome_metric{ 3.14\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_text(b"# TYPE s summary\ns{quantile=\"x\"} 1\n").unwrap_err();
        assert!(err.to_string().contains("quantile"), "{err}");
        let err = parse_text(b"# TYPE h histogram\nh_bucket 1\n").unwrap_err();
        assert!(err.to_string().contains("\"le\""), "{err}");
    }
}
