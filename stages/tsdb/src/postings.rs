//! Postings lists (sorted series ids) and the matcher algebra over them,
//! shared by the head and the blocks: equality matchers read one list,
//! regex matchers are evaluated over a label's values (not over series), and
//! matchers that accept the empty string subtract instead of intersect, so a
//! selective query touches only the lists it needs.

use std::borrow::Cow;

use panoptes_model::{MatchOp, Matcher};

/// Something with an inverted index: the head or a block.
pub trait PostingsSource {
    type Error;

    /// Every series id, sorted.
    fn all_postings(&self) -> Result<Vec<u32>, Self::Error>;

    /// The values of one label name present in the index, in any order.
    fn values_of(&self, name: &str) -> Result<Vec<String>, Self::Error>;

    /// The sorted ids of series with `name="value"`.
    fn postings(&self, name: &str, value: &str) -> Result<Vec<u32>, Self::Error>;

    /// [`PostingsSource::postings`], borrowed where the source holds the
    /// list in memory (a selective query then copies no broad list).
    fn postings_ref(&self, name: &str, value: &str) -> Result<Cow<'_, [u32]>, Self::Error> {
        self.postings(name, value).map(Cow::Owned)
    }

    /// The length of [`PostingsSource::postings`], where a source can tell
    /// without building the list.
    fn postings_len(&self, name: &str, value: &str) -> Result<usize, Self::Error> {
        self.postings_ref(name, value).map(|p| p.len())
    }
}

/// An upper bound on the series `matchers` select: the shortest postings
/// list among their equality matchers (`None` without one, e.g. only
/// regexes or negations).
pub fn upper_bound<S: PostingsSource>(
    src: &S,
    matchers: &[Matcher],
) -> Result<Option<usize>, S::Error> {
    let mut bound: Option<usize> = None;
    for m in matchers {
        if m.op == MatchOp::Equal && !m.value.is_empty() {
            let n = src.postings_len(&m.name, &m.value)?;
            bound = Some(bound.map_or(n, |b| b.min(n)));
        }
    }
    Ok(bound)
}

