//! `panoptes record` then `run --replay`: a live target is recorded into a
//! plain directory, a person deletes its later responses to fake an outage,
//! and replays run on the virtual clock, deterministically: the same output
//! twice, `up 1` while responses exist and `up 0` after.

mod support;

use std::process::Command;

use support::{write, Target};

#[test]
fn record_edit_and_replay_deterministically() {
    let target = Target::start(
        "# TYPE jobs_done counter\njobs_done_total 7\n# TYPE temp gauge\ntemp 20.5\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let pipeline = format!(
        "global: {{scrape_interval: 200ms, scrape_timeout: 150ms}}\nstages:\n  targets:\n    kind: discovery\n    static_configs: [{{targets: [\"{}\"]}}]\n  scrape:\n    kind: scrape\n    inputs: [targets]\n    job_name: rec\n  out:\n    kind: file\n    inputs: [scrape]\n    path: out.txt\n",
        target.addr()
    );
    write(dir.path(), "p.yaml", &pipeline);

    let rec = Command::new(support::bin())
        .args(["record", "p.yaml", "--duration", "3s", "--out", "rec"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    drop(target);

    // The layout is plain: one directory per job/instance, one file per
    // response, HTTP-like headers then the body.
    let job_dir = dir.path().join("rec/rec");
    let inst = std::fs::read_dir(&job_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut files: Vec<_> = std::fs::read_dir(&inst)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| s.parse::<i64>().is_ok())
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "about 15 responses in 3s at 200ms: {}",
        files.len()
    );
    let first = std::fs::read_to_string(&files[0]).unwrap();
    assert!(first.contains("status: 200"), "{first}");
    assert!(first.contains("temp 20.5"), "{first}");

    // Fake an outage: delete the last four responses.
    let kept = files.len() - 4;
    for f in &files[kept..] {
        std::fs::remove_file(f).unwrap();
    }
    // A scrape that failed while recording (a timeout on a loaded machine)
    // is recorded as a failure and replays as one.
    let good = files[..kept]
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("status: 200"))
        .count();

    let replay = || {
        let _ = std::fs::remove_file(dir.path().join("out.txt"));
        let out = Command::new(support::bin())
            .args([
                "run",
                "p.yaml",
                "--replay",
                "rec",
                "--listen",
                "127.0.0.1:0",
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap()
    };
    let a = replay();
    let b = replay();
    assert_eq!(a, b, "replays are deterministic");

    let ups: Vec<&str> = a
        .lines()
        .filter(|l| l.starts_with("up{"))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(ups.iter().filter(|v| **v == "1").count(), good, "{a}");
    assert!(
        ups.iter().filter(|v| **v == "0").count() >= 3,
        "the faked outage shows as up 0: {a}"
    );
    assert!(a.contains("temp{instance=") && a.contains(" 20.5 "), "{a}");
    assert!(
        a.lines()
            .any(|l| l.starts_with("temp{") && l.contains(" stale ")),
        "series go stale in the outage: {a}"
    );
}
