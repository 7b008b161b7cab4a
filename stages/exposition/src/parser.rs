//! The streaming parser: an iterator of entries (HELP, TYPE, UNIT, samples)
//! over one exposition body, in either format.
//!
//! The body is cut into lines with `memchr`; each line is UTF-8-checked once
//! and parsed by the nom line grammars below, which borrow every name and
//! value from the body. The first error ends the iteration.

use std::borrow::Cow;
use std::collections::hash_map::Entry as MapEntry;

use memchr::memchr;
use nom::branch::alt;
use nom::bytes::complete::tag;
use nom::character::complete::{char, space1};
use nom::combinator::value;
use nom::sequence::{delimited, preceded};
use nom::Parser as _;
use panoptes_model::MetricType;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::error::{
    err_expected, err_invalid, expected, invalid, locate, PErr, ParseError, Problem, Res,
};
use crate::lex::{
    label_name, metric_name, number_message, parse_float, parse_int_timestamp, quoted_value,
    seconds_to_ms, unescape_help,
};
use crate::Format;

/// Label pairs as written (name, unescaped value); inline up to 8 pairs so
/// that a typical sample costs no heap allocation.
pub type LabelPairs<'a> = SmallVec<[(&'a str, Cow<'a, str>); 8]>;

/// The most characters OpenMetrics allows in an exemplar's label names and
/// values together.
pub const EXEMPLAR_MAX_CHARS: usize = 128;

/// One item of an exposition body.
// Samples are by far the most common entry and are kept inline (no Box) so
// that parsing a sample allocates nothing; the size gap is deliberate.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// `# HELP family text`, the text unescaped.
    Help { family: &'a str, help: Cow<'a, str> },
    /// `# TYPE family type` (`untyped` is reported as `Unknown`).
    Type {
        family: &'a str,
        metric_type: MetricType,
    },
    /// `# UNIT family unit` (OpenMetrics only).
    Unit { family: &'a str, unit: &'a str },
    /// One sample line.
    Sample(SampleEntry<'a>),
}

/// One sample line, borrowing from the body.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleEntry<'a> {
    /// The exact bytes `name{labels}` as written (a cache key for the
    /// scraper, like Prometheus's series cache).
    pub series: &'a str,
    /// The metric name as written (for OpenMetrics counters, with `_total`;
    /// `_created` series are ordinary samples, as Prometheus ingests them).
    pub name: &'a str,
    /// Labels as written (excluding the name), values unescaped.
    pub labels: LabelPairs<'a>,
    /// The value; `NaN` is an ordinary NaN, never the staleness marker.
    pub value: f64,
    /// Milliseconds; OpenMetrics' float seconds are converted.
    pub timestamp_ms: Option<i64>,
    /// OpenMetrics only.
    pub exemplar: Option<Exemplar<'a>>,
}

/// An OpenMetrics exemplar (` # {labels} value [timestamp]` after a sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar<'a> {
    /// Label pairs as written, values unescaped (a `Vec`: exemplars are rare).
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    pub value: f64,
    /// Milliseconds (converted from the exemplar's float seconds).
    pub timestamp_ms: Option<i64>,
}

/// An iterator of the entries of one body. After an `Err` it yields `None`.
///
/// It accepts what Prometheus's scrape parsers accept (see the crate docs for
/// the few deviations), including metadata in any order and repeated; with
/// [`Parser::strict_metadata`] it also enforces the text format's metadata
/// rules, as the Pushgateway does. In OpenMetrics the body must end with
/// `# EOF`.
pub struct Parser<'a> {
    body: &'a [u8],
    format: Format,
    /// Start of the next line.
    pos: usize,
    /// Number of the next line, 1-based.
    line_no: usize,
    done: bool,
    saw_eof: bool,
    families: Families<'a>,
    /// Start and number of the line of the last [`FastEntry::Sample`].
    last_fast: (usize, usize),
}

/// One line read by [`Parser::next_fast`].
// Inline like `Entry`: the hot path moves these once and allocates nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum FastEntry<'a> {
    /// A text-format sample line whose labels were not parsed. `series` is
    /// the exact `name{labels}` text, **not validated**: a caller that does
    /// not recognise it (as text an earlier parse accepted) must call
    /// [`Parser::reparse_last`] for the validated entry or the error.
    Sample {
        series: &'a [u8],
        value: f64,
        timestamp_ms: Option<i64>,
    },
    /// Any other entry, fully parsed.
    Parsed(Entry<'a>),
}

impl<'a> Parser<'a> {
    /// A parser over `body` in `format`.
    pub fn new(body: &'a [u8], format: Format) -> Self {
        Parser {
            body,
            format,
            pos: 0,
            line_no: 1,
            done: false,
            saw_eof: false,
            families: Families::default(),
            last_fast: (0, 1),
        }
    }

