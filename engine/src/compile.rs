//! Compiling a pipeline: one pure function from YAML text to a checked
//! pipeline, collecting every error with its source position. `validate`,
//! `graph` and `run` (and every reload) call the same function, so a file
//! that validates cannot fail to start for a config reason.
//!
//! The JSON-Schema step can be skipped with [`CompileOptions::schema_checked`]
//! when the caller has already run it elsewhere. The long-running server
//! does that: building any `jsonschema` validator first validates our schema
//! against the Draft-7 meta-schema, whose validator the `jsonschema` crate
//! builds once into a process-wide `Lazy` static and never frees (~11 MB of
//! heap; the option to skip meta-validation is private to the crate). So
//! `panoptes run` has a short-lived `panoptes validate -` child do the schema
//! step, and compiles in process with this option set.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use panoptes_model::{parse_duration, Labels, DURATION_PATTERN};

use crate::global::GlobalConfig;
use crate::graph::PipelineGraph;
use crate::registry::Registry;
use crate::schema::{DEFAULT_BUFFER, ENGINE_KEYS};
use crate::source::{render_path, PathSeg, Pos, SourceDoc};
use crate::stage::{CompileContext, MessageType, StageConfig};

/// One problem in a pipeline file, with where it is. Serialized as is by
/// `panoptes validate --format json`, and read back from it by the server's
/// schema-check helper, so both render identically.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// YAML path of the offending node, e.g. `stages.node.inputs[0]`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// What a stage does when its input channel is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    Block,
    Drop,
}

/// `stage` or `stage.port` in an `inputs:` list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InputRef {
    pub stage: String,
    pub port: String,
}

impl InputRef {
    fn parse(s: &str) -> InputRef {
        match s.split_once('.') {
            Some((stage, port)) => InputRef {
                stage: stage.to_string(),
                port: port.to_string(),
            },
            None => InputRef {
                stage: s.to_string(),
                port: String::new(),
            },
        }
    }
}

impl fmt::Display for InputRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            f.write_str(&self.stage)
        } else {
            write!(f, "{}.{}", self.stage, self.port)
        }
    }
}

/// One checked stage.
#[derive(Clone, Debug)]
pub struct CompiledStage {
    pub id: String,
    pub kind: &'static str,
    pub inputs: Vec<InputRef>,
    pub buffer: usize,
    pub when_full: WhenFull,
    pub config: Arc<dyn StageConfig>,
    /// Canonical form of the stage's own config (its section without the
    /// wiring keys, the global section, and referenced files): equal
    /// fingerprints mean "unchanged" on reload.
    pub fingerprint: String,
}

/// A checked pipeline, ready to run.
#[derive(Clone, Debug)]
pub struct CompiledPipeline {
    /// The file as named on the command line (for messages).
    pub file: String,
    pub base_dir: PathBuf,
    pub global: GlobalConfig,
    pub stages: BTreeMap<String, CompiledStage>,
    pub graph: PipelineGraph,
}

/// How [`compile_with`] compiles. The default runs every check in process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileOptions {
    /// The text has already passed the JSON-Schema step with no error (in
    /// a helper process), so it is not run again here: every other check
    /// (YAML syntax, `global:`, each kind's typed config, the graph) still
    /// is. Running the step in process makes `jsonschema` build its Draft-7
    /// meta-schema validator into a static that is never freed (~11 MB), which
    /// a long-running server should not keep. Set it only for text that
    /// passed: a schema error would otherwise go unreported, and stage kinds
    /// would see sections the schema rejects.
    pub schema_checked: bool,
}

/// Compiles pipeline text with every check in process. `file` names it in
/// diagnostics; relative paths inside resolve against `base_dir`.
pub fn compile(
    text: &str,
    file: &str,
    base_dir: &Path,
    registry: &Registry,
) -> Result<CompiledPipeline, Diagnostics> {
    compile_with(text, file, base_dir, registry, CompileOptions::default())
}

