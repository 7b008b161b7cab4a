//! A bounded push load generator for comparing push_ingest with a
//! Pushgateway: pre-populates K groups, then sends N pushes (70% PUT, 30%
//! POST) of small groups over random keys from C concurrent keep-alive
//! connections, and reports pushes/s, p50/p99 latency, and (given the
//! server's pid) CPU per push and RSS.
//!
//! `cargo run --release -p panoptes-push-ingest --example push_bench -- \
//!    --url http://127.0.0.1:29192 --keys 200 --pushes 50000 --concurrency 16 --pid PID [--max-seconds 60] [--label NAME]`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    keys: usize,
    pushes: usize,
    concurrency: usize,
    pid: Option<u32>,
    max_seconds: u64,
    label: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:29192".into(),
        keys: 200,
        pushes: 50_000,
        concurrency: 16,
        pid: None,
        max_seconds: 60,
        label: "server".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        let v = argv[i + 1].clone();
        match argv[i].as_str() {
            "--url" => a.url = v,
            "--keys" => a.keys = v.parse().expect("--keys N"),
            "--pushes" => a.pushes = v.parse().expect("--pushes N"),
            "--concurrency" => a.concurrency = v.parse().expect("--concurrency N"),
            "--pid" => a.pid = Some(v.parse().expect("--pid PID")),
            "--max-seconds" => a.max_seconds = v.parse().expect("--max-seconds S"),
            "--label" => a.label = v,
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

/// User+system CPU seconds of a process, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((utime + stime) / 100.0)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn body(key: usize, round: usize, post: bool) -> String {
    let v = (key * 31 + round) % 1000;
    if post {
        format!(
            "# TYPE bench_b gauge\nbench_b{{kind=\"x\"}} {v}\nbench_b{{kind=\"y\"}} {}\n",
            v + 1
        )
    } else {
        format!(
            "# HELP bench_a A counter.\n# TYPE bench_a counter\nbench_a {v}\n\
             # TYPE bench_b gauge\nbench_b{{kind=\"x\"}} {v}\nbench_b{{kind=\"y\"}} {}\n\
             # TYPE bench_c gauge\nbench_c 1\nbench_d{{stage=\"load\"}} {}.5\n",
            v + 1,
            v + 2
        )
    }
}

fn path(key: usize) -> String {
    format!("/metrics/job/bench_job/instance/host-{key}")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = parse_args();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let wipe = client
        .put(format!("{}/api/v1/admin/wipe", a.url))
        .send()
        .await;
    if !wipe.is_ok_and(|r| r.status().as_u16() == 202) {
        eprintln!("warning: could not wipe {} (admin API off?)", a.url);
    }
    // Pre-populate every key so the store holds K groups throughout.
    for k in 0..a.keys {
        let r = client
            .put(format!("{}{}", a.url, path(k)))
            .body(body(k, 0, false))
            .send()
            .await
            .expect("pre-populate push");
        assert!(r.status().is_success(), "pre-populate: {}", r.status());
    }
    let cpu0 = a.pid.and_then(cpu_seconds);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.max_seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (client, next, url) = (client.clone(), next.clone(), a.url.clone());
        let (pushes, keys) = (a.pushes, a.keys);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pushes || Instant::now() > deadline {
                    break;
                }
                // A fixed pseudo-random walk over the keys.
                let key = (i.wrapping_mul(2_654_435_761)) % keys;
                let post = i % 10 >= 7;
                let req = if post {
                    client.post(format!("{url}{}", path(key)))
                } else {
                    client.put(format!("{url}{}", path(key)))
                };
                let t = Instant::now();
                match req.body(body(key, i, post)).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("worker");
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = a.pid.and_then(cpu_seconds);
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let n = lat.len();
    let cpu_per_push_ms = match (cpu0, cpu1) {
        (Some(a0), Some(a1)) if n > 0 => format!("{:.3}", (a1 - a0) * 1000.0 / n as f64),
        _ => "-".into(),
    };
    let rss = a
        .pid
        .and_then(rss_mib)
        .map(|r| format!("{r:.0}"))
        .unwrap_or("-".into());
    println!(
        "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} |",
        a.label,
        a.keys,
        n,
        n as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        cpu_per_push_ms,
        rss,
        errors
    );
}
