//! A Pushgateway-compatible push receiver stage