/// [`compile`] with options: see [`CompileOptions`].
pub fn compile_with(
    text: &str,
    file: &str,
    base_dir: &Path,
    registry: &Registry,
    options: CompileOptions,
) -> Result<CompiledPipeline, Diagnostics> {
    let doc = match SourceDoc::parse(text) {
        Ok(d) => d,
        Err(e) => {
            return Err(Diagnostics(vec![Diagnostic {
                file: file.to_string(),
                line: e.pos.line,
                column: e.pos.col,
                path: String::new(),
                message: e.message,
            }]))
        }
    };
    let mut c = Collector {
        file,
        doc: &doc,
        out: Vec::new(),
    };
    let root = match &doc.value {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            c.push(
                &[],
                false,
                format!(
                    "a pipeline is a mapping with `stages:` (and optionally `global:`), found {}",
                    json_type(other)
                ),
            );
            return Err(c.finish());
        }
    };

    if !options.schema_checked {
        check_schema(&mut c, registry);
    }

    let global = compile_global(&mut c, root.get("global"));
    let stages_val = root
        .get("stages")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();

    // A stage whose section broke the schema is not compiled: the kind
    // would only repeat the schema's complaints at worse positions.
    let schema_broken: std::collections::BTreeSet<String> = c
        .out
        .iter()
        .filter_map(|d| {
            let segs = parse_path(&d.path);
            match segs.as_slice() {
                [PathSeg::Key(s), PathSeg::Key(id), ..] if s == "stages" => Some(id.clone()),
                _ => None,
            }
        })
        .collect();
    let mut stages = BTreeMap::new();
    for (id, section) in &stages_val {
        if schema_broken.contains(id) {
            continue;
        }
        if let Some(stage) = compile_stage(&mut c, registry, &global, base_dir, id, section) {
            stages.insert(id.clone(), stage);
        }
    }

    // Edges to stages that are declared but broken are not checked (the
    // broken stage has its own errors); the cycle check needs them all.
    let declared: std::collections::BTreeSet<String> = stages_val.keys().cloned().collect();
    for (id, section) in &stages_val {
        if stages.contains_key(id) {
            continue;
        }
        // A stage that did not compile still names its inputs: an unknown
        // one is worth reporting in the same run.
        let names = section.get("inputs").and_then(Value::as_array);
        for (i, name) in names.into_iter().flatten().enumerate() {
            let Some(r) = name.as_str().map(InputRef::parse) else {
                continue;
            };
            if !declared.contains(&r.stage) {
                let p = [
                    PathSeg::Key("stages".into()),
                    PathSeg::Key(id.clone()),
                    PathSeg::Key("inputs".into()),
                    PathSeg::Index(i),
                ];
                let ids: Vec<String> = declared.iter().cloned().collect();
                c.push(
                    &p,
                    true,
                    format!(
                        "unknown stage {:?} in inputs (stages: {})",
                        r.stage,
                        ids.join(", ")
                    ),
                );
            }
        }
    }
    let all_compiled = stages.len() == stages_val.len();
    let graph = check_graph(&mut c, &stages, &declared, all_compiled);

    if !c.out.is_empty() {
        return Err(c.finish());
    }
    Ok(CompiledPipeline {
        file: file.to_string(),
        base_dir: base_dir.to_path_buf(),
        global,
        stages,
        graph: graph.unwrap_or_default(),
    })
}

struct Collector<'a> {
    file: &'a str,
    doc: &'a SourceDoc,
    out: Vec<Diagnostic>,
}

impl Collector<'_> {
    fn push(&mut self, segs: &[PathSeg], at_value: bool, message: String) {
        let pos: Pos = if at_value {
            self.doc.value_pos_of(segs)
        } else {
            self.doc.pos_of(segs)
        };
        // One diagnostic, one line: editors and CI parse FILE:LINE:COL.
        let message = message
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let d = Diagnostic {
            file: self.file.to_string(),
            line: pos.line,
            column: pos.col,
            path: render_path(segs),
            message,
        };
        if !self.out.contains(&d) {
            self.out.push(d);
        }
    }

    fn finish(mut self) -> Diagnostics {
        self.out
            .sort_by(|a, b| (a.line, a.column, &a.path).cmp(&(b.line, b.column, &b.path)));
        Diagnostics(self.out)
    }
}

