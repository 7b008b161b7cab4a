//! Label sets: the identity of a series.
//!
//! A `Labels` value is always sorted by label name with unique names, so two
//! equal sets compare, hash and print identically whatever order they were
//! built in. Empty label values are dropped on construction, as in
//! Prometheus, where a label with an empty value is the same as no label.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use triomphe::ThinArc;

/// The reserved label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// A label name or value: an immutable, reference-counted string behind one
/// thin pointer (8 bytes, where `Arc<str>` takes 16), so that a label is 16
/// bytes. Label sets are the largest per-series cost outside the chunks,
/// and their strings are shared (interned by the scrape cache and the head),
/// so the pointers are what a series pays for. Compares, orders and hashes
/// as the string does.
#[derive(Clone)]
pub struct Sym(ThinArc<(), u8>);

impl Sym {
    pub fn new(s: &str) -> Sym {
        Sym(ThinArc::from_header_and_slice((), s.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor copies the bytes of a `&str`, and the
        // bytes are immutable afterwards, so they are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0.slice) }
    }

    /// Whether both are clones of one allocation.
    pub fn ptr_eq(&self, other: &Sym) -> bool {
        self.0.as_ptr() == other.0.as_ptr()
    }

    /// Number of clones alive (for interners that forget unused strings).
    pub fn strong_count(&self) -> usize {
        ThinArc::strong_count(&self.0)
    }
}

impl Deref for Sym {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Sym {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Sym {
    fn eq(&self, other: &Sym) -> bool {
        self.ptr_eq(other) || self.as_str() == other.as_str()
    }
}

impl Eq for Sym {}

impl PartialEq<str> for Sym {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Sym {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Sym> for str {
    fn eq(&self, other: &Sym) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Sym> for &str {
    fn eq(&self, other: &Sym) -> bool {
        *self == other.as_str()
    }
}

impl PartialOrd for Sym {
    fn partial_cmp(&self, other: &Sym) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Sym {
    fn cmp(&self, other: &Sym) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Sym {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `Borrow<str>` lookups find it.
        self.as_str().hash(state)
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Default for Sym {
    fn default() -> Sym {
        Sym::new("")
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        Sym::new(s)
    }
}

impl From<&String> for Sym {
    fn from(s: &String) -> Sym {
        Sym::new(s)
    }
}

impl From<String> for Sym {
    fn from(s: String) -> Sym {
        Sym::new(&s)
    }
}

impl From<Box<str>> for Sym {
    fn from(s: Box<str>) -> Sym {
        Sym::new(&s)
    }
}

impl From<Arc<str>> for Sym {
    fn from(s: Arc<str>) -> Sym {
        Sym::new(&s)
    }
}

impl From<&Arc<str>> for Sym {
    fn from(s: &Arc<str>) -> Sym {
        Sym::new(s)
    }
}

impl From<Cow<'_, str>> for Sym {
    fn from(s: Cow<'_, str>) -> Sym {
        Sym::new(&s)
    }
}

impl From<&Sym> for Sym {
    fn from(s: &Sym) -> Sym {
        s.clone()
    }
}

impl From<Sym> for String {
    fn from(s: Sym) -> String {
        s.as_str().to_string()
    }
}

impl From<Sym> for Arc<str> {
    fn from(s: Sym) -> Arc<str> {
        Arc::from(s.as_str())
    }
}

/// One label: a name and a value. Names and values are shared strings so
/// that cloning a label is cheap; a label set is cloned by reference count.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub name: Sym,
    pub value: Sym,
}

impl Label {
    pub fn new(name: impl Into<Sym>, value: impl Into<Sym>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.name, &*self.value)
    }
}

/// A sorted, duplicate-free set of labels identifying one series. Shared
/// (`Arc`): a sample's labels are cloned on every hop of a batch, and a
/// clone must cost one reference count, not an allocation per label.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<[Label]>);

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Labels(Arc::from([]))
    }

    /// Builds a label set from pairs in any order. Later duplicates of a name
    /// win; pairs with an empty value are dropped.
    pub fn from_pairs<N, V, I>(pairs: I) -> Self
    where
        N: Into<Sym>,
        V: Into<Sym>,
        I: IntoIterator<Item = (N, V)>,
    {
        let mut b = LabelsBuilder::new();
        for (n, v) in pairs {
            b.set(n, v);
        }
        b.build()
    }

    /// Builds from labels already sorted by name and unique, skipping the
    /// sort. Debug builds check the precondition.
    pub fn from_sorted(labels: Vec<Label>) -> Self {
        debug_assert!(labels.windows(2).all(|w| w[0].name < w[1].name));
        Labels(labels.into())
    }

    /// Whether both are clones of one allocation. Label sets are
    /// immutable, so this implies equal labels; consumers that keep a clone
    /// use it to recognise a series again without reading its labels.
    pub fn same_allocation(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Hints the CPU to fetch this label set's shared block (reference
    /// counts and labels) into cache. Hot loops over many series call it a
    /// few iterations ahead of cloning or dropping, so that the reference
    /// count update does not stall on a cache miss. No effect off x86-64.
    #[inline]
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            // The counts sit just before the data, usually in its cache line
            // or the one before; a prefetch never faults, whatever address.
            let data = Arc::as_ptr(&self.0) as *const i8;
            #[allow(unused_unsafe)]
            // SAFETY: prefetching reads nothing and cannot fault.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch(data.wrapping_sub(16), _MM_HINT_T0);
                _mm_prefetch(data, _MM_HINT_T0);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of a label, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &*self.0[i].value)
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> + '_ {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0.to_vec()
    }

    /// A builder starting from this set, for edits.
    pub fn to_builder(&self) -> LabelsBuilder {
        LabelsBuilder {
            labels: self.0.to_vec(),
        }
    }

    /// A stable 64-bit hash of the label set (xxh3 over `name\xffvalue\xff`
    /// pairs). Stable across processes and versions: it may be persisted.
    pub fn stable_hash(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for l in self.0.iter() {
            h.update(l.name.as_bytes());
            h.update(&[0xff]);
            h.update(l.value.as_bytes());
            h.update(&[0xff]);
        }
        h.digest()
    }

    /// The set without the metric name.
    pub fn without_metric_name(&self) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|l| &*l.name != METRIC_NAME)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        )
    }

    /// Only the named labels (like PromQL's `on(...)` / `by(...)`).
    pub fn keep_only(&self, names: &[&str]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|l| names.contains(&&*l.name))
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        )
    }

    /// All but the named labels (like PromQL's `ignoring(...)` / `without(...)`).
    pub fn drop_names(&self, names: &[&str]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|l| !names.contains(&&*l.name))
                .cloned()
                .collect::<Vec<_>>()
                .into(),
        )
    }
}