    /// Like [`Iterator::next`], but a text-format sample line comes back as
    /// [`FastEntry::Sample`] with its series text unparsed: a scraper that
    /// finds the text in its series cache needs neither the labels nor their
    /// validation, which were done when the text was first seen. Lines the
    /// quick scan cannot read (and OpenMetrics, and strict metadata mode) go
    /// through the full parser.
    pub fn next_fast(&mut self) -> Option<Result<FastEntry<'a>, ParseError>> {
        if self.format == Format::PrometheusText
            && !self.families.strict
            && !self.done
            && self.pos < self.body.len()
        {
            let start = self.pos;
            let end = memchr(b'\n', &self.body[start..]).map_or(self.body.len(), |n| start + n);
            if let Some((series, value, timestamp_ms)) = scan_text_sample(&self.body[start..end]) {
                self.last_fast = (start, self.line_no);
                self.pos = end + 1;
                self.line_no += 1;
                return Some(Ok(FastEntry::Sample {
                    series,
                    value,
                    timestamp_ms,
                }));
            }
        }
        self.next().map(|r| r.map(FastEntry::Parsed))
    }

    /// Fully parses the line the last [`FastEntry::Sample`] came from: the
    /// validated entry, or the error the line deserves.
    pub fn reparse_last(&mut self) -> Result<Entry<'a>, ParseError> {
        let (start, line_no) = self.last_fast;
        self.pos = start;
        self.line_no = line_no;
        self.done = false;
        self.next().unwrap_or_else(|| {
            Err(ParseError {
                line: line_no,
                column: 1,
                message: "expected a sample line".to_string(),
            })
        })
    }

    /// Also enforces the text format's metadata rules, as its specification
    /// and the Pushgateway's parser (`expfmt`) do: at most one HELP and one
    /// TYPE line per metric name, and the TYPE line before the first sample
    /// of its family. Prometheus's scrape parser does not check these (some
    /// exporters repeat families and Prometheus scrapes them), so a scraper
    /// leaves this off and a push receiver turns it on. No effect on
    /// OpenMetrics, where Go's client library emits colliding families
    /// (`go_memstats_alloc_bytes` gauge and counter) that Prometheus accepts.
    pub fn strict_metadata(mut self) -> Self {
        self.families.strict = self.format == Format::PrometheusText;
        self
    }

    /// The format this parser reads.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The type declared for `family` so far (by a `# TYPE` line), if any.
    pub fn declared_type(&self, family: &str) -> Option<MetricType> {
        self.families.meta.get(family).and_then(|m| m.metric_type)
    }

    fn fail(&mut self, err: ParseError) -> Option<Result<Entry<'a>, ParseError>> {
        self.done = true;
        Some(Err(err))
    }

    /// Where the body ends, as a line and column, for "missing # EOF".
    fn end_position(&self) -> (usize, usize) {
        match self.body.last() {
            None | Some(b'\n') => (self.line_no, 1),
            Some(_) => {
                let start = memchr::memrchr(b'\n', self.body).map_or(0, |p| p + 1);
                let last = String::from_utf8_lossy(&self.body[start..]);
                (self.line_no - 1, last.chars().count() + 1)
            }
        }
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.pos >= self.body.len() {
                self.done = true;
                if self.format == Format::OpenMetrics && !self.saw_eof {
                    let (line, column) = self.end_position();
                    return Some(Err(ParseError {
                        line,
                        column,
                        message: "expected \"# EOF\" as the last line, found end of input"
                            .to_string(),
                    }));
                }
                return None;
            }
            let line_no = self.line_no;
            if self.saw_eof {
                return self.fail(ParseError {
                    line: line_no,
                    column: 1,
                    message: "unexpected content after \"# EOF\"; it must be the last line"
                        .to_string(),
                });
            }
            let start = self.pos;
            let end = memchr(b'\n', &self.body[start..]).map_or(self.body.len(), |n| start + n);
            self.pos = end + 1;
            self.line_no += 1;
            let raw: &'a [u8] = &self.body[start..end];
            // The labels are collected here and moved once, into the
            // returned entry: samples are large and this is the hot path.
            let mut labels = LabelPairs::new();
            let parsed = match self.format {
                Format::PrometheusText => self.text_line(raw, line_no, &mut labels),
                Format::OpenMetrics => self.om_line(raw, line_no, &mut labels),
            };
            match parsed {
                Ok(Line::Sample(h)) => {
                    return Some(Ok(Entry::Sample(SampleEntry {
                        series: h.series,
                        name: h.name,
                        labels,
                        value: h.value,
                        timestamp_ms: h.timestamp_ms,
                        exemplar: h.exemplar,
                    })))
                }
                Ok(Line::Help { family, help }) => return Some(Ok(Entry::Help { family, help })),
                Ok(Line::Type {
                    family,
                    metric_type,
                }) => {
                    return Some(Ok(Entry::Type {
                        family,
                        metric_type,
                    }))
                }
                Ok(Line::Unit { family, unit }) => return Some(Ok(Entry::Unit { family, unit })),
                Ok(Line::Skip) => continue,
                Err(e) => return self.fail(e),
            }
        }
    }
}

