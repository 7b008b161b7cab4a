//! Scrape-path benchmark (`cargo bench -p panoptes-scrape`).
//!
//! 1. The append path alone (parse + series cache + metric relabeling +
//!    batch building) over 50 targets × 2000 series, steady state.
//! 2. The whole stage against a local target farm: 50 targets × 2000 series
//!    scraped every second for `PANOPTES_BENCH_SECS` (default 10) seconds.
//!    The farm runs in a child process so that the CPU time measured (from
//!    /proc/self/stat) is the scraper's alone: HTTP, parse, relabel, batch.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_engine::global::GlobalConfig;
use panoptes_engine::port::{Downstream, EdgeCounters, Input, Output};
use panoptes_engine::stage::{CompileContext, Message, MessageType, StageContext, StageKind};
use panoptes_exposition::Format;
use panoptes_model::{Labels, TargetGroup, TargetSet};
use panoptes_scrape::cache::{AppendSettings, SeriesCache};
use panoptes_scrape::config::Limits;
use panoptes_scrape::ScrapeKind;

// The allocator matters for a path that allocates a label vector per
// sample: glibc's malloc is slow when another thread frees (the consumer).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TARGETS: usize = 50;
const SERIES: usize = 2000;

/// A node-exporter-like body of exactly `SERIES` samples: counters and
/// gauges with a few labels, and histograms. `round` changes every value
/// (the same series, in the same order, with fresh values: what a real
/// exporter serves scrape after scrape).
fn body(target: usize, round: usize) -> String {
    let mut s = String::new();
    let mut n = 0;
    let mut fam = 0;
    while n < SERIES {
        if fam % 5 == 4 {
            s.push_str(&format!(
                "# HELP http_request_duration_seconds_{fam} Request latency.\n"
            ));
            s.push_str(&format!(
                "# TYPE http_request_duration_seconds_{fam} histogram\n"
            ));
            for le in ["0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"] {
                if n >= SERIES {
                    break;
                }
                s.push_str(&format!(
                    "http_request_duration_seconds_{fam}_bucket{{handler=\"/api/v1/query\",method=\"GET\",le=\"{le}\"}} {}\n",
                    n * 3 + target + round
                ));
                n += 1;
            }
        } else {
            s.push_str(&format!("# HELP node_metric_{fam}_total A counter.\n# TYPE node_metric_{fam}_total counter\n"));
            for i in 0..16 {
                if n >= SERIES {
                    break;
                }
                s.push_str(&format!(
                    "node_metric_{fam}_total{{cpu=\"{i}\",mode=\"user\",device=\"sda{i}\"}} {}.{}\n",
                    n * 7 + target + round,
                    i
                ));
                n += 1;
            }
        }
        fam += 1;
    }
    s
}

fn cpu_seconds() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks
    // (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn append_path() {
    let bodies: Vec<String> = (0..TARGETS).map(|t| body(t, 0)).collect();
    let rules = panoptes_relabel::compile_rules(
        &serde_json::json!([{"source_labels": ["__name__"], "regex": "go_gc_.*", "action": "drop"}]),
        "metric_relabel_configs",
    )
    .expect("valid rules");
    let settings: Vec<AppendSettings> = (0..TARGETS)
        .map(|i| AppendSettings {
            target_labels: Labels::from_pairs([
                ("instance", format!("10.0.0.{i}:9100")),
                ("job", "node".to_string()),
            ]),
            honor_labels: false,
            honor_timestamps: true,
            metric_relabel: Arc::new(rules.clone()),
            limits: Limits::default(),
        })
        .collect();
    let mut caches: Vec<SeriesCache> = (0..TARGETS).map(|_| SeriesCache::new()).collect();
    let t0 = Instant::now();
    for i in 0..TARGETS {
        let r = caches[i].append(
            bodies[i].as_bytes(),
            Format::PrometheusText,
            0,
            &settings[i],
        );
        assert!(r.error.is_none(), "{:?}", r.error);
    }
    let cold = t0.elapsed();
    // The machine may be shared: interleave the two measurements and keep
    // the best of several repetitions of each.
    let rounds = 4;
    let mut best_parse = f64::MAX;
    let mut best_append = f64::MAX;
    let mut round_no = 0i64;
    for _ in 0..5 {
        // Fresh values every scrape, generated outside the timed part.
        let fresh: Vec<Vec<String>> = (0..rounds)
            .map(|r| {
                (0..TARGETS)
                    .map(|t| body(t, round_no as usize + r + 1))
                    .collect()
            })
            .collect();
        let t0 = Instant::now();
        let mut parsed = 0usize;
        for bodies in &fresh {
            for b in bodies {
                parsed += panoptes_exposition::Parser::new(b.as_bytes(), Format::PrometheusText)
                    .filter(|e| matches!(e, Ok(panoptes_exposition::Entry::Sample(_))))
                    .count();
            }
        }
        best_parse = best_parse.min(t0.elapsed().as_nanos() as f64 / parsed as f64);
        let t0 = Instant::now();
        let mut n = 0usize;
        for bodies in &fresh {
            round_no += 1;
            for i in 0..TARGETS {
                let r = caches[i].append(
                    bodies[i].as_bytes(),
                    Format::PrometheusText,
                    round_no * 1000,
                    &settings[i],
                );
                assert!(
                    r.error.is_none() && r.samples.len() == SERIES,
                    "{:?} {}",
                    r.error,
                    r.samples.len()
                );
                n += r.samples.len();
            }
        }
        best_append = best_append.min(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    let bytes: usize = bodies.iter().map(String::len).sum();
    println!(
        "append path, first scrape (label building): {:.0} ns/sample",
        cold.as_nanos() as f64 / (TARGETS * SERIES) as f64
    );
    println!("parser alone: {best_parse:.0} ns/sample");
    println!(
        "append path (parse + cache + relabel + batch), steady state: {best_append:.0} ns/sample, {:.2} M samples/s, {:.0} MB/s",
        1e3 / best_append,
        bytes as f64 / (TARGETS * SERIES) as f64 * 1e3 / best_append
    );
    println!(
        "append path minus parser (cache + batch): {:.0} ns/sample",
        best_append - best_parse
    );
}

/// Child process: serve the farm and print the port.
fn serve_farm() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
            (0..TARGETS)
                .map(|i| bytes::Bytes::from(body(i, 0)))
                .collect(),
        );
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |q: axum::extract::Query<BTreeMap<String, usize>>| {
                let bodies = bodies.clone();
                async move {
                    let i = q.get("t").copied().unwrap_or(0) % TARGETS;
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        bodies[i].clone(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        let _ = axum::serve(listener, app).await;
    });
}