impl fmt::Display for Labels {
    /// Prometheus style: `name{a="b", c="d"}`; `{}` for the empty set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.metric_name();
        if let Some(n) = name {
            f.write_str(n)?;
        }
        let rest: Vec<&Label> = self.0.iter().filter(|l| &*l.name != METRIC_NAME).collect();
        if rest.is_empty() && name.is_some() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, l) in rest.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=\"{}\"", l.name, escape_label_value(&l.value))?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Escapes a label value for the text exposition format and PromQL output:
/// backslash, double quote and newline.
pub fn escape_label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let mut out = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Accumulates label edits, then produces a sorted `Labels`.
#[derive(Clone, Default, Debug)]
pub struct LabelsBuilder {
    labels: Vec<Label>,
}

impl LabelsBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        LabelsBuilder {
            labels: Vec::with_capacity(n),
        }
    }

    /// Sets a label, replacing any earlier value. An empty value deletes it.
    pub fn set(&mut self, name: impl Into<Sym>, value: impl Into<Sym>) -> &mut Self {
        let name = name.into();
        let value = value.into();
        if let Some(l) = self.labels.iter_mut().find(|l| l.name == name) {
            l.value = value;
        } else {
            self.labels.push(Label { name, value });
        }
        self
    }

    /// Removes a label if present.
    pub fn del(&mut self, name: &str) -> &mut Self {
        self.labels.retain(|l| &*l.name != name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| &*l.name == name)
            .map(|l| &*l.value)
    }

    /// Keeps only the labels for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Label) -> bool) -> &mut Self {
        self.labels.retain(|l| keep(l));
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = &Label> + '_ {
        self.labels.iter()
    }

    pub fn build(mut self) -> Labels {
        self.labels.retain(|l| !l.value.is_empty());
        self.labels.sort_by(|a, b| a.name.cmp(&b.name));
        Labels(self.labels.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_empty_values_dropped() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", ""), ("a", "3")]);
        let names: Vec<&str> = l.iter().map(|l| &*l.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(l.get("a"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn display_matches_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]);
        assert_eq!(l.to_string(), "up{job=\"a\\\"b\"}");
        assert_eq!(Labels::from_pairs([("__name__", "up")]).to_string(), "up");
        assert_eq!(Labels::empty().to_string(), "{}");
    }

    #[test]
    fn sym_is_thin_and_behaves_as_its_string() {
        assert_eq!(std::mem::size_of::<Sym>(), 8);
        assert_eq!(std::mem::size_of::<Label>(), 16);
        let a = Sym::from("job");
        let b = Sym::from(String::from("job"));
        assert!(a == b && !a.ptr_eq(&b) && a.clone().ptr_eq(&a));
        assert_eq!(a, "job");
        let (a1, b1) = (Sym::from("a"), Sym::from("b"));
        assert!(a1 < b1 && b1.cmp(&a1).is_gt());
        let set: std::collections::HashSet<Sym> = [a.clone()].into();
        assert!(set.contains("job"));
        assert_eq!(a.strong_count(), 2);
        assert_eq!(format!("{a} {a:?}"), "job \"job\"");
        assert_eq!(Sym::default().len(), 0);
    }

    #[test]
    fn hash_is_order_independent() {
        let a = Labels::from_pairs([("x", "1"), ("y", "2")]);
        let b = Labels::from_pairs([("y", "2"), ("x", "1")]);
        assert_eq!(a.stable_hash(), b.stable_hash());
    }
}
