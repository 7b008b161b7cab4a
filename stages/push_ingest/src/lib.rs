//! A Pushgateway-compatible push receiver stage (`kind: push_ingest`).
//!
//! Batch jobs push to its own listener exactly as to a Pushgateway 1.5
//! (`PUT`/`POST`/`DELETE /metrics/job/<job>{/<label>/<value>}`, text or
//! delimited protobuf bodies, gzip, `@base64` grouping keys); it serves the
//! Pushgateway's `/metrics` and JSON API, persists its groups, and emits the
//! current content of all groups as one `Samples` batch every `interval`
//! with the grouping labels honoured, so pushed values flow through the
//! pipeline as when Prometheus scrapes a Pushgateway with `honor_labels`.
//! Beyond the Pushgateway: `expire_after` and size limits.

pub mod config;
pub mod grouping;
pub mod metrics;
pub mod proto;
pub mod render;
pub mod server;
pub mod staleness;
pub mod store;
pub mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use panoptes_engine::stage::{
    CompileContext, ConfigIssue, Message, MessageType, PortSpec, Reconfigure, RunningStage,
    StageConfig, StageContext, StageError, StageHealth, StageKind, StateSlot,
};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use tokio::sync::watch;

pub use config::{PushIngestConfig, Settings};
pub use store::Store;

use crate::metrics::StageMetrics;
use crate::proto::PersistedStore;

/// The `push_ingest` stage kind.
pub struct PushIngestKind;

impl StageKind for PushIngestKind {
    fn name(&self) -> &'static str {
        "push_ingest"
    }

    fn description(&self) -> &'static str {
        "A Pushgateway-compatible push receiver on its own listener; emits all held groups as Samples every interval"
    }

    fn config_schema(&self) -> serde_json::Value {
        config::schema()
    }

    fn compile(
        &self,
        ctx: &CompileContext,
        section: &serde_json::Value,
    ) -> Result<Box<dyn StageConfig>, Vec<ConfigIssue>> {
        config::compile(ctx, section).map(|c| Box::new(c) as Box<dyn StageConfig>)
    }
}

impl StageConfig for PushIngestConfig {
    fn input(&self) -> Option<MessageType> {
        None
    }

    fn outputs(&self) -> Vec<PortSpec> {
        vec![PortSpec::default_port(MessageType::Samples)]
    }

