//! The per-target scrape cache and the append path: parse a body, turn each
//! line into a labelled sample, track staleness, enforce limits.
//!
//! Like Prometheus's scrape cache, the labels of a series are computed once
//! (target labels merged, `exported_` conflicts resolved, metric relabeling,
//! limits checked) and then found by the exact `name{labels}` text of its
//! line. Real exporters serve the same lines in the same order scrape after
//! scrape, so the cache remembers the previous successful scrape's order
//! and, in the steady state, finds line i's entry at position i of that
//! order: every structure is then walked sequentially (entry slab, output
//! slab, order vectors) and the hash map is only the fallback. Duplicates
//! and staleness are tracked with per-output-series scrape stamps rather
//! than per-scrape sets. Entries not seen for [`EVICT_AFTER`] scrapes are
//! forgotten, and output series with them; both slabs reuse freed slots.
//!
//! The cache is keyed by the 128-bit xxh3 hash of that text rather than the
//! text itself: the lookup then touches no out-of-line key (a cache miss per
//! line otherwise), and a collision among 2^64 series is not a practical
//! concern. Label names and values are interned per target so that the
//! label sets of its series share their strings (a target's series repeat
//! the same few handlers, methods, codes and metric names).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hashbrown::HashTable;

use panoptes_exposition::{Entry, FastEntry, Format, LabelPairs, Parser};
use panoptes_model::{stale_nan, Labels, LabelsBuilder, MetricMetadata, MetricType, Sample, Sym};
use panoptes_relabel::{process, RelabelRule};
use xxhash_rust::xxh3::xxh3_128;

use crate::config::Limits;
use crate::error::ScrapeError;

/// How many lines ahead the append loop prefetches label sets.
const PREFETCH_DISTANCE: usize = 12;

/// Scrapes after which an unseen cache entry is dropped.
pub const EVICT_AFTER: u32 = 10;

/// Interned strings of a target below which the interner is not swept.
const MIN_INTERNED_SWEEP: usize = 4096;

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

/// Marks an entry whose series metric relabeling drops (no output slot).
const NO_OUTPUT: u32 = u32::MAX;

/// One distinct line text (`name{labels}`) of the target.
struct CacheEntry {
    /// The xxh3-128 hash of the line's series text (the index key).
    key: u128,
    /// Last scrape whose body contained the line (for eviction); 0 for a
    /// free slot. Scrape numbers are 32 bits: 136 years at one a second.
    touched: u32,
    /// Slot in the outputs table, or [`NO_OUTPUT`] when metric relabeling
    /// drops the series.
    out: u32,
    /// Position of the line in the order of the scrape that last saw it: a
    /// hint for re-synchronising with `prev`, checked before use.
    pos: u32,
}

/// One distinct output label set (after metric relabeling). Different line
/// texts can share one (`a{x=""}` and `a`): duplicates and staleness are
/// per output series.
struct OutputSeries {
    /// Its `stable_hash()` is the key of the dedup map, recomputed when the
    /// map grows or the slot is freed rather than kept (100k series × 8 B).
    labels: Labels,
    /// Last scrape that emitted it (duplicate detection).
    last_seen: u32,
    /// Last successful scrape that emitted it with staleness tracking.
    emitted: u32,
    /// Last scrape (successful or not) that emitted it with tracking.
    current: u32,
    /// Live entries pointing here; 0 for a free slot.
    refs: u32,
}

/// The hash an entry is indexed by: the low half of its xxh3-128 key, itself
/// a good 64-bit hash.
fn entry_hash(key: u128) -> u64 {
    key as u64
}

