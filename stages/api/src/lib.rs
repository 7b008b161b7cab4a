//! The `api` stage: Prometheus's HTTP query API (`/api/v1/query`,
//! `query_range`, `series`, `labels`, `label/<name>/values`, `metadata`,
//! `format_query`, `query_exemplars`) over a store named by a query
//! reference (`store: tsdb`), mounted on the main listener. JSON shapes,
//! error types and HTTP codes are Prometheus's, so Grafana's Prometheus data
//! source and scripts work against it unchanged.

mod params;

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value as J};

use panoptes_engine::clock::Clock;
use panoptes_engine::stage::{
    CompileContext, ConfigIssue, MessageType, PortSpec, RunningStage, StageConfig, StageContext,
    StageError, StageKind, StoreRegistry,
};
use panoptes_model::{parse_duration_ms, Labels, Matcher, SeriesSelect, DURATION_PATTERN};
use panoptes_promql::{Engine, EngineOptions, QueryError, QueryResult, Value};
use panoptes_promql_parser::{parse, Expr};

pub use params::{
    json_time, json_value, parse_duration_param_ms, parse_time_ms, ParamError, Params,
};

/// Prometheus refuses range queries with more points than this per series.
const MAX_POINTS: i64 = 11_000;

/// The `api` stage kind.
pub struct ApiKind;

/// A checked `api` section.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    pub store: String,
    pub lookback_delta_ms: i64,
    pub query_timeout: Duration,
    pub max_samples: usize,
}

impl StageKind for ApiKind {
    fn name(&self) -> &'static str {
        "api"
    }

    fn description(&self) -> &'static str {
        "Prometheus's /api/v1 query API (query, query_range, series, labels, metadata) over a store."
    }

    fn config_schema(&self) -> J {
        json!({
            "type": "object",
            "required": ["store"],
            "properties": {
                "store": {"type": "string", "description": "The store stage queries read (a query reference, not a data edge)."},
                "lookback_delta": {"type": "string", "pattern": DURATION_PATTERN,
                    "description": "How far back an instant selector looks for a sample (default 5m)."},
                "query_timeout": {"type": "string", "pattern": DURATION_PATTERN,
                    "description": "Maximum time a query may take (default 2m)."},
                "max_samples": {"type": "integer", "minimum": 1,
                    "description": "Maximum samples a query may hold in memory (default 50000000)."}
            }
        })
    }

    fn compile(
        &self,
        _ctx: &CompileContext,
        section: &J,
    ) -> Result<Box<dyn StageConfig>, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let store = section
            .get("store")
            .and_then(J::as_str)
            .unwrap_or_default()
            .to_string();
        let dur = |key: &str, default: u64, issues: &mut Vec<ConfigIssue>| -> u64 {
            match section.get(key).and_then(J::as_str) {
                None => default,
                Some(s) => match parse_duration_ms(s) {
                    Ok(0) => {
                        issues.push(ConfigIssue::new(
                            key,
                            format!("{key} must be greater than 0"),
                        ));
                        default
                    }
                    Ok(v) => v,
                    Err(e) => {
                        issues.push(ConfigIssue::new(key, e.to_string()));
                        default
                    }
                },
            }
        };
        let lookback = dur("lookback_delta", 5 * 60 * 1000, &mut issues);
        let timeout = dur("query_timeout", 2 * 60 * 1000, &mut issues);
        let max_samples = section
            .get("max_samples")
            .and_then(J::as_u64)
            .unwrap_or(50_000_000) as usize;
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Box::new(ApiConfig {
            store,
            lookback_delta_ms: lookback as i64,
            query_timeout: Duration::from_millis(timeout),
            max_samples,
        }))
    }
}

impl StageConfig for ApiConfig {
    fn input(&self) -> Option<MessageType> {
        None
    }

    fn outputs(&self) -> Vec<PortSpec> {
        Vec::new()
    }

    fn store_refs(&self) -> Vec<String> {
        vec![self.store.clone()]
    }

