//! The targets view of one scrape stage (`/api/v1/targets`): active targets
//! with their health, and targets dropped by relabeling.

use std::collections::BTreeMap;
use std::sync::Arc;

use panoptes_engine::stage::TargetsView;
use panoptes_model::{Labels, TargetStatus};
use parking_lot::{Mutex, RwLock};

/// Shared between the manager (which adds and removes targets) and the
/// scrape loops (which update their own status).
#[derive(Default)]
pub struct ScrapeView {
    active: RwLock<BTreeMap<u64, Arc<Mutex<TargetStatus>>>>,
    dropped: RwLock<Vec<Labels>>,
}

impl ScrapeView {
    pub fn insert(&self, key: u64, status: Arc<Mutex<TargetStatus>>) {
        self.active.write().insert(key, status);
    }

    pub fn remove(&self, key: u64) {
        self.active.write().remove(&key);
    }

    pub fn set_dropped(&self, dropped: Vec<Labels>) {
        *self.dropped.write() = dropped;
    }
}

impl TargetsView for ScrapeView {
    fn targets(&self) -> Vec<TargetStatus> {
        self.active
            .read()
            .values()
            .map(|s| s.lock().clone())
            .collect()
    }

    fn dropped_targets(&self) -> Vec<Labels> {
        self.dropped.read().clone()
    }
}
