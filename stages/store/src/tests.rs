//! Tests of the store stage driven through the Stage contract, as the
//! engine drives it.

use std::collections::BTreeMap;
use std::sync::Arc;

use panoptes_engine::clock::RealClock;
use panoptes_engine::port::Input;
use panoptes_engine::stage::{
    CompileContext, Message, Reconfigure, StageContext, StageKind, StateSlot, StoreRegistry,
    TargetsRegistry,
};
use panoptes_model::{Labels, Matcher, Sample, SampleBatch};
use serde_json::json;

use super::*;

struct Harness {
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    tx: crossbeam_channel::Sender<Message>,
    rx: crossbeam_channel::Receiver<Message>,
    state: StateSlot,
    stores: StoreRegistry,
    /// The registry of the latest start (the engine makes one per start).
    metrics: parking_lot::Mutex<prometheus::Registry>,
}

impl Harness {
    fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(16);
        Harness {
            _rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            dir: tempfile::tempdir().unwrap(),
            tx,
            rx,
            state: StateSlot::default(),
            stores: StoreRegistry::default(),
            metrics: parking_lot::Mutex::new(prometheus::Registry::new()),
        }
    }

    fn compile(&self, section: serde_json::Value) -> Box<dyn StageConfig> {
        let ctx = CompileContext {
            stage_id: "tsdb".into(),
            base_dir: self.dir.path().to_path_buf(),
            global: Default::default(),
        };
        StoreKind.compile(&ctx, &section).unwrap()
    }

    fn start(&self, cfg: &dyn StageConfig) -> Box<dyn RunningStage> {
        let ctx = StageContext {
            id: "tsdb".into(),
            clock: Arc::new(RealClock),
            runtime: self._rt.handle().clone(),
            input: Some(Input::new(self.rx.clone())),
            outputs: BTreeMap::new(),
            metrics: {
                let r = prometheus::Registry::new();
                *self.metrics.lock() = r.clone();
                r
            },
            state: self.state.clone(),
            stores: self.stores.clone(),
            targets: TargetsRegistry::default(),
            global: Default::default(),
            base_dir: self.dir.path().to_path_buf(),
            data_dir: self.dir.path().join("data"),
        };
        cfg.start(ctx).unwrap()
    }

    fn send(&self, job: &str, t: i64, v: f64) {
        let mut b = SampleBatch::new("test");
        b.samples.push(Sample {
            labels: Labels::from_pairs([("__name__", "up"), ("job", job)]),
            timestamp_ms: t,
            value: v,
        });
        self.tx.send(Message::Samples(Arc::new(b))).unwrap();
    }

    /// Waits for the store to be registered (the database opens on the
    /// stage's thread), then counts the stored samples.
    fn count(&self) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let store = loop {
            if let Some(s) = self.stores.get("tsdb") {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "store never registered"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        store
            .select(&[Matcher::equal("__name__", "up")], i64::MIN, i64::MAX)
            .unwrap()
            .iter()
            .map(|s| s.samples.len())
            .sum()
    }
}

#[test]
fn schema_rejects_unknown_fields() {
    let s = StoreKind.config_schema();
    assert_eq!(s["additionalProperties"], json!(false));
    assert!(s["properties"]["retention"].is_object());
}

#[test]
fn stop_drains_the_input_and_data_survives_a_restart() {
    let h = Harness::new();
    let cfg = h.compile(json!({}));
    let running = h.start(&*cfg);
    for t in 0..10 {
        h.send("a", t * 1000, t as f64);
    }
    running.stop();
    assert!(h.dir.path().join("data").join("tsdb").join("wal").is_dir());
    assert!(h.stores.get("tsdb").is_none());
    // As a fresh engine would: the database is closed, the WAL replayed.
    let state = h.state.take::<StoreState>().unwrap();
    let db_dir = state.db.dir().to_path_buf();
    drop(state);
    assert!(h.state.take::<StoreState>().is_none());
    let running = h.start(&*cfg);
    assert_eq!(h.count(), 10);
    running.stop();
    assert!(db_dir.ends_with("data/tsdb"));
}