/// Splits a rendered path (`rules[0].regex`) into segments.
pub fn parse_path(s: &str) -> Vec<PathSeg> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '.' => {
                if !cur.is_empty() {
                    out.push(PathSeg::Key(std::mem::take(&mut cur)));
                }
            }
            '[' => {
                if !cur.is_empty() {
                    out.push(PathSeg::Key(std::mem::take(&mut cur)));
                }
                let mut num = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    num.push(d);
                }
                match num.parse() {
                    Ok(i) => out.push(PathSeg::Index(i)),
                    Err(_) => out.push(PathSeg::Key(num)),
                }
            }
            '"' => {
                for d in chars.by_ref() {
                    if d == '"' {
                        break;
                    }
                    cur.push(d);
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(PathSeg::Key(cur));
    }
    out
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn short_value(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(57)])
    } else {
        s
    }
}

/// Segments of a JSON pointer, typed by walking the instance.
fn pointer_segments(pointer: &str, root: &Value) -> Vec<PathSeg> {
    let mut segs = Vec::new();
    let mut node = Some(root);
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        match node {
            Some(Value::Array(items)) => {
                let idx = key.parse::<usize>().unwrap_or(0);
                node = items.get(idx);
                segs.push(PathSeg::Index(idx));
            }
            Some(Value::Object(m)) => {
                node = m.get(&key);
                segs.push(PathSeg::Key(key));
            }
            _ => {
                node = None;
                segs.push(PathSeg::Key(key));
            }
        }
    }
    segs
}

/// The JSON-Schema step. Building the validator makes `jsonschema` build
/// (once per process, never freed) its Draft-7 meta-schema validator: see
/// [`CompileOptions::schema_checked`] for how the server avoids that.
fn check_schema(c: &mut Collector<'_>, registry: &Registry) {
    let checked = registry.checked_schema();
    let validator = match &checked.validator {
        Ok(v) => v,
        Err(e) => {
            // A kind shipped an invalid schema: a bug, but report it rather
            // than panic.
            c.push(
                &[],
                false,
                format!("internal error: invalid pipeline schema: {e}"),
            );
            return;
        }
    };
    let root = c.doc.value.clone();
    for err in validator.iter_errors(&root) {
        let segs = pointer_segments(err.instance_path.as_str(), &root);
        describe_schema_error(c, &checked.schema, &segs, &err);
    }
}

