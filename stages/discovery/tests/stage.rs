//! End-to-end tests of the discovery stage: started by hand with a
//! `StageContext` whose output feeds a channel the test reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use panoptes_discovery::DiscoveryKind;
use panoptes_engine::global::GlobalConfig;
use panoptes_engine::port::{Downstream, EdgeCounters, Output};
use panoptes_engine::stage::{
    CompileContext, Message, MessageType, RunningStage, StageContext, StageKind,
};
use panoptes_model::TargetSet;

struct Harness {
    _rt: tokio::runtime::Runtime,
    rx: Receiver<Message>,
    stage: Option<Box<dyn RunningStage>>,
    metrics: prometheus::Registry,
}

impl Harness {
    fn start(section: serde_json::Value, base_dir: &Path) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cctx = CompileContext {
            stage_id: "sd".into(),
            base_dir: base_dir.to_path_buf(),
            global: GlobalConfig::default(),
        };
        let cfg = DiscoveryKind
            .compile(&cctx, &section)
            .expect("config compiles");
        assert_eq!(cfg.input(), None);
        assert_eq!(cfg.outputs()[0].message, MessageType::Targets);
        let (tx, rx) = crossbeam_channel::bounded(16);
        let out = Output::new("sd", "", MessageType::Targets);
        out.set_downstream(vec![Downstream {
            stage: "test".into(),
            tx,
            drop_when_full: false,
            counters: Arc::new(EdgeCounters::default()),
        }]);
        let metrics = prometheus::Registry::new();
        let ctx = StageContext {
            outputs: BTreeMap::from([(String::new(), out)]),
            metrics: metrics.clone(),
            ..StageContext::standalone("sd", rt.handle().clone(), base_dir.to_path_buf())
        };
        let stage = cfg.start(ctx).expect("stage starts");
        Harness {
            _rt: rt,
            rx,
            stage: Some(stage),
            metrics,
        }
    }

    fn next(&self, within: Duration) -> Option<Arc<TargetSet>> {
        match self.rx.recv_timeout(within) {
            Ok(Message::Targets(t)) => Some(t),
            Ok(other) => panic!("unexpected message {other:?}"),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("output disconnected"),
        }
    }

    fn expect(&self) -> Arc<TargetSet> {
        self.next(Duration::from_secs(10))
            .expect("a target set within 10s")
    }

    fn metric(&self, name: &str) -> f64 {
        for mf in self.metrics.gather() {
            if mf.name() == name {
                let m = &mf.get_metric()[0];
                return if mf.get_field_type() == prometheus::proto::MetricType::COUNTER {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                };
            }
        }
        panic!("metric {name} not registered")
    }

    fn health(&self) -> panoptes_engine::stage::StageHealth {
        self.stage.as_ref().unwrap().health()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stage.take() {
            s.stop();
        }
    }
}

fn addresses(set: &TargetSet) -> Vec<String> {
    set.groups
        .iter()
        .flat_map(|g| g.targets.iter())
        .map(|t| t.get("__address__").unwrap().to_string())
        .collect()
}

#[test]
fn static_groups_are_emitted_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(
        serde_json::json!({"static_configs": [
            {"targets": ["localhost:9100", "[::1]:9090"], "labels": {"job": "node"}},
            {"targets": ["db:5432"]}
        ]}),
        dir.path(),
    );
    let set = h.expect();
    assert_eq!(&*set.provider, "sd");
    assert_eq!(set.groups.len(), 2);
    assert_eq!(set.groups[0].source, "static:0");
    assert_eq!(set.groups[0].labels.get("job"), Some("node"));
    assert_eq!(addresses(&set), ["localhost:9100", "[::1]:9090", "db:5432"]);
    // Unchanged: nothing more is sent.
    assert!(h.next(Duration::from_millis(300)).is_none());
    assert_eq!(h.metric("panoptes_discovery_targets"), 3.0);
}

#[test]
fn testdata_documents_read_as_prometheus_reads_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/discovery");
    let json = panoptes_discovery::file::read_file(&dir.join("targets.json"), 0).unwrap();
    assert_eq!(json.len(), 2);
    assert_eq!(json[0].labels.get("env"), Some("prod"));
    assert_eq!(json[1].targets[0].get("__address__"), Some("[::1]:9090"));
    let yml = panoptes_discovery::file::read_file(&dir.join("targets.yml"), 0).unwrap();
    assert_eq!(yml[0].labels.get("shard"), Some("1"));
    assert!(yml[0]
        .labels
        .get("__meta_filepath")
        .unwrap()
        .ends_with("targets.yml"));
    let err = panoptes_discovery::file::read_file(&dir.join("broken.json"), 0)
        .unwrap_err()
        .to_string();
    for part in ["[0].targets[1]", "[0].labels.bad-name", "[1]"] {
        assert!(err.contains(part), "{part} missing in {err}");
    }
}

