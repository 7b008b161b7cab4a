//! Replacement templates (`replacement`, and `target_label` for `replace`)
//! with the semantics of Go's `regexp.Expand`, which Prometheus uses:
//! `$name` takes the longest run of letters, digits and `_` (so `$1x` names
//! the group `1x`, not group 1 followed by `x`), `${name}` delimits it, `$$`
//! is a literal `$`, a reference to a missing group expands to nothing, and a
//! malformed `$` is copied literally. Templates are resolved against their
//! regex once, at compile time.

use regex::Captures;

use panoptes_model::goregex::AnchoredRegex;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// A capture group index.
    Group(usize),
}

/// A template compiled against one regex.
#[derive(Clone, Debug)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Resolves `$…` references in `source` against the groups of `re`.
    pub fn compile(source: &str, re: &AnchoredRegex) -> Template {
        let group_count = re.regex().captures_len();
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = source;
        while let Some(pos) = rest.find('$') {
            lit.push_str(&rest[..pos]);
            rest = &rest[pos..];
            if rest[1..].starts_with('$') {
                lit.push('$');
                rest = &rest[2..];
                continue;
            }
            match extract_reference(&rest[1..]) {
                None => {
                    lit.push('$');
                    rest = &rest[1..];
                }
                Some((name, consumed)) => {
                    rest = &rest[1 + consumed..];
                    let index = match group_number(name) {
                        Some(n) => Some(n).filter(|&n| n < group_count),
                        None => re.group_index(name),
                    };
                    // A missing group expands to nothing, like Go.
                    if let Some(i) = index {
                        if !lit.is_empty() {
                            pieces.push(Piece::Literal(std::mem::take(&mut lit)));
                        }
                        pieces.push(Piece::Group(i));
                    }
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Literal(lit));
        }
        Template {
            source: source.to_string(),
            pieces,
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The expansion when it does not depend on the match.
    pub fn constant(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Appends the expansion for one match to `dst`.
    pub fn expand_into(&self, caps: &Captures<'_>, dst: &mut String) {
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => dst.push_str(s),
                Piece::Group(i) => {
                    if let Some(m) = caps.get(*i) {
                        dst.push_str(m.as_str());
                    }
                }
            }
        }
    }

    /// The expansion for one match.
    pub fn expand(&self, caps: &Captures<'_>) -> String {
        let mut s = String::new();
        self.expand_into(caps, &mut s);
        s
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || c == '_'
}

/// Parses the name after a `$`: returns it and how many bytes (after the
/// `$`) it used, or None when malformed.
fn extract_reference(s: &str) -> Option<(&str, usize)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let end = body
        .char_indices()
        .find(|&(_, c)| !is_name_char(c))
        .map(|(i, _)| i)
        .unwrap_or(body.len());
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if braced {
        if !body[end..].starts_with('}') {
            return None;
        }
        Some((name, end + 2))
    } else {
        Some((name, end))
    }
}

/// A name made only of ASCII digits, without a leading zero and below 1e8,
/// refers to a group by number (Go's rule); anything else is a group name.
fn group_number(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if name.len() > 1 && name.starts_with('0') {
        return None;
    }
    if name.len() > 8 {
        return None;
    }
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(re: &str, tmpl: &str, input: &str) -> String {
        let re = AnchoredRegex::new(re).unwrap();
        let t = Template::compile(tmpl, &re);
        let caps = re.regex().captures(input).unwrap();
        t.expand(&caps)
    }

    #[test]
    fn go_expand_semantics() {
        assert_eq!(expand("f(.*)", "ch${1}-ch${1}", "foo"), "choo-choo");
        assert_eq!(expand("f(.*)", "ch$1-ch$1", "foo"), "choo-choo");
        // `$1x` is the group named `1x`, which does not exist.
        assert_eq!(expand("f(.*)", "$1x", "foo"), "");
        assert_eq!(expand("f(.*)", "${1}x", "foo"), "oox");
        assert_eq!(expand("f(.*)", "$$1", "foo"), "$1");
        assert_eq!(expand("f(.*)", "a$", "foo"), "a$");
        assert_eq!(expand("f(.*)", "${1", "foo"), "${1");
        assert_eq!(expand("f(.*)", "$-", "foo"), "$-");
        assert_eq!(expand("f(.*)", "${}", "foo"), "${}");
        assert_eq!(expand("f(?P<rest>.*)", "<$rest>", "foo"), "<oo>");
        assert_eq!(expand("f(.*)", "$3", "foo"), "");
        // Leading zeros make it a name, not a number.
        assert_eq!(expand("f(.*)", "${01}", "foo"), "");
        assert_eq!(expand("(a)|(b)", "[$2]", "a"), "[]");
        assert_eq!(expand("f(.*)", "$0", "foo"), "foo");
    }

    #[test]
    fn constant_templates() {
        let re = AnchoredRegex::new("(.*)").unwrap();
        assert_eq!(Template::compile("abc", &re).constant(), Some("abc"));
        assert_eq!(Template::compile("a$$b", &re).constant(), Some("a$b"));
        assert_eq!(Template::compile("$1", &re).constant(), None);
        assert_eq!(Template::compile("${7}", &re).constant(), Some(""));
    }
}
