//! Helpers for tests that drive the real `panoptes` binary: run it, wait for
//! it over HTTP, serve exposition bodies from a tiny local target.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_panoptes"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `panoptes ARGS` from the repo root to completion.
pub fn panoptes(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run panoptes")
}

/// Runs `panoptes ARGS` in `dir` with `input` on its standard input.
pub fn panoptes_with_stdin(args: &[&str], dir: &Path, input: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run panoptes");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait for panoptes");
    writer.join().expect("stdin writer");
    out
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `panoptes run`, killed on drop.
pub struct Running {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Starts `panoptes run PIPELINE --listen 127.0.0.1:PORT` in `dir` and
    /// waits until it is ready.
    pub fn start(dir: tempfile::TempDir, pipeline: &str, extra: &[&str]) -> Running {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["run", pipeline, "--listen", &listen, "--data-dir", "data"];
        args.extend_from_slice(extra);
        let mut child = Command::new(bin())
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn panoptes run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let r = Running {
            child,
            port,
            dir,
            stderr,
        };
        r.wait_until(Duration::from_secs(30), "ready", |r| {
            r.get("/-/ready").map(|(s, _)| s == 200).unwrap_or(false)
        });
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let resp = reqwest::blocking::Client::new()
            .get(self.url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().unwrap_or_default()))
    }

    pub fn post(&self, path: &str) -> (u16, String) {
        let resp = reqwest::blocking::Client::new()
            .post(self.url(path))
            .timeout(Duration::from_secs(30))
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// The value of one series in /metrics (exact `name{labels}` text).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Polls `check` until it holds or the timeout expires (then panics
    /// with the process log).
    pub fn wait_until(&self, timeout: Duration, what: &str, check: impl Fn(&Running) -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; panoptes log:\n{}",
            self.stderr.lock().unwrap()
        );
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> (Option<i32>, String) {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                let log = self.stderr.lock().unwrap().clone();
                return (status.code(), log);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("panoptes did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipeline that scrapes `target` every 100 ms into a store and serves
/// the query API over it.
pub fn api_pipeline(target: &str) -> String {
    format!(
        "global: {{scrape_interval: 100ms, scrape_timeout: 90ms}}\nstages:\n  targets:\n    kind: discovery\n    static_configs: [{{targets: [\"{}\"]}}]\n  scrape:\n    kind: scrape\n    inputs: [targets]\n    job_name: demo\n  tsdb:\n    kind: store\n    inputs: [scrape]\n  api:\n    kind: api\n    store: tsdb\n",
        target
    )
}

/// A minimal HTTP target serving a body that tests can change, on
/// 127.0.0.1. Stops when dropped.
pub struct Target {
    pub port: u16,
    pub body: Arc<Mutex<String>>,
    pub status: Arc<Mutex<u16>>,
    pub hits: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

impl Target {
    pub fn start(body: &str) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind target");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let body = Arc::new(Mutex::new(body.to_string()));
        let status = Arc::new(Mutex::new(200u16));
        let hits = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s, h, st) = (body.clone(), status.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let body = b.lock().unwrap().clone();
                        let code = *s.lock().unwrap();
                        *h.lock().unwrap() += 1;
                        std::thread::spawn(move || serve_one(stream, &body, code));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Target {
            port,
            body,
            status,
            hits,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn set_body(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }

    pub fn set_status(&self, code: u16) {
        *self.status.lock().unwrap() = code;
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_one(mut stream: TcpStream, body: &str, code: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    let mut req = Vec::new();
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let reason = if code == 200 { "OK" } else { "Error" };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

/// Writes a file in a directory, creating parents.
pub fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(p, text).unwrap();
}
