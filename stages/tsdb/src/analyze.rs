//! Cardinality analysis for `panoptes tsdb analyze DIR`: which metrics and
//! label pairs hold the most series, which label names have the most values,
//! and how much the series set churned across blocks.

use std::collections::{BTreeSet, HashMap};

use panoptes_model::{Labels, StorageError};

use crate::Db;

/// What `analyze` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Analysis {
    /// Distinct series across head and blocks.
    pub series: u64,
    /// Series in the head.
    pub head_series: u64,
    pub blocks: u64,
    /// Metric names by series count, largest first.
    pub top_metrics: Vec<(String, u64)>,
    /// `name="value"` pairs by series count, largest first.
    pub top_label_pairs: Vec<(String, String, u64)>,
    /// Label names by number of distinct values, largest first.
    pub top_label_names: Vec<(String, u64)>,
    /// Per block (oldest first): series that are not in the previous block
    /// (created) and series of the previous block that are gone (churn).
    pub churn: Vec<BlockChurn>,
}

/// Series churn between one block and the one before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockChurn {
    pub ulid: String,
    pub min_time: i64,
    pub series: u64,
    pub created: u64,
    pub gone: u64,
}

fn top<K: Clone + Ord>(m: HashMap<K, u64>, limit: usize) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(limit);
    v
}

impl Db {
    /// Cardinality report with the `limit` largest entries of each list.
    pub fn analyze(&self, limit: usize) -> Result<Analysis, StorageError> {
        let mut all: BTreeSet<Labels> = BTreeSet::new();
        let mut churn = Vec::new();
        let mut prev: Option<BTreeSet<Labels>> = None;
        let blocks = self.blocks();
        for b in &blocks {
            let mut set = BTreeSet::new();
            for id in 0..b.num_series() {
                let (labels, _) = b
                    .series(id)
                    .map_err(|e| StorageError::Read(format!("block {}: {e}", b.meta.ulid)))?;
                set.insert(labels);
            }
            let (created, gone) = match &prev {
                Some(p) => (set.difference(p).count(), p.difference(&set).count()),
                None => (set.len(), 0),
            };
            churn.push(BlockChurn {
                ulid: b.meta.ulid.clone(),
                min_time: b.meta.min_time,
                series: set.len() as u64,
                created: created as u64,
                gone: gone as u64,
            });
            all.extend(set.iter().cloned());
            prev = Some(set);
        }
        let head = self.head_series_labels();
        let head_series = head.len() as u64;
        all.extend(head);

        let mut metrics: HashMap<String, u64> = HashMap::new();
        let mut pairs: HashMap<(String, String), u64> = HashMap::new();
        let mut values: HashMap<String, BTreeSet<String>> = HashMap::new();
        for l in &all {
            *metrics
                .entry(l.metric_name().unwrap_or("").to_string())
                .or_default() += 1;
            for lab in l.iter() {
                *pairs
                    .entry((lab.name.to_string(), lab.value.to_string()))
                    .or_default() += 1;
                values
                    .entry(lab.name.to_string())
                    .or_default()
                    .insert(lab.value.to_string());
            }
        }
        let names: HashMap<String, u64> = values
            .into_iter()
            .map(|(k, v)| (k, v.len() as u64))
            .collect();
        Ok(Analysis {
            series: all.len() as u64,
            head_series,
            blocks: blocks.len() as u64,
            top_metrics: top(metrics, limit),
            top_label_pairs: top(pairs, limit)
                .into_iter()
                .map(|((n, v), c)| (n, v, c))
                .collect(),
            top_label_names: top(names, limit),
            churn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;
    use panoptes_model::{Sample, SampleBatch};

    #[test]
    fn counts_series_pairs_values_and_churn() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            block_duration_ms: 10_000,
            ..Options::default()
        };
        let db = Db::open(dir.path(), opts).unwrap();
        let mut t = 0;
        for round in 0..3 {
            for _ in 0..10 {
                let mut b = SampleBatch::new("t");
                for i in 0..4 {
                    // Instance `x` is replaced by `y` after the first block.
                    let inst = if round == 0 || i < 3 {
                        format!("i{i}")
                    } else {
                        "y".into()
                    };
                    b.samples.push(Sample {
                        labels: Labels::from_pairs([
                            ("__name__", if i % 2 == 0 { "up" } else { "down" }),
                            ("instance", inst.as_str()),
                        ]),
                        timestamp_ms: t,
                        value: 1.0,
                    });
                }
                db.append(&b).unwrap();
                t += 1000;
            }
        }
        db.cut_head_blocks().unwrap();
        let a = db.analyze(10).unwrap();
        assert_eq!(a.series, 5);
        assert_eq!(
            a.top_metrics,
            vec![("down".to_string(), 3), ("up".to_string(), 2)]
        );
        assert_eq!(a.top_label_names[0], ("instance".to_string(), 5));
        assert_eq!(a.blocks, 2);
        assert_eq!(a.churn[0].created, 4);
        assert_eq!(a.churn[1].created, 1);
        assert_eq!(a.churn[1].gone, 1);
        assert_eq!(a.head_series, 4);
    }
}
