//! One scrape loop per target: wait for the target's slot in the interval
//! (a stable offset from its hash, so loops spread out), fetch, append,
//! add the synthetic series, send one batch, repeat. When the target goes
//! away, its series get stale markers; when the stage merely stops (reload
//! or shutdown), they do not, as in Prometheus.

use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_engine::clock::Clock;
use panoptes_engine::port::Output;
use panoptes_engine::stage::Message;
use panoptes_exposition::Format;
use panoptes_model::{stale_nan, Labels, Sample, SampleBatch, TargetHealth, TargetStatus};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::cache::{AppendResult, AppendSettings, SeriesCache};
use crate::http::Fetcher;
use crate::metrics::ScrapeMetrics;
use crate::target::Target;

/// Names of the synthetic series, in the order they are emitted.
pub const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// What the loops of one stage share.
pub struct LoopEnv {
    pub stage: Arc<str>,
    pub output: Output,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<ScrapeMetrics>,
}

/// Everything one loop needs about its target.
pub struct LoopSpec {
    pub target: Target,
    pub settings: AppendSettings,
    pub fetcher: Arc<Fetcher>,
    pub gzip: bool,
    pub body_size_limit: u64,
}

/// How a loop is asked to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopState {
    Run,
    /// Stop without stale markers (stage stopping or loop being replaced).
    Stop,
    /// The target went away: stale markers for all its series.
    Remove,
}

/// The first scrape time at or after `now_ms` in the target's slot.
pub fn first_slot(now_ms: i64, interval_ms: i64, hash: u64) -> i64 {
    let interval_ms = interval_ms.max(1);
    let offset = (hash % interval_ms as u64) as i64;
    let mut next = now_ms - now_ms.rem_euclid(interval_ms) + offset;
    if next < now_ms {
        next += interval_ms;
    }
    next
}

/// The next slot strictly after `now_ms`, on the grid of `prev`.
fn next_slot(prev: i64, now_ms: i64, interval_ms: i64) -> i64 {
    let next = prev + interval_ms;
    if next > now_ms {
        return next;
    }
    // Missed slots (a slow scrape or a paused process) are skipped.
    let behind = now_ms - next;
    next + (behind / interval_ms + 1) * interval_ms
}

struct Loop {
    env: Arc<LoopEnv>,
    spec: LoopSpec,
    status: Arc<Mutex<TargetStatus>>,
    cache: SeriesCache,
    report_labels: [Labels; 5],
    source: Arc<str>,
    buf: Vec<u8>,
    /// Size of the last body, to size the next scrape's buffer in one go.
    body_hint: usize,
    /// Whether a scrape has been sent (so there is something to mark stale).
    scraped: bool,
}

/// Runs a scrape loop until `state` leaves [`LoopState::Run`].
pub async fn run(
    env: Arc<LoopEnv>,
    spec: LoopSpec,
    status: Arc<Mutex<TargetStatus>>,
    mut state: watch::Receiver<LoopState>,
) {
    let report_labels = REPORT_SERIES.map(|name| {
        let mut b = spec.target.labels.to_builder();
        b.set("__name__", name);
        b.build()
    });
    let source: Arc<str> = Arc::from(format!("{}/{}", env.stage, spec.target.url));
    let mut lp = Loop {
        env,
        spec,
        status,
        cache: SeriesCache::new(),
        report_labels,
        source,
        buf: Vec::new(),
        body_hint: 0,
        scraped: false,
    };
    let interval_ms = lp.spec.target.interval.as_millis().max(1) as i64;
    let mut next = first_slot(lp.env.clock.now_ms(), interval_ms, lp.spec.target.hash());
    let end = loop {
        if *state.borrow() != LoopState::Run {
            break *state.borrow();
        }
        let sleep = lp.env.clock.sleep_until(next);
        tokio::select! {
            _ = sleep => {}
            r = state.changed() => {
                if r.is_err() { break LoopState::Stop; }
                continue;
            }
        }
        // On the virtual clock time jumps: the slot itself is the scrape
        // time, so a replay gives the same timestamps however it is driven.
        let start_ms = if lp.env.clock.is_virtual() {
            next
        } else {
            lp.env.clock.now_ms()
        };
        let done = tokio::select! {
            batch = lp.scrape_once(start_ms, next) => Some(batch),
            r = state.changed() => {
                if r.is_err() { break LoopState::Stop; }
                None
            }
        };
        if let Some(batch) = done {
            lp.send(batch).await;
            lp.scraped = true;
        }
        // A replay must scrape every slot, however far the virtual clock
        // jumped meanwhile; live loops skip slots they missed.
        next = if lp.env.clock.is_virtual() {
            next + interval_ms
        } else {
            next_slot(next, lp.env.clock.now_ms(), interval_ms)
        };
    };
    // A target removed before its first scrape wrote nothing to mark stale.
    if end == LoopState::Remove && lp.scraped {
        let ts = lp.env.clock.now_ms();
        let mut samples = lp.cache.end_of_run(ts);
        for labels in &lp.report_labels {
            samples.push(Sample {
                labels: labels.clone(),
                timestamp_ms: ts,
                value: stale_nan(),
            });
        }
        let mut batch = SampleBatch::new(lp.source.clone());
        batch.samples = samples;
        lp.send(batch).await;
    }
}

