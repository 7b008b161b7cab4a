//! `promqltest`: runs Prometheus PromQL test scripts (a directory of
//! `*.test` files, or files) against the Panoptes engine and prints
//! per-file and total pass/fail/skip counts. `--min-passed N` (for CI)
//! succeeds when at least N evals pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use panoptes_promql::promqltest::{harness_options, run_script, Outcome};

/// `writeln!` to stdout that ends the program quietly when the reader has
/// gone away (e.g. `promqltest … | head`).
macro_rules! say {
    ($out:expr) => {
        if writeln!($out).is_err() {
            return ExitCode::from(1);
        }
    };
    ($out:expr, $($arg:tt)*) => {
        if writeln!($out, $($arg)*).is_err() {
            return ExitCode::from(1);
        }
    };
}

fn main() -> ExitCode {
    let mut out = std::io::stdout().lock();
    let mut list_failures = false;
    let mut markdown = false;
    let mut min_passed: Option<usize> = None;
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list-failures" => list_failures = true,
            "--markdown" => markdown = true,
            "--min-passed" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => min_passed = Some(n),
                None => {
                    eprintln!("--min-passed needs a number");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                say!(
 out,
                    "usage: promqltest [--list-failures] [--markdown] [--min-passed N] <dir-or-file>..."
                );
                say!(
                    out,
                    "--markdown prints the per-file table of CONFORMANCE.md"
                );
                say!(out, "exit status 0 when nothing failed (or, with --min-passed, when at least N passed)");
                return ExitCode::SUCCESS;
            }
            _ => paths.push(PathBuf::from(a)),
        }
    }
    if paths.is_empty() {
        eprintln!("usage: promqltest [--list-failures] <dir-or-file>...");
        return ExitCode::from(2);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for p in &paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    let mut v: Vec<PathBuf> = rd
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "test"))
                        .collect();
                    v.sort();
                    files.extend(v);
                }
                Err(e) => {
                    eprintln!("{}: {e}", p.display());
                    return ExitCode::from(2);
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    let opts = harness_options();
    if markdown {
        say!(out, "| file | passed | failed | skipped (NH) |");
        say!(out, "|---|---:|---:|---:|");
    }
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut fatal = false;
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                fatal = true;
                continue;
            }
        };
        let r = run_script(&text, &opts);
        let name = f
            .file_name()
            .map(Path::new)
            .unwrap_or(f)
            .display()
            .to_string();
        let stopped = r
            .fatal
            .as_ref()
            .map(|e| format!(" (stopped: {e})"))
            .unwrap_or_default();
        if markdown {
            say!(
                out,
                "| {name} | {} | {} | {} |",
                r.passed(),
                r.failed(),
                r.skipped()
            );
        } else {
            say!(
                out,
                "{name}: {} passed, {} failed, {} skipped{stopped}",
                r.passed(),
                r.failed(),
                r.skipped()
            );
        }
        if r.fatal.is_some() {
            fatal = true;
        }
        if list_failures {
            for e in &r.evals {
                if let Outcome::Fail(why) = &e.outcome {
                    say!(
                        out,
                        "  {}:{}: {}\n      {}",
                        f.display(),
                        e.line,
                        e.expr,
                        why
                    );
                }
            }
        }
        passed += r.passed();
        failed += r.failed();
        skipped += r.skipped();
    }
    if markdown {
        say!(
            out,
            "| **total** | **{passed}** | **{failed}** | **{skipped}** |"
        );
        say!(out);
    }
    say!(out, "{passed} passed, {failed} failed, {skipped} skipped");
    let ok = match min_passed {
        Some(n) => passed >= n && !fatal,
        None => failed == 0 && !fatal,
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