/// What one line turned out to be (small: metadata does not carry the
/// room a sample's inline labels need).
enum Line<'a> {
    /// A blank line, a comment or `# EOF`.
    Skip,
    Help {
        family: &'a str,
        help: Cow<'a, str>,
    },
    Type {
        family: &'a str,
        metric_type: MetricType,
    },
    Unit {
        family: &'a str,
        unit: &'a str,
    },
    /// A sample, whose labels were written to the caller's buffer.
    Sample(SampleHead<'a>),
}

/// A sample without its labels.
struct SampleHead<'a> {
    series: &'a str,
    name: &'a str,
    value: f64,
    timestamp_ms: Option<i64>,
    exemplar: Option<Exemplar<'a>>,
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// `b` as text if it is ASCII (numbers are; a short token's ASCII check is
/// cheaper than a general UTF-8 validation call).
fn ascii(b: &[u8]) -> Option<&str> {
    if b.is_ascii() {
        // SAFETY: ASCII bytes are valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        None
    }
}

/// The quick read of a text-format sample line behind [`Parser::next_fast`]:
/// the series text (name, blanks, `{...}` up to the closing brace outside
/// quotes, exactly the span the full parser reports), the value and the
/// timestamp, with the same number parsers as the full path. `None` for
/// anything else or anything odd; the full parser then decides.
fn scan_text_sample(raw: &[u8]) -> Option<(&[u8], f64, Option<i64>)> {
    let name_start = raw.iter().position(|&c| !is_blank(c))?;
    let name_len = crate::lex::metric_name_len(&raw[name_start..]);
    if name_len == 0 {
        return None;
    }
    let name_end = name_start + name_len;
    let brace = name_end + raw[name_end..].iter().position(|&c| !is_blank(c))?;
    let series_end = if raw[brace] == b'{' {
        // Outside quotes only '"' and '}' matter; inside, '"' and '\\'.
        let mut j = brace + 1;
        loop {
            j += crate::lex::find_either(&raw[j..], b'"', b'}')?;
            if raw[j] == b'}' {
                break j + 1;
            }
            j += 1;
            loop {
                j += crate::lex::find_either(&raw[j..], b'"', b'\\')?;
                if raw[j] == b'"' {
                    j += 1;
                    break;
                }
                j += 2;
                if j > raw.len() {
                    return None;
                }
            }
        }
    } else {
        name_end
    };
    let rest = &raw[series_end..];
    let blanks = rest.iter().position(|&c| !is_blank(c))?;
    if blanks == 0 {
        return None;
    }
    let rest = &rest[blanks..];
    let value_len = rest.iter().position(|&c| is_blank(c)).unwrap_or(rest.len());
    let value = parse_float(ascii(&rest[..value_len])?).ok()?;
    let rest = &rest[value_len..];
    let Some(t) = rest.iter().position(|&c| !is_blank(c)) else {
        return Some((&raw[name_start..series_end], value, None));
    };
    let rest = &rest[t..];
    let ts_len = rest.iter().position(|&c| is_blank(c)).unwrap_or(rest.len());
    let ts = parse_int_timestamp(ascii(&rest[..ts_len])?).ok()?;
    if !rest[ts_len..].iter().all(|&c| is_blank(c)) {
        return None;
    }
    Some((&raw[name_start..series_end], value, Some(ts)))
}

/// Checks a line is UTF-8, pointing at the first bad byte otherwise.
fn utf8_line(raw: &[u8], line_no: usize) -> Result<&str, ParseError> {
    std::str::from_utf8(raw).map_err(|e| {
        let valid = e.valid_up_to();
        let before = String::from_utf8_lossy(&raw[..valid]);
        ParseError {
            line: line_no,
            column: before.chars().count() + 1,
            message: format!("invalid UTF-8 byte 0x{:02x}", raw[valid]),
        }
    })
}

fn skip_blanks(i: &str) -> &str {
    // Most tokens are not preceded by blanks: answer that case cheaply.
    if !matches!(i.as_bytes().first(), Some(b' ' | b'\t')) {
        return i;
    }
    let n = i
        .bytes()
        .position(|c| c != b' ' && c != b'\t')
        .unwrap_or(i.len());
    // Blanks are ASCII, so `n` is a char boundary.
    &i[n..]
}

/// Splits a token off `i` at the first byte for which `stop` is true.
fn token(i: &str, stop: impl Fn(u8) -> bool) -> (&str, &str) {
    let n = i.bytes().position(stop).unwrap_or(i.len());
    // `stop` only matches ASCII bytes, so `n` is a char boundary.
    (&i[n..], &i[..n])
}

