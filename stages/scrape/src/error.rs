//! Why a scrape failed. Every failure turns the scrape into `up 0` with no
//! samples from the body; the message is logged and shown on the targets
//! view, and [`ScrapeError::reason`] labels the failure counter.

use std::time::Duration;

use panoptes_exposition::ParseError;
use panoptes_model::PromDuration;

/// A failed scrape.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ScrapeError {
    #[error("Get {url:?}: {message}")]
    Request { url: String, message: String },
    #[error("scrape timed out after {}", PromDuration(*.0))]
    Timeout(Duration),
    #[error("server returned HTTP status {0}")]
    HttpStatus(String),
    #[error("body size limit exceeded (limit: {0} bytes)")]
    BodySizeLimit(u64),
    #[error("reading the response body: {0}")]
    Body(String),
    #[error("cannot read {path}: {message}")]
    Secret { path: String, message: String },
    #[error("malformed exposition body: {0}")]
    Parse(ParseError),
    #[error("sample limit exceeded (samples: {samples}, limit: {limit})")]
    SampleLimit { samples: usize, limit: usize },
    #[error("{0}")]
    LabelLimit(String),
    #[error("missing metric name (__name__ label) for series {0:.50}")]
    NoMetricName(String),
}

impl ScrapeError {
    /// A short, fixed reason for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Request { .. } => "request",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::HttpStatus(_) => "http_status",
            ScrapeError::BodySizeLimit(_) => "body_size_limit",
            ScrapeError::Body(_) => "body",
            ScrapeError::Secret { .. } => "secret",
            ScrapeError::Parse(_) => "parse",
            ScrapeError::SampleLimit { .. } => "sample_limit",
            ScrapeError::LabelLimit(_) => "label_limit",
            ScrapeError::NoMetricName(_) => "no_metric_name",
        }
    }
}
