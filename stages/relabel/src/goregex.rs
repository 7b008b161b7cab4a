//! Compiles relabel regexes with Go RE2 semantics on top of the `regex`
//! crate: Prometheus anchors every relabel regex at both ends, and Go's Perl
//! classes (`\d`, `\w`, `\s`, `\b`) are ASCII-only where Rust's are Unicode,
//! so a pattern is rewritten before compiling. `\Q…\E` literal runs (RE2
//! syntax the `regex` crate lacks) are rewritten too, as are `[` characters
//! inside a class, which RE2 reads literally and Rust as a nested class.

use regex::Regex;

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
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let translated = translate(source);
        let re = Regex::new(&format!("^(?:{translated})$"))?;
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
}
