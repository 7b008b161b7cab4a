//! The main listener's HTTP server: the API, `/metrics`, the `/-/` endpoints.
//!
//! Up to [`CONNECTION_THREADS`] HTTP/1 connections at a time are each served
//! by a thread of their own that blocks in `read(2)` between requests.
//! Connections beyond that, and HTTP/2 with prior knowledge, are served by
//! hyper-util's async server on the runtime, as every connection used to be.
//!
//! Why a thread per connection: a request on a keep-alive connection then
//! wakes the one thread that reads the socket, straight from the kernel, and
//! the handler (an instant query too, heavy or not) runs on that thread. On
//! the async server the reactor wakes a worker, which runs the connection's
//! task, and heavy queries hand the worker's place over with
//! `block_in_place`. For a one-series query that was 6–8 µs more server CPU
//! and 4–10 µs more latency, and after heavy queries the small ones stayed
//! slow for longer (bench/RESULTS.md, seventh session). Dashboards and
//! scrapers hold a handful of connections, so a thread each is cheap; the
//! limit keeps a flood of clients on the async path.
//!
//! HTTP stays hyper's and routing stays axum's; only the socket under hyper
//! blocks. That is sound because hyper reads a connection only when it needs
//! bytes to go on (a request head, or a body its handler is reading) once
//! `half_close` is on: otherwise it also reads while a response is pending,
//! to notice a client that went away, and that read would block the thread
//! the response is waiting for. The one read that must wait for hyper to
//! write first is the body after `Expect: 100-continue` (see
//! [`BlockingIo`]).

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tower::ServiceExt;

/// Connections served by a thread of their own at one time.
pub const CONNECTION_THREADS: usize = 64;

/// Stack of a connection thread: queries run on it, as on a runtime worker
/// (tokio's default for those).
const CONNECTION_STACK_BYTES: usize = 2 * 1024 * 1024;

/// The HTTP/2 connection preface: a client with prior knowledge opens with it.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves `router` on `listener` until `stop` turns true; then stops
/// accepting, lets requests in flight finish, and ends idle connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
    threads: usize,
) {
    let open = Arc::new(OpenConnections::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => break,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match OpenConnections::reserve(&open, threads) {
            Some(slot) => {
                if let Err(stream) = serve_on_thread(stream, slot, router.clone()) {
                    tokio::spawn(serve_async(stream, router.clone(), stop.clone()));
                }
            }
            None => {
                tokio::spawn(serve_async(stream, router.clone(), stop.clone()));
            }
        }
    }
    open.end_idle();
}

/// Serves one connection with hyper-util's async server (HTTP/1 or HTTP/2).
async fn serve_async(
    stream: tokio::net::TcpStream,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => log_connection_end(r),
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            log_connection_end(conn.await);
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

fn log_connection_end<E: std::fmt::Display>(r: Result<(), E>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Hands `stream` to a thread of its own. Gives the stream back if it cannot
/// (the thread did not start, or the socket cannot be made blocking).
fn serve_on_thread(
    stream: tokio::net::TcpStream,
    slot: Slot,
    router: Router,
) -> Result<(), tokio::net::TcpStream> {
    let std_stream = stream.into_std().map_err(|e| {
        // `into_std` only fails when deregistering from the reactor fails;
        // the stream is gone then, so there is nothing to give back.
        tracing::warn!(error = %e, "cannot take an HTTP connection off the reactor");
    });
    let Ok(std_stream) = std_stream else {
        return Ok(());
    };
    let give_back = |s: TcpStream| {
        s.set_nonblocking(true)
            .ok()
            .and_then(|()| tokio::net::TcpStream::from_std(s).ok())
    };
    if std_stream.set_nonblocking(false).is_err() {
        return give_back(std_stream).map_or(Ok(()), Err);
    }
    let Ok(shutdown_handle) = std_stream.try_clone() else {
        return give_back(std_stream).map_or(Ok(()), Err);
    };
    let rt = Handle::current();
    let spawned = std::thread::Builder::new()
        .name("http-conn".into())
        .stack_size(CONNECTION_STACK_BYTES)
        .spawn(move || {
            let id = slot.register(shutdown_handle);
            serve_blocking(std_stream, router, &rt);
            slot.unregister(id);
        });
    if let Err(e) = spawned {
        // The closure, and the stream and slot in it, went with the failed
        // spawn: the connection is closed and its place freed.
        tracing::warn!(error = %e, "cannot start a thread for an HTTP connection");
    }
    Ok(())
}

/// Serves one connection on this thread, blocking on its socket.
fn serve_blocking(stream: TcpStream, router: Router, rt: &Handle) {
    match starts_with_h2_preface(&stream) {
        Ok(false) => {}
        Ok(true) => {
            // HTTP/2 multiplexes requests over non-blocking I/O: the async
            // server drives it, from this thread, until the client leaves.
            let _guard = rt.enter();
            let back = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(stream));
            match back {
                Ok(s) => {
                    let (_never_stops, stop) = watch::channel(false);
                    rt.block_on(serve_async(s, router, stop));
                }
                Err(e) => tracing::debug!(error = %e, "cannot serve an HTTP/2 connection"),
            }
            return;
        }
        Err(_) => return,
    }
    let continue_pending = Arc::new(AtomicBool::new(false));
    let flag = continue_pending.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        if expects_continue(&req) {
            flag.store(true, Ordering::Relaxed);
        }
        router.clone().oneshot(req)
    });
    let io = BlockingIo {
        stream,
        continue_pending,
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .serve_connection(io, service);
    log_connection_end(rt.block_on(conn));
}

