//! The group store: what has been pushed, by grouping key, with the
//! Pushgateway's write semantics (PUT replaces the group, POST replaces the
//! families it names, DELETE drops the group; `push_time_seconds` and
//! `push_failure_time_seconds` per group) and its consistency rules, checked
//! against an index instead of re-gathering everything.
//!
//! Cost per push is independent of what is held: parsing, sanitising and
//! rendering a push happen outside the lock; under the lock only the pushed
//! families' names and series hashes are looked up in the index (family
//! name → types held, series identity → holders) and the group's map is
//! updated. `/metrics` is assembled from per-metric text cached at push time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use panoptes_model::{Labels, MetricMetadata, Sample, SampleBatch};
use parking_lot::Mutex;

use crate::grouping::GroupingKey;
use crate::proto::{
    metric_type, Gauge, LabelPair, Metric, MetricFamily, PersistedFamily, PersistedGroup,
    PersistedStore,
};
use crate::render::{self, SortKey};

pub const PUSH_TIME: &str = "push_time_seconds";
pub const PUSH_TIME_HELP: &str =
    "Last Unix time when changing this group in the Pushgateway succeeded.";
pub const PUSH_FAILURE_TIME: &str = "push_failure_time_seconds";
pub const PUSH_FAILURE_TIME_HELP: &str =
    "Last Unix time when changing this group in the Pushgateway failed.";

/// Size limits (0 = unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Limits {
    /// Series one group may hold.
    pub max_group_series: usize,
    /// Series all groups together may hold.
    pub max_total_series: usize,
}

/// Why a push was refused. The store is unchanged except for the group's
/// `push_failure_time_seconds`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PushError {
    #[error("pushed metrics are invalid or inconsistent with existing metrics: pushed metrics must not have timestamps")]
    Timestamps,
    #[error("pushed metrics are invalid or inconsistent with existing metrics: {0}")]
    Inconsistent(String),
    #[error("push refused: the group would hold {would_hold} series, over the per-group limit max_group_series={limit}")]
    GroupLimit { would_hold: usize, limit: usize },
    #[error("push refused: all groups would hold {would_hold} series, over the limit max_total_series={limit}")]
    TotalLimit { would_hold: usize, limit: usize },
}

/// One family of one group, with what is derived from it: the series
/// identities (at push time, for the checks) and, computed on first use and
/// then cached, its text lines and model samples. Pushes that are replaced
/// before anyone reads `/metrics` or the next emission never pay for those.
#[derive(Debug)]
pub struct HeldFamily {
    /// Sanitised: grouping labels set, `instance` present, labels sorted.
    pub family: MetricFamily,
    pub pushed_at_ms: i64,
    /// Identity (name + labels) of each metric, for the duplicate check.
    pub hashes: Vec<u64>,
    series: usize,
    lines: OnceLock<Vec<(SortKey, String)>>,
    samples: OnceLock<Vec<(Labels, f64)>>,
}

impl HeldFamily {
    fn new(family: MetricFamily, pushed_at_ms: i64) -> HeldFamily {
        let t = family.metric_type();
        let hashes = family
            .metric
            .iter()
            .map(|m| series_hash(family.name(), &m.label))
            .collect();
        let series = family
            .metric
            .iter()
            .map(|m| render::series_count(t, m))
            .sum();
        HeldFamily {
            family,
            pushed_at_ms,
            hashes,
            series,
            lines: OnceLock::new(),
            samples: OnceLock::new(),
        }
    }

    /// Text lines per metric, with the key Go's gatherer sorts them by.
    pub fn lines(&self) -> &[(SortKey, String)] {
        self.lines.get_or_init(|| {
            let (name, t) = (self.family.name(), self.family.metric_type());
            self.family
                .metric
                .iter()
                .map(|m| (SortKey::of(m), render::metric_text(name, t, m)))
                .collect()
        })
    }

    /// Model samples (labels with the metric name, values) of every series.
    pub fn samples(&self) -> &[(Labels, f64)] {
        self.samples.get_or_init(|| {
            let (name, t) = (self.family.name(), self.family.metric_type());
            let mut out = Vec::with_capacity(self.series);
            for m in &self.family.metric {
                render::metric_samples(name, t, m, &mut out);
            }
            out
        })
    }

    fn series(&self) -> usize {
        self.series
    }

