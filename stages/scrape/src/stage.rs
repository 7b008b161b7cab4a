//! The `scrape` stage kind and its running form: a manager thread that
//! keeps the latest target set of each discovery provider, turns them into
//! targets, and starts/stops one scrape loop (a tokio task) per target.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{select, Receiver, Sender};
use panoptes_engine::port::Output;
use panoptes_engine::stage::{
    CompileContext, ConfigIssue, Message, MessageType, PortSpec, Reconfigure, RunningStage,
    StageConfig, StageContext, StageError, StageKind, TargetsRegistry, TargetsView,
};
use panoptes_model::{TargetGroup, TargetHealth, TargetStatus};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;

use crate::cache::AppendSettings;
use crate::config::{self, ScrapeConfig};
use crate::http::Fetcher;
use crate::metrics::ScrapeMetrics;
use crate::scrape_loop::{self, LoopEnv, LoopSpec, LoopState};
use crate::target::{populate_groups, Populated, Target};
use crate::view::ScrapeView;

/// How long stopping waits for scrape loops before aborting them.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The `scrape` stage kind.
pub struct ScrapeKind;

impl StageKind for ScrapeKind {
    fn name(&self) -> &'static str {
        "scrape"
    }

    fn description(&self) -> &'static str {
        "Scrapes the targets on its input (Targets) as Prometheus does and emits one Samples batch per scrape"
    }

    fn config_schema(&self) -> Value {
        config::schema()
    }

    fn compile(
        &self,
        ctx: &CompileContext,
        section: &Value,
    ) -> Result<Box<dyn StageConfig>, Vec<ConfigIssue>> {
        config::compile(ctx, section).map(|c| Box::new(c) as Box<dyn StageConfig>)
    }
}

impl StageConfig for ScrapeConfig {
    fn input(&self) -> Option<MessageType> {
        Some(MessageType::Targets)
    }

    fn outputs(&self) -> Vec<PortSpec> {
        vec![PortSpec::default_port(MessageType::Samples)]
    }

