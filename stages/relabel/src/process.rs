//! Applying compiled rules to a label set, with Prometheus's label-builder
//! semantics (edits are staged as additions and deletions over the input,
//! later rules see earlier edits, and `labelmap` / `labeldrop` /
//! `labelkeep` iterate unmodified input labels first, then added ones).

use std::borrow::Cow;

use md5::{Digest, Md5};
use panoptes_model::{Label, Labels, Sym};

use crate::rule::{is_valid_label_name, Action, RelabelRule};

/// Applies rules in order; None = dropped.
pub fn process(labels: &Labels, rules: &[RelabelRule]) -> Option<Labels> {
    process_cow(labels, rules).map(Cow::into_owned)
}

/// Like [`process`], but borrows the input when no rule changed anything,
/// so that the common "rules touch nothing" case allocates no label set.
pub fn process_cow<'a>(labels: &'a Labels, rules: &[RelabelRule]) -> Option<Cow<'a, Labels>> {
    if rules.is_empty() {
        return Some(Cow::Borrowed(labels));
    }
    let mut b = Builder::new(labels.as_slice());
    for rule in rules {
        if !apply(rule, &mut b) {
            return None;
        }
    }
    Some(match b.finish() {
        None => Cow::Borrowed(labels),
        Some(l) => Cow::Owned(l),
    })
}

/// A joined source value: borrowed from one label when possible.
enum Value {
    Empty,
    Shared(Sym),
    Owned(String),
}

impl Value {
    fn as_str(&self) -> &str {
        match self {
            Value::Empty => "",
            Value::Shared(s) => s,
            Value::Owned(s) => s,
        }
    }
}

fn source_value(rule: &RelabelRule, b: &Builder<'_>) -> Value {
    match rule.source_labels.as_slice() {
        [] => Value::Empty,
        [one] => b.get_shared(one).map_or(Value::Empty, Value::Shared),
        many => {
            let mut s = String::new();
            for (i, n) in many.iter().enumerate() {
                if i > 0 {
                    s.push_str(&rule.separator);
                }
                s.push_str(b.get(n));
            }
            Value::Owned(s)
        }
    }
}

/// Applies one rule; false = drop the label set.
fn apply(rule: &RelabelRule, b: &mut Builder<'_>) -> bool {
    match rule.action {
        Action::Drop => !rule.regex.is_match(source_value(rule, b).as_str()),
        Action::Keep => rule.regex.is_match(source_value(rule, b).as_str()),
        Action::DropEqual => b.get(&rule.target_label) != source_value(rule, b).as_str(),
        Action::KeepEqual => b.get(&rule.target_label) == source_value(rule, b).as_str(),
        Action::Replace => {
            replace(rule, b);
            true
        }
        Action::Lowercase => {
            let v = source_value(rule, b).as_str().to_lowercase();
            b.set_str(&rule.target_label, &v);
            true
        }
        Action::Uppercase => {
            let v = source_value(rule, b).as_str().to_uppercase();
            b.set_str(&rule.target_label, &v);
            true
        }
        Action::HashMod => {
            let v = source_value(rule, b);
            let sum = Md5::digest(v.as_str().as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&sum[8..16]);
            // Validation guarantees a non-zero modulus.
            let m = u64::from_be_bytes(tail) % rule.modulus.max(1);
            b.set_str(&rule.target_label, &m.to_string());
            true
        }
        Action::LabelMap => {
            for l in b.snapshot() {
                if let Some(caps) = rule.regex.regex().captures(&l.name) {
                    let name = rule.replacement.expand(&caps);
                    b.set(Sym::from(name), l.value.clone());
                }
            }
            true
        }
        Action::LabelDrop => {
            for name in b.matching_names(|n| rule.regex.is_match(n)) {
                b.del(&name);
            }
            true
        }
        Action::LabelKeep => {
            for name in b.matching_names(|n| !rule.regex.is_match(n)) {
                b.del(&name);
            }
            true
        }
    }
}

