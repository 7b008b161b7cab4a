//! Whole-body parsing into the model's `SampleBatch`, for callers that want
//! owned samples rather than the streaming iterator (push ingestion, tests).

use std::collections::HashMap;

use panoptes_model::{LabelsBuilder, MetricMetadata, Sample, SampleBatch, METRIC_NAME};

use crate::{Entry, Format, ParseError, Parser};

/// Convenience: parse a whole body into model samples (labels incl.
/// `__name__`, `default_timestamp_ms` applied when a sample has none) plus
/// metadata (one `MetricMetadata` per family with HELP/TYPE/UNIT, in order
/// of first appearance). Exemplars are dropped. All or nothing: the first
/// error is returned and no samples. The text format's metadata rules are
/// enforced ([`Parser::strict_metadata`]), as a Pushgateway does for pushes.
pub fn parse_to_batch(
    body: &[u8],
    format: Format,
    default_timestamp_ms: i64,
    source: &str,
) -> Result<SampleBatch, ParseError> {
    let mut batch = SampleBatch::new(source);
    let mut family_index: HashMap<String, usize> = HashMap::new();
    for entry in Parser::new(body, format).strict_metadata() {
        match entry? {
            Entry::Sample(s) => {
                let mut b = LabelsBuilder::with_capacity(s.labels.len() + 1);
                b.set(METRIC_NAME, s.name);
                for (name, value) in &s.labels {
                    b.set(*name, value.as_ref());
                }
                batch.samples.push(Sample {
                    labels: b.build(),
                    timestamp_ms: s.timestamp_ms.unwrap_or(default_timestamp_ms),
                    value: s.value,
                });
            }
            Entry::Help { family, help } => {
                let i = meta(&mut family_index, &mut batch, family);
                batch.metadata[i].help = help.into_owned();
            }
            Entry::Type {
                family,
                metric_type,
            } => {
                let i = meta(&mut family_index, &mut batch, family);
                batch.metadata[i].metric_type = metric_type;
            }
            Entry::Unit { family, unit } => {
                let i = meta(&mut family_index, &mut batch, family);
                batch.metadata[i].unit = unit.to_owned();
            }
        }
    }
    Ok(batch)
}

/// The index in `batch.metadata` of `family`'s entry, created on first use.
fn meta(family_index: &mut HashMap<String, usize>, batch: &mut SampleBatch, family: &str) -> usize {
    if let Some(i) = family_index.get(family) {
        return *i;
    }
    batch.metadata.push(MetricMetadata {
        metric_family: family.to_owned(),
        ..MetricMetadata::default()
    });
    let i = batch.metadata.len() - 1;
    family_index.insert(family.to_owned(), i);
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::MetricType;

    #[test]
    fn batch_applies_default_timestamp_and_collects_metadata() {
        let body = b"# HELP up Whether the target is up.\n# TYPE up gauge\nup{job=\"a\"} 1\nup{job=\"b\"} 0 1500\n";
        let batch = parse_to_batch(body, Format::PrometheusText, 42, "test").unwrap();
        assert_eq!(&*batch.source, "test");
        assert_eq!(batch.samples.len(), 2);
        assert_eq!(batch.samples[0].labels.to_string(), "up{job=\"a\"}");
        assert_eq!(batch.samples[0].timestamp_ms, 42);
        assert_eq!(batch.samples[1].timestamp_ms, 1500);
        assert_eq!(batch.samples[1].value, 0.0);
        assert_eq!(
            batch.metadata,
            vec![MetricMetadata {
                metric_family: "up".into(),
                metric_type: MetricType::Gauge,
                help: "Whether the target is up.".into(),
                unit: String::new(),
            }]
        );
    }

    #[test]
    fn batch_is_all_or_nothing() {
        let body = b"a 1\nb 2\nc\n";
        let err = parse_to_batch(body, Format::PrometheusText, 0, "t").unwrap_err();
        assert_eq!(err.line, 3);
    }
}