/// The series cache of one target.
///
/// Entries and output series live in slabs (`Vec`s with free lists); the
/// hash tables are only consulted when the previous scrape's order does not
/// predict the line (`index`) or when an entry is created (`out_index`).
/// The tables hold slot numbers only (the keys are in the slabs), so that a
/// series costs the cache about 100 bytes besides its label set.
pub struct SeriesCache {
    /// Entry slab, indexed by the values of `index`.
    entries: Vec<CacheEntry>,
    /// Free entry slots.
    free_entries: Vec<u32>,
    /// Entry slots by line hash: the fallback when `prev` does not predict.
    index: HashTable<u32>,
    /// Output series slab.
    outputs: Vec<OutputSeries>,
    /// Free output slots.
    free_outputs: Vec<u32>,
    /// Output slots by labels hash (dedup of output label sets).
    out_index: HashTable<u32>,
    /// The entry slots of the sample lines of the last successful scrape,
    /// in order.
    prev: Vec<u32>,
    /// The same for the current scrape (becomes `prev` on success).
    next: Vec<u32>,
    /// Interned label names and values.
    strings: Interner,
    /// The current scrape number (starts at 1).
    iter: u32,
    /// The last successful scrape, whose series are candidates for staleness.
    last_ok: u32,
    /// Capacity hint for the next sample vector.
    last_len: usize,
    /// Lines of the last scrape that `prev` did not predict (map lookups).
    misses: usize,
}

impl Default for SeriesCache {
    fn default() -> Self {
        Self::new()
    }
}

impl SeriesCache {
    pub fn new() -> Self {
        SeriesCache {
            entries: Vec::new(),
            free_entries: Vec::new(),
            index: HashTable::new(),
            outputs: Vec::new(),
            free_outputs: Vec::new(),
            out_index: HashTable::new(),
            prev: Vec::new(),
            next: Vec::new(),
            strings: Interner::default(),
            iter: 0,
            last_ok: 0,
            last_len: 0,
            misses: 0,
        }
    }

    /// Number of cached series (kept and dropped).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Number of distinct output series held (for tests: bounded by churn).
    pub fn output_len(&self) -> usize {
        self.out_index.len()
    }

    /// Allocated slots (live and free) of the two slabs.
    pub fn slab_capacity(&self) -> (usize, usize) {
        (self.entries.len(), self.outputs.len())
    }

