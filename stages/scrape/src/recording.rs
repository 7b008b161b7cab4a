//! Recorded scrapes: `panoptes record` stores every raw scrape response, and
//! a replay reads them back instead of the network, so a pipeline can be
//! run over a recording deterministically on the virtual clock.
//!
//! Layout, plain and editable (delete a target's later files to fake an
//! outage; edit a body to fake a value):
//!
//! ```text
//! DIR/<job>/<instance>/target.txt        the target's labels and URL
//! DIR/<job>/<instance>/<time_ms>.txt     one response, HTTP-like:
//!     status: 200
//!     content-type: text/plain; version=0.0.4
//!     duration-ms: 12
//!     (empty line, then the body as received, decompressed)
//! ```
//!
//! A failed request is stored with `status: 0` and an `error:` line. When
//! replaying at time `t`, a target's response is the latest file with a
//! time in `(t - scrape_interval, t]`; without one the scrape fails as if
//! the target were down.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::ScrapeError;
use crate::target::Target;

/// Where scrape stages get their responses from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum FetchMode {
    /// Scrape over the network (the default).
    #[default]
    Network,
    /// Scrape over the network and store every response under the directory.
    Record(PathBuf),
    /// Read responses from a recording instead of the network.
    Replay(PathBuf),
}

static MODE: RwLock<FetchMode> = RwLock::new(FetchMode::Network);

/// Sets the fetch mode of scrape stages started from now on (process-wide;
/// the CLI's `record` and `run --replay` set it before starting the
/// pipeline).
pub fn set_fetch_mode(mode: FetchMode) {
    match MODE.write() {
        Ok(mut m) => *m = mode,
        Err(poisoned) => *poisoned.into_inner() = mode,
    }
}

/// The current fetch mode.
pub fn fetch_mode() -> FetchMode {
    match MODE.read() {
        Ok(m) => m.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// A recording could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One stored response.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub time_ms: i64,
    /// 0 for a request that failed before a status (the error says why).
    pub status: u16,
    pub content_type: String,
    pub duration: Duration,
    pub error: String,
    pub body: Vec<u8>,
}

/// Keeps path components readable and safe (`127.0.0.1:9100` becomes
/// `127.0.0.1_9100`).
fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        "_".to_string()
    } else {
        out
    }
}

/// The directory of one target in a recording.
pub fn target_dir(root: &Path, target: &Target) -> PathBuf {
    let job = target.labels.get("job").unwrap_or("");
    let instance = target.labels.get("instance").unwrap_or("");
    root.join(sanitize(job)).join(sanitize(instance))
}

/// The file content of one response.
pub fn render_response(r: &Recorded) -> Vec<u8> {
    let mut out = format!(
        "status: {}\ncontent-type: {}\nduration-ms: {}\n",
        r.status,
        r.content_type.replace('\n', " "),
        r.duration.as_millis()
    );
    if !r.error.is_empty() {
        out.push_str(&format!("error: {}\n", r.error.replace('\n', " ")));
    }
    out.push('\n');
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&r.body);
    bytes
}

/// The content of a target's `target.txt`.
pub fn render_target(target: &Target) -> String {
    format!("labels: {}\nurl: {}\n", target.labels, target.url)
}

/// Stores one response (blocking; async code uses [`write_response_async`]).
pub fn write_response(
    root: &Path,
    target: &Target,
    r: &Recorded,
) -> Result<PathBuf, RecordingError> {
    let dir = target_dir(root, target);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let meta = dir.join("target.txt");
    if !meta.exists() {
        std::fs::write(&meta, render_target(target)).map_err(io_err(&meta))?;
    }
    let path = dir.join(format!("{}.txt", r.time_ms));
    std::fs::write(&path, render_response(r)).map_err(io_err(&path))?;
    Ok(path)
}

/// Stores one response without blocking the async runtime.
pub async fn write_response_async(
    root: &Path,
    target: &Target,
    r: &Recorded,
) -> Result<PathBuf, RecordingError> {
    let dir = target_dir(root, target);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(io_err(&dir))?;
    let meta = dir.join("target.txt");
    if !tokio::fs::try_exists(&meta).await.unwrap_or(false) {
        tokio::fs::write(&meta, render_target(target))
            .await
            .map_err(io_err(&meta))?;
    }
    let path = dir.join(format!("{}.txt", r.time_ms));
    tokio::fs::write(&path, render_response(r))
        .await
        .map_err(io_err(&path))?;
    Ok(path)
}

