//! The store stage: feeds `Samples` into the Panoptes TSDB and registers it for queries.
