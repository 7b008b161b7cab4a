//! `panoptes run` end to end: health endpoints, self-metrics, tap, reload
//! (HTTP, SIGHUP, --watch; valid and invalid files) and clean shutdown.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{write, Running};

fn discovery_pipeline(targets: &[&str]) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "stages:\n  targets:\n    kind: discovery\n    static_configs: [{{targets: [{}], labels: {{job: demo}}}}]\n  other:\n    kind: relabel\n    rules: []\n",
        list.join(", ")
    )
}

/// Starts `panoptes tap` in the background and returns its output lines
/// as they come.
fn tap(url: &str, stage: &str, limit: u32) -> std::sync::mpsc::Receiver<String> {
    let mut child = Command::new(support::bin())
        .args([
            "tap",
            url,
            stage,
            "--limit",
            &limit.to_string(),
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
        let _ = child.wait();
    });
    rx
}

#[test]
fn health_metrics_reload_tap_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", &discovery_pipeline(&["a:1"]));
    let mut p = Running::start(dir, "p.yaml", &[]);

    assert_eq!(p.get("/-/healthy").unwrap().0, 200);
    assert_eq!(
        p.metric("panoptes_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(
        p.metric("panoptes_stage_up{kind=\"discovery\",stage=\"targets\"}"),
        Some(1.0)
    );
    let stages = p.get("/api/v1/status/stages").unwrap().1;
    assert!(stages.contains("\"id\":\"targets\""), "{stages}");

    // Tap the discovery output, then change its targets: the tap sees the
    // new full set.
    let lines = tap(&p.url(""), "targets", 1);
    std::thread::sleep(Duration::from_millis(500));
    write(p.dir.path(), "p.yaml", &discovery_pipeline(&["a:1", "b:2"]));
    let (code, body) = p.post("/-/reload");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("kept=1 reconfigured=0 rebuilt=1") || body.contains("reconfigured=1"),
        "{body}"
    );
    let line = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a tapped target group");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["stage"], "targets");
    assert_eq!(v["type"], "target_group");
    let addrs: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["__address__"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["a:1", "b:2"]);

    // An unchanged file reloads without restarting anything.
    let (code, body) = p.post("/-/reload");
    assert_eq!(code, 200);
    assert!(
        body.contains("kept=2 reconfigured=0 rebuilt=0 added=0 removed=0"),
        "{body}"
    );

    // A broken file is rejected; the old pipeline keeps running.
    write(
        p.dir.path(),
        "p.yaml",
        "stages:\n  targets:\n    kind: discovery\n    static_configs: 5\n",
    );
    let (code, body) = p.post("/-/reload");
    assert_eq!(code, 500);
    assert!(
        body.contains("p.yaml:4:21: stages.targets.static_configs: expected a list"),
        "{body}"
    );
    assert_eq!(
        p.metric("panoptes_config_last_reload_successful"),
        Some(0.0)
    );
    let status = p.get("/api/v1/status/reload").unwrap().1;
    assert!(status.contains("expected a list"), "{status}");
    assert_eq!(
        p.metric("panoptes_stage_up{kind=\"discovery\",stage=\"targets\"}"),
        Some(1.0)
    );

    // SIGHUP reloads too: fix the file and the flag comes back.
    write(p.dir.path(), "p.yaml", &discovery_pipeline(&["c:3"]));
    p.signal(libc::SIGHUP);
    p.wait_until(Duration::from_secs(10), "SIGHUP reload", |p| {
        p.metric("panoptes_config_last_reload_successful") == Some(1.0)
    });

    let (code, log) = p.terminate();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("pipeline stopped"), "{log}");
}

#[test]
fn watch_reloads_when_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", &discovery_pipeline(&["a:1"]));
    let p = Running::start(dir, "p.yaml", &["--watch"]);
    write(p.dir.path(), "p.yaml", &discovery_pipeline(&["a:1", "z:9"]));
    p.wait_until(Duration::from_secs(10), "watch reload", |p| {
        p.metric("panoptes_config_reloads_total{result=\"success\"}") == Some(1.0)
    });
}

#[test]
fn tap_of_an_unknown_stage_names_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", &discovery_pipeline(&["a:1"]));
    let p = Running::start(dir, "p.yaml", &[]);
    let out = Command::new(support::bin())
        .args(["tap", &p.url(""), "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no stage output matches \"nope\""), "{err}");
    assert!(err.contains("targets"), "{err}");
}

#[test]
fn run_rejects_an_invalid_file_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", "stages:\n  x:\n    kind: nope\n");
    let out = Command::new(support::bin())
        .args(["run", "p.yaml", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("p.yaml:3:11: stages.x.kind: unknown stage kind \"nope\""));
}

