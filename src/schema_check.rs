//! The JSON-Schema step of `panoptes run` (its start and every reload), run
//! in a short-lived child process.
//!
//! Why: building any `jsonschema` validator first validates our schema
//! against the Draft-7 meta-schema, and the `jsonschema` crate builds that
//! meta-schema's own validator once into a process-wide `Lazy` static that
//! is never freed: ~11 MB of heap for the life of the process (the option to
//! skip meta-validation is private to the crate, in 0.33 and still in 0.61).
//! A short-lived `panoptes validate` may keep it; the server must not. So the
//! server asks a child, and compiles in process with the schema step skipped
//! (every other check still runs in process).
//!
//! The protocol. The child is this same binary, run as
//!
//! ```text
//! panoptes --log.level=error validate --format json \
//!     --stdin-name=NAME --stdin-base-dir=DIR -
//! ```
//!
//! with the exact text the server is about to compile written to its
//! standard input (then closed). NAME names the text in diagnostics and DIR
//! is where relative paths inside it resolve, both as in the server. The
//! child answers on standard output with the JSON of `validate --format
//! json` for that one file ([`report`] builds it, [`parse_answer`] reads it)
//! and exits 0 (valid) or 1 (invalid):
//!
//! - exit 0 with a valid file: [`SchemaVerdict::Valid`];
//! - exit 1 with an invalid file and its errors: [`SchemaVerdict::Invalid`]
//!   with the errors as the same [`Diagnostic`] values a full in-process
//!   compile gives, so they render identically;
//! - anything else (the child cannot be spawned, gives no answer within the
//!   timeout and is killed, exits otherwise, or answers something that does
//!   not parse or contradicts its exit status) is a [`HelperError`], and the
//!   caller runs the schema step in process, as before: the helper never
//!   fails a start or a reload by itself.
//!
//! The schema step depends on the text alone (the schema is this binary's),
//! so text the child found valid is remembered, and a reload of unchanged
//! text does not start a child again (~20 ms, mostly `jsonschema` building
//! its meta-schema validator).

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use panoptes_engine::supervisor::{PipelineText, SchemaCheck, SchemaVerdict};
use panoptes_engine::{Diagnostic, Diagnostics};
use serde_json::{json, Value};

/// How long the child may take before it is killed and the step runs in
/// process instead. It normally answers in ~20 ms.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes of the child's standard output read (an answer is a few KB).
const MAX_ANSWER: u64 = 64 << 20;

/// Most bytes of the child's standard error kept for an error message.
const MAX_STDERR: usize = 2048;

/// The `validate --format json` document: `{"valid": all, "files": [{"file",
/// "valid", "errors": [Diagnostic]}]}`, one entry per file.
pub fn report<'a>(files: impl IntoIterator<Item = (&'a str, &'a [Diagnostic])>) -> Value {
    let mut all_ok = true;
    let files: Vec<Value> = files
        .into_iter()
        .map(|(name, errors)| {
            all_ok &= errors.is_empty();
            json!({"file": name, "valid": errors.is_empty(), "errors": errors})
        })
        .collect();
    json!({"valid": all_ok, "files": files})
}

/// Why the child gave no verdict.
#[derive(Debug)]
pub enum HelperError {
    /// The child could not be started.
    Spawn { program: PathBuf, source: io::Error },
    /// Writing the text to the child, or reading its answer, failed.
    Pipe {
        what: &'static str,
        source: io::Error,
    },
    /// No answer in time; the child was killed.
    Timeout(Duration),
    /// The child exited with a status other than 0 (valid) or 1 (invalid).
    Status { status: ExitStatus, stderr: String },
    /// The answer is not a one-file `validate --format json` document that
    /// agrees with the exit status.
    Answer(String),
}

impl fmt::Display for HelperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelperError::Spawn { program, source } => {
                write!(f, "cannot start {}: {source}", program.display())
            }
            HelperError::Pipe { what, source } => write!(f, "{what}: {source}"),
            HelperError::Timeout(t) => {
                write!(
                    f,
                    "no answer within {}; killed it",
                    humantime::format_duration(*t)
                )
            }
            HelperError::Status { status, stderr } if stderr.is_empty() => {
                write!(f, "it exited with {status}")
            }
            HelperError::Status { status, stderr } => {
                write!(f, "it exited with {status}: {stderr}")
            }
            HelperError::Answer(why) => write!(f, "unexpected answer: {why}"),
        }
    }
}

