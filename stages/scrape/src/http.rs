//! Fetching one scrape over HTTP(S): the request Prometheus sends (Accept
//! negotiating OpenMetrics vs text 0.0.4, gzip, the scrape-timeout header,
//! authentication), following redirects like Go's client, and reading the
//! body (gunzipped when it is gzip-encoded) under `body_size_limit` without
//! buffering more than the limit.
//!
//! The client is hyper-util's pooled client rather than reqwest so that
//! hyper's per-connection read buffer can be capped (see
//! [`READ_BUFFER_BYTES`]); redirects, gzip and authentication, which
//! reqwest did, are done here.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use flate2::write::MultiGzDecoder;
use http::header::{
    HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING,
    CONTENT_TYPE, LOCATION, REFERER, USER_AGENT,
};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use panoptes_exposition::SCRAPE_ACCEPT_HEADER;
use url::{Position, Url};

use crate::config::{Auth, ScrapeConfig, Secret};
use crate::error::ScrapeError;
use crate::recording::{fetch_mode, write_response_async, FetchMode, Recorded, Replayer};
use crate::target::Target;

/// The User-Agent scrapes are made with.
pub const USER_AGENT_VALUE: &str = concat!("Panoptes/", env!("CARGO_PKG_VERSION"));

/// The cap on each connection's HTTP/1 read buffer. hyper's adaptive read
/// strategy otherwise grows it towards ~400 KB on a large body and the
/// buffer stays with the connection while it idles in the pool between
/// scrapes: with reqwest, which cannot set it, that was ~260 KB per
/// keep-alive target, ~13 MB of RSS for 50 targets. 32 KB still reads a
/// body in few syscalls. hyper also refuses a response head (status line
/// and headers) larger than this, far above what exporters send; its
/// minimum is 8192.
const READ_BUFFER_BYTES: usize = 32 * 1024;

/// Redirects followed before a scrape fails, as Go's client (and the
/// reqwest client this replaced) default to.
const MAX_REDIRECTS: usize = 10;

