//! The supervisor owns the running [`Engine`] and everything around it that
//! is not a stage: re-reading and reloading the pipeline file, the main HTTP
//! listener (`/metrics`, `/-/healthy`, `/-/ready`, `/-/reload`, the tap
//! stream, stage status, the targets view) and the routes stages mount.
//!
//! Reloads and shutdown block (stages flush on stop), so they run on plain
//! threads (`spawn_blocking` from handlers), never on a tokio worker.
//!
//! The start and every reload can hand the JSON-Schema step to a
//! [`SchemaCheck`] (the binary's runs it in a short-lived child process):
//! building a `jsonschema` validator in process leaves the crate's Draft-7
//! meta-schema validator in a static for good (~11 MB), which a long-running
//! server should not carry. See [`crate::compile::CompileOptions`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use tower::ServiceExt as _;

use crate::compile::{compile_with, CompileOptions, CompiledPipeline, Diagnostic, Diagnostics};
use crate::registry::Registry;
use crate::runtime::{Engine, ReloadReport};
use crate::tap::{message_to_json_lines, TapFilter};

/// Where the pipeline text comes from.
#[derive(Clone, Debug)]
pub enum PipelineSource {
    /// A file, re-read on every reload.
    File(PathBuf),
    /// Text built into the binary (the default pipeline), with a name for
    /// messages.
    Embedded { name: String, text: String },
}

/// Pipeline text as read from its [`PipelineSource`], with what names it in
/// messages and where relative paths inside it resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineText {
    pub text: String,
    /// The file as named on the command line, or the embedded text's name.
    pub name: String,
    pub base_dir: PathBuf,
}

/// What a [`SchemaCheck`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaVerdict {
    /// The text passes the JSON-Schema step: compile it in process with
    /// that step skipped.
    Valid,
    /// The text is invalid: these are the diagnostics a full in-process
    /// [`crate::compile::compile`] of it gives, reported as they are.
    Invalid(Diagnostics),
}

/// Runs the JSON-Schema step of compiling outside this process, so that the
/// process never builds a `jsonschema` validator: the first one built leaves
/// the crate's Draft-7 meta-schema validator in a static for good (~11 MB).
pub trait SchemaCheck: Send + Sync {
    /// Checks `text`. An `Err` means no verdict (the helper could not run,
    /// timed out, or answered nonsense): the caller then runs the step in
    /// process, so a broken helper never fails a start or a reload.
    fn check(
        &self,
        text: &PipelineText,
    ) -> Result<SchemaVerdict, Box<dyn std::error::Error + Send + Sync>>;
}

impl PipelineSource {
    /// Reads the pipeline text (a file is re-read on every call).
    pub fn read(&self) -> Result<PipelineText, Diagnostics> {
        match self {
            PipelineSource::File(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Diagnostics(vec![Diagnostic {
                        file: name.clone(),
                        line: 1,
                        column: 1,
                        path: String::new(),
                        message: format!("cannot read the pipeline file: {e}"),
                    }])
                })?;
                let base_dir = path
                    .parent()
                    .map(|p| {
                        if p.as_os_str().is_empty() {
                            PathBuf::from(".")
                        } else {
                            p.to_path_buf()
                        }
                    })
                    .unwrap_or_else(|| PathBuf::from("."));
                Ok(PipelineText {
                    text,
                    name,
                    base_dir,
                })
            }
            PipelineSource::Embedded { name, text } => Ok(PipelineText {
                text: text.clone(),
                name: name.clone(),
                base_dir: PathBuf::from("."),
            }),
        }
    }

    /// Reads and compiles the pipeline, every check in process.
    pub fn compile(&self, registry: &Registry) -> Result<CompiledPipeline, Diagnostics> {
        self.compile_checked(registry, None)
    }

    /// Reads and compiles the pipeline, with the JSON-Schema step done by
    /// `check` when given (see [`SchemaCheck`]). Without one, or when it
    /// gives no verdict, this is [`PipelineSource::compile`].
    pub fn compile_checked(
        &self,
        registry: &Registry,
        check: Option<&dyn SchemaCheck>,
    ) -> Result<CompiledPipeline, Diagnostics> {
        let text = self.read()?;
        compile_text(&text, registry, check)
    }
}

