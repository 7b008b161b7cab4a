//! The error a parse fails with, and the internal nom error it is built from.
//!
//! Inside the parser an error is a position (a suffix of the current line)
//! plus what was expected there; only when it leaves the parser is it turned
//! into a line, a column and a sentence, so the hot path never formats text.

use nom::error::{ErrorKind, ParseError as NomParseError};

/// A malformed exposition body: where (1-based line and column, the column
/// counted in characters) and what was expected and found there.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// What went wrong at a position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    /// The grammar allows only this here; the message adds what was found.
    Expected(&'static str),
    /// The token is well placed but its content is invalid; a full sentence.
    Invalid(String),
}

/// The nom error type of the line parsers: the remaining input where the
/// problem starts (always a suffix of the line being parsed) and the problem.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PErr<'a> {
    pub at: &'a str,
    pub problem: Problem,
}

impl<'a> NomParseError<&'a str> for PErr<'a> {
    // Called for every failed alternative of `alt`, so it must not allocate;
    // parsers map these errors to a precise expectation (`expect`).
    fn from_error_kind(input: &'a str, _kind: ErrorKind) -> Self {
        PErr {
            at: input,
            problem: Problem::Expected("valid input"),
        }
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

/// The result type of every line-level parser.
pub(crate) type Res<'a, O> = nom::IResult<&'a str, O, PErr<'a>>;

/// The error "expected `what`" at `at`.
pub(crate) fn err_expected<'a>(at: &'a str, what: &'static str) -> nom::Err<PErr<'a>> {
    nom::Err::Error(PErr {
        at,
        problem: Problem::Expected(what),
    })
}

/// The error `message` (a complete sentence) at `at`.
pub(crate) fn err_invalid(at: &str, message: String) -> nom::Err<PErr<'_>> {
    nom::Err::Error(PErr {
        at,
        problem: Problem::Invalid(message),
    })
}

/// Fails at `at` saying what the grammar expects there.
pub(crate) fn expected<'a, O>(at: &'a str, what: &'static str) -> Res<'a, O> {
    Err(err_expected(at, what))
}

/// Fails at `at` with a complete sentence.
pub(crate) fn invalid<O>(at: &str, message: String) -> Res<'_, O> {
    Err(err_invalid(at, message))
}

/// Turns a nom error on `line` (line number `line_no`) into a `ParseError`.
pub(crate) fn locate(line: &str, line_no: usize, err: nom::Err<PErr<'_>>) -> ParseError {
    let e = match err {
        nom::Err::Error(e) | nom::Err::Failure(e) => e,
        nom::Err::Incomplete(_) => PErr {
            at: "",
            problem: Problem::Invalid("incomplete input".to_string()),
        },
    };
    let offset = line.len().saturating_sub(e.at.len());
    let column = line
        .get(..offset)
        .map_or(offset, |before| before.chars().count())
        + 1;
    let message = match e.problem {
        Problem::Expected(what) => format!("expected {what}, found {}", describe_found(e.at)),
        Problem::Invalid(message) => message,
    };
    ParseError {
        line: line_no,
        column,
        message,
    }
}

/// A short, quoted description of the input at an error position.
pub(crate) fn describe_found(rest: &str) -> String {
    const DELIMITERS: &[char] = &['{', '}', '=', ',', '"', ' ', '\t', '#'];
    let mut chars = rest.chars();
    let Some(first) = chars.next() else {
        return "end of line".to_string();
    };
    if DELIMITERS.contains(&first) || first.is_control() {
        return format!("{first:?}");
    }
    let token: String = rest
        .chars()
        .take_while(|c| !DELIMITERS.contains(c) && !c.is_control())
        .take(24)
        .collect();
    format!("{token:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_counts_characters_not_bytes() {
        let line = "é{a=\"b\"} x";
        let at = &line[line.len() - 1..];
        let e = locate(line, 7, expected::<()>(at, "a value").unwrap_err());
        assert_eq!(e.line, 7);
        assert_eq!(e.column, 10);
        assert_eq!(e.message, "expected a value, found \"x\"");
        assert_eq!(
            e.to_string(),
            "line 7, column 10: expected a value, found \"x\""
        );
    }

    #[test]
    fn found_describes_delimiters_and_end_of_line() {
        assert_eq!(describe_found(""), "end of line");
        assert_eq!(describe_found("{a"), "'{'");
        assert_eq!(describe_found("1z rest"), "\"1z\"");
    }
}
