//! Fetching one scrape over HTTP(S): the request Prometheus sends (Accept
//! negotiating OpenMetrics vs text 0.0.4, gzip, the scrape-timeout header,
//! authentication), and reading the body under `body_size_limit` without
//! buffering more than the limit.

use std::time::Duration;

use panoptes_exposition::SCRAPE_ACCEPT_HEADER;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_TYPE, USER_AGENT,
};

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Auth, ScrapeConfig, Secret};
use crate::error::ScrapeError;
use crate::recording::{fetch_mode, write_response_async, FetchMode, Recorded, Replayer};
use crate::target::Target;

/// The User-Agent scrapes are made with.
pub const USER_AGENT_VALUE: &str = concat!("Panoptes/", env!("CARGO_PKG_VERSION"));

/// A client built from one scrape config, shared by its scrape loops. It
/// scrapes over the network, records what it scrapes, or replays a
/// recording, per [`crate::recording::fetch_mode`] when it was built.
pub struct Fetcher {
    client: reqwest::Client,
    auth: Option<Auth>,
    mode: FetchMode,
    replayer: Arc<Replayer>,
}

/// A successful fetch.
#[derive(Debug)]
pub struct Fetched {
    pub content_type: String,
    /// In replay, the duration the recorded scrape took (reported instead
    /// of the replay's own, so replays are deterministic).
    pub recorded_duration: Option<Duration>,
}

/// Why a client could not be built (bad CA or client certificate files).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetcherError(pub String);