    fn is_empty(&self) -> bool {
        self.family.metric.is_empty()
    }

    fn type_(&self) -> i32 {
        self.family.metric_type()
    }
}

fn series_hash(name: &str, labels: &[LabelPair]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(name.as_bytes());
    h.update(&[0xff]);
    for l in labels {
        h.update(l.name().as_bytes());
        h.update(&[0xff]);
        h.update(l.value().as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// One group: a grouping key and its families.
#[derive(Debug)]
struct Group {
    key: GroupingKey,
    families: BTreeMap<String, Arc<HeldFamily>>,
    push_time_ms: i64,
    failure_time_ms: i64,
    /// Last successful push (or creation), for `expire_after`.
    last_push_ms: i64,
    series: usize,
}

impl Group {
    fn new(key: GroupingKey, now_ms: i64) -> Group {
        Group {
            key,
            families: BTreeMap::new(),
            push_time_ms: 0,
            failure_time_ms: 0,
            last_push_ms: now_ms,
            series: 0,
        }
    }
}

/// Family names → types held (with how many groups hold each), and series
/// identities → holders.
#[derive(Default, Debug)]
struct Index {
    names: HashMap<String, Vec<(i32, u32)>>,
    series: HashMap<u64, u32>,
}

impl Index {
    fn add(&mut self, f: &HeldFamily) {
        if f.is_empty() {
            return;
        }
        let types = self.names.entry(f.family.name().to_string()).or_default();
        match types.iter_mut().find(|(t, _)| *t == f.type_()) {
            Some((_, n)) => *n += 1,
            None => types.push((f.type_(), 1)),
        }
        for h in &f.hashes {
            *self.series.entry(*h).or_default() += 1;
        }
    }

    fn remove(&mut self, f: &HeldFamily) {
        if f.is_empty() {
            return;
        }
        if let Some(types) = self.names.get_mut(f.family.name()) {
            if let Some(pos) = types.iter().position(|(t, _)| *t == f.type_()) {
                types[pos].1 -= 1;
                if types[pos].1 == 0 {
                    types.swap_remove(pos);
                }
            }
            if types.is_empty() {
                self.names.remove(f.family.name());
            }
        }
        for h in &f.hashes {
            if let Some(n) = self.series.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    self.series.remove(h);
                }
            }
        }
    }
}

#[derive(Default, Debug)]
struct Inner {
    groups: HashMap<String, Group>,
    index: Index,
    total_series: usize,
    /// Bumped on every change, so persistence knows when to write.
    generation: u64,
}

impl Inner {
    fn remove_group(&mut self, id: &str) -> Option<Group> {
        let g = self.groups.remove(id)?;
        for f in g.families.values() {
            self.index.remove(f);
        }
        self.total_series -= g.series;
        self.generation += 1;
        Some(g)
    }

    /// Replaces (or inserts, or with `None` removes) one family of a group,
    /// keeping the index and series counts right.
    /// Returns the replaced family, so the caller can drop it after
    /// releasing the lock.
    fn set_family(
        &mut self,
        id: &str,
        name: &str,
        new: Option<Arc<HeldFamily>>,
    ) -> Option<Arc<HeldFamily>> {
        let g = self.groups.get_mut(id)?;
        let old = g.families.remove(name);
        if let Some(old) = &old {
            self.index.remove(old);
            g.series -= old.series();
            self.total_series -= old.series();
        }
        if let Some(f) = new {
            self.index.add(&f);
            g.series += f.series();
            self.total_series += f.series();
            g.families.insert(name.to_string(), f);
        }
        old
    }
}

/// The store of pushed groups. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct Store {
    inner: Mutex<Inner>,
    limits: Mutex<Limits>,
}

/// Sets the grouping labels on every metric (overriding pushed values), adds
/// an empty `instance` if missing, and sorts the labels, as the Pushgateway
/// sanitises pushes.
pub fn sanitize(f: &mut MetricFamily, key: &GroupingKey) {
    for m in &mut f.metric {
        for (n, v) in &key.0 {
            match m.label.iter_mut().find(|l| l.name() == n) {
                Some(l) => l.value = Some(v.clone()),
                None => m.label.push(LabelPair::new(n, v)),
            }
        }
        if !m.label.iter().any(|l| l.name() == "instance") {
            m.label.push(LabelPair::new("instance", ""));
        }
        m.label.sort_by(|a, b| a.name().cmp(b.name()));
    }
}

