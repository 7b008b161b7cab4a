//! The Pushgateway HTTP API on the stage's own listener: push (PUT/POST),
//! delete, `/metrics`, `/api/v1/metrics`, `/api/v1/status`,
//! `/api/v1/admin/wipe`, `/-/healthy`, `/-/ready`.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use axum::Router;
use panoptes_engine::clock::Clock;
use parking_lot::RwLock;
use serde_json::json;

use crate::config::Settings;
use crate::grouping::{parse_key, percent_decode, GroupingKey, KeyError};
use crate::metrics::StageMetrics;
use crate::proto::decode_delimited;
use crate::store::{PushError, Store};
use crate::text::parse_text;

/// What the handlers share.
pub struct ApiState {
    pub stage: String,
    pub store: Arc<Store>,
    pub settings: Arc<RwLock<Settings>>,
    pub clock: Arc<dyn Clock>,
    pub metrics: StageMetrics,
    pub start_time_ms: i64,
    pub flags: serde_json::Value,
}

type Shared = Arc<ApiState>;

/// Bodies above this many bytes are handled on the blocking pool.
const LARGE_BODY: usize = 256 << 10;

/// The body size limit the router enforces; pushes are also limited after
/// gzip decoding by the configured `max_push_bytes`.
pub fn router(state: Shared, body_limit: usize) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/metrics/{*rest}", any(push_or_delete))
        .route("/api/v1/metrics", get(api_metrics).options(api_options))
        .route("/api/v1/status", get(api_status).options(api_options))
        .route("/api/v1/admin/wipe", put(api_wipe))
        .route("/-/healthy", get(ok))
        .route("/-/ready", get(ok))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Go's `http.Error`: the message and a newline.
fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response {
    text(status, format!("{msg}\n"))
}

async fn ok() -> Response {
    text(StatusCode::OK, "OK".into())
}

async fn get_metrics(State(s): State<Shared>) -> Response {
    let store = s.store.clone();
    let body = tokio::task::spawn_blocking(move || store.render_text())
        .await
        .unwrap_or_default();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn cors(resp: &mut Response) {
    let h = resp.headers_mut();
    for (k, v) in [
        (
            "access-control-allow-headers",
            "Accept, Authorization, Content-Type, Origin",
        ),
        ("access-control-allow-methods", "GET, POST, DELETE, OPTIONS"),
        ("access-control-allow-origin", "*"),
        ("access-control-expose-headers", "Date"),
        ("cache-control", "no-cache, no-store, must-revalidate"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
}

fn api_json(data: serde_json::Value) -> Response {
    let body = json!({"status": "success", "data": data}).to_string();
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    cors(&mut resp);
    resp
}

async fn api_options() -> Response {
    let mut resp = StatusCode::OK.into_response();
    cors(&mut resp);
    resp
}

async fn api_metrics(State(s): State<Shared>) -> Response {
    let store = s.store.clone();
    let body = tokio::task::spawn_blocking(move || store.api_metrics_json())
        .await
        .unwrap_or_else(|_| "{\"status\":\"success\",\"data\":[]}".into());
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    cors(&mut resp);
    resp
}

async fn api_status(State(s): State<Shared>) -> Response {
    api_json(json!({
        "flags": s.flags,
        "start_time": crate::store::rfc3339_ms(s.start_time_ms),
        "build_information": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
            "program": "panoptes push_ingest",
        }
    }))
}

async fn api_wipe(State(s): State<Shared>) -> Response {
    if !s.settings.read().enable_admin_api {
        return error(StatusCode::NOT_FOUND, "404 page not found");
    }
    let n = s.store.wipe();
    tracing::info!(stage = %s.stage, groups = n, "push_ingest: wiped all groups");
    StatusCode::ACCEPTED.into_response()
}

/// Whether a Content-Type announces the delimited protobuf format.
pub fn is_protobuf(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/vnd.google.protobuf") {
        return false;
    }
    let (mut proto_ok, mut delimited) = (false, false);
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "proto" => proto_ok = v == "io.prometheus.client.MetricFamily",
            "encoding" => delimited = v == "delimited",
            _ => {}
        }
    }
    proto_ok && delimited
}

fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    dec.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() > limit {
        return Err(format!("decoded body larger than max_push_bytes={limit}"));
    }
    Ok(out)
}

