//! The scrape stage's own metrics, registered in the stage's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters shared by the scrape loops of one stage.
pub struct ScrapeMetrics {
    pub scrapes: IntCounter,
    pub failures: IntCounterVec,
    pub samples: IntCounter,
    pub targets: IntGauge,
}

impl ScrapeMetrics {
    pub fn register(registry: &Registry, stage: &str) -> ScrapeMetrics {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("stage", stage);
        let m = ScrapeMetrics {
            scrapes: IntCounter::with_opts(opts("panoptes_scrape_scrapes_total", "Scrapes performed."))
                .expect("valid metric definition"),
            failures: IntCounterVec::new(
                opts("panoptes_scrape_failures_total", "Failed scrapes by reason."),
                &["reason"],
            )
            .expect("valid metric definition"),
            samples: IntCounter::with_opts(opts(
                "panoptes_scrape_samples_total",
                "Samples sent downstream (after metric relabeling, including stale markers and synthetic series).",
            ))
            .expect("valid metric definition"),
            targets: IntGauge::with_opts(opts("panoptes_scrape_targets", "Active scrape targets."))
                .expect("valid metric definition"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 4] = [
            Box::new(m.scrapes.clone()),
            Box::new(m.failures.clone()),
            Box::new(m.samples.clone()),
            Box::new(m.targets.clone()),
        ];
        for c in collectors {
            if let Err(e) = registry.register(c) {
                tracing::warn!(stage, error = %e, "cannot register scrape metric");
            }
        }
        m
    }
}
