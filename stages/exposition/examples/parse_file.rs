//! Parses an exposition file and prints its entries, or with `--count N`
//! parses it N times and prints the throughput (for profiling).
//! Usage: cargo run -p panoptes-exposition --example parse_file -- FILE [--openmetrics] [--count N]

use std::time::Instant;

use panoptes_exposition::{Entry, Format, Parser};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: parse_file FILE [--openmetrics] [--count N]")?;
    let body = std::fs::read(path)?;
    let format = if args.iter().any(|a| a == "--openmetrics") || path.ends_with(".om.txt") {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    };
    let count: Option<usize> = args
        .iter()
        .position(|a| a == "--count")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse())
        .transpose()?;
    let Some(count) = count else {
        for entry in Parser::new(&body, format) {
            println!("{:?}", entry?);
        }
        return Ok(());
    };
    let start = Instant::now();
    let mut samples = 0u64;
    for _ in 0..count {
        for entry in Parser::new(&body, format) {
            if let Entry::Sample(s) = entry? {
                samples += 1;
                std::hint::black_box(&s);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} bytes x {count}: {:.1} MB/s, {:.2} M samples/s",
        body.len(),
        (body.len() * count) as f64 / secs / 1e6,
        samples as f64 / secs / 1e6
    );
    Ok(())
}