/// Compiles read text, the schema step by `check` when it gives a verdict.
fn compile_text(
    text: &PipelineText,
    registry: &Registry,
    check: Option<&dyn SchemaCheck>,
) -> Result<CompiledPipeline, Diagnostics> {
    let mut options = CompileOptions::default();
    if let Some(check) = check {
        let t = Instant::now();
        match check.check(text) {
            Ok(SchemaVerdict::Valid) => {
                tracing::debug!(
                    took_ms = t.elapsed().as_millis() as u64,
                    "schema check outside this process: valid"
                );
                options.schema_checked = true;
            }
            Ok(SchemaVerdict::Invalid(diags)) => {
                tracing::debug!(
                    took_ms = t.elapsed().as_millis() as u64,
                    errors = diags.0.len(),
                    "schema check outside this process: invalid"
                );
                return Err(diags);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "schema check outside this process gave no verdict; checking in this process (jsonschema then keeps ~11 MB for the life of the process)"
            ),
        }
    }
    compile_with(&text.text, &text.name, &text.base_dir, registry, options)
}

/// The outcome of the last reloads, for metrics and `/api/v1/status/reload`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub last_successful: bool,
    pub last_success_timestamp_seconds: f64,
    pub last_error: Option<String>,
    pub successes: u64,
    pub failures: u64,
    pub last_report: Option<String>,
    pub last_duration_seconds: f64,
}