fn describe_schema_error(
    c: &mut Collector<'_>,
    schema: &Value,
    segs: &[PathSeg],
    err: &jsonschema::ValidationError<'_>,
) {
    use jsonschema::error::ValidationErrorKind as K;
    let found = &*err.instance;
    match &err.kind {
        K::AdditionalProperties { unexpected } => {
            let parent = err
                .schema_path
                .as_str()
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            let allowed: Vec<String> = resolve_schema_pointer(schema, &parent)
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for key in unexpected {
                let mut p = segs.to_vec();
                p.push(PathSeg::Key(key.clone()));
                let hint = if allowed.is_empty() {
                    String::new()
                } else {
                    match suggest(key, &allowed) {
                        Some(s) => format!(
                            "; did you mean {s:?}? expected one of: {}",
                            allowed.join(", ")
                        ),
                        None => format!("; expected one of: {}", allowed.join(", ")),
                    }
                };
                c.push(&p, false, format!("unknown field {key:?}{hint}"));
            }
        }
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let what = if segs.is_empty() && name == "stages" {
                "missing `stages:` (a mapping from stage id to stage)".to_string()
            } else {
                format!("missing required field {name:?}")
            };
            c.push(segs, false, what);
        }
        K::Enum { options } => {
            let opts: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|o| o.as_str().map(str::to_string).unwrap_or(o.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let is_kind = matches!(segs, [PathSeg::Key(s), PathSeg::Key(_), PathSeg::Key(k)] if s == "stages" && k == "kind");
            let msg = if is_kind {
                let bad = found.as_str().unwrap_or_default();
                match suggest(bad, &opts) {
                    Some(s) => format!(
                        "unknown stage kind {}; did you mean {s:?}? known kinds: {}",
                        short_value(found),
                        opts.join(", ")
                    ),
                    None => format!(
                        "unknown stage kind {}; known kinds: {}",
                        short_value(found),
                        opts.join(", ")
                    ),
                }
            } else {
                format!(
                    "expected one of: {}, found {}",
                    opts.join(", "),
                    short_value(found)
                )
            };
            c.push(segs, true, msg);
        }
        K::Type { kind } => {
            let expected = match kind {
                jsonschema::error::TypeKind::Single(t) => type_word(&t.to_string()),
                jsonschema::error::TypeKind::Multiple(ts) => {
                    let words: Vec<String> = ts.iter().map(|t| type_word(&t.to_string())).collect();
                    words.join(" or ")
                }
            };
            c.push(
                segs,
                true,
                format!(
                    "expected {expected}, found {} {}",
                    json_type(found),
                    short_value(found)
                ),
            );
        }
        K::Pattern { pattern } => {
            let msg = if pattern == DURATION_PATTERN {
                format!(
                    "invalid duration {}: expected e.g. 15s, 1m30s, 250ms, 2h, 1d, 1w",
                    short_value(found)
                )
            } else if segs.len() == 2 && matches!(&segs[0], PathSeg::Key(s) if s == "stages") {
                format!(
                    "invalid stage id {}: ids start with a letter or `_` and contain letters, digits, `_` and `-`",
                    short_value(found)
                )
            } else {
                format!(
                    "{} does not have the expected form (pattern {pattern})",
                    short_value(found)
                )
            };
            c.push(segs, true, msg);
        }
        K::Constant { expected_value } => c.push(
            segs,
            true,
            format!("expected {expected_value}, found {}", short_value(found)),
        ),
        K::PropertyNames { error } => {
            // The offending name is the instance of the inner error.
            let name = error.instance.as_str().unwrap_or_default().to_string();
            let mut p = segs.to_vec();
            p.push(PathSeg::Key(name.clone()));
            let msg = if matches!(segs, [PathSeg::Key(s)] if s == "stages") {
                format!("invalid stage id {name:?}: ids start with a letter or `_` and contain letters, digits, `_` and `-`")
            } else {
                format!("invalid name {name:?}: {}", error)
            };
            c.push(&p, false, msg);
        }
        _ => c.push(segs, true, err.to_string()),
    }
}

/// Follows a schema-location pointer, resolving local `$ref`s on the way
/// (error locations run through them).
fn resolve_schema_pointer<'a>(schema: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut node = schema;
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        if seg == "$ref" {
            let target = node.get("$ref")?.as_str()?.strip_prefix('#')?;
            node = schema.pointer(target)?;
            continue;
        }
        node = match node {
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            Value::Object(m) => m.get(&seg)?,
            _ => return None,
        };
    }
    Some(node)
}

fn type_word(t: &str) -> String {
    match t {
        "object" => "a mapping".into(),
        "array" => "a list".into(),
        "string" => "a string".into(),
        "integer" => "an integer".into(),
        "number" => "a number".into(),
        "boolean" => "a boolean (true/false)".into(),
        "null" => "null".into(),
        other => other.into(),
    }
}