impl std::error::Error for HelperError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HelperError::Spawn { source, .. } | HelperError::Pipe { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Runs the schema step in a child `panoptes validate` (see the module
/// docs).
#[derive(Debug)]
pub struct ChildSchemaCheck {
    program: PathBuf,
    /// The child's `argv[0]` when `program` is `/proc/self/exe`.
    arg0: Option<OsString>,
    timeout: Duration,
    /// The last text the child found valid.
    last_valid: Mutex<Option<PipelineText>>,
}

impl ChildSchemaCheck {
    /// A check by this binary. On Linux it runs `/proc/self/exe`, which is
    /// the running binary even after a package upgrade replaced the file on
    /// disk (so the child never answers for another version's schema);
    /// elsewhere `std::env::current_exe()`. `None` if neither is available
    /// (the caller then checks in process).
    pub fn this_binary() -> Option<ChildSchemaCheck> {
        let current = std::env::current_exe().ok();
        let proc_exe = PathBuf::from("/proc/self/exe");
        if cfg!(target_os = "linux") && proc_exe.exists() {
            return Some(ChildSchemaCheck {
                program: proc_exe,
                arg0: current.map(PathBuf::into_os_string),
                timeout: DEFAULT_TIMEOUT,
                last_valid: Mutex::new(None),
            });
        }
        Some(ChildSchemaCheck {
            program: current?,
            arg0: None,
            timeout: DEFAULT_TIMEOUT,
            last_valid: Mutex::new(None),
        })
    }

    /// A check by another program speaking the same protocol (tests).
    #[cfg(test)]
    fn with_program(program: impl Into<PathBuf>, timeout: Duration) -> ChildSchemaCheck {
        ChildSchemaCheck {
            program: program.into(),
            arg0: None,
            timeout,
            last_valid: Mutex::new(None),
        }
    }

    /// Asks the child about `text`, unless it found the very same text
    /// valid last time.
    pub fn check_text(&self, text: &PipelineText) -> Result<SchemaVerdict, HelperError> {
        // A poisoned lock only loses the memo.
        if let Ok(last) = self.last_valid.lock() {
            if last.as_ref() == Some(text) {
                tracing::debug!("pipeline text unchanged since the schema-check helper found it valid; not asking again");
                return Ok(SchemaVerdict::Valid);
            }
        }
        let t = Instant::now();
        let verdict = self.run(text)?;
        tracing::debug!(
            took_ms = t.elapsed().as_millis() as u64,
            valid = verdict == SchemaVerdict::Valid,
            "schema-check helper answered"
        );
        if verdict == SchemaVerdict::Valid {
            if let Ok(mut last) = self.last_valid.lock() {
                *last = Some(text.clone());
            }
        }
        Ok(verdict)
    }

    /// Asks the child about `text`.
    pub fn run(&self, text: &PipelineText) -> Result<SchemaVerdict, HelperError> {
        let deadline = Instant::now() + self.timeout;
        let mut cmd = Command::new(&self.program);
        #[cfg(unix)]
        if let Some(arg0) = &self.arg0 {
            use std::os::unix::process::CommandExt as _;
            cmd.arg0(arg0);
        }
        // `--opt=VALUE`: a name or directory starting with `-` stays a value.
        let mut base_dir = OsString::from("--stdin-base-dir=");
        base_dir.push(text.base_dir.as_os_str());
        cmd.args(["--log.level=error", "validate", "--format", "json"])
            .arg(format!("--stdin-name={}", text.name))
            .arg(base_dir)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|source| HelperError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let mut child = KillOnDrop {
            child,
            reaped: false,
        };
        let c = &mut child.child;
        let pipes = (c.stdin.take(), c.stdout.take(), c.stderr.take());
        let (Some(stdin), Some(mut stdout), Some(mut stderr)) = pipes else {
            return Err(HelperError::Pipe {
                what: "the child's standard streams",
                source: io::Error::other("not piped"),
            });
        };

        let bytes = text.text.clone().into_bytes();
        let writer = std::thread::Builder::new()
            .name("schema-check-in".into())
            .spawn(move || write_without_sigpipe(stdin, &bytes))
            .map_err(|source| HelperError::Pipe {
                what: "cannot start a thread to write to the child",
                source,
            })?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("schema-check-out".into())
            .spawn(move || {
                let mut out = Vec::new();
                let r = (&mut stdout).take(MAX_ANSWER).read_to_end(&mut out);
                let _ = tx.send(r.map(|_| out));
            })
            .map_err(|source| HelperError::Pipe {
                what: "cannot start a thread to read the child's answer",
                source,
            })?;
        let err_reader = std::thread::Builder::new()
            .name("schema-check-err".into())
            .spawn(move || {
                let mut err = Vec::new();
                let _ = (&mut stderr).take(1 << 20).read_to_end(&mut err);
                err
            })
            .map_err(|source| HelperError::Pipe {
                what: "cannot start a thread to read the child's errors",
                source,
            })?;

        let timeout = HelperError::Timeout(self.timeout);
        let out = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(out)) => out,
            Ok(Err(source)) => {
                return Err(HelperError::Pipe {
                    what: "reading the child's answer",
                    source,
                })
            }
            Err(_) => return Err(timeout),
        };
        // Its standard output is closed: the child is exiting.
        let status = loop {
            match child.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Ok(None) => return Err(timeout),
                Err(source) => {
                    return Err(HelperError::Pipe {
                        what: "waiting for the child",
                        source,
                    })
                }
            }
        };
        child.reaped = true;
        let stderr = err_reader.join().unwrap_or_default();
        let wrote = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread writing to the child panicked")));
        if !matches!(status.code(), Some(0 | 1)) {
            return Err(HelperError::Status {
                status,
                stderr: excerpt(&stderr),
            });
        }
        // A child that stopped reading early answered about part of the text.
        wrote.map_err(|source| HelperError::Pipe {
            what: "writing the pipeline to the child",
            source,
        })?;
        parse_answer(status.code() == Some(0), &out).map_err(HelperError::Answer)
    }
}