impl Fetcher {
    pub fn new(cfg: &ScrapeConfig) -> Result<Fetcher, FetcherError> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(SCRAPE_ACCEPT_HEADER));
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        let mut b = reqwest::Client::builder()
            .default_headers(headers)
            // Prometheus's HTTP client config follows redirects by default.
            .redirect(reqwest::redirect::Policy::limited(10))
            .pool_max_idle_per_host(2)
            .tcp_nodelay(true);
        b = if cfg.gzip { b.gzip(true) } else { b.no_gzip() };
        if cfg.tls.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        } else if let Some(name) = &cfg.tls.server_name {
            // The CA and client certificate are part of this configuration.
            b = b.use_preconfigured_tls(crate::tls::client_config(&cfg.tls, name)?);
            let client = b
                .build()
                .map_err(|e| FetcherError(format!("cannot build HTTP client: {e}")))?;
            return Ok(Fetcher {
                client,
                auth: cfg.auth.clone(),
                mode: fetch_mode(),
                replayer: Arc::default(),
            });
        }
        if let Some(ca) = &cfg.tls.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| FetcherError(format!("cannot read {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| FetcherError(format!("invalid CA file {}: {e}", ca.display())))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.tls.cert_file, &cfg.tls.key_file) {
            let mut pem = std::fs::read(cert)
                .map_err(|e| FetcherError(format!("cannot read {}: {e}", cert.display())))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| FetcherError(format!("cannot read {}: {e}", key.display())))?,
            );
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| FetcherError(format!("invalid client certificate or key: {e}")))?;
            b = b.identity(id);
        }
        let client = b
            .build()
            .map_err(|e| FetcherError(format!("cannot build HTTP client: {e}")))?;
        Ok(Fetcher {
            client,
            auth: cfg.auth.clone(),
            mode: fetch_mode(),
            replayer: Arc::default(),
        })
    }

    /// Scrapes `target` in its slot `slot_ms` into `buf`, from the network,
    /// or from a recording in replay mode; in record mode the response is
    /// also stored under the slot's time.
    pub async fn scrape(
        &self,
        target: &Target,
        slot_ms: i64,
        limit: u64,
        gzip: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Fetched, ScrapeError> {
        match &self.mode {
            FetchMode::Network => {
                let content_type = self
                    .fetch(&target.url, target.timeout, limit, gzip, buf)
                    .await?;
                Ok(Fetched {
                    content_type,
                    recorded_duration: None,
                })
            }
            FetchMode::Record(root) => {
                let started = Instant::now();
                let res = self
                    .fetch(&target.url, target.timeout, limit, gzip, buf)
                    .await;
                let (status, content_type, error) = match &res {
                    Ok(ct) => (200, ct.clone(), String::new()),
                    Err(ScrapeError::HttpStatus(s)) => {
                        let code = s
                            .split(' ')
                            .next()
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0);
                        (code, String::new(), e_text(&res))
                    }
                    Err(_) => (0, String::new(), e_text(&res)),
                };
                let rec = Recorded {
                    time_ms: slot_ms,
                    status,
                    content_type,
                    duration: started.elapsed(),
                    error,
                    body: if status == 200 {
                        buf.clone()
                    } else {
                        Vec::new()
                    },
                };
                if let Err(e) = write_response_async(root, target, &rec).await {
                    tracing::warn!(target = %target.url, error = %e, "cannot record scrape response");
                }
                res.map(|content_type| Fetched {
                    content_type,
                    recorded_duration: None,
                })
            }
            FetchMode::Replay(root) => {
                let replayer = self.replayer.clone();
                let (root, t) = (root.clone(), target.clone());
                let rec =
                    tokio::task::spawn_blocking(move || replayer.response(&root, &t, slot_ms))
                        .await
                        .map_err(|e| ScrapeError::Body(format!("replay reader failed: {e}")))??;
                buf.clear();
                match rec.status {
                    200 if limit > 0 && rec.body.len() as u64 > limit => {
                        Err(ScrapeError::BodySizeLimit(limit))
                    }
                    200 => {
                        buf.extend_from_slice(&rec.body);
                        Ok(Fetched {
                            content_type: rec.content_type,
                            recorded_duration: Some(rec.duration),
                        })
                    }
                    0 => Err(ScrapeError::Request {
                        url: target.url.clone(),
                        message: rec.error,
                    }),
                    code => Err(ScrapeError::HttpStatus(format!(
                        "{code} {}",
                        reqwest::StatusCode::from_u16(code)
                            .ok()
                            .and_then(|c| c.canonical_reason())
                            .unwrap_or("")
                    ))),
                }
            }
        }
    }

    /// Fetches `url` into `buf` (cleared first) and returns the response's
    /// Content-Type. Fails on a non-200 status, a body over `limit` bytes
    /// (0 = no limit; counted after decompression), or after `timeout`.
    pub async fn fetch(
        &self,
        url: &str,
        timeout: Duration,
        limit: u64,
        gzip: bool,
        buf: &mut Vec<u8>,
    ) -> Result<String, ScrapeError> {
        buf.clear();
        match tokio::time::timeout(timeout, self.fetch_inner(url, timeout, limit, gzip, buf)).await
        {
            Ok(r) => r,
            Err(_) => Err(ScrapeError::Timeout(timeout)),
        }
    }

    async fn fetch_inner(
        &self,
        url: &str,
        timeout: Duration,
        limit: u64,
        gzip: bool,
        buf: &mut Vec<u8>,
    ) -> Result<String, ScrapeError> {
        let mut req = self.client.get(url).header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format_seconds(timeout),
        );
        if !gzip {
            req = req.header(ACCEPT_ENCODING, "identity");
        }
        req = match &self.auth {
            None => req,
            Some(Auth::Basic { username, password }) => {
                let pw = password.as_ref().map(read_secret).transpose()?;
                req.basic_auth(username, pw)
            }
            Some(Auth::Authorization { kind, credentials }) => {
                let cred = credentials
                    .as_ref()
                    .map(read_secret)
                    .transpose()?
                    .unwrap_or_default();
                req.header(AUTHORIZATION, format!("{kind} {cred}"))
            }
        };
        let mut resp = req.send().await.map_err(|e| ScrapeError::Request {
            url: url.to_string(),
            message: error_chain(&e),
        })?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            return Err(ScrapeError::HttpStatus(format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if limit > 0 && (buf.len() + chunk.len()) as u64 > limit {
                        // Dropping the response closes the connection: the
                        // rest of an oversized body is never read.
                        return Err(ScrapeError::BodySizeLimit(limit));
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(ScrapeError::Body(error_chain(&e))),
            }
        }
        Ok(content_type)
    }
}

fn e_text(r: &Result<String, ScrapeError>) -> String {
    r.as_ref().err().map(|e| e.to_string()).unwrap_or_default()
}

fn read_secret(s: &Secret) -> Result<String, ScrapeError> {
    s.read().map_err(|e| ScrapeError::Secret {
        path: match s {
            Secret::File(p) => p.display().to_string(),
            Secret::Inline(_) => String::new(),
        },
        message: e.to_string(),
    })
}

/// Seconds as Go's `strconv.FormatFloat(s, 'f', -1, 64)` prints them.
fn format_seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// An error and its causes, joined like Go's wrapped errors.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_format_like_go() {
        assert_eq!(format_seconds(Duration::from_secs(10)), "10");
        assert_eq!(format_seconds(Duration::from_millis(2500)), "2.5");
    }
}
