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

/// Virtual time for replays and tests: it stands still until the driver
/// (a replaying scrape stage, or a test) advances it, and wakes every
/// sleeper whose deadline has passed. Replays therefore run as fast as the
/// CPU allows and give the same result every time.
#[derive(Clone)]
pub struct VirtualClock {
    now: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    blocking: std::sync::Arc<(parking_lot::Mutex<i64>, parking_lot::Condvar)>,
}

impl VirtualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        let (tx, _) = tokio::sync::watch::channel(start_ms);
        VirtualClock {
            now: std::sync::Arc::new(tx),
            blocking: std::sync::Arc::new((
                parking_lot::Mutex::new(start_ms),
                parking_lot::Condvar::new(),
            )),
        }
    }

    /// Moves time forward to `ms` (never backwards) and wakes sleepers.
    pub fn advance_to(&self, ms: i64) {
        self.now.send_if_modified(|t| {
            if ms > *t {
                *t = ms;
                true
            } else {
                false
            }
        });
        let (lock, cv) = &*self.blocking;
        let mut t = lock.lock();
        if ms > *t {
            *t = ms;
            cv.notify_all();
        }
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, deadline_ms: i64) -> BoxFuture {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // An error means the clock was dropped: nothing will ever
            // advance it, so return rather than hang.
            let _ = rx.wait_for(|t| *t >= deadline_ms).await;
        })
    }

    fn sleep_until_blocking(&self, deadline_ms: i64) {
        let (lock, cv) = &*self.blocking;
        let mut t = lock.lock();
        while *t < deadline_ms {
            cv.wait(&mut t);
        }
    }

    fn is_virtual(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_clock_wakes_sleepers_when_advanced() {
        let clock = VirtualClock::new(1_000);
        let c2 = clock.clone();
        let waiter = std::thread::spawn(move || {
            c2.sleep_until_blocking(5_000);
            c2.now_ms()
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        clock.advance_to(3_000);
        clock.advance_to(2_000); // never backwards
        assert_eq!(clock.now_ms(), 3_000);
        clock.advance_to(5_000);
        assert_eq!(waiter.join().unwrap(), 5_000);
    }

    #[tokio::test]
    async fn virtual_clock_async_sleep() {
        let clock = VirtualClock::new(0);
        let c2 = clock.clone();
        let h = tokio::spawn(async move { c2.sleep_until(100).await });
        tokio::task::yield_now().await;
        clock.advance_to(100);
        h.await.unwrap();
    }
}
