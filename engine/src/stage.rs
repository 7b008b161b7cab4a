//! The Stage contract: the only way the engine knows a stage.
//!
//! A stage *kind* (`scrape`, `store`, …) is a [`StageKind`] registered once in
//! the binary's registry. Compiling a pipeline asks each kind to check its own
//! YAML section and turn it into a [`StageConfig`] (pure, no side effects, so
//! `validate` and `run` share it). Running a pipeline calls
//! [`StageConfig::start`] with a [`StageContext`] and gets a [`RunningStage`]
//! back, which the engine later reconfigures in place, asks for health and
//! HTTP routes, or stops.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use panoptes_model::{AlertBatch, SampleBatch, SeriesSelect, TargetSet, TargetStatus};

use crate::clock::Clock;
use crate::global::GlobalConfig;
use crate::port::{Input, Output};

/// The message types that travel on edges (DESIGN.md's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    /// The full current set of target groups of one provider (latest-value).
    Targets,
    /// One batch of samples per scrape, push or evaluation.
    Samples,
    /// Firing/resolved alerts.
    Alerts,
}

impl MessageType {
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageType::Targets => "Targets",
            MessageType::Samples => "Samples",
            MessageType::Alerts => "Alerts",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message on an edge. Payloads are behind `Arc` so that fan-out to
/// several consumers (and to `tap`) never copies a batch.
#[derive(Clone, Debug)]
pub enum Message {
    Targets(Arc<TargetSet>),
    Samples(Arc<SampleBatch>),
    Alerts(Arc<AlertBatch>),
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Targets(_) => MessageType::Targets,
            Message::Samples(_) => MessageType::Samples,
            Message::Alerts(_) => MessageType::Alerts,
        }
    }

    /// How many items the message carries (samples, alerts, target groups),
    /// for per-edge counters.
    pub fn item_count(&self) -> usize {
        match self {
            Message::Targets(t) => t.groups.len(),
            Message::Samples(s) => s.samples.len(),
            Message::Alerts(a) => a.alerts.len(),
        }
    }
}

/// A named output port and the message type it emits. The default port is
/// named `""` and is what `inputs: [stage]` refers to; `inputs: [stage.port]`
/// names another one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub message: MessageType,
}

impl PortSpec {
    pub fn default_port(message: MessageType) -> Self {
        PortSpec {
            name: String::new(),
            message,
        }
    }
}

/// A problem found in one stage's YAML section while compiling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Path inside the stage's section, in the YAML-path style the engine
    /// prints: `rules[0].regex`, `static_configs[1].targets[0]`. Empty for the
    /// section itself.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What a stage kind may know about the pipeline while compiling.
#[derive(Clone, Debug)]
pub struct CompileContext {
    /// The stage's id (its key under `stages:`).
    pub stage_id: String,
    /// Directory of the pipeline file; relative paths in a stage's config
    /// (rule files, file_sd files, data dirs) resolve against it.
    pub base_dir: PathBuf,
    /// The pipeline's `global:` section with defaults applied.
    pub global: GlobalConfig,
}

impl CompileContext {
    /// Resolves a path from the config against the pipeline's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        }
    }
}

/// A registered stage kind. Registering a new kind is one line in the
/// binary's registry.
pub trait StageKind: Send + Sync + 'static {
    /// The `kind:` value, e.g. `"scrape"`.
    fn name(&self) -> &'static str;

    /// One line for `panoptes schema` / docs.
    fn description(&self) -> &'static str;

    /// JSON Schema (draft 7) of this kind's section *without*
    /// the engine's own keys `kind` and `inputs`: an object schema whose
    /// `properties` the engine merges with those keys. Unknown fields must be
    /// rejected (`additionalProperties: false`).
    fn config_schema(&self) -> serde_json::Value;

    /// Checks the section (already schema-valid; `kind` and `inputs` removed)
    /// and compiles it, including embedded languages (regexes, PromQL,
    /// templates) and referenced files. Pure: no sockets, no threads, no
    /// writes. Reports every problem found, not only the first.
    fn compile(
        &self,
        ctx: &CompileContext,
        section: &serde_json::Value,
    ) -> Result<Box<dyn StageConfig>, Vec<ConfigIssue>>;
}

