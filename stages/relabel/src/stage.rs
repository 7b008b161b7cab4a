//! The `relabel` stage: applies relabel rules to every sample of every batch
//! on its input. Kept (possibly relabeled) samples leave on the default port,
//! dropped ones (with their original labels) on the `dropped` port. Stale
//! markers are samples like any other, so a series that is relabeled keeps
//! its staleness under its new name.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{select, Receiver, Sender};
use panoptes_engine::port::Output;
use panoptes_engine::stage::{
    CompileContext, ConfigIssue, Message, MessageType, PortSpec, Reconfigure, RunningStage,
    StageConfig, StageContext, StageError, StageKind,
};
use panoptes_model::{Labels, Sample, SampleBatch};
use prometheus::{IntCounter, Opts};
use serde_json::{json, Value};
use xxhash_rust::xxh3::Xxh3Builder;

use crate::process::process_cow;
use crate::rule::{compile_rules, relabel_rule_schema, RelabelRule};

/// Entries of the per-stage result cache unless `cache_size` says otherwise.
const DEFAULT_CACHE_SIZE: usize = 100_000;

/// The name of the port dropped samples leave on.
pub const DROPPED_PORT: &str = "dropped";

/// The `relabel` stage kind.
pub struct RelabelKind;

/// A compiled `relabel` section.
#[derive(Clone, Debug)]
pub struct RelabelConfig {
    rules: Arc<Vec<RelabelRule>>,
    cache_size: usize,
}

impl RelabelConfig {
    /// The compiled rules.
    pub fn rules(&self) -> &[RelabelRule] {
        &self.rules
    }
}

impl StageKind for RelabelKind {
    fn name(&self) -> &'static str {
        "relabel"
    }

    fn description(&self) -> &'static str {
        "Applies Prometheus relabel rules to samples; dropped samples leave on the `dropped` port"
    }

    fn config_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["rules"],
            "properties": {
                "rules": {
                    "type": "array",
                    "description": "Relabel rules applied in order to each sample's labels (Prometheus metric_relabel_configs shape).",
                    "items": relabel_rule_schema()
                },
                "cache_size": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Series whose outcome is remembered (0 disables the cache; default 100000)."
                }
            }
        })
    }

    fn compile(
        &self,
        _ctx: &CompileContext,
        section: &Value,
    ) -> Result<Box<dyn StageConfig>, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let Some(obj) = section.as_object() else {
            return Err(vec![ConfigIssue::new(
                "",
                "expected a mapping with `rules`",
            )]);
        };
        for key in obj.keys() {
            if key != "rules" && key != "cache_size" {
                issues.push(ConfigIssue::new(
                    key.clone(),
                    "unknown field (expected rules, cache_size)",
                ));
            }
        }
        let rules = match obj.get("rules") {
            None => {
                issues.push(ConfigIssue::new(
                    "rules",
                    "missing: the list of relabel rules",
                ));
                None
            }
            Some(r) => match compile_rules(r, "rules") {
                Ok(r) => Some(r),
                Err(mut e) => {
                    issues.append(&mut e);
                    None
                }
            },
        };
        let cache_size = match obj.get("cache_size") {
            None => DEFAULT_CACHE_SIZE,
            Some(v) => match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
                Some(n) => n,
                None => {
                    issues.push(ConfigIssue::new(
                        "cache_size",
                        "expected a non-negative integer",
                    ));
                    0
                }
            },
        };
        match rules {
            Some(rules) if issues.is_empty() => Ok(Box::new(RelabelConfig {
                rules: Arc::new(rules),
                cache_size,
            })),
            _ => Err(issues),
        }
    }
}

impl StageConfig for RelabelConfig {
    fn input(&self) -> Option<MessageType> {
        Some(MessageType::Samples)
    }

    fn outputs(&self) -> Vec<PortSpec> {
        vec![
            PortSpec::default_port(MessageType::Samples),
            PortSpec {
                name: DROPPED_PORT.to_string(),
                message: MessageType::Samples,
            },
        ]
    }