    /// The TLS files are read when the client is built: editing one must
    /// count as a change on reload. (Password and credentials files are
    /// read at every scrape and need no reload.)
    fn fingerprint_extra(&self) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for path in [&self.tls.ca_file, &self.tls.cert_file, &self.tls.key_file]
            .into_iter()
            .flatten()
        {
            h.update(path.as_os_str().as_encoded_bytes());
            match std::fs::read(path) {
                Ok(content) => h.update(&content),
                Err(e) => h.update(e.to_string().as_bytes()),
            }
        }
        format!("{:032x}", h.digest128())
    }

    fn start(&self, ctx: StageContext) -> Result<Box<dyn RunningStage>, StageError> {
        let input = ctx.input.as_ref().map(|i| i.rx.clone()).ok_or_else(|| {
            StageError::new(&ctx.id, "the scrape stage needs an input of targets")
        })?;
        let fetcher = Fetcher::new(self).map_err(|e| StageError::new(&ctx.id, e))?;
        let output = ctx
            .outputs
            .get("")
            .cloned()
            .unwrap_or_else(|| Output::new(&ctx.id, "", MessageType::Samples));
        let metrics = Arc::new(ScrapeMetrics::register(&ctx.metrics, &ctx.id));
        let view = Arc::new(ScrapeView::default());
        ctx.targets.register(&ctx.id, view.clone());
        let env = Arc::new(LoopEnv {
            stage: Arc::from(ctx.id.as_str()),
            output,
            clock: ctx.clock.clone(),
            metrics,
        });
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let mut manager = Manager {
            id: ctx.id.clone(),
            cfg: Arc::new(self.clone()),
            fetcher: Arc::new(fetcher),
            providers: BTreeMap::new(),
            loops: HashMap::new(),
            stopping: Vec::new(),
            env,
            view: view.clone(),
            runtime: ctx.runtime.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("scrape:{}", ctx.id))
            .spawn(move || manager.run(input, ctl_rx))
            .map_err(|e| {
                StageError::new(&ctx.id, format!("cannot spawn the scrape manager: {e}"))
            })?;
        Ok(Box::new(RunningScrape {
            id: ctx.id.clone(),
            ctl: ctl_tx,
            handle: Some(handle),
            view,
            registry: ctx.targets.clone(),
        }))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Settings whose change restarts every loop (anything but target
/// relabeling, which only changes which targets exist).
fn loop_fingerprint(cfg: &ScrapeConfig) -> String {
    let mut v = cfg.source.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("relabel_configs");
    }
    // The TLS files too: loops hold the client built from them.
    format!(
        "{v}|{:?}|{:?}|{}",
        cfg.scrape_interval,
        cfg.scrape_timeout,
        cfg.fingerprint_extra()
    )
}

enum Control {
    NewConfig(Arc<ScrapeConfig>, Arc<Fetcher>),
    Stop,
}

struct RunningScrape {
    id: String,
    ctl: Sender<Control>,
    handle: Option<JoinHandle<()>>,
    view: Arc<ScrapeView>,
    registry: TargetsRegistry,
}

impl RunningStage for RunningScrape {
    fn reconfigure(&mut self, new: &dyn StageConfig) -> Reconfigure {
        let Some(cfg) = new.as_any().downcast_ref::<ScrapeConfig>() else {
            return Reconfigure::Rebuild;
        };
        let Ok(fetcher) = Fetcher::new(cfg) else {
            // Let a rebuild report the error through start().
            return Reconfigure::Rebuild;
        };
        match self
            .ctl
            .send(Control::NewConfig(Arc::new(cfg.clone()), Arc::new(fetcher)))
        {
            Ok(()) => Reconfigure::Applied,
            Err(_) => Reconfigure::Rebuild,
        }
    }

    fn health(&self) -> panoptes_engine::stage::StageHealth {
        let targets = self.view.targets();
        let down = targets
            .iter()
            .filter(|t| t.health == TargetHealth::Down)
            .count();
        // Down targets are the targets' problem, not the stage's: the stage
        // stays healthy and says how many are down.
        panoptes_engine::stage::StageHealth {
            ok: true,
            detail: if down == 0 {
                String::new()
            } else {
                format!("{down} of {} targets down", targets.len())
            },
        }
    }

    fn stop(mut self: Box<Self>) {
        let _ = self.ctl.send(Control::Stop);
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!(stage = %self.id, "scrape manager thread panicked");
            }
        }
        // Only remove our own view: a newer instance may have registered.
        let ours = Arc::as_ptr(&self.view) as *const ();
        let registered = self
            .registry
            .all()
            .into_iter()
            .any(|(id, v)| id == self.id && Arc::as_ptr(&v) as *const () == ours);
        if registered {
            self.registry.unregister(&self.id);
        }
    }
}

struct LoopHandle {
    state: watch::Sender<LoopState>,
    join: tokio::task::JoinHandle<()>,
}

struct Manager {
    id: String,
    cfg: Arc<ScrapeConfig>,
    fetcher: Arc<Fetcher>,
    /// The latest target groups of each provider.
    providers: BTreeMap<Arc<str>, Vec<TargetGroup>>,
    loops: HashMap<u64, LoopHandle>,
    /// Loops asked to end, awaited on stop.
    stopping: Vec<tokio::task::JoinHandle<()>>,
    env: Arc<LoopEnv>,
    view: Arc<ScrapeView>,
    runtime: tokio::runtime::Handle,
}

/// Identifies a loop: the target and its timing.
fn loop_key(t: &Target) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&t.hash().to_le_bytes());
    h.update(&(t.interval.as_millis() as u64).to_le_bytes());
    h.update(&(t.timeout.as_millis() as u64).to_le_bytes());
    h.digest()
}