    fn start(&self, ctx: StageContext) -> Result<Box<dyn RunningStage>, StageError> {
        let api = Arc::new(Api {
            admin: ctx.global.enable_admin_api,
            store_id: self.store.clone(),
            stores: ctx.stores.clone(),
            clock: ctx.clock.clone(),
            engine: Engine::new(EngineOptions {
                lookback_delta_ms: self.lookback_delta_ms,
                max_samples: self.max_samples,
                timeout: self.query_timeout,
                default_subquery_step_ms: ctx.global.evaluation_interval.as_millis() as i64,
                ..EngineOptions::default()
            }),
            parsed: ParseCache::default(),
        });
        Ok(Box::new(RunningApi { api }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct Api {
    /// Admin endpoints enabled (`run --enable-admin-api`).
    admin: bool,
    store_id: String,
    stores: StoreRegistry,
    clock: Arc<dyn Clock>,
    engine: Engine,
    parsed: ParseCache,
}

/// Queries parsed recently, by their text: dashboards and rules send the
/// same few queries over and over, and for a selective query parsing was a
/// fifth of the server's time. Only successful parses are kept.
#[derive(Default)]
struct ParseCache {
    map: std::sync::Mutex<HashMap<String, Arc<Expr>>>,
}

/// Entries kept before the cache starts over (a dashboard's worth many
/// times over).
const PARSE_CACHE_ENTRIES: usize = 512;

/// Longer queries are parsed every time: the cache's memory stays bounded
/// (≤ 512 × 4 KiB of text, plus their trees).
const PARSE_CACHE_MAX_QUERY_BYTES: usize = 4096;

impl ParseCache {
    fn parse(&self, q: &str) -> Result<Arc<Expr>, ApiError> {
        let cacheable = q.len() <= PARSE_CACHE_MAX_QUERY_BYTES;
        if cacheable {
            if let Some(e) = self.lock().get(q) {
                return Ok(e.clone());
            }
        }
        let expr = Arc::new(
            parse(q)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))?,
        );
        if cacheable {
            let mut map = self.lock();
            if map.len() >= PARSE_CACHE_ENTRIES {
                map.clear();
            }
            map.insert(q.to_string(), expr.clone());
        }
        Ok(expr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Expr>>> {
        // The map holds no invariant a panicking holder could break.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct RunningApi {
    api: Arc<Api>,
}

impl RunningStage for RunningApi {
    fn http_routes(&self) -> Option<Router> {
        Some(router(self.api.clone()))
    }

    fn stop(self: Box<Self>) {}
}

fn both(handler: MethodRouter<Arc<Api>>) -> MethodRouter<Arc<Api>> {
    handler
}

fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/query", both(get(query).post(query)))
        .route(
            "/api/v1/query_range",
            both(get(query_range).post(query_range)),
        )
        .route("/api/v1/series", both(get(series).post(series)))
        .route("/api/v1/labels", both(get(labels).post(labels)))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route(
            "/api/v1/format_query",
            both(get(format_query).post(format_query)),
        )
        .route(
            "/api/v1/query_exemplars",
            both(get(query_exemplars).post(query_exemplars)),
        )
        .route("/api/v1/status/tsdb", get(status_tsdb))
        .route(
            "/api/v1/admin/tsdb/snapshot",
            axum::routing::post(admin_snapshot).put(admin_snapshot),
        )
        .route(
            "/api/v1/admin/tsdb/delete_series",
            axum::routing::post(admin_delete_series).put(admin_delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            axum::routing::post(admin_clean_tombstones).put(admin_clean_tombstones),
        )
        .with_state(api)
}

/// An API failure with Prometheus's error type and HTTP code.
#[derive(Debug)]
pub struct ApiError {
    error_type: &'static str,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            error_type: "bad_data",
            message: message.into(),
        }
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        ApiError::bad_data(e.0)
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError {
            error_type: e.error_type(),
            message: e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = match self.error_type {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "canceled" | "timeout" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "not_found" => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            code,
            Json(json!({"status": "error", "errorType": self.error_type, "error": self.message})),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn success(data: J, warnings: &[String], infos: &[String]) -> Response {
    let mut body = json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    if !infos.is_empty() {
        body["infos"] = json!(infos);
    }
    Json(body).into_response()
}

/// Parameters from the query string and, for a POST form, the body: what
/// every endpoint reads, as Prometheus's `r.FormValue` does.
impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().map(str::to_string);
        let is_form = req.method() == Method::POST
            && req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            // Only a form body holds parameters; anything else is left unread.
            return Ok(Params::parse(query.as_deref(), None));
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_data(format!("cannot read the request body: {e}")))?;
        Ok(Params::parse(query.as_deref(), Some(&body[..])))
    }
}

impl Api {
    /// The engine for one request: the `timeout` parameter may shorten the
    /// configured query timeout, never lengthen it (as Prometheus does).
    fn engine_for(&self, p: &Params) -> Result<Engine, ApiError> {
        let mut engine = self.engine.clone();
        if let Some(v) = p.get("timeout") {
            let ms = parse_duration_param_ms(v)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    ApiError::bad_data(format!(
                        "invalid parameter \"timeout\": cannot parse \"{v}\" to a valid duration"
                    ))
                })?;
            engine.opts.timeout = engine.opts.timeout.min(Duration::from_millis(ms as u64));
        }
        Ok(engine)
    }

    /// The `query` parameter, parsed (or from the cache of recent ones).
    fn parse_query(&self, p: &Params) -> Result<Arc<Expr>, ApiError> {
        let q = p.get("query").ok_or_else(|| {
            ApiError::bad_data("invalid parameter \"query\": query must not be empty")
        })?;
        self.parsed.parse(q)
    }

    fn store(&self) -> Result<Arc<dyn SeriesSelect>, ApiError> {
        self.stores.get(&self.store_id).ok_or_else(|| ApiError {
            error_type: "unavailable",
            message: format!("store {:?} is not running", self.store_id),
        })
    }
}

fn parse_query(p: &Params) -> Result<Expr, ApiError> {
    let q = p.get("query").ok_or_else(|| {
        ApiError::bad_data("invalid parameter \"query\": query must not be empty")
    })?;
    parse(q).map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

fn labels_json(l: &Labels) -> J {
    J::Object(
        l.iter()
            .map(|l| (l.name.to_string(), J::from(&*l.value)))
            .collect(),
    )
}

/// Writes a string as a JSON string literal.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes `[time, "value"]` as Prometheus does, whole-second times and the
/// value straight into the buffer (a query answer writes one per point).
fn write_point(out: &mut Vec<u8>, t: i64, v: f64) {
    out.push(b'[');
    if t % 1000 == 0 {
        out.extend_from_slice(itoa::Buffer::new().format(t / 1000).as_bytes());
    } else {
        let _ = serde_json::to_writer(&mut *out, &json_time(t));
    }
    out.extend_from_slice(b",\"");
    // Digits, signs, '.', 'e', "NaN" or "Inf": nothing to escape.
    panoptes_model::write_api_float(out, v);
    out.extend_from_slice(b"\"]");
}

fn write_labels(out: &mut Vec<u8>, l: &Labels) {
    out.push(b'{');
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, &x.name);
        out.push(b':');
        write_str(out, &x.value);
    }
    out.push(b'}');
}

fn write_annotations(out: &mut Vec<u8>, key: &str, list: &[String]) {
    if list.is_empty() {
        return;
    }
    out.push(b',');
    write_str(out, key);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, list);
}

