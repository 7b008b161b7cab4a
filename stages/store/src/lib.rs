//! The `store` stage kind: the built-in time-series database as a pipeline
//! stage. It appends every `Samples` batch it receives to a Panoptes TSDB
//! (WAL first, so an acknowledged batch survives a crash), registers the
//! database in the store registry for rule stages and the query API, keeps
//! it tidy (block cuts, compaction, retention) on a maintenance thread, and
//! reports its self-metrics. The open database survives reloads whenever
//! `path` is unchanged.

pub mod config;
mod metrics;

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, tick, Receiver, Sender};
use parking_lot::Mutex;
use serde_json::Value;

use panoptes_engine::stage::{
    CompileContext, ConfigIssue, Message, MessageType, PortSpec, Reconfigure, RunningStage,
    StageConfig, StageContext, StageError, StageHealth, StageKind, StateSlot, StoreRegistry,
};
use panoptes_model::SeriesSelect;
use panoptes_tsdb::{Db, Options};

pub use config::StoreConfig;
use metrics::StoreMetrics;

/// The `store` stage kind.
pub struct StoreKind;

impl StageKind for StoreKind {
    fn name(&self) -> &'static str {
        "store"
    }

    fn description(&self) -> &'static str {
        "Sink: the built-in TSDB (WAL, compressed head, blocks, compaction, retention); queryable by rule stages and the query API."
    }

    fn config_schema(&self) -> Value {
        config::schema()
    }

    fn compile(
        &self,
        ctx: &CompileContext,
        section: &Value,
    ) -> Result<Box<dyn StageConfig>, Vec<ConfigIssue>> {
        Ok(Box::new(config::compile(ctx, section)?))
    }
}

/// What a stopped store leaves in its state slot so that a rebuilt instance
/// with the same path keeps the open database instead of replaying the WAL.
struct StoreState {
    path: PathBuf,
    db: Arc<Db>,
}

impl StoreConfig {
    fn resolved_path(&self, ctx_data_dir: &std::path::Path, id: &str) -> PathBuf {
        self.path.clone().unwrap_or_else(|| ctx_data_dir.join(id))
    }
}

impl StageConfig for StoreConfig {
    fn input(&self) -> Option<MessageType> {
        Some(MessageType::Samples)
    }

    fn outputs(&self) -> Vec<PortSpec> {
        Vec::new()
    }

    fn provides_store(&self) -> bool {
        true
    }

