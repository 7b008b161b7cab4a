//! Regexes with Go RE2 semantics on top of the `regex` crate, for every
//! place Prometheus takes a regex (label matchers, relabel rules): Go's Perl
//! classes (`\d`, `\w`, `\s`, `\b`) are ASCII-only where Rust's are Unicode,
//! so a pattern is rewritten before compiling. `\Q…\E` literal runs (RE2
//! syntax the `regex` crate lacks) are rewritten too, as are `[` characters
//! inside a class, which RE2 reads literally and Rust as a nested class, and
//! `\<` `\>` (word boundaries in Rust, plain characters in RE2). What RE2
//! refuses and Rust accepts (the `x`, `u`, `R` flags; repeat counts above
//! 1000) is refused here too, so users get the same answer as Prometheus.

use regex::Regex;

/// A pattern RE2 (and so Prometheus) would not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GoRegexError(pub String);

/// Rewrites a Go RE2 pattern into an equivalent `regex`-crate pattern,
/// refusing what RE2 refuses.
pub fn translate_go_regex(src: &str) -> Result<String, GoRegexError> {
    check_re2_only(src)?;
    Ok(translate(src))
}

/// Compiles a Go RE2 pattern anchored the way a label matcher is
/// (`^(?s:pattern)$`).
pub fn compile_anchored_matcher(src: &str) -> Result<Regex, GoRegexError> {
    let translated = translate_go_regex(src)?;
    Regex::new(&format!("^(?s:{translated})$")).map_err(|e| GoRegexError(flatten(&e)))
}

