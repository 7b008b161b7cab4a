//! Drives the `scrape` stage end to end: a tiny axum server on 127.0.0.1
//! serves bodies, the stage is started with a hand-built context, targets
//! are sent on its input and the batches read from its output.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crossbeam_channel::{bounded, Receiver, Sender};
use panoptes_engine::clock::RealClock;
use panoptes_engine::global::GlobalConfig;
use panoptes_engine::port::{Downstream, EdgeCounters, Input, Output};
use panoptes_engine::stage::{
    CompileContext, Message, MessageType, RunningStage, StageContext, StageKind, StateSlot,
    StoreRegistry, TargetsRegistry,
};
use panoptes_model::{is_stale_nan, Labels, SampleBatch, TargetGroup, TargetHealth, TargetSet};
use panoptes_scrape::ScrapeKind;
use parking_lot::Mutex;
use serde_json::json;

#[derive(Default)]
struct ServerState {
    status: Mutex<Option<StatusCode>>,
    body: Mutex<String>,
    content_type: Mutex<Option<String>>,
    headers: Mutex<Option<HeaderMap>>,
    huge_bytes_sent: AtomicU64,
}

async fn metrics(State(st): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    *st.headers.lock() = Some(headers);
    let status = st.status.lock().unwrap_or(StatusCode::OK);
    let ct = st
        .content_type
        .lock()
        .clone()
        .unwrap_or_else(|| "text/plain; version=0.0.4".into());
    (status, [("content-type", ct)], st.body.lock().clone()).into_response()
}

/// The body gzip-compressed when the client accepts it.
async fn gz(State(st): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    use std::io::Write;
    *st.headers.lock() = Some(headers.clone());
    let body = st.body.lock().clone();
    let accepts = headers
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    if !accepts {
        return ([("content-type", "text/plain; version=0.0.4")], body).into_response();
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body.as_bytes()).unwrap();
    let bytes = enc.finish().unwrap();
    (
        [
            ("content-type", "text/plain; version=0.0.4"),
            ("content-encoding", "gzip"),
        ],
        bytes,
    )
        .into_response()
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(30)).await;
    "late 1\n"
}

/// 200 MB of valid series, generated lazily chunk by chunk.
async fn huge(State(st): State<Arc<ServerState>>) -> Response {
    let chunk: Arc<str> =
        Arc::from("huge_metric_with_a_long_name{label=\"value\"} 1\n".repeat(1400));
    let total = 200u64 << 20;
    let st2 = st.clone();
    let stream = futures::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        let st = st2.clone();
        async move {
            if sent >= total {
                return None;
            }
            st.huge_bytes_sent
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Some((
                Ok::<_, std::io::Error>(chunk.to_string()),
                sent + chunk.len() as u64,
            ))
        }
    });
    Response::new(Body::from_stream(stream))
}

async fn many() -> String {
    let mut s = String::with_capacity(100_000 * 24);
    for i in 0..100_000 {
        s.push_str(&format!("series_{i} {i}\n"));
    }
    s
}

struct Harness {
    // Keeps the runtime (server and scrape loops) alive for the test.
    _rt: tokio::runtime::Runtime,
    addr: String,
    server: Arc<ServerState>,
    input: Sender<Message>,
    output: Receiver<Message>,
    running: Option<Box<dyn RunningStage>>,
    targets: TargetsRegistry,
}

impl Harness {
    fn start(section: serde_json::Value) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = Arc::new(ServerState::default());
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/slow", get(slow))
            .route("/gz", get(gz))
            .route("/huge", get(huge))
            .route("/many", get(many))
            .with_state(server.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let cctx = CompileContext {
            stage_id: "node".into(),
            base_dir: ".".into(),
            global: GlobalConfig::default(),
        };
        let cfg = ScrapeKind.compile(&cctx, &section).expect("valid section");
        let (in_tx, in_rx) = bounded(16);
        let out = Output::new("node", "", MessageType::Samples);
        let (out_tx, out_rx) = bounded(1024);
        out.set_downstream(vec![Downstream {
            stage: "sink".into(),
            tx: out_tx,
            drop_when_full: false,
            counters: Arc::new(EdgeCounters::default()),
        }]);
        let mut outputs = BTreeMap::new();
        outputs.insert(String::new(), out);
        let targets = TargetsRegistry::default();
        let ctx = StageContext {
            id: "node".into(),
            clock: Arc::new(RealClock),
            runtime: rt.handle().clone(),
            input: Some(Input::new(in_rx)),
            outputs,
            metrics: prometheus::Registry::new(),
            state: StateSlot::default(),
            stores: StoreRegistry::default(),
            targets: targets.clone(),
            global: GlobalConfig::default(),
            base_dir: ".".into(),
            data_dir: ".".into(),
        };
        let running = cfg.start(ctx).expect("starts");
        Harness {
            _rt: rt,
            addr,
            server,
            input: in_tx,
            output: out_rx,
            running: Some(running),
            targets,
        }
    }