/// The running pipeline and its control surface.
pub struct Supervisor {
    engine: Mutex<Engine>,
    registry: Registry,
    source: PipelineSource,
    status: Mutex<ReloadStatus>,
    stage_routes: RwLock<Router>,
    ready: AtomicBool,
    process_metrics: prometheus::Registry,
    started: Instant,
    shutting_down: AtomicBool,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    /// Command-line flags as given, for `/api/v1/status/flags`.
    flags: RwLock<BTreeMap<String, String>>,
    start_time: SystemTime,
    /// Who runs the JSON-Schema step of a reload; in process when unset.
    schema_check: RwLock<Option<Arc<dyn SchemaCheck>>>,
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Supervisor {
    /// Wraps a started engine.
    pub fn new(engine: Engine, registry: Registry, source: PipelineSource) -> Arc<Supervisor> {
        let process_metrics = prometheus::Registry::new();
        let _ = process_metrics.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let (shutdown_tx, _) = tokio::sync::watch::channel(false);
        let sup = Arc::new(Supervisor {
            engine: Mutex::new(engine),
            registry,
            source,
            status: Mutex::new(ReloadStatus {
                last_successful: true,
                last_success_timestamp_seconds: now_seconds(),
                ..Default::default()
            }),
            stage_routes: RwLock::new(Router::new()),
            ready: AtomicBool::new(true),
            process_metrics,
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
            shutdown_tx,
            flags: RwLock::new(BTreeMap::new()),
            start_time: SystemTime::now(),
            schema_check: RwLock::new(None),
        });
        sup.refresh_routes();
        sup
    }

    /// Records the command-line flags shown by `/api/v1/status/flags`.
    pub fn set_flags(&self, flags: BTreeMap<String, String>) {
        *self.flags.write() = flags;
    }

    /// Has `check` run the JSON-Schema step of every later reload (see
    /// [`SchemaCheck`]); without one, reloads run it in process.
    pub fn set_schema_check(&self, check: Arc<dyn SchemaCheck>) {
        *self.schema_check.write() = Some(check);
    }

    /// The pipeline text now in force, for `/api/v1/status/config`.
    fn pipeline_text(&self) -> String {
        match &self.source {
            PipelineSource::File(p) => std::fs::read_to_string(p).unwrap_or_default(),
            PipelineSource::Embedded { text, .. } => text.clone(),
        }
    }

    /// Resolves when shutdown has been requested (e.g. by a signal).
    pub fn shutdown_requested(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Asks the host to shut down.
    pub fn request_shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
    }

    fn refresh_routes(&self) {
        let routes = self.engine.lock().stage_routes();
        let mut merged = Router::new();
        for (id, r) in routes {
            // axum panics on overlapping routes; two stages claiming one
            // path is a config problem to log, not a crash.
            let attempt =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| merged.clone().merge(r)));
            match attempt {
                Ok(m) => merged = m,
                Err(_) => {
                    tracing::error!(stage = %id, "stage HTTP routes overlap another stage's; its routes are not mounted")
                }
            }
        }
        *self.stage_routes.write() = merged;
    }

    /// Re-reads the pipeline and applies it. Blocking: call from a plain
    /// thread. An invalid file leaves the running pipeline untouched.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let t = Instant::now();
        let check = self.schema_check.read().clone();
        let result = match self
            .source
            .compile_checked(&self.registry, check.as_deref())
        {
            Err(diags) => Err(format!(
                "invalid pipeline, keeping the running one:\n{diags}"
            )),
            Ok(new) => {
                let mut engine = self.engine.lock();
                engine.reload(new).map_err(|e| e.to_string())
            }
        };
        self.refresh_routes();
        let mut st = self.status.lock();
        st.last_duration_seconds = t.elapsed().as_secs_f64();
        match &result {
            Ok(report) => {
                st.last_successful = true;
                st.last_success_timestamp_seconds = now_seconds();
                st.last_error = None;
                st.successes += 1;
                st.last_report = Some(report.summary());
                tracing::info!(took_ms = t.elapsed().as_millis() as u64, result = %report.summary(), "pipeline reloaded");
            }
            Err(e) => {
                st.last_successful = false;
                st.last_error = Some(e.clone());
                st.failures += 1;
                tracing::error!(error = %e, "reload failed");
            }
        }
        result
    }

    /// Stops every stage (sources first, flushing in-flight data).
    pub fn shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.ready.store(false, Ordering::SeqCst);
        self.engine.lock().stop_all();
        tracing::info!("pipeline stopped");
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.status.lock().clone()
    }

    /// Runs a closure with the engine locked.
    pub fn with_engine<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        f(&self.engine.lock())
    }

    /// The main listener's routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/-/healthy", get(|| async { "Panoptes is Healthy.\n" }))
            .route("/-/ready", get(ready_handler))
            .route("/-/reload", post(reload_handler).put(reload_handler))
            .route("/-/quit", post(quit_handler).put(quit_handler))
            .route("/api/v1/status/stages", get(stages_handler))
            .route("/api/v1/status/reload", get(reload_status_handler))
            .route("/api/v1/targets", get(targets_handler))
            .route("/api/v1/status/config", get(config_handler))
            .route("/api/v1/status/flags", get(flags_handler))
            .route("/api/v1/status/buildinfo", get(buildinfo_handler))
            .route("/api/v1/status/runtimeinfo", get(runtimeinfo_handler))
            .route("/api/v1/tap", get(tap_handler))
            .fallback(stage_route_handler)
            .with_state(self.clone())
    }

    /// `/metrics` text: process metrics, engine families, then the stages'.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        let _ = encoder.encode_utf8(&self.process_metrics.gather(), &mut out);
        let status = self.reload_status();
        let engine = self.engine.lock();
        let mut fam = |name: &str, typ: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {typ}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {}", panoptes_model::format_float(v));
            }
        };
        fam(
            "panoptes_build_info",
            "gauge",
            "A metric with a constant '1' value labeled by the version of Panoptes.",
            vec![(
                format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                1.0,
            )],
        );
        fam(
            "panoptes_config_last_reload_successful",
            "gauge",
            "Whether the last pipeline reload attempt was successful.",
            vec![(
                String::new(),
                if status.last_successful { 1.0 } else { 0.0 },
            )],
        );
        fam(
            "panoptes_config_last_reload_success_timestamp_seconds",
            "gauge",
            "Timestamp of the last successful pipeline reload.",
            vec![(String::new(), status.last_success_timestamp_seconds)],
        );
        fam(
            "panoptes_config_reloads_total",
            "counter",
            "Pipeline reloads by result.",
            vec![
                ("{result=\"success\"}".into(), status.successes as f64),
                ("{result=\"failure\"}".into(), status.failures as f64),
            ],
        );
        fam(
            "panoptes_uptime_seconds",
            "gauge",
            "Seconds since the pipeline started.",
            vec![(String::new(), self.started.elapsed().as_secs_f64())],
        );
        let stages = engine.status();
        let lbl = |id: &str| format!("{{stage=\"{}\"}}", esc(id));
        fam(
            "panoptes_stage_up",
            "gauge",
            "Whether the stage is running (1) or failed to start (0).",
            stages
                .iter()
                .map(|s| {
                    (
                        format!("{{kind=\"{}\",stage=\"{}\"}}", s.kind, esc(&s.id)),
                        if s.running { 1.0 } else { 0.0 },
                    )
                })
                .collect(),
        );
        fam(
            "panoptes_stage_healthy",
            "gauge",
            "Whether the stage reports itself healthy.",
            stages
                .iter()
                .map(|s| (lbl(&s.id), if s.healthy { 1.0 } else { 0.0 }))
                .collect(),
        );
        fam(
            "panoptes_stage_queue_depth",
            "gauge",
            "Batches waiting in the stage's input channel.",
            stages
                .iter()
                .filter(|s| s.queue_capacity > 0)
                .map(|s| (lbl(&s.id), s.queue_depth as f64))
                .collect(),
        );
        fam(
            "panoptes_stage_queue_capacity",
            "gauge",
            "Capacity of the stage's input channel, in batches.",
            stages
                .iter()
                .filter(|s| s.queue_capacity > 0)
                .map(|s| (lbl(&s.id), s.queue_capacity as f64))
                .collect(),
        );
        let outputs = engine.outputs();
        let out_lbl = |o: &crate::port::Output| {
            format!(
                "{{port=\"{}\",stage=\"{}\"}}",
                esc(o.port()),
                esc(o.stage())
            )
        };
        fam(
            "panoptes_output_messages_total",
            "counter",
            "Batches a stage emitted on an output port.",
            outputs
                .iter()
                .map(|o| (out_lbl(o), o.sent().0 as f64))
                .collect(),
        );
        fam(
            "panoptes_output_items_total",
            "counter",
            "Items (samples, targets groups, alerts) a stage emitted on an output port.",
            outputs
                .iter()
                .map(|o| (out_lbl(o), o.sent().1 as f64))
                .collect(),
        );
        let edges = engine.edges();
        let edge_lbl = |e: &crate::runtime::EdgeStatus| {
            format!(
                "{{from=\"{}\",port=\"{}\",to=\"{}\"}}",
                esc(&e.from),
                esc(&e.port),
                esc(&e.to)
            )
        };
        use std::sync::atomic::Ordering::Relaxed;
        type Read = fn(&crate::port::EdgeCounters) -> u64;
        let edge_fams: [(&str, &str, Read); 4] = [
            (
                "panoptes_edge_messages_total",
                "Batches delivered on an edge.",
                |c| c.messages.load(Relaxed),
            ),
            (
                "panoptes_edge_items_total",
                "Items delivered on an edge.",
                |c| c.items.load(Relaxed),
            ),
            (
                "panoptes_edge_dropped_messages_total",
                "Batches dropped on an edge because the consumer was full (when_full: drop).",
                |c| c.dropped_messages.load(Relaxed),
            ),
            (
                "panoptes_edge_dropped_items_total",
                "Items dropped on an edge because the consumer was full (when_full: drop).",
                |c| c.dropped_items.load(Relaxed),
            ),
        ];
        for (name, help, get) in edge_fams {
            fam(
                name,
                "counter",
                help,
                edges
                    .iter()
                    .map(|e| (edge_lbl(e), get(&e.counters) as f64))
                    .collect(),
            );
        }
        let stage_fams = engine.gather_stage_metrics();
        drop(engine);
        let _ = encoder.encode_utf8(&stage_fams, &mut out);
        out
    }
}