async fn push_or_delete(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let resp = if status == StatusCode::PAYLOAD_TOO_LARGE {
                s.metrics.rejected.with_label_values(&["limit"]).inc();
                let limit = s.settings.read().max_push_bytes;
                error(
                    status,
                    format!("push body is over the limit max_push_bytes={limit}"),
                )
            } else {
                error(status, rejection.body_text())
            };
            return resp;
        }
    };
    // Large bodies are parsed off the async workers, so that one big push
    // never stalls the small ones sharing the runtime.
    let gzipped = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let (resp, label) = if body.len() > LARGE_BODY || (gzipped && body.len() > LARGE_BODY / 16) {
        let s2 = s.clone();
        match tokio::task::spawn_blocking(move || handle_push(&s2, &method, &uri, &headers, body))
            .await
        {
            Ok(r) => r,
            Err(e) => (
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("push failed: {e}"),
                ),
                "other",
            ),
        }
    } else {
        handle_push(&s, &method, &uri, &headers, body)
    };
    s.metrics
        .requests
        .with_label_values(&[label, resp.status().as_str()])
        .inc();
    resp
}

fn handle_push(
    s: &ApiState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> (Response, &'static str) {
    let label = match *method {
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => {
            return (
                error(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed"),
                "other",
            )
        }
    };
    let path = uri.path();
    let (job_base64, rest) = if let Some(r) = path.strip_prefix("/metrics/job@base64") {
        (true, r)
    } else if let Some(r) = path.strip_prefix("/metrics/job") {
        (false, r)
    } else {
        return (error(StatusCode::NOT_FOUND, "404 page not found"), label);
    };
    if !rest.starts_with('/') {
        return (error(StatusCode::NOT_FOUND, "404 page not found"), label);
    }
    let key = match percent_decode(rest).and_then(|r| parse_key(job_base64, &r)) {
        Ok(k) => k,
        Err(KeyError::MissingJob) if rest == "/" => {
            // Go's router redirects the trailing slash away.
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            let loc = path.trim_end_matches('/').to_string();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return (r, label);
        }
        Err(e) => {
            s.metrics
                .rejected
                .with_label_values(&["grouping_key"])
                .inc();
            return (error(StatusCode::BAD_REQUEST, e), label);
        }
    };
    if *method == Method::DELETE {
        s.store.delete(&key);
        s.metrics.update_size(&s.store);
        return (StatusCode::ACCEPTED.into_response(), label);
    }
    let replace = *method == Method::PUT;
    let resp = push(s, &key, headers, body, replace);
    (resp, label)
}

fn push(
    s: &ApiState,
    key: &GroupingKey,
    headers: &HeaderMap,
    body: Bytes,
    replace: bool,
) -> Response {
    let max_bytes = s.settings.read().max_push_bytes;
    let header_str = |h| {
        headers
            .get(h)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
    };
    let encoding = header_str(header::CONTENT_ENCODING).to_ascii_lowercase();
    let decoded;
    let raw: &[u8] = if encoding == "gzip" {
        match gunzip(&body, max_bytes) {
            Ok(d) => {
                decoded = d;
                &decoded
            }
            Err(e) => {
                s.metrics.rejected.with_label_values(&["body"]).inc();
                return error(StatusCode::BAD_REQUEST, e);
            }
        }
    } else {
        &body
    };
    if raw.len() > max_bytes {
        s.metrics.rejected.with_label_values(&["limit"]).inc();
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "push body of {} bytes is over the limit max_push_bytes={max_bytes}",
                raw.len()
            ),
        );
    }
    let families = if is_protobuf(header_str(header::CONTENT_TYPE)) {
        decode_delimited(raw).map_err(|e| e.to_string())
    } else {
        parse_text(raw).map_err(|e| e.to_string())
    };
    let families = match families {
        Ok(f) => f,
        Err(e) => {
            s.metrics.rejected.with_label_values(&["body"]).inc();
            tracing::debug!(stage = %s.stage, error = %e, "push_ingest: unparsable push");
            return error(StatusCode::BAD_REQUEST, e);
        }
    };
    let now = s.clock.now_ms();
    let result = s.store.push(key, families, replace, now);
    s.metrics.update_size(&s.store);
    match result {
        Ok(()) => {
            s.metrics.pushes.inc();
            StatusCode::OK.into_response()
        }
        Err(e) => {
            let (status, reason) = match &e {
                PushError::Timestamps => (StatusCode::BAD_REQUEST, "timestamp"),
                PushError::Inconsistent(_) => (StatusCode::BAD_REQUEST, "inconsistent"),
                PushError::GroupLimit { .. } | PushError::TotalLimit { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "limit")
                }
            };
            s.metrics.rejected.with_label_values(&[reason]).inc();
            tracing::warn!(stage = %s.stage, job = key.job(), error = %e, "push_ingest: push rejected");
            error(status, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_content_type() {
        assert!(is_protobuf(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        ));
        assert!(!is_protobuf(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=text"
        ));
        assert!(!is_protobuf("text/plain; version=0.0.4"));
    }

    #[test]
    fn gunzip_limits_the_decoded_size() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&[b'a'; 1000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz, 1000).unwrap().len(), 1000);
        assert!(gunzip(&gz, 999).is_err());
        assert!(gunzip(b"not gzip", 10).is_err());
    }
}
