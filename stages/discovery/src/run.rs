//! The running discovery stage: one tokio task per file_sd / http_sd config
//! reporting its groups to an aggregator task, which emits the full
//! `TargetSet` at start and whenever it changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use panoptes_engine::port::Output;
use panoptes_engine::stage::{
    Message, RunningStage, StageConfig, StageContext, StageError, StageHealth,
};
use panoptes_model::{TargetGroup, TargetSet};
use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge, Opts, Registry};
use tokio::sync::{mpsc, watch};

use crate::config::DiscoveryConfig;

/// How long the first emission waits for slow providers (an http_sd
/// endpoint that hangs) before going out with what is known.
const INITIAL_WAIT: Duration = Duration::from_secs(5);

/// The groups of one provider (file_sd or http_sd config), replacing its
/// previous report.
pub(crate) struct Update {
    pub slot: usize,
    pub groups: Vec<TargetGroup>,
}

/// Self-metrics of a discovery stage.
pub(crate) struct Metrics {
    pub file_read_errors: IntCounter,
    pub files_broken: IntGauge,
    pub http_failures: IntCounter,
    pub targets: IntGauge,
    pub updates: IntCounter,
}

impl Metrics {
    fn new(stage: &str, registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("stage", stage);
        let m = Metrics {
            file_read_errors: IntCounter::with_opts(opts(
                "panoptes_discovery_file_read_errors_total",
                "file_sd files that could not be read or parsed (their last good targets were kept).",
            ))?,
            files_broken: IntGauge::with_opts(opts(
                "panoptes_discovery_sources_failing",
                "file_sd files and http_sd endpoints whose last read failed.",
            ))?,
            http_failures: IntCounter::with_opts(opts(
                "panoptes_discovery_http_failures_total",
                "http_sd refreshes that failed (their last good targets were kept).",
            ))?,
            targets: IntGauge::with_opts(opts(
                "panoptes_discovery_targets",
                "Targets in the last emitted target set.",
            ))?,
            updates: IntCounter::with_opts(opts(
                "panoptes_discovery_updates_total",
                "Target sets emitted because discovery changed.",
            ))?,
        };
        for c in [&m.file_read_errors, &m.http_failures, &m.updates] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&m.files_broken, &m.targets] {
            registry.register(Box::new(g.clone()))?;
        }
        Ok(m)
    }
}

/// State shared by the provider tasks and the running stage.
pub(crate) struct Shared {
    pub stage: String,
    pub metrics: Metrics,
    /// Current failures by source (file path or http_sd config), for health.
    errors: Mutex<BTreeMap<String, String>>,
}

impl Shared {
    /// Replaces the failures reported under `prefix` (one provider).
    pub fn replace_errors(&self, prefix: &str, failing: BTreeMap<String, String>) {
        let mut errors = self.errors.lock();
        errors.retain(|k, _| !k.starts_with(prefix));
        for (k, v) in failing {
            errors.insert(format!("{prefix}:{k}"), v);
        }
        self.metrics.files_broken.set(errors.len() as i64);
    }

    fn health(&self) -> StageHealth {
        let errors = self.errors.lock();
        if errors.is_empty() {
            StageHealth::healthy()
        } else {
            StageHealth::unhealthy(errors.values().cloned().collect::<Vec<_>>().join("; "))
        }
    }
}

/// A started discovery stage.
pub struct Discovery {
    shutdown: watch::Sender<bool>,
    done: std::sync::mpsc::Receiver<()>,
    tasks: usize,
    shared: Arc<Shared>,
}

impl RunningStage for Discovery {
    fn health(&self) -> StageHealth {
        self.shared.health()
    }

    fn stop(self: Box<Self>) {
        let _ = self.shutdown.send(true);
        for _ in 0..self.tasks {
            if self.done.recv_timeout(Duration::from_secs(10)).is_err() {
                tracing::warn!(stage = %self.shared.stage, "discovery: a task did not stop in time");
                break;
            }
        }
    }
}

