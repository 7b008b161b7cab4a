//! The `panoptes` command line: validate, schema, graph, run and tap a
//! pipeline. Only argument handling and process plumbing live here; the
//! engine and the stages do the work.

mod logging;
mod registry;
mod replay;
mod schema_check;
mod serve;
mod tsdb_cmd;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use panoptes_engine::clock::{Clock, RealClock, VirtualClock};
use panoptes_engine::schema::pipeline_schema;
use panoptes_engine::supervisor::SchemaCheck;
use panoptes_engine::{
    compile, CompiledPipeline, Diagnostic, Diagnostics, Engine, EngineOptions, PipelineSource,
    Supervisor,
};
use panoptes_scrape::FetchMode;

// Samples and label sets are small, short-lived allocations on many
// threads: mimalloc handles that pattern markedly better than glibc's
// allocator (≈20% of scrape-path CPU in the farm bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The pipeline `run` uses when given no file.
const DEFAULT_PIPELINE: &str = include_str!("../pipelines/default.yaml");

#[derive(Parser)]
#[command(
    name = "panoptes",
    version,
    about = "A Prometheus-compatible monitoring system, declared as a pipeline of stages"
)]
struct Cli {
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long = "log.level", global = true, default_value = "info")]
    log_level: String,
    /// Log format: logfmt or json.
    #[arg(long = "log.format", global = true, default_value = "logfmt")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check pipeline files: schema, stage configs and graph. Reports every
    /// error as FILE:LINE:COL; exits 1 if any file is invalid.
    Validate {
        /// Pipeline files; `-` reads one from standard input (named
        /// `<stdin>` in messages; relative paths in it resolve against the
        /// current directory).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        /// The name of the `-` text in messages, as if read from that file
        /// (its relative paths then resolve against NAME's directory).
        /// Used by `run` for its schema-check helper process.
        #[arg(long, value_name = "NAME", hide = true)]
        stdin_name: Option<String>,
        /// Where relative paths in the `-` text resolve (overrides the
        /// directory of --stdin-name).
        #[arg(long, value_name = "DIR", hide = true)]
        stdin_base_dir: Option<PathBuf>,
    },
    /// Print the pipeline JSON Schema (for editors and CI).
    Schema,
    /// Print a pipeline as a Graphviz DOT graph.
    Graph { file: PathBuf },
    /// Run a pipeline (the embedded default pipeline when no file is given).
    Run {
        file: Option<PathBuf>,
        /// Address of the main HTTP listener (/metrics, APIs, health, tap).
        #[arg(long, default_value = "0.0.0.0:9090")]
        listen: SocketAddr,
        /// Directory under which stores keep their data by default.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Reload when the pipeline file changes.
        #[arg(long)]
        watch: bool,
        /// Serve the admin endpoints (TSDB snapshot, delete_series,
        /// clean_tombstones), off by default as in Prometheus.
        #[arg(long)]
        enable_admin_api: bool,
        /// Replay a recording (made by `panoptes record`) instead of
        /// scraping the network, on a virtual clock, as fast as the CPU
        /// allows; exits when the recording ends.
        #[arg(long, value_name = "DIR")]
        replay: Option<PathBuf>,
    },
    /// Run a pipeline for a while and record every raw scrape response
    /// into a plain, editable directory, for `run --replay`.
    Record {
        file: PathBuf,
        /// How long to record (e.g. 5m).
        #[arg(long)]
        duration: String,
        /// Directory to write the recording into.
        #[arg(long)]
        out: PathBuf,
        /// Address of the main HTTP listener while recording.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Look into a store's directory (the store must not be running).
    Tsdb {
        #[command(subcommand)]
        command: TsdbCommand,
    },
    /// Print what flows out of a stage of a running pipeline, live.
    Tap {
        /// The running Panoptes, e.g. http://127.0.0.1:9090
        url: String,
        /// Stage output to watch: an id, `stage.port`, or a glob (`scrape_*`).
        stage: String,
        /// Stop after this many items.
        #[arg(long)]
        limit: Option<u64>,
        /// Keep one item in N (sampling).
        #[arg(long, default_value_t = 1)]
        every: u64,
        /// Print the raw JSON lines.
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
    },
}