fn timestamp_family(name: &str, help: &str, key: &GroupingKey, t_ms: i64) -> MetricFamily {
    let mut f = MetricFamily {
        name: Some(name.to_string()),
        help: Some(help.to_string()),
        r#type: Some(metric_type::GAUGE),
        metric: vec![Metric {
            gauge: Some(Gauge {
                value: Some(t_ms as f64 / 1000.0),
            }),
            ..Default::default()
        }],
    };
    sanitize(&mut f, key);
    f
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.starts_with("__")
}

/// The checks Go's gatherer applies to each metric on its own.
fn check_metric(name: &str, t: i32, m: &Metric) -> Result<(), String> {
    let kind_ok = match t {
        metric_type::GAUGE => m.gauge.is_some(),
        metric_type::COUNTER => m.counter.is_some(),
        metric_type::SUMMARY => m.summary.is_some(),
        metric_type::UNTYPED => m.untyped.is_some(),
        metric_type::HISTOGRAM | metric_type::GAUGE_HISTOGRAM => m.histogram.is_some(),
        _ => false,
    };
    if !kind_ok {
        return Err(format!(
            "collected metric {name:?} {{ {}}} is not a {}",
            m.debug_text(),
            metric_type::name(t)
        ));
    }
    let mut prev = "";
    for l in &m.label {
        let ln = l.name();
        if ln == prev {
            return Err(format!(
                "collected metric {name:?} {{ {}}} has two or more labels with the same name: {ln}",
                m.debug_text()
            ));
        }
        if !valid_label_name(ln) {
            return Err(format!(
                "collected metric {name:?} {{ {}}} has a label with an invalid name: {ln}",
                m.debug_text()
            ));
        }
        if m.summary.is_some() && ln == "quantile" {
            return Err(format!(
                "collected metric {name:?} {{ {}}} must not have an explicit \"quantile\" label",
                m.debug_text()
            ));
        }
        prev = ln;
    }
    Ok(())
}

/// A push prepared outside the lock.
struct Prepared {
    families: Vec<Arc<HeldFamily>>,
}

fn prepare(
    key: &GroupingKey,
    families: Vec<MetricFamily>,
    now_ms: i64,
) -> Result<Prepared, PushError> {
    if families
        .iter()
        .any(|f| f.metric.iter().any(|m| m.timestamp_ms.is_some()))
    {
        return Err(PushError::Timestamps);
    }
    let mut out = Vec::with_capacity(families.len() + 1);
    let mut seen = HashSet::new();
    for mut f in families {
        // The generated push timestamps replace anything pushed under
        // their names.
        if f.name() == PUSH_TIME || f.name() == PUSH_FAILURE_TIME {
            continue;
        }
        if !valid_metric_name(f.name()) {
            return Err(PushError::Inconsistent(format!(
                "invalid metric name {:?}",
                f.name()
            )));
        }
        sanitize(&mut f, key);
        let t = f.metric_type();
        for m in &f.metric {
            check_metric(f.name(), t, m)?;
        }
        let held = HeldFamily::new(f, now_ms);
        for (h, m) in held.hashes.iter().zip(&held.family.metric) {
            if !seen.insert(*h) {
                return Err(PushError::Inconsistent(format!(
                    "collected metric {:?} {{ {}}} was collected before with the same name and label values",
                    held.family.name(),
                    m.debug_text()
                )));
            }
        }
        out.push(Arc::new(held));
    }
    Ok(Prepared { families: out })
}

impl From<String> for PushError {
    fn from(s: String) -> Self {
        PushError::Inconsistent(s)
    }
}

fn suffix_collision(name: &str, t: i32, held_type: &dyn Fn(&str) -> Option<i32>) -> Option<String> {
    for suffix in ["_count", "_sum", "_bucket"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match held_type(base) {
                Some(metric_type::SUMMARY) if suffix != "_bucket" => {
                    return Some(format!(
                        "collected metric named {name:?} collides with previously collected summary named {base:?}"
                    ))
                }
                Some(metric_type::HISTOGRAM) => {
                    return Some(format!(
                        "collected metric named {name:?} collides with previously collected histogram named {base:?}"
                    ))
                }
                _ => {}
            }
        }
    }
    if t == metric_type::SUMMARY || t == metric_type::HISTOGRAM {
        let mut suffixes = vec!["_count", "_sum"];
        if t == metric_type::HISTOGRAM {
            suffixes.push("_bucket");
        }
        for s in suffixes {
            let other = format!("{name}{s}");
            if held_type(&other).is_some() {
                return Some(format!(
                    "collected histogram or summary named {name:?} collides with previously collected metric named {other:?}"
                ));
            }
        }
    }
    None
}