fn farm(secs: u64) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = std::process::Command::new(exe)
        .env("PANOPTES_BENCH_FARM", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("farm starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let port: u16 = line.trim().parse().expect("port number");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cctx = CompileContext {
        stage_id: "farm".into(),
        base_dir: ".".into(),
        global: GlobalConfig::default(),
    };
    let cfg = ScrapeKind
        .compile(
            &cctx,
            &serde_json::json!({"scrape_interval": "1s", "scrape_timeout": "1s"}),
        )
        .expect("valid");
    let (in_tx, in_rx) = crossbeam_channel::bounded(4);
    let out = Output::new("farm", "", MessageType::Samples);
    let (out_tx, out_rx) = crossbeam_channel::bounded(1024);
    out.set_downstream(vec![Downstream {
        stage: "sink".into(),
        tx: out_tx,
        drop_when_full: false,
        counters: Arc::new(EdgeCounters::default()),
    }]);
    let mut outputs = BTreeMap::new();
    outputs.insert(String::new(), out);
    let ctx = StageContext {
        input: Some(Input::new(in_rx)),
        outputs,
        ..StageContext::standalone("farm", rt.handle().clone(), ".")
    };
    let running = cfg.start(ctx).expect("starts");
    let targets: Vec<Labels> = (0..TARGETS)
        .map(|i| {
            Labels::from_pairs([
                ("__address__", format!("127.0.0.1:{port}")),
                ("__param_t", i.to_string()),
                ("shard", i.to_string()),
            ])
        })
        .collect();
    in_tx
        .send(Message::Targets(Arc::new(TargetSet {
            provider: Arc::from("bench"),
            groups: vec![TargetGroup {
                source: "0".into(),
                targets,
                labels: Labels::empty(),
            }],
        })))
        .expect("send targets");
    // Let every loop reach its slot and warm its cache.
    let warm_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < warm_until {
        let _ = out_rx.recv_timeout(Duration::from_millis(100));
    }
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut samples = 0usize;
    let mut batches = 0usize;
    let mut up = 0usize;
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Ok(Message::Samples(b)) = out_rx.recv_timeout(Duration::from_millis(100)) {
            samples += b.samples.len();
            batches += 1;
            // The synthetic series end the batch.
            up += b
                .samples
                .iter()
                .rev()
                .take(5)
                .filter(|s| s.labels.metric_name() == Some("up") && s.value == 1.0)
                .count();
        }
    }
    let cpu = cpu_seconds() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    running.stop();
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "farm (mimalloc) {TARGETS}x{SERIES} @1s for {wall:.1}s: {batches} scrapes ({up} up), {samples} samples, {:.0} samples/s, CPU {cpu:.2}s = {:.3} CPU-s per million samples ({:.1}% of one core)",
        samples as f64 / wall,
        cpu / (samples as f64 / 1e6),
        cpu / wall * 100.0
    );
}

fn main() {
    if std::env::var_os("PANOPTES_BENCH_FARM").is_some() {
        serve_farm();
        return;
    }
    // `cargo test` runs benches with --bench only when asked; keep quiet
    // otherwise.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if std::env::var("PANOPTES_BENCH_ONLY").as_deref() != Ok("farm") {
        append_path();
    }
    let secs = std::env::var("PANOPTES_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    if secs > 0 {
        farm(secs);
    }
}
