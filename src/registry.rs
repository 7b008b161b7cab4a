//! Every stage kind the binary knows. Registering a new kind is one line.

use panoptes_engine::Registry;

/// The registry of all built-in stage kinds.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(panoptes_discovery::DiscoveryKind);
    r.register(panoptes_scrape::ScrapeKind);
    r.register(panoptes_push_ingest::PushIngestKind);
    r.register(panoptes_relabel::RelabelKind);
    r.register(panoptes_store::StoreKind);
    r.register(panoptes_api::ApiKind);
    r.register(panoptes_file::FileKind);
    r
}
