//! The `file` sink: appends every sample it receives to a file as a
//! Prometheus text line with its timestamp (`name{labels} value ts_ms`),
//! flushed after each batch. Users export with it; tests read it to see what
//! flowed. Staleness markers are written as `stale` (a plain `NaN` is a
//! value like any other), so a reader can tell them apart.

use std::any::Any;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::thread::JoinHandle;

use crossbeam_channel::{select, Receiver, Sender};
use serde_json::{json, Value};

use panoptes_engine::stage::{
    CompileContext, ConfigIssue, Message, MessageType, PortSpec, RunningStage, StageConfig,
    StageContext, StageError, StageKind,
};
use panoptes_model::{escape_label_value, is_stale_nan, write_float, SampleBatch, METRIC_NAME};

/// The `file` stage kind.
pub struct FileKind;

/// A checked `file` section.
#[derive(Debug, Clone, PartialEq)]
pub struct FileConfig {
    pub path: PathBuf,
}

impl StageKind for FileKind {
    fn name(&self) -> &'static str {
        "file"
    }

    fn description(&self) -> &'static str {
        "Sink: appends every sample it receives to a file as `name{labels} value timestamp_ms`."
    }

    fn config_schema(&self) -> Value {
        json!({
            "type": "object",
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "minLength": 1,
                    "description": "File to append to (created if missing; relative to the pipeline file)."}
            }
        })
    }

    fn compile(
        &self,
        ctx: &CompileContext,
        section: &Value,
    ) -> Result<Box<dyn StageConfig>, Vec<ConfigIssue>> {
        let path = section
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                vec![ConfigIssue::new(
                    "path",
                    "missing path: the file to append to",
                )]
            })?;
        Ok(Box::new(FileConfig {
            path: ctx.resolve(path),
        }))
    }
}

impl StageConfig for FileConfig {
    fn input(&self) -> Option<MessageType> {
        Some(MessageType::Samples)
    }

    fn outputs(&self) -> Vec<PortSpec> {
        Vec::new()
    }

    fn start(&self, ctx: StageContext) -> Result<Box<dyn RunningStage>, StageError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                StageError::new(&ctx.id, format!("cannot open {}: {e}", self.path.display()))
            })?;
        let input = ctx
            .input
            .ok_or_else(|| StageError::new(&ctx.id, "no input channel"))?
            .rx;
        let lines = prometheus::IntCounter::new(
            "panoptes_file_samples_written_total",
            "Samples appended to the file.",
        )
        .map_err(|e| StageError::new(&ctx.id, e))?;
        let errors = prometheus::IntCounter::new(
            "panoptes_file_write_errors_total",
            "Batches that could not be written.",
        )
        .map_err(|e| StageError::new(&ctx.id, e))?;
        let _ = ctx.metrics.register(Box::new(lines.clone()));
        let _ = ctx.metrics.register(Box::new(errors.clone()));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let path = self.path.clone();
        let id = ctx.id.clone();
        let thread = std::thread::Builder::new()
            .name(format!("file:{id}"))
            .spawn(move || {
                let mut w = Writer {
                    out: BufWriter::with_capacity(1 << 16, file),
                    line: String::with_capacity(256),
                    path,
                    stage: id,
                    lines,
                    errors,
                };
                w.run(input, stop_rx);
            })
            .map_err(|e| StageError::new(&ctx.id, e))?;
        Ok(Box::new(RunningFile {
            stop: stop_tx,
            thread: Some(thread),
        }))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

struct Writer {
    out: BufWriter<File>,
    line: String,
    path: PathBuf,
    stage: String,
    lines: prometheus::IntCounter,
    errors: prometheus::IntCounter,
}

impl Writer {
    fn run(&mut self, input: Receiver<Message>, stop: Receiver<()>) {
        loop {
            select! {
                recv(input) -> msg => match msg {
                    Ok(m) => self.handle(m),
                    Err(_) => break,
                },
                recv(stop) -> _ => {
                    // Flush what upstream already sent before stopping.
                    while let Ok(m) = input.try_recv() {
                        self.handle(m);
                    }
                    break;
                }
            }
        }
        let _ = self.out.flush();
    }

    fn handle(&mut self, msg: Message) {
        if let Message::Samples(batch) = msg {
            if let Err(e) = self.write_batch(&batch) {
                self.errors.inc();
                tracing::error!(stage = %self.stage, path = %self.path.display(), error = %e, "cannot write samples");
            }
        }
    }

    fn write_batch(&mut self, batch: &SampleBatch) -> std::io::Result<()> {
        for s in &batch.samples {
            self.line.clear();
            format_sample_line(&mut self.line, s);
            self.out.write_all(self.line.as_bytes())?;
        }
        self.out.flush()?;
        self.lines.inc_by(batch.samples.len() as u64);
        Ok(())
    }
}

/// `name{a="b",c="d"} value ts_ms\n`, as the text exposition format writes
/// a sample with a timestamp.
pub fn format_sample_line(out: &mut String, s: &panoptes_model::Sample) {
    let name = s.labels.metric_name().unwrap_or("");
    out.push_str(name);
    let mut first = true;
    for l in s.labels.iter().filter(|l| &*l.name != METRIC_NAME) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(&l.name);
        out.push_str("=\"");
        out.push_str(&escape_label_value(&l.value));
        out.push('"');
    }
    if !first {
        out.push('}');
    } else if name.is_empty() {
        out.push_str("{}");
    }
    out.push(' ');
    if is_stale_nan(s.value) {
        out.push_str("stale");
    } else {
        write_float(out, s.value);
    }
    out.push(' ');
    out.push_str(&s.timestamp_ms.to_string());
    out.push('\n');
}

struct RunningFile {
    stop: Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl RunningStage for RunningFile {
    fn stop(mut self: Box<Self>) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_model::{stale_nan, Labels, Sample};

    #[test]
    fn formats_lines_like_the_text_format() {
        let mut out = String::new();
        let s = Sample {
            labels: Labels::from_pairs([("__name__", "up"), ("job", "a\"b"), ("instance", "x:1")]),
            timestamp_ms: 1_700_000_000_000,
            value: 1.0,
        };
        format_sample_line(&mut out, &s);
        assert_eq!(out, "up{instance=\"x:1\",job=\"a\\\"b\"} 1 1700000000000\n");
        out.clear();
        let s = Sample {
            labels: Labels::from_pairs([("__name__", "gone")]),
            timestamp_ms: 5,
            value: stale_nan(),
        };
        format_sample_line(&mut out, &s);
        assert_eq!(out, "gone stale 5\n");
    }
}