    fn start(&self, ctx: StageContext) -> Result<Box<dyn RunningStage>, StageError> {
        let input = ctx
            .input
            .as_ref()
            .map(|i| i.rx.clone())
            .ok_or_else(|| StageError::new(&ctx.id, "the relabel stage needs an input"))?;
        let kept_out = ctx
            .outputs
            .get("")
            .cloned()
            .unwrap_or_else(|| Output::new(&ctx.id, "", MessageType::Samples));
        let dropped_out = ctx
            .outputs
            .get(DROPPED_PORT)
            .cloned()
            .unwrap_or_else(|| Output::new(&ctx.id, DROPPED_PORT, MessageType::Samples));
        let counters = Counters::register(&ctx.metrics, &ctx.id);
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let mut worker = Worker {
            id: ctx.id.clone(),
            rules: self.rules.clone(),
            cache: Cache::new(self.cache_size),
            kept_out,
            dropped_out,
            counters,
        };
        let handle = std::thread::Builder::new()
            .name(format!("relabel:{}", ctx.id))
            .spawn(move || worker.run(input, ctl_rx))
            .map_err(|e| StageError::new(&ctx.id, format!("cannot spawn worker thread: {e}")))?;
        Ok(Box::new(RunningRelabel {
            ctl: ctl_tx,
            handle: Some(handle),
        }))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

enum Control {
    NewConfig(Arc<Vec<RelabelRule>>, usize),
    Stop,
}

struct RunningRelabel {
    ctl: Sender<Control>,
    handle: Option<JoinHandle<()>>,
}

impl RunningStage for RunningRelabel {
    fn reconfigure(&mut self, new: &dyn StageConfig) -> Reconfigure {
        let Some(cfg) = new.as_any().downcast_ref::<RelabelConfig>() else {
            return Reconfigure::Rebuild;
        };
        match self
            .ctl
            .send(Control::NewConfig(cfg.rules.clone(), cfg.cache_size))
        {
            Ok(()) => Reconfigure::Applied,
            Err(_) => Reconfigure::Rebuild,
        }
    }

    fn stop(mut self: Box<Self>) {
        let _ = self.ctl.send(Control::Stop);
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("relabel worker thread panicked");
            }
        }
    }
}

struct Counters {
    batches: IntCounter,
    kept: IntCounter,
    dropped: IntCounter,
}

impl Counters {
    fn register(registry: &prometheus::Registry, stage: &str) -> Counters {
        let make = |name: &str, help: &str| {
            let c = IntCounter::with_opts(Opts::new(name, help).const_label("stage", stage))
                .expect("static metric names and help are valid");
            if let Err(e) = registry.register(Box::new(c.clone())) {
                tracing::warn!(stage, error = %e, "cannot register relabel metric");
            }
            c
        };
        Counters {
            batches: make(
                "panoptes_relabel_batches_total",
                "Sample batches processed by the relabel stage.",
            ),
            kept: make(
                "panoptes_relabel_samples_kept_total",
                "Samples kept (possibly relabeled).",
            ),
            dropped: make(
                "panoptes_relabel_samples_dropped_total",
                "Samples dropped by the relabel rules.",
            ),
        }
    }
}

/// What relabeling does to one series.
#[derive(Clone)]
enum Outcome {
    Unchanged,
    Relabeled(Labels),
    Dropped,
}

/// Bounded memo of outcomes by input label set. Cleared wholesale when full:
/// cheap, and the working set refills it within one scrape interval.
struct Cache {
    map: HashMap<Labels, Outcome, Xxh3Builder>,
    capacity: usize,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Cache {
            map: HashMap::with_hasher(Xxh3Builder::new()),
            capacity,
        }
    }

    fn outcome(&mut self, labels: &Labels, rules: &[RelabelRule]) -> Outcome {
        if self.capacity == 0 {
            return compute(labels, rules);
        }
        if let Some(o) = self.map.get(labels) {
            return o.clone();
        }
        let o = compute(labels, rules);
        if self.map.len() >= self.capacity {
            self.map.clear();
        }
        self.map.insert(labels.clone(), o.clone());
        o
    }
}

