//! `panoptes tsdb analyze|dump DIR`: look into a store's directory from the
//! command line (cardinality and churn; samples as text). The store must
//! not be running: the directory is locked by whoever has it open.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use panoptes_model::{Matcher, SeriesSelect};
use panoptes_tsdb::{Db, Options};

fn open(dir: &Path) -> anyhow::Result<Db> {
    if !dir.join("wal").is_dir() && !dir.is_dir() {
        bail!("{} is not a store directory", dir.display());
    }
    // Never delete anything while looking: no retention.
    let opts = Options {
        retention_ms: i64::MAX,
        retention_size: None,
        ..Options::default()
    };
    Db::open(dir, opts).with_context(|| {
        format!(
            "cannot open the store at {} (is a pipeline running on it?)",
            dir.display()
        )
    })
}

/// Cardinality report: top metrics, label pairs, label names, block churn.
pub fn analyze(dir: &Path, limit: usize) -> anyhow::Result<ExitCode> {
    let db = open(dir)?;
    let a = db.analyze(limit).context("analysis failed")?;
    println!(
        "Series: {} ({} in the head), blocks: {}",
        a.series, a.head_series, a.blocks
    );
    println!("\nHighest cardinality metric names:");
    for (name, n) in &a.top_metrics {
        println!("{n:>10} {name}");
    }
    println!("\nHighest cardinality label pairs:");
    for (name, value, n) in &a.top_label_pairs {
        println!("{n:>10} {name}={value:?}");
    }
    println!("\nLabel names with the most values:");
    for (name, n) in &a.top_label_names {
        println!("{n:>10} {name}");
    }
    if !a.churn.is_empty() {
        println!("\nSeries churn per block (oldest first):");
        println!(
            "{:>28} {:>10} {:>10} {:>10}",
            "block", "series", "created", "gone"
        );
        for c in &a.churn {
            println!(
                "{:>28} {:>10} {:>10} {:>10}",
                c.ulid, c.series, c.created, c.gone
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Samples of the matching series as text-format lines with timestamps.
pub fn dump(
    dir: &Path,
    selectors: &[String],
    min_ms: i64,
    max_ms: i64,
) -> anyhow::Result<ExitCode> {
    let mut sets: Vec<Vec<Matcher>> = Vec::new();
    for sel in selectors {
        match panoptes_promql_parser::parse(sel) {
            Ok(panoptes_promql_parser::Expr::Vector(vs)) => sets.push(vs.matchers.clone()),
            Ok(_) => bail!("--match {sel:?}: not a series selector"),
            Err(e) => bail!("--match {sel:?}: {e}"),
        }
    }
    if sets.is_empty() {
        sets.push(vec![Matcher::new(
            panoptes_model::MatchOp::RegexMatch,
            "__name__",
            ".+",
        )?]);
    }
    let db = open(dir)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = String::new();
    for ms in &sets {
        for series in db.select(ms, min_ms, max_ms).context("select failed")? {
            for (t, v) in &series.samples {
                line.clear();
                panoptes_file::format_sample_line(
                    &mut line,
                    &panoptes_model::Sample {
                        labels: series.labels.clone(),
                        timestamp_ms: *t,
                        value: *v,
                    },
                );
                out.write_all(line.as_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