/// A group as `/api/v1/metrics` and persistence see it.
pub struct GroupView {
    pub key: GroupingKey,
    pub families: Vec<Arc<HeldFamily>>,
    pub last_push_successful: bool,
    pub last_push_ms: i64,
}

impl Store {
    pub fn new(limits: Limits) -> Store {
        Store {
            inner: Mutex::new(Inner::default()),
            limits: Mutex::new(limits),
        }
    }

    pub fn set_limits(&self, limits: Limits) {
        *self.limits.lock() = limits;
    }

    /// Applies a push (PUT with `replace`, POST without) at `now_ms`.
    pub fn push(
        &self,
        key: &GroupingKey,
        families: Vec<MetricFamily>,
        replace: bool,
        now_ms: i64,
    ) -> Result<(), PushError> {
        let limits = *self.limits.lock();
        let prepared = match prepare(key, families, now_ms) {
            Ok(p) => p,
            Err(e) => {
                self.record_failure(key, now_ms);
                return Err(e);
            }
        };
        let push_time = Arc::new(HeldFamily::new(
            timestamp_family(PUSH_TIME, PUSH_TIME_HELP, key, now_ms),
            now_ms,
        ));
        let id = key.id();

        let mut inner = self.inner.lock();
        let result = Self::check(&inner, &id, &prepared, &push_time, replace, limits);
        if let Err(e) = result {
            Self::failure_locked(&mut inner, key, &id, now_ms);
            return Err(e);
        }
        if !inner.groups.contains_key(&id) {
            inner
                .groups
                .insert(id.clone(), Group::new(key.clone(), now_ms));
        }
        // Replaced families are freed after the lock is released.
        let mut garbage = Vec::new();
        if replace {
            let names: Vec<String> = inner.groups[&id]
                .families
                .keys()
                .filter(|n| *n != PUSH_FAILURE_TIME)
                .cloned()
                .collect();
            for n in names {
                garbage.extend(inner.set_family(&id, &n, None));
            }
        }
        for f in prepared.families {
            let name = f.family.name().to_string();
            garbage.extend(inner.set_family(&id, &name, Some(f)));
        }
        garbage.extend(inner.set_family(&id, PUSH_TIME, Some(push_time)));
        let has_failure = inner.groups[&id].families.contains_key(PUSH_FAILURE_TIME);
        if !has_failure {
            let zero = HeldFamily::new(
                timestamp_family(PUSH_FAILURE_TIME, PUSH_FAILURE_TIME_HELP, key, 0),
                now_ms,
            );
            let _none = inner.set_family(&id, PUSH_FAILURE_TIME, Some(Arc::new(zero)));
        }
        if let Some(g) = inner.groups.get_mut(&id) {
            g.push_time_ms = now_ms;
            g.last_push_ms = now_ms;
        }
        inner.generation += 1;
        drop(inner);
        drop(garbage);
        Ok(())
    }