/// The whole success response of a query, written straight into bytes:
/// the same JSON (keys in the same, sorted order) that building a
/// `serde_json::Value` tree gave, without a map and a string per label and
/// point on the way.
fn query_response(r: &QueryResult) -> Response {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"data\":{\"result\":");
    let kind = match &r.value {
        Value::Scalar(t, v) => {
            write_point(&mut out, *t, *v);
            "scalar"
        }
        Value::String(t, s) => {
            out.push(b'[');
            let _ = serde_json::to_writer(&mut out, &json_time(*t));
            out.push(b',');
            write_str(&mut out, s);
            out.push(b']');
            "string"
        }
        Value::Vector(samples) => {
            out.push(b'[');
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"metric\":");
                write_labels(&mut out, &s.labels);
                out.extend_from_slice(b",\"value\":");
                write_point(&mut out, s.t, s.v);
                out.push(b'}');
            }
            out.push(b']');
            "vector"
        }
        Value::Matrix(series) => {
            out.push(b'[');
            for (i, s) in series.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"metric\":");
                write_labels(&mut out, &s.labels);
                out.extend_from_slice(b",\"values\":[");
                for (k, (t, v)) in s.points.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    write_point(&mut out, *t, *v);
                }
                out.extend_from_slice(b"]}");
            }
            out.push(b']');
            "matrix"
        }
    };
    out.extend_from_slice(b",\"resultType\":");
    write_str(&mut out, kind);
    out.push(b'}');
    write_annotations(&mut out, "infos", &r.infos);
    out.extend_from_slice(b",\"status\":\"success\"");
    write_annotations(&mut out, "warnings", &r.warnings);
    out.push(b'}');
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(out),
    )
        .into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError {
        error_type: "internal",
        message: e.to_string(),
    })?
}