impl Manager {
    fn run(&mut self, input: Receiver<Message>, ctl: Receiver<Control>) {
        let mut input_open = true;
        loop {
            let c = if input_open {
                select! {
                    recv(ctl) -> c => c.ok(),
                    recv(input) -> m => {
                        match m {
                            Ok(m) => self.handle(m),
                            Err(_) => input_open = false,
                        }
                        continue;
                    }
                }
            } else {
                ctl.recv().ok()
            };
            match c {
                Some(Control::NewConfig(cfg, fetcher)) => {
                    let restart = loop_fingerprint(&cfg) != loop_fingerprint(&self.cfg);
                    self.cfg = cfg;
                    self.fetcher = fetcher;
                    self.sync(restart);
                    tracing::info!(stage = %self.id, restart, "scrape config applied in place");
                }
                Some(Control::Stop) | None => break,
            }
        }
        // Take the newest target sets already queued, then stop everything.
        while let Ok(m) = input.try_recv() {
            if let Message::Targets(t) = m {
                self.providers.insert(t.provider.clone(), t.groups.clone());
            }
        }
        for (key, h) in self.loops.drain() {
            let _ = h.state.send(LoopState::Stop);
            self.view.remove(key);
            self.stopping.push(h.join);
        }
        self.env.metrics.targets.set(0);
        // Loops stop at their next await point; one blocked on a full
        // downstream is given a few seconds, then aborted.
        let joins: Vec<_> = self.stopping.drain(..).collect();
        let aborts: Vec<_> = joins.iter().map(|j| j.abort_handle()).collect();
        let id = self.id.clone();
        let all = async move {
            for j in joins {
                if let Err(e) = j.await {
                    if e.is_panic() {
                        tracing::error!(stage = %id, "a scrape loop panicked");
                    }
                }
            }
        };
        let finished = self
            .runtime
            .block_on(async { tokio::time::timeout(STOP_GRACE, all).await.is_ok() });
        if !finished {
            tracing::warn!(stage = %self.id, "scrape loops did not stop in time; aborting them");
            for a in aborts {
                a.abort();
            }
        }
    }

    fn handle(&mut self, m: Message) {
        match m {
            Message::Targets(t) => {
                self.providers.insert(t.provider.clone(), t.groups.clone());
                self.sync(false);
            }
            other => {
                tracing::warn!(stage = %self.id, got = %other.message_type(), "scrape ignores non-target messages")
            }
        }
    }

    /// Brings the running loops in line with the providers' targets.
    fn sync(&mut self, restart_all: bool) {
        self.stopping.retain(|j| !j.is_finished());
        let mut desired: HashMap<u64, Target> = HashMap::new();
        let mut dropped = Vec::new();
        for groups in self.providers.values() {
            for p in populate_groups(groups, &self.cfg) {
                match p {
                    Populated::Target(t) => {
                        desired.entry(loop_key(&t)).or_insert(t);
                    }
                    Populated::Dropped(l) => dropped.push(l),
                    Populated::Invalid { discovered, reason } => {
                        tracing::warn!(stage = %self.id, target = %discovered, %reason, "invalid target skipped");
                    }
                }
            }
        }
        self.view.set_dropped(dropped);
        let keys: Vec<u64> = self.loops.keys().copied().collect();
        for key in keys {
            let keep = desired.contains_key(&key);
            if keep && !restart_all {
                desired.remove(&key);
                continue;
            }
            if let Some(h) = self.loops.remove(&key) {
                // Out of the view first: once the loop hears it, its stale
                // markers may be downstream before this thread runs again.
                self.view.remove(key);
                let _ = h.state.send(if keep {
                    LoopState::Stop
                } else {
                    LoopState::Remove
                });
                self.stopping.push(h.join);
            }
        }
        for (key, target) in desired {
            self.start_loop(key, target);
        }
        self.env.metrics.targets.set(self.loops.len() as i64);
    }

    fn start_loop(&mut self, key: u64, target: Target) {
        let cfg = &self.cfg;
        let status = Arc::new(Mutex::new(TargetStatus {
            // Prometheus names a scrape pool after its job.
            scrape_pool: self.cfg.job_name.clone(),
            discovered_labels: target.discovered.clone(),
            labels: target.labels.clone(),
            scrape_url: target.url.clone(),
            health: TargetHealth::Unknown,
            last_error: String::new(),
            last_scrape_ms: 0,
            last_scrape_duration_seconds: 0.0,
            scrape_interval_ms: target.interval.as_millis() as u64,
            scrape_timeout_ms: target.timeout.as_millis() as u64,
        }));
        self.view.insert(key, status.clone());
        let spec = LoopSpec {
            settings: AppendSettings {
                target_labels: target.labels.clone(),
                honor_labels: cfg.honor_labels,
                honor_timestamps: cfg.honor_timestamps,
                metric_relabel: Arc::new(cfg.metric_relabel_configs.clone()),
                limits: cfg.limits,
            },
            target,
            fetcher: self.fetcher.clone(),
            gzip: cfg.gzip,
            body_size_limit: cfg.limits.body_size_limit,
        };
        let (tx, rx) = watch::channel(LoopState::Run);
        let join = self
            .runtime
            .spawn(scrape_loop::run(self.env.clone(), spec, status, rx));
        self.loops.insert(key, LoopHandle { state: tx, join });
    }
}