fn flatten(e: &regex::Error) -> String {
    e.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finds syntax the `regex` crate accepts but RE2 rejects.
fn check_re2_only(src: &str) -> Result<(), GoRegexError> {
    let b = src.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if b.get(i + 1) == Some(&b'Q') {
                    // A literal run: nothing in it is syntax.
                    match src[i + 2..].find("\\E") {
                        Some(end) => i += 2 + end + 2,
                        None => return Ok(()),
                    }
                    continue;
                }
                i += 2;
                continue;
            }
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class && b.get(i + 1) == Some(&b'?') => {
                let flags: String = src[i + 2..]
                    .chars()
                    .take_while(|c| *c != ')' && *c != ':')
                    .collect();
                if !flags.starts_with('P') && !flags.starts_with('<') {
                    if let Some(bad) = flags
                        .chars()
                        .find(|c| !matches!(c, 'i' | 'm' | 's' | 'U' | '-'))
                    {
                        return Err(GoRegexError(format!(
                            "invalid or unsupported Perl syntax: `(?{bad}`"
                        )));
                    }
                }
            }
            b'{' if !in_class => {
                let rest = &src[i + 1..];
                if let Some(end) = rest.find('}') {
                    let body = &rest[..end];
                    let counts: Vec<&str> = body.split(',').collect();
                    let numeric = !body.is_empty()
                        && counts.len() <= 2
                        && counts
                            .iter()
                            .all(|c| c.chars().all(|ch| ch.is_ascii_digit()));
                    if numeric
                        && counts
                            .iter()
                            .any(|c| c.parse::<u64>().map(|n| n > 1000).unwrap_or(!c.is_empty()))
                    {
                        return Err(GoRegexError(format!("invalid repeat count: `{{{body}}}`")));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// A relabel regex: the user's source text and the anchored compiled form.
#[derive(Clone, Debug)]
pub struct AnchoredRegex {
    source: String,
    re: Regex,
    /// Capture group names by index (None for unnamed groups).
    names: Vec<Option<String>>,
}

impl AnchoredRegex {
    /// Compiles `source` fully anchored (`^(?:source)$`), with Go semantics.
    pub fn new(source: &str) -> Result<Self, GoRegexError> {
        let translated = translate_go_regex(source)?;
        let re =
            Regex::new(&format!("^(?:{translated})$")).map_err(|e| GoRegexError(flatten(&e)))?;
        let names = re.capture_names().map(|n| n.map(str::to_string)).collect();
        Ok(AnchoredRegex {
            source: source.to_string(),
            re,
            names,
        })
    }

    /// The pattern as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole input matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }

    /// The compiled regex (anchored).
    pub fn regex(&self) -> &Regex {
        &self.re
    }

    /// Index of the first capture group called `name`.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }
}

const WORD: &str = "0-9A-Za-z_";
const SPACE: &str = r"\t\n\x0C\r ";
const DIGIT: &str = "0-9";

/// Rewrites RE2-only syntax into an equivalent `regex`-crate pattern.
/// Anything it does not understand is copied verbatim, so the `regex` crate
/// still reports syntax errors on the user's text.
fn translate(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 8);
    let mut in_class = false;
    // Position right after the opening `[` (and `^`), where `]` is literal.
    let mut class_start = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            let e = chars[i + 1];
            i += 2;
            match e {
                'd' | 'w' | 's' => {
                    let set = match e {
                        'd' => DIGIT,
                        'w' => WORD,
                        _ => SPACE,
                    };
                    if in_class {
                        out.push_str(set);
                    } else {
                        out.push('[');
                        out.push_str(set);
                        out.push(']');
                    }
                }
                'D' | 'W' | 'S' => {
                    let set = match e {
                        'D' => DIGIT,
                        'W' => WORD,
                        _ => SPACE,
                    };
                    // A nested negated class is a union member inside a class.
                    out.push_str("[^");
                    out.push_str(set);
                    out.push(']');
                }
                '<' | '>' if !in_class => out.push(e),
                'b' | 'B' if !in_class => {
                    out.push_str("(?-u:\\");
                    out.push(e);
                    out.push(')');
                }
                'Q' => {
                    // Literal text up to `\E` or the end of the pattern.
                    let mut lit = String::new();
                    while i < chars.len() {
                        if chars[i] == '\\' && chars.get(i + 1) == Some(&'E') {
                            i += 2;
                            break;
                        }
                        lit.push(chars[i]);
                        i += 1;
                    }
                    if in_class {
                        for ch in lit.chars() {
                            push_class_literal(&mut out, ch);
                        }
                    } else {
                        out.push_str(&regex::escape(&lit));
                    }
                }
                _ => {
                    out.push('\\');
                    out.push(e);
                }
            }
            continue;
        }
        if in_class {
            match c {
                ']' if i != class_start => {
                    in_class = false;
                    out.push(']');
                }
                '[' if chars.get(i + 1) == Some(&':') => {
                    // A POSIX class `[:alpha:]`: copy through its `:]`.
                    let rest: String = chars[i..].iter().collect();
                    if let Some(end) = rest.find(":]") {
                        out.push_str(&rest[..end + 2]);
                        i += rest[..end + 2].chars().count();
                        continue;
                    }
                    out.push_str("\\[");
                }
                '[' => out.push_str("\\["),
                // Rust reads `&&`, `--` and `~~` as class set operators; RE2
                // reads them literally.
                '&' | '-' | '~' if chars.get(i + 1) == Some(&c) => {
                    out.push('\\');
                    out.push(c);
                }
                _ => out.push(c),
            }
            i += 1;
            continue;
        }
        if c == '[' {
            in_class = true;
            out.push('[');
            i += 1;
            if chars.get(i) == Some(&'^') {
                out.push('^');
                i += 1;
            }
            class_start = i;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

fn push_class_literal(out: &mut String, ch: char) {
    if matches!(ch, '\\' | ']' | '[' | '^' | '-' | '&' | '~') {
        out.push('\\');
    }
    out.push(ch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_classes_are_ascii_like_go() {
        let re = AnchoredRegex::new(r"\d+").unwrap();
        assert!(re.is_match("123"));
        // Arabic-Indic digits are \d in Rust's Unicode mode, not in Go.
        assert!(!re.is_match("١٢٣"));
        let w = AnchoredRegex::new(r"\w+").unwrap();
        assert!(!w.is_match("é"));
        let nw = AnchoredRegex::new(r"\W").unwrap();
        assert!(nw.is_match("é"));
        let s = AnchoredRegex::new(r"a\sb").unwrap();
        assert!(s.is_match("a b"));
        assert!(!s.is_match("a\u{0B}b"));
    }

    #[test]
    fn classes_with_perl_escapes_and_literals() {
        let re = AnchoredRegex::new(r"[\d.]+").unwrap();
        assert!(re.is_match("1.2.3"));
        let re = AnchoredRegex::new(r"[^\W_]+").unwrap();
        assert!(re.is_match("abc1"));
        assert!(!re.is_match("a_b"));
        let re = AnchoredRegex::new(r"[[]").unwrap();
        assert!(re.is_match("["));
        let re = AnchoredRegex::new(r"[]a]+").unwrap();
        assert!(re.is_match("]a]"));
        let re = AnchoredRegex::new(r"[[:alpha:]]+").unwrap();
        assert!(re.is_match("abc"));
        let re = AnchoredRegex::new(r"[a&&b]+").unwrap();
        assert!(re.is_match("a&&b"));
    }

    #[test]
    fn quoted_literals_and_anchoring() {
        let re = AnchoredRegex::new(r"\Qa.b\E+").unwrap();
        assert!(re.is_match("a.bbb"));
        assert!(!re.is_match("axb"));
        let re = AnchoredRegex::new("f|o").unwrap();
        assert!(!re.is_match("foo"));
        assert!(re.is_match("o"));
    }

    #[test]
    fn invalid_patterns_are_errors() {
        assert!(AnchoredRegex::new("(").is_err());
        assert!(AnchoredRegex::new("[a").is_err());
    }

    #[test]
    fn what_re2_refuses_is_refused() {
        assert!(translate_go_regex("(?x) a").is_err());
        assert!(translate_go_regex("a{1001}").is_err());
        assert!(translate_go_regex("a{2,1001}").is_err());
        assert!(translate_go_regex("a{1000}").is_ok());
        assert!(translate_go_regex("(?i)a(?s:b)(?P<n>c)(?:d)").is_ok());
        assert!(translate_go_regex(r"\Q(?x){5000}\E").is_ok());
        let re = compile_anchored_matcher(r"\<a\>").unwrap();
        assert!(re.is_match("<a>"));
    }
}
