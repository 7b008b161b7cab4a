//! Self-metrics of a push_ingest stage, registered in the stage's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::store::Store;

/// Counters and gauges about pushes, groups, expiry and persistence.
#[derive(Clone)]
pub struct StageMetrics {
    pub requests: IntCounterVec,
    pub pushes: IntCounter,
    pub rejected: IntCounterVec,
    pub groups: IntGauge,
    pub series: IntGauge,
    pub expired: IntCounter,
    pub persist_errors: IntCounter,
    pub emitted_batches: IntCounter,
}

impl StageMetrics {
    pub fn new(stage: &str, registry: &Registry) -> Result<StageMetrics, prometheus::Error> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("stage", stage);
        let m = StageMetrics {
            requests: IntCounterVec::new(
                opts(
                    "panoptes_push_requests_total",
                    "Push and delete requests by method and HTTP status code.",
                ),
                &["method", "code"],
            )?,
            pushes: IntCounter::with_opts(opts(
                "panoptes_push_accepted_total",
                "Pushes applied to the store.",
            ))?,
            rejected: IntCounterVec::new(
                opts(
                    "panoptes_push_rejected_total",
                    "Pushes refused, by reason (grouping_key, body, timestamp, inconsistent, limit).",
                ),
                &["reason"],
            )?,
            groups: IntGauge::with_opts(opts("panoptes_push_groups", "Groups held."))?,
            series: IntGauge::with_opts(opts("panoptes_push_series", "Series held in all groups."))?,
            expired: IntCounter::with_opts(opts(
                "panoptes_push_groups_expired_total",
                "Groups dropped by expire_after.",
            ))?,
            persist_errors: IntCounter::with_opts(opts(
                "panoptes_push_persist_errors_total",
                "Failed writes of the persistence file.",
            ))?,
            emitted_batches: IntCounter::with_opts(opts(
                "panoptes_push_emitted_batches_total",
                "Sample batches emitted into the pipeline.",
            ))?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.pushes.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.groups.clone()))?;
        registry.register(Box::new(m.series.clone()))?;
        registry.register(Box::new(m.expired.clone()))?;
        registry.register(Box::new(m.persist_errors.clone()))?;
        registry.register(Box::new(m.emitted_batches.clone()))?;
        Ok(m)
    }

    /// Refreshes the size gauges from the store.
    pub fn update_size(&self, store: &Store) {
        let (groups, series) = store.size();
        self.groups.set(groups as i64);
        self.series.set(series as i64);
    }
}