impl Loop {
    /// One scrape starting at `start_ms`, in the slot scheduled at
    /// `slot_ms` (what a recording is keyed by, so that a replay on the
    /// virtual clock finds it at the same slot).
    async fn scrape_once(&mut self, start_ms: i64, slot_ms: i64) -> SampleBatch {
        let started = Instant::now();
        let t = &self.spec.target;
        self.buf.reserve_exact(self.body_hint + self.body_hint / 8);
        let fetched = self
            .spec
            .fetcher
            .scrape(
                t,
                slot_ms,
                self.spec.body_size_limit,
                self.spec.gzip,
                &mut self.buf,
            )
            .await;
        let mut recorded_duration = None;
        let res = match fetched {
            Ok(f) => {
                recorded_duration = f.recorded_duration;
                let format = Format::from_content_type(&f.content_type);
                self.cache
                    .append(&self.buf, format, start_ms, &self.spec.settings)
            }
            Err(e) => self.cache.fail(start_ms, e),
        };
        // The body is parsed: free it rather than keep one body per target
        // between scrapes (only the targets being parsed need one; the
        // allocator reuses the memory for the next target's body).
        self.body_hint = self.buf.len();
        self.buf = Vec::new();
        // On the virtual clock no wall time passes between slots: a scrape
        // without a recorded duration (no response recorded) took none, so
        // replays stay deterministic.
        let duration = recorded_duration.unwrap_or_else(|| {
            if self.env.clock.is_virtual() {
                Duration::ZERO
            } else {
                started.elapsed()
            }
        });
        self.finish(res, start_ms, duration)
    }

    fn finish(&mut self, res: AppendResult, start_ms: i64, duration: Duration) -> SampleBatch {
        let m = &self.env.metrics;
        m.scrapes.inc();
        let up = res.error.is_none();
        {
            let mut st = self.status.lock();
            st.last_scrape_ms = start_ms;
            st.last_scrape_duration_seconds = duration.as_secs_f64();
            st.health = if up {
                TargetHealth::Up
            } else {
                TargetHealth::Down
            };
            st.last_error = res
                .error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default();
        }
        if let Some(e) = &res.error {
            m.failures.with_label_values(&[e.reason()]).inc();
            tracing::warn!(
                stage = %self.env.stage,
                target = %self.spec.target.url,
                error = %e,
                "scrape failed"
            );
        } else if res.duplicates > 0 {
            tracing::debug!(
                stage = %self.env.stage,
                target = %self.spec.target.url,
                duplicates = res.duplicates,
                "duplicate series in scrape ignored"
            );
        }
        let values = [
            if up { 1.0 } else { 0.0 },
            duration.as_secs_f64(),
            res.scraped as f64,
            res.post_relabel as f64,
            res.added as f64,
        ];
        let mut samples = res.samples;
        samples.reserve(values.len());
        for (labels, value) in self.report_labels.iter().zip(values) {
            samples.push(Sample {
                labels: labels.clone(),
                timestamp_ms: start_ms,
                value,
            });
        }
        SampleBatch {
            source: self.source.clone(),
            samples,
            metadata: res.metadata,
        }
    }

    async fn send(&self, batch: SampleBatch) {
        self.env.metrics.samples.inc_by(batch.samples.len() as u64);
        if self
            .env
            .output
            .send_async(Message::Samples(Arc::new(batch)))
            .await
            .is_err()
        {
            tracing::debug!(stage = %self.env.stage, "scrape output closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_stable_and_spread() {
        let a = first_slot(10_500, 1_000, 42);
        assert_eq!(a, 11_042);
        assert_eq!(first_slot(11_000, 1_000, 42), 11_042);
        assert_eq!(first_slot(11_042, 1_000, 42), 11_042);
        assert_ne!(first_slot(10_500, 1_000, 43), a);
        assert_eq!(next_slot(11_042, 11_100, 1_000), 12_042);
        // A slow scrape skips missed slots but stays on the grid.
        assert_eq!(next_slot(11_042, 14_500, 1_000), 15_042);
    }
}