/// `Expect: 100-continue`: hyper answers `100 Continue` when the handler
/// first reads the body, into its write buffer, and reads on at once.
fn expects_continue(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Waits for the first bytes and tells whether they are the HTTP/2 preface.
fn starts_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    // A client may send the preface in pieces; `peek` returns what is there.
    for _ in 0..100 {
        let n = stream.peek(&mut buf)?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(false)
}

/// A blocking socket under hyper: every poll is ready once the call returns.
struct BlockingIo {
    stream: TcpStream,
    /// Set when hyper is about to send `100 Continue` and then read the body:
    /// the next read must not block before hyper has flushed that answer,
    /// or client and server would both wait. That read returns `Pending`
    /// once (and wakes the task), so hyper flushes, and is polled again.
    continue_pending: Arc<AtomicBool>,
}

impl hyper::rt::Read for BlockingIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.continue_pending.swap(false, Ordering::Relaxed) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let stream = &mut this.stream;
        // SAFETY: `read` only writes into the slice (it never reads the
        // uninitialised bytes), and `advance` is told exactly how many bytes
        // `read` initialised.
        unsafe {
            let spare = buf.as_mut();
            let slice =
                std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), spare.len());
            loop {
                match stream.read(slice) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
        }
    }
}

impl hyper::rt::Write for BlockingIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().stream.write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().stream.write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Nothing is buffered here: every write went to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(match self.stream.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != std::io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        })
    }
}

/// The connections being served on threads: counted, so that at most the
/// limit are, and kept, so that idle ones can be ended at shutdown.
#[derive(Default)]
struct OpenConnections {
    state: Mutex<OpenState>,
}

#[derive(Default)]
struct OpenState {
    reserved: usize,
    stopping: bool,
    next_id: u64,
    sockets: HashMap<u64, TcpStream>,
}

/// A place under the limit, taken before the thread starts and given back
/// when it is dropped.
struct Slot(Arc<OpenConnections>);

impl Slot {
    fn register(&self, socket: TcpStream) -> u64 {
        let mut st = self.0.lock();
        let id = st.next_id;
        st.next_id += 1;
        if st.stopping {
            let _ = socket.shutdown(Shutdown::Read);
        }
        st.sockets.insert(id, socket);
        id
    }

    fn unregister(&self, id: u64) {
        self.0.lock().sockets.remove(&id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().reserved -= 1;
    }
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenState> {
        // The state stays consistent under any panic: each change is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reserve(this: &Arc<Self>, limit: usize) -> Option<Slot> {
        let mut st = this.lock();
        if st.reserved >= limit {
            return None;
        }
        st.reserved += 1;
        Some(Slot(this.clone()))
    }

    /// Ends every connection's reading side: a thread waiting for the next
    /// request sees end of file and stops; one answering a request still
    /// writes its answer.
    fn end_idle(&self) {
        let mut st = self.lock();
        st.stopping = true;
        for s in st.sockets.values() {
            let _ = s.shutdown(Shutdown::Read);
        }
    }
}