/// Maps any error of `p` to "expected `what`" at the start of its input.
fn expect<'a, O>(
    what: &'static str,
    mut p: impl nom::Parser<&'a str, Output = O, Error = PErr<'a>>,
) -> impl FnMut(&'a str) -> Res<'a, O> {
    move |i: &'a str| {
        p.parse(i).map_err(|e| {
            e.map(|_| PErr {
                at: i,
                problem: Problem::Expected(what),
            })
        })
    }
}

fn float_token<'a>(at: &'a str, tok: &'a str, kind: &str) -> Result<f64, nom::Err<PErr<'a>>> {
    parse_float(tok).map_err(|e| {
        nom::Err::Error(PErr {
            at,
            problem: Problem::Invalid(number_message(kind, tok, e)),
        })
    })
}

fn om_timestamp<'a>(at: &'a str, tok: &'a str, kind: &str) -> Result<i64, nom::Err<PErr<'a>>> {
    let seconds = float_token(at, tok, kind)?;
    if !seconds.is_finite() {
        return Err(nom::Err::Error(PErr {
            at,
            problem: Problem::Invalid(format!("invalid {kind} {tok:?}: must be a finite number")),
        }));
    }
    Ok(seconds_to_ms(seconds))
}

/// Parses `name="value",...}` (after the `{`) into `labels`, rejecting
/// duplicate names. The text format allows blanks around every token; the
/// OpenMetrics grammar allows none. A trailing comma is accepted in both, as
/// Prometheus does.
fn label_set<'a>(
    mut i: &'a str,
    labels: &mut LabelPairs<'a>,
    blanks: bool,
    what: &'static str,
) -> Res<'a, ()> {
    let ws = |s: &'a str| if blanks { skip_blanks(s) } else { s };
    loop {
        i = ws(i);
        if let Some(rest) = i.strip_prefix('}') {
            return Ok((rest, ()));
        }
        let (r, name) = label_name(i, what)?;
        // Cheap byte checks before the full comparison: label sets are
        // small and most names differ in length or first byte.
        let first = name.as_bytes().first();
        let clash = |n: &str| n.len() == name.len() && n.as_bytes().first() == first && n == name;
        if clash(panoptes_model::METRIC_NAME) || labels.iter().any(|(n, _)| clash(n)) {
            return invalid(i, format!("duplicate label name {name:?}"));
        }
        let Some(r) = ws(r).strip_prefix('=') else {
            return expected(ws(r), "'=' after the label name");
        };
        let (r, value) = quoted_value(ws(r))?;
        labels.push((name, value));
        let r = ws(r);
        if let Some(rest) = r.strip_prefix(',') {
            i = rest;
            continue;
        }
        if let Some(rest) = r.strip_prefix('}') {
            return Ok((rest, ()));
        }
        return expected(r, "',' or '}' after the label value");
    }
}