    /// The consistency and limit checks of a prepared push, against the
    /// state of every other group (through the index) and what this group
    /// keeps.
    fn check(
        inner: &Inner,
        id: &str,
        p: &Prepared,
        push_time: &HeldFamily,
        replace: bool,
        limits: Limits,
    ) -> Result<(), PushError> {
        let group = inner.groups.get(id);
        let pushed: HashMap<&str, &HeldFamily> = p
            .families
            .iter()
            .map(|f| (f.family.name(), f.as_ref()))
            .chain(std::iter::once((PUSH_TIME, push_time)))
            .collect();
        // What this group holds now and will keep after the push.
        let own = |name: &str| group.and_then(|g| g.families.get(name));
        let kept = |name: &str| -> Option<&Arc<HeldFamily>> {
            let f = own(name)?;
            if pushed.contains_key(name) || (replace && name != PUSH_FAILURE_TIME) {
                None
            } else {
                Some(f)
            }
        };
        // Types other groups hold under `name` (this group's contribution
        // taken out).
        let others_types = |name: &str| -> Vec<i32> {
            let Some(types) = inner.index.names.get(name) else {
                return Vec::new();
            };
            let mine = own(name).filter(|f| !f.is_empty()).map(|f| f.type_());
            types
                .iter()
                .filter_map(|(t, n)| {
                    let n = if Some(*t) == mine { n - 1 } else { *n };
                    (n > 0).then_some(*t)
                })
                .collect()
        };
        let held_type = |name: &str| -> Option<i32> {
            if let Some(f) = pushed.get(name) {
                if !f.is_empty() {
                    return Some(f.type_());
                }
            }
            if let Some(f) = kept(name) {
                if !f.is_empty() {
                    return Some(f.type_());
                }
            }
            others_types(name).first().copied()
        };

        let mut new_series = 0usize;
        for f in p.families.iter().map(|f| f.as_ref()).chain([push_time]) {
            new_series += f.series();
            if f.is_empty() {
                continue;
            }
            let name = f.family.name();
            if let Some(other) = others_types(name).into_iter().find(|t| *t != f.type_()) {
                return Err(PushError::Inconsistent(format!(
                    "collected metric {name:?} {{ {}}} is not a {}",
                    f.family.metric[0].debug_text(),
                    metric_type::name(other)
                )));
            }
            if let Some(msg) = suffix_collision(name, f.type_(), &held_type) {
                return Err(PushError::Inconsistent(msg));
            }
            let own_hashes: HashSet<u64> = own(name)
                .map(|o| o.hashes.iter().copied().collect())
                .unwrap_or_default();
            for (h, m) in f.hashes.iter().zip(&f.family.metric) {
                let held = inner.index.series.get(h).copied().unwrap_or(0);
                let held_elsewhere = held - u32::from(own_hashes.contains(h));
                if held_elsewhere > 0 {
                    return Err(PushError::Inconsistent(format!(
                        "collected metric {name:?} {{ {}}} was collected before with the same name and label values",
                        m.debug_text()
                    )));
                }
            }
        }

        // Series after the push: what is kept plus what is pushed (the
        // failure gauge is kept or created, one series either way).
        let kept_series: usize = group
            .map(|g| {
                g.families
                    .iter()
                    .filter(|(n, _)| kept(n).is_some() || n.as_str() == PUSH_FAILURE_TIME)
                    .map(|(_, f)| f.series())
                    .sum()
            })
            .unwrap_or(0);
        let failure_series = usize::from(own(PUSH_FAILURE_TIME).is_none());
        let group_after = kept_series + new_series + failure_series;
        if limits.max_group_series > 0 && group_after > limits.max_group_series {
            return Err(PushError::GroupLimit {
                would_hold: group_after,
                limit: limits.max_group_series,
            });
        }
        let group_now = group.map_or(0, |g| g.series);
        let total_after = inner.total_series - group_now + group_after;
        if limits.max_total_series > 0
            && total_after > limits.max_total_series
            && group_after > group_now
        {
            return Err(PushError::TotalLimit {
                would_hold: total_after,
                limit: limits.max_total_series,
            });
        }
        Ok(())
    }

    /// Records a failed change of a group (creating it if needed), as the
    /// Pushgateway does.
    pub fn record_failure(&self, key: &GroupingKey, now_ms: i64) {
        let id = key.id();
        let mut inner = self.inner.lock();
        Self::failure_locked(&mut inner, key, &id, now_ms);
    }

    fn failure_locked(inner: &mut Inner, key: &GroupingKey, id: &str, now_ms: i64) {
        if !inner.groups.contains_key(id) {
            inner
                .groups
                .insert(id.to_string(), Group::new(key.clone(), now_ms));
        }
        let failure = HeldFamily::new(
            timestamp_family(PUSH_FAILURE_TIME, PUSH_FAILURE_TIME_HELP, key, now_ms),
            now_ms,
        );
        let _old = inner.set_family(id, PUSH_FAILURE_TIME, Some(Arc::new(failure)));
        if !inner.groups[id].families.contains_key(PUSH_TIME) {
            let zero = HeldFamily::new(timestamp_family(PUSH_TIME, PUSH_TIME_HELP, key, 0), now_ms);
            let _none = inner.set_family(id, PUSH_TIME, Some(Arc::new(zero)));
        }
        if let Some(g) = inner.groups.get_mut(id) {
            g.failure_time_ms = now_ms;
        }
        inner.generation += 1;
    }

