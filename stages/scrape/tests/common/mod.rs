//! Shared test harness for the scrape stage: a tiny axum server on
//! 127.0.0.1 (plain and TLS) and a stage started with a hand-built context
//! whose input and output the test holds.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crossbeam_channel::{bounded, Receiver, Sender};
use panoptes_engine::clock::RealClock;
use panoptes_engine::global::GlobalConfig;
use panoptes_engine::port::{Downstream, EdgeCounters, Input, Output};
use panoptes_engine::stage::{
    CompileContext, Message, MessageType, RunningStage, StageContext, StageKind, TargetsRegistry,
};
use panoptes_model::{is_stale_nan, Labels, SampleBatch, TargetGroup, TargetSet};
use panoptes_scrape::ScrapeKind;
use parking_lot::Mutex;

#[derive(Default)]
pub struct ServerState {
    pub status: Mutex<Option<StatusCode>>,
    pub body: Mutex<String>,
    pub content_type: Mutex<Option<String>>,
    pub headers: Mutex<Option<HeaderMap>>,
    pub huge_bytes_sent: AtomicU64,
    /// Where `/away` redirects to (an absolute URL).
    pub redirect_to: Mutex<String>,
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

/// A chain of `n` redirects ending at `/metrics`' answer: each hop points
/// at the next with a path-relative `Location` and a different redirect
/// status.
async fn redirect(
    State(st): State<Arc<ServerState>>,
    Path(n): Path<u32>,
    headers: HeaderMap,
) -> Response {
    if n == 0 {
        return metrics(State(st), headers).await;
    }
    let codes = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    let code = codes[n as usize % codes.len()];
    (code, [("location", (n - 1).to_string())]).into_response()
}

/// A redirect to `ServerState::redirect_to`.
async fn away(State(st): State<Arc<ServerState>>) -> Response {
    let to = st.redirect_to.lock().clone();
    (StatusCode::FOUND, [("location", to)]).into_response()
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

pub struct Harness {
    // Keeps the runtime (server and scrape loops) alive for the test.
    pub _rt: tokio::runtime::Runtime,
    pub addr: String,
    pub server: Arc<ServerState>,
    pub input: Sender<Message>,
    pub output: Receiver<Message>,
    pub running: Option<Box<dyn RunningStage>>,
    pub targets: TargetsRegistry,
}

impl Harness {
    pub fn start(section: serde_json::Value) -> Harness {
        Self::start_with_clock(section, Arc::new(RealClock))
    }

    pub fn start_with_clock(
        section: serde_json::Value,
        clock: Arc<dyn panoptes_engine::clock::Clock>,
    ) -> Harness {
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
            .route("/redirect/{n}", get(redirect))
            .route("/away", get(away))
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
            clock,
            input: Some(Input::new(in_rx)),
            outputs,
            targets: targets.clone(),
            ..StageContext::standalone("node", rt.handle().clone(), ".")
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

    pub fn set_targets(&self, addrs: &[&str]) {
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

    pub fn next_batch(&self) -> Arc<SampleBatch> {
        match self
            .output
            .recv_timeout(Duration::from_secs(10))
            .expect("a batch within 10s")
        {
            Message::Samples(b) => b,
            other => panic!("unexpected {:?}", other.message_type()),
        }
    }

    pub fn reconfigure(&mut self, section: serde_json::Value) -> bool {
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

    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

/// A TLS listener for axum: TCP accept plus a rustls handshake.
pub struct TlsListener {
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

pub fn tls_path(name: &str) -> String {
    format!("{}/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

impl Harness {
    /// Serves `/metrics` over TLS with the test certificate for
    /// `panoptes.test`; returns the address.
    pub fn spawn_tls_server(&self) -> String {
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

impl Harness {
    /// Serves `/metrics` in the clear on another port of 127.0.0.1, with
    /// the same state; returns the address.
    pub fn spawn_second_server(&self) -> String {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(self.server.clone());
        let listener = self
            ._rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
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

pub fn value(b: &SampleBatch, name: &str) -> Option<f64> {
    b.samples
        .iter()
        .find(|s| s.labels.metric_name() == Some(name))
        .map(|s| s.value)
}

pub fn stale_names(b: &SampleBatch) -> Vec<String> {
    let mut v: Vec<String> = b
        .samples
        .iter()
        .filter(|s| is_stale_nan(s.value))
        .filter_map(|s| s.labels.metric_name().map(str::to_string))
        .collect();
    v.sort();
    v
}
