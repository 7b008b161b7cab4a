//! Stale markers for emitted series that vanished (a group deleted, wiped,
//! expired or replaced without them), as Prometheus writes them when a
//! series disappears from a scraped Pushgateway, so PromQL stops returning
//! them at once instead of after the lookback window.

use std::collections::HashMap;

use panoptes_model::{stale_nan, Labels, Sample, SampleBatch};

/// The series of the previous emission.
#[derive(Default)]
pub struct Staleness {
    previous: HashMap<u64, Labels>,
}

impl Staleness {
    /// Adds a stale marker at `now_ms` for every series of the previous
    /// batch missing from this one, and remembers this one's series.
    pub fn apply(&mut self, batch: &mut SampleBatch, now_ms: i64) {
        let mut current = HashMap::with_capacity(batch.samples.len());
        for s in &batch.samples {
            current.insert(s.labels.stable_hash(), s.labels.clone());
        }
        for (h, labels) in self.previous.drain() {
            if !current.contains_key(&h) {
                batch.samples.push(Sample {
                    labels,
                    timestamp_ms: now_ms,
                    value: stale_nan(),
                });
            }
        }
        self.previous = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::is_stale_nan;

    fn batch(names: &[&str]) -> SampleBatch {
        let mut b = SampleBatch::new("t");
        for n in names {
            b.samples.push(Sample {
                labels: Labels::from_pairs([("__name__", *n)]),
                timestamp_ms: 1,
                value: 1.0,
            });
        }
        b
    }

    #[test]
    fn vanished_series_get_one_stale_marker() {
        let mut st = Staleness::default();
        let mut b1 = batch(&["a", "b"]);
        st.apply(&mut b1, 10);
        assert_eq!(b1.samples.len(), 2);
        let mut b2 = batch(&["a"]);
        st.apply(&mut b2, 20);
        assert_eq!(b2.samples.len(), 2);
        let stale = &b2.samples[1];
        assert_eq!(stale.labels.metric_name(), Some("b"));
        assert!(is_stale_nan(stale.value));
        assert_eq!(stale.timestamp_ms, 20);
        let mut b3 = batch(&["a"]);
        st.apply(&mut b3, 30);
        assert_eq!(b3.samples.len(), 1);
    }
}