    fn set_targets(&self, addrs: &[&str]) {
        let set = TargetSet {
            provider: Arc::from("sd"),
            groups: vec![TargetGroup {
                source: "0".into(),
                targets: addrs
                    .iter()
                    .map(|a| Labels::from_pairs([("__address__", *a)]))
                    .collect(),
                labels: Labels::from_pairs([("env", "test")]),
            }],
        };
        self.input.send(Message::Targets(Arc::new(set))).unwrap();
    }

    fn next_batch(&self) -> Arc<SampleBatch> {
        match self
            .output
            .recv_timeout(Duration::from_secs(10))
            .expect("a batch within 10s")
        {
            Message::Samples(b) => b,
            other => panic!("unexpected {:?}", other.message_type()),
        }
    }

    fn reconfigure(&mut self, section: serde_json::Value) -> bool {
        let cctx = CompileContext {
            stage_id: "node".into(),
            base_dir: ".".into(),
            global: GlobalConfig::default(),
        };
        let cfg = ScrapeKind.compile(&cctx, &section).expect("valid section");
        let r = self.running.as_mut().expect("running");
        matches!(
            r.reconfigure(cfg.as_ref()),
            panoptes_engine::stage::Reconfigure::Applied
        )
    }

    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

/// A TLS listener for axum: TCP accept plus a rustls handshake.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that rejects our certificate fails the handshake.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn tls_path(name: &str) -> String {
    format!("{}/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

impl Harness {
    /// Serves `/metrics` over TLS with the test certificate for
    /// `panoptes.test`; returns the address.
    fn spawn_tls_server(&self) -> String {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(tls_path("server.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(tls_path("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(self.server.clone());
        let tcp = self
            ._rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let listener = TlsListener {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        self._rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}

fn value(b: &SampleBatch, name: &str) -> Option<f64> {
    b.samples
        .iter()
        .find(|s| s.labels.metric_name() == Some(name))
        .map(|s| s.value)
}

fn stale_names(b: &SampleBatch) -> Vec<String> {
    let mut v: Vec<String> = b
        .samples
        .iter()
        .filter(|s| is_stale_nan(s.value))
        .filter_map(|s| s.labels.metric_name().map(str::to_string))
        .collect();
    v.sort();
    v
}

#[test]
fn scrapes_series_then_http_errors_give_up_zero_and_stale_markers() {
    let mut h = Harness::start(json!({"scrape_interval": "300ms", "scrape_timeout": "250ms"}));
    *h.server.body.lock() = "# TYPE a gauge\na 1\nb{x=\"y\"} 2\n".into();
    h.set_targets(&[&h.addr]);

    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(1.0));
    assert_eq!(value(&b, "scrape_samples_scraped"), Some(2.0));
    assert_eq!(
        value(&b, "scrape_samples_post_metric_relabeling"),
        Some(2.0)
    );
    assert_eq!(value(&b, "scrape_series_added"), Some(2.0));
    assert!(value(&b, "scrape_duration_seconds").is_some_and(|d| (0.0..0.25).contains(&d)));
    let a = b
        .samples
        .iter()
        .find(|s| s.labels.metric_name() == Some("b"))
        .unwrap();
    assert_eq!(
        a.labels,
        Labels::from_pairs([
            ("__name__", "b"),
            ("env", "test"),
            ("instance", h.addr.as_str()),
            ("job", "node"),
            ("x", "y")
        ])
    );
    assert_eq!(b.metadata.len(), 1);
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert_eq!(
        hdrs.get("accept").unwrap().to_str().unwrap(),
        panoptes_exposition::SCRAPE_ACCEPT_HEADER
    );
    assert_eq!(
        hdrs.get("x-prometheus-scrape-timeout-seconds").unwrap(),
        "0.25"
    );
    let views = h.targets.all();
    let t = &views[0].1.targets()[0];
    assert_eq!(t.health, TargetHealth::Up);
    assert_eq!(t.scrape_url, format!("http://{}/metrics", h.addr));

    // The server fails: up 0, stale markers for both series, no samples.
    *h.server.status.lock() = Some(StatusCode::INTERNAL_SERVER_ERROR);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    assert_eq!(stale_names(&b), ["a", "b"]);
    assert_eq!(b.samples.len(), 2 + 5);
    let t = &h.targets.all()[0].1.targets()[0];
    assert_eq!(t.health, TargetHealth::Down);
    assert!(t.last_error.contains("500"), "{}", t.last_error);

    // Recovery, then the target goes away: stale markers for everything.
    *h.server.status.lock() = None;
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(1.0));
    h.set_targets(&[]);
    let b = h.next_batch();
    assert_eq!(
        stale_names(&b),
        [
            "a",
            "b",
            "scrape_duration_seconds",
            "scrape_samples_post_metric_relabeling",
            "scrape_samples_scraped",
            "scrape_series_added",
            "up"
        ]
    );
    assert!(h.targets.all()[0].1.targets().is_empty());
    h.stop();
    assert!(
        h.targets.all().is_empty(),
        "the view is unregistered on stop"
    );
}

#[test]
fn a_target_that_never_answers_times_out() {
    let h = Harness::start(
        json!({"scrape_interval": "400ms", "scrape_timeout": "200ms", "metrics_path": "/slow"}),
    );
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    let d = value(&b, "scrape_duration_seconds").unwrap();
    assert!((0.19..1.0).contains(&d), "duration {d}");
    let t = &h.targets.all()[0].1.targets()[0];
    assert!(t.last_error.contains("timed out"), "{}", t.last_error);
}

#[test]
fn a_200_mb_body_hits_body_size_limit_without_being_buffered() {
    let h = Harness::start(json!({
        "scrape_interval": "5s", "scrape_timeout": "4s",
        "metrics_path": "/huge", "body_size_limit": "1MB"
    }));
    h.set_targets(&[&h.addr]);
    let started = Instant::now();
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    assert_eq!(b.samples.len(), 5, "only the synthetic series");
    let t = &h.targets.all()[0].1.targets()[0];
    assert!(t.last_error.contains("body size limit"), "{}", t.last_error);
    // The connection was dropped early: the server produced far less than
    // the 200 MB it would have sent.
    std::thread::sleep(Duration::from_millis(200));
    let sent = h.server.huge_bytes_sent.load(Ordering::Relaxed);
    assert!(sent < 50 << 20, "server produced {sent} bytes");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn one_hundred_thousand_series_past_sample_limit() {
    let h = Harness::start(json!({
        "scrape_interval": "5s", "scrape_timeout": "4s",
        "metrics_path": "/many", "sample_limit": 1000
    }));
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    assert_eq!(value(&b, "scrape_samples_scraped"), Some(100_000.0));
    assert_eq!(
        value(&b, "scrape_samples_post_metric_relabeling"),
        Some(100_000.0)
    );
    assert_eq!(b.samples.len(), 5, "no partial samples");
    let t = &h.targets.all()[0].1.targets()[0];
    assert!(
        t.last_error.contains("sample limit exceeded"),
        "{}",
        t.last_error
    );
}

#[test]
fn openmetrics_auth_relabeling_and_limits() {
    let h = Harness::start(json!({
        "scrape_interval": "300ms", "scrape_timeout": "250ms",
        "job_name": "custom",
        "authorization": {"credentials": "s3cret"},
        "params": {"module": ["m1"]},
        "relabel_configs": [{"source_labels": ["env"], "target_label": "stage"}],
        "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "skip_.*", "action": "drop"}],
        "label_limit": 6
    }));
    *h.server.content_type.lock() =
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8".into());
    *h.server.body.lock() = "# TYPE c counter\nc_total 3 1700000000.5\nskip_me 1\n# EOF\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(
        value(&b, "up"),
        Some(1.0),
        "{:?}",
        h.targets.all()[0].1.targets()[0].last_error
    );
    assert_eq!(value(&b, "scrape_samples_scraped"), Some(2.0));
    assert_eq!(
        value(&b, "scrape_samples_post_metric_relabeling"),
        Some(1.0)
    );
    let c = b
        .samples
        .iter()
        .find(|s| s.labels.metric_name() == Some("c_total"))
        .unwrap();
    assert_eq!(c.timestamp_ms, 1_700_000_000_500);
    assert_eq!(c.labels.get("job"), Some("custom"));
    assert_eq!(c.labels.get("stage"), Some("test"));
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert_eq!(hdrs.get("authorization").unwrap(), "Bearer s3cret");
    let t = &h.targets.all()[0].1.targets()[0];
    assert_eq!(t.scrape_url, format!("http://{}/metrics?module=m1", h.addr));

    // A series with too many labels fails the whole scrape.
    *h.server.body.lock() = "# TYPE c counter\nc_total{a=\"1\",b=\"2\"} 4\n# EOF\n".into();
    let b = loop {
        let b = h.next_batch();
        if value(&b, "up") == Some(0.0) {
            break b;
        }
    };
    // c_total carried its own timestamp, so (as in Prometheus) it gets no
    // stale marker; only the synthetic series are in the batch.
    assert!(stale_names(&b).is_empty());
    assert_eq!(b.samples.len(), 5);
    let t = &h.targets.all()[0].1.targets()[0];
    assert!(
        t.last_error.contains("label_limit exceeded"),
        "{}",
        t.last_error
    );
}

#[test]
fn gzip_bodies_are_decompressed_and_can_be_refused() {
    let h = Harness::start(
        json!({"scrape_interval": "300ms", "scrape_timeout": "250ms", "metrics_path": "/gz"}),
    );
    *h.server.body.lock() = "zipped_total 42\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(1.0));
    assert_eq!(value(&b, "zipped_total"), Some(42.0));
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert!(hdrs
        .get("accept-encoding")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("gzip"));

    let h = Harness::start(
        json!({"scrape_interval": "300ms", "scrape_timeout": "250ms", "metrics_path": "/gz", "gzip": false}),
    );
    *h.server.body.lock() = "plain_total 7\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "plain_total"), Some(7.0));
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert_eq!(hdrs.get("accept-encoding").unwrap(), "identity");
}

#[test]
fn reconfigure_keeps_loops_unless_scrape_settings_change() {
    let base = json!({"scrape_interval": "300ms", "scrape_timeout": "250ms"});
    let mut h = Harness::start(base.clone());
    *h.server.body.lock() = "m 1\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "scrape_series_added"), Some(1.0));

    // Only target relabeling changes, and the target survives it: the loop
    // (and its series cache) keeps running.
    let mut keep = base.clone();
    keep["relabel_configs"] =
        json!([{"source_labels": ["env"], "regex": "prod", "action": "drop"}]);
    assert!(h.reconfigure(keep));
    for _ in 0..2 {
        let b = h.next_batch();
        assert_eq!(value(&b, "scrape_series_added"), Some(0.0));
    }

    // Metric relabeling changes: loops restart with the new rules.
    let mut changed = base.clone();
    changed["metric_relabel_configs"] = json!([{"target_label": "tier", "replacement": "gold"}]);
    assert!(h.reconfigure(changed));
    let b = loop {
        let b = h.next_batch();
        if b.samples.iter().any(|s| s.labels.get("tier").is_some()) {
            break b;
        }
    };
    assert_eq!(value(&b, "scrape_series_added"), Some(1.0));
    let m = b
        .samples
        .iter()
        .find(|s| s.labels.metric_name() == Some("m"))
        .unwrap();
    assert_eq!(m.labels.get("tier"), Some("gold"));
    assert!(!m.value.is_nan());

    // Target relabeling now drops the target: it goes away with stale
    // markers and shows up as dropped.
    let mut drop_all = base;
    drop_all["relabel_configs"] =
        json!([{"source_labels": ["env"], "regex": "test", "action": "drop"}]);
    assert!(h.reconfigure(drop_all));
    let b = loop {
        let b = h.next_batch();
        if b.samples.iter().all(|s| is_stale_nan(s.value)) {
            break b;
        }
    };
    assert!(stale_names(&b).contains(&"up".to_string()));
    let view = &h.targets.all()[0].1;
    assert!(view.targets().is_empty());
    assert_eq!(view.dropped_targets().len(), 1);
    h.stop();
}

#[test]
fn tls_with_a_private_ca_and_server_name() {
    let scrape = |tls: serde_json::Value| {
        let h = Harness::start(json!({
            "scrape_interval": "300ms", "scrape_timeout": "250ms",
            "scheme": "https", "tls_config": tls
        }));
        *h.server.body.lock() = "secure_total 1\n".into();
        let addr = h.spawn_tls_server();
        h.set_targets(&[&addr]);
        let b = h.next_batch();
        let err = h.targets.all()[0].1.targets()[0].last_error.clone();
        (value(&b, "up"), value(&b, "secure_total"), err)
    };
    // The certificate names panoptes.test, the URL 127.0.0.1: verification
    // against the URL fails, against server_name succeeds.
    let (up, _, err) = scrape(json!({"ca_file": tls_path("ca.crt")}));
    assert_eq!(up, Some(0.0));
    assert!(!err.is_empty());
    let (up, v, err) =
        scrape(json!({"ca_file": tls_path("ca.crt"), "server_name": "panoptes.test"}));
    assert_eq!((up, v), (Some(1.0), Some(1.0)), "{err}");
    // Without the CA the certificate is unknown, unless verification is off.
    let (up, _, _) = scrape(json!({"server_name": "panoptes.test"}));
    assert_eq!(up, Some(0.0));
    let (up, v, err) = scrape(json!({"insecure_skip_verify": true}));
    assert_eq!((up, v), (Some(1.0), Some(1.0)), "{err}");
}