/// Intersection of two sorted lists.
pub fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    // Galloping pays off when one side is much shorter (a selective matcher
    // against a broad one).
    if small.len() * 16 < large.len() {
        let (Some(&first), Some(&last)) = (large.first(), large.last()) else {
            return out;
        };
        let mut lo = 0;
        for &x in small {
            // Series created together have neighbouring ids, so a broad
            // list (one target's series) often spans a narrow id range and
            // most of a short list (one metric over all targets) lies
            // outside it: those need no search.
            if x < first {
                continue;
            }
            if x > last {
                break;
            }
            match large[lo..].binary_search(&x) {
                Ok(i) => {
                    out.push(x);
                    lo += i + 1;
                }
                Err(i) => lo += i,
            }
            if lo >= large.len() {
                break;
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < small.len() && j < large.len() {
        match small[i].cmp(&large[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(small[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Elements of `a` not in `b`.
pub fn subtract(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j < b.len() && b[j] == x {
            continue;
        }
        out.push(x);
    }
    out
}

/// Union of many sorted lists.
pub fn union(mut lists: Vec<Vec<u32>>) -> Vec<u32> {
    match lists.len() {
        0 => return Vec::new(),
        1 => return lists.pop().unwrap_or_default(),
        _ => {}
    }
    let mut out: Vec<u32> = lists.concat();
    out.sort_unstable();
    out.dedup();
    out
}

/// Sorted ids of the series of `src` matching every matcher. With no
/// matchers, every series.
pub fn select<S: PostingsSource>(src: &S, matchers: &[Matcher]) -> Result<Vec<u32>, S::Error> {
    let mut positive: Vec<Cow<'_, [u32]>> = Vec::new();
    let mut negative: Vec<Vec<u32>> = Vec::new();
    for m in matchers {
        if m.matches_empty() {
            // Series without the label match too: remove the series whose
            // value of the label does not match.
            let excluded = match m.op {
                MatchOp::NotEqual => src.postings(&m.name, &m.value)?,
                MatchOp::Equal => values_postings(src, &m.name, |_| true)?,
                _ => values_postings(src, &m.name, |v| !m.matches(v))?,
            };
            negative.push(excluded);
        } else {
            let included = match m.op {
                MatchOp::Equal => src.postings_ref(&m.name, &m.value)?,
                _ => Cow::Owned(values_postings(src, &m.name, |v| m.matches(v))?),
            };
            if included.is_empty() {
                return Ok(Vec::new());
            }
            positive.push(included);
        }
    }
    let mut result = if positive.is_empty() {
        src.all_postings()?
    } else {
        positive.sort_by_key(|p| p.len());
        let mut it = positive.into_iter();
        let first = it.next().unwrap_or_default();
        match it.next() {
            None => first.into_owned(),
            Some(second) => {
                let mut acc = intersect(&first, &second);
                for p in it {
                    if acc.is_empty() {
                        break;
                    }
                    acc = intersect(&acc, &p);
                }
                acc
            }
        }
    };
    for n in negative {
        if result.is_empty() {
            break;
        }
        result = subtract(&result, &n);
    }
    Ok(result)
}

fn values_postings<S: PostingsSource>(
    src: &S,
    name: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<u32>, S::Error> {
    let mut lists = Vec::new();
    for v in src.values_of(name)? {
        if keep(&v) {
            lists.push(src.postings(name, &v)?);
        }
    }
    Ok(union(lists))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Mem(Vec<BTreeMap<String, String>>);

    impl PostingsSource for Mem {
        type Error = ();
        fn all_postings(&self) -> Result<Vec<u32>, ()> {
            Ok((0..self.0.len() as u32).collect())
        }
        fn values_of(&self, name: &str) -> Result<Vec<String>, ()> {
            let mut v: Vec<String> = self.0.iter().filter_map(|s| s.get(name).cloned()).collect();
            v.sort();
            v.dedup();
            Ok(v)
        }
        fn postings(&self, name: &str, value: &str) -> Result<Vec<u32>, ()> {
            Ok((0..self.0.len() as u32)
                .filter(|&i| self.0[i as usize].get(name).map(|s| s.as_str()) == Some(value))
                .collect())
        }
    }

    fn series(pairs: &[&[(&str, &str)]]) -> Mem {
        Mem(pairs
            .iter()
            .map(|s| {
                s.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect()
            })
            .collect())
    }

    #[test]
    fn set_operations() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[3, 4, 5]), vec![3, 5]);
        let big: Vec<u32> = (0..1000).collect();
        assert_eq!(intersect(&[5, 999, 2000], &big), vec![5, 999]);
        let middle: Vec<u32> = (1000..2000).collect();
        assert_eq!(
            intersect(&[1, 2, 1000, 1500, 1999, 2000, 5000], &middle),
            vec![1000, 1500, 1999]
        );
        assert_eq!(intersect(&[1, 2], &[]), Vec::<u32>::new());
        // Against a naive intersection, lists of many shapes.
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for round in 0..200 {
            let span = 10 + round * 50;
            let mut a: Vec<u32> = (0..(round % 7 + 1)).map(|_| next() % (span * 2)).collect();
            let mut b: Vec<u32> = (0..span).map(|_| span / 2 + next() % span).collect();
            a.sort_unstable();
            a.dedup();
            b.sort_unstable();
            b.dedup();
            let naive: Vec<u32> = a.iter().copied().filter(|x| b.contains(x)).collect();
            assert_eq!(intersect(&a, &b), naive);
            assert_eq!(intersect(&b, &a), naive);
        }
        assert_eq!(subtract(&[1, 2, 3, 4], &[2, 4, 6]), vec![1, 3]);
        assert_eq!(
            union(vec![vec![1, 5], vec![2, 5, 9], vec![]]),
            vec![1, 2, 5, 9]
        );
    }

    #[test]
    fn matchers_agree_with_a_scan() {
        let src = series(&[
            &[("__name__", "up"), ("job", "api")],
            &[("__name__", "up"), ("job", "db"), ("env", "prod")],
            &[("__name__", "up")],
            &[("__name__", "down"), ("job", "api"), ("env", "dev")],
        ]);
        let cases = [
            vec![Matcher::equal("__name__", "up")],
            vec![Matcher::equal("job", "")],
            vec![Matcher::new(MatchOp::NotEqual, "job", "api").unwrap()],
            vec![Matcher::new(MatchOp::RegexMatch, "job", "a.*|").unwrap()],
            vec![Matcher::new(MatchOp::RegexNoMatch, "env", "prod").unwrap()],
            vec![
                Matcher::equal("__name__", "up"),
                Matcher::new(MatchOp::RegexMatch, "job", ".+").unwrap(),
            ],
            vec![Matcher::new(MatchOp::NotEqual, "env", "").unwrap()],
            vec![Matcher::equal("nope", "x")],
        ];
        for ms in cases {
            let got = select(&src, &ms).unwrap();
            let want: Vec<u32> = (0..src.0.len() as u32)
                .filter(|&i| {
                    ms.iter().all(|m| {
                        m.matches(
                            src.0[i as usize]
                                .get(&m.name)
                                .map(|s| s.as_str())
                                .unwrap_or(""),
                        )
                    })
                })
                .collect();
            assert_eq!(got, want, "matchers {ms:?}");
        }
    }
}
