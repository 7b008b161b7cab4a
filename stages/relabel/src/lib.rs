//! Prometheus relabeling: the library behind relabel_configs and the relabel stage