/// Reads one stored response.
pub fn read_response(path: &Path, time_ms: i64) -> Result<Recorded, RecordingError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let split =
        data.windows(2)
            .position(|w| w == b"\n\n")
            .ok_or_else(|| RecordingError::Format {
                path: path.to_path_buf(),
                message: "expected header lines, an empty line, then the body".into(),
            })?;
    let head = String::from_utf8_lossy(&data[..split]);
    let mut r = Recorded {
        time_ms,
        status: 200,
        content_type: String::new(),
        duration: Duration::ZERO,
        error: String::new(),
        body: data[split + 2..].to_vec(),
    };
    for (i, line) in head.lines().enumerate() {
        let (k, v) = line.split_once(':').ok_or_else(|| RecordingError::Format {
            path: path.to_path_buf(),
            message: format!("line {}: expected `name: value`", i + 1),
        })?;
        let v = v.trim();
        let bad = |what: &str| RecordingError::Format {
            path: path.to_path_buf(),
            message: format!("line {}: invalid {what} {v:?}", i + 1),
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "status" => r.status = v.parse().map_err(|_| bad("status"))?,
            "content-type" => r.content_type = v.to_string(),
            "duration-ms" => {
                r.duration = Duration::from_millis(v.parse().map_err(|_| bad("duration"))?)
            }
            "error" => r.error = v.to_string(),
            // Unknown headers are allowed, for notes a person adds.
            _ => {}
        }
    }
    Ok(r)
}

/// The response times stored for one target, sorted.
fn list_times(dir: &Path) -> Vec<i64> {
    let mut times: Vec<i64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_suffix(".txt")?.parse().ok()
        })
        .collect();
    times.sort_unstable();
    times
}

/// The earliest and latest response times in a recording.
pub fn time_range(root: &Path) -> Result<Option<(i64, i64)>, RecordingError> {
    let mut range: Option<(i64, i64)> = None;
    for job in std::fs::read_dir(root).map_err(io_err(root))?.flatten() {
        for inst in std::fs::read_dir(job.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let times = list_times(&inst.path());
            if let (Some(first), Some(last)) = (times.first(), times.last()) {
                range = Some(match range {
                    None => (*first, *last),
                    Some((a, b)) => (a.min(*first), b.max(*last)),
                });
            }
        }
    }
    Ok(range)
}

/// Reads responses of a recording for replay, caching directory listings.
#[derive(Default)]
pub struct Replayer {
    listings: Mutex<HashMap<PathBuf, Vec<i64>>>,
}

impl Replayer {
    /// The response for `target` at `now_ms`: the latest stored time in
    /// `(now_ms - interval, now_ms]`.
    pub fn response(
        &self,
        root: &Path,
        target: &Target,
        now_ms: i64,
    ) -> Result<Recorded, ScrapeError> {
        let dir = target_dir(root, target);
        let interval = target.interval.as_millis() as i64;
        let time = {
            let mut l = self.listings.lock();
            let times = l.entry(dir.clone()).or_insert_with(|| list_times(&dir));
            let idx = times.partition_point(|t| *t <= now_ms);
            idx.checked_sub(1)
                .map(|i| times[i])
                .filter(|t| *t > now_ms - interval)
        };
        let Some(time) = time else {
            return Err(ScrapeError::Request {
                url: target.url.clone(),
                message: format!("no recorded response in {} at {now_ms}", dir.display()),
            });
        };
        read_response(&dir.join(format!("{time}.txt")), time).map_err(|e| ScrapeError::Request {
            url: target.url.clone(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::Labels;

    fn target() -> Target {
        Target {
            discovered: Labels::empty(),
            full: Labels::empty(),
            labels: Labels::from_pairs([("job", "node"), ("instance", "127.0.0.1:9100")]),
            url: "http://127.0.0.1:9100/metrics".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn write_read_and_replay_lookup() {
        let root = std::env::temp_dir().join(format!("panoptes-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let t = target();
        for (time, body) in [(1_000, "a 1\n"), (11_000, "a 2\n")] {
            let r = Recorded {
                time_ms: time,
                status: 200,
                content_type: "text/plain; version=0.0.4".into(),
                duration: Duration::from_millis(3),
                error: String::new(),
                body: body.as_bytes().to_vec(),
            };
            write_response(&root, &t, &r).unwrap();
        }
        assert!(root.join("node/127.0.0.1_9100/1000.txt").exists());
        assert_eq!(time_range(&root).unwrap(), Some((1_000, 11_000)));
        let rp = Replayer::default();
        assert_eq!(rp.response(&root, &t, 5_000).unwrap().body, b"a 1\n");
        assert_eq!(rp.response(&root, &t, 11_000).unwrap().body, b"a 2\n");
        assert_eq!(
            rp.response(&root, &t, 12_000).unwrap().duration,
            Duration::from_millis(3)
        );
        // Nothing recorded within one interval: the target looks down.
        assert!(rp.response(&root, &t, 30_000).is_err());
        assert!(rp.response(&root, &t, 500).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