fn compute(labels: &Labels, rules: &[RelabelRule]) -> Outcome {
    match process_cow(labels, rules) {
        None => Outcome::Dropped,
        Some(std::borrow::Cow::Borrowed(_)) => Outcome::Unchanged,
        Some(std::borrow::Cow::Owned(l)) => Outcome::Relabeled(l),
    }
}

struct Worker {
    id: String,
    rules: Arc<Vec<RelabelRule>>,
    cache: Cache,
    kept_out: Output,
    dropped_out: Output,
    counters: Counters,
}

impl Worker {
    fn run(&mut self, input: Receiver<Message>, ctl: Receiver<Control>) {
        let mut input_open = true;
        loop {
            if input_open {
                select! {
                    recv(ctl) -> c => if !self.control(c.ok()) { break },
                    recv(input) -> m => match m {
                        Ok(m) => self.handle(m),
                        // Upstream gone (shutdown): only a stop can follow.
                        Err(_) => input_open = false,
                    },
                }
            } else if !self.control(ctl.recv().ok()) {
                break;
            }
        }
        // Process what is already queued before returning.
        while let Ok(m) = input.try_recv() {
            self.handle(m);
        }
    }

    /// Applies a control message; false = stop.
    fn control(&mut self, c: Option<Control>) -> bool {
        match c {
            Some(Control::NewConfig(rules, cache_size)) => {
                self.rules = rules;
                self.cache = Cache::new(cache_size);
                tracing::info!(stage = %self.id, rules = self.rules.len(), "relabel rules reloaded");
                true
            }
            Some(Control::Stop) | None => false,
        }
    }

    fn handle(&mut self, m: Message) {
        let Message::Samples(batch) = m else {
            tracing::warn!(stage = %self.id, got = %m.message_type(), "relabel ignores non-sample messages");
            return;
        };
        self.counters.batches.inc();
        let (kept, dropped) = self.relabel_batch(&batch);
        self.counters
            .kept
            .inc_by(kept.as_ref().map_or(0, |b| b.len()) as u64);
        self.counters
            .dropped
            .inc_by(dropped.as_ref().map_or(0, |b| b.len()) as u64);
        if let Some(k) = kept {
            let _ = self.kept_out.send(Message::Samples(k));
        }
        if let Some(d) = dropped {
            let _ = self.dropped_out.send(Message::Samples(Arc::new(d)));
        }
    }

    /// The kept batch (the input itself when nothing changed) and the
    /// dropped samples, each None when empty.
    fn relabel_batch(
        &mut self,
        batch: &Arc<SampleBatch>,
    ) -> (Option<Arc<SampleBatch>>, Option<SampleBatch>) {
        let mut outcomes = Vec::with_capacity(batch.samples.len());
        let mut untouched = true;
        for s in &batch.samples {
            let o = self.cache.outcome(&s.labels, &self.rules);
            untouched &= matches!(o, Outcome::Unchanged);
            outcomes.push(o);
        }
        if untouched {
            return ((!batch.is_empty()).then(|| batch.clone()), None);
        }
        let mut kept = SampleBatch {
            source: batch.source.clone(),
            samples: Vec::with_capacity(batch.samples.len()),
            metadata: batch.metadata.clone(),
        };
        let mut dropped = SampleBatch::new(batch.source.clone());
        for (s, o) in batch.samples.iter().zip(outcomes) {
            match o {
                Outcome::Unchanged => kept.samples.push(s.clone()),
                Outcome::Relabeled(labels) => kept.samples.push(Sample {
                    labels,
                    timestamp_ms: s.timestamp_ms,
                    value: s.value,
                }),
                Outcome::Dropped => dropped.samples.push(s.clone()),
            }
        }
        (
            (!kept.is_empty()).then(|| Arc::new(kept)),
            (!dropped.is_empty()).then_some(dropped),
        )
    }
}
