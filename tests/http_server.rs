//! The main listener's HTTP server over raw sockets: keep-alive connections
//! on their own threads and past the thread limit, request bodies that come
//! late or chunked, HTTP/1.0, half-closed clients, HTTP/2 with prior
//! knowledge, and shutdown with idle connections open.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use support::{api_pipeline, write, Running, Target};

/// More connections than the server gives threads to (`CONNECTION_THREADS`).
const MANY_CONNECTIONS: usize = 80;

fn start() -> (Target, Running) {
    let target = Target::start("# TYPE demo_temp gauge\ndemo_temp 21.5\n");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", &api_pipeline(&target.addr()));
    let p = Running::start(dir, "p.yaml", &[]);
    (target, p)
}

struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(p: &Running) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            reader: BufReader::new(s),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    fn get(&mut self, path: &str) -> (u16, String) {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response()
    }

    /// Reads one response with a `content-length` body.
    fn response(&mut self) -> (u16, String) {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().expect("content-length");
                }
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).expect("body");
        (status, String::from_utf8(body).expect("utf-8 body"))
    }

    /// True once the server has closed the connection.
    fn at_eof(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0))
    }
}

fn scalar(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    v["data"]["result"][1]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn keep_alive_connections_past_the_thread_limit_are_all_served() {
    let (_t, p) = start();
    let mut conns: Vec<Conn> = (0..MANY_CONNECTIONS).map(|_| Conn::open(&p)).collect();
    for round in 0..3 {
        for (i, c) in conns.iter_mut().enumerate() {
            let (code, body) = c.get(&format!("/api/v1/query?query={i}%2B{round}"));
            assert_eq!(code, 200, "connection {i}, round {round}: {body}");
            assert_eq!(scalar(&body), (i + round).to_string());
        }
    }
    // Closed connections give their threads back: new ones are served.
    conns.truncate(10);
    let mut fresh: Vec<Conn> = (0..MANY_CONNECTIONS).map(|_| Conn::open(&p)).collect();
    for c in fresh.iter_mut().chain(conns.iter_mut()) {
        assert_eq!(c.get("/-/healthy").0, 200);
    }
}

#[test]
fn request_bodies_late_chunked_and_http_1_0() {
    let (_t, p) = start();
    let mut c = Conn::open(&p);

    // Headers first, the form body a moment later.
    c.send(b"POST /api/v1/query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\n");
    std::thread::sleep(Duration::from_millis(300));
    c.send(b"query=2%2B3");
    let (code, body) = c.response();
    assert_eq!((code, scalar(&body)), (200, "5".into()), "{body}");

    // A chunked body, in two chunks, on the same connection.
    c.send(b"POST /api/v1/query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nquery=\r\n");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"5\r\n4%2B4\r\n0\r\n\r\n");
    let (code, body) = c.response();
    assert_eq!((code, scalar(&body)), (200, "8".into()), "{body}");

    // Expect: 100-continue is answered before the body is sent.
    c.send(b"POST /api/v1/query HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    let mut line = String::new();
    c.reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    c.reader.read_line(&mut line).unwrap();
    c.send(b"query=6%2B1");
    let (code, body) = c.response();
    assert_eq!((code, scalar(&body)), (200, "7".into()), "{body}");

    // HTTP/1.0 without keep-alive: one answer, then the server closes.
    let mut c = Conn::open(&p);
    c.send(b"GET /-/healthy HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().0, 200);
    assert!(c.at_eof());

    // Garbage gets 400 and a closed connection, and the server goes on.
    let mut c = Conn::open(&p);
    c.send(b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(c.response().0, 400);
    assert!(c.at_eof());
    assert_eq!(Conn::open(&p).get("/-/healthy").0, 200);
}

#[test]
fn a_client_that_half_closes_still_gets_its_answer() {
    let (_t, p) = start();
    let mut c = Conn::open(&p);
    c.send(b"GET /api/v1/query?query=40%2B2 HTTP/1.1\r\nHost: t\r\n\r\n");
    c.reader.get_ref().shutdown(Shutdown::Write).unwrap();
    let (code, body) = c.response();
    assert_eq!((code, scalar(&body)), (200, "42".into()), "{body}");
    assert!(c.at_eof());
}

#[test]
fn http2_with_prior_knowledge_is_served() {
    let (_t, p) = start();
    let mut c = Conn::open(&p);
    // The preface and an empty SETTINGS frame, sent in two pieces.
    c.send(b"PRI * HTTP/2.0\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
    let mut frame = [0u8; 9];
    c.reader.read_exact(&mut frame).expect("a frame back");
    assert_eq!(
        frame[3], 0x04,
        "the server's first frame is SETTINGS: {frame:?}"
    );
}

#[test]
fn shutdown_ends_idle_keep_alive_connections() {
    let (_t, mut p) = start();
    let mut idle: Vec<Conn> = (0..5).map(|_| Conn::open(&p)).collect();
    for c in &mut idle {
        assert_eq!(c.get("/-/healthy").0, 200);
    }
    let (code, log) = p.terminate();
    assert_eq!(code, Some(0), "{log}");
    for c in &mut idle {
        assert!(c.at_eof());
    }
}