#[test]
fn every_config_problem_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let cctx = CompileContext {
        stage_id: "sd".into(),
        base_dir: dir.path().to_path_buf(),
        global: GlobalConfig::default(),
    };
    let section = serde_json::json!({
        "static_configs": [{"targets": ["ok:1", "http://x:80/metrics"], "labels": {"bad-name": "v"}}],
        "file_sd_configs": [{"files": ["ok.json", "targets.txt"], "refresh_interval": "5x"}],
        "http_sd_configs": [
            {"url": "ftp://x/sd"},
            {"url": "http://x/sd", "basic_auth": {"username": "u"}, "authorization": {"credentials": "c"}},
            {"url": "http://x/sd", "tls_config": {"ca_file": "missing-ca.pem"}}
        ]
    });
    let issues = match DiscoveryKind.compile(&cctx, &section) {
        Ok(_) => panic!("config should be rejected"),
        Err(issues) => issues,
    };
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "static_configs[0].targets[1]",
            "static_configs[0].labels.bad-name",
            "file_sd_configs[0].files[1]",
            "file_sd_configs[0].refresh_interval",
            "http_sd_configs[0].url",
            "http_sd_configs[1]",
            "http_sd_configs[2].tls_config.ca_file",
        ],
        "{issues:#?}"
    );
    let schema = DiscoveryKind.config_schema();
    assert_eq!(schema["additionalProperties"], false);
}

#[test]
fn file_sd_follows_edits_keeps_last_good_and_drops_removed_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.json");
    let b = dir.path().join("b.yml");
    std::fs::write(
        &a,
        r#"[{"targets": ["a1:9100", "a2:9100"], "labels": {"env": "prod"}}]"#,
    )
    .unwrap();
    let h = Harness::start(
        // A long refresh interval: changes must be seen by watching.
        serde_json::json!({"file_sd_configs": [{"files": ["*.json", "*.yml"], "refresh_interval": "1h"}]}),
        dir.path(),
    );
    let set = h.expect();
    assert_eq!(addresses(&set), ["a1:9100", "a2:9100"]);
    let g = &set.groups[0];
    assert_eq!(g.labels.get("env"), Some("prod"));
    assert_eq!(
        g.labels.get("__meta_filepath"),
        Some(a.to_string_lossy().as_ref())
    );

    // Edit: a target removed, another file added.
    std::fs::write(&a, r#"[{"targets": ["a1:9100"]}]"#).unwrap();
    std::fs::write(&b, "- targets: ['b1:80']\n  labels: {team: db}\n").unwrap();
    let mut set = h.expect();
    // The two writes may be seen as one or two changes.
    while addresses(&set) != ["a1:9100", "b1:80"] {
        set = h.expect();
    }

    // Broken file: its last good targets stay, the error is visible.
    std::fs::write(&b, "- targets: ['b1:80', 'http://nope/']\n").unwrap();
    assert!(h.next(Duration::from_millis(700)).is_none());
    assert!(h.metric("panoptes_discovery_file_read_errors_total") >= 1.0);
    assert_eq!(h.metric("panoptes_discovery_sources_failing"), 1.0);
    let health = h.health();
    assert!(!health.ok);
    assert!(
        health.detail.contains("[0].targets[1]"),
        "{}",
        health.detail
    );

    // Fixed again.
    std::fs::write(&b, "- targets: ['b2:80']\n").unwrap();
    let set = h.expect();
    assert_eq!(addresses(&set), ["a1:9100", "b2:80"]);
    assert!(h.health().ok);

    // Removed: its groups go away.
    std::fs::remove_file(&a).unwrap();
    let set = h.expect();
    assert_eq!(addresses(&set), ["b2:80"]);
}

#[test]
fn file_sd_sees_a_directory_created_later_by_watching_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("later");
    let h = Harness::start(
        serde_json::json!({"file_sd_configs": [{"files": ["later/*.yaml"], "refresh_interval": "1h"}]}),
        dir.path(),
    );
    assert!(h.expect().groups.is_empty());
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("a.yaml"), "- targets: ['a:1']\n").unwrap();
    let mut set = h.expect();
    while addresses(&set) != ["a:1"] {
        set = h.expect();
    }
    // Now the directory itself is watched.
    std::fs::write(sub.join("b.yaml"), "- targets: ['b:2']\n").unwrap();
    let mut set = h.expect();
    while addresses(&set) != ["a:1", "b:2"] {
        set = h.expect();
    }
}

