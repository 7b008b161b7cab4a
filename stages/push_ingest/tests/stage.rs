//! End-to-end tests of the push_ingest stage: started by hand on
//! 127.0.0.1:0, driven over HTTP, its output read from a channel.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use panoptes_engine::clock::RealClock;
use panoptes_engine::global::GlobalConfig;
use panoptes_engine::port::{Downstream, EdgeCounters, Output};
use panoptes_engine::stage::{
    CompileContext, Message, MessageType, Reconfigure, RunningStage, StageConfig, StageContext,
    StageKind, StateSlot,
};
use panoptes_model::SampleBatch;
use panoptes_push_ingest::proto::{
    encode_delimited, metric_type, Bucket, Histogram, LabelPair, Metric, MetricFamily,
};
use panoptes_push_ingest::{PushIngest, PushIngestConfig, PushIngestKind};

fn compile(section: serde_json::Value, dir: &Path) -> Box<dyn StageConfig> {
    let cctx = CompileContext {
        stage_id: "push".into(),
        base_dir: dir.to_path_buf(),
        global: GlobalConfig::default(),
    };
    match PushIngestKind.compile(&cctx, &section) {
        Ok(c) => c,
        Err(issues) => panic!("config rejected: {issues:?}"),
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    rx: Receiver<Message>,
    stage: Option<Box<dyn RunningStage>>,
    base: String,
    metrics: prometheus::Registry,
    state: StateSlot,
}

fn with_listen(mut section: serde_json::Value) -> serde_json::Value {
    if section.get("listen").is_none() {
        section["listen"] = serde_json::json!("127.0.0.1:0");
    }
    section
}

impl Harness {
    fn start(section: serde_json::Value, dir: &Path, state: StateSlot) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cfg = compile(with_listen(section), dir);
        assert_eq!(cfg.input(), None);
        assert_eq!(cfg.outputs()[0].message, MessageType::Samples);
        let (tx, rx) = crossbeam_channel::bounded(64);
        let out = Output::new("push", "", MessageType::Samples);
        out.set_downstream(vec![Downstream {
            stage: "test".into(),
            tx,
            drop_when_full: true,
            counters: Arc::new(EdgeCounters::default()),
        }]);
        let metrics = prometheus::Registry::new();
        let ctx = StageContext {
            outputs: BTreeMap::from([(String::new(), out)]),
            metrics: metrics.clone(),
            state: state.clone(),
            ..StageContext::standalone("push", rt.handle().clone(), dir.to_path_buf())
        };
        // Started through the concrete type to learn the bound port.
        let cfg = cfg
            .as_any()
            .downcast_ref::<PushIngestConfig>()
            .expect("a push_ingest config");
        let running = PushIngest::start(cfg, ctx).expect("stage starts");
        let addr = running.local_addr;
        let stage: Box<dyn RunningStage> = Box::new(running);
        Harness {
            rt,
            rx,
            stage: Some(stage),
            base: format!("http://{addr}"),
            metrics,
            state,
        }
    }

    fn client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let c = self.client();
        let mut req = c.request(method.parse().unwrap(), format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.body(body).send().expect("request succeeds");
        let code = resp.status().as_u16();
        (code, resp.text().unwrap_or_default())
    }

    fn push(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        self.send(method, path, body.as_bytes().to_vec(), &[])
    }

    fn get(&self, path: &str) -> String {
        self.send("GET", path, Vec::new(), &[]).1
    }

    /// `/metrics` without the push timestamps' values.
    fn metrics_text(&self) -> String {
        self.get("/metrics")
            .lines()
            .map(|l| {
                if l.starts_with("push_time_seconds{")
                    || l.starts_with("push_failure_time_seconds{")
                {
                    let (series, value) = l.rsplit_once(' ').unwrap();
                    format!("{series} {}", if value == "0" { "0" } else { "T" })
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn next_batch(&self, within: Duration) -> Option<Arc<SampleBatch>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Message::Samples(b)) => return Some(b),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    fn metric(&self, name: &str) -> f64 {
        self.metrics
            .gather()
            .iter()
            .filter(|mf| mf.name() == name)
            .flat_map(|mf| mf.get_metric())
            .map(|m| {
                if m.get_counter().get_value() != 0.0 {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                }
            })
            .sum()
    }

    fn stop(&mut self) {
        if let Some(s) = self.stage.take() {
            s.stop();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
        let _ = &self.rt;
    }
}

#[test]
fn push_semantics_and_metrics_page() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"interval": "1h"}),
        dir.path(),
        StateSlot::default(),
    );
    assert_eq!(
        h.push("PUT", "/metrics/job/some_job", "some_metric 3.14\n")
            .0,
        200
    );
    assert_eq!(
        h.push(
            "PUT",
            "/metrics/job/j1/instance/i1",
            "# HELP a A.\n# TYPE a counter\na{x=\"1\"} 1\na{x=\"2\"} 2\nb 5\n"
        )
        .0,
        200
    );
    // POST replaces only the families it names.
    assert_eq!(
        h.push("POST", "/metrics/job/j1/instance/i1", "a{x=\"3\"} 3\n")
            .0,
        200
    );
    let text = h.metrics_text();
    assert!(
        text.contains("# TYPE a untyped\na{instance=\"i1\",job=\"j1\",x=\"3\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("b{instance=\"i1\",job=\"j1\"} 5"), "{text}");
    assert!(
        text.contains("some_metric{instance=\"\",job=\"some_job\"} 3.14"),
        "{text}"
    );
    assert!(
        text.contains("push_time_seconds{instance=\"\",job=\"some_job\"} T"),
        "{text}"
    );
    assert!(
        text.contains("push_failure_time_seconds{instance=\"\",job=\"some_job\"} 0"),
        "{text}"
    );
    // PUT replaces the whole group.
    assert_eq!(h.push("PUT", "/metrics/job/j1/instance/i1", "c 1\n").0, 200);
    let text = h.metrics_text();
    assert!(!text.contains("b{instance=\"i1\""), "{text}");
    // DELETE drops the group.
    assert_eq!(h.push("DELETE", "/metrics/job/j1/instance/i1", "").0, 202);
    assert!(!h.metrics_text().contains("job=\"j1\""));
    assert_eq!(h.get("/-/healthy"), "OK");
    assert_eq!(h.get("/-/ready"), "OK");
}

#[test]
fn large_pushes_are_handled_whole() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"interval": "1h"}),
        dir.path(),
        StateSlot::default(),
    );
    let body: String = (0..5000)
        .map(|i| {
            format!(
                "big_series{{host=\"host-{i:05}\",padding=\"{}\"}} {i}\n",
                "x".repeat(30)
            )
        })
        .collect();
    assert!(body.len() > 256 << 10);
    let (code, msg) = h.push("PUT", "/metrics/job/big", &body);
    assert_eq!(code, 200, "{msg}");
    let text = h.get("/metrics");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("big_series{"))
            .count(),
        5000
    );
    assert_eq!(h.metric("panoptes_push_series"), 5002.0);
}