    /// Deletes a group (a no-op if it does not exist).
    pub fn delete(&self, key: &GroupingKey) -> bool {
        self.inner.lock().remove_group(&key.id()).is_some()
    }

    /// Deletes every group.
    pub fn wipe(&self) -> usize {
        let mut inner = self.inner.lock();
        let n = inner.groups.len();
        inner.groups.clear();
        inner.index = Index::default();
        inner.total_series = 0;
        inner.generation += 1;
        n
    }

    /// Drops the groups whose last successful push is older than
    /// `cutoff_ms`; returns their keys.
    pub fn expire(&self, cutoff_ms: i64) -> Vec<GroupingKey> {
        let mut inner = self.inner.lock();
        let old: Vec<String> = inner
            .groups
            .iter()
            .filter(|(_, g)| g.last_push_ms < cutoff_ms)
            .map(|(id, _)| id.clone())
            .collect();
        old.iter()
            .filter_map(|id| inner.remove_group(id).map(|g| g.key))
            .collect()
    }

    /// Groups and series held.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.groups.len(), inner.total_series)
    }

    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Every group with its families (cheap: `Arc` clones), sorted by key.
    pub fn groups(&self) -> Vec<GroupView> {
        let inner = self.inner.lock();
        let mut out: Vec<GroupView> = inner
            .groups
            .values()
            .map(|g| GroupView {
                key: g.key.clone(),
                families: g.families.values().cloned().collect(),
                last_push_successful: g.push_time_ms >= g.failure_time_ms,
                last_push_ms: g.last_push_ms,
            })
            .collect();
        drop(inner);
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Everything held as text format 0.0.4, as the Pushgateway's
    /// `/metrics` shows it (without its own process metrics): families
    /// sorted by name, metrics in Go's order, empty families left out.
    pub fn render_text(&self) -> String {
        let groups = self.groups();
        let mut by_name: BTreeMap<&str, Vec<&Arc<HeldFamily>>> = BTreeMap::new();
        for g in &groups {
            for f in &g.families {
                if !f.is_empty() {
                    by_name.entry(f.family.name()).or_default().push(f);
                }
            }
        }
        let mut out = String::new();
        for (name, fams) in by_name {
            let first = fams[0];
            // Go takes the help of whichever group it meets first; taking
            // the first group that has one is one of its possible outputs,
            // and a stable one.
            let help = fams.iter().find_map(|f| f.family.help.as_deref());
            render::family_header(&mut out, name, help, first.type_());
            let mut lines: Vec<&(SortKey, String)> =
                fams.iter().flat_map(|f| f.lines().iter()).collect();
            lines.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, text) in lines {
                out.push_str(text);
            }
        }
        out
    }

    /// The whole `/api/v1/metrics` response: one object per group, keys in
    /// the order Go's JSON encoder writes them (maps sorted, the family
    /// struct's fields in declaration order).
    pub fn api_metrics_json(&self) -> String {
        let groups = self.groups();
        let mut out = String::from("{\"status\":\"success\",\"data\":[");
        for (gi, g) in groups.iter().enumerate() {
            if gi > 0 {
                out.push(',');
            }
            // The group is a map in Go: its keys (family names, `labels`,
            // `last_push_successful`) come out sorted.
            let mut keys: Vec<(&str, Option<&HeldFamily>)> = g
                .families
                .iter()
                .map(|f| (f.family.name(), Some(f.as_ref())))
                .collect();
            keys.push(("labels", None));
            keys.push(("last_push_successful", None));
            keys.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (ki, (k, f)) in keys.iter().enumerate() {
                if ki > 0 {
                    out.push(',');
                }
                render::json_str(&mut out, k);
                out.push(':');
                match (*k, f) {
                    (_, Some(f)) => {
                        let t = f.type_();
                        out.push_str("{\"time_stamp\":");
                        render::json_str(&mut out, &rfc3339_ms(f.pushed_at_ms));
                        out.push_str(",\"type\":");
                        render::json_str(&mut out, metric_type::name(t));
                        if let Some(h) = f.family.help.as_deref().filter(|h| !h.is_empty()) {
                            out.push_str(",\"help\":");
                            render::json_str(&mut out, h);
                        }
                        out.push_str(",\"metrics\":[");
                        for (mi, m) in f.family.metric.iter().enumerate() {
                            if mi > 0 {
                                out.push(',');
                            }
                            render::write_metric_json(&mut out, t, m);
                        }
                        out.push_str("]}");
                    }
                    ("labels", None) => render::json_string_map(
                        &mut out,
                        g.key.0.iter().map(|(n, v)| (n.as_str(), v.clone())),
                    ),
                    _ => out.push_str(if g.last_push_successful {
                        "true"
                    } else {
                        "false"
                    }),
                }
            }
            out.push('}');
        }
        out.push_str("]}");
        out
    }

    /// The current content of every group as one batch stamped `now_ms`.
    pub fn batch(&self, source: &str, now_ms: i64) -> SampleBatch {
        let groups = self.groups();
        let mut batch = SampleBatch::new(source);
        let mut meta: BTreeMap<&str, MetricMetadata> = BTreeMap::new();
        for g in &groups {
            for f in &g.families {
                if f.is_empty() {
                    continue;
                }
                meta.entry(f.family.name())
                    .or_insert_with(|| render::metadata(&f.family));
                batch
                    .samples
                    .extend(f.samples().iter().map(|(l, v)| Sample {
                        labels: l.clone(),
                        timestamp_ms: now_ms,
                        value: *v,
                    }));
            }
        }
        batch.metadata = meta.into_values().collect();
        batch
    }

    /// The persistence form of the store.
    pub fn to_persisted(&self) -> PersistedStore {
        let groups = self.groups();
        PersistedStore {
            version: 1,
            groups: groups
                .into_iter()
                .map(|g| PersistedGroup {
                    labels: g.key.0.iter().map(|(n, v)| LabelPair::new(n, v)).collect(),
                    families: g
                        .families
                        .iter()
                        .map(|f| PersistedFamily {
                            family: Some(f.family.clone()),
                            pushed_at_ms: f.pushed_at_ms,
                        })
                        .collect(),
                    last_activity_ms: g.last_push_ms,
                })
                .collect(),
        }
    }

    /// Replaces the content with a persisted store.
    pub fn restore(&self, p: PersistedStore) {
        let mut inner = Inner::default();
        for pg in p.groups {
            let key = GroupingKey(
                pg.labels
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect(),
            );
            let id = key.id();
            let mut group = Group::new(key, pg.last_activity_ms);
            for pf in pg.families {
                let Some(f) = pf.family else { continue };
                let held = HeldFamily::new(f, pf.pushed_at_ms);
                let value_ms = held
                    .family
                    .metric
                    .first()
                    .map(|m| (m.simple_value() * 1000.0) as i64)
                    .unwrap_or(0);
                match held.family.name() {
                    PUSH_TIME => group.push_time_ms = value_ms,
                    PUSH_FAILURE_TIME => group.failure_time_ms = value_ms,
                    _ => {}
                }
                inner.index.add(&held);
                group.series += held.series();
                inner.total_series += held.series();
                group
                    .families
                    .insert(held.family.name().to_string(), Arc::new(held));
            }
            if let Some(old) = inner.groups.insert(id, group) {
                // A duplicate key in the file: keep the later one.
                for f in old.families.values() {
                    inner.index.remove(f);
                }
                inner.total_series -= old.series;
            }
        }
        let mut cur = self.inner.lock();
        inner.generation = cur.generation + 1;
        *cur = inner;
    }
}