/// Runs `f` on this worker thread, telling the runtime to move its other
/// tasks elsewhere meanwhile. For instant queries, which are mostly short:
/// the hand-off to the blocking pool and back (two thread wake-ups) was a
/// sixth of a selective query's latency. Long range queries keep using
/// [`blocking`]. A current-thread runtime cannot lend its only thread, so
/// there it is [`blocking`] too.
async fn in_place<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        tokio::task::block_in_place(f)
    } else {
        blocking(f).await
    }
}

/// Instant queries that read at most this many series (by the store's
/// postings, range selectors counted per minute of range; see
/// `Engine::instant_read_bound`) run on the request's own worker thread.
const INLINE_MAX_SERIES: usize = 1000;

async fn query(State(api): State<Arc<Api>>, p: Params) -> ApiResult {
    let expr = api.parse_query(&p)?;
    let t = p.time_ms("time", api.clock.now_ms())?;
    let engine = api.engine_for(&p)?;
    let store = api.store()?;
    // A query over a handful of series takes microseconds: run it right
    // here. Lending the worker thread (`in_place`) costs more than that.
    let small = Engine::instant_read_bound(&*store, &expr).is_some_and(|n| n <= INLINE_MAX_SERIES);
    let r = if small {
        engine.instant(&*store, &expr, t)?
    } else {
        in_place(move || Ok(engine.instant(&*store, &expr, t)?)).await?
    };
    Ok(query_response(&r))
}

async fn query_range(State(api): State<Arc<Api>>, p: Params) -> ApiResult {
    let start = p.get("start").ok_or_else(|| {
        ApiError::bad_data("invalid parameter \"start\": cannot parse \"\" to a valid timestamp")
    })?;
    let start = parse_time_ms(start).ok_or_else(|| {
        ApiError::bad_data(format!(
            "invalid parameter \"start\": cannot parse \"{start}\" to a valid timestamp"
        ))
    })?;
    let end = p.get("end").ok_or_else(|| {
        ApiError::bad_data("invalid parameter \"end\": cannot parse \"\" to a valid timestamp")
    })?;
    let end = parse_time_ms(end).ok_or_else(|| {
        ApiError::bad_data(format!(
            "invalid parameter \"end\": cannot parse \"{end}\" to a valid timestamp"
        ))
    })?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = p.duration_ms("step")?.ok_or_else(|| {
        ApiError::bad_data("invalid parameter \"step\": cannot parse \"\" to a valid duration")
    })?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let expr = api.parse_query(&p)?;
    let engine = api.engine_for(&p)?;
    let store = api.store()?;
    let r = blocking(move || Ok(engine.range(&*store, &expr, start, end, step)?)).await?;
    Ok(query_response(&r))
}

/// `match[]` selectors as matcher lists.
fn selectors(p: &Params, required: bool) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let raw = p.all("match[]");
    if raw.is_empty() && required {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let mut out = Vec::new();
    for s in raw {
        let expr = parse(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        match expr {
            Expr::Vector(vs) => {
                let ms: Vec<Matcher> = vs.matchers.clone();
                if ms.iter().all(|m| m.matches_empty()) {
                    return Err(ApiError::bad_data(
                        "invalid parameter \"match[]\": vector selector must contain at least one non-empty matcher",
                    ));
                }
                out.push(ms);
            }
            _ => {
                return Err(ApiError::bad_data(format!(
                    "invalid parameter \"match[]\": {s:?} is not a series selector"
                )))
            }
        }
    }
    Ok(out)
}

fn range_params(p: &Params) -> Result<(i64, i64), ApiError> {
    Ok((
        p.time_ms("start", i64::MIN / 2)?,
        p.time_ms("end", i64::MAX / 2)?,
    ))
}

fn limit(p: &Params) -> Result<Option<usize>, ApiError> {
    match p.get("limit") {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(ApiError::bad_data(format!(
                "invalid parameter \"limit\": cannot parse \"{v}\" to a valid limit"
            ))),
        },
    }
}