fn replace(rule: &RelabelRule, b: &mut Builder<'_>) {
    let val = source_value(rule, b);
    let val = val.as_str();
    if let (None, Some(text)) = (&rule.target_template, rule.replacement.constant()) {
        // Neither side refers to a group: a match test is enough.
        if rule.regex.is_match(val) {
            b.set_str(&rule.target_label, text);
        }
        return;
    }
    let Some(caps) = rule.regex.regex().captures(val) else {
        return;
    };
    let target: Cow<'_, str> = match &rule.target_template {
        None => Cow::Borrowed(&*rule.target_label),
        Some(t) => {
            let name = t.expand(&caps);
            if !is_valid_label_name(&name) {
                return;
            }
            Cow::Owned(name)
        }
    };
    let res = rule.replacement.expand(&caps);
    match target {
        Cow::Borrowed(_) => b.set_str(&rule.target_label, &res),
        Cow::Owned(name) => b.set(Sym::from(name), Sym::from(res)),
    }
}

/// Staged edits over an input label set (Prometheus's `labels.Builder`).
struct Builder<'a> {
    base: &'a [Label],
    add: Vec<Label>,
    del: Vec<Sym>,
}

impl<'a> Builder<'a> {
    fn new(base: &'a [Label]) -> Self {
        Builder {
            base,
            add: Vec::new(),
            del: Vec::new(),
        }
    }

    fn base_get(&self, name: &str) -> Option<&'a Label> {
        self.base
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &self.base[i])
    }

    fn get(&self, name: &str) -> &str {
        if let Some(l) = self.add.iter().find(|l| &*l.name == name) {
            return &l.value;
        }
        if self.del.iter().any(|d| &**d == name) {
            return "";
        }
        self.base_get(name).map_or("", |l| &*l.value)
    }

    fn get_shared(&self, name: &str) -> Option<Sym> {
        if let Some(l) = self.add.iter().find(|l| &*l.name == name) {
            return Some(l.value.clone());
        }
        if self.del.iter().any(|d| &**d == name) {
            return None;
        }
        self.base_get(name).map(|l| l.value.clone())
    }

    /// Sets `name` to `value`, reusing the input's strings when they are
    /// equal so that no-op edits allocate nothing.
    fn set_str(&mut self, name: &Sym, value: &str) {
        if value.is_empty() {
            self.del(name);
            return;
        }
        let v: Sym = match self.base_get(name) {
            Some(l) if &*l.value == value => l.value.clone(),
            _ => Sym::from(value),
        };
        self.set(name.clone(), v);
    }

    fn set(&mut self, name: Sym, value: Sym) {
        if value.is_empty() {
            self.del(&name);
            return;
        }
        if let Some(l) = self.add.iter_mut().find(|l| l.name == name) {
            l.value = value;
            return;
        }
        self.add.push(Label { name, value });
    }

    fn del(&mut self, name: &str) {
        self.add.retain(|l| &*l.name != name);
        if !self.del.iter().any(|d| &**d == name) {
            self.del.push(Sym::from(name));
        }
    }

    fn is_edited(&self, name: &str) -> bool {
        self.del.iter().any(|d| &**d == name) || self.add.iter().any(|l| &*l.name == name)
    }

    /// The current labels in Prometheus's iteration order: untouched input
    /// labels (sorted), then added ones in the order they were set.
    fn snapshot(&self) -> Vec<Label> {
        let mut out: Vec<Label> = self
            .base
            .iter()
            .filter(|l| !self.is_edited(&l.name))
            .cloned()
            .collect();
        out.extend(self.add.iter().cloned());
        out
    }

    /// Names of current labels for which `pick` holds, in iteration
    /// order; allocates only when some label is picked.
    fn matching_names(&self, mut pick: impl FnMut(&str) -> bool) -> Vec<Sym> {
        let mut out = Vec::new();
        for l in self.base.iter() {
            if !self.is_edited(&l.name) && pick(&l.name) {
                out.push(l.name.clone());
            }
        }
        for l in &self.add {
            if pick(&l.name) {
                out.push(l.name.clone());
            }
        }
        out
    }

    /// The edited label set, or None when it equals the input.
    fn finish(self) -> Option<Labels> {
        let unchanged = self
            .add
            .iter()
            .all(|a| self.base_get(&a.name).is_some_and(|l| l.value == a.value))
            && self
                .del
                .iter()
                .all(|d| self.base_get(d).is_none() || self.add.iter().any(|a| a.name == *d));
        if unchanged {
            return None;
        }
        let mut out: Vec<Label> = Vec::with_capacity(self.base.len() + self.add.len());
        out.extend(
            self.base
                .iter()
                .filter(|l| !self.is_edited(&l.name))
                .cloned(),
        );
        out.extend(self.add);
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Some(Labels::from_sorted(out))
    }
}