/// Signals the running stage when a task ends, however it ends.
struct DoneGuard(std::sync::mpsc::Sender<()>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

pub(crate) fn start(
    cfg: &DiscoveryConfig,
    ctx: StageContext,
) -> Result<Box<dyn RunningStage>, StageError> {
    let metrics = Metrics::new(&ctx.id, &ctx.metrics)
        .map_err(|e| StageError::new(&ctx.id, format!("cannot register metrics: {e}")))?;
    let shared = Arc::new(Shared {
        stage: ctx.id.clone(),
        metrics,
        errors: Mutex::new(BTreeMap::new()),
    });
    let output = ctx.default_output().cloned();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (up_tx, up_rx) = mpsc::unbounded_channel();

    let mut clients = Vec::new();
    for h in &cfg.http_sd {
        let client = crate::http::build_client(h)
            .map_err(|e| StageError::new(&ctx.id, format!("http_sd {}: {e}", h.url)))?;
        clients.push(client);
    }

    // Slot 0 holds the static groups; then one slot per provider.
    let providers = cfg.file_sd.len() + cfg.http_sd.len();
    let mut tasks = 0;
    for (i, f) in cfg.file_sd.iter().enumerate() {
        let provider = crate::file::FileProvider::new(i, f.clone(), shared.clone());
        let guard = DoneGuard(done_tx.clone());
        let fut = crate::file::run(
            provider,
            1 + i,
            ctx.clock.clone(),
            up_tx.clone(),
            shutdown_rx.clone(),
        );
        ctx.runtime.spawn(async move {
            let _guard = guard;
            fut.await
        });
        tasks += 1;
    }
    for (i, (h, client)) in cfg.http_sd.iter().zip(clients).enumerate() {
        let guard = DoneGuard(done_tx.clone());
        let fut = crate::http::run(
            i,
            h.clone(),
            client,
            1 + cfg.file_sd.len() + i,
            shared.clone(),
            ctx.clock.clone(),
            up_tx.clone(),
            shutdown_rx.clone(),
        );
        ctx.runtime.spawn(async move {
            let _guard = guard;
            fut.await
        });
        tasks += 1;
    }
    drop(up_tx);

    let guard = DoneGuard(done_tx);
    let agg = aggregate(
        Arc::from(ctx.id.as_str()),
        cfg.static_groups.clone(),
        providers,
        up_rx,
        output,
        shared.clone(),
        shutdown_rx,
    );
    ctx.runtime.spawn(async move {
        let _guard = guard;
        agg.await
    });
    tasks += 1;

    Ok(Box::new(Discovery {
        shutdown: shutdown_tx,
        done: done_rx,
        tasks,
        shared,
    }))
}

async fn aggregate(
    provider: Arc<str>,
    static_groups: Vec<TargetGroup>,
    providers: usize,
    mut updates: mpsc::UnboundedReceiver<Update>,
    output: Option<Output>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut slots: Vec<Option<Vec<TargetGroup>>> = vec![None; providers + 1];
    slots[0] = Some(static_groups);
    let mut last: Option<TargetSet> = None;
    let initial_deadline = tokio::time::Instant::now() + INITIAL_WAIT;
    loop {
        let all_reported = slots.iter().all(Option::is_some);
        let update = if last.is_none() && !all_reported {
            tokio::select! {
                _ = shutdown.changed() => return,
                u = updates.recv() => u,
                _ = tokio::time::sleep_until(initial_deadline) => {
                    emit(&provider, &slots, &mut last, output.as_ref(), &shared).await;
                    continue;
                }
            }
        } else {
            if last.is_none() {
                emit(&provider, &slots, &mut last, output.as_ref(), &shared).await;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                u = updates.recv() => u,
            }
        };
        let Some(u) = update else {
            // No provider left to report (static groups only, or providers
            // ended): the set cannot change any more; keep the output open
            // until shutdown.
            let _ = shutdown.changed().await;
            return;
        };
        if let Some(s) = slots.get_mut(u.slot) {
            *s = Some(u.groups);
        }
        if last.is_some() {
            emit(&provider, &slots, &mut last, output.as_ref(), &shared).await;
        }
    }
}

/// Sends the full set if it differs from the last one sent (or nothing was
/// sent yet).
async fn emit(
    provider: &Arc<str>,
    slots: &[Option<Vec<TargetGroup>>],
    last: &mut Option<TargetSet>,
    output: Option<&Output>,
    shared: &Shared,
) {
    let set = TargetSet {
        provider: provider.clone(),
        groups: slots.iter().flatten().flatten().cloned().collect(),
    };
    if last.as_ref() == Some(&set) {
        return;
    }
    let targets: usize = set.groups.iter().map(|g| g.targets.len()).sum();
    shared.metrics.targets.set(targets as i64);
    shared.metrics.updates.inc();
    tracing::debug!(stage = %provider, groups = set.groups.len(), targets, "discovery: target set changed");
    *last = Some(set.clone());
    if let Some(out) = output {
        let _ = out.send_async(Message::Targets(Arc::new(set))).await;
    }
}

/// Keeps the `StageConfig` impl next to the start function it calls.
impl StageConfig for DiscoveryConfig {
    fn input(&self) -> Option<panoptes_engine::stage::MessageType> {
        None
    }

    fn outputs(&self) -> Vec<panoptes_engine::stage::PortSpec> {
        vec![panoptes_engine::stage::PortSpec::default_port(
            panoptes_engine::stage::MessageType::Targets,
        )]
    }

    fn start(&self, ctx: StageContext) -> Result<Box<dyn RunningStage>, StageError> {
        start(self, ctx)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