impl<'a> Parser<'a> {
    /// One line of the text format 0.0.4; `None` for blank lines and comments.
    fn text_line(
        &mut self,
        raw: &'a [u8],
        line_no: usize,
        labels: &mut LabelPairs<'a>,
    ) -> Result<Line<'a>, ParseError> {
        let first = raw.iter().position(|c| *c != b' ' && *c != b'\t');
        let Some(first) = first else {
            return Ok(Line::Skip);
        };
        if raw[first] == b'#' && !is_text_metadata(&raw[first + 1..]) {
            // Free-form comment: not validated, like Prometheus.
            return Ok(Line::Skip);
        }
        let line = utf8_line(raw, line_no)?;
        let rest = &line[first..];
        let result = if rest.starts_with('#') {
            self.text_metadata(rest)
        } else {
            self.sample(rest, false, labels).map(Line::Sample)
        };
        result.map_err(|e| locate(line, line_no, e))
    }

    /// `# HELP name text` or `# TYPE name type` (the caller checked the
    /// keyword), with Prometheus's blank handling.
    fn text_metadata(&mut self, line: &'a str) -> Result<Line<'a>, nom::Err<PErr<'a>>> {
        let keyword = alt((value(true, tag("HELP")), value(false, tag("TYPE"))));
        let (at_name, is_help) = expect(
            "\"# HELP\" or \"# TYPE\"",
            delimited((char('#'), space1), keyword, space1),
        )
        .parse(line)?;
        let keyword = if is_help { "HELP" } else { "TYPE" };
        let what = if is_help {
            "a metric name after HELP"
        } else {
            "a metric name after TYPE"
        };
        let (r, family) = metric_name(at_name, what)?;
        // Prometheus drops exactly one blank between the name and the text.
        let text = match r.as_bytes().first() {
            None => r,
            Some(b' ' | b'\t') => &r[1..],
            Some(_) => return Err(err_expected(r, "a blank after the metric name")),
        };
        if is_help {
            self.families.record_meta(
                at_name,
                family,
                MetaKind::Help,
                None,
                Format::PrometheusText,
            )?;
            return Ok(Line::Help {
                family,
                help: unescape_help(text, false),
            });
        }
        let word = text.trim_end_matches([' ', '\t']);
        let metric_type = match word {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Unknown,
            _ => {
                return Err(err_invalid(
                    text,
                    format!(
                        "invalid metric type {word:?} in {keyword}: expected counter, gauge, \
                         histogram, summary or untyped"
                    ),
                ))
            }
        };
        self.families.record_meta(
            at_name,
            family,
            MetaKind::Type,
            Some(metric_type),
            Format::PrometheusText,
        )?;
        Ok(Line::Type {
            family,
            metric_type,
        })
    }

    /// One line of OpenMetrics 1.0 text; `None` for `# EOF`.
    fn om_line(
        &mut self,
        raw: &'a [u8],
        line_no: usize,
        labels: &mut LabelPairs<'a>,
    ) -> Result<Line<'a>, ParseError> {
        if raw.is_empty() {
            return Err(ParseError {
                line: line_no,
                column: 1,
                message: "expected a sample or a \"# \" metadata line, found an empty line \
                          (OpenMetrics allows no blank lines)"
                    .to_string(),
            });
        }
        let line = utf8_line(raw, line_no)?;
        let result = if line.starts_with('#') {
            self.om_metadata(line)
        } else {
            self.sample(line, true, labels).map(Line::Sample)
        };
        result.map_err(|e| locate(line, line_no, e))
    }

    /// `# HELP`, `# TYPE`, `# UNIT` or `# EOF`: OpenMetrics allows no other
    /// comment.
    fn om_metadata(&mut self, line: &'a str) -> Result<Line<'a>, nom::Err<PErr<'a>>> {
        const WHAT: &str = "\"# HELP\", \"# TYPE\", \"# UNIT\" or \"# EOF\" (OpenMetrics allows no other comments)";
        let keyword = alt((
            value(Some(MetaKind::Help), tag("HELP ")),
            value(Some(MetaKind::Type), tag("TYPE ")),
            value(Some(MetaKind::Unit), tag("UNIT ")),
            value(None, tag("EOF")),
        ));
        let (at_name, kind) = expect(WHAT, preceded(tag("# "), keyword)).parse(line)?;
        let Some(kind) = kind else {
            if !at_name.is_empty() {
                return Err(err_expected(at_name, "end of line after \"# EOF\""));
            }
            self.saw_eof = true;
            return Ok(Line::Skip);
        };
        let (r, family) = metric_name(at_name, kind.name_expectation())?;
        let Some(text) = r.strip_prefix(' ') else {
            return Err(err_expected(r, kind.text_expectation()));
        };
        let entry = match kind {
            MetaKind::Help => Line::Help {
                family,
                help: unescape_help(text, true),
            },
            MetaKind::Type => {
                let metric_type = match text {
                    "counter" => MetricType::Counter,
                    "gauge" => MetricType::Gauge,
                    "histogram" => MetricType::Histogram,
                    "gaugehistogram" => MetricType::GaugeHistogram,
                    "summary" => MetricType::Summary,
                    "info" => MetricType::Info,
                    "stateset" => MetricType::StateSet,
                    "unknown" => MetricType::Unknown,
                    _ => {
                        return Err(err_invalid(
                            text,
                            format!(
                                "invalid metric type {text:?}: expected counter, gauge, \
                                 histogram, gaugehistogram, summary, info, stateset or unknown"
                            ),
                        ))
                    }
                };
                Line::Type {
                    family,
                    metric_type,
                }
            }
            MetaKind::Unit => {
                let suffix_ok = text.is_empty()
                    || (family.len() > text.len()
                        && family.ends_with(text)
                        && family.as_bytes()[family.len() - text.len() - 1] == b'_');
                if !suffix_ok {
                    return Err(err_invalid(
                        text,
                        format!("unit {text:?} is not a suffix of the metric name {family:?}"),
                    ));
                }
                Line::Unit { family, unit: text }
            }
        };
        let metric_type = match &entry {
            Line::Type { metric_type, .. } => Some(*metric_type),
            _ => None,
        };
        self.families
            .record_meta(at_name, family, kind, metric_type, Format::OpenMetrics)?;
        Ok(entry)
    }

    /// A sample line in either format (`om` selects the OpenMetrics rules:
    /// single spaces, float-second timestamps, exemplars).
    fn sample(
        &mut self,
        line: &'a str,
        om: bool,
        labels: &mut LabelPairs<'a>,
    ) -> Result<SampleHead<'a>, nom::Err<PErr<'a>>> {
        let (after_name, name) = metric_name(line, "a metric name")?;
        let brace = if om {
            after_name
        } else {
            skip_blanks(after_name)
        };
        let (rest, series) = if let Some(inner) = brace.strip_prefix('{') {
            let (rest, ()) = label_set(inner, labels, !om, "a label name or '}'")?;
            (rest, &line[..line.len() - rest.len()])
        } else {
            (after_name, name)
        };
        self.families.record_sample(name);

        let (rest, value_tok, value_at) = if om {
            let Some(r) = rest.strip_prefix(' ') else {
                return Err(err_expected(rest, "' ' and the sample value"));
            };
            let (r2, tok) = token(r, |c| c == b' ');
            (r2, tok, r)
        } else {
            let r = skip_blanks(rest);
            if r.len() == rest.len() && !r.is_empty() {
                return Err(err_expected(
                    r,
                    "a blank and the sample value after the metric name",
                ));
            }
            let (r2, tok) = token(r, |c| c == b' ' || c == b'\t');
            (r2, tok, r)
        };
        if value_tok.is_empty() {
            return Err(err_expected(value_at, "the sample value"));
        }
        let value = float_token(value_at, value_tok, "sample value")?;

        let mut entry = SampleHead {
            series,
            name,
            value,
            timestamp_ms: None,
            exemplar: None,
        };
        if om {
            self.om_sample_tail(rest, &mut entry)?;
            return Ok(entry);
        }
        let r = skip_blanks(rest);
        if r.is_empty() {
            return Ok(entry);
        }
        let (r2, ts_tok) = token(r, |c| c == b' ' || c == b'\t');
        match parse_int_timestamp(ts_tok) {
            Ok(ts) => entry.timestamp_ms = Some(ts),
            Err(crate::lex::NumberError::Range) => {
                return Err(err_invalid(
                    r,
                    format!("timestamp {ts_tok:?} is out of the range of a 64-bit integer"),
                ))
            }
            Err(_) if r.starts_with('#') => {
                return Err(err_invalid(
                    r,
                    "expected a timestamp (integer milliseconds) or end of line, found '#' \
                     (exemplars are only allowed in OpenMetrics)"
                        .to_string(),
                ));
            }
            Err(_) => {
                return Err(err_expected(
                    r,
                    "a timestamp (integer milliseconds) or end of line",
                ));
            }
        }
        let r2 = skip_blanks(r2);
        if !r2.is_empty() {
            return Err(err_expected(r2, "end of line after the timestamp"));
        }
        Ok(entry)
    }

    /// After an OpenMetrics sample value: `[ timestamp][ # exemplar]`.
    fn om_sample_tail(
        &mut self,
        rest: &'a str,
        entry: &mut SampleHead<'a>,
    ) -> Result<&'a str, nom::Err<PErr<'a>>> {
        let mut rest = rest;
        if rest.is_empty() {
            return Ok(rest);
        }
        if !rest.starts_with(" # ") {
            let r = &rest[1..]; // `token` stopped at a space
            let (r2, tok) = token(r, |c| c == b' ');
            if tok.is_empty() {
                return Err(err_expected(r, "a timestamp or \"# \" and an exemplar"));
            }
            entry.timestamp_ms = Some(om_timestamp(r, tok, "timestamp")?);
            rest = r2;
            if rest.is_empty() {
                return Ok(rest);
            }
            if !rest.starts_with(" # ") {
                return Err(err_expected(
                    rest,
                    "end of line or \" # \" and an exemplar after the timestamp",
                ));
            }
        }
        let (rest, exemplar) = exemplar(&rest[3..])?;
        entry.exemplar = Some(exemplar);
        Ok(rest)
    }
}

