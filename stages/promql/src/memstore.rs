//! An in-memory `SeriesSelect`, for tests, the conformance runner and
//! benchmarks: series kept sorted by labels, samples sorted by time, and a
//! metric-name index so that `name{...}` selectors do not scan everything.

use std::collections::{BTreeMap, HashMap};

use panoptes_model::{Labels, MatchOp, Matcher, Series, SeriesSelect, StorageError, METRIC_NAME};

/// An in-memory store of float series.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    /// Series and their samples, in insertion order.
    series: Vec<(Labels, Vec<(i64, f64)>)>,
    /// Position of each label set in `series`.
    index: HashMap<Labels, usize>,
    /// All positions, in label order.
    order: BTreeMap<Labels, usize>,
    /// Positions per metric name, in label order.
    by_name: HashMap<String, Vec<usize>>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends (or replaces, for an equal timestamp) one sample.
    pub fn add(&mut self, labels: &Labels, t: i64, v: f64) {
        let i = match self.index.get(labels) {
            Some(&i) => i,
            None => {
                let i = self.series.len();
                self.series.push((labels.clone(), Vec::new()));
                self.index.insert(labels.clone(), i);
                self.order.insert(labels.clone(), i);
                let name = labels.metric_name().unwrap_or("").to_string();
                let list = self.by_name.entry(name).or_default();
                let series = &self.series;
                let at = list.partition_point(|&j| series[j].0 < *labels);
                list.insert(at, i);
                i
            }
        };
        let samples = &mut self.series[i].1;
        match samples.last() {
            Some(&(lt, _)) if lt < t => samples.push((t, v)),
            None => samples.push((t, v)),
            _ => match samples.binary_search_by_key(&t, |p| p.0) {
                Ok(i) => samples[i].1 = v,
                Err(i) => samples.insert(i, (t, v)),
            },
        }
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.series.clear();
        self.index.clear();
        self.order.clear();
        self.by_name.clear();
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Positions of the series a selection must look at, in label order.
    fn candidates(&self, matchers: &[Matcher]) -> Vec<usize> {
        let by_name = matchers
            .iter()
            .find(|m| m.name == METRIC_NAME && m.op == MatchOp::Equal);
        match by_name {
            Some(m) => self.by_name.get(&m.value).cloned().unwrap_or_default(),
            None => self.order.values().copied().collect(),
        }
    }
}

/// `samples[..end].partition_point(pred)` found by galloping back from
/// `end`: queries mostly read the newest samples, so this touches a few
/// neighbouring cache lines instead of a binary search over the series.
fn partition_from_end(samples: &[(i64, f64)], end: usize, pred: impl Fn(i64) -> bool) -> usize {
    let mut step = 1;
    let mut hi = end;
    loop {
        let lo = hi.saturating_sub(step);
        if lo == 0 || pred(samples[lo].0) {
            // The boundary lies in [lo, hi]: finish with a binary search.
            return lo + samples[lo..hi].partition_point(|p| pred(p.0));
        }
        hi = lo;
        step *= 2;
    }
}

impl SeriesSelect for MemStore {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<Series>, StorageError> {
        let mut out = Vec::new();
        for i in self.candidates(matchers) {
            let (labels, samples) = &self.series[i];
            if !matchers.iter().all(|m| m.matches_labels(labels)) {
                continue;
            }
            let hi = partition_from_end(samples, samples.len(), |t| t <= end_ms);
            let lo = partition_from_end(samples, hi, |t| t < start_ms);
            if lo >= hi {
                continue;
            }
            out.push(Series {
                labels: labels.clone(),
                samples: samples[lo..hi].to_vec(),
            });
        }
        Ok(out)
    }

    fn label_names(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut names: Vec<String> = self
            .select(matchers, start_ms, end_ms)?
            .iter()
            .flat_map(|s| {
                s.labels
                    .iter()
                    .map(|l| l.name.to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<String>, StorageError> {
        let mut vals: Vec<String> = self
            .select(matchers, start_ms, end_ms)?
            .iter()
            .filter_map(|s| s.labels.get(name).map(str::to_string))
            .collect();
        vals.sort();
        vals.dedup();
        Ok(vals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn galloping_partition_matches_binary_search() {
        let v: Vec<(i64, f64)> = (0..1000).map(|i| (i * 3, 0.0)).collect();
        for x in [-5, 0, 1, 2, 3, 500, 1499, 2997, 2998, 5000] {
            assert_eq!(
                partition_from_end(&v, v.len(), |t| t <= x),
                v.partition_point(|p| p.0 <= x),
                "{x}"
            );
            let hi = v.partition_point(|p| p.0 <= x + 100);
            assert_eq!(
                partition_from_end(&v, hi, |t| t < x),
                v[..hi].partition_point(|p| p.0 < x),
                "{x}"
            );
        }
        assert_eq!(partition_from_end(&[], 0, |t| t < 0), 0);
    }

    #[test]
    fn selects_by_matchers_and_time() {
        let mut s = MemStore::new();
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        s.add(&a, 10, 1.0);
        s.add(&a, 20, 2.0);
        s.add(&b, 10, 3.0);
        let got = s.select(&[Matcher::equal("job", "a")], 15, 30).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![(20, 2.0)]);
        let got = s
            .select(&[Matcher::equal("__name__", "up")], 0, 30)
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(s.label_values("job", &[], 0, 30).unwrap(), vec!["a", "b"]);
    }
}