#[test]
fn rejected_pushes_leave_the_groups_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"interval": "1h"}),
        dir.path(),
        StateSlot::default(),
    );
    assert_eq!(
        h.push("PUT", "/metrics/job/a", "# TYPE m gauge\nm 1\nother 2\n")
            .0,
        200
    );
    let before = h.metrics_text();
    for (path, body, want) in [
        ("/metrics/job/a", "m 1 1000\n", "must not have timestamps"),
        (
            "/metrics/job/b",
            "# TYPE m counter\nm 1\n",
            "is not a GAUGE",
        ),
        ("/metrics/job/a", "m{ 1\n", "line 1"),
        ("/metrics/job/a", "x 1\nx 2\n", "was collected before"),
    ] {
        let (code, msg) = h.push("PUT", path, body);
        assert_eq!(code, 400, "{body}: {msg}");
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let after = h.metrics_text();
    // Only the failure timestamps moved (and group b exists, holding only
    // its timestamps, as in the Pushgateway).
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("push_") && !l.starts_with("# "))
            .map(String::from)
            .collect()
    };
    assert_eq!(strip(&before), strip(&after));
    assert!(
        after.contains("push_failure_time_seconds{instance=\"\",job=\"a\"} T"),
        "{after}"
    );
    assert!(
        after.contains("push_time_seconds{instance=\"\",job=\"b\"} 0"),
        "{after}"
    );
    let api: serde_json::Value = serde_json::from_str(&h.get("/api/v1/metrics")).unwrap();
    assert_eq!(api["status"], "success");
    let groups = api["data"].as_array().unwrap();
    let a = groups.iter().find(|g| g["labels"]["job"] == "a").unwrap();
    assert_eq!(a["last_push_successful"], false);
    assert_eq!(a["m"]["type"], "GAUGE");
    assert_eq!(a["m"]["metrics"][0]["value"], "1");
    assert!(h.metric("panoptes_push_rejected_total") >= 4.0);
}