#[test]
fn file_sd_rereads_on_refresh_interval_without_events() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sd");
    // A short refresh interval finds the file even without events.
    let h = Harness::start(
        serde_json::json!({"file_sd_configs": [{"files": ["sd/*.json"], "refresh_interval": "200ms"}]}),
        dir.path(),
    );
    let set = h.expect();
    assert!(set.groups.is_empty());
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("t.json"), r#"[{"targets": ["x:1"]}]"#).unwrap();
    let set = h.expect();
    assert_eq!(addresses(&set), ["x:1"]);
}

mod http_sd {
    use super::*;
    use axum::http::{HeaderMap, StatusCode};
    use parking_lot::Mutex;

    #[derive(Clone)]
    struct Reply {
        status: StatusCode,
        content_type: &'static str,
        body: String,
    }

    struct Server {
        addr: std::net::SocketAddr,
        reply: Arc<Mutex<Reply>>,
        seen_refresh_header: Arc<Mutex<Option<String>>>,
        _rt: tokio::runtime::Runtime,
    }

    fn serve(initial: &str) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let reply = Arc::new(Mutex::new(Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body: initial.to_string(),
        }));
        let seen = Arc::new(Mutex::new(None));
        let (r, s) = (reply.clone(), seen.clone());
        let app = axum::Router::new().route(
            "/sd",
            axum::routing::get(move |headers: HeaderMap| {
                let r = r.clone();
                let s = s.clone();
                async move {
                    *s.lock() = headers
                        .get("x-prometheus-refresh-interval-seconds")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some("Bearer s3cret")
                    {
                        return (
                            StatusCode::UNAUTHORIZED,
                            [("content-type", "text/plain")],
                            "no".to_string(),
                        );
                    }
                    let rep = r.lock().clone();
                    (rep.status, [("content-type", rep.content_type)], rep.body)
                }
            }),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Server {
            addr,
            reply,
            seen_refresh_header: seen,
            _rt: rt,
        }
    }

    #[test]
    fn http_sd_refreshes_and_keeps_last_good_on_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
        let srv = serve(r#"[{"targets": ["h1:9100"], "labels": {"dc": "x"}}]"#);
        let url = format!("http://{}/sd", srv.addr);
        let h = Harness::start(
            serde_json::json!({"http_sd_configs": [{
                "url": url, "refresh_interval": "150ms",
                "authorization": {"credentials_file": "token"}
            }]}),
            dir.path(),
        );
        let set = h.expect();
        assert_eq!(addresses(&set), ["h1:9100"]);
        assert_eq!(set.groups[0].source, format!("{url}:0"));
        assert_eq!(set.groups[0].labels.get("__meta_url"), Some(url.as_str()));
        assert_eq!(set.groups[0].labels.get("dc"), Some("x"));
        assert_eq!(srv.seen_refresh_header.lock().as_deref(), Some("0.15"));

        srv.reply.lock().body = r#"[{"targets": ["h1:9100", "h2:9100"]}]"#.into();
        let set = h.expect();
        assert_eq!(addresses(&set), ["h1:9100", "h2:9100"]);

        // A server error and then a wrong content type: last good kept.
        srv.reply.lock().status = StatusCode::INTERNAL_SERVER_ERROR;
        assert!(h.next(Duration::from_millis(600)).is_none());
        assert!(h.metric("panoptes_discovery_http_failures_total") >= 1.0);
        assert!(h.health().detail.contains("500"), "{}", h.health().detail);
        {
            let mut r = srv.reply.lock();
            r.status = StatusCode::OK;
            r.content_type = "text/plain";
        }
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            h.health().detail.contains("content type"),
            "{}",
            h.health().detail
        );
        assert!(h.next(Duration::from_millis(10)).is_none());

        // Healthy again with new content.
        {
            let mut r = srv.reply.lock();
            r.content_type = "application/json; charset=utf-8";
            r.body = "[]".into();
        }
        let set = h.expect();
        assert!(set.groups.is_empty());
        assert!(h.health().ok);
    }

    #[test]
    fn invalid_http_sd_document_names_the_bad_entry() {
        let dir = tempfile::tempdir().unwrap();
        let srv = serve(r#"[{"targets": ["ok:1"]}, {"targets": ["bad/target"]}]"#);
        let url = format!("http://{}/sd", srv.addr);
        let h = Harness::start(
            serde_json::json!({"http_sd_configs": [{
                "url": url, "refresh_interval": "1h",
                "authorization": {"type": "Bearer", "credentials": "s3cret"}
            }]}),
            dir.path(),
        );
        let set = h.expect();
        assert!(set.groups.is_empty());
        let health = h.health();
        assert!(
            health.detail.contains("[1].targets[0]"),
            "{}",
            health.detail
        );
    }
}
