//! The per-target scrape cache and the append path: parse a body, turn each
//! line into a labelled sample, track staleness, enforce limits.
//!
//! Like Prometheus's scrape cache, the labels of a series are computed once
//! (target labels merged, `exported_` conflicts resolved, metric relabeling,
//! limits checked) and then found by the exact `name{labels}` text of its
//! line, so a steady-state scrape does one hash lookup per line. Entries not
//! seen for [`EVICT_AFTER`] scrapes are forgotten.
//!
//! The cache is keyed by the 128-bit xxh3 hash of that text rather than the
//! text itself: the lookup then touches no out-of-line key (a cache miss per
//! line otherwise), and a collision among 2^64 series is not a practical
//! concern. Label names are interned per target so that the label sets of
//! all its series share their name strings.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use panoptes_exposition::{Entry, Format, LabelPairs, Parser};
use panoptes_model::{stale_nan, Labels, LabelsBuilder, MetricMetadata, MetricType, Sample};
use panoptes_relabel::{process, RelabelRule};
use xxhash_rust::xxh3::xxh3_128;

use crate::config::Limits;
use crate::error::ScrapeError;

/// Scrapes after which an unseen cache entry is dropped.
pub const EVICT_AFTER: u64 = 10;

/// Interned label names kept per target before the table is reset.
const MAX_INTERNED_NAMES: usize = 10_000;

/// What the append path needs to know about the target.
#[derive(Clone, Debug)]
pub struct AppendSettings {
    /// Labels attached to every series (no `__` labels).
    pub target_labels: Labels,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub metric_relabel: Arc<Vec<RelabelRule>>,
    pub limits: Limits,
}

/// What one scrape produced (before the synthetic series are added).
#[derive(Debug, Default)]
pub struct AppendResult {
    /// Samples of the body (empty on failure) followed by stale markers.
    pub samples: Vec<Sample>,
    pub metadata: Vec<MetricMetadata>,
    /// Samples in the body.
    pub scraped: usize,
    /// Samples left after metric relabeling.
    pub post_relabel: usize,
    /// Series new to the cache in this scrape.
    pub added: usize,
    /// Duplicate series in the body (the later lines are ignored).
    pub duplicates: usize,
    pub error: Option<ScrapeError>,
}

struct CacheEntry {
    /// Final labels and their hash; None when metric relabeling drops it.
    out: Option<(Labels, u64)>,
    /// Last scrape whose body contained the line (for eviction).
    touched: u64,
    /// Last successful scrape that emitted it with staleness tracking.
    emitted: u64,
    /// Last scrape (successful or not) that emitted it with tracking.
    current: u64,
}

/// A hasher for keys that already are hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        // The low half of an xxh3-128 hash is itself a good 64-bit hash.
        self.0 = n as u64;
    }
}

type HashSet64 = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// The series cache of one target.
pub struct SeriesCache {
    entries: HashMap<u128, CacheEntry, BuildHasherDefault<IdentityHasher>>,
    /// Interned label names.
    names: HashMap<Box<str>, Arc<str>>,
    /// The current scrape number (starts at 1).
    iter: u64,
    /// The last successful scrape, whose series are candidates for staleness.
    last_ok: u64,
    /// Output series hashes of the current scrape (dedup, staleness).
    seen: HashSet64,
    /// Capacity hint for the next sample vector.
    last_len: usize,
}

impl Default for SeriesCache {
    fn default() -> Self {
        Self::new()
    }
}

impl SeriesCache {
    pub fn new() -> Self {
        SeriesCache {
            entries: HashMap::default(),
            names: HashMap::new(),
            iter: 0,
            last_ok: 0,
            seen: HashSet64::default(),
            last_len: 0,
        }
    }