#[test]
fn protobuf_gzip_and_base64_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"interval": "1h"}),
        dir.path(),
        StateSlot::default(),
    );
    let fam = MetricFamily {
        name: Some("job_duration_seconds".into()),
        help: Some("Duration.".into()),
        r#type: Some(metric_type::HISTOGRAM),
        metric: vec![Metric {
            label: vec![LabelPair::new("stage", "load")],
            histogram: Some(Histogram {
                sample_count: Some(4),
                sample_sum: Some(2.0),
                bucket: vec![Bucket {
                    upper_bound: Some(0.5),
                    cumulative_count: Some(3),
                    cumulative_count_float: None,
                }],
                sample_count_float: None,
            }),
            ..Default::default()
        }],
    };
    let body = encode_delimited(&[fam]);
    let ct = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
    let (code, msg) = h.send(
        "PUT",
        "/metrics/job@base64/YmF0Y2gvam9i/path@base64/=",
        body,
        &[("Content-Type", ct)],
    );
    assert_eq!(code, 200, "{msg}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"zipped 1\n").unwrap();
    let (code, msg) = h.send(
        "PUT",
        "/metrics/job/gz",
        gz.finish().unwrap(),
        &[("Content-Encoding", "gzip")],
    );
    assert_eq!(code, 200, "{msg}");
    let text = h.metrics_text();
    assert!(
        text.contains("job_duration_seconds_bucket{instance=\"\",job=\"batch/job\",path=\"\",stage=\"load\",le=\"0.5\"} 3\n\
                       job_duration_seconds_bucket{instance=\"\",job=\"batch/job\",path=\"\",stage=\"load\",le=\"+Inf\"} 4\n"),
        "{text}"
    );
    assert!(
        text.contains("zipped{instance=\"\",job=\"gz\"} 1"),
        "{text}"
    );
    let (code, _) = h.send(
        "PUT",
        "/metrics/job/pb",
        vec![0x05, 0x0a],
        &[("Content-Type", ct)],
    );
    assert_eq!(code, 400);
}

