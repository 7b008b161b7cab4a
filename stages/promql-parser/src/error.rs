//! Parse errors with the byte offset, line and column of the problem,
//! displayed like Prometheus's (`1:5: parse error: unexpected …`).

use std::fmt;

/// A query failed to parse or type-check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset into the query.
    pub position: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What went wrong, without the position prefix.
    pub message: String,
}

impl ParseError {
    /// An error at a byte offset; line and column are filled in by
    /// [`ParseError::locate`] once the input is known.
    pub(crate) fn at(position: usize, message: String) -> Self {
        ParseError {
            position,
            line: 0,
            column: 0,
            message,
        }
    }

    pub(crate) fn locate(mut self, input: &str) -> Self {
        let (l, c) = crate::ast::line_col(input, self.position);
        self.line = l;
        self.column = c;
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: parse error: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}
