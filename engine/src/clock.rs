//! Time for every time-driven stage: the real clock, or a virtual clock that
//! replays run on, so that a recording replays deterministically and as fast
//! as the CPU allows.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A boxed, sendable future (what `sleep_until` returns).
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Time as stages see it, in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_ms(&self) -> i64;

    /// Completes when the clock reaches `deadline_ms` (at once if past).
    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture;

    /// Blocks the calling (non-tokio) thread until `deadline_ms`.
    fn sleep_until_blocking(&self, deadline_ms: i64);

    /// Whether this is a virtual (replay) clock.
    fn is_virtual(&self) -> bool {
        false
    }
}

/// Wall-clock time.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealClock;

impl RealClock {
    fn wall_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

impl Clock for RealClock {
    fn now_ms(&self) -> i64 {
        Self::wall_ms()
    }

    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture {
        let wait = (deadline_ms - Self::wall_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }

    fn sleep_until_blocking(&self, deadline_ms: i64) {
        let wait = (deadline_ms - Self::wall_ms()).max(0) as u64;
        if wait > 0 {
            std::thread::sleep(Duration::from_millis(wait));
        }
    }
}