    fn start(&self, ctx: StageContext) -> Result<Box<dyn RunningStage>, StageError> {
        PushIngest::start(self, ctx).map(|s| Box::new(s) as Box<dyn RunningStage>)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The store handed from one instance of a stage to the next across a
/// rebuild on reload.
struct CarriedStore(Arc<Store>);

/// Why the persistence file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a push_ingest persistence file: {source}")]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads a persistence file; a missing file is an empty store.
pub fn load_persisted(path: &Path) -> Result<Option<PersistedStore>, PersistError> {
    match std::fs::read(path) {
        Ok(bytes) => PersistedStore::decode(bytes.as_slice())
            .map(Some)
            .map_err(|source| PersistError::Decode {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes the store atomically: a temporary file in the same directory,
/// synced, then renamed over the target.
pub fn write_persisted(path: &Path, store: &Store) -> Result<(), PersistError> {
    use std::io::Write;
    let err = |source| PersistError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = store.to_persisted().encode_to_vec();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "push_ingest".into());
    let tmp = path.with_file_name(format!(".{file_name}.in_progress.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// A running push_ingest stage.
pub struct PushIngest {
    id: String,
    config: PushIngestConfig,
    store: Arc<Store>,
    settings: Arc<RwLock<Settings>>,
    settings_changed: Arc<tokio::sync::Notify>,
    shutdown: watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
    tasks: usize,
    state: StateSlot,
    metrics: StageMetrics,
    last_persist_error: Arc<Mutex<Option<String>>>,
    /// The address actually bound (differs from the config for port 0).
    pub local_addr: std::net::SocketAddr,
}

/// Signals the running stage when a task ends, however it ends.
struct DoneGuard(std::sync::mpsc::Sender<()>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

fn flags(cfg: &PushIngestConfig) -> serde_json::Value {
    let s = &cfg.settings;
    let d = |d: Duration| panoptes_model::PromDuration(d).to_string();
    serde_json::json!({
        "listen": cfg.listen.to_string(),
        "interval": d(s.interval),
        "persistence_file": cfg.persistence_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "persistence_interval": d(s.persistence_interval),
        "expire_after": s.expire_after.map(d).unwrap_or_default(),
        "max_group_series": s.limits.max_group_series.to_string(),
        "max_total_series": s.limits.max_total_series.to_string(),
        "max_push_bytes": s.max_push_bytes.to_string(),
        "enable_admin_api": s.enable_admin_api.to_string(),
    })
}

impl PushIngest {
    /// Starts the stage (what [`StageConfig::start`] does), returning the
    /// concrete type so embedders and tests can read [`PushIngest::local_addr`].
    pub fn start(cfg: &PushIngestConfig, ctx: StageContext) -> Result<PushIngest, StageError> {
        let id = ctx.id.clone();
        let metrics = StageMetrics::new(&id, &ctx.metrics)
            .map_err(|e| StageError::new(&id, format!("cannot register metrics: {e}")))?;
        let store = match ctx.state.take::<CarriedStore>() {
            Some(CarriedStore(s)) => {
                s.set_limits(cfg.settings.limits);
                s
            }
            None => {
                let s = Arc::new(Store::new(cfg.settings.limits));
                if let Some(path) = &cfg.persistence_file {
                    match load_persisted(path) {
                        Ok(Some(p)) => {
                            s.restore(p);
                            let (g, n) = s.size();
                            tracing::info!(stage = %id, file = %path.display(), groups = g, series = n, "push_ingest: restored persisted groups");
                        }
                        Ok(None) => {}
                        // As the Pushgateway: start empty rather than not at all.
                        Err(e) => {
                            tracing::error!(stage = %id, error = %e, "push_ingest: could not load persisted groups")
                        }
                    }
                }
                s
            }
        };
        metrics.update_size(&store);

        let listener = std::net::TcpListener::bind(cfg.listen)
            .map_err(|e| StageError::new(&id, format!("cannot listen on {}: {e}", cfg.listen)))?;
        let local_addr = listener.local_addr().map_err(|e| StageError::new(&id, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| StageError::new(&id, e))?;
        let listener = {
            let _guard = ctx.runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|e| StageError::new(&id, e))?
        };

        let settings = Arc::new(RwLock::new(cfg.settings.clone()));
        // Wakes the timed tasks when a reconfigure changes their periods.
        let settings_changed = Arc::new(tokio::sync::Notify::new());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let mut tasks = 0;

        let api = Arc::new(server::ApiState {
            stage: id.clone(),
            store: store.clone(),
            settings: settings.clone(),
            clock: ctx.clock.clone(),
            metrics: metrics.clone(),
            start_time_ms: ctx.clock.now_ms(),
            flags: flags(cfg),
        });
        let app = server::router(api, cfg.settings.max_push_bytes);
        {
            let guard = DoneGuard(done_tx.clone());
            let mut rx = shutdown_rx.clone();
            let stage = id.clone();
            ctx.runtime.spawn(async move {
                let _guard = guard;
                let shutdown = async move {
                    let _ = rx.changed().await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(stage = %stage, error = %e, "push_ingest: listener failed");
                }
            });
            tasks += 1;
        }

        if let Some(output) = ctx.default_output().cloned() {
            let guard = DoneGuard(done_tx.clone());
            let mut rx = shutdown_rx.clone();
            let (store, settings, clock, metrics, id) = (
                store.clone(),
                settings.clone(),
                ctx.clock.clone(),
                metrics.clone(),
                id.clone(),
            );
            let settings_changed = settings_changed.clone();
            ctx.runtime.spawn(async move {
                let _guard = guard;
                let mut staleness = Some(crate::staleness::Staleness::default());
                loop {
                    let changed = settings_changed.notified();
                    let interval = settings.read().interval;
                    let deadline = clock.now_ms() + interval.as_millis() as i64;
                    tokio::select! {
                        _ = rx.changed() => return,
                        _ = clock.sleep_until(deadline) => {}
                        _ = changed => continue,
                    }
                    let now = clock.now_ms();
                    let (s, source) = (store.clone(), id.clone());
                    let mut st = staleness.take().unwrap_or_default();
                    let Ok((batch, st)) = tokio::task::spawn_blocking(move || {
                        let mut batch = s.batch(&source, now);
                        st.apply(&mut batch, now);
                        (batch, st)
                    })
                    .await
                    else {
                        continue;
                    };
                    staleness = Some(st);
                    if batch.is_empty() {
                        continue;
                    }
                    metrics.emitted_batches.inc();
                    if output
                        .send_async(Message::Samples(Arc::new(batch)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            tasks += 1;
        }

        let last_persist_error = Arc::new(Mutex::new(None));
        if let Some(path) = cfg.persistence_file.clone() {
            let guard = DoneGuard(done_tx.clone());
            let mut rx = shutdown_rx.clone();
            let (store, settings, clock, metrics, id, last_err) = (
                store.clone(),
                settings.clone(),
                ctx.clock.clone(),
                metrics.clone(),
                id.clone(),
                last_persist_error.clone(),
            );
            let settings_changed = settings_changed.clone();
            ctx.runtime.spawn(async move {
                let _guard = guard;
                let mut persisted = store.generation();
                loop {
                    let changed = settings_changed.notified();
                    let every = settings.read().persistence_interval;
                    let deadline = clock.now_ms() + every.as_millis() as i64;
                    tokio::select! {
                        _ = rx.changed() => return,
                        _ = clock.sleep_until(deadline) => {}
                        _ = changed => continue,
                    }
                    let generation = store.generation();
                    if generation == persisted {
                        continue;
                    }
                    let (s, p) = (store.clone(), path.clone());
                    let result = tokio::task::spawn_blocking(move || write_persisted(&p, &s)).await;
                    match result {
                        Ok(Ok(())) => {
                            persisted = generation;
                            *last_err.lock() = None;
                        }
                        Ok(Err(e)) => {
                            metrics.persist_errors.inc();
                            tracing::error!(stage = %id, error = %e, "push_ingest: error persisting groups");
                            *last_err.lock() = Some(e.to_string());
                        }
                        Err(_) => {}
                    }
                }
            });
            tasks += 1;
        }

        {
            let guard = DoneGuard(done_tx);
            let mut rx = shutdown_rx;
            let (store, settings, clock, metrics, id) = (
                store.clone(),
                settings.clone(),
                ctx.clock.clone(),
                metrics.clone(),
                id.clone(),
            );
            let settings_changed = settings_changed.clone();
            ctx.runtime.spawn(async move {
                let _guard = guard;
                loop {
                    let changed = settings_changed.notified();
                    let expire_after = settings.read().expire_after;
                    // Check often enough to drop a group within ~10% of
                    // its deadline.
                    let every = expire_after
                        .map(|d| (d / 10).clamp(Duration::from_millis(100), Duration::from_secs(60)))
                        .unwrap_or(Duration::from_secs(10));
                    let deadline = clock.now_ms() + every.as_millis() as i64;
                    tokio::select! {
                        _ = rx.changed() => return,
                        _ = clock.sleep_until(deadline) => {}
                        _ = changed => continue,
                    }
                    let Some(after) = settings.read().expire_after else {
                        continue;
                    };
                    let gone = store.expire(clock.now_ms() - after.as_millis() as i64);
                    if !gone.is_empty() {
                        metrics.expired.inc_by(gone.len() as u64);
                        metrics.update_size(&store);
                        for k in &gone {
                            tracing::info!(stage = %id, group = ?k.0, expire_after = %panoptes_model::PromDuration(after), "push_ingest: group expired");
                        }
                    }
                }
            });
            tasks += 1;
        }

        tracing::info!(stage = %id, listen = %local_addr, "push_ingest: listening");
        Ok(PushIngest {
            id,
            config: cfg.clone(),
            store,
            settings,
            settings_changed,
            shutdown: shutdown_tx,
            done: done_rx,
            tasks,
            state: ctx.state,
            metrics,
            last_persist_error,
            local_addr,
        })
    }

    /// The store (for tests and embedding).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

impl RunningStage for PushIngest {
    fn reconfigure(&mut self, new: &dyn StageConfig) -> Reconfigure {
        let Some(new) = new.as_any().downcast_ref::<PushIngestConfig>() else {
            return Reconfigure::Rebuild;
        };
        // The listener, the persistence file and the router's body limit
        // are fixed at start.
        if new.listen != self.config.listen
            || new.persistence_file != self.config.persistence_file
            || new.settings.max_push_bytes != self.config.settings.max_push_bytes
        {
            return Reconfigure::Rebuild;
        }
        self.store.set_limits(new.settings.limits);
        *self.settings.write() = new.settings.clone();
        self.settings_changed.notify_waiters();
        self.config = new.clone();
        Reconfigure::Applied
    }

    fn health(&self) -> StageHealth {
        match self.last_persist_error.lock().as_ref() {
            Some(e) => StageHealth::unhealthy(format!("persisting failed: {e}")),
            None => StageHealth::healthy(),
        }
    }

    fn stop(self: Box<Self>) {
        let _ = self.shutdown.send(true);
        for _ in 0..self.tasks {
            if self.done.recv_timeout(Duration::from_secs(10)).is_err() {
                tracing::warn!(stage = %self.id, "push_ingest: a task did not stop in time");
                break;
            }
        }
        if let Some(path) = &self.config.persistence_file {
            if let Err(e) = write_persisted(path, &self.store) {
                self.metrics.persist_errors.inc();
                tracing::error!(stage = %self.id, error = %e, "push_ingest: error persisting groups on shutdown");
            }
        }
        self.state.put(CarriedStore(self.store.clone()));
    }
}