/// Formats ms since the epoch as RFC 3339 in UTC with trailing zeros of the
/// fraction dropped, as Go's `time.Time` marshals to JSON.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if frac != 0 {
        let f = format!("{frac:03}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grouping::parse_key;
    use crate::text::parse_text;

    fn key(path: &str) -> GroupingKey {
        parse_key(false, path).unwrap()
    }

    fn push(s: &Store, path: &str, body: &str, replace: bool, now: i64) -> Result<(), PushError> {
        s.push(
            &key(path),
            parse_text(body.as_bytes()).unwrap(),
            replace,
            now,
        )
    }

    /// The index and series counts rebuilt from the groups.
    fn check_index(s: &Store) {
        let inner = s.inner.lock();
        let mut fresh = Index::default();
        let mut total = 0;
        for g in inner.groups.values() {
            let mut group_series = 0;
            for f in g.families.values() {
                fresh.add(f);
                group_series += f.series();
            }
            assert_eq!(g.series, group_series, "series of {:?}", g.key);
            total += group_series;
        }
        assert_eq!(inner.total_series, total);
        let norm = |i: &Index| {
            let mut names: Vec<(String, Vec<(i32, u32)>)> = i
                .names
                .iter()
                .map(|(n, t)| {
                    let mut t = t.clone();
                    t.sort();
                    (n.clone(), t)
                })
                .collect();
            names.sort();
            let mut series: Vec<(u64, u32)> = i.series.iter().map(|(h, n)| (*h, *n)).collect();
            series.sort();
            (names, series)
        };
        assert_eq!(norm(&inner.index), norm(&fresh));
    }

    #[test]
    fn index_stays_exact_through_every_kind_of_change() {
        let s = Store::new(Limits {
            max_group_series: 12,
            max_total_series: 60,
        });
        let bodies = [
            "a 1\nb 2\n",
            "# TYPE a counter\na 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            "h_count 3\n",
            "x 1 1000\n",
            "dup 1\ndup 2\n",
            "c{k=\"1\"} 1\nc{k=\"2\"} 2\nc{k=\"3\"} 3\n",
            "m{i=\"0\"} 0\nm{i=\"1\"} 1\nm{i=\"2\"} 2\nm{i=\"3\"} 3\nm{i=\"4\"} 4\nm{i=\"5\"} 5\nm{i=\"6\"} 6\nm{i=\"7\"} 7\nm{i=\"8\"} 8\nm{i=\"9\"} 9\n",
            "",
        ];
        let paths = ["/j1", "/j2", "/j1/instance/a", "/j3/x/1", "/j3"];
        // A fixed pseudo-random walk over operations.
        let mut r: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..2000i64 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let path = paths[(r % paths.len() as u64) as usize];
            let body = bodies[((r >> 8) % bodies.len() as u64) as usize];
            match (r >> 16) % 10 {
                0 => {
                    s.delete(&key(path));
                }
                1 if step % 97 == 0 => {
                    s.wipe();
                }
                2 => {
                    s.expire(step - 50);
                }
                n => {
                    let _ = push(&s, path, body, n % 2 == 0, step);
                }
            }
            check_index(&s);
            let (_, total) = s.size();
            assert!(total <= 60 + 2 * paths.len(), "total {total}");
        }
    }

    #[test]
    fn concurrent_pushes_never_leave_mixed_types() {
        let s = Arc::new(Store::new(Limits::default()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        let ty = if (t + i) % 2 == 0 { "gauge" } else { "counter" };
                        let body = format!("# TYPE shared {ty}\nshared{{t=\"{t}\"}} {i}\n");
                        let _ = push(&s, &format!("/job{}", i % 7), &body, true, i as i64);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        check_index(&s);
        let inner = s.inner.lock();
        let types = inner.index.names.get("shared").cloned().unwrap_or_default();
        assert!(types.len() <= 1, "mixed types held: {types:?}");
    }

    #[test]
    fn render_merges_groups_in_go_order() {
        let s = Store::new(Limits::default());
        push(
            &s,
            "/b",
            "# HELP m Help.\n# TYPE m gauge\nm 2\n",
            true,
            1000,
        )
        .unwrap();
        push(&s, "/a/instance/x", "m 1\n", true, 1000).unwrap_err();
        push(
            &s,
            "/a/instance/x",
            "# TYPE m gauge\nm{z=\"1\"} 1\n",
            true,
            1000,
        )
        .unwrap();
        let text = s.render_text();
        let m: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" m") || l.starts_with("m{"))
            .collect();
        assert_eq!(
            m,
            [
                "# HELP m Help.",
                "# TYPE m gauge",
                "m{instance=\"\",job=\"b\"} 2",
                "m{instance=\"x\",job=\"a\",z=\"1\"} 1",
            ]
        );
        assert!(
            text.contains("push_time_seconds{instance=\"\",job=\"b\"} 1\n"),
            "{text}"
        );
        assert_eq!(rfc3339_ms(1_795_458_913_559), "2026-11-23T18:35:13.559Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
    }
}
