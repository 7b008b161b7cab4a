//! The running pipeline: starts stages on bounded channels, wires their
//! outputs, reloads a new compiled pipeline by diffing it against the
//! running one, and stops everything in order (sources first, so each stage
//! drains what its upstream already sent).
//!
//! Channels belong to the engine, not to stages: a consuming stage's input
//! channel and a producing stage's `Output` survive a rebuild of that stage,
//! so batches queued across a reload are handed to the new instance.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::clock::Clock;
use crate::compile::{CompiledPipeline, CompiledStage, InputRef, WhenFull};
use crate::global::GlobalConfig;
use crate::port::{Downstream, EdgeCounters, Input, Output};
use crate::stage::{
    Message, MessageType, PortSpec, Reconfigure, RunningStage, StageContext, StageHealth,
    StateSlot, StoreRegistry, TargetsRegistry,
};

/// What the engine needs from its host (the CLI).
#[derive(Clone)]
pub struct EngineOptions {
    /// Where stores put their data unless configured otherwise.
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// The tokio runtime I/O stages run on.
    pub runtime: tokio::runtime::Handle,
    /// Serve admin endpoints (`run --enable-admin-api`).
    pub enable_admin_api: bool,
}

/// A stage could not be started, or a reload could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Start(#[from] crate::stage::StageError),
    #[error("stages failed to start: {0}")]
    Partial(String),
}

struct InputChannel {
    message: MessageType,
    capacity: usize,
    tx: Sender<Message>,
    rx: Receiver<Message>,
}

struct RunningEntry {
    stage: CompiledStage,
    running: Box<dyn RunningStage>,
    metrics: prometheus::Registry,
    started_at: Instant,
}

/// What happened to each stage in a reload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub kept: Vec<String>,
    pub reconfigured: Vec<String>,
    pub rebuilt: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl ReloadReport {
    /// One line for logs: `kept=19 reconfigured=1 rebuilt=0 added=0 removed=0`.
    pub fn summary(&self) -> String {
        format!(
            "kept={} reconfigured={} rebuilt={} added={} removed={}",
            self.kept.len(),
            self.reconfigured.len(),
            self.rebuilt.len(),
            self.added.len(),
            self.removed.len()
        )
    }
}

/// A view of one stage for status endpoints.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StageStatus {
    pub id: String,
    pub kind: String,
    pub inputs: Vec<String>,
    pub running: bool,
    pub healthy: bool,
    pub detail: String,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub uptime_seconds: f64,
}

/// Per-edge figures for `/metrics` and status.
#[derive(Clone, Debug)]
pub struct EdgeStatus {
    pub from: String,
    pub port: String,
    pub to: String,
    pub counters: Arc<EdgeCounters>,
}

/// The running pipeline.
pub struct Engine {
    opts: EngineOptions,
    pipeline: CompiledPipeline,
    running: BTreeMap<String, RunningEntry>,
    /// Stages that failed to start (bind error, unusable directory): kept
    /// so status shows them and the next reload retries them.
    failed: BTreeMap<String, (CompiledStage, String)>,
    inputs: BTreeMap<String, InputChannel>,
    outputs: BTreeMap<(String, String), Output>,
    edges: BTreeMap<(String, String, String), Arc<EdgeCounters>>,
    states: BTreeMap<String, StateSlot>,
    stores: StoreRegistry,
    targets: TargetsRegistry,
}

impl Engine {
    /// Starts every stage of a compiled pipeline. If one fails, the ones
    /// already started are stopped and the error returned.
    pub fn start(pipeline: CompiledPipeline, opts: EngineOptions) -> Result<Engine, EngineError> {
        let mut engine = Engine {
            opts,
            pipeline: pipeline.clone(),
            running: BTreeMap::new(),
            failed: BTreeMap::new(),
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            edges: BTreeMap::new(),
            states: BTreeMap::new(),
            stores: StoreRegistry::default(),
            targets: TargetsRegistry::default(),
        };
        for st in pipeline.stages.values() {
            engine.ensure_ports(st);
        }
        engine.rewire();
        let mut order = pipeline.graph.upstream_first();
        order.reverse();
        for id in order {
            let st = pipeline.stages[&id].clone();
            if let Err(e) = engine.start_stage(st) {
                engine.stop_all();
                return Err(e.into());
            }
        }
        Ok(engine)
    }