/// TCP keep-alive idle time and probe interval, as reqwest set them (Go's
/// dialer also probes after 15 s).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Idle pooled connections are closed after this, as in reqwest and Go.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client built from one scrape config, shared by its scrape loops. It
/// scrapes over the network, records what it scrapes, or replays a
/// recording, per [`crate::recording::fetch_mode`] when it was built.
pub struct Fetcher {
    client: HttpsClient,
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
        let tls = crate::tls::client_config(&cfg.tls)?;
        let mut http = HttpConnector::new();
        // The TLS connector in front of it handles `https` URLs; this one
        // must not refuse them.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_keepalive(Some(TCP_KEEPALIVE));
        http.set_keepalive_interval(Some(TCP_KEEPALIVE));
        http.set_keepalive_retries(Some(3));
        // Unacknowledged data (or keep-alive probes) for 30 s drops the
        // connection, as reqwest set it.
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        // Built from the rustls config directly rather than with
        // `HttpsConnectorBuilder`, whose HTTP/1-only mode refuses a preset
        // ALPN and sends none: this keeps ALPN `http/1.1`. It connects
        // `http` URLs in the clear and `https` ones over TLS, like the
        // builder's `https_or_http()`.
        let https = HttpsConnector::from((http, tls));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(2)
            .http1_max_buf_size(READ_BUFFER_BYTES)
            .build(https);
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
                        StatusCode::from_u16(code)
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
        let request_error = |message: String| ScrapeError::Request {
            url: url.to_string(),
            message,
        };
        let mut current =
            Url::parse(url).map_err(|e| request_error(format!("invalid URL: {e}")))?;
        let mut authorization = self.authorization(url, &current)?;
        let timeout_seconds =
            HeaderValue::from_str(&format_seconds(timeout)).expect("digits and a dot");
        let accept_encoding = HeaderValue::from_static(if gzip { "gzip" } else { "identity" });
        let mut referer = None;
        let mut redirects = 0;
        let resp = loop {
            let mut req = Request::new(Empty::new());
            *req.uri_mut() = request_uri(&current).map_err(request_error)?;
            let h = req.headers_mut();
            h.insert(ACCEPT, HeaderValue::from_static(SCRAPE_ACCEPT_HEADER));
            h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
            h.insert(ACCEPT_ENCODING, accept_encoding.clone());
            h.insert(
                HeaderName::from_static("x-prometheus-scrape-timeout-seconds"),
                timeout_seconds.clone(),
            );
            if let Some(v) = &authorization {
                h.insert(AUTHORIZATION, v.clone());
            }
            if let Some(v) = referer.take() {
                h.insert(REFERER, v);
            }
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| request_error(error_chain(&e)))?;
            if !is_redirect(resp.status()) {
                break resp;
            }
            // Without a usable Location the redirect itself is the answer
            // (a status error), as it was with reqwest.
            let Some(next) = resp
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| current.join(l).ok())
            else {
                break resp;
            };
            if redirects == MAX_REDIRECTS {
                return Err(request_error(format!(
                    "stopped after {MAX_REDIRECTS} redirects"
                )));
            }
            redirects += 1;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(request_error(format!(
                    "redirect to {next}: unsupported scheme {:?}",
                    next.scheme()
                )));
            }
            // Credentials are for the host they were configured for: as Go
            // and reqwest do, they are not sent on to another host or port.
            if host_port(&next) != host_port(&current) {
                authorization = None;
            }
            referer = make_referer(&next, &current);
            current = next;
        };
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(ScrapeError::HttpStatus(status_text(status)));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        // Decompressed whenever the target says it is gzip, as Prometheus
        // does, even if it was not asked for.
        let gzipped = resp
            .headers()
            .get(CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"gzip"));
        let mut body = resp.into_body();
        let mut sink = BodySink::new(buf, limit, gzipped);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ScrapeError::Body(error_chain(&e)))?;
            if let Some(data) = frame.data_ref() {
                // On an error the body is dropped unread, which closes the
                // connection: the rest of an oversized body is never read.
                sink.write(data)?;
            }
        }
        sink.finish()?;
        Ok(content_type)
    }

    /// The Authorization header for a scrape of `url` (`parsed`): the
    /// configured authentication (secrets are read on every scrape, so
    /// rotated files are picked up), or else the URL's user info as basic
    /// auth, as Go's client and reqwest use it.
    fn authorization(&self, url: &str, parsed: &Url) -> Result<Option<HeaderValue>, ScrapeError> {
        let mut value = match &self.auth {
            Some(Auth::Basic { username, password }) => {
                let pw = password.as_ref().map(read_secret).transpose()?;
                basic_auth(username, pw.as_deref())
            }
            Some(Auth::Authorization { kind, credentials }) => {
                let cred = credentials
                    .as_ref()
                    .map(read_secret)
                    .transpose()?
                    .unwrap_or_default();
                HeaderValue::try_from(format!("{kind} {cred}")).map_err(|e| {
                    ScrapeError::Request {
                        url: url.to_string(),
                        message: format!("invalid Authorization header: {e}"),
                    }
                })?
            }
            None if !parsed.username().is_empty() || parsed.password().is_some() => {
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                basic_auth(
                    &decode(parsed.username()),
                    parsed.password().map(decode).as_deref(),
                )
            }
            None => return Ok(None),
        };
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// `Basic base64(username:password)`, as Go's `SetBasicAuth` (an absent
/// password is an empty one).
fn basic_auth(username: &str, password: Option<&str>) -> HeaderValue {
    let creds = format!("{username}:{}", password.unwrap_or(""));
    let encoded = base64::engine::general_purpose::STANDARD.encode(creds);
    HeaderValue::try_from(format!("Basic {encoded}")).expect("base64 is a valid header value")
}

/// The statuses Go's client and reqwest follow.
fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

fn host_port(url: &Url) -> (Option<&str>, Option<u16>) {
    (url.host_str(), url.port_or_known_default())
}

/// The Referer a redirected request carries, as Go and reqwest set it: the
/// previous URL without credentials or fragment, and none from https to
/// http.
fn make_referer(next: &Url, previous: &Url) -> Option<HeaderValue> {
    if next.scheme() == "http" && previous.scheme() == "https" {
        return None;
    }
    let mut referer = previous.clone();
    let _ = referer.set_username("");
    let _ = referer.set_password(None);
    referer.set_fragment(None);
    HeaderValue::try_from(referer.as_str()).ok()
}

/// The request URI for `url`: without the user info (sent as basic auth
/// instead, never on the wire in the URL) or the fragment.
fn request_uri(url: &Url) -> Result<Uri, String> {
    format!(
        "{}://{}",
        url.scheme(),
        &url[Position::BeforeHost..Position::AfterQuery]
    )
    .parse()
    .map_err(|e| format!("invalid URL: {e}"))
}

/// "CODE Reason", as Go prints a response's status.
fn status_text(status: StatusCode) -> String {
    format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
}

/// The scrape buffer as the end of the body's path, refusing any write
/// that would take it past the body size limit (0 = none).
struct Limited<'a> {
    buf: &'a mut Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl Write for Limited<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.limit > 0 && (self.buf.len() + data.len()) as u64 > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("body size limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a response body's chunks go as they arrive: into the scrape
/// buffer as they are, or through a streaming gzip decoder (whose own
/// buffers are fixed-size), so the limit counts decompressed bytes and a
/// small compressed body cannot inflate past it.
enum BodySink<'a> {
    Plain(Limited<'a>),
    /// Multi-member, as Go's gzip reader reads concatenated members.
    Gzip {
        decoder: Box<MultiGzDecoder<Limited<'a>>>,
        any_input: bool,
    },
}

impl<'a> BodySink<'a> {
    fn new(buf: &'a mut Vec<u8>, limit: u64, gzip: bool) -> BodySink<'a> {
        let out = Limited {
            buf,
            limit,
            exceeded: false,
        };
        if gzip {
            BodySink::Gzip {
                decoder: Box::new(MultiGzDecoder::new(out)),
                any_input: false,
            }
        } else {
            BodySink::Plain(out)
        }
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), ScrapeError> {
        let r = match self {
            BodySink::Plain(out) => out.write_all(chunk),
            BodySink::Gzip { decoder, any_input } => {
                *any_input |= !chunk.is_empty();
                decoder.write_all(chunk)
            }
        };
        r.map_err(|e| self.error(e))
    }

    /// Flushes what the decoder still holds and checks the gzip trailer: a
    /// truncated or corrupt body is an error, not a shorter scrape.
    fn finish(mut self) -> Result<(), ScrapeError> {
        let r = match &mut self {
            BodySink::Gzip {
                decoder,
                any_input: true,
            } => decoder.try_finish(),
            // An empty body is empty even when labelled gzip, as reqwest
            // read it.
            _ => Ok(()),
        };
        r.map_err(|e| self.error(e))
    }

    fn error(&self, e: std::io::Error) -> ScrapeError {
        let out = match self {
            BodySink::Plain(out) => out,
            BodySink::Gzip { decoder, .. } => decoder.get_ref(),
        };
        if out.exceeded {
            ScrapeError::BodySizeLimit(out.limit)
        } else {
            ScrapeError::Body(format!("error decoding response body: {e}"))
        }
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

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// Feeds `body` to a sink in `chunk`-byte pieces.
    fn collect(
        body: &[u8],
        gzipped: bool,
        limit: u64,
        chunk: usize,
    ) -> Result<Vec<u8>, ScrapeError> {
        let mut buf = Vec::new();
        let mut sink = BodySink::new(&mut buf, limit, gzipped);
        for c in body.chunks(chunk) {
            sink.write(c)?;
        }
        sink.finish()?;
        Ok(buf)
    }

    #[test]
    fn gzip_bodies_decode_across_chunks_and_members() {
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("s{i} {i}\n").into_bytes())
            .collect();
        let mut two = gzip(&text[..100]);
        two.extend(gzip(&text[100..]));
        for chunk in [1, 7, 4096, usize::MAX] {
            assert_eq!(collect(&gzip(&text), true, 0, chunk).unwrap(), text);
            assert_eq!(collect(&two, true, 0, chunk).unwrap(), text, "two members");
        }
        // Empty even when labelled gzip.
        assert_eq!(collect(b"", true, 0, 1).unwrap(), b"");
    }

    #[test]
    fn broken_gzip_bodies_fail() {
        let z = gzip(&b"a 1\n".repeat(100));
        let truncated = collect(&z[..z.len() - 4], true, 0, 16).unwrap_err();
        assert!(matches!(truncated, ScrapeError::Body(_)), "{truncated:?}");
        let garbage = collect(b"not gzip at all", true, 0, 16).unwrap_err();
        assert!(matches!(garbage, ScrapeError::Body(_)), "{garbage:?}");
    }

    #[test]
    fn the_limit_counts_what_lands_in_the_buffer() {
        let text = b"x 1\n".repeat(10_000);
        let z = gzip(&text);
        let n = text.len() as u64;
        for chunk in [1000, usize::MAX] {
            assert_eq!(collect(&text, false, n, chunk).unwrap().len() as u64, n);
            assert_eq!(collect(&z, true, n, chunk).unwrap().len() as u64, n);
            assert_eq!(
                collect(&text, false, n - 1, chunk),
                Err(ScrapeError::BodySizeLimit(n - 1))
            );
            assert_eq!(
                collect(&z, true, n - 1, chunk),
                Err(ScrapeError::BodySizeLimit(n - 1))
            );
        }
    }

    #[test]
    fn request_uris_carry_no_credentials_or_fragment() {
        let u = Url::parse("http://u:p%40ss@[::1]:9100/a%20b?x=1#frag").unwrap();
        assert_eq!(
            request_uri(&u).unwrap().to_string(),
            "http://[::1]:9100/a%20b?x=1"
        );
        let u = Url::parse("https://example.org/metrics").unwrap();
        assert_eq!(
            request_uri(&u).unwrap().to_string(),
            "https://example.org/metrics"
        );
    }

    #[test]
    fn basic_auth_like_go() {
        assert_eq!(basic_auth("u", Some("p")), "Basic dTpw");
        assert_eq!(basic_auth("u", None), "Basic dTo=");
    }

    #[test]
    fn referer_and_host_changes() {
        let a = Url::parse("https://u:p@a.example:443/x#f").unwrap();
        let b = Url::parse("https://a.example/y").unwrap();
        assert_eq!(make_referer(&b, &a).unwrap(), "https://a.example/x");
        assert_eq!(host_port(&a), host_port(&b));
        let c = Url::parse("http://a.example/y").unwrap();
        assert!(
            make_referer(&c, &a).is_none(),
            "no Referer from https to http"
        );
        assert_ne!(host_port(&a), host_port(&c), "another port");
    }
}
