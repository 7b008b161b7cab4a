//! Record, then replay on the virtual clock: the replayed batches carry the
//! recorded values at the recorded times. Its own test binary, because the
//! fetch mode is process-wide.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{value, Harness};
use panoptes_engine::clock::VirtualClock;
use panoptes_engine::stage::Message;
use panoptes_scrape::recording::{read_response, set_fetch_mode, time_range, FetchMode};
use serde_json::json;

#[test]
fn record_then_replay_on_the_virtual_clock() {
    let dir = std::env::temp_dir().join(format!("panoptes-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let section = json!({"scrape_interval": "500ms", "scrape_timeout": "450ms"});

    // Record two scrapes with different values.
    set_fetch_mode(FetchMode::Record(dir.clone()));
    let mut rec = Harness::start(section.clone());
    let addr = rec.addr.clone();
    *rec.server.body.lock() = "a 1\n".into();
    rec.set_targets(&[&addr]);
    assert_eq!(value(&rec.next_batch(), "a"), Some(1.0));
    *rec.server.body.lock() = "a 2\n".into();
    while value(&rec.next_batch(), "a") != Some(2.0) {}
    rec.stop();
    let (start, end) = time_range(&dir).unwrap().expect("responses were recorded");
    assert!(end > start);

    // Replay: no server answers; time only moves when the test moves it.
    set_fetch_mode(FetchMode::Replay(dir.clone()));
    let clock = VirtualClock::new(start - 1);
    let mut rep = Harness::start_with_clock(section, Arc::new(clock.clone()));
    rep.set_targets(&[&addr]);
    // Let the loop start and plan its first slot before time moves.
    while rep
        .targets
        .all()
        .first()
        .is_none_or(|(_, v)| v.targets().is_empty())
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut got = Vec::new();
    let mut t = start - 1;
    while t <= end {
        t += 50;
        clock.advance_to(t);
        std::thread::sleep(Duration::from_millis(5));
        while let Ok(Message::Samples(b)) = rep.output.try_recv() {
            got.push(b);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    while let Ok(Message::Samples(b)) = rep.output.try_recv() {
        got.push(b);
    }
    rep.stop();
    set_fetch_mode(FetchMode::Network);
    let inst_dir = std::fs::read_dir(dir.join("node"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let recorded = read_response(&inst_dir.join(format!("{start}.txt")), start).unwrap();
    assert_eq!(recorded.body, b"a 1\n");
    let _ = std::fs::remove_dir_all(&dir);

    assert!(got.len() >= 2, "replayed {} scrapes", got.len());
    let a_first = got[0]
        .samples
        .iter()
        .find(|s| s.labels.metric_name() == Some("a"))
        .unwrap();
    assert_eq!(a_first.timestamp_ms, start, "replayed at the recorded slot");
    assert_eq!(a_first.value, 1.0);
    assert_eq!(value(got.last().unwrap(), "a"), Some(2.0));
    assert!(got.iter().all(|b| value(b, "up") == Some(1.0)));
    // The recorded duration is reported, so replays are deterministic.
    assert_eq!(
        value(&got[0], "scrape_duration_seconds"),
        Some(recorded.duration.as_secs_f64())
    );
}
