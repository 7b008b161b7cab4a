//! Label matchers (`=`, `!=`, `=~`, `!~`) as PromQL, the series API and the
//! TSDB use them. Regexes are fully anchored, as in Prometheus.

use std::fmt;

use regex::Regex;

/// The four matcher kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

impl MatchOp {
    pub fn as_str(&self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::RegexMatch => "=~",
            MatchOp::RegexNoMatch => "!~",
        }
    }
}

/// A matcher could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("invalid regular expression {pattern:?}: {source}")]
    BadRegex {
        pattern: String,
        #[source]
        source: crate::goregex::GoRegexError,
    },
}

/// One label matcher. A missing label matches as the empty string, as in
/// Prometheus (`{foo=""}` selects series without `foo`).
#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl Matcher {
    /// Builds a matcher, compiling (anchored) regexes.
    pub fn new(
        op: MatchOp,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, MatcherError> {
        let name = name.into();
        let value = value.into();
        let regex = match op {
            // Go RE2 semantics, as Prometheus: ASCII Perl classes, `\Q…\E`,
            // and RE2's refusals.
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => Some(
                crate::goregex::compile_anchored_matcher(&value).map_err(|source| {
                    MatcherError::BadRegex {
                        pattern: value.clone(),
                        source,
                    }
                })?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    /// Shorthand for an equality matcher (cannot fail).
    pub fn equal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            regex: None,
        }
    }

    /// Whether a label value (empty string if the label is absent) matches.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => self.value == value,
            MatchOp::NotEqual => self.value != value,
            MatchOp::RegexMatch => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::RegexNoMatch => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Whether this matcher matches the empty string (and therefore series
    /// that lack the label).
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// Whether a whole label set matches.
    pub fn matches_labels(&self, labels: &crate::Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }

    /// The compiled, anchored regex, for regex matchers.
    pub fn regex(&self) -> Option<&Regex> {
        self.regex.as_ref()
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored() {
        let m = Matcher::new(MatchOp::RegexMatch, "job", "api").unwrap();
        assert!(m.matches("api"));
        assert!(!m.matches("api-server"));
        let m = Matcher::new(MatchOp::RegexNoMatch, "job", "a.*").unwrap();
        assert!(m.matches(""));
        assert!(!m.matches("abc"));
    }

    #[test]
    fn dot_matches_newline() {
        let m = Matcher::new(MatchOp::RegexMatch, "x", ".*").unwrap();
        assert!(m.matches("a\nb"));
    }
}