/// A compiled, checked stage configuration (`ScrapeConfig`, `StoreConfig`, …).
pub trait StageConfig: Send + Sync + fmt::Debug + Any {
    /// The message type this stage accepts on its (single) input, or `None`
    /// if it takes no `inputs:` (a source such as discovery or push_ingest).
    fn input(&self) -> Option<MessageType>;

    /// The ports it emits on (empty for a sink).
    fn outputs(&self) -> Vec<PortSpec>;

    /// Ids of stores this stage reads through a query reference
    /// (`store: tsdb`). Not data edges: they never form a cycle.
    fn store_refs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Extra content for the reload fingerprint: e.g. a hash of the rule
    /// files a stage reads, so editing a referenced file counts as a change.
    fn fingerprint_extra(&self) -> String {
        String::new()
    }

    /// Whether this stage provides a queryable store (registers itself in
    /// [`StageContext::stores`] when started).
    fn provides_store(&self) -> bool {
        false
    }

    /// Starts a running instance. May spawn threads or tokio tasks; must
    /// return promptly.
    fn start(&self, ctx: StageContext) -> Result<Box<dyn RunningStage>, StageError>;

    /// For in-place reconfiguration: lets a running stage downcast the new
    /// config to its own type.
    fn as_any(&self) -> &dyn Any;
}

/// The answer of a running stage to a new config.
pub enum Reconfigure {
    /// Applied in place; the stage keeps its state and channels.
    Applied,
    /// Cannot be applied in place: the engine rebuilds the stage (handing
    /// the state in [`StageContext::state`] to the new instance).
    Rebuild,
}

/// A started stage.
pub trait RunningStage: Send {
    /// Offered a changed config of the same kind. Default: rebuild.
    fn reconfigure(&mut self, _new: &dyn StageConfig) -> Reconfigure {
        Reconfigure::Rebuild
    }

    /// HTTP routes this stage serves on the main listener (e.g. the query
    /// API, targets view). Merged by the engine; rebuilt on reload.
    fn http_routes(&self) -> Option<axum::Router> {
        None
    }

    /// Current health, for `/api/v1/status/stages` and the graph view.
    fn health(&self) -> StageHealth {
        StageHealth::healthy()
    }

    /// Whether the stage has finished starting and serves what it offers
    /// (a store: its database is open and queryable). `/-/ready` answers
    /// 503 until every running stage is, as Prometheus's does while its
    /// TSDB replays the WAL. Default: ready once started.
    fn ready(&self) -> bool {
        true
    }

    /// Stops the stage: stop taking new work, flush what is in flight to the
    /// outputs / disk, release ports. Blocks until done.
    fn stop(self: Box<Self>);
}

/// A stage's own view of its health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageHealth {
    pub ok: bool,
    /// Human-readable detail (last error, lag …); empty when healthy.
    pub detail: String,
}

impl StageHealth {
    pub fn healthy() -> Self {
        StageHealth {
            ok: true,
            detail: String::new(),
        }
    }