    fn start(&self, ctx: StageContext) -> Result<Box<dyn RunningStage>, StageError> {
        let path = self.resolved_path(&ctx.data_dir, &ctx.id);
        // A rebuilt stage with the same path takes the open database over;
        // otherwise it is opened (WAL replay can take seconds) on the
        // stage's thread, so that start returns promptly.
        let preopened = match ctx.state.take::<StoreState>() {
            Some(st)
                if st.path == path
                    && st.db.options().block_duration_ms == self.options.block_duration_ms =>
            {
                st.db.set_options(self.options.clone());
                Some(st.db)
            }
            other => {
                // A different path (or block range): release the old one.
                drop(other);
                std::fs::create_dir_all(&path).map_err(|e| {
                    StageError::new(
                        &ctx.id,
                        format!("cannot create TSDB directory {}: {e}", path.display()),
                    )
                })?;
                None
            }
        };
        let metrics = Arc::new(
            StoreMetrics::register(&ctx.metrics)
                .map_err(|e| StageError::new(&ctx.id, format!("metrics: {e}")))?,
        );
        let health = Arc::new(Mutex::new(StageHealth {
            ok: true,
            detail: "opening the TSDB (replaying the WAL)".into(),
        }));
        let slot: DbSlot = Arc::new(Mutex::new(Slot::default()));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let worker = Worker {
            id: ctx.id.clone(),
            path: path.clone(),
            options: self.options.clone(),
            maintenance_interval: self.maintenance_interval,
            preopened,
            slot: slot.clone(),
            stores: ctx.stores.clone(),
            health: health.clone(),
            metrics,
        };
        let input = ctx.input.map(|i| i.rx);
        let thread = std::thread::Builder::new()
            .name(format!("store:{}", ctx.id))
            .spawn(move || worker.run(input, stop_rx))
            .map_err(|e| StageError::new(&ctx.id, e))?;
        Ok(Box::new(RunningStore {
            id: ctx.id,
            path,
            options: self.options.clone(),
            slot,
            stop: stop_tx,
            thread: Some(thread),
            health,
            state: ctx.state,
            stores: ctx.stores,
            data_dir: ctx.data_dir,
        }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The database once open (empty while the WAL is being replayed), and
/// options that a reconfiguration made while it was still opening.
#[derive(Default)]
struct Slot {
    db: Option<Arc<Db>>,
    pending: Option<Options>,
}

type DbSlot = Arc<Mutex<Slot>>;

/// The stage's thread: opens the database (unless handed one), registers
/// it, runs the maintenance thread, and appends every batch it receives.
struct Worker {
    id: String,
    path: PathBuf,
    options: Options,
    maintenance_interval: Duration,
    preopened: Option<Arc<Db>>,
    slot: DbSlot,
    stores: StoreRegistry,
    health: Arc<Mutex<StageHealth>>,
    metrics: Arc<StoreMetrics>,
}

impl Worker {
    fn run(mut self, input: Option<Receiver<Message>>, stop: Receiver<()>) {
        let Some(db) = self.open(&stop) else { return };
        {
            let mut slot = self.slot.lock();
            if let Some(o) = slot.pending.take() {
                db.set_options(o);
            }
            slot.db = Some(db.clone());
        }
        self.metrics.refresh(&db.stats());
        self.stores
            .register(&self.id, db.clone() as Arc<dyn SeriesSelect>);
        *self.health.lock() = StageHealth::healthy();

        let (m_stop_tx, m_stop_rx) = crossbeam_channel::bounded::<()>(1);
        let m = Maintenance {
            id: self.id.clone(),
            db: db.clone(),
            metrics: self.metrics.clone(),
            interval: self.maintenance_interval,
            health: self.health.clone(),
        };
        let maintenance = std::thread::Builder::new()
            .name(format!("store-maint:{}", self.id))
            .spawn(move || m.run(m_stop_rx));
        if let Err(e) = &maintenance {
            tracing::error!(stage = %self.id, error = %e, "cannot start the maintenance thread");
        }
        let ingest = Ingest {
            id: self.id.clone(),
            db: db.clone(),
            health: self.health.clone(),
            metrics: self.metrics.clone(),
        };
        match input {
            Some(rx) => ingest.run(rx, stop),
            None => {
                let _ = stop.recv();
            }
        }
        let _ = m_stop_tx.send(());
        if let Ok(t) = maintenance {
            let _ = t.join();
        }
    }

    /// Opens the database, retrying while it fails (a full or read-only
    /// disk, say) until it works or the stage is stopped. Batches wait in
    /// the input channel meanwhile.
    fn open(&mut self, stop: &Receiver<()>) -> Option<Arc<Db>> {
        if let Some(db) = self.preopened.take() {
            return Some(db);
        }
        loop {
            match Db::open(&self.path, self.options.clone()) {
                Ok(db) => return Some(Arc::new(db)),
                Err(e) => {
                    tracing::error!(stage = %self.id, path = %self.path.display(), error = %e, "cannot open the TSDB; retrying in 5s");
                    *self.health.lock() = StageHealth::unhealthy(format!(
                        "cannot open TSDB at {}: {e}",
                        self.path.display()
                    ));
                }
            }
            if stop.recv_timeout(Duration::from_secs(5)).is_ok() {
                return None;
            }
        }
    }
}

/// The ingest loop: blocks on the input channel.
struct Ingest {
    id: String,
    db: Arc<Db>,
    health: Arc<Mutex<StageHealth>>,
    metrics: Arc<StoreMetrics>,
}

impl Ingest {
    fn run(self, input: Receiver<Message>, stop: Receiver<()>) {
        // The fsync interval policy needs a clock tick even when idle.
        let ticker = tick(Duration::from_millis(500));
        loop {
            select! {
                recv(input) -> msg => match msg {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                },
                recv(ticker) -> _ => {
                    if let Err(e) = self.db.sync_if_due() {
                        tracing::error!(stage = %self.id, error = %e, "WAL fsync failed");
                        *self.health.lock() = StageHealth::unhealthy(format!("WAL fsync failed: {e}"));
                    }
                    self.metrics.refresh_counters(&self.db);
                }
                recv(stop) -> _ => {
                    // Store what upstream already sent before stopping.
                    while let Ok(m) = input.try_recv() {
                        self.handle(m);
                    }
                    break;
                }
            }
        }
        if let Err(e) = self.db.sync() {
            tracing::error!(stage = %self.id, error = %e, "WAL fsync on stop failed");
        }
        self.metrics.refresh_counters(&self.db);
    }

    fn handle(&self, msg: Message) {
        let Message::Samples(batch) = msg else { return };
        match self.db.append(&batch) {
            Ok(out) => {
                if !out.rejected.is_empty() {
                    tracing::debug!(stage = %self.id, source = %batch.source, rejected = ?out.rejected, "samples refused");
                }
                let mut h = self.health.lock();
                if !h.ok {
                    *h = StageHealth::healthy();
                }
            }
            Err(e) => {
                tracing::error!(stage = %self.id, source = %batch.source, samples = batch.samples.len(), error = %e, "append failed; batch dropped");
                *self.health.lock() = StageHealth::unhealthy(format!("last append failed: {e}"));
            }
        }
    }
}

/// Periodic block cutting, compaction, retention and metric refresh.
struct Maintenance {
    id: String,
    db: Arc<Db>,
    metrics: Arc<StoreMetrics>,
    interval: Duration,
    health: Arc<Mutex<StageHealth>>,
}

impl Maintenance {
    fn run(self, stop: Receiver<()>) {
        let work = tick(self.interval);
        let gauges = tick(Duration::from_secs(5));
        loop {
            select! {
                recv(work) -> _ => {
                    if let Err(e) = self.db.maintain() {
                        tracing::error!(stage = %self.id, error = %e, "TSDB maintenance failed");
                        *self.health.lock() = StageHealth::unhealthy(format!("maintenance failed: {e}"));
                    }
                    self.metrics.refresh(&self.db.stats());
                }
                recv(gauges) -> _ => self.metrics.refresh(&self.db.stats()),
                recv(stop) -> _ => break,
            }
        }
    }
}

/// A running store.
struct RunningStore {
    id: String,
    path: PathBuf,
    /// The options in force (or pending until the database is open).
    options: Options,
    slot: DbSlot,
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
    health: Arc<Mutex<StageHealth>>,
    state: StateSlot,
    stores: StoreRegistry,
    data_dir: PathBuf,
}

impl RunningStage for RunningStore {
    fn reconfigure(&mut self, new: &dyn StageConfig) -> Reconfigure {
        let Some(new) = new.as_any().downcast_ref::<StoreConfig>() else {
            return Reconfigure::Rebuild;
        };
        let same_layout = new.resolved_path(&self.data_dir, &self.id) == self.path
            && new.options.block_duration_ms == self.options.block_duration_ms;
        if !same_layout {
            return Reconfigure::Rebuild;
        }
        // The maintenance interval lives in a thread's ticker, and the
        // segment size in the open WAL: those apply on the next rebuild.
        let options = Options {
            wal_segment_size: self.options.wal_segment_size,
            ..new.options.clone()
        };
        let mut slot = self.slot.lock();
        match &slot.db {
            Some(db) => db.set_options(options.clone()),
            // Still replaying the WAL: applied as soon as it is open.
            None => slot.pending = Some(options.clone()),
        }
        drop(slot);
        self.options = options;
        tracing::info!(stage = %self.id, "store options applied in place");
        Reconfigure::Applied
    }

    fn health(&self) -> StageHealth {
        self.health.lock().clone()
    }

    /// Ready once the database is open and registered for queries.
    fn ready(&self) -> bool {
        self.stores.get(&self.id).is_some()
    }

    fn stop(mut self: Box<Self>) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stores.unregister(&self.id);
        let db = self.slot.lock().db.take();
        if let Some(db) = db {
            if let Err(e) = db.sync() {
                tracing::error!(stage = %self.id, error = %e, "WAL fsync on stop failed");
            }
            self.state.put(StoreState {
                path: self.path.clone(),
                db,
            });
        }
    }
}

#[cfg(test)]
mod tests;
