//! Parser throughput (MB/s and samples/s) on the captured node-exporter body
//! and on a generated 10k-series histogram-heavy body, in both formats,
//! consuming every entry through the iterator.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use panoptes_exposition::{Entry, Format, Parser};

fn testdata(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/exposition")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Converts a text-format body to OpenMetrics: `untyped` becomes `unknown`,
/// comments and blank lines go, and `# EOF` ends it. Family names stay as
/// they are (a counter family keeps its `_total`, which both Prometheus and
/// this parser accept).
fn to_openmetrics(text: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(text).expect("utf8 body");
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if line.is_empty()
            || (line.starts_with('#')
                && !line.starts_with("# HELP ")
                && !line.starts_with("# TYPE "))
        {
            continue;
        }
        match line.strip_suffix(" untyped") {
            Some(head) if line.starts_with("# TYPE ") => {
                out.push_str(head);
                out.push_str(" unknown\n");
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str("# EOF\n");
    out.into_bytes()
}

/// 10k histogram series (12 buckets + sum + count each) over 500 families,
/// with three labels per series, in the text format.
fn histogram_body() -> Vec<u8> {
    let bounds = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
    ];
    let mut out = String::new();
    for f in 0..500 {
        let fam = format!("app_request_duration_{f}_seconds");
        let _ = writeln!(out, "# HELP {fam} Request latency of handler group {f}.");
        let _ = writeln!(out, "# TYPE {fam} histogram");
        for s in 0..20 {
            let labels = format!(
                "method=\"GET\",handler=\"/api/v1/resource/{s}\",instance=\"10.0.{f}.{s}:8080\""
            );
            let mut cum = 0u64;
            for (i, b) in bounds.iter().enumerate() {
                cum += (i as u64 * 7 + s) % 13;
                let _ = writeln!(out, "{fam}_bucket{{{labels},le=\"{b}\"}} {cum}");
            }
            let _ = writeln!(out, "{fam}_bucket{{{labels},le=\"+Inf\"}} {cum}");
            let _ = writeln!(out, "{fam}_sum{{{labels}}} {}.{}", cum * 3, s);
            let _ = writeln!(out, "{fam}_count{{{labels}}} {cum}");
        }
    }
    out.into_bytes()
}

fn count_samples(body: &[u8], format: Format) -> u64 {
    let mut n = 0;
    for e in Parser::new(body, format) {
        if let Entry::Sample(_) = e.expect("bench body parses") {
            n += 1;
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let node = testdata("node_exporter.prom.txt");
    let hist = histogram_body();
    let bodies = [
        ("node_exporter/text", node.clone(), Format::PrometheusText),
        (
            "node_exporter/openmetrics",
            to_openmetrics(&node),
            Format::OpenMetrics,
        ),
        ("histograms_10k/text", hist.clone(), Format::PrometheusText),
        (
            "histograms_10k/openmetrics",
            to_openmetrics(&hist),
            Format::OpenMetrics,
        ),
    ];
    let mut group = c.benchmark_group("parse");
    for (name, body, format) in &bodies {
        let samples = count_samples(body, *format);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut sum = 0.0;
                for e in Parser::new(black_box(body), *format) {
                    if let Ok(Entry::Sample(s)) = e {
                        sum += s.value + s.labels.len() as f64;
                    }
                }
                black_box(sum)
            })
        });
        // A samples/s figure alongside criterion's bytes/s.
        let rounds = 50;
        let start = Instant::now();
        for _ in 0..rounds {
            black_box(count_samples(black_box(body), *format));
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name}: {} bytes, {samples} samples; {:.1} MB/s, {:.2} M samples/s",
            body.len(),
            (body.len() * rounds) as f64 / secs / 1e6,
            (samples as f64 * rounds as f64) / secs / 1e6
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