/// `{labels} value[ timestamp]` after ` # `.
fn exemplar(i: &str) -> Res<'_, Exemplar<'_>> {
    let Some(inner) = i.strip_prefix('{') else {
        return expected(i, "'{' opening the exemplar's labels");
    };
    let mut labels = LabelPairs::new();
    let (rest, ()) = label_set(inner, &mut labels, false, "an exemplar label name or '}'")?;
    let chars: usize = labels
        .iter()
        .map(|(n, v)| n.len() + v.chars().count())
        .sum();
    if chars > EXEMPLAR_MAX_CHARS {
        return invalid(
            i,
            format!(
                "exemplar labels have {chars} characters, more than the \
                 {EXEMPLAR_MAX_CHARS} OpenMetrics allows"
            ),
        );
    }
    let Some(r) = rest.strip_prefix(' ') else {
        return expected(rest, "' ' and the exemplar value");
    };
    let (r2, tok) = token(r, |c| c == b' ');
    if tok.is_empty() {
        return expected(r, "the exemplar value");
    }
    let value = float_token(r, tok, "exemplar value")?;
    let mut timestamp_ms = None;
    let mut rest = r2;
    if let Some(r) = rest.strip_prefix(' ') {
        let (r2, tok) = token(r, |c| c == b' ');
        if tok.is_empty() {
            return expected(r, "the exemplar timestamp");
        }
        timestamp_ms = Some(om_timestamp(r, tok, "exemplar timestamp")?);
        rest = r2;
    }
    if !rest.is_empty() {
        return expected(rest, "end of line after the exemplar");
    }
    Ok((
        rest,
        Exemplar {
            labels: labels.into_vec(),
            value,
            timestamp_ms,
        },
    ))
}