impl SchemaCheck for ChildSchemaCheck {
    fn check(
        &self,
        text: &PipelineText,
    ) -> Result<SchemaVerdict, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.check_text(text)?)
    }
}

/// A child killed and reaped on drop (timeouts, errors) unless it has
/// been reaped already.
struct KillOnDrop {
    child: Child,
    reaped: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes all of `bytes` to the child and closes its standard input.
///
/// `main` restores the default SIGPIPE action (a CLI dies quietly on a
/// closed pipe), so a child that exits before reading everything would kill
/// the whole server on this write. This runs on a thread of its own that
/// blocks SIGPIPE and ends right after: the write then fails with EPIPE
/// instead, and a SIGPIPE left pending on this thread is discarded with it.
fn write_without_sigpipe(mut stdin: ChildStdin, bytes: &[u8]) -> io::Result<()> {
    #[cfg(unix)]
    // SAFETY: changes only this thread's signal mask, with sets initialised
    // by sigemptyset/sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
    }
    stdin.write_all(bytes)?;
    stdin.flush()
}

/// The start of the child's standard error, on one line.
fn excerpt(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() > MAX_STDERR {
        let mut end = MAX_STDERR;
        while !one_line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &one_line[..end])
    } else {
        one_line
    }
}

/// Reads a child's answer: the [`report`] of one file, which must agree
/// with the exit status (`exited_ok`: 0, else 1).
pub fn parse_answer(exited_ok: bool, out: &[u8]) -> Result<SchemaVerdict, String> {
    let doc: Value = serde_json::from_slice(out).map_err(|e| format!("not JSON ({e})"))?;
    let files = doc
        .get("files")
        .and_then(Value::as_array)
        .ok_or("no `files` list")?;
    let [file] = files.as_slice() else {
        return Err(format!("{} files, expected 1", files.len()));
    };
    let valid = doc.get("valid").and_then(Value::as_bool);
    let file_valid = file.get("valid").and_then(Value::as_bool);
    let errors: Vec<Diagnostic> =
        serde_json::from_value(file.get("errors").cloned().ok_or("no `errors` list")?)
            .map_err(|e| format!("bad `errors` ({e})"))?;
    match (exited_ok, valid, file_valid, errors.is_empty()) {
        (true, Some(true), Some(true), true) => Ok(SchemaVerdict::Valid),
        (false, Some(false), Some(false), false) => Ok(SchemaVerdict::Invalid(Diagnostics(errors))),
        _ => Err(format!(
            "exit status {} with valid={valid:?}, file valid={file_valid:?} and {} errors",
            if exited_ok { 0 } else { 1 },
            errors.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> PipelineText {
        PipelineText {
            text: t.into(),
            name: "p.yaml".into(),
            base_dir: ".".into(),
        }
    }

    fn diag() -> Diagnostic {
        Diagnostic {
            file: "p.yaml".into(),
            line: 3,
            column: 5,
            path: "stages.x.bogus".into(),
            message: "unknown field \"bogus\"".into(),
        }
    }

    #[test]
    fn answers_round_trip() {
        let none: &[Diagnostic] = &[];
        let ok = report([("p.yaml", none)]).to_string();
        assert_eq!(parse_answer(true, ok.as_bytes()), Ok(SchemaVerdict::Valid));
        let errs = [diag()];
        let bad = report([("p.yaml", &errs[..])]).to_string();
        assert_eq!(
            parse_answer(false, bad.as_bytes()),
            Ok(SchemaVerdict::Invalid(Diagnostics(vec![diag()])))
        );
    }

    #[test]
    fn answers_that_contradict_the_status_are_refused() {
        let none: &[Diagnostic] = &[];
        let ok = report([("p.yaml", none)]).to_string();
        assert!(parse_answer(false, ok.as_bytes()).is_err());
        let errs = [diag()];
        let bad = report([("p.yaml", &errs[..])]).to_string();
        assert!(parse_answer(true, bad.as_bytes()).is_err());
        let two = report([("a", none), ("b", none)]).to_string();
        assert!(parse_answer(true, two.as_bytes()).is_err());
        assert!(parse_answer(true, b"").is_err());
        assert!(parse_answer(true, b"{\"valid\": true}").is_err());
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let c = ChildSchemaCheck::with_program("/nonexistent/panoptes", DEFAULT_TIMEOUT);
        assert!(matches!(c.run(&text("")), Err(HelperError::Spawn { .. })));
    }

    #[test]
    fn a_child_that_exits_without_reading_does_not_kill_us() {
        // As in `main`: a write to a closed pipe would kill the process.
        // SAFETY: resetting a signal disposition; the test harness's other
        // threads do not write to pipes that close under them.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        // Far more than a pipe buffer holds, to a child that reads nothing.
        let big = "#".repeat(4 << 20);
        let c = ChildSchemaCheck::with_program("true", DEFAULT_TIMEOUT);
        match c.run(&text(&big)) {
            Err(HelperError::Pipe { .. } | HelperError::Answer(_)) => {}
            other => panic!("expected a pipe error, got {other:?}"),
        }
    }

    /// An executable script in a temporary directory.
    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("helper");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn unchanged_valid_text_is_not_checked_again() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let body = format!(
            "cat >/dev/null; echo x >>{}; echo '{}'",
            calls.display(),
            report([("p.yaml", &[][..])])
        );
        let c = ChildSchemaCheck::with_program(script(dir.path(), &body), DEFAULT_TIMEOUT);
        let n = || {
            std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let a = text("stages: {}\n");
        assert_eq!(c.check_text(&a).unwrap(), SchemaVerdict::Valid);
        assert_eq!(c.check_text(&a).unwrap(), SchemaVerdict::Valid);
        assert_eq!(n(), 1);
        let b = text("stages: {}\n# changed\n");
        assert_eq!(c.check_text(&b).unwrap(), SchemaVerdict::Valid);
        assert_eq!(n(), 2);
    }

    #[test]
    fn a_slow_child_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let slow = script(dir.path(), "exec sleep 5");
        let c = ChildSchemaCheck::with_program(slow, Duration::from_millis(200));
        let t = Instant::now();
        let r = c.run(&text("stages: {}\n"));
        assert!(matches!(r, Err(HelperError::Timeout(_))), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
