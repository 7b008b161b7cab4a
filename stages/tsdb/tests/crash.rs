//! Crash test: a child process (this test binary re-executed) appends
//! continuously, cutting blocks and checkpointing the WAL as it goes, and
//! prints every batch number whose append returned. The parent SIGKILLs it
//! at random moments, reopens the database and checks that every
//! acknowledged batch is present in full and that nothing else is there.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use panoptes_model::{Labels, Sample, SampleBatch, SeriesSelect};
use panoptes_tsdb::{Db, Options};

const SERIES: u64 = 40;
const STEP_MS: i64 = 1000;
const CHILD_ENV: &str = "PANOPTES_TSDB_CRASH_DIR";

fn options() -> Options {
    Options {
        // Ten batches per block, so kills land during block cuts, WAL
        // checkpoints and compactions too.
        block_duration_ms: 10 * STEP_MS,
        max_block_duration_ms: Some(90 * STEP_MS),
        retention_ms: 10_000 * STEP_MS,
        wal_segment_size: 64 << 10,
        ..Options::default()
    }
}

/// The value of series `s` in batch `k`: distinct per sample so that a
/// sample from the wrong batch or series cannot pass for a right one.
fn value(k: i64, s: u64) -> f64 {
    (k as f64) * 1000.0 + s as f64 + 0.5
}

fn labels(s: u64, k: i64) -> Labels {
    // Every 7th series changes identity every 25 batches: new series keep
    // coming, so series records and head GC are exercised.
    let gen = if s.is_multiple_of(7) {
        (k / 25).to_string()
    } else {
        "0".to_string()
    };
    Labels::from_pairs([
        ("__name__", "crash_test".to_string()),
        ("series", s.to_string()),
        ("gen", gen),
    ])
}

fn batch(k: i64) -> SampleBatch {
    let mut b = SampleBatch::new("crash");
    for s in 0..SERIES {
        b.samples.push(Sample {
            labels: labels(s, k),
            timestamp_ms: k * STEP_MS,
            value: value(k, s),
        });
    }
    b
}

/// Batch numbers present in the database, checking each sample's value and
/// that every present batch is complete.
fn present_batches(db: &Db) -> Vec<i64> {
    let mut per_k: std::collections::BTreeMap<i64, u64> = Default::default();
    for series in db.select(&[], i64::MIN, i64::MAX).unwrap() {
        let s: u64 = series.labels.get("series").unwrap().parse().unwrap();
        for (t, v) in series.samples {
            assert_eq!(t % STEP_MS, 0, "unexpected timestamp {t}");
            let k = t / STEP_MS;
            assert_eq!(
                series.labels,
                labels(s, k),
                "sample of batch {k} under wrong series"
            );
            assert_eq!(
                v.to_bits(),
                value(k, s).to_bits(),
                "wrong value for batch {k} series {s}"
            );
            *per_k.entry(k).or_default() += 1;
        }
    }
    for (k, n) in &per_k {
        assert_eq!(
            *n, SERIES,
            "batch {k} is partially present ({n} of {SERIES} samples)"
        );
    }
    per_k.into_keys().collect()
}

/// The child: not a test by itself (ignored), run by `crash_and_recover`.
#[test]
#[ignore = "helper process for crash_and_recover"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = Db::open(&dir, options()).unwrap();
    let mut k = present_batches(&db).last().map_or(0, |k| k + 1);
    let mut out = std::io::stdout().lock();
    loop {
        db.append(&batch(k)).unwrap();
        writeln!(out, "ACK {k}").unwrap();
        out.flush().unwrap();
        if k % 5 == 0 {
            db.maintain().unwrap();
        }
        k += 1;
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run_child_and_kill(dir: &Path, after: Duration) -> Vec<i64> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("ACK ") {
                if let Ok(k) = k.trim().parse::<i64>() {
                    let _ = tx.send(k);
                }
            }
        }
    });
    // Wait until the child is ingesting, then let it run for `after`.
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("child never acknowledged a batch");
    std::thread::sleep(after);
    // SIGKILL: no destructor, no flush, no chance to tidy up.
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let mut acked = vec![first];
    acked.extend(rx.try_iter());
    acked
}

#[test]
fn crash_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut all_acked: Vec<i64> = Vec::new();
    let mut blocks_seen = 0;
    for round in 0..20 {
        let after = Duration::from_millis(20 + rng.next() % 400);
        let acked = run_child_and_kill(dir.path(), after);
        all_acked.extend(&acked);
        let db = Db::open(dir.path(), options()).unwrap();
        let present = present_batches(&db);
        let last_acked = *all_acked.iter().max().unwrap();
        let present_set: std::collections::BTreeSet<i64> = present.iter().copied().collect();
        // Retention is far longer than the run: nothing may be missing.
        for k in &all_acked {
            assert!(
                present_set.contains(k),
                "round {round} (seed {seed}): acknowledged batch {k} lost"
            );
        }
        // Nothing that was not attempted: at most the one in-flight batch
        // beyond the last acknowledgement.
        if let Some(&max) = present.last() {
            assert!(
                max <= last_acked + 1,
                "round {round} (seed {seed}): batch {max} present, last ack {last_acked}"
            );
        }
        let stats = db.stats();
        assert_eq!(
            stats.quarantined_blocks, 0,
            "round {round}: a block was damaged"
        );
        blocks_seen = blocks_seen.max(stats.blocks);
        drop(db);
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash test over time budget"
        );
    }
    assert!(
        all_acked.len() > 100,
        "only {} batches acknowledged",
        all_acked.len()
    );
    // The kills must have covered block cuts and checkpoints, not only WAL
    // appends.
    assert!(blocks_seen >= 2, "no blocks were cut during the run");
    eprintln!(
        "crash test: 20 kills, {} acknowledged batches of {SERIES} samples, up to {blocks_seen} blocks",
        all_acked.len()
    );
}
