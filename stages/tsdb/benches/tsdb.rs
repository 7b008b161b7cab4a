//! Criterion benchmarks: append throughput (scrape-sized batches) and select
//! latency on a head with many series (selective and broad matchers).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use panoptes_model::{Labels, MatchOp, Matcher, Sample, SampleBatch, SeriesSelect};
use panoptes_tsdb::{Db, Options};

fn labels(target: usize, i: usize) -> Labels {
    Labels::from_pairs([
        ("__name__", format!("metric_{}", i % 200)),
        ("instance", format!("10.0.0.{target}:9100")),
        ("job", "node".to_string()),
        ("cpu", (i / 200).to_string()),
    ])
}

fn batch(target: usize, per_target: usize, t: i64) -> SampleBatch {
    let mut b = SampleBatch::new("bench");
    for i in 0..per_target {
        b.samples.push(Sample {
            labels: labels(target, i),
            timestamp_ms: t,
            value: (t / 1000 + i as i64) as f64,
        });
    }
    b
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    let per_target = 2000;
    g.throughput(Throughput::Elements(per_target as u64));
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let targets = 10;
    let mut t = 1_700_000_000_000i64;
    // Existing series: the steady state of a scrape.
    for target in 0..targets {
        db.append(&batch(target, per_target, t)).unwrap();
    }
    let mut target = 0;
    g.bench_function("2000 samples, existing series", |b| {
        b.iter_batched(
            || {
                target = (target + 1) % targets;
                if target == 0 {
                    t += 1000;
                }
                batch(target, per_target, t)
            },
            // Returned so that freeing the batch is not timed.
            |batch| {
                db.append(&batch).unwrap();
                batch
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn select(c: &mut Criterion) {
    let mut g = c.benchmark_group("select");
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    // 100 targets × 2000 series = 200k series, 10 samples each.
    for s in 0..10 {
        for target in 0..100 {
            db.append(&batch(target, 2000, 1_700_000_000_000 + s * 15_000))
                .unwrap();
        }
    }
    let one = [
        Matcher::equal("__name__", "metric_7"),
        Matcher::equal("instance", "10.0.0.42:9100"),
        Matcher::equal("cpu", "3"),
    ];
    g.bench_function("1 of 200k series (3 equality matchers)", |b| {
        b.iter(|| {
            let r = db.select(&one, i64::MIN, i64::MAX).unwrap();
            assert_eq!(r.len(), 1);
        })
    });
    let some = [
        Matcher::equal("__name__", "metric_7"),
        Matcher::new(MatchOp::RegexMatch, "instance", "10\\.0\\.0\\.1.*").unwrap(),
    ];
    g.bench_function("110 of 200k series (regex)", |b| {
        b.iter(|| {
            let r = db.select(&some, i64::MIN, i64::MAX).unwrap();
            assert_eq!(r.len(), 110);
        })
    });
    g.bench_function("label values of instance", |b| {
        b.iter(|| {
            db.label_values("instance", &[], i64::MIN, i64::MAX)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = append, select
}
criterion_main!(benches);