    /// Number of cached series (kept and dropped).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses `body` and appends its samples at `ts` (ms). On any failure
    /// the result carries the error, no body samples, and stale markers for
    /// every series of the last successful scrape.
    pub fn append(
        &mut self,
        body: &[u8],
        format: Format,
        ts: i64,
        s: &AppendSettings,
    ) -> AppendResult {
        self.iter += 1;
        self.seen.clear();
        let mut res = AppendResult::default();
        // Room for the synthetic series and a few stale markers too, so the
        // vector is not reallocated after the body.
        let mut samples: Vec<Sample> = Vec::with_capacity(self.last_len + 16);
        let mut metadata: HashMap<&str, MetricMetadata> = HashMap::new();
        let limit = s.limits.sample_limit;
        let mut error = None;
        for entry in Parser::new(body, format) {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    error = Some(ScrapeError::Parse(e));
                    break;
                }
            };
            let se = match entry {
                Entry::Sample(se) => se,
                Entry::Help { family, help } => {
                    meta(&mut metadata, family).help = help.into_owned();
                    continue;
                }
                Entry::Type {
                    family,
                    metric_type,
                } => {
                    meta(&mut metadata, family).metric_type = metric_type;
                    continue;
                }
                Entry::Unit { family, unit } => {
                    meta(&mut metadata, family).unit = unit.to_string();
                    continue;
                }
            };
            res.scraped += 1;
            let iter = self.iter;
            let key = xxh3_128(se.series.as_bytes());
            let entry = match self.entries.get_mut(&key) {
                Some(e) => e,
                None => {
                    let out = match new_series(&mut self.names, se.name, &se.labels, s) {
                        Ok(out) => out,
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    };
                    if out.is_some() {
                        res.added += 1;
                    }
                    self.entries.entry(key).or_insert(CacheEntry {
                        out,
                        touched: 0,
                        emitted: 0,
                        current: 0,
                    })
                }
            };
            entry.touched = iter;
            let Some((labels, hash)) = &entry.out else {
                continue;
            };
            res.post_relabel += 1;
            if limit > 0 && res.post_relabel > limit {
                // Keep counting (the synthetic series report the totals)
                // but keep nothing of this scrape.
                samples = Vec::new();
                continue;
            }
            let explicit_ts = se.timestamp_ms.filter(|_| s.honor_timestamps);
            if !self.seen.insert(*hash) {
                res.duplicates += 1;
                continue;
            }
            if explicit_ts.is_none() {
                // Only series without their own timestamp go stale, as in
                // Prometheus.
                entry.current = iter;
            }
            samples.push(Sample {
                labels: labels.clone(),
                timestamp_ms: explicit_ts.unwrap_or(ts),
                value: se.value,
            });
        }
        if error.is_none() && limit > 0 && res.post_relabel > limit {
            error = Some(ScrapeError::SampleLimit {
                samples: res.post_relabel,
                limit,
            });
        }
        if let Some(e) = error {
            return self.fail_with(ts, e, res);
        }
        self.last_len = samples.len();
        res.metadata = metadata.into_values().collect();
        res.metadata
            .sort_by(|a, b| a.metric_family.cmp(&b.metric_family));
        self.finish(ts, &mut samples, true);
        res.samples = samples;
        res
    }

    /// Records a scrape that failed before a body could be parsed.
    pub fn fail(&mut self, ts: i64, error: ScrapeError) -> AppendResult {
        self.iter += 1;
        self.seen.clear();
        self.fail_with(ts, error, AppendResult::default())
    }

    fn fail_with(&mut self, ts: i64, error: ScrapeError, mut res: AppendResult) -> AppendResult {
        self.seen.clear();
        let mut samples = Vec::new();
        self.finish(ts, &mut samples, false);
        res.samples = samples;
        res.metadata.clear();
        res.error = Some(error);
        res
    }

    /// Stale markers for every series of the last successful scrape, for a
    /// target that went away.
    pub fn end_of_run(&mut self, ts: i64) -> Vec<Sample> {
        self.iter += 1;
        self.seen.clear();
        let mut samples = Vec::new();
        self.finish(ts, &mut samples, false);
        samples
    }

    /// Appends stale markers for series emitted by the last successful
    /// scrape and not by this one, and evicts old entries.
    fn finish(&mut self, ts: i64, samples: &mut Vec<Sample>, ok: bool) {
        let iter = self.iter;
        let last_ok = self.last_ok;
        let mut stale = HashSet64::default();
        let seen = &self.seen;
        self.entries.retain(|_, e| {
            let was_emitted = e.emitted;
            if ok && e.current == iter {
                e.emitted = iter;
            }
            if let Some((labels, hash)) = &e.out {
                let was_live = last_ok > 0 && was_emitted == last_ok;
                if was_live && !seen.contains(hash) && stale.insert(*hash) {
                    samples.push(Sample {
                        labels: labels.clone(),
                        timestamp_ms: ts,
                        value: stale_nan(),
                    });
                }
            }
            iter.saturating_sub(e.touched) <= EVICT_AFTER
        });
        self.last_ok = if ok { iter } else { 0 };
        // A target inventing label names forever must not grow this.
        if self.names.len() > MAX_INTERNED_NAMES {
            self.names.clear();
        }
    }
}

fn meta<'m, 'b>(
    m: &'m mut HashMap<&'b str, MetricMetadata>,
    family: &'b str,
) -> &'m mut MetricMetadata {
    m.entry(family).or_insert_with(|| MetricMetadata {
        metric_family: family.to_string(),
        metric_type: MetricType::Unknown,
        help: String::new(),
        unit: String::new(),
    })
}

/// Computes the final labels of a series seen for the first time.
fn intern(names: &mut HashMap<Box<str>, Arc<str>>, name: &str) -> Arc<str> {
    if let Some(a) = names.get(name) {
        return a.clone();
    }
    let a: Arc<str> = Arc::from(name);
    names.insert(name.into(), a.clone());
    a
}

