//! http_sd: target groups fetched as JSON from an HTTP endpoint every
//! `refresh_interval`, with Prometheus's request headers and response
//! checks. A failed fetch keeps the last good groups (logged and counted).

use std::sync::Arc;
use std::time::Duration;

use panoptes_engine::clock::Clock;
use panoptes_model::TargetGroup;
use tokio::sync::{mpsc, watch};

use crate::config::{HttpAuth, HttpSdConfig};
use crate::groups::{parse_document, DocFormat, DocumentError};
use crate::run::{Shared, Update};

/// The meta label Prometheus sets on http_sd groups.
pub const URL_LABEL: &str = "__meta_url";

/// Responses larger than this are refused rather than buffered.
const MAX_BODY_BYTES: usize = 64 << 20;

/// Why one fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpSdError {
    #[error("request to {url} failed: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("{url}: server returned HTTP status {status}")]
    Status { url: String, status: String },
    #[error("{url}: unsupported content type {content_type:?} (expected application/json)")]
    ContentType { url: String, content_type: String },
    #[error("{url}: response larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: response is not UTF-8")]
    NotUtf8 { url: String },
    #[error("{url}: cannot read credentials: {source}")]
    Credentials { url: String, source: std::io::Error },
    #[error("{url}: {source}")]
    Document { url: String, source: DocumentError },
}

/// Builds the HTTP client for one http_sd config.
pub fn build_client(cfg: &HttpSdConfig) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("Panoptes/", env!("CARGO_PKG_VERSION")))
        // Prometheus bounds each request by the refresh interval.
        .timeout(cfg.refresh_interval)
        .connect_timeout(cfg.refresh_interval.min(Duration::from_secs(30)));
    if let Some(ca) = &cfg.tls.ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(ca)? {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some(id) = &cfg.tls.identity_pem {
        b = b.identity(reqwest::Identity::from_pem(id)?);
    }
    if cfg.tls.insecure_skip_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
}

/// Whether a Content-Type is what Prometheus accepts from an http_sd
/// endpoint: `application/json`, optionally with a UTF-8 charset.
pub fn is_json_content_type(ct: &str) -> bool {
    let ct = ct.trim().to_ascii_lowercase();
    let Some(rest) = ct.strip_prefix("application/json") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some(params) = rest.strip_prefix(';') else {
        return false;
    };
    let params = params.trim_start();
    params == "charset=utf-8" || params == "charset=\"utf-8\""
}

/// Fetches and parses the groups once.
pub async fn fetch(
    client: &reqwest::Client,
    cfg: &HttpSdConfig,
) -> Result<Vec<TargetGroup>, HttpSdError> {
    let url = cfg.url.clone();
    let mut req = client
        .get(&cfg.url)
        .header("Accept", "application/json")
        .header(
            "X-Prometheus-Refresh-Interval-Seconds",
            format!("{}", cfg.refresh_interval.as_secs_f64()),
        );
    let cred_err = |source| HttpSdError::Credentials {
        url: url.clone(),
        source,
    };
    match &cfg.auth {
        HttpAuth::None => {}
        HttpAuth::Basic { username, password } => {
            let pw = match password {
                Some(p) => Some(p.read().map_err(cred_err)?),
                None => None,
            };
            req = req.basic_auth(username, pw);
        }
        HttpAuth::Authorization {
            scheme,
            credentials,
        } => {
            let c = credentials.read().map_err(cred_err)?;
            req = req.header("Authorization", format!("{scheme} {c}"));
        }
    }
    let resp = req.send().await.map_err(|source| HttpSdError::Request {
        url: url.clone(),
        source,
    })?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(HttpSdError::Status {
            url,
            status: resp.status().to_string(),
        });
    }
    let ct = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !is_json_content_type(&ct) {
        return Err(HttpSdError::ContentType {
            url,
            content_type: ct,
        });
    }
    if resp
        .content_length()
        .is_some_and(|n| n as usize > MAX_BODY_BYTES)
    {
        return Err(HttpSdError::TooLarge { url });
    }
    let body = resp.bytes().await.map_err(|source| HttpSdError::Request {
        url: url.clone(),
        source,
    })?;
    if body.len() > MAX_BODY_BYTES {
        return Err(HttpSdError::TooLarge { url });
    }
    let text = std::str::from_utf8(&body).map_err(|_| HttpSdError::NotUtf8 { url: url.clone() })?;
    // JSON `null` is an empty list, as Go's decoder treats it.
    if text.trim() == "null" {
        return Ok(Vec::new());
    }
    parse_document(text, DocFormat::Json, &cfg.url, &[(URL_LABEL, &cfg.url)])
        .map_err(|source| HttpSdError::Document { url, source })
}

/// Runs one http_sd config until shutdown.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    index: usize,
    cfg: HttpSdConfig,
    client: reqwest::Client,
    slot: usize,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    updates: mpsc::UnboundedSender<Update>,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = format!("http_sd_configs[{index}]");
    let mut last_good: Vec<TargetGroup> = Vec::new();
    loop {
        let started = clock.now_ms();
        let result = tokio::select! {
            _ = shutdown.changed() => return,
            r = fetch(&client, &cfg) => r,
        };
        match result {
            Ok(groups) => {
                shared.replace_errors(&key, Default::default());
                last_good = groups;
            }
            Err(e) => {
                tracing::error!(stage = %shared.stage, url = %cfg.url, error = %e,
                    "http_sd: refresh failed, keeping the last good targets");
                shared.metrics.http_failures.inc();
                shared.replace_errors(&key, [(key.clone(), e.to_string())].into());
            }
        }
        if updates
            .send(Update {
                slot,
                groups: last_good.clone(),
            })
            .is_err()
        {
            return;
        }
        let deadline = started + cfg.refresh_interval.as_millis() as i64;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = clock.sleep_until(deadline) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_as_prometheus() {
        assert!(is_json_content_type("application/json"));
        assert!(is_json_content_type("Application/JSON; charset=utf-8"));
        assert!(is_json_content_type("application/json;charset=\"utf-8\""));
        assert!(!is_json_content_type("text/plain"));
        assert!(!is_json_content_type("application/json; charset=latin1"));
        assert!(!is_json_content_type("application/jsonx"));
    }
}