/// Whether a text-format comment (after its `#`) is a HELP or TYPE line:
/// blanks, the keyword, then at least one blank (Prometheus's lexer rule;
/// `#HELP` or `# HELP` alone are plain comments).
fn is_text_metadata(after_hash: &[u8]) -> bool {
    let n = after_hash
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(after_hash.len());
    if n == 0 {
        return false;
    }
    let kw = &after_hash[n..];
    (kw.starts_with(b"HELP") || kw.starts_with(b"TYPE")) && matches!(kw.get(4), Some(b' ' | b'\t'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetaKind {
    Help,
    Type,
    Unit,
}

impl MetaKind {
    fn keyword(self) -> &'static str {
        match self {
            MetaKind::Help => "HELP",
            MetaKind::Type => "TYPE",
            MetaKind::Unit => "UNIT",
        }
    }

    fn name_expectation(self) -> &'static str {
        match self {
            MetaKind::Help => "a metric name after HELP",
            MetaKind::Type => "a metric name after TYPE",
            MetaKind::Unit => "a metric name after UNIT",
        }
    }

    fn text_expectation(self) -> &'static str {
        match self {
            MetaKind::Help => "' ' and the help text after the metric name",
            MetaKind::Type => "' ' and the metric type after the metric name",
            MetaKind::Unit => "' ' and the unit after the metric name",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct MetaSeen {
    help: bool,
    unit: bool,
    metric_type: Option<MetricType>,
}

/// What the parser remembers about families to enforce the metadata rules.
/// Sample names are recorded only when they change from one line to the
/// next, so a body costs one set insertion per run of equal names.
#[derive(Default)]
struct Families<'a> {
    /// Whether the rules are enforced; types are remembered regardless.
    strict: bool,
    last_sample_name: &'a str,
    sample_names: FxHashSet<&'a str>,
    meta: FxHashMap<&'a str, MetaSeen>,
    /// Reused buffer for `family + suffix` lookups.
    scratch: String,
}

impl<'a> Families<'a> {
    fn record_sample(&mut self, name: &'a str) {
        if self.strict && name != self.last_sample_name {
            self.last_sample_name = name;
            self.sample_names.insert(name);
        }
    }

    /// Records one metadata line; when strict, rejects a second line of the
    /// same kind and a TYPE line after the family's samples.
    fn record_meta(
        &mut self,
        at: &'a str,
        family: &'a str,
        kind: MetaKind,
        metric_type: Option<MetricType>,
        format: Format,
    ) -> Result<(), nom::Err<PErr<'a>>> {
        let seen = match self.meta.entry(family) {
            MapEntry::Occupied(o) => o.into_mut(),
            MapEntry::Vacant(v) => v.insert(MetaSeen::default()),
        };
        let duplicate = match kind {
            MetaKind::Help => std::mem::replace(&mut seen.help, true),
            MetaKind::Unit => std::mem::replace(&mut seen.unit, true),
            MetaKind::Type => {
                let had = seen.metric_type.is_some();
                seen.metric_type = metric_type;
                had
            }
        };
        if !self.strict {
            return Ok(());
        }
        if duplicate {
            return Err(err_invalid(
                at,
                format!(
                    "second {} line for metric family {family:?}",
                    kind.keyword()
                ),
            ));
        }
        if kind != MetaKind::Type {
            // The specification requires only TYPE to precede the samples.
            return Ok(());
        }
        let known_type = seen.metric_type;
        let mut after_samples = self.sample_names.contains(family);
        if let Some(t) = known_type {
            for suffix in sample_suffixes(t, format) {
                if after_samples {
                    break;
                }
                self.scratch.clear();
                self.scratch.push_str(family);
                self.scratch.push_str(suffix);
                after_samples = self.sample_names.contains(self.scratch.as_str());
            }
        }
        if after_samples {
            return Err(err_invalid(
                at,
                format!(
                    "TYPE line for metric family {family:?} comes after samples of that \
                     family; it must precede the family's first sample"
                ),
            ));
        }
        Ok(())
    }
}

/// The name suffixes a family's samples carry, by type and format.
pub(crate) fn sample_suffixes(t: MetricType, format: Format) -> &'static [&'static str] {
    match (t, format) {
        (MetricType::Histogram, Format::PrometheusText) => &["_bucket", "_sum", "_count"],
        (MetricType::Summary, Format::PrometheusText) => &["_sum", "_count"],
        (_, Format::PrometheusText) => &[],
        (MetricType::Counter, Format::OpenMetrics) => &["_total", "_created"],
        (MetricType::Histogram, Format::OpenMetrics) => &["_bucket", "_sum", "_count", "_created"],
        (MetricType::GaugeHistogram, Format::OpenMetrics) => &["_bucket", "_gsum", "_gcount"],
        (MetricType::Summary, Format::OpenMetrics) => &["_sum", "_count", "_created"],
        (MetricType::Info, Format::OpenMetrics) => &["_info"],
        (_, Format::OpenMetrics) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(body: &str, format: Format) -> Vec<SampleEntry<'_>> {
        Parser::new(body.as_bytes(), format)
            .map(|e| e.expect("valid body"))
            .filter_map(|e| match e {
                Entry::Sample(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn series_is_the_exact_text_and_values_borrow_unless_escaped() {
        let body = "a{x=\"1\", y=\"q\\\"q\"} 2\nb 3 17\n";
        let s = samples(body, Format::PrometheusText);
        assert_eq!(s[0].series, "a{x=\"1\", y=\"q\\\"q\"}");
        assert_eq!(s[0].name, "a");
        assert!(matches!(s[0].labels[0], ("x", Cow::Borrowed("1"))));
        assert!(matches!(&s[0].labels[1], ("y", Cow::Owned(v)) if v == "q\"q"));
        assert_eq!(s[1].series, "b");
        assert_eq!(s[1].timestamp_ms, Some(17));
        assert!(!s[0].labels.spilled(), "a small label set stays inline");
    }

    #[test]
    fn nothing_is_yielded_after_an_error() {
        let mut p = Parser::new(b"a 1\nb x\nc 3\n", Format::PrometheusText);
        assert!(matches!(p.next(), Some(Ok(Entry::Sample(_)))));
        let err = p.next().and_then(Result::err).expect("an error");
        assert_eq!((err.line, err.column), (2, 3));
        assert!(p.next().is_none());
        assert!(p.next().is_none());
    }

    #[test]
    fn openmetrics_timestamps_are_seconds_and_exemplars_are_kept() {
        let body = "# TYPE c counter\nc_total 4 1.5 # {id=\"x\"} 1 2.25\n# EOF";
        let s = samples(body, Format::OpenMetrics);
        assert_eq!(s[0].timestamp_ms, Some(1500));
        let e = s[0].exemplar.as_ref().expect("exemplar");
        assert_eq!(e.labels, vec![("id", Cow::Borrowed("x"))]);
        assert_eq!((e.value, e.timestamp_ms), (1.0, Some(2250)));
    }

    #[test]
    fn declared_types_are_remembered() {
        let body = b"# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n";
        let mut p = Parser::new(body, Format::PrometheusText);
        assert_eq!(p.declared_type("h"), None);
        p.by_ref().for_each(drop);
        assert_eq!(p.declared_type("h"), Some(MetricType::Histogram));
        assert_eq!(p.format(), Format::PrometheusText);
    }

    #[test]
    fn strict_metadata_rules_are_per_family() {
        let strict = |body: &'static str| {
            Parser::new(body.as_bytes(), Format::PrometheusText)
                .strict_metadata()
                .find_map(Result::err)
        };
        // Interleaving other families is fine, and so is a late HELP; a TYPE
        // after the family's own samples (with its type's suffixes) is not.
        let ok = "# TYPE a summary\na_sum 1\n# TYPE b gauge\nb 1\na_count 2\n# HELP a Late.\n";
        assert_eq!(strict(ok), None);
        let late = "a_sum 1\n# TYPE a summary\n";
        let err = strict(late).expect("late TYPE rejected");
        assert_eq!((err.line, err.column), (2, 8));
        assert!(err.message.contains("comes after samples"), "{err}");
        // Without strictness, as in Prometheus's scrape parser, all pass.
        assert_eq!(samples(late, Format::PrometheusText).len(), 1);
        let twice = "# TYPE a gauge\n# TYPE a gauge\na 1\n";
        assert_eq!(samples(twice, Format::PrometheusText).len(), 1);
        assert!(strict(twice).is_some());
    }

    #[test]
    fn empty_bodies() {
        assert_eq!(Parser::new(b"", Format::PrometheusText).count(), 0);
        assert_eq!(Parser::new(b"\n \n", Format::PrometheusText).count(), 0);
        assert_eq!(Parser::new(b"# EOF\n", Format::OpenMetrics).count(), 0);
        let err = Parser::new(b"", Format::OpenMetrics)
            .find_map(Result::err)
            .expect("missing EOF");
        assert_eq!((err.line, err.column), (1, 1));
    }
}