fn new_series(
    names: &mut HashMap<Box<str>, Arc<str>>,
    name: &str,
    pairs: &LabelPairs<'_>,
    s: &AppendSettings,
) -> Result<Option<(Labels, u64)>, ScrapeError> {
    let mut b = LabelsBuilder::with_capacity(pairs.len() + s.target_labels.len() + 1);
    b.set(intern(names, "__name__"), name);
    for (n, v) in pairs.iter() {
        if !v.is_empty() {
            b.set(intern(names, n), &**v);
        }
    }
    if s.honor_labels {
        for l in s.target_labels.iter() {
            if b.get(&l.name).is_none_or(str::is_empty) {
                b.set(l.name.clone(), l.value.clone());
            }
        }
    } else {
        let mut conflicts: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for l in s.target_labels.iter() {
            if let Some(v) = b.get(&l.name).filter(|v| !v.is_empty()) {
                conflicts.push((l.name.clone(), Arc::from(v)));
            }
            b.set(l.name.clone(), l.value.clone());
        }
        // Shorter names first, so `exported_` prefixes nest predictably.
        conflicts.sort_by_key(|(n, _)| n.len());
        for (n, v) in conflicts {
            let mut new_name = format!("exported_{n}");
            while b.get(&new_name).is_some_and(|v| !v.is_empty()) {
                new_name = format!("exported_{new_name}");
            }
            b.set(new_name, v);
        }
    }
    let labels = b.build();
    let Some(labels) = process(&labels, &s.metric_relabel) else {
        return Ok(None);
    };
    if labels.metric_name().is_none() {
        return Err(ScrapeError::NoMetricName(name.to_string()));
    }
    check_limits(&labels, &s.limits)?;
    let hash = labels.stable_hash();
    Ok(Some((labels, hash)))
}

