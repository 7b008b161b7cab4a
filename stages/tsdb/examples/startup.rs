//! Start-up time with many series in the WAL: writes `series` series (two
//! samples each, as after a restart of a big scrape), closes the database,
//! and times the reopen (WAL replay), then reports RSS.
//!
//! `cargo run --release -p panoptes-tsdb --example startup -- [series]`

use std::time::Instant;

use panoptes_model::{Labels, Matcher, Sample, SampleBatch, SeriesSelect};
use panoptes_tsdb::{Db, Options};

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    // `startup reopen DIR` times only the reopen, in a fresh process, so RSS
    // is the head's and not the writer's leftovers.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("reopen") {
        let dir = std::path::PathBuf::from(&args[2]);
        let rss0 = rss_mib();
        let w = Instant::now();
        let db = Db::open(&dir, Options::default()).unwrap();
        let took = w.elapsed().as_secs_f64();
        let series = db.stats().head_series;
        let grown = rss_mib() - rss0;
        println!(
            "fresh-process reopen: {took:.2} s for {series} series; RSS +{grown:.0} MiB = {:.0} B/series",
            grown * 1048576.0 / series.max(1) as f64
        );
        return;
    }
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_700_000_000_000i64;
    {
        let db = Db::open(dir.path(), Options::default()).unwrap();
        let w = Instant::now();
        for round in 0..2i64 {
            for start in (0..n).step_by(10_000) {
                let mut b = SampleBatch::new("startup");
                for i in start..(start + 10_000).min(n) {
                    b.samples.push(Sample {
                        labels: Labels::from_pairs([
                            ("__name__", format!("metric_{}", i % 1000)),
                            ("instance", format!("host-{}:9100", i / 1000)),
                            ("job", "node".to_string()),
                        ]),
                        timestamp_ms: t0 + round * 15_000,
                        value: i as f64,
                    });
                }
                db.append(&b).unwrap();
            }
        }
        println!(
            "wrote {n} series × 2 samples in {:.2} s",
            w.elapsed().as_secs_f64()
        );
        db.sync().unwrap();
    }
    let rss0 = rss_mib();
    let w = Instant::now();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let took = w.elapsed().as_secs_f64();
    let stats = db.stats();
    println!(
        "reopen: {took:.2} s for {} series ({} WAL bytes); RSS +{:.0} MiB = {:.0} B/series",
        stats.head_series,
        stats.wal_disk_bytes,
        rss_mib() - rss0,
        (rss_mib() - rss0) * 1048576.0 / stats.head_series.max(1) as f64
    );
    let w = Instant::now();
    let r = db
        .select(
            &[
                Matcher::equal("__name__", "metric_7"),
                Matcher::equal("instance", "host-42:9100"),
            ],
            i64::MIN,
            i64::MAX,
        )
        .unwrap();
    println!(
        "selective select over {} series: {} µs ({} series)",
        stats.head_series,
        w.elapsed().as_micros(),
        r.len()
    );
    drop(db);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("reopen")
        .arg(dir.path())
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
}
