//! Parsers for the Prometheus text exposition format 0.0.4 and OpenMetrics 1.0 text, written with nom
