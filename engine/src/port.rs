//! Ports: the ends of edges. An [`Output`] fans a message out to every
//! downstream input (blocking when one is full: backpressure reaches the
//! source), and to any attached taps (never blocking: a slow tap loses
//! messages, the pipeline does not). The runtime can rewire an `Output`'s
//! downstream list on reload without the stage noticing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::RwLock;

use crate::stage::{Message, MessageType};

/// Per-edge counters, readable by the runtime for `/metrics`.
#[derive(Default, Debug)]
pub struct EdgeCounters {
    pub messages: AtomicU64,
    pub items: AtomicU64,
    /// Messages dropped because the consumer was full and the edge allows
    /// dropping.
    pub dropped_messages: AtomicU64,
    pub dropped_items: AtomicU64,
}

/// One downstream consumer of an output.
#[derive(Clone)]
pub struct Downstream {
    /// The consuming stage id.
    pub stage: String,
    pub tx: Sender<Message>,
    /// Drop (and count) instead of blocking when the consumer is full.
    pub drop_when_full: bool,
    pub counters: Arc<EdgeCounters>,
}

struct OutputInner {
    stage: Arc<str>,
    port: Arc<str>,
    message: MessageType,
    downstream: RwLock<Vec<Downstream>>,
    taps: RwLock<Vec<Sender<Tapped>>>,
    tap_count: AtomicUsize,
    sent_messages: AtomicU64,
    sent_items: AtomicU64,
}

/// A copy of a message sent to a tap, with where it was seen.
#[derive(Clone, Debug)]
pub struct Tapped {
    pub stage: Arc<str>,
    pub port: Arc<str>,
    pub message: Message,
}

/// The sending side of one output port of one stage. Cheap to clone.
#[derive(Clone)]
pub struct Output {
    inner: Arc<OutputInner>,
}

/// The consumers of an output went away (pipeline shutting down).
#[derive(Debug, thiserror::Error)]
#[error("output {stage}.{port} has been closed")]
pub struct OutputClosed {
    pub stage: String,
    pub port: String,
}

impl Output {
    /// A new output with no consumers (messages are discarded until wired).
    pub fn new(stage: &str, port: &str, message: MessageType) -> Self {
        Output {
            inner: Arc::new(OutputInner {
                stage: stage.into(),
                port: port.into(),
                message,
                downstream: RwLock::new(Vec::new()),
                taps: RwLock::new(Vec::new()),
                tap_count: AtomicUsize::new(0),
                sent_messages: AtomicU64::new(0),
                sent_items: AtomicU64::new(0),
            }),
        }
    }

    pub fn stage(&self) -> &str {
        &self.inner.stage
    }

    pub fn port(&self) -> &str {
        &self.inner.port
    }

    pub fn message_type(&self) -> MessageType {
        self.inner.message
    }

    /// Replaces the consumers (runtime only: wiring and reload).
    pub fn set_downstream(&self, downstream: Vec<Downstream>) {
        *self.inner.downstream.write() = downstream;
    }

    /// The current consumers.
    pub fn downstream(&self) -> Vec<Downstream> {
        self.inner.downstream.read().clone()
    }

    /// Attaches a tap; it receives copies until its receiver is dropped.
    pub fn attach_tap(&self, tx: Sender<Tapped>) {
        let mut taps = self.inner.taps.write();
        taps.push(tx);
        self.inner.tap_count.store(taps.len(), Ordering::Release);
    }

    /// Messages and items sent so far.
    pub fn sent(&self) -> (u64, u64) {
        (
            self.inner.sent_messages.load(Ordering::Relaxed),
            self.inner.sent_items.load(Ordering::Relaxed),
        )
    }

    fn feed_taps(&self, msg: &Message) {
        if self.inner.tap_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let tapped = Tapped {
            stage: self.inner.stage.clone(),
            port: self.inner.port.clone(),
            message: msg.clone(),
        };
        let mut taps = self.inner.taps.write();
        taps.retain(|t| match t.try_send(tapped.clone()) {
            Ok(()) | Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        });
        self.inner.tap_count.store(taps.len(), Ordering::Release);
    }

    fn count(&self, items: u64) {
        self.inner.sent_messages.fetch_add(1, Ordering::Relaxed);
        self.inner.sent_items.fetch_add(items, Ordering::Relaxed);
    }

    /// Sends to every consumer, blocking while one is full. For stages that
    /// run on their own threads; async code uses [`Output::send_async`].
    pub fn send(&self, msg: Message) -> Result<(), OutputClosed> {
        let items = msg.item_count() as u64;
        self.feed_taps(&msg);
        self.count(items);
        let downstream = self.inner.downstream.read().clone();
        for d in &downstream {
            if d.drop_when_full {
                try_or_drop(d, msg.clone(), items);
            } else if d.tx.send(msg.clone()).is_ok() {
                d.counters.messages.fetch_add(1, Ordering::Relaxed);
                d.counters.items.fetch_add(items, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Sends to every consumer without ever blocking a tokio worker: waits
    /// (asynchronously) while a consumer is full.
    pub async fn send_async(&self, msg: Message) -> Result<(), OutputClosed> {
        let items = msg.item_count() as u64;
        self.feed_taps(&msg);
        self.count(items);
        let downstream = self.inner.downstream.read().clone();
        for d in &downstream {
            if d.drop_when_full {
                try_or_drop(d, msg.clone(), items);
                continue;
            }
            let mut pending = msg.clone();
            let mut backoff = Duration::from_micros(200);
            loop {
                match d.tx.try_send(pending) {
                    Ok(()) => {
                        d.counters.messages.fetch_add(1, Ordering::Relaxed);
                        d.counters.items.fetch_add(items, Ordering::Relaxed);
                        break;
                    }
                    Err(TrySendError::Full(m)) => {
                        pending = m;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(20));
                    }
                    // The consumer stopped (reload or shutdown): nothing to
                    // deliver to any more.
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
        }
        Ok(())
    }
}

fn try_or_drop(d: &Downstream, msg: Message, items: u64) {
    match d.tx.try_send(msg) {
        Ok(()) => {
            d.counters.messages.fetch_add(1, Ordering::Relaxed);
            d.counters.items.fetch_add(items, Ordering::Relaxed);
        }
        Err(_) => {
            d.counters.dropped_messages.fetch_add(1, Ordering::Relaxed);
            d.counters.dropped_items.fetch_add(items, Ordering::Relaxed);
        }
    }
}

/// The receiving side of a stage's input. All upstream outputs feed the same
/// channel (fan-in).
pub struct Input {
    pub rx: Receiver<Message>,
}

impl Input {
    pub fn new(rx: Receiver<Message>) -> Self {
        Input { rx }
    }
}
