//! Driving a replay: the virtual clock steps through every recorded
//! response time, and after each step waits until the pipeline has taken in
//! what that step produced, so a replay is deterministic and as fast as the
//! CPU allows.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use panoptes_engine::clock::VirtualClock;
use panoptes_engine::Supervisor;

/// The clock steps of a replay: every response time in a recording
/// (`DIR/<job>/<instance>/<ms>.txt`) and the scrape-interval grid from the
/// first response to three intervals past the last, so that slots whose
/// responses were deleted (a faked outage) are scraped too and fail.
pub fn response_times(dir: &Path) -> anyhow::Result<Vec<i64>> {
    let mut times = Vec::new();
    // The smallest gap between two responses of one target: its interval.
    let mut step: Option<i64> = None;
    let jobs = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read recording {}", dir.display()))?;
    for job in jobs.flatten().filter(|e| e.path().is_dir()) {
        for inst in std::fs::read_dir(job.path())?
            .flatten()
            .filter(|e| e.path().is_dir())
        {
            let mut own: Vec<i64> = std::fs::read_dir(inst.path())?
                .flatten()
                .filter_map(|f| {
                    let name = f.file_name();
                    let name = name.to_string_lossy();
                    name.strip_suffix(".txt")
                        .and_then(|s| s.parse::<i64>().ok())
                })
                .collect();
            own.sort_unstable();
            for w in own.windows(2) {
                let gap = w[1] - w[0];
                if gap > 0 {
                    step = Some(step.map_or(gap, |s| s.min(gap)));
                }
            }
            times.extend(own);
        }
    }
    times.sort_unstable();
    times.dedup();
    if let (Some(&first), Some(&last), Some(step)) = (times.first(), times.last(), step) {
        let mut t = first;
        while t <= last + 3 * step {
            times.push(t);
            t += step;
        }
        times.sort_unstable();
        times.dedup();
    }
    Ok(times)
}

/// A fingerprint of pipeline progress: items sent on every output plus
/// batches still queued.
fn progress(sup: &Supervisor) -> (u64, usize) {
    sup.with_engine(|e| {
        let sent = e.outputs().iter().map(|o| o.sent().0).sum();
        let queued = e.status().iter().map(|s| s.queue_depth).sum();
        (sent, queued)
    })
}

/// Waits until nothing moves: queues empty and no output sent anything for
/// a few milliseconds (bounded, so a stuck stage cannot hang the replay).
fn settle(sup: &Supervisor) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = progress(sup);
    let mut quiet = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        let now = progress(sup);
        if now == last && now.1 == 0 {
            quiet += 1;
            // Scrape loops catch up on every slot by themselves; waiting
            // for quiet only keeps stages in step, so that their output
            // order is the same run after run.
            if quiet >= 5 {
                return;
            }
        } else {
            quiet = 0;
        }
        last = now;
    }
    tracing::warn!("replay: the pipeline did not settle within 10s; going on");
}

/// Steps the clock through every time, settling after each step.
pub fn drive(clock: &VirtualClock, times: &[i64], sup: &Supervisor) {
    settle(sup);
    for &t in times {
        clock.advance_to(t);
        settle(sup);
    }
}