/// Data keeps flowing through reloads: a relabel stage between scrape and
/// the file sink is changed (and so rebuilt or reconfigured) several times
/// while scraping every 100 ms; afterwards the file holds one `up` sample
/// per scrape interval with no gap, and samples of every generation.
#[test]
fn reload_while_scraping_loses_nothing() {
    let target = support::Target::start("# TYPE demo_total counter\ndemo_total 42\n");
    let pipeline = |generation: u32| {
        format!(
            "global: {{scrape_interval: 100ms, scrape_timeout: 90ms}}\nstages:\n  targets:\n    kind: discovery\n    static_configs: [{{targets: [\"{}\"]}}]\n  scrape:\n    kind: scrape\n    inputs: [targets]\n    job_name: demo\n  tag:\n    kind: relabel\n    inputs: [scrape]\n    rules: [{{action: replace, target_label: generation, replacement: \"g{generation}\"}}]\n  out:\n    kind: file\n    inputs: [tag]\n    path: out.txt\n",
            target.addr()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", &pipeline(0));
    let mut p = Running::start(dir, "p.yaml", &[]);
    let out = p.path("out.txt");
    let ups = |text: &str| -> Vec<(i64, String)> {
        text.lines()
            .filter(|l| l.starts_with("up{"))
            .map(|l| {
                let ts = l.rsplit(' ').next().unwrap().parse().unwrap();
                let g = l
                    .split("generation=\"")
                    .nth(1)
                    .unwrap_or("")
                    .split('"')
                    .next()
                    .unwrap_or("")
                    .to_string();
                (ts, g)
            })
            .collect()
    };
    p.wait_until(Duration::from_secs(10), "first scrapes", |_| {
        ups(&std::fs::read_to_string(&out).unwrap_or_default()).len() >= 3
    });
    for generation in 1..=5 {
        write(p.dir.path(), "p.yaml", &pipeline(generation));
        let (code, body) = p.post("/-/reload");
        assert_eq!(code, 200, "{body}");
        assert!(
            body.contains("kept=3"),
            "only the relabel stage changes: {body}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, log) = p.terminate();
    assert_eq!(code, Some(0), "{log}");
    let text = std::fs::read_to_string(&out).unwrap();
    let ups = ups(&text);
    let gens: std::collections::BTreeSet<_> = ups.iter().map(|(_, g)| g.clone()).collect();
    assert_eq!(gens.len(), 6, "samples of every generation: {gens:?}");
    for w in ups.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(
            (50..=150).contains(&gap),
            "one up sample per 100 ms scrape, in order, none lost: gap {gap} ms between {:?} and {:?}",
            w[0],
            w[1]
        );
    }
    assert!(text.contains("demo_total{"), "{text}");
}

/// The errors `panoptes validate FILE` prints for `file` (run in `dir`),
/// without its summary line.
fn validate_errors(dir: &std::path::Path, file: &str) -> String {
    let out = Command::new(support::bin())
        .args(["validate", file])
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    lines[..lines.len() - 1].join("\n")
}

/// The server runs the JSON-Schema step (start and reload) in a helper
/// process, so that jsonschema's meta-schema validator (~11 MB, never freed)
/// is not built in it; what the helper finds is reported exactly as
/// `panoptes validate` reports the file. The pipeline sits in a
/// subdirectory: the helper resolves relative paths as the server does.
#[test]
fn schema_errors_at_start_and_reload_read_as_validate_says() {
    let dir = tempfile::tempdir().unwrap();
    let good = discovery_pipeline(&["a:1"]);
    // An unknown field (a schema error) in one stage, and a missing file
    // (a typed-config error, relative to conf/) in another.
    let broken = "stages:\n  targets:\n    kind: discovery\n    static_configs: [{targets: [\"a:1\"]}]\n    refresh: 5s\n  scrape:\n    kind: scrape\n    inputs: [targets]\n    job_name: demo\n    authorization: {credentials_file: token}\n";

    // Refused before starting, with validate's words.
    write(dir.path(), "conf/p.yaml", broken);
    let expected = validate_errors(dir.path(), "conf/p.yaml");
    assert!(
        expected.contains("conf/p.yaml:5:5: stages.targets.refresh: unknown field \"refresh\""),
        "{expected}"
    );
    assert!(expected.contains("cannot read conf/token"), "{expected}");
    let out = Command::new(support::bin())
        .args([
            "run",
            "conf/p.yaml",
            "--listen",
            "127.0.0.1:0",
            "--log.level",
            "debug",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{expected}\n")), "{stderr}");
    assert!(
        stderr.contains("schema check outside this process: invalid"),
        "{stderr}"
    );

    // A reload of the same file is refused with the same words; the old
    // pipeline keeps running.
    write(dir.path(), "conf/p.yaml", &good);
    let p = Running::start(dir, "conf/p.yaml", &["--log.level", "debug"]);
    write(p.dir.path(), "conf/p.yaml", broken);
    let (code, body) = p.post("/-/reload");
    assert_eq!(code, 500, "{body}");
    assert_eq!(
        body,
        format!(
            "failed to reload config: invalid pipeline, keeping the running one:\n{expected}\n"
        )
    );
    assert_eq!(
        p.metric("panoptes_config_last_reload_successful"),
        Some(0.0)
    );
    let status: serde_json::Value =
        serde_json::from_str(&p.get("/api/v1/status/reload").unwrap().1).unwrap();
    assert_eq!(
        status["data"]["last_error"],
        format!("invalid pipeline, keeping the running one:\n{expected}")
    );
    assert_eq!(
        p.metric("panoptes_stage_up{kind=\"discovery\",stage=\"targets\"}"),
        Some(1.0)
    );
    let log = p.log();
    assert!(
        log.contains("schema check outside this process: valid"),
        "the start used the helper: {log}"
    );
    assert!(
        log.contains("schema check outside this process: invalid"),
        "the reload used the helper: {log}"
    );
    assert!(!log.contains("checking in this process"), "{log}");

    // Fixed, it reloads.
    write(p.dir.path(), "conf/p.yaml", &discovery_pipeline(&["b:2"]));
    let (code, body) = p.post("/-/reload");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        p.metric("panoptes_config_last_reload_successful"),
        Some(1.0)
    );
}