#[derive(Subcommand)]
enum TsdbCommand {
    /// Cardinality: top metric names, label pairs, label names; churn per block.
    Analyze {
        dir: PathBuf,
        /// How many entries each list shows.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Samples as text lines (`name{labels} value timestamp_ms`).
    Dump {
        dir: PathBuf,
        /// Series selector (repeatable), e.g. 'up{job="node"}'; default: all.
        #[arg(long = "match")]
        matchers: Vec<String>,
        /// Earliest timestamp, ms.
        #[arg(long, default_value_t = i64::MIN)]
        min_time: i64,
        /// Latest timestamp, ms.
        #[arg(long, default_value_t = i64::MAX)]
        max_time: i64,
    },
}

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e` (v3), which
/// the Rust bindings do not name.
#[cfg(target_os = "linux")]
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// mimalloc's default on Linux commits arena memory eagerly, and memory
/// freed back to a committed arena stays resident. Committing on demand lets
/// freed pages go: ~20 % less RSS in the farm bench at the same CPU. It must
/// be set before the first allocation creates an arena, so it runs as an ELF
/// initialiser, and reads the environment without allocating; an explicit
/// `MIMALLOC_ARENA_EAGER_COMMIT` still wins.
#[cfg(target_os = "linux")]
extern "C" fn commit_arenas_on_demand() {
    // SAFETY: getenv with a NUL-terminated name during process start-up,
    // before any thread exists; mi_option_set is a plain store.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static COMMIT_ARENAS_ON_DEMAND: extern "C" fn() = commit_arenas_on_demand;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`panoptes schema | head`), as CLI tools do.
    #[cfg(unix)]
    // SAFETY: resetting a signal disposition at startup, before any thread
    // exists, has no memory-safety implications.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Err(e) = logging::init(&cli.log_level, &cli.log_format) {
        eprintln!("panoptes: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Validate {
            files,
            format,
            stdin_name,
            stdin_base_dir,
        } => validate(&files, format, stdin_name, stdin_base_dir),
        Command::Schema => {
            let schema = pipeline_schema(&registry::registry());
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { file } => graph(&file),
        Command::Run {
            file,
            listen,
            data_dir,
            watch,
            enable_admin_api,
            replay,
        } => run(RunOptions {
            file,
            listen,
            data_dir,
            watch,
            enable_admin_api,
            mode: match replay {
                Some(dir) => Mode::Replay(dir),
                None => Mode::Live,
            },
        }),
        Command::Record {
            file,
            duration,
            out,
            listen,
        } => record(file, &duration, out, listen),
        Command::Tsdb { command } => match command {
            TsdbCommand::Analyze { dir, limit } => tsdb_cmd::analyze(&dir, limit),
            TsdbCommand::Dump {
                dir,
                matchers,
                min_time,
                max_time,
            } => tsdb_cmd::dump(&dir, &matchers, min_time, max_time),
        },
        Command::Tap {
            url,
            stage,
            limit,
            every,
            format,
        } => tap(&url, &stage, limit, every, format),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("panoptes: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The name `validate -` gives standard input in messages by default.
const STDIN_NAME: &str = "<stdin>";

fn validate(
    files: &[PathBuf],
    format: OutputFormat,
    stdin_name: Option<String>,
    stdin_base_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let stdin_count = files.iter().filter(|f| f.as_os_str() == "-").count();
    if stdin_count > 1 {
        anyhow::bail!("`-` (standard input) can be given only once");
    }
    let registry = registry::registry();
    let mut results: Vec<(String, Result<CompiledPipeline, Diagnostics>)> = Vec::new();
    for file in files {
        if file.as_os_str() == "-" {
            let name = stdin_name.clone().unwrap_or_else(|| STDIN_NAME.to_string());
            // As for a file: relative paths resolve against the directory
            // of the name the text stands for (`<stdin>`: the current one).
            let base = stdin_base_dir
                .clone()
                .unwrap_or_else(|| match Path::new(&name).parent() {
                    Some(p) if stdin_name.is_some() && !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                });
            let result = read_stdin(&name).and_then(|text| compile(&text, &name, &base, &registry));
            results.push((name, result));
        } else {
            let result = PipelineSource::File(file.clone()).compile(&registry);
            results.push((file.display().to_string(), result));
        }
    }
    let all_ok = results.iter().all(|(_, r)| r.is_ok());
    match format {
        OutputFormat::Text => {
            for (name, result) in &results {
                match result {
                    Ok(p) => println!(
                        "{name}: valid ({} stages, {} edges)",
                        p.stages.len(),
                        p.graph.graph.edge_count()
                    ),
                    Err(d) => {
                        println!("{d}");
                        println!(
                            "{name}: invalid ({} error{})",
                            d.0.len(),
                            if d.0.len() == 1 { "" } else { "s" }
                        );
                    }
                }
            }
        }
        OutputFormat::Json => {
            let no_errors: &[Diagnostic] = &[];
            let report = schema_check::report(results.iter().map(|(name, r)| {
                let errors = match r {
                    Ok(_) => no_errors,
                    Err(d) => d.0.as_slice(),
                };
                (name.as_str(), errors)
            }));
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The whole of standard input, or why not as a diagnostic (as for an
/// unreadable file).
fn read_stdin(name: &str) -> Result<String, Diagnostics> {
    use std::io::Read as _;
    let mut text = String::new();
    match std::io::stdin().read_to_string(&mut text) {
        Ok(_) => Ok(text),
        Err(e) => Err(Diagnostics(vec![Diagnostic {
            file: name.to_string(),
            line: 1,
            column: 1,
            path: String::new(),
            message: format!("cannot read the pipeline from standard input: {e}"),
        }])),
    }
}

fn graph(file: &Path) -> anyhow::Result<ExitCode> {
    match PipelineSource::File(file.to_path_buf()).compile(&registry::registry()) {
        Ok(p) => {
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into());
            print!("{}", p.graph.to_dot(&name));
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => {
            eprintln!("{d}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The address other processes (and the self-scrape) use to reach a
/// listener bound to `listen`.
fn reachable(listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        format!("127.0.0.1:{}", listen.port())
    } else {
        listen.to_string()
    }
}

/// How `run` gets its scrapes.
enum Mode {
    /// From the network, until a signal.
    Live,
    /// From the network for a while, recording every response.
    Record { out: PathBuf, duration: Duration },
    /// From a recording, on a virtual clock, until it ends.
    Replay(PathBuf),
}

struct RunOptions {
    file: Option<PathBuf>,
    listen: SocketAddr,
    data_dir: PathBuf,
    watch: bool,
    enable_admin_api: bool,
    mode: Mode,
}

fn record(
    file: PathBuf,
    duration: &str,
    out: PathBuf,
    listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    let duration =
        panoptes_model::parse_duration(duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // Stores in the recorded pipeline write to a scratch directory: the
    // recording is the scrape responses, not what the stages made of them.
    let scratch = tempfile::tempdir().context("cannot create a scratch data directory")?;
    run(RunOptions {
        file: Some(file),
        listen,
        data_dir: scratch.path().to_path_buf(),
        watch: false,
        enable_admin_api: false,
        mode: Mode::Record { out, duration },
    })
}

fn run(opts: RunOptions) -> anyhow::Result<ExitCode> {
    let RunOptions {
        file,
        listen,
        data_dir,
        watch,
        enable_admin_api,
        mode,
    } = opts;
    let registry = registry::registry();
    let source = match &file {
        Some(f) => PipelineSource::File(f.clone()),
        None => PipelineSource::Embedded {
            name: "<default pipeline>".into(),
            text: DEFAULT_PIPELINE.replace("LISTEN_ADDRESS", &reachable(listen)),
        },
    };
    // The JSON-Schema step runs in a short-lived child process, at start
    // and on every reload: in process, `jsonschema` would keep its
    // meta-schema validator (~11 MB) for the life of the server. See
    // schema_check.rs. Without a child, the step runs in process.
    let schema_check: Option<Arc<dyn SchemaCheck>> =
        match schema_check::ChildSchemaCheck::this_binary() {
            Some(c) => Some(Arc::new(c)),
            None => {
                tracing::warn!("cannot find this binary to check the pipeline schema in a helper process; checking in this process");
                None
            }
        };
    let compiled = match source.compile_checked(&registry, schema_check.as_deref()) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let data_dir_shown = data_dir.display().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("panoptes-io")
        .build()
        .context("cannot start the async runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("cannot listen on {listen}"))?;
    let mut virtual_clock = None;
    let clock: Arc<dyn Clock> = match &mode {
        Mode::Live => Arc::new(RealClock),
        Mode::Record { out, .. } => {
            panoptes_scrape::set_fetch_mode(FetchMode::Record(out.clone()));
            Arc::new(RealClock)
        }
        Mode::Replay(dir) => {
            let times = replay::response_times(dir)?;
            let first = *times
                .first()
                .ok_or_else(|| anyhow::anyhow!("{} holds no recorded responses", dir.display()))?;
            panoptes_scrape::set_fetch_mode(FetchMode::Replay(dir.clone()));
            let clock = VirtualClock::new(first - 1);
            virtual_clock = Some((clock.clone(), times));
            Arc::new(clock)
        }
    };
    let engine = Engine::start(
        compiled,
        EngineOptions {
            data_dir,
            clock,
            runtime: rt.handle().clone(),
            enable_admin_api,
        },
    )
    .context("cannot start the pipeline")?;
    let sup = Supervisor::new(engine, registry, source);
    if let Some(check) = schema_check {
        sup.set_schema_check(check);
    }
    sup.set_flags(
        [
            (
                "config.file",
                file.as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default(),
            ),
            ("web.listen-address", listen.to_string()),
            ("storage.data-dir", data_dir_shown.clone()),
            ("watch", watch.to_string()),
            ("web.enable-admin-api", enable_admin_api.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    );
    tracing::info!(listen = %listen, pipeline = %file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "<default>".into()), "Panoptes is running");

    let router = sup.router();
    let stop_http = sup.shutdown_requested();
    rt.spawn(serve::serve(
        listener,
        router,
        stop_http,
        serve::CONNECTION_THREADS,
    ));

    #[cfg(unix)]
    {
        let s = sup.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the pipeline");
                let s = s.clone();
                let _ = tokio::task::spawn_blocking(move || s.reload()).await;
            }
        });
    }

    let _watcher = match (&file, watch) {
        (Some(f), true) => Some(watch_file(f, sup.clone())?),
        (None, true) => anyhow::bail!("--watch needs a pipeline file"),
        _ => None,
    };

    match mode {
        Mode::Replay(dir) => {
            if let Some((clock, times)) = virtual_clock {
                let s = sup.clone();
                let steps = times.len();
                let t = std::time::Instant::now();
                std::thread::Builder::new()
                    .name("replay".into())
                    .spawn(move || {
                        replay::drive(&clock, &times, &s);
                        s.request_shutdown();
                    })?;
                tracing::info!(recording = %dir.display(), steps, "replaying on the virtual clock");
                let mut done = sup.shutdown_requested();
                rt.block_on(async {
                    let _ = done.wait_for(|v| *v).await;
                });
                tracing::info!(took_ms = t.elapsed().as_millis() as u64, "replay finished");
                sup.shutdown();
                rt.shutdown_timeout(Duration::from_secs(5));
                return Ok(ExitCode::SUCCESS);
            }
        }
        Mode::Record { out, duration } => {
            let s = sup.clone();
            rt.spawn(async move {
                tokio::time::sleep(duration).await;
                tracing::info!(recording = %out.display(), "recording finished");
                s.request_shutdown();
            });
        }
        Mode::Live => {}
    }

    let mut requested = sup.shutdown_requested();
    rt.block_on(async {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        #[cfg(unix)]
        let term_fut = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term_fut = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            _ = term_fut => tracing::info!("SIGTERM: shutting down"),
            _ = requested.wait_for(|v| *v) => tracing::info!("shutdown requested over HTTP"),
        }
    });
    sup.request_shutdown();
    sup.shutdown();
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(ExitCode::SUCCESS)
}

/// Reloads when the pipeline file changes (editors often replace the file,
/// so the directory is watched and events are debounced).
fn watch_file(file: &Path, sup: Arc<Supervisor>) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let target = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let watched = target.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if ev.paths.iter().any(|p| p == &watched) {
                let _ = tx.send(());
            }
        }
    })
    .context("cannot watch the pipeline file")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    std::thread::Builder::new()
        .name("pipeline-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Let the editor finish writing; coalesce bursts.
                std::thread::sleep(Duration::from_millis(250));
                while rx.try_recv().is_ok() {}
                tracing::info!("pipeline file changed: reloading");
                let _ = sup.reload();
            }
        })?;
    Ok(watcher)
}

fn tap(
    url: &str,
    stage: &str,
    limit: Option<u64>,
    every: u64,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let base = url.trim_end_matches('/');
    let base = if base.contains("://") {
        base.to_string()
    } else {
        format!("http://{base}")
    };
    let mut query = vec![("stage", stage.to_string()), ("every", every.to_string())];
    if let Some(l) = limit {
        query.push(("limit", l.to_string()));
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .context("cannot build an HTTP client")?;
    let resp = client
        .get(format!("{base}/api/v1/tap"))
        .query(&query)
        .send()
        .with_context(|| format!("cannot reach {base}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(body);
        anyhow::bail!("tap refused ({status}): {msg}");
    }
    for line in BufReader::new(resp).lines() {
        let line = line.context("tap stream interrupted")?;
        if format == OutputFormat::Json {
            println!("{line}");
        } else {
            println!("{}", render_tap_line(&line));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One tapped item as a readable line.
fn render_tap_line(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let origin = if s("port").is_empty() {
        s("stage")
    } else {
        format!("{}.{}", s("stage"), s("port"))
    };
    let labels = |key: &str| -> String {
        let Some(obj) = v.get(key).and_then(|x| x.as_object()) else {
            return String::new();
        };
        let name = obj.get("__name__").and_then(|x| x.as_str()).unwrap_or("");
        let rest: Vec<String> = obj
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, x)| format!("{k}={}", x))
            .collect();
        if rest.is_empty() && !name.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", rest.join(", "))
        }
    };
    match s("type").as_str() {
        "sample" => format!(
            "[{origin}] {} {} @{}",
            labels("labels"),
            s("value"),
            v.get("timestamp")
                .map(|t| t.to_string())
                .unwrap_or_default()
        ),
        "target_group" => {
            let addrs: Vec<String> = v
                .get("targets")
                .and_then(|t| t.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.get("__address__").and_then(|x| x.as_str()))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "[{origin}] targets {} from {}: {} {}",
                addrs.len(),
                s("source"),
                addrs.join(", "),
                labels("labels")
            )
        }
        "alert" => format!("[{origin}] alert {} {}", s("state"), labels("labels")),
        _ => line.to_string(),
    }
}