    pub fn unhealthy(detail: impl Into<String>) -> Self {
        StageHealth {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// A stage failed to start (bind failed, data dir unusable, …).
#[derive(Debug, thiserror::Error)]
#[error("stage {stage:?} failed to start: {message}")]
pub struct StageError {
    pub stage: String,
    pub message: String,
}

impl StageError {
    pub fn new(stage: impl Into<String>, message: impl fmt::Display) -> Self {
        StageError {
            stage: stage.into(),
            message: message.to_string(),
        }
    }
}

/// State that survives a rebuild of a stage across reloads (a push gateway's
/// groups, a rule stage's alert state). The engine keeps one slot per stage
/// id; a stage takes it on start and puts it back on stop.
#[derive(Clone, Default)]
pub struct StateSlot(Arc<parking_lot::Mutex<Option<Box<dyn Any + Send>>>>);

impl StateSlot {
    /// Takes the state left by a previous instance, if it has the right type.
    pub fn take<T: Any + Send>(&self) -> Option<T> {
        let boxed = self.0.lock().take()?;
        boxed.downcast::<T>().ok().map(|b| *b)
    }

    /// Leaves state for the next instance.
    pub fn put<T: Any + Send>(&self, state: T) {
        *self.0.lock() = Some(Box::new(state));
    }
}

/// Stores that running stages registered, by stage id, for query references
/// (`store: tsdb`) and the query API.
#[derive(Clone, Default)]
pub struct StoreRegistry(Arc<parking_lot::RwLock<BTreeMap<String, Arc<dyn SeriesSelect>>>>);

impl StoreRegistry {
    pub fn register(&self, id: &str, store: Arc<dyn SeriesSelect>) {
        self.0.write().insert(id.to_string(), store);
    }

    pub fn unregister(&self, id: &str) {
        self.0.write().remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<dyn SeriesSelect>> {
        self.0.read().get(id).cloned()
    }

    /// The ids of all registered stores.
    pub fn ids(&self) -> Vec<String> {
        self.0.read().keys().cloned().collect()
    }
}

/// What a scrape stage shows of its targets (the targets view).
pub trait TargetsView: Send + Sync {
    /// The current active targets with their health.
    fn targets(&self) -> Vec<TargetStatus>;
    /// Targets discovered but dropped by target relabeling (their discovered
    /// labels), as `droppedTargets` in `/api/v1/targets`.
    fn dropped_targets(&self) -> Vec<panoptes_model::Labels> {
        Vec::new()
    }
}

/// Targets views registered by running scrape stages, by stage id.
#[derive(Clone, Default)]
pub struct TargetsRegistry(Arc<parking_lot::RwLock<BTreeMap<String, Arc<dyn TargetsView>>>>);

impl TargetsRegistry {
    pub fn register(&self, id: &str, view: Arc<dyn TargetsView>) {
        self.0.write().insert(id.to_string(), view);
    }

    pub fn unregister(&self, id: &str) {
        self.0.write().remove(id);
    }

    /// All registered views, by stage id.
    pub fn all(&self) -> Vec<(String, Arc<dyn TargetsView>)> {
        self.0
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Everything a stage gets when it starts.
pub struct StageContext {
    /// The stage id (key under `stages:`).
    pub id: String,
    /// Real or virtual time: every time-driven stage reads and sleeps on it.
    pub clock: Arc<dyn Clock>,
    /// The tokio runtime for I/O stages.
    pub runtime: tokio::runtime::Handle,
    /// The input channel if the stage declared an input type.
    pub input: Option<Input>,
    /// Output ports by name (`""` is the default port).
    pub outputs: BTreeMap<String, Output>,
    /// A per-stage metrics registry; the engine exposes it on `/metrics`
    /// while the stage runs. Register with a `stage` const label if useful.
    pub metrics: prometheus::Registry,
    /// State carried over from a previous instance of this stage id.
    pub state: StateSlot,
    /// Stores registered by running stages.
    pub stores: StoreRegistry,
    /// Targets views registered by running scrape stages.
    pub targets: TargetsRegistry,
    /// The pipeline's `global:` section.
    pub global: GlobalConfig,
    /// Directory of the pipeline file.
    pub base_dir: PathBuf,
    /// Data directory given by `run --data-dir` (stores default under it).
    pub data_dir: PathBuf,
}

impl StageContext {
    /// A context for running one stage on its own (tests, benches,
    /// examples): the real clock, no input, no outputs, fresh registries,
    /// default `global:`, and `dir` as both base and data directory. Set
    /// what differs with struct update syntax.
    pub fn standalone(
        id: &str,
        runtime: tokio::runtime::Handle,
        dir: impl Into<PathBuf>,
    ) -> StageContext {
        let dir = dir.into();
        StageContext {
            id: id.to_string(),
            clock: Arc::new(crate::clock::RealClock),
            runtime,
            input: None,
            outputs: BTreeMap::new(),
            metrics: prometheus::Registry::new(),
            state: StateSlot::default(),
            stores: StoreRegistry::default(),
            targets: TargetsRegistry::default(),
            global: GlobalConfig::default(),
            base_dir: dir.clone(),
            data_dir: dir,
        }
    }

    /// The default output port, if the stage declared one.
    pub fn default_output(&self) -> Option<&Output> {
        self.outputs.get("")
    }
}