#[test]
fn reload_keeps_the_open_database() {
    let h = Harness::new();
    let cfg = h.compile(json!({"path": "db", "retention": "15d"}));
    let mut running = h.start(&*cfg);
    h.send("a", 1000, 1.0);
    h.send("a", 2000, 2.0);
    // In place: retention changed, path unchanged.
    let new = h.compile(json!({"path": "db", "retention": "30d"}));
    assert!(matches!(running.reconfigure(&*new), Reconfigure::Applied));
    // Another path cannot be applied in place.
    let other = h.compile(json!({"path": "elsewhere"}));
    assert!(matches!(running.reconfigure(&*other), Reconfigure::Rebuild));
    // A rebuild with the same path takes the database from the state slot.
    running.stop();
    let running = h.start(&*new);
    h.send("a", 3000, 3.0);
    running.stop();
    let running = h.start(&*new);
    assert_eq!(h.count(), 3);
    let families = h.metrics.lock().gather();
    let appended = families
        .iter()
        .find(|f| f.name() == "panoptes_tsdb_head_samples_appended_total")
        .unwrap();
    assert_eq!(appended.get_metric()[0].get_counter().get_value(), 3.0);
    running.stop();
}

#[test]
fn start_returns_before_the_wal_is_replayed_and_health_says_so() {
    let h = Harness::new();
    let cfg = h.compile(json!({}));
    let running = h.start(&*cfg);
    // Either still opening (healthy, with a detail) or already open.
    let health = running.health();
    assert!(health.ok, "{health:?}");
    h.send("a", 1000, 1.0);
    assert_eq!(h.count(), 1);
    assert_eq!(running.health(), StageHealth::healthy());
    running.stop();
}

#[test]
fn unusable_path_fails_start_with_a_clear_error() {
    let h = Harness::new();
    let file = h.dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let cfg = h.compile(json!({"path": file.join("db").to_str().unwrap()}));
    let ctx_err = {
        let ctx = StageContext::standalone("tsdb", h._rt.handle().clone(), h.dir.path());
        match cfg.start(ctx) {
            Ok(_) => panic!("start succeeded on a path under a file"),
            Err(e) => e,
        }
    };
    assert!(
        ctx_err.to_string().contains("cannot create TSDB directory"),
        "{ctx_err}"
    );
}

#[test]
fn rejected_samples_are_counted_by_reason() {
    let h = Harness::new();
    let cfg = h.compile(json!({}));
    let running = h.start(&*cfg);
    h.send("a", 5000, 1.0);
    h.send("a", 4000, 1.0);
    h.send("a", 5000, 2.0);
    running.stop();
    let families = h.metrics.lock().gather();
    let rejected = families
        .iter()
        .find(|f| f.name() == "panoptes_tsdb_samples_rejected_total")
        .unwrap();
    let mut by_reason: Vec<(String, f64)> = rejected
        .get_metric()
        .iter()
        .map(|m| {
            (
                m.get_label()[0].value().to_string(),
                m.get_counter().get_value(),
            )
        })
        .filter(|x| x.1 > 0.0)
        .collect();
    by_reason.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        by_reason,
        vec![
            ("duplicate".to_string(), 1.0),
            ("out_of_order".to_string(), 1.0)
        ]
    );
}

#[test]
fn ready_only_once_the_database_is_open_for_queries() {
    let h = Harness::new();
    let cfg = h.compile(json!({}));
    // A file where the WAL's directory belongs: opening fails and is retried.
    let wal = h.dir.path().join("data").join("tsdb").join("wal");
    std::fs::create_dir_all(wal.parent().unwrap()).unwrap();
    std::fs::write(&wal, b"not a directory").unwrap();
    let running = h.start(&*cfg);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!running.ready());
    assert!(!running.health().ok);
    running.stop();

    std::fs::remove_file(&wal).unwrap();
    let running = h.start(&*cfg);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !running.ready() {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(h.stores.get("tsdb").is_some());
    running.stop();
}
