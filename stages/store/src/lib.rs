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
        let db = match ctx.state.take::<StoreState>() {
            Some(st)
                if st.path == path
                    && st.db.options().block_duration_ms == self.options.block_duration_ms =>
            {
                st.db.set_options(self.options.clone());
                st.db
            }
            other => {
                // A different path (or block range): release the old one first.
                drop(other);
                Arc::new(Db::open(&path, self.options.clone()).map_err(|e| {
                    StageError::new(
                        &ctx.id,
                        format!("cannot open TSDB at {}: {e}", path.display()),
                    )
                })?)
            }
        };
        let metrics = StoreMetrics::register(&ctx.metrics)
            .map_err(|e| StageError::new(&ctx.id, format!("metrics: {e}")))?;
        metrics.refresh(&db.stats());
        ctx.stores
            .register(&ctx.id, db.clone() as Arc<dyn SeriesSelect>);

        let health = Arc::new(Mutex::new(StageHealth::healthy()));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(2);
        let metrics = Arc::new(metrics);

        let ingest = match ctx.input {
            Some(input) => {
                let w = Ingest {
                    id: ctx.id.clone(),
                    db: db.clone(),
                    health: health.clone(),
                    metrics: metrics.clone(),
                };
                let stop = stop_rx.clone();
                Some(
                    std::thread::Builder::new()
                        .name(format!("store:{}", ctx.id))
                        .spawn(move || w.run(input.rx, stop))
                        .map_err(|e| StageError::new(&ctx.id, e))?,
                )
            }
            None => None,
        };
        let m = Maintenance {
            id: ctx.id.clone(),
            db: db.clone(),
            metrics: metrics.clone(),
            interval: self.maintenance_interval,
            health: health.clone(),
        };
        let stop = stop_rx;
        let maintenance = std::thread::Builder::new()
            .name(format!("store-maint:{}", ctx.id))
            .spawn(move || m.run(stop))
            .map_err(|e| StageError::new(&ctx.id, e))?;

        Ok(Box::new(RunningStore {
            id: ctx.id,
            path,
            db,
            stop: stop_tx,
            threads: vec![ingest, Some(maintenance)]
                .into_iter()
                .flatten()
                .collect(),
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

/// The ingest loop: one thread blocking on the input channel.
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
    db: Arc<Db>,
    stop: Sender<()>,
    threads: Vec<JoinHandle<()>>,
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
        let old = self.db.options();
        let same_layout = new.resolved_path(&self.data_dir, &self.id) == self.path
            && new.options.block_duration_ms == old.block_duration_ms;
        if !same_layout {
            return Reconfigure::Rebuild;
        }
        // The maintenance interval lives in a thread's ticker; a change there
        // is applied on the next rebuild only.
        self.db.set_options(Options {
            wal_segment_size: old.wal_segment_size,
            ..new.options.clone()
        });
        tracing::info!(stage = %self.id, "store options applied in place");
        Reconfigure::Applied
    }

    fn health(&self) -> StageHealth {
        self.health.lock().clone()
    }

    fn stop(self: Box<Self>) {
        for _ in 0..self.threads.len() {
            let _ = self.stop.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
        if let Err(e) = self.db.sync() {
            tracing::error!(stage = %self.id, error = %e, "WAL fsync on stop failed");
        }
        self.stores.unregister(&self.id);
        self.state.put(StoreState {
            path: self.path,
            db: self.db,
        });
    }
}

#[cfg(test)]
mod tests;