    /// The pipeline now running.
    pub fn pipeline(&self) -> &CompiledPipeline {
        &self.pipeline
    }

    pub fn stores(&self) -> &StoreRegistry {
        &self.stores
    }

    pub fn targets(&self) -> &TargetsRegistry {
        &self.targets
    }

    fn ensure_ports(&mut self, st: &CompiledStage) {
        if let Some(t) = st.config.input() {
            let reuse = self
                .inputs
                .get(&st.id)
                .is_some_and(|c| c.message == t && c.capacity == st.buffer);
            if !reuse {
                let (tx, rx) = bounded(st.buffer);
                if let Some(old) = self.inputs.remove(&st.id) {
                    // Capacity changed: carry what is queued over.
                    if old.message == t {
                        while let Ok(m) = old.rx.try_recv() {
                            if tx.try_send(m).is_err() {
                                break;
                            }
                        }
                    }
                }
                self.inputs.insert(
                    st.id.clone(),
                    InputChannel {
                        message: t,
                        capacity: st.buffer,
                        tx,
                        rx,
                    },
                );
            }
        } else {
            self.inputs.remove(&st.id);
        }
        let ports = st.config.outputs();
        self.outputs.retain(|(id, port), out| {
            id != &st.id
                || ports
                    .iter()
                    .any(|p| &p.name == port && p.message == out.message_type())
        });
        for PortSpec { name, message } in ports {
            self.outputs
                .entry((st.id.clone(), name.clone()))
                .or_insert_with(|| Output::new(&st.id, &name, message));
        }
    }

    /// Points every output at the inputs that consume it now.
    fn rewire(&mut self) {
        let mut consumers: BTreeMap<(String, String), Vec<Downstream>> = BTreeMap::new();
        let mut live_edges = BTreeSet::new();
        for st in self.pipeline.stages.values() {
            let Some(chan) = self.inputs.get(&st.id) else {
                continue;
            };
            for InputRef { stage, port } in &st.inputs {
                let key = (stage.clone(), port.clone(), st.id.clone());
                live_edges.insert(key.clone());
                let counters = self.edges.entry(key).or_default().clone();
                consumers
                    .entry((stage.clone(), port.clone()))
                    .or_default()
                    .push(Downstream {
                        stage: st.id.clone(),
                        tx: chan.tx.clone(),
                        drop_when_full: st.when_full == WhenFull::Drop,
                        counters,
                    });
            }
        }
        for (key, out) in &self.outputs {
            out.set_downstream(consumers.remove(key).unwrap_or_default());
        }
        self.edges.retain(|k, _| live_edges.contains(k));
    }

