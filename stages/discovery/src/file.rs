//! file_sd: target groups read from JSON/YAML files matched by globs,
//! re-read when the watched directories change and every
//! `refresh_interval`. A file that fails to read or parse keeps its last
//! good groups (logged and counted), as Prometheus does; a file that no
//! longer exists drops its groups.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use panoptes_engine::clock::Clock;
use panoptes_model::TargetGroup;
use tokio::sync::{mpsc, watch};

use crate::config::FileSdConfig;
use crate::groups::{parse_document, DocFormat, DocumentError};
use crate::run::{Shared, Update};

/// The meta label Prometheus sets on file_sd groups.
pub const FILEPATH_LABEL: &str = "__meta_filepath";

/// Why one file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileSdError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Document {
        path: PathBuf,
        source: DocumentError,
    },
}

/// Reads one file_sd file into groups.
pub fn read_file(path: &Path, config_index: usize) -> Result<Vec<TargetGroup>, FileSdError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileSdError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let lower = path.to_string_lossy().to_ascii_lowercase();
    let format = if lower.ends_with(".json") {
        DocFormat::Json
    } else {
        DocFormat::Yaml
    };
    let display = path.to_string_lossy();
    parse_document(
        &text,
        format,
        &format!("file_sd_configs[{config_index}]:{display}"),
        &[(FILEPATH_LABEL, &display)],
    )
    .map_err(|source| FileSdError::Document {
        path: path.to_path_buf(),
        source,
    })
}

/// The state of one file_sd config between refreshes.
pub(crate) struct FileProvider {
    pub index: usize,
    pub config: FileSdConfig,
    last_good: BTreeMap<PathBuf, Vec<TargetGroup>>,
    shared: Arc<Shared>,
}

impl FileProvider {
    pub fn new(index: usize, config: FileSdConfig, shared: Arc<Shared>) -> Self {
        FileProvider {
            index,
            config,
            last_good: BTreeMap::new(),
            shared,
        }
    }

    /// Expands the globs, reads every file and returns the config's groups.
    pub fn refresh(&mut self) -> Vec<TargetGroup> {
        let mut paths = BTreeSet::new();
        for pattern in &self.config.patterns {
            let pattern = pattern.to_string_lossy();
            match glob::glob(&pattern) {
                Ok(entries) => {
                    for entry in entries {
                        match entry {
                            Ok(p) if p.is_file() => {
                                paths.insert(p);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(pattern = %pattern, error = %e, "file_sd: cannot list a matching path")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(pattern = %pattern, error = %e, "file_sd: invalid pattern")
                }
            }
        }
        let mut next = BTreeMap::new();
        let mut failing = BTreeMap::new();
        for path in paths {
            let key = path.to_string_lossy().to_string();
            match read_file(&path, self.index) {
                Ok(groups) => {
                    next.insert(path, groups);
                }
                Err(e) => {
                    tracing::error!(stage = %self.shared.stage, file = %key, error = %e,
                        "file_sd: cannot use file, keeping its last good targets");
                    self.shared.metrics.file_read_errors.inc();
                    failing.insert(key, e.to_string());
                    if let Some(prev) = self.last_good.remove(&path) {
                        next.insert(path, prev);
                    }
                }
            }
        }
        self.shared
            .replace_errors(&format!("file_sd_configs[{}]", self.index), failing);
        self.last_good = next;
        self.last_good.values().flatten().cloned().collect()
    }

    /// Directories to watch: for each pattern, the longest leading part
    /// without glob characters (its directory if the pattern is a file), or
    /// its nearest existing ancestor.
    pub fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs = BTreeSet::new();
        for p in &self.config.patterns {
            let mut dir = PathBuf::new();
            let comps: Vec<_> = p.components().collect();
            for (i, c) in comps.iter().enumerate() {
                let s = c.as_os_str().to_string_lossy();
                if i + 1 == comps.len() || s.contains(['*', '?', '[']) {
                    break;
                }
                dir.push(c);
            }
            // A directory that does not exist yet is seen through its
            // nearest existing ancestor: its creation triggers a refresh,
            // after which it is watched itself.
            let mut d = dir.as_path();
            loop {
                if d.is_dir() {
                    dirs.insert(d.to_path_buf());
                    break;
                }
                match d.parent() {
                    Some(p) if !p.as_os_str().is_empty() => d = p,
                    _ => break,
                }
            }
        }
        dirs
    }
}

/// Runs one file_sd config until shutdown.
pub(crate) async fn run(
    mut provider: FileProvider,
    slot: usize,
    clock: Arc<dyn Clock>,
    updates: mpsc::UnboundedSender<Update>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<()>();
    // The watcher lives as long as this task; dropping it stops watching.
    // It is rebuilt when the set of directories to watch changes.
    let mut watched = provider.watch_dirs();
    let mut _watcher = make_watcher(&watched, ev_tx.clone());
    loop {
        let (p, groups) = match tokio::task::spawn_blocking(move || {
            let g = provider.refresh();
            (provider, g)
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "file_sd: refresh task failed");
                return;
            }
        };
        provider = p;
        if updates.send(Update { slot, groups }).is_err() {
            return;
        }
        let dirs = provider.watch_dirs();
        if dirs != watched {
            _watcher = make_watcher(&dirs, ev_tx.clone());
            watched = dirs;
        }
        let deadline = clock.now_ms() + provider.config.refresh_interval.as_millis() as i64;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = clock.sleep_until(deadline) => {}
            ev = ev_rx.recv() => {
                if ev.is_none() {
                    // The watcher is gone: keep working on the timer alone.
                    clock.sleep_until(deadline).await;
                    continue;
                }
                // Editors and `mv` produce bursts of events: let the burst
                // settle, then read once.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while ev_rx.try_recv().is_ok() {}
            }
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

fn make_watcher(
    dirs: &BTreeSet<PathBuf>,
    tx: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    if dirs.is_empty() {
        return None;
    }
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file_sd: cannot watch files, relying on refresh_interval");
            return None;
        }
    };
    for d in dirs {
        if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "file_sd: cannot watch directory, relying on refresh_interval");
        }
    }
    Some(watcher)
}