/// The closest candidate within a small edit distance, for "did you mean".
fn suggest(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d > 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn compile_global(c: &mut Collector<'_>, v: Option<&Value>) -> GlobalConfig {
    let mut g = GlobalConfig::default();
    let Some(Value::Object(m)) = v else {
        return g;
    };
    let base = [PathSeg::Key("global".into())];
    let dur = |c: &mut Collector<'_>, key: &str| -> Option<std::time::Duration> {
        let s = m.get(key)?.as_str()?;
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                let mut p = base.to_vec();
                p.push(PathSeg::Key(key.into()));
                // The schema reports malformed strings; this catches what a
                // pattern cannot (overflow).
                if e.reason.contains("too large") {
                    c.push(&p, true, e.to_string());
                }
                None
            }
        }
    };
    let interval_set = m.contains_key("scrape_interval");
    if let Some(d) = dur(c, "scrape_interval") {
        g.scrape_interval = d;
    }
    match dur(c, "scrape_timeout") {
        Some(d) => g.scrape_timeout = d,
        // Prometheus: the default timeout is 10s, but never longer than the
        // interval.
        None if interval_set => g.scrape_timeout = g.scrape_timeout.min(g.scrape_interval),
        None => {}
    }
    if let Some(d) = dur(c, "evaluation_interval") {
        g.evaluation_interval = d;
    }
    if g.scrape_interval.is_zero() {
        c.push(
            &[base[0].clone(), PathSeg::Key("scrape_interval".into())],
            true,
            "scrape_interval must be greater than 0".into(),
        );
    }
    if g.scrape_timeout > g.scrape_interval {
        c.push(
            &[base[0].clone(), PathSeg::Key("scrape_timeout".into())],
            true,
            format!(
                "scrape_timeout ({}) must not be greater than scrape_interval ({})",
                panoptes_model::PromDuration(g.scrape_timeout),
                panoptes_model::PromDuration(g.scrape_interval)
            ),
        );
    }
    if let Some(Value::Object(labels)) = m.get("external_labels") {
        g.external_labels = Labels::from_pairs(
            labels
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))),
        );
    }
    g
}

fn compile_stage(
    c: &mut Collector<'_>,
    registry: &Registry,
    global: &GlobalConfig,
    base_dir: &Path,
    id: &str,
    section: &Value,
) -> Option<CompiledStage> {
    let base = vec![PathSeg::Key("stages".into()), PathSeg::Key(id.into())];
    let obj = section.as_object()?;
    let kind_name = obj.get("kind")?.as_str()?;
    // The schema already reported an unknown kind.
    let kind = registry.get(kind_name)?;
    let inputs: Vec<InputRef> = obj
        .get("inputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(InputRef::parse)
                .collect()
        })
        .unwrap_or_default();
    let buffer = obj
        .get("buffer")
        .and_then(Value::as_u64)
        .map(|b| b as usize)
        .unwrap_or(DEFAULT_BUFFER);
    let when_full = match obj.get("when_full").and_then(Value::as_str) {
        Some("drop") => WhenFull::Drop,
        _ => WhenFull::Block,
    };
    let mut own = obj.clone();
    for k in ENGINE_KEYS {
        own.remove(k);
    }
    let own = Value::Object(own);
    let ctx = CompileContext {
        stage_id: id.to_string(),
        base_dir: base_dir.to_path_buf(),
        global: global.clone(),
    };
    match kind.compile(&ctx, &own) {
        Ok(config) => {
            let fingerprint = format!(
                "{kind_name}\n{}\n{:?}\n{}",
                own,
                global,
                config.fingerprint_extra()
            );
            Some(CompiledStage {
                id: id.to_string(),
                kind: kind.name(),
                inputs,
                buffer,
                when_full,
                config: Arc::from(config),
                fingerprint,
            })
        }
        Err(issues) => {
            for issue in issues {
                let mut p = base.clone();
                p.extend(parse_path(&issue.path));
                c.push(&p, true, issue.message);
            }
            None
        }
    }
}

