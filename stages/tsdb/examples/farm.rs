//! Synthetic-farm measurement: ingests `targets × series_per_target` series
//! of realistic values (counters, gauges, histogram buckets) at a 1 s
//! interval, then cuts blocks and reports CPU per million samples, RSS per
//! series, bytes per sample on disk and WAL replay time.
//!
//! `cargo run --release -p panoptes-tsdb --example farm -- [targets] [series_per_target] [seconds] [block_seconds]`

use std::time::Instant;

use panoptes_model::{Labels, Sample, SampleBatch};
use panoptes_tsdb::{Db, Options};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Counter { rate: u64 },
    Gauge { scale: f64 },
    Bucket { rate: u64 },
    Constant,
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn cpu_seconds() -> f64 {
    // utime + stime from /proc/self/stat, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let targets = args.first().copied().unwrap_or(50);
    let per_target = args.get(1).copied().unwrap_or(2000);
    let seconds = args.get(2).copied().unwrap_or(600) as i64;
    let block_secs = args.get(3).copied().unwrap_or(120) as i64;
    // `FARM_DRY=1`: generate the batches but do not append them, to measure
    // the generator's own CPU (subtract it from a real run).
    let dry = std::env::var_os("FARM_DRY").is_some();
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        block_duration_ms: block_secs * 1000,
        max_block_duration_ms: Some(block_secs * 1000 * 27),
        ..Options::default()
    };

    // Series and their kinds.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut series: Vec<(Labels, Kind, f64)> = Vec::new();
    for t in 0..targets {
        let instance = format!("10.0.{}.{}:9100", t / 250, t % 250);
        for i in 0..per_target {
            let family = i / 20;
            let (name, kind, extra) = match family % 10 {
                0..=3 => (
                    format!("node_counter_{family}_total"),
                    Kind::Counter {
                        rate: [0, 1, 10, 1000, 100_000][(i % 5) as usize],
                    },
                    ("cpu", (i % 20).to_string()),
                ),
                4..=6 => (
                    format!("node_gauge_{family}"),
                    Kind::Gauge {
                        scale: [1.0, 0.01, 1024.0][(i % 3) as usize],
                    },
                    ("device", format!("sd{}", i % 20)),
                ),
                7 | 8 => (
                    format!("http_request_duration_seconds_bucket_{family}"),
                    Kind::Bucket { rate: i % 20 },
                    (
                        "le",
                        [
                            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5",
                            "5", "10", "+Inf",
                        ][(i % 12) as usize]
                            .to_string(),
                    ),
                ),
                _ => (
                    format!("node_info_{family}"),
                    Kind::Constant,
                    ("version", (i % 20).to_string()),
                ),
            };
            let labels = Labels::from_pairs([
                ("__name__", name),
                ("instance", instance.clone()),
                ("job", "node".to_string()),
                (extra.0, extra.1),
            ]);
            let start = (rng.below(1_000_000)) as f64;
            series.push((labels, kind, start));
        }
    }
    let n_series = series.len() as u64;
    let rss0 = rss_bytes();
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    let t0_ms: i64 = 1_700_000_000_000;
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut total = 0u64;
    let per_batch = per_target as usize;
    for sec in 0..seconds {
        for t in 0..targets as usize {
            let mut batch = SampleBatch::new("farm");
            batch.samples.reserve(per_batch);
            // Scrape timestamps jitter by a few ms, as real scrapes do.
            let ts = t0_ms + sec * 1000 + (rng.below(5) as i64);
            for (labels, kind, v) in &mut series[t * per_batch..(t + 1) * per_batch] {
                *v = match *kind {
                    Kind::Counter { rate } => {
                        *v + if rate == 0 {
                            0.0
                        } else {
                            rng.below(rate * 2) as f64
                        }
                    }
                    Kind::Gauge { scale } => {
                        (((*v / scale).round() + rng.below(21) as f64 - 10.0) * scale * 100.0)
                            .round()
                            / 100.0
                    }
                    Kind::Bucket { rate } => *v + rng.below(rate + 1) as f64,
                    Kind::Constant => 1.0,
                };
                batch.samples.push(Sample {
                    labels: labels.clone(),
                    timestamp_ms: ts,
                    value: *v,
                });
            }
            total += batch.samples.len() as u64;
            if !dry {
                db.append(&batch).unwrap();
            }
        }
        if sec % 60 == 0 {
            db.maintain().unwrap();
        }
    }
    let ingest_wall = wall0.elapsed().as_secs_f64();
    let ingest_cpu = cpu_seconds() - cpu0;
    let rss1 = rss_bytes();
    let stats = db.stats();
    println!("series                      {n_series}");
    println!("samples ingested            {total}");
    println!(
        "ingest wall                 {ingest_wall:.2} s ({:.2} M samples/s)",
        total as f64 / ingest_wall / 1e6
    );
    println!("ingest CPU                  {ingest_cpu:.2} s = {:.3} CPU-s per million samples (incl. block cuts)", ingest_cpu / total as f64 * 1e6);
    println!(
        "RSS growth                  {:.1} MiB = {:.0} B per series (head holds {} samples/series)",
        (rss1.saturating_sub(rss0)) as f64 / 1048576.0,
        rss1.saturating_sub(rss0) as f64 / n_series as f64,
        stats.head_max_time.saturating_sub(stats.head_min_time) / 1000
    );
    println!(
        "head chunk bytes            {} ({:.2} B/sample in head)",
        stats.head_chunk_bytes,
        stats.head_chunk_bytes as f64
            / (n_series as f64
                * ((stats.head_max_time - stats.head_min_time) as f64 / 1000.0 + 1.0))
    );

    // Cut everything complete into blocks and compact.
    let c0 = cpu_seconds();
    db.cut_head_blocks().unwrap();
    db.compact().unwrap();
    let cut_cpu = cpu_seconds() - c0;
    let mut block_samples = 0u64;
    let mut chunk_bytes = 0u64;
    let mut index_bytes = 0u64;
    for b in db.blocks() {
        block_samples += b.meta.stats.num_samples;
        let cdir = b.dir().join("chunks");
        for e in std::fs::read_dir(&cdir).unwrap().flatten() {
            chunk_bytes += e.metadata().unwrap().len();
        }
        index_bytes += std::fs::metadata(b.dir().join("index")).unwrap().len();
    }
    println!(
        "blocks                      {} (cut+compact CPU {cut_cpu:.2} s)",
        db.blocks().len()
    );
    println!("block samples               {block_samples}");
    println!(
        "chunk bytes/sample          {:.3}",
        chunk_bytes as f64 / block_samples.max(1) as f64
    );
    println!(
        "with index bytes/sample     {:.3}",
        (chunk_bytes + index_bytes) as f64 / block_samples.max(1) as f64
    );
    let wal_bytes = stats.wal_disk_bytes;
    drop(db);

    let r0 = Instant::now();
    let db = Db::open(dir.path(), opts).unwrap();
    println!(
        "reopen (WAL replay)         {:.2} s for {} head series, {} WAL bytes",
        r0.elapsed().as_secs_f64(),
        db.stats().head_series,
        wal_bytes
    );
}
