//! Remembers, per batch source, which head series each position of its last
//! batch resolved to, so the next batch from that source finds its series
//! without hashing or comparing labels.
//!
//! A scrape loop (or any stage with a series cache) sends the same label sets
//! in the same order every time, as clones of the same allocations. Keeping a
//! clone of each label set pins its allocation, so "same allocation as last
//! time at this position" proves "same labels", and the remembered series
//! reference is valid as long as the head has not dropped series since.
//! Anything else (a new series, a reordered body, a relabel stage that builds
//! fresh label sets) falls back to the head's label index, and the position
//! is updated in place, so a steady source costs no reference-count traffic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_model::{Labels, Sample};

/// Sources not heard from for this long are forgotten (their clones released).
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Appends between sweeps for forgotten sources.
const SWEEP_EVERY: u64 = 4096;

/// A source with more distinct positions than this is not remembered
/// (one huge batch would otherwise pin its label sets until it is forgotten).
const MAX_POSITIONS: usize = 1 << 20;

#[derive(Default)]
struct Positions {
    slots: Vec<(Labels, u32)>,
    last_used: Option<Instant>,
}

#[derive(Default)]
pub struct SourceRefs {
    by_source: HashMap<Arc<str>, Positions>,
    appends: u64,
}

impl SourceRefs {
    /// For each sample of `source`'s batch, the remembered reference if the
    /// label set at its position is the very one remembered there.
    pub fn resolve_into(&self, source: &Arc<str>, samples: &[Sample], out: &mut Vec<Option<u32>>) {
        out.clear();
        let Some(p) = self.by_source.get(source) else {
            out.resize(samples.len(), None);
            return;
        };
        out.extend(samples.iter().enumerate().map(|(i, s)| {
            p.slots
                .get(i)
                .filter(|(known, _)| known.same_allocation(&s.labels))
                .map(|&(_, r)| r)
        }));
    }

    /// Records the references `source`'s batch resolved to, position by
    /// position, touching only positions that changed.
    pub fn remember(&mut self, source: &Arc<str>, samples: &[Sample], refs: &[Option<u32>]) {
        self.appends += 1;
        if self.appends.is_multiple_of(SWEEP_EVERY) {
            self.sweep();
        }
        let n = samples.len();
        if n > MAX_POSITIONS {
            self.by_source.remove(source);
            return;
        }
        let p = match self.by_source.get_mut(source) {
            Some(p) => p,
            None => self.by_source.entry(source.clone()).or_default(),
        };
        p.last_used = Some(Instant::now());
        p.slots.truncate(n);
        for (i, (s, r)) in samples.iter().zip(refs).enumerate() {
            let Some(r) = *r else { break };
            match p.slots.get_mut(i) {
                Some(slot) if slot.1 == r && slot.0.same_allocation(&s.labels) => {}
                Some(slot) => *slot = (s.labels.clone(), r),
                None => p.slots.push((s.labels.clone(), r)),
            }
        }
    }

    /// Forgets every reference: the head dropped series, so a remembered
    /// reference may now name another series.
    pub fn clear(&mut self) {
        self.by_source.clear();
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        self.by_source.retain(|_, p| {
            p.last_used
                .is_some_and(|t| now.duration_since(t) < FORGET_AFTER)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(labels: &Labels) -> Sample {
        Sample {
            labels: labels.clone(),
            timestamp_ms: 0,
            value: 0.0,
        }
    }

    fn batch(ls: &[&Labels]) -> Vec<Sample> {
        ls.iter().map(|l| sample(l)).collect()
    }

    fn labels(name: &str) -> Labels {
        Labels::from_pairs([("__name__", name)])
    }

    #[test]
    fn same_allocation_hits_equal_labels_do_not() {
        let src: Arc<str> = Arc::from("s");
        let (a, b) = (labels("a"), labels("b"));
        let mut refs = SourceRefs::default();
        let mut out = Vec::new();
        refs.resolve_into(&src, &batch(&[&a, &b]), &mut out);
        assert_eq!(out, vec![None, None]);
        refs.remember(&src, &batch(&[&a, &b]), &[Some(1), Some(2)]);
        refs.resolve_into(&src, &batch(&[&a, &b]), &mut out);
        assert_eq!(out, vec![Some(1), Some(2)]);
        // Equal labels in another allocation are not trusted.
        refs.resolve_into(&src, &batch(&[&labels("a"), &b]), &mut out);
        assert_eq!(out, vec![None, Some(2)]);
        // Swapped order misses both.
        refs.resolve_into(&src, &batch(&[&b, &a]), &mut out);
        assert_eq!(out, vec![None, None]);
        // Another source knows nothing.
        refs.resolve_into(&Arc::from("t"), &batch(&[&a]), &mut out);
        assert_eq!(out, vec![None]);
        refs.clear();
        refs.resolve_into(&src, &batch(&[&a]), &mut out);
        assert_eq!(out, vec![None]);
    }

    #[test]
    fn positions_follow_the_latest_batch() {
        let src: Arc<str> = Arc::from("s");
        let (a, b, c) = (labels("a"), labels("b"), labels("c"));
        let mut refs = SourceRefs::default();
        refs.remember(&src, &batch(&[&a, &b]), &[Some(1), Some(2)]);
        // Shorter batch with another series in front.
        refs.remember(&src, &batch(&[&c]), &[Some(3)]);
        let mut out = Vec::new();
        refs.resolve_into(&src, &batch(&[&c, &b]), &mut out);
        assert_eq!(out, vec![Some(3), None]);
        // An unresolved position stops what is remembered after it.
        refs.remember(&src, &batch(&[&a, &b, &c]), &[Some(1), None, Some(3)]);
        refs.resolve_into(&src, &batch(&[&a, &b, &c]), &mut out);
        assert_eq!(out, vec![Some(1), None, None]);
    }
}