    /// Sample lines of the last scrape whose entry was not where the
    /// previous successful scrape's order predicted (found by hash lookup,
    /// or new).
    pub fn last_misses(&self) -> usize {
        self.misses
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
        self.iter = self.iter.wrapping_add(1).max(1);
        let iter = self.iter;
        let mut res = AppendResult::default();
        // Room for the synthetic series and a few stale markers too, so the
        // vector is not reallocated after the body.
        let mut samples: Vec<Sample> = Vec::with_capacity(self.last_len + 16);
        let mut metadata: HashMap<&str, MetricMetadata> = HashMap::new();
        let limit = s.limits.sample_limit;
        let mut error = None;
        self.next.clear();
        self.next.reserve(self.prev.len());
        // Where in `prev` the next line is expected.
        let mut cursor = 0usize;
        self.misses = 0;
        let mut parser = Parser::new(body, format);
        while let Some(entry) = parser.next_fast() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    error = Some(ScrapeError::Parse(e));
                    break;
                }
            };
            // A sample line: its series key, value and timestamp, and the
            // fully parsed entry when the series text is new to the cache
            // (a known text was validated when first seen, so its labels
            // need neither parsing nor checking again).
            let (key, value, line_ts, se) = match entry {
                FastEntry::Sample {
                    series,
                    value,
                    timestamp_ms,
                } => {
                    let key = xxh3_128(series);
                    let known =
                        self.prev_key(cursor) == Some(key) || self.find_entry(key).is_some();
                    if known {
                        (key, value, timestamp_ms, None)
                    } else {
                        match parser.reparse_last() {
                            Ok(Entry::Sample(se)) => (key, se.value, se.timestamp_ms, Some(se)),
                            Ok(_) => continue,
                            Err(e) => {
                                error = Some(ScrapeError::Parse(e));
                                break;
                            }
                        }
                    }
                }
                FastEntry::Parsed(Entry::Sample(se)) => (
                    xxh3_128(se.series.as_bytes()),
                    se.value,
                    se.timestamp_ms,
                    Some(se),
                ),
                FastEntry::Parsed(Entry::Help { family, help }) => {
                    meta(&mut metadata, family).help = help.into_owned();
                    continue;
                }
                FastEntry::Parsed(Entry::Type {
                    family,
                    metric_type,
                }) => {
                    meta(&mut metadata, family).metric_type = metric_type;
                    continue;
                }
                FastEntry::Parsed(Entry::Unit { family, unit }) => {
                    meta(&mut metadata, family).unit = unit.to_string();
                    continue;
                }
            };
            res.scraped += 1;
            // The clone below touches the label set's reference count, a
            // cache miss per sample with many series: fetch the one the
            // previous order expects a few lines ahead.
            if let Some(&ahead) = self.prev.get(cursor + PREFETCH_DISTANCE) {
                if let Some(o) = self
                    .entries
                    .get(ahead as usize)
                    .and_then(|e| self.outputs.get(e.out as usize))
                {
                    o.labels.prefetch();
                }
            }
            // The steady state: the line the previous scrape had here.
            let predicted = self.prev.get(cursor).copied();
            let idx = match predicted {
                Some(idx) if self.entries.get(idx as usize).is_some_and(|e| e.key == key) => {
                    cursor += 1;
                    idx
                }
                _ => {
                    self.misses += 1;
                    match self.find_entry(key) {
                        Some(idx) => {
                            // Re-synchronise: continue after where this line was
                            // in the previous scrape. An inserted line (new to
                            // the cache) leaves the cursor alone and the next
                            // line hits again; after a removed line the first
                            // following line finds its old position here; a
                            // moved line costs one lookup and re-anchors the
                            // cursor. So each disturbance costs O(1) map probes
                            // instead of making every later line miss. `pos` may
                            // come from a failed scrape's order or an earlier
                            // duplicate of this line: it is only a hint, used
                            // when `prev` confirms it.
                            let p = self.entries[idx as usize].pos as usize;
                            if self.prev.get(p) == Some(&idx) {
                                cursor = p + 1;
                            }
                            idx
                        }
                        None => {
                            // A text that is in neither `prev` nor the
                            // index was parsed in full above.
                            let Some(se) = se.as_ref() else {
                                continue;
                            };
                            let out = match new_series(&mut self.strings, se.name, &se.labels, s) {
                                Ok(out) => out,
                                Err(e) => {
                                    error = Some(e);
                                    break;
                                }
                            };
                            if out.is_some() {
                                res.added += 1;
                            }
                            let out = match out {
                                Some((labels, hash)) => self.output_slot(labels, hash),
                                None => NO_OUTPUT,
                            };
                            self.new_entry(key, out)
                        }
                    }
                }
            };
            let pos = self.next.len() as u32;
            self.next.push(idx);
            let entry = &mut self.entries[idx as usize];
            debug_assert_eq!(entry.key, key, "prev names a live entry");
            entry.touched = iter;
            entry.pos = pos;
            if entry.out == NO_OUTPUT {
                continue;
            }
            let slot = entry.out as usize;
            res.post_relabel += 1;
            if limit > 0 && res.post_relabel > limit {
                // Keep counting (the synthetic series report the totals)
                // but keep nothing of this scrape.
                samples = Vec::new();
                continue;
            }
            let explicit_ts = line_ts.filter(|_| s.honor_timestamps);
            let o = &mut self.outputs[slot];
            if o.last_seen == iter {
                res.duplicates += 1;
                continue;
            }
            o.last_seen = iter;
            if explicit_ts.is_none() {
                // Only series without their own timestamp go stale, as in
                // Prometheus.
                o.current = iter;
            }
            samples.push(Sample {
                labels: o.labels.clone(),
                timestamp_ms: explicit_ts.unwrap_or(ts),
                value,
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
        std::mem::swap(&mut self.prev, &mut self.next);
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
        self.iter = self.iter.wrapping_add(1).max(1);
        self.fail_with(ts, error, AppendResult::default())
    }

    fn fail_with(&mut self, ts: i64, error: ScrapeError, mut res: AppendResult) -> AppendResult {
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
        self.iter = self.iter.wrapping_add(1).max(1);
        let mut samples = Vec::new();
        self.finish(ts, &mut samples, false);
        samples
    }

    /// The output slot of `labels`, shared with any other line text that
    /// produces the same labels.
    fn output_slot(&mut self, labels: Labels, hash: u64) -> u32 {
        let outputs = &self.outputs;
        // Equal hashes with different label sets (a 64-bit collision) get
        // slots of their own: the table compares the labels too.
        let found = self
            .out_index
            .find(hash, |&slot| outputs[slot as usize].labels == labels)
            .copied();
        if let Some(slot) = found {
            self.outputs[slot as usize].refs += 1;
            return slot;
        }
        let o = OutputSeries {
            labels,
            last_seen: 0,
            emitted: 0,
            current: 0,
            refs: 1,
        };
        let slot = match self.free_outputs.pop() {
            Some(slot) => {
                self.outputs[slot as usize] = o;
                slot
            }
            None => {
                self.outputs.push(o);
                (self.outputs.len() - 1) as u32
            }
        };
        let outputs = &self.outputs;
        self.out_index
            .insert_unique(hash, slot, |&s| outputs[s as usize].labels.stable_hash());
        slot
    }

    /// The entry slot of a line hash.
    fn find_entry(&self, key: u128) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(entry_hash(key), |&i| entries[i as usize].key == key)
            .copied()
    }

    /// The key of the line at `pos` of the previous scrape's order.
    fn prev_key(&self, pos: usize) -> Option<u128> {
        let idx = *self.prev.get(pos)?;
        self.entries.get(idx as usize).map(|e| e.key)
    }

    fn new_entry(&mut self, key: u128, out: u32) -> u32 {
        let e = CacheEntry {
            key,
            touched: 0,
            out,
            pos: u32::MAX,
        };
        let idx = match self.free_entries.pop() {
            Some(idx) => {
                self.entries[idx as usize] = e;
                idx
            }
            None => {
                self.entries.push(e);
                (self.entries.len() - 1) as u32
            }
        };
        let entries = &self.entries;
        self.index.insert_unique(entry_hash(key), idx, |&i| {
            entry_hash(entries[i as usize].key)
        });
        idx
    }

    /// Appends stale markers for series emitted by the last successful
    /// scrape and not by this one, and evicts old entries.
    fn finish(&mut self, ts: i64, samples: &mut Vec<Sample>, ok: bool) {
        let iter = self.iter;
        let last_ok = self.last_ok;
        for o in &mut self.outputs {
            if o.refs == 0 {
                continue;
            }
            let was_live = last_ok > 0 && o.emitted == last_ok;
            if ok && o.current == iter {
                o.emitted = iter;
            }
            // A failed scrape emitted nothing, whatever it parsed.
            if was_live && !(ok && o.last_seen == iter) {
                samples.push(Sample {
                    labels: o.labels.clone(),
                    timestamp_ms: ts,
                    value: stale_nan(),
                });
            }
        }
        let mut evicted = false;
        for idx in 0..self.entries.len() {
            let e = &mut self.entries[idx];
            if e.touched == 0 || iter.wrapping_sub(e.touched) <= EVICT_AFTER {
                continue;
            }
            let (key, out) = (e.key, e.out);
            e.touched = 0;
            evicted = true;
            if let Ok(found) = self
                .index
                .find_entry(entry_hash(key), |&i| i as usize == idx)
            {
                found.remove();
            }
            self.free_entries.push(idx as u32);
            if out != NO_OUTPUT {
                self.release_output(out);
            }
        }
        // A successful scrape's order names only entries it touched; an
        // older one may name evicted (and reused) slots.
        if evicted && !ok {
            self.prev.clear();
        }
        self.last_ok = if ok { iter } else { 0 };
        self.strings.sweep();
    }

    fn release_output(&mut self, slot: u32) {
        let o = &mut self.outputs[slot as usize];
        o.refs -= 1;
        if o.refs > 0 {
            return;
        }
        let hash = o.labels.stable_hash();
        o.labels = Labels::empty();
        if let Ok(found) = self.out_index.find_entry(hash, |&s| s == slot) {
            found.remove();
        }
        self.free_outputs.push(slot);
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
/// Shared copies of the strings a target's label sets use.
#[derive(Default)]
struct Interner {
    set: HashSet<Sym>,
    /// Size after the last sweep: the next comes when the set doubles.
    swept_at: usize,
}

impl Interner {
    fn get(&mut self, s: &str) -> Sym {
        if let Some(a) = self.set.get(s) {
            return a.clone();
        }
        let a = Sym::from(s);
        self.set.insert(a.clone());
        a
    }

    /// Forgets strings no label set holds any more, so a target that
    /// invents values forever (ids, timestamps) does not grow the set.
    fn sweep(&mut self) {
        if self.set.len() > MIN_INTERNED_SWEEP.max(2 * self.swept_at) {
            self.set.retain(|a| a.strong_count() > 1);
            self.swept_at = self.set.len();
        }
    }
}

fn new_series(
    strings: &mut Interner,
    name: &str,
    pairs: &LabelPairs<'_>,
    s: &AppendSettings,
) -> Result<Option<(Labels, u64)>, ScrapeError> {
    let mut b = LabelsBuilder::with_capacity(pairs.len() + s.target_labels.len() + 1);
    b.set(strings.get("__name__"), strings.get(name));
    for (n, v) in pairs.iter() {
        if !v.is_empty() {
            b.set(strings.get(n), strings.get(v));
        }
    }
    if s.honor_labels {
        for l in s.target_labels.iter() {
            if b.get(&l.name).is_none_or(str::is_empty) {
                b.set(l.name.clone(), l.value.clone());
            }
        }
    } else {
        let mut conflicts: Vec<(Sym, Sym)> = Vec::new();
        for l in s.target_labels.iter() {
            if let Some(v) = b.get(&l.name).filter(|v| !v.is_empty()) {
                conflicts.push((l.name.clone(), Sym::from(v)));
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

    #[test]
    fn interned_strings_are_shared_and_forgotten_once_unused() {
        let mut strings = Interner::default();
        let a = strings.get("GET");
        assert!(a.ptr_eq(&strings.get("GET")));
        // Values nobody holds any more are dropped at the next sweep past
        // the threshold; held ones stay shared.
        for i in 0..2 * MIN_INTERNED_SWEEP {
            strings.get(&format!("id-{i}"));
        }
        strings.sweep();
        assert_eq!(strings.set.len(), 1);
        assert!(a.ptr_eq(&strings.get("GET")));
    }
    use super::*;

    /// (metric name, value) of each sample, in order.
    fn named(r: &AppendResult) -> Vec<(String, f64)> {
        r.samples
            .iter()
            .map(|x| (x.labels.metric_name().unwrap().to_string(), x.value))
            .collect()
    }
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

    fn lines(names: &[String], value: usize) -> Vec<u8> {
        names
            .iter()
            .map(|n| format!("{n} {value}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn stale_names(r: &AppendResult) -> Vec<String> {
        r.samples
            .iter()
            .filter(|x| is_stale_nan(x.value))
            .map(|x| x.labels.metric_name().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn reordered_lines() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        c.append(b"a 1\nb 2\nc 3\n", Format::PrometheusText, 1000, &s);
        let r = c.append(b"a 1\nb 2\nc 3\n", Format::PrometheusText, 2000, &s);
        assert_eq!(c.last_misses(), 0, "steady state uses the previous order");
        assert_eq!(r.samples.len(), 3);
        let r = c.append(b"c 30\na 10\nb 20\n", Format::PrometheusText, 3000, &s);
        assert!(r.error.is_none());
        assert_eq!((r.added, r.duplicates), (0, 0));
        let got = named(&r);
        assert_eq!(
            got,
            [
                ("c".to_string(), 30.0),
                ("a".to_string(), 10.0),
                ("b".to_string(), 20.0)
            ]
        );
        // `c` and `a` moved (one lookup each); `b` follows `a` again.
        assert_eq!(c.last_misses(), 2);
        // The new order is the one predicted next time.
        c.append(b"c 30\na 10\nb 20\n", Format::PrometheusText, 4000, &s);
        assert_eq!(c.last_misses(), 0);
        // A full reversal still gives every line its own labels.
        let r = c.append(b"b 2\na 1\nc 3\n", Format::PrometheusText, 5000, &s);
        assert_eq!(
            names(&r),
            [
                "b{instance=\"h:1\", job=\"node\"}",
                "a{instance=\"h:1\", job=\"node\"}",
                "c{instance=\"h:1\", job=\"node\"}",
            ]
        );
    }

    #[test]
    fn inserted_line_in_the_middle() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        let mut series: Vec<String> = (0..100).map(|i| format!("m{{i=\"{i}\"}}")).collect();
        c.append(&lines(&series, 1), Format::PrometheusText, 1000, &s);
        series.insert(50, "new_one".to_string());
        let r = c.append(&lines(&series, 2), Format::PrometheusText, 2000, &s);
        assert!(r.error.is_none());
        assert_eq!((r.added, r.samples.len()), (1, 101));
        assert!(stale_names(&r).is_empty());
        assert_eq!(c.last_misses(), 1, "only the new line misses");
        assert_eq!(r.samples[50].labels.metric_name(), Some("new_one"));
        assert_eq!(r.samples[51].labels.get("i"), Some("50"));
        assert_eq!(r.samples[100].labels.get("i"), Some("99"));
        c.append(&lines(&series, 3), Format::PrometheusText, 3000, &s);
        assert_eq!(c.last_misses(), 0);
    }

    #[test]
    fn removed_line() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        let mut series: Vec<String> = (0..100).map(|i| format!("m_{i}")).collect();
        c.append(&lines(&series, 1), Format::PrometheusText, 1000, &s);
        series.remove(50);
        let r = c.append(&lines(&series, 2), Format::PrometheusText, 2000, &s);
        assert!(r.error.is_none());
        assert_eq!(c.last_misses(), 1, "the line after the gap re-synchronises");
        assert_eq!(stale_names(&r), ["m_50"]);
        assert_eq!(r.samples.len(), 99 + 1);
        assert_eq!(r.samples[50].labels.metric_name(), Some("m_51"));
        // Removing the first and the last line too.
        series.remove(0);
        series.pop();
        let r = c.append(&lines(&series, 3), Format::PrometheusText, 3000, &s);
        assert_eq!(c.last_misses(), 1);
        let mut stale = stale_names(&r);
        stale.sort();
        assert_eq!(stale, ["m_0", "m_99"]);
    }

    #[test]
    fn duplicate_output_series_from_different_texts() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        // An empty label value is no label: both lines are the series `a`.
        let r = c.append(b"a{x=\"\"} 1\na 2\nb 3\n", Format::PrometheusText, 1000, &s);
        assert!(r.error.is_none());
        assert_eq!((r.samples.len(), r.duplicates, r.added), (2, 1, 3));
        assert_eq!(r.samples[0].value, 1.0, "the first line wins");
        assert_eq!((c.len(), c.output_len()), (3, 2));
        // Still emitted (by the other text): not stale.
        let r = c.append(b"a 4\nb 5\n", Format::PrometheusText, 2000, &s);
        assert_eq!((r.samples.len(), r.duplicates), (2, 0));
        assert!(stale_names(&r).is_empty());
        let r = c.append(b"b 5\n", Format::PrometheusText, 3000, &s);
        assert_eq!(stale_names(&r), ["a"], "one marker per output series");

        // The same through metric relabeling: dropping a label merges two
        // lines into one output series.
        let s = settings(
            json!([{"regex": "x", "action": "labeldrop"}]),
            Limits::default(),
            false,
        );
        let mut c = SeriesCache::new();
        let r = c.append(
            b"m{x=\"1\"} 1\nm{x=\"2\"} 2\n",
            Format::PrometheusText,
            1000,
            &s,
        );
        assert_eq!((r.samples.len(), r.duplicates), (1, 1));
        let r = c.append(b"m{x=\"2\"} 2\n", Format::PrometheusText, 2000, &s);
        assert_eq!((r.samples.len(), r.duplicates), (1, 0));
        assert!(stale_names(&r).is_empty());
        // Evicting one of the texts keeps the output series of the other.
        for i in 0..=EVICT_AFTER {
            let r = c.append(
                b"m{x=\"2\"} 2\n",
                Format::PrometheusText,
                3000 + i as i64,
                &s,
            );
            assert_eq!(r.samples.len(), 1);
        }
        assert_eq!((c.len(), c.output_len()), (1, 1));
        let r = c.append(
            b"m{x=\"1\"} 1\nm{x=\"2\"} 2\n",
            Format::PrometheusText,
            9000,
            &s,
        );
        assert_eq!((r.samples.len(), r.duplicates, r.added), (1, 1, 1));
        assert_eq!(c.output_len(), 1);
    }

    #[test]
    fn churn_keeps_the_cache_bounded() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        let per_scrape = 100u64;
        for scrape in 0..50u64 {
            // Half the lines stay, half are new every scrape.
            let mut series: Vec<String> =
                (0..per_scrape / 2).map(|i| format!("stable_{i}")).collect();
            series.extend(
                (0..per_scrape / 2).map(|i| format!("churn{{gen=\"{scrape}\",i=\"{i}\"}}")),
            );
            let r = c.append(
                &lines(&series, scrape as usize),
                Format::PrometheusText,
                1000 * (scrape as i64 + 1),
                &s,
            );
            assert!(r.error.is_none());
            assert_eq!(r.samples.len() - stale_names(&r).len(), per_scrape as usize);
            if scrape > 0 {
                assert_eq!(stale_names(&r).len(), (per_scrape / 2) as usize);
                assert_eq!(r.added, (per_scrape / 2) as usize);
                assert_eq!(c.last_misses(), (per_scrape / 2) as usize);
            }
            let bound =
                (per_scrape / 2 * u64::from(EVICT_AFTER + 2)) as usize + per_scrape as usize / 2;
            assert!(c.len() <= bound, "{} entries after {scrape}", c.len());
            assert!(c.output_len() <= bound);
            let (entries, outputs) = c.slab_capacity();
            assert!(entries <= bound && outputs <= bound, "{entries} {outputs}");
        }
        // Once the churning series are gone, a quiet target shrinks back.
        let stable: Vec<String> = (0..per_scrape / 2).map(|i| format!("stable_{i}")).collect();
        for i in 0..=EVICT_AFTER + 1 {
            c.append(
                &lines(&stable, 1),
                Format::PrometheusText,
                100_000 + i as i64,
                &s,
            );
        }
        assert_eq!((c.len(), c.output_len()), (50, 50));
    }

    #[test]
    fn evicted_slots_are_not_predicted_after_failures() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        c.append(b"a 1\nb 2\n", Format::PrometheusText, 1000, &s);
        for i in 0..=EVICT_AFTER {
            c.fail(
                2000 + i as i64,
                ScrapeError::Timeout(std::time::Duration::from_secs(1)),
            );
        }
        assert!(c.is_empty());
        // `x` reuses a freed slot; `a` at position 1 must not be taken for
        // what the old order had there.
        let r = c.append(b"x 1\nb 2\na 3\n", Format::PrometheusText, 9000, &s);
        let got = named(&r);
        assert_eq!(
            got,
            [
                ("x".to_string(), 1.0),
                ("b".to_string(), 2.0),
                ("a".to_string(), 3.0)
            ]
        );
        assert_eq!(r.added, 3);
    }

    #[test]
    fn failed_scrape_keeps_the_last_good_order() {
        let s = settings(json!([]), Limits::default(), false);
        let mut c = SeriesCache::new();
        c.append(b"a 1\nb 2\nc 3\n", Format::PrometheusText, 1000, &s);
        // A parse error after a reordered prefix.
        let r = c.append(b"c 1\nb 2\n{ 3\n", Format::PrometheusText, 2000, &s);
        assert!(r.error.is_some());
        let r = c.append(b"a 1\nb 2\nc 3\n", Format::PrometheusText, 3000, &s);
        assert_eq!(c.last_misses(), 0);
        assert_eq!(r.samples.len(), 3);
        assert!(
            stale_names(&r).is_empty(),
            "the failure already marked them"
        );
    }
}
