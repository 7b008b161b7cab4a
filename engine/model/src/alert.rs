//! Alerts as they travel on `Alerts` edges (rule → route), in the shape of
//! Alertmanager's API: labels, annotations, startsAt/endsAt.

use crate::Labels;

/// Where an alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

/// One alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: Labels,
    pub state: AlertState,
    /// Milliseconds since the epoch.
    pub starts_at_ms: i64,
    /// Milliseconds since the epoch; for firing alerts, when it expires if not
    /// re-sent.
    pub ends_at_ms: i64,
    pub generator_url: String,
}

/// One message on an `Alerts` edge.
#[derive(Clone, Debug, Default)]
pub struct AlertBatch {
    pub source: std::sync::Arc<str>,
    pub alerts: Vec<Alert>,
}
