//! Latency of a battery of typical queries over a synthetic MemStore
//! (counters, gauges and classic histograms, 6 h at 15 s resolution).
//! Prints the median of several runs per query; `cargo bench -p
//! panoptes-promql`.

use std::time::{Duration, Instant};

use panoptes_model::Labels;
use panoptes_promql::parser::parse;
use panoptes_promql::{Engine, EngineOptions, MemStore};

const HOURS: i64 = 6;
const SCRAPE_MS: i64 = 15_000;

fn build_store() -> MemStore {
    let mut s = MemStore::new();
    let n = HOURS * 3600 * 1000 / SCRAPE_MS;
    for job in 0..10 {
        for inst in 0..50 {
            let job_s = format!("job{job}");
            let inst_s = format!("10.0.{job}.{inst}:9100");
            let c = Labels::from_pairs([
                ("__name__", "http_requests_total"),
                ("job", job_s.as_str()),
                ("instance", inst_s.as_str()),
            ]);
            let g = Labels::from_pairs([
                ("__name__", "memory_bytes"),
                ("job", job_s.as_str()),
                ("instance", inst_s.as_str()),
            ]);
            let mut v = 0.0;
            for i in 0..n {
                v += ((i * 7 + inst) % 13) as f64;
                s.add(&c, i * SCRAPE_MS, v);
                s.add(
                    &g,
                    i * SCRAPE_MS,
                    1e6 + ((i * 31 + inst * 17) % 1000) as f64,
                );
            }
            if inst < 10 {
                for (bi, le) in ["0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
                    .iter()
                    .enumerate()
                {
                    let b = Labels::from_pairs([
                        ("__name__", "request_duration_seconds_bucket"),
                        ("job", job_s.as_str()),
                        ("instance", inst_s.as_str()),
                        ("le", le),
                    ]);
                    let mut acc = 0.0;
                    for i in 0..n {
                        acc += (bi as f64 + 1.0) * (1 + (i + inst) % 3) as f64;
                        s.add(&b, i * SCRAPE_MS, acc);
                    }
                }
            }
        }
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let t0 = Instant::now();
    let store = build_store();
    eprintln!("store: {} series built in {:?}", store.len(), t0.elapsed());
    let engine = Engine::new(EngineOptions::default());
    let end = HOURS * 3600 * 1000;
    let battery: &[(&str, &str, bool)] = &[
        (
            "selective selector",
            "http_requests_total{job=\"job3\",instance=\"10.0.3.7:9100\"}",
            false,
        ),
        ("wide selector", "http_requests_total", false),
        (
            "sum by rate",
            "sum by (job) (rate(http_requests_total[5m]))",
            false,
        ),
        (
            "histogram_quantile",
            "histogram_quantile(0.9, sum by (le, job) (rate(request_duration_seconds_bucket[5m])))",
            false,
        ),
        ("topk", "topk(5, rate(http_requests_total[5m]))", false),
        (
            "regex matcher",
            "sum(rate(http_requests_total{job=~\"job[1-3]\"}[5m]))",
            false,
        ),
        (
            "subquery",
            "max_over_time(rate(http_requests_total{job=\"job1\"}[5m])[1h:1m])",
            false,
        ),
        (
            "binary join",
            "memory_bytes / on(job, instance) rate(http_requests_total[5m])",
            false,
        ),
        (
            "range 6h@60s sum rate",
            "sum by (job) (rate(http_requests_total[5m]))",
            true,
        ),
        ("range 6h@60s wide", "rate(http_requests_total[5m])", true),
        (
            "range 6h@60s quantile",
            "histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
            true,
        ),
    ];
    // PROMQL_BENCH_ONLY=<name> repeats one query (for profiling).
    let only = std::env::var("PROMQL_BENCH_ONLY").ok();
    let runs = if only.is_some() { 200 } else { 7 };
    println!("{:<28} {:>12}", "query", "median");
    for (name, q, range) in battery {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let expr = parse(q).expect("battery query parses");
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let r = if *range {
                engine.range(&store, &expr, end - 6 * 3600 * 1000 + 60_000, end, 60_000)
            } else {
                engine.instant(&store, &expr, end)
            };
            r.expect("battery query runs");
            times.push(t.elapsed());
        }
        println!("{:<28} {:>12.3?}", name, median(times));
    }
}