    fn start_stage(&mut self, st: CompiledStage) -> Result<(), crate::stage::StageError> {
        let metrics = prometheus::Registry::new();
        let outputs = self
            .outputs
            .iter()
            .filter(|((id, _), _)| id == &st.id)
            .map(|((_, port), o)| (port.clone(), o.clone()))
            .collect();
        let ctx = StageContext {
            id: st.id.clone(),
            clock: self.opts.clock.clone(),
            runtime: self.opts.runtime.clone(),
            input: self.inputs.get(&st.id).map(|c| Input::new(c.rx.clone())),
            outputs,
            metrics: metrics.clone(),
            state: self.states.entry(st.id.clone()).or_default().clone(),
            stores: self.stores.clone(),
            targets: self.targets.clone(),
            global: GlobalConfig {
                enable_admin_api: self.opts.enable_admin_api,
                ..self.pipeline.global.clone()
            },
            base_dir: self.pipeline.base_dir.clone(),
            data_dir: self.opts.data_dir.clone(),
        };
        match st.config.start(ctx) {
            Ok(running) => {
                tracing::info!(stage = %st.id, kind = st.kind, "stage started");
                self.failed.remove(&st.id);
                self.running.insert(
                    st.id.clone(),
                    RunningEntry {
                        stage: st,
                        running,
                        metrics,
                        started_at: Instant::now(),
                    },
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(stage = %st.id, kind = st.kind, error = %e, "stage failed to start");
                self.failed.insert(st.id.clone(), (st, e.message.clone()));
                Err(e)
            }
        }
    }

    fn stop_stage(&mut self, id: &str) {
        if let Some(entry) = self.running.remove(id) {
            let t = Instant::now();
            entry.running.stop();
            tracing::info!(stage = %id, took_ms = t.elapsed().as_millis() as u64, "stage stopped");
        }
    }

    /// Applies a newly compiled pipeline: unchanged stages keep running,
    /// changed ones are reconfigured in place or rebuilt, removed ones stop
    /// (before new ones start, so their ports are free), edges are rewired.
    pub fn reload(&mut self, new: CompiledPipeline) -> Result<ReloadReport, EngineError> {
        let mut report = ReloadReport::default();
        let old_order = self.pipeline.graph.upstream_first();
        let mut to_stop: BTreeSet<String> = BTreeSet::new();
        let mut to_start: Vec<String> = Vec::new();

        for id in self.running.keys().chain(self.failed.keys()) {
            if !new.stages.contains_key(id) {
                to_stop.insert(id.clone());
                report.removed.push(id.clone());
            }
        }
        for (id, st) in &new.stages {
            if let Some((_, _)) = self.failed.get(id) {
                to_start.push(id.clone());
                report.rebuilt.push(id.clone());
                continue;
            }
            let Some(entry) = self.running.get_mut(id) else {
                to_start.push(id.clone());
                report.added.push(id.clone());
                continue;
            };
            let old = &entry.stage;
            let same_ports = old.config.input() == st.config.input()
                && old.config.outputs() == st.config.outputs();
            if old.kind != st.kind || !same_ports {
                to_stop.insert(id.clone());
                to_start.push(id.clone());
                report.rebuilt.push(id.clone());
            } else if old.fingerprint == st.fingerprint {
                // Wiring keys (inputs, buffer, when_full) are not part of
                // the fingerprint: rewiring alone restarts nothing.
                entry.stage = st.clone();
                report.kept.push(id.clone());
            } else {
                match entry.running.reconfigure(&*st.config) {
                    Reconfigure::Applied => {
                        tracing::info!(stage = %id, "stage reconfigured in place");
                        entry.stage = st.clone();
                        report.reconfigured.push(id.clone());
                    }
                    Reconfigure::Rebuild => {
                        to_stop.insert(id.clone());
                        to_start.push(id.clone());
                        report.rebuilt.push(id.clone());
                    }
                }
            }
        }

        for id in old_order.iter().filter(|id| to_stop.contains(*id)) {
            self.stop_stage(id);
        }
        for id in &to_stop {
            self.stop_stage(id);
            if !new.stages.contains_key(id) {
                self.failed.remove(id);
                self.states.remove(id);
                self.inputs.remove(id);
                self.outputs.retain(|(s, _), _| s != id);
            }
        }
        self.pipeline = new.clone();
        for id in &to_start {
            let st = new.stages[id].clone();
            self.ensure_ports(&st);
        }
        for st in new.stages.values() {
            // Buffer sizes of kept stages may have changed.
            if !to_start.contains(&st.id) {
                self.ensure_ports(st);
            }
        }
        self.rewire();

        let mut order = new.graph.upstream_first();
        order.reverse();
        let mut errors = Vec::new();
        for id in order.iter().filter(|id| to_start.contains(*id)) {
            if let Err(e) = self.start_stage(new.stages[id].clone()) {
                errors.push(e.to_string());
            }
        }
        if errors.is_empty() {
            Ok(report)
        } else {
            Err(EngineError::Partial(errors.join("; ")))
        }
    }

    /// Stops every stage, sources first, so each drains what its upstream
    /// already sent before it stops.
    pub fn stop_all(&mut self) {
        let order = self.pipeline.graph.upstream_first();
        for id in &order {
            self.stop_stage(id);
        }
        let rest: Vec<String> = self.running.keys().cloned().collect();
        for id in rest {
            self.stop_stage(&id);
        }
    }

    /// Status of every stage.
    /// Whether every running stage reports itself ready.
    pub fn all_ready(&self) -> bool {
        self.running.values().all(|e| e.running.ready())
    }

    pub fn status(&self) -> Vec<StageStatus> {
        let mut out = Vec::new();
        for (id, st) in &self.pipeline.stages {
            let (depth, cap) = self
                .inputs
                .get(id)
                .map(|c| (c.rx.len(), c.capacity))
                .unwrap_or((0, 0));
            let (running, health, uptime) = match (self.running.get(id), self.failed.get(id)) {
                (Some(e), _) => (
                    true,
                    e.running.health(),
                    e.started_at.elapsed().as_secs_f64(),
                ),
                (None, Some((_, err))) => (false, StageHealth::unhealthy(err.clone()), 0.0),
                (None, None) => (false, StageHealth::unhealthy("not running"), 0.0),
            };
            out.push(StageStatus {
                id: id.clone(),
                kind: st.kind.to_string(),
                inputs: st.inputs.iter().map(|i| i.to_string()).collect(),
                running,
                healthy: health.ok,
                detail: health.detail,
                queue_depth: depth,
                queue_capacity: cap,
                uptime_seconds: uptime,
            });
        }
        out
    }

    /// Every live edge with its counters.
    pub fn edges(&self) -> Vec<EdgeStatus> {
        self.edges
            .iter()
            .map(|((from, port, to), c)| EdgeStatus {
                from: from.clone(),
                port: port.clone(),
                to: to.clone(),
                counters: c.clone(),
            })
            .collect()
    }

    /// Every output port, for `tap`.
    pub fn outputs(&self) -> Vec<Output> {
        self.outputs.values().cloned().collect()
    }

    /// Metric families of every running stage, merged by name (two stages
    /// of one kind register the same families with different `stage`).
    pub fn gather_stage_metrics(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut merged: BTreeMap<String, prometheus::proto::MetricFamily> = BTreeMap::new();
        for (id, entry) in &self.running {
            for mut fam in entry.metrics.gather() {
                // Every stage metric carries `stage` so that two stages of
                // one kind stay apart; stages may set it themselves.
                for m in fam.mut_metric() {
                    if !m.get_label().iter().any(|l| l.name() == "stage") {
                        let mut lp = prometheus::proto::LabelPair::default();
                        lp.set_name("stage".to_string());
                        lp.set_value(id.clone());
                        let mut labels = m.take_label();
                        labels.push(lp);
                        labels.sort_by(|a, b| a.name().cmp(b.name()));
                        m.set_label(labels);
                    }
                }
                match merged.get_mut(fam.name()) {
                    Some(existing) if existing.get_field_type() == fam.get_field_type() => {
                        existing
                            .mut_metric()
                            .extend(fam.get_metric().iter().cloned());
                    }
                    Some(_) => {
                        tracing::warn!(family = fam.name(), "two stages register one metric name with different types; keeping the first");
                    }
                    None => {
                        merged.insert(fam.name().to_string(), fam);
                    }
                }
            }
        }
        merged.into_values().collect()
    }

    /// HTTP routes of every running stage.
    pub fn stage_routes(&self) -> Vec<(String, axum::Router)> {
        self.running
            .iter()
            .filter_map(|(id, e)| e.running.http_routes().map(|r| (id.clone(), r)))
            .collect()
    }
}
