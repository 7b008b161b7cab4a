//! Parsers for the Prometheus text exposition format 0.0.4 and OpenMetrics
//! 1.0 text, written with nom, and the text-format writer a Pushgateway
//! serves.
//!
//! [`Parser`] is a zero-copy iterator of [`Entry`] values over one body
//! (what the scraper uses); [`parse_to_batch`] turns a whole body into model
//! samples and metadata (what push ingestion and tests use); [`write_text`]
//! renders samples back as text format 0.0.4. Acceptance rules follow
//! Prometheus's own scrape parsers (`model/textparse`) and the format
//! specifications; see `Parser` for the checks beyond syntax.
//!
//! Where Prometheus's scrape parser is more lenient than the format
//! specifications (and than the reference text parser in
//! `prometheus/common/expfmt`, which the Pushgateway uses), this crate
//! follows the specifications:
//! - label values allow only the escapes `\\`, `\"` and `\n`, and no raw
//!   newline (Prometheus keeps unknown escapes verbatim);
//! - label pairs are separated by commas (Prometheus's text lexer also
//!   accepts blanks), and a metric name is followed by a blank or `{`;
//! - a repeated label name is an error in the parser (Prometheus fails the
//!   scrape for it later, in its scrape loop).
//!
//! Metadata order is not checked by default, as in Prometheus's scrape
//! parser; [`Parser::strict_metadata`] (used by [`parse_to_batch`]) enforces
//! the text format's rules as the Pushgateway does: one HELP and one TYPE
//! per name, TYPE before the family's first sample.
//!
//! Everything else is as in Prometheus: blanks and comments in the text
//! format, the float syntax (Go's, with `NaN`, `Inf`/`Infinity` in any case,
//! no hex or `_`), digits-only millisecond timestamps in text 0.0.4, float
//! seconds in OpenMetrics truncated to milliseconds, `# EOF` with nothing
//! after it, no blank lines or free comments in OpenMetrics, `_created`
//! series passed through as ordinary samples, and HELP escapes (`\\`, `\n`,
//! plus `\"` in OpenMetrics; others kept). Label values are passed on as
//! written; [`normalize_float_label_value`] offers Prometheus 3's `le` /
//! `quantile` normalisation. UTF-8 quoted metric names (`{"my.metric"}`,
//! a post-1.0 extension) are not supported.

mod batch;
mod error;
mod lex;
mod parser;
mod write;

pub use batch::parse_to_batch;
pub use error::ParseError;
pub use lex::{is_valid_label_name, is_valid_metric_name};
pub use parser::{Entry, Exemplar, FastEntry, LabelPairs, Parser, SampleEntry, EXEMPLAR_MAX_CHARS};
pub use write::{format_float, format_openmetrics_float, normalize_float_label_value, write_text};

/// The exposition formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    PrometheusText,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

/// The Accept header Prometheus sends when scraping (OpenMetrics preferred,
/// text 0.0.4 fallback).
pub const SCRAPE_ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl Format {
    /// OpenMetrics for `application/openmetrics-text...`, else PrometheusText
    /// (as Prometheus does, an unknown or missing type is read as text).
    pub fn from_content_type(content_type: &str) -> Format {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }

    /// The Content-Type a body in this format is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_negotiation() {
        assert_eq!(
            Format::from_content_type(
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
            ),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type("Application/OpenMetrics-Text"),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type("text/plain; version=0.0.4; charset=utf-8"),
            Format::PrometheusText
        );
        assert_eq!(Format::from_content_type(""), Format::PrometheusText);
        assert_eq!(
            Format::from_content_type(Format::OpenMetrics.content_type()),
            Format::OpenMetrics
        );
    }
}