async fn series(State(api): State<Arc<Api>>, p: Params) -> ApiResult {
    let sels = selectors(&p, true)?;
    let (start, end) = range_params(&p)?;
    let lim = limit(&p)?;
    let store = api.store()?;
    let (data, warnings) = blocking(move || {
        let mut all: Vec<Labels> = Vec::new();
        for ms in &sels {
            let found = store.select(ms, start, end).map_err(|e| ApiError {
                error_type: "execution",
                message: e.to_string(),
            })?;
            all.extend(found.into_iter().map(|s| s.labels));
        }
        all.sort();
        all.dedup();
        let mut warnings = Vec::new();
        if let Some(l) = lim {
            if all.len() > l {
                all.truncate(l);
                warnings.push("results truncated due to limit".to_string());
            }
        }
        Ok((all, warnings))
    })
    .await?;
    Ok(success(
        J::Array(data.iter().map(labels_json).collect()),
        &warnings,
        &[],
    ))
}

async fn labels(State(api): State<Arc<Api>>, p: Params) -> ApiResult {
    let sels = selectors(&p, false)?;
    let (start, end) = range_params(&p)?;
    let lim = limit(&p)?;
    let store = api.store()?;
    let (names, warnings) = blocking(move || {
        let err = |e: panoptes_model::StorageError| ApiError {
            error_type: "execution",
            message: e.to_string(),
        };
        let mut names = Vec::new();
        if sels.is_empty() {
            names = store.label_names(&[], start, end).map_err(err)?;
        } else {
            for ms in &sels {
                names.extend(store.label_names(ms, start, end).map_err(err)?);
            }
            names.sort();
            names.dedup();
        }
        Ok(truncate(names, lim))
    })
    .await?;
    Ok(success(json!(names), &warnings, &[]))
}

fn truncate(mut v: Vec<String>, lim: Option<usize>) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    if let Some(l) = lim {
        if v.len() > l {
            v.truncate(l);
            warnings.push("results truncated due to limit".to_string());
        }
    }
    (v, warnings)
}

async fn label_values(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref(), None);
    // 3.x accepts UTF-8 label names encoded as `U__<escaped>`; plain names
    // are the common case.
    if name.is_empty() {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let sels = selectors(&p, false)?;
    let (start, end) = range_params(&p)?;
    let lim = limit(&p)?;
    let store = api.store()?;
    let (values, warnings) = blocking(move || {
        let err = |e: panoptes_model::StorageError| ApiError {
            error_type: "execution",
            message: e.to_string(),
        };
        let mut values = Vec::new();
        if sels.is_empty() {
            values = store.label_values(&name, &[], start, end).map_err(err)?;
        } else {
            for ms in &sels {
                values.extend(store.label_values(&name, ms, start, end).map_err(err)?);
            }
            values.sort();
            values.dedup();
        }
        Ok(truncate(values, lim))
    })
    .await?;
    Ok(success(json!(values), &warnings, &[]))
}

async fn metadata(State(api): State<Arc<Api>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref(), None);
    let metric = p.get("metric").map(str::to_string);
    let lim = limit(&p)?;
    let store = api.store()?;
    let mut out = serde_json::Map::new();
    for m in store.metadata() {
        if metric
            .as_deref()
            .is_some_and(|want| want != m.metric_family)
        {
            continue;
        }
        if lim.is_some_and(|l| out.len() >= l) && !out.contains_key(&m.metric_family) {
            break;
        }
        let entry = json!({"type": m.metric_type.as_str(), "help": m.help, "unit": m.unit});
        match out.get_mut(&m.metric_family).and_then(J::as_array_mut) {
            Some(list) if !list.contains(&entry) => list.push(entry),
            Some(_) => {}
            None => {
                out.insert(m.metric_family.clone(), json!([entry]));
            }
        }
    }
    Ok(success(J::Object(out), &[], &[]))
}

async fn format_query(p: Params) -> ApiResult {
    let expr = parse_query(&p)?;
    Ok(success(json!(expr.pretty()), &[], &[]))
}

async fn query_exemplars(p: Params) -> ApiResult {
    // Validate like Prometheus, then answer: the store keeps no exemplars
    // yet, which is an empty result, not an error.
    parse_query(&p)?;
    range_params(&p)?;
    Ok(success(json!([]), &[], &[]))
}