#[test]
fn emits_all_groups_as_one_batch_with_grouping_labels() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"interval": "100ms"}),
        dir.path(),
        StateSlot::default(),
    );
    assert_eq!(
        h.push("PUT", "/metrics/job/sample_job", "some_metric 4.25\n")
            .0,
        200
    );
    assert_eq!(
        h.push(
            "PUT",
            "/metrics/job/other/instance/box1",
            "# TYPE c counter\nc{job=\"spoof\"} 2\n"
        )
        .0,
        200
    );
    let start = panoptes_engine::clock::Clock::now_ms(&RealClock);
    let batch = loop {
        let b = h.next_batch(Duration::from_secs(5)).expect("a batch");
        if b.samples.len() >= 6 {
            break b;
        }
    };
    assert_eq!(&*batch.source, "push");
    let find = |name: &str, job: &str| {
        batch
            .samples
            .iter()
            .find(|s| s.labels.metric_name() == Some(name) && s.labels.get("job") == Some(job))
            .unwrap_or_else(|| panic!("{name} of {job} missing in {:?}", batch.samples))
    };
    let s = find("some_metric", "sample_job");
    assert_eq!(s.value, 4.25);
    // The empty instance is no label at all in the data model.
    assert_eq!(s.labels.get("instance"), None);
    assert!(s.timestamp_ms >= start - 1000);
    let c = find("c", "other");
    assert_eq!(c.labels.get("instance"), Some("box1"));
    assert_eq!(c.value, 2.0);
    let pt = find("push_time_seconds", "sample_job");
    assert!((pt.value * 1000.0 - start as f64).abs() < 10_000.0);
    assert!(batch
        .metadata
        .iter()
        .any(|m| m.metric_family == "c" && m.metric_type == panoptes_model::MetricType::Counter));
    // Values are re-emitted while nothing is pushed (last value kept).
    let again = h.next_batch(Duration::from_secs(5)).expect("another batch");
    assert_eq!(again.samples.len(), batch.samples.len());
    assert!(h.metric("panoptes_push_emitted_batches_total") >= 2.0);
    // A deleted group's series get one stale marker, then are gone.
    assert_eq!(
        h.push("DELETE", "/metrics/job/other/instance/box1", "").0,
        202
    );
    let is_other = |s: &&panoptes_model::Sample| s.labels.get("job") == Some("other");
    let marked = loop {
        let b = h
            .next_batch(Duration::from_secs(5))
            .expect("a batch after delete");
        if b.samples.iter().filter(is_other).count() > 0
            && b.samples
                .iter()
                .filter(is_other)
                .all(|s| panoptes_model::is_stale_nan(s.value))
        {
            break b;
        }
    };
    assert_eq!(marked.samples.iter().filter(is_other).count(), 3);
    let after = h.next_batch(Duration::from_secs(5)).expect("a later batch");
    assert_eq!(after.samples.iter().filter(is_other).count(), 0);
}

#[test]
fn persistence_survives_restart_and_state_survives_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("push.data");
    let section = serde_json::json!({"interval": "1h", "persistence_file": "push.data", "persistence_interval": "100ms"});
    let mut h = Harness::start(section.clone(), dir.path(), StateSlot::default());
    assert_eq!(
        h.push("PUT", "/metrics/job/persisted/instance/x", "kept 42\n")
            .0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        file.exists(),
        "persistence file written by the interval task"
    );
    h.stop();
    let before = std::fs::read(&file).unwrap();
    assert!(!before.is_empty());

    // A new process (fresh state slot): restored from the file.
    let h2 = Harness::start(section.clone(), dir.path(), StateSlot::default());
    let text = h2.metrics_text();
    assert!(
        text.contains("kept{instance=\"x\",job=\"persisted\"} 42"),
        "{text}"
    );
    assert!(
        text.contains("push_time_seconds{instance=\"x\",job=\"persisted\"} T"),
        "{text}"
    );
    drop(h2);

    // A rebuild on reload (same state slot, no persistence): groups kept.
    let slot = StateSlot::default();
    let mut h3 = Harness::start(
        serde_json::json!({"interval": "1h"}),
        dir.path(),
        slot.clone(),
    );
    assert_eq!(h3.push("PUT", "/metrics/job/carried", "carried 1\n").0, 200);
    h3.stop();
    let h4 = Harness::start(serde_json::json!({"interval": "1h"}), dir.path(), slot);
    assert!(h4
        .metrics_text()
        .contains("carried{instance=\"\",job=\"carried\"} 1"));
    let _ = &h4.state;
}

