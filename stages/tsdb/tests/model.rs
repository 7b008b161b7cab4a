//! Property test: random appends, reopenings (WAL replay), block cuts and
//! compactions, with every read compared to a naive in-memory model that
//! applies Prometheus's acceptance rules (strictly increasing timestamps per
//! series; nothing before the newest persisted block).

use std::collections::BTreeMap;

use panoptes_model::{stale_nan, Labels, MatchOp, Matcher, Sample, SampleBatch, SeriesSelect};
use panoptes_tsdb::{Db, Options};
use proptest::prelude::*;

const RANGE: i64 = 10_000;

#[derive(Clone, Debug)]
enum Op {
    /// (series, jitter back in time, value code)
    Append(Vec<(u8, u16, u8)>, u16),
    /// Every series once, in order, as a scrape sends them (value code).
    Steady(u16, u8),
    Reopen,
    Cut,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (proptest::collection::vec((0u8..12, 0u16..2500, any::<u8>()), 1..20), 0u16..5000)
            .prop_map(|(s, adv)| Op::Append(s, adv)),
        3 => (0u16..5000, any::<u8>()).prop_map(|(adv, code)| Op::Steady(adv, code)),
        1 => Just(Op::Reopen),
        1 => Just(Op::Cut),
        1 => Just(Op::Compact),
    ]
}

fn labels(s: u8) -> Labels {
    Labels::from_pairs([
        ("__name__", format!("m{}", s % 3)),
        ("s", s.to_string()),
        ("odd", if s % 2 == 1 { "yes" } else { "" }.to_string()),
    ])
}

fn value(code: u8, t: i64) -> f64 {
    match code % 16 {
        0 => stale_nan(),
        1 => f64::NAN,
        2 => -0.0,
        _ => t as f64 / 7.0 + code as f64,
    }
}

fn options() -> Options {
    Options {
        block_duration_ms: RANGE,
        max_block_duration_ms: Some(RANGE * 9),
        retention_ms: i64::MAX / 4,
        wal_segment_size: 1 << 16,
        ..Options::default()
    }
}

type Model = BTreeMap<Labels, BTreeMap<i64, u64>>;

fn check(db: &Db, model: &Model, matchers: &[Matcher]) {
    let got: Vec<(Labels, Vec<(i64, u64)>)> = db
        .select(matchers, i64::MIN, i64::MAX)
        .unwrap()
        .into_iter()
        .map(|s| {
            (
                s.labels,
                s.samples.iter().map(|x| (x.0, x.1.to_bits())).collect(),
            )
        })
        .collect();
    let want: Vec<(Labels, Vec<(i64, u64)>)> = model
        .iter()
        .filter(|(l, _)| matchers.iter().all(|m| m.matches_labels(l)))
        .filter(|(_, s)| !s.is_empty())
        .map(|(l, s)| (l.clone(), s.iter().map(|(t, v)| (*t, *v)).collect()))
        .collect();
    assert_eq!(got, want, "matchers {matchers:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn reads_match_a_naive_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(dir.path(), options()).unwrap();
        let mut model: Model = BTreeMap::new();
        let mut last: BTreeMap<u8, i64> = BTreeMap::new();
        let mut clock: i64 = 1_000_000;
        // One allocation per series, shared by every batch, as a scrape
        // cache sends them (the store recognises them by allocation).
        let pool: Vec<Labels> = (0..12).map(labels).collect();
        for op in ops {
            match op {
                Op::Append(samples, advance) => {
                    clock += advance as i64;
                    let min_valid = db.blocks().iter().map(|b| b.meta.max_time).max().unwrap_or(i64::MIN);
                    let mut batch = SampleBatch::new("prop");
                    for (s, jitter, code) in samples {
                        let t = clock - jitter as i64;
                        let v = value(code, t);
                        batch.samples.push(Sample { labels: pool[s as usize].clone(), timestamp_ms: t, value: v });
                        let prev = last.get(&s).copied().unwrap_or(i64::MIN);
                        if t > prev && t >= min_valid {
                            last.insert(s, t);
                            model.entry(labels(s)).or_default().insert(t, v.to_bits());
                        }
                    }
                    db.append(&batch).unwrap();
                }
                Op::Steady(advance, code) => {
                    clock += advance as i64;
                    let min_valid = db.blocks().iter().map(|b| b.meta.max_time).max().unwrap_or(i64::MIN);
                    let mut batch = SampleBatch::new("steady");
                    for s in 0..12u8 {
                        let v = value(code.wrapping_add(s), clock);
                        batch.samples.push(Sample { labels: pool[s as usize].clone(), timestamp_ms: clock, value: v });
                        let prev = last.get(&s).copied().unwrap_or(i64::MIN);
                        if clock > prev && clock >= min_valid {
                            last.insert(s, clock);
                            model.entry(labels(s)).or_default().insert(clock, v.to_bits());
                        }
                    }
                    db.append(&batch).unwrap();
                }
                Op::Reopen => {
                    drop(db);
                    db = Db::open(dir.path(), options()).unwrap();
                }
                Op::Cut => {
                    db.cut_head_blocks().unwrap();
                }
                Op::Compact => {
                    db.compact().unwrap();
                }
            }
            check(&db, &model, &[]);
        }
        check(&db, &model, &[Matcher::equal("__name__", "m1")]);
        check(&db, &model, &[Matcher::equal("odd", "")]);
        check(&db, &model, &[Matcher::new(MatchOp::RegexMatch, "s", "1.*|3").unwrap(), Matcher::new(MatchOp::NotEqual, "__name__", "m0").unwrap()]);
        // Range reads are the model restricted to the range.
        let (lo, hi) = (clock - 20_000, clock - 5_000);
        let got: usize = db.select(&[], lo, hi).unwrap().iter().map(|s| s.samples.len()).sum();
        let want: usize = model.values().map(|s| s.range(lo..=hi).count()).sum();
        prop_assert_eq!(got, want);
        // The newest sample per series, as instant selectors read it: in a
        // past window (decoded) and up to now (the series' kept newest sample).
        for (lo, hi) in [(lo, hi), (clock - 60_000, clock)] {
            let got: Vec<(Labels, (i64, u64))> = db
                .select_latest(&[], lo, hi)
                .unwrap()
                .into_iter()
                .map(|s| {
                    assert_eq!(s.samples.len(), 1, "one sample per series");
                    (s.labels, (s.samples[0].0, s.samples[0].1.to_bits()))
                })
                .collect();
            let want: Vec<(Labels, (i64, u64))> = model
                .iter()
                .filter_map(|(l, s)| s.range(lo..=hi).next_back().map(|(t, v)| (l.clone(), (*t, *v))))
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