async fn status_tsdb(State(api): State<Arc<Api>>) -> ApiResult {
    let store = api.store()?;
    let stats = blocking(move || Ok(store.stats())).await?;
    let top = |v: &[(String, u64)]| -> J {
        J::Array(
            v.iter()
                .map(|(n, c)| json!({"name": n, "value": c}))
                .collect(),
        )
    };
    Ok(success(
        json!({
            "headStats": {
                "numSeries": stats.num_series,
                "numLabelPairs": stats.num_label_pairs,
                "chunkCount": stats.chunk_count,
                "minTime": stats.min_time_ms,
                "maxTime": stats.max_time_ms,
            },
            "seriesCountByMetricName": top(&stats.series_count_by_metric_name),
            "labelValueCountByLabelName": top(&stats.label_value_count_by_label_name),
            "memoryInBytesByLabelName": top(&stats.memory_in_bytes_by_label_name),
            "seriesCountByLabelValuePair": top(&stats.series_count_by_label_value_pair),
        }),
        &[],
        &[],
    ))
}

fn admin_enabled(api: &Api) -> Result<(), ApiError> {
    if api.admin {
        Ok(())
    } else {
        Err(ApiError {
            error_type: "unavailable",
            message: "admin APIs disabled (start with --enable-admin-api)".into(),
        })
    }
}

fn storage_error(e: panoptes_model::StorageError) -> ApiError {
    ApiError {
        error_type: "internal",
        message: e.to_string(),
    }
}

async fn admin_snapshot(State(api): State<Arc<Api>>, p: Params) -> ApiResult {
    admin_enabled(&api)?;

    let skip_head = match p.get("skip_head") {
        None => false,
        Some(v) => v.parse::<bool>().map_err(|_| {
            ApiError::bad_data(format!(
                "unable to parse boolean 'skip_head' argument: {v:?}"
            ))
        })?,
    };
    let store = api.store()?;
    let name = blocking(move || store.snapshot(skip_head).map_err(storage_error)).await?;
    Ok(success(json!({"name": name}), &[], &[]))
}

async fn admin_delete_series(State(api): State<Arc<Api>>, p: Params) -> ApiResult {
    admin_enabled(&api)?;

    let sels = selectors(&p, true)?;
    let (start, end) = range_params(&p)?;
    let store = api.store()?;
    blocking(move || {
        for ms in &sels {
            store.delete_series(ms, start, end).map_err(storage_error)?;
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_clean_tombstones(State(api): State<Arc<Api>>) -> ApiResult {
    admin_enabled(&api)?;
    let store = api.store()?;
    blocking(move || store.clean_tombstones().map_err(storage_error)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_written_as_json_value_and_json_time_give_them() {
        let times = [0, 1000, -5000, 1_700_000_000_000, 1_700_000_000_123, -1];
        let values = [
            0.0,
            -0.0,
            1.0,
            -2.5,
            1e-6,
            9.99e-7,
            1e21,
            1e20,
            123456789.125,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            0.1 + 0.2,
        ];
        for t in times {
            for v in values {
                let mut out = Vec::new();
                write_point(&mut out, t, v);
                let want = serde_json::to_string(&json!([json_time(t), json_value(v)])).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), want, "t={t} v={v}");
            }
        }
    }

    #[test]
    fn a_repeated_query_is_parsed_once() {
        let cache = ParseCache::default();
        let a = cache.parse("sum(rate(x[5m]))").unwrap();
        let b = cache.parse("sum(rate(x[5m]))").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.pretty(), "sum(rate(x[5m]))");
    }

    #[test]
    fn a_bad_query_is_an_error_every_time_and_not_kept() {
        let cache = ParseCache::default();
        for _ in 0..2 {
            let e = cache.parse("sum(").unwrap_err();
            assert_eq!(e.error_type, "bad_data");
            assert!(e.message.starts_with("invalid parameter \"query\": "));
        }
        assert!(cache.lock().is_empty());
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = ParseCache::default();
        for i in 0..PARSE_CACHE_ENTRIES * 2 + 1 {
            cache.parse(&format!("x{i}")).unwrap();
        }
        assert!(cache.lock().len() <= PARSE_CACHE_ENTRIES);
        let long = format!(
            "x + {}",
            "1 + ".repeat(PARSE_CACHE_MAX_QUERY_BYTES / 4) + "1"
        );
        let before = cache.lock().len();
        cache.parse(&long).unwrap();
        assert_eq!(cache.lock().len(), before);
    }
}