fn check_graph(
    c: &mut Collector<'_>,
    stages: &BTreeMap<String, CompiledStage>,
    declared: &std::collections::BTreeSet<String>,
    all_compiled: bool,
) -> Option<PipelineGraph> {
    let before = c.out.len();
    let ids: Vec<String> = declared.iter().cloned().collect();
    for (id, st) in stages {
        let base = vec![PathSeg::Key("stages".into()), PathSeg::Key(id.clone())];
        let accepts = st.config.input();
        if accepts.is_none() && !st.inputs.is_empty() {
            let mut p = base.clone();
            p.push(PathSeg::Key("inputs".into()));
            c.push(
                &p,
                false,
                format!(
                    "a {} stage takes no inputs (it is a source); remove `inputs:`",
                    st.kind
                ),
            );
            continue;
        }
        if let Some(t) = accepts {
            if st.inputs.is_empty() && t != MessageType::Targets {
                // Sinks without inputs are legal but useless: say so only
                // for kinds that exist to consume.
            }
        }
        for (i, input) in st.inputs.iter().enumerate() {
            let mut p = base.clone();
            p.push(PathSeg::Key("inputs".into()));
            p.push(PathSeg::Index(i));
            if &input.stage == id {
                c.push(
                    &p,
                    true,
                    format!("stage {id:?} cannot consume its own output"),
                );
                continue;
            }
            if !stages.contains_key(&input.stage) && declared.contains(&input.stage) {
                continue;
            }
            let Some(up) = stages.get(&input.stage) else {
                let hint = match suggest(&input.stage, &ids) {
                    Some(s) => format!("; did you mean {s:?}?"),
                    None => String::new(),
                };
                c.push(
                    &p,
                    true,
                    format!(
                        "unknown stage {:?} in inputs{hint} (stages: {})",
                        input.stage,
                        ids.join(", ")
                    ),
                );
                continue;
            };
            let outs = up.config.outputs();
            let Some(port) = outs.iter().find(|o| o.name == input.port) else {
                let names: Vec<String> = outs
                    .iter()
                    .map(|o| {
                        if o.name.is_empty() {
                            o.name.clone()
                        } else {
                            format!("{}.{}", input.stage, o.name)
                        }
                    })
                    .filter(|n| !n.is_empty())
                    .collect();
                let msg = if outs.is_empty() {
                    format!(
                        "stage {:?} ({}) is a sink and has no output to consume",
                        input.stage, up.kind
                    )
                } else if input.port.is_empty() {
                    format!(
                        "stage {:?} ({}) has no default output; name a port: {}",
                        input.stage,
                        up.kind,
                        names.join(", ")
                    )
                } else {
                    let mut all = names;
                    if outs.iter().any(|o| o.name.is_empty()) {
                        all.insert(0, input.stage.clone());
                    }
                    format!(
                        "stage {:?} has no output port {:?}; its outputs: {}",
                        input.stage,
                        input.port,
                        all.join(", ")
                    )
                };
                c.push(&p, true, msg);
                continue;
            };
            if let Some(t) = accepts {
                if port.message != t {
                    c.push(
                        &p,
                        true,
                        format!(
                            "type mismatch: {input} ({}) emits {} but {id} ({}) accepts {}",
                            up.kind, port.message, st.kind, t
                        ),
                    );
                }
            }
        }
        for store in st.config.store_refs() {
            let mut p = base.clone();
            p.push(PathSeg::Key("store".into()));
            match stages.get(&store) {
                None if declared.contains(&store) => {}
                None => c.push(&p, true, format!("unknown store stage {store:?}")),
                Some(s) if !s.config.provides_store() => c.push(
                    &p,
                    true,
                    format!("stage {store:?} ({}) is not a store", s.kind),
                ),
                _ => {}
            }
        }
    }
    if c.out.len() > before || !all_compiled {
        return None;
    }
    let graph = PipelineGraph::build(stages);
    if let Some(cycle) = graph.find_cycle() {
        let first = cycle[0].clone();
        let p = vec![
            PathSeg::Key("stages".into()),
            PathSeg::Key(first.clone()),
            PathSeg::Key("inputs".into()),
        ];
        let mut shown = cycle.clone();
        shown.push(first);
        c.push(
            &p,
            false,
            format!(
                "cycle among data edges: {} (data must flow one way; a rule stage reads a store through `store:`, not `inputs:`)",
                shown.join(" → ")
            ),
        );
        return None;
    }
    Some(graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rendered_paths() {
        assert_eq!(
            parse_path("rules[0].regex"),
            vec![
                PathSeg::Key("rules".into()),
                PathSeg::Index(0),
                PathSeg::Key("regex".into())
            ]
        );
        assert_eq!(parse_path(""), vec![]);
    }

    #[test]
    fn suggests_close_names() {
        let c = vec!["scrape".to_string(), "store".to_string()];
        assert_eq!(suggest("scrap", &c), Some("scrape".into()));
        assert_eq!(suggest("zzzzzz", &c), None);
    }
}