fn esc(s: &str) -> String {
    panoptes_model::escape_label_value(s).into_owned()
}

type Sup = State<Arc<Supervisor>>;

async fn metrics_handler(State(s): Sup) -> Response {
    match tokio::task::spawn_blocking(move || s.render_metrics()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn ready_handler(State(s): Sup) -> Response {
    if s.ready.load(Ordering::SeqCst) && s.with_engine(Engine::all_ready) {
        "Panoptes is Ready.\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n").into_response()
    }
}

async fn reload_handler(State(s): Sup) -> Response {
    match tokio::task::spawn_blocking(move || s.reload()).await {
        Ok(Ok(report)) => {
            (StatusCode::OK, format!("reloaded: {}\n", report.summary())).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn quit_handler(State(s): Sup) -> Response {
    s.request_shutdown();
    "Requesting termination... Goodbye!\n".into_response()
}

async fn stages_handler(State(s): Sup) -> Response {
    let r = tokio::task::spawn_blocking(move || s.with_engine(|e| e.status())).await;
    match r {
        Ok(stages) => Json(json!({"status": "success", "data": stages})).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn config_handler(State(s): Sup) -> Response {
    let text = tokio::task::spawn_blocking(move || s.pipeline_text())
        .await
        .unwrap_or_default();
    Json(json!({"status": "success", "data": {"yaml": text}})).into_response()
}

async fn flags_handler(State(s): Sup) -> Response {
    Json(json!({"status": "success", "data": &*s.flags.read()})).into_response()
}

async fn buildinfo_handler() -> Response {
    Json(json!({"status": "success", "data": {
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("PANOPTES_REVISION").unwrap_or("unknown"),
        "branch": option_env!("PANOPTES_BRANCH").unwrap_or("unknown"),
        "buildUser": option_env!("USER").unwrap_or("unknown"),
        "buildDate": option_env!("PANOPTES_BUILD_DATE").unwrap_or("unknown"),
        "goVersion": format!("rust (panoptes {})", env!("CARGO_PKG_VERSION")),
    }}))
    .into_response()
}

async fn runtimeinfo_handler(State(s): Sup) -> Response {
    let status = s.reload_status();
    let start = humantime::format_rfc3339_millis(s.start_time).to_string();
    let last = humantime::format_rfc3339_millis(
        UNIX_EPOCH + Duration::from_secs_f64(status.last_success_timestamp_seconds.max(0.0)),
    )
    .to_string();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Json(json!({"status": "success", "data": {
        "startTime": start,
        "CWD": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": status.last_successful,
        "lastConfigTime": last,
        "corruptionCount": 0,
        "goroutineCount": 0,
        "GOMAXPROCS": threads,
        "GOMEMLIMIT": 0,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": s.flags.read().get("storage.retention").cloned().unwrap_or_else(|| "see the store stages".into()),
    }}))
    .into_response()
}

async fn reload_status_handler(State(s): Sup) -> Response {
    Json(json!({"status": "success", "data": s.reload_status()})).into_response()
}

fn labels_json(l: &panoptes_model::Labels) -> serde_json::Value {
    let m: serde_json::Map<String, serde_json::Value> = l
        .iter()
        .map(|l| (l.name.to_string(), json!(&*l.value)))
        .collect();
    serde_json::Value::Object(m)
}

fn rfc3339_ms(ms: i64) -> String {
    if ms <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

async fn targets_handler(State(s): Sup, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let views = s.with_engine(|e| e.targets().all());
    let state = q.get("state").map(String::as_str).unwrap_or("any");
    let mut active = Vec::new();
    let mut dropped = Vec::new();
    for (_, view) in views {
        if state == "any" || state == "active" {
            for t in view.targets() {
                active.push(json!({
                    "discoveredLabels": labels_json(&t.discovered_labels),
                    "labels": labels_json(&t.labels),
                    "scrapePool": t.scrape_pool,
                    "scrapeUrl": t.scrape_url,
                    "globalUrl": t.scrape_url,
                    "lastError": t.last_error,
                    "lastScrape": rfc3339_ms(t.last_scrape_ms),
                    "lastScrapeDuration": t.last_scrape_duration_seconds,
                    "health": t.health.as_str(),
                    "scrapeInterval": panoptes_model::format_duration_ms(t.scrape_interval_ms),
                    "scrapeTimeout": panoptes_model::format_duration_ms(t.scrape_timeout_ms),
                }));
            }
        }
        if state == "any" || state == "dropped" {
            for d in view.dropped_targets() {
                dropped.push(json!({"discoveredLabels": labels_json(&d)}));
            }
        }
    }
    Json(json!({"status": "success", "data": {"activeTargets": active, "droppedTargets": dropped}}))
        .into_response()
}

async fn tap_handler(State(s): Sup, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let filter = match TapFilter::from_query(&q) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"status": "error", "errorType": "bad_data", "error": e})),
            )
                .into_response()
        }
    };
    let outputs = s.with_engine(|e| e.outputs());
    let names: Vec<String> = outputs.iter().map(output_name).collect();
    let matched: Vec<_> = outputs
        .into_iter()
        .filter(|o| filter.matches(&output_name(o)))
        .collect();
    if matched.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"status": "error", "errorType": "not_found",
                "error": format!("no stage output matches {:?}; outputs: {}", filter.pattern, names.join(", "))})),
        )
            .into_response();
    }
    let (tap_tx, tap_rx) = crossbeam_channel::bounded::<crate::port::Tapped>(256);
    for o in &matched {
        o.attach_tap(tap_tx.clone());
    }
    drop(tap_tx);
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(64);
    tokio::task::spawn_blocking(move || {
        let mut sent = 0u64;
        let mut seen = 0u64;
        loop {
            match tap_rx.recv_timeout(Duration::from_millis(500)) {
                Ok(msg) => {
                    let mut chunk = String::new();
                    for line in message_to_json_lines(&msg) {
                        seen += 1;
                        if filter.every > 1 && !(seen - 1).is_multiple_of(filter.every) {
                            continue;
                        }
                        chunk.push_str(&line);
                        chunk.push('\n');
                        sent += 1;
                        if filter.limit.is_some_and(|l| sent >= l) {
                            break;
                        }
                    }
                    if !chunk.is_empty() && body_tx.blocking_send(Ok(chunk.into())).is_err() {
                        return;
                    }
                    if filter.limit.is_some_and(|l| sent >= l) {
                        return;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if body_tx.is_closed() {
                        return;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(body_rx);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

fn output_name(o: &crate::port::Output) -> String {
    if o.port().is_empty() {
        o.stage().to_string()
    } else {
        format!("{}.{}", o.stage(), o.port())
    }
}

async fn stage_route_handler(State(s): Sup, req: Request) -> Response {
    let router = s.stage_routes.read().clone();
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A [`SchemaCheck`] with a fixed answer, counting its calls.
    struct Fixed(
        Result<SchemaVerdict, &'static str>,
        std::sync::atomic::AtomicUsize,
    );

    impl SchemaCheck for Fixed {
        fn check(
            &self,
            _text: &PipelineText,
        ) -> Result<SchemaVerdict, Box<dyn std::error::Error + Send + Sync>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.clone().map_err(Into::into)
        }
    }

    fn fixed(answer: Result<SchemaVerdict, &'static str>) -> Fixed {
        Fixed(answer, Default::default())
    }

    /// Breaks only the schema (an unknown top-level key).
    fn source() -> PipelineSource {
        PipelineSource::Embedded {
            name: "p.yaml".into(),
            text: "stages: {}\nbogus: 1\n".into(),
        }
    }

    #[test]
    fn without_a_check_the_schema_step_runs_in_process() {
        let r = Registry::new();
        let err = source().compile(&r).unwrap_err();
        assert!(err.to_string().contains("unknown field \"bogus\""), "{err}");
        assert_eq!(source().compile_checked(&r, None).unwrap_err(), err);
    }

    #[test]
    fn a_check_without_a_verdict_falls_back_to_the_in_process_step() {
        let r = Registry::new();
        let check = fixed(Err("helper broke"));
        let err = source().compile_checked(&r, Some(&check)).unwrap_err();
        assert_eq!(err, source().compile(&r).unwrap_err());
        assert_eq!(check.1.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_invalid_verdict_is_the_result_as_given() {
        let r = Registry::new();
        let d = Diagnostics(vec![Diagnostic {
            file: "p.yaml".into(),
            line: 2,
            column: 1,
            path: "bogus".into(),
            message: "from the helper".into(),
        }]);
        let check = fixed(Ok(SchemaVerdict::Invalid(d.clone())));
        assert_eq!(source().compile_checked(&r, Some(&check)).unwrap_err(), d);
    }

    #[test]
    fn a_valid_verdict_skips_only_the_schema_step() {
        let r = Registry::new();
        let check = fixed(Ok(SchemaVerdict::Valid));
        // The schema's complaint is not repeated...
        assert!(source().compile_checked(&r, Some(&check)).is_ok());
        // ...but every other check still runs in process.
        let broken = PipelineSource::Embedded {
            name: "p.yaml".into(),
            text: "global: {scrape_interval: 10s, scrape_timeout: 20s}\nstages: {}\n".into(),
        };
        let err = broken.compile_checked(&r, Some(&check)).unwrap_err();
        assert!(err.to_string().contains("must not be greater"), "{err}");
    }
}