fn check_limits(labels: &Labels, limits: &Limits) -> Result<(), ScrapeError> {
    let met: String = labels
        .metric_name()
        .unwrap_or("")
        .chars()
        .take(50)
        .collect();
    if limits.label_limit > 0 && labels.len() > limits.label_limit {
        return Err(ScrapeError::LabelLimit(format!(
            "label_limit exceeded (metric: {met}, number of labels: {}, limit: {})",
            labels.len(),
            limits.label_limit
        )));
    }
    for l in labels.iter() {
        if limits.label_name_length_limit > 0 && l.name.len() > limits.label_name_length_limit {
            return Err(ScrapeError::LabelLimit(format!(
                "label_name_length_limit exceeded (metric: {met}, label name: {:.50}, length: {}, limit: {})",
                l.name,
                l.name.len(),
                limits.label_name_length_limit
            )));
        }
        if limits.label_value_length_limit > 0 && l.value.len() > limits.label_value_length_limit {
            let shown: String = l.value.chars().take(50).collect();
            return Err(ScrapeError::LabelLimit(format!(
                "label_value_length_limit exceeded (metric: {met}, label name: {:.50}, value: {shown:?}, length: {}, limit: {})",
                l.name,
                l.value.len(),
                limits.label_value_length_limit
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::is_stale_nan;
    use serde_json::json;

    fn settings(rules: serde_json::Value, limits: Limits, honor_labels: bool) -> AppendSettings {
        AppendSettings {
            target_labels: Labels::from_pairs([("instance", "h:1"), ("job", "node")]),
            honor_labels,
            honor_timestamps: true,
            metric_relabel: Arc::new(
                panoptes_relabel::compile_rules(&rules, "metric_relabel_configs").unwrap(),
            ),
            limits,
        }
    }

    fn names(r: &AppendResult) -> Vec<String> {
        r.samples.iter().map(|s| s.labels.to_string()).collect()
    }

    const BODY: &[u8] = b"# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\nb{job=\"inner\"} 1.5\nc 7 123\n";

    #[test]
    fn labels_conflicts_and_metadata() {
        let mut c = SeriesCache::new();
        let r = c.append(
            BODY,
            Format::PrometheusText,
            1000,
            &settings(json!([]), Limits::default(), false),
        );
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(
            names(&r),
            [
                "a_total{instance=\"h:1\", job=\"node\", x=\"1\"}",
                "b{exported_job=\"inner\", instance=\"h:1\", job=\"node\"}",
                "c{instance=\"h:1\", job=\"node\"}",
            ]
        );
        assert_eq!(r.samples[0].timestamp_ms, 1000);
        assert_eq!(
            r.samples[2].timestamp_ms, 123,
            "explicit timestamps are honored"
        );
        assert_eq!((r.scraped, r.post_relabel, r.added), (3, 3, 3));
        assert_eq!(r.metadata.len(), 1);
        assert_eq!(r.metadata[0].metric_type, MetricType::Counter);
        assert_eq!(r.metadata[0].help, "A.");

        let honor = settings(json!([]), Limits::default(), true);
        let mut c = SeriesCache::new();
        let r = c.append(BODY, Format::PrometheusText, 1000, &honor);
        assert_eq!(names(&r)[1], "b{instance=\"h:1\", job=\"inner\"}");
    }

    #[test]
    fn staleness_for_vanished_series_and_failures() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        c.append(b"a 1\nb 2\nc 3 5\n", Format::PrometheusText, 1000, &s);
        let r = c.append(b"a 1\n", Format::PrometheusText, 2000, &s);
        assert_eq!(r.added, 0);
        let stale: Vec<_> = r.samples.iter().filter(|x| is_stale_nan(x.value)).collect();
        // `c` had its own timestamp: no staleness for it, as in Prometheus.
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].labels.metric_name(), Some("b"));
        assert_eq!(stale[0].timestamp_ms, 2000);
        // A failed scrape makes everything of the last good scrape stale.
        let r = c.fail(
            3000,
            ScrapeError::Timeout(std::time::Duration::from_secs(1)),
        );
        assert_eq!(names(&r), ["a{instance=\"h:1\", job=\"node\"}"]);
        assert!(is_stale_nan(r.samples[0].value));
        // And only once.
        let r = c.fail(
            4000,
            ScrapeError::Timeout(std::time::Duration::from_secs(1)),
        );
        assert!(r.samples.is_empty());
        let r = c.append(b"a 1\n", Format::PrometheusText, 5000, &s);
        assert_eq!(r.samples.len(), 1);
        assert_eq!(c.end_of_run(6000).len(), 1);
    }

    #[test]
    fn parse_errors_keep_nothing() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        c.append(b"a 1\n", Format::PrometheusText, 1000, &s);
        let r = c.append(b"a 1\nb{ 2\n", Format::PrometheusText, 2000, &s);
        assert!(matches!(r.error, Some(ScrapeError::Parse(_))));
        assert_eq!(r.samples.len(), 1, "only the stale marker for a");
        assert!(is_stale_nan(r.samples[0].value));
        assert!(r.metadata.is_empty());
    }

    #[test]
    fn metric_relabeling_and_sample_limit() {
        let limits = Limits {
            sample_limit: 2,
            ..Limits::default()
        };
        let s = settings(
            json!([{"source_labels": ["__name__"], "regex": "drop_.*", "action": "drop"}]),
            limits,
            false,
        );
        let mut c = SeriesCache::new();
        let r = c.append(b"a 1\ndrop_me 1\nb 2\n", Format::PrometheusText, 1000, &s);
        assert!(r.error.is_none());
        assert_eq!((r.scraped, r.post_relabel), (3, 2));
        let r = c.append(
            b"a 1\ndrop_me 1\nb 2\nc 3\nd 4\n",
            Format::PrometheusText,
            2000,
            &s,
        );
        assert_eq!(
            r.error,
            Some(ScrapeError::SampleLimit {
                samples: 4,
                limit: 2
            })
        );
        assert_eq!((r.scraped, r.post_relabel), (5, 4));
        assert!(
            r.samples.iter().all(|x| is_stale_nan(x.value)),
            "no partial samples"
        );
        assert_eq!(r.samples.len(), 2);
    }

    #[test]
    fn label_limits() {
        let cases = [
            (
                Limits {
                    label_limit: 3,
                    ..Limits::default()
                },
                "label_limit exceeded",
            ),
            (
                Limits {
                    label_name_length_limit: 5,
                    ..Limits::default()
                },
                "label_name_length_limit exceeded",
            ),
            (
                Limits {
                    label_value_length_limit: 4,
                    ..Limits::default()
                },
                "label_value_length_limit exceeded",
            ),
        ];
        for (limits, want) in cases {
            let s = settings(json!([]), limits, false);
            let mut c = SeriesCache::new();
            let r = c.append(
                b"ok 1\nm{long_name=\"long value\"} 1\n",
                Format::PrometheusText,
                1000,
                &s,
            );
            match &r.error {
                Some(ScrapeError::LabelLimit(msg)) => assert!(msg.starts_with(want), "{msg}"),
                other => panic!("expected {want}, got {other:?}"),
            }
            assert!(r.samples.is_empty());
        }
    }

    #[test]
    fn duplicates_and_eviction() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        let r = c.append(b"a 1\na 2\n", Format::PrometheusText, 1000, &s);
        assert_eq!((r.samples.len(), r.duplicates), (1, 1));
        for i in 0..=EVICT_AFTER {
            c.append(b"b 1\n", Format::PrometheusText, 2000 + i as i64, &s);
        }
        assert_eq!(c.len(), 1, "a was evicted");
    }
}