#[test]
fn reconfigure_in_place_or_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Harness::start(
        serde_json::json!({"interval": "1h", "listen": "127.0.0.1:0"}),
        dir.path(),
        StateSlot::default(),
    );
    let changed = compile(
        serde_json::json!({"interval": "50ms", "listen": "127.0.0.1:0", "expire_after": "1h"}),
        dir.path(),
    );
    let stage = h.stage.as_mut().unwrap();
    assert!(matches!(
        stage.reconfigure(changed.as_ref()),
        Reconfigure::Applied
    ));
    // The new interval is in effect.
    assert_eq!(h.push("PUT", "/metrics/job/r", "r 1\n").0, 200);
    assert!(h.next_batch(Duration::from_secs(3)).is_some());
    let moved = compile(serde_json::json!({"listen": "127.0.0.1:1"}), dir.path());
    let stage = h.stage.as_mut().unwrap();
    assert!(matches!(
        stage.reconfigure(moved.as_ref()),
        Reconfigure::Rebuild
    ));
}

#[test]
fn groups_expire_after_the_configured_time() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"interval": "1h", "expire_after": "300ms"}),
        dir.path(),
        StateSlot::default(),
    );
    assert_eq!(h.push("PUT", "/metrics/job/old", "x 1\n").0, 200);
    assert!(h.metrics_text().contains("job=\"old\""));
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.metrics_text().contains("job=\"old\"") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!h.metrics_text().contains("job=\"old\""));
    assert_eq!(h.metric("panoptes_push_groups_expired_total"), 1.0);
    assert_eq!(h.metric("panoptes_push_groups"), 0.0);
}

#[test]
fn size_limits_refuse_with_413_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"interval": "1h", "max_group_series": 4, "max_total_series": 7, "max_push_bytes": 64}),
        dir.path(),
        StateSlot::default(),
    );
    // 2 series + the two push timestamps = 4: fits.
    assert_eq!(h.push("PUT", "/metrics/job/a", "x 1\ny 2\n").0, 200);
    let (code, msg) = h.push("PUT", "/metrics/job/b", "x 1\ny 2\nz 3\n");
    assert_eq!(code, 413);
    assert!(msg.contains("max_group_series=4"), "{msg}");
    let (code, msg) = h.push("PUT", "/metrics/job/c", "x 1\ny 2\n");
    assert_eq!(code, 413);
    assert!(msg.contains("max_total_series=7"), "{msg}");
    let (code, msg) = h.push("PUT", "/metrics/job/d", &"a 1\n".repeat(20));
    assert_eq!(code, 413);
    assert!(msg.contains("max_push_bytes=64"), "{msg}");
    // Replacing within the limit still works.
    assert_eq!(h.push("PUT", "/metrics/job/a", "x 5\n").0, 200);
}

#[test]
fn admin_wipe_only_when_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"interval": "1h"}),
        dir.path(),
        StateSlot::default(),
    );
    assert_eq!(h.push("PUT", "/api/v1/admin/wipe", "").0, 404);
    let h2 = Harness::start(
        serde_json::json!({"interval": "1h", "enable_admin_api": true}),
        dir.path(),
        StateSlot::default(),
    );
    assert_eq!(h2.push("PUT", "/metrics/job/w", "w 1\n").0, 200);
    assert_eq!(h2.push("PUT", "/api/v1/admin/wipe", "").0, 202);
    assert!(!h2.metrics_text().contains("job=\"w\""));
    let status: serde_json::Value = serde_json::from_str(&h2.get("/api/v1/status")).unwrap();
    assert_eq!(status["data"]["flags"]["enable_admin_api"], "true");
}

#[test]
fn config_errors_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cctx = CompileContext {
        stage_id: "push".into(),
        base_dir: dir.path().to_path_buf(),
        global: GlobalConfig::default(),
    };
    let issues = match PushIngestKind.compile(
        &cctx,
        &serde_json::json!({"listen": "nowhere", "interval": "0", "expire_after": "5x", "persistence_file": "."}),
    ) {
        Ok(_) => panic!("should be rejected"),
        Err(i) => i,
    };
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        ["listen", "interval", "expire_after", "persistence_file"],
        "{issues:?}"
    );
    assert_eq!(
        PushIngestKind.config_schema()["additionalProperties"],
        false
    );
}
