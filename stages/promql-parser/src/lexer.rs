//! The PromQL lexer: turns query text into positioned tokens. Token-level
//! recognisers (numbers, durations, identifiers, strings) are nom parsers;
//! the token loop itself tracks byte offsets for error positions.

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_while, take_while1};
use nom::character::complete::{char, digit1, one_of, satisfy};
use nom::combinator::{opt, recognize};
use nom::multi::many1;
use nom::sequence::pair;
use nom::{IResult, Parser};

use crate::error::ParseError;

/// The kinds of token.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// A float literal (`Inf`/`NaN` are lexed as identifiers and read as
    /// numbers by the parser, since they may also be label names).
    Number(f64),
    /// A duration literal, in milliseconds.
    Duration(i64),
    /// An unescaped string literal.
    Str(String),
    /// An identifier; may contain `:` (a recording-rule style metric name).
    Ident(String),
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Comma,
    Colon,
    At,
    /// `=` (label matcher)
    Assign,
    Eql,
    Neq,
    RegexMatch,
    RegexNoMatch,
    Lss,
    Lte,
    Gtr,
    Gte,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eof,
}

impl Tok {
    /// How the token is named in "unexpected …" errors (Prometheus wording).
    pub fn describe(&self) -> String {
        match self {
            Tok::Number(_) => "number".into(),
            Tok::Duration(_) => "duration".into(),
            Tok::Str(_) => "string".into(),
            Tok::Ident(s) => format!("identifier {s:?}"),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::LBrace => "\"{\"".into(),
            Tok::RBrace => "\"}\"".into(),
            Tok::LBracket => "\"[\"".into(),
            Tok::RBracket => "\"]\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Colon => "\":\"".into(),
            Tok::At => "\"@\"".into(),
            Tok::Assign => "\"=\"".into(),
            Tok::Eql => "\"==\"".into(),
            Tok::Neq => "\"!=\"".into(),
            Tok::RegexMatch => "\"=~\"".into(),
            Tok::RegexNoMatch => "\"!~\"".into(),
            Tok::Lss => "\"<\"".into(),
            Tok::Lte => "\"<=\"".into(),
            Tok::Gtr => "\">\"".into(),
            Tok::Gte => "\">=\"".into(),
            Tok::Add => "\"+\"".into(),
            Tok::Sub => "\"-\"".into(),
            Tok::Mul => "\"*\"".into(),
            Tok::Div => "\"/\"".into(),
            Tok::Mod => "\"%\"".into(),
            Tok::Pow => "\"^\"".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// A token with its byte span.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub start: usize,
    pub end: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn identifier(i: &str) -> IResult<&str, &str> {
    recognize(pair(satisfy(is_ident_start), take_while(is_ident_char))).parse(i)
}

fn duration_unit(i: &str) -> IResult<&str, &str> {
    alt((
        tag("ms"),
        tag("y"),
        tag("w"),
        tag("d"),
        tag("h"),
        tag("m"),
        tag("s"),
    ))
    .parse(i)
}

/// `1h30m`-style durations: one or more `<digits><unit>` groups.
fn duration(i: &str) -> IResult<&str, &str> {
    recognize(many1(pair(digit1, duration_unit))).parse(i)
}

fn digits_underscore(i: &str) -> IResult<&str, &str> {
    recognize(pair(
        digit1,
        take_while(|c: char| c.is_ascii_digit() || c == '_'),
    ))
    .parse(i)
}

/// Decimal and hexadecimal float literals (`1`, `1.5`, `.5`, `2.`, `1e-3`,
/// `0x1F`, `1_000`).
fn number(i: &str) -> IResult<&str, &str> {
    let hex = recognize(pair(
        alt((tag("0x"), tag("0X"))),
        take_while1(|c: char| c.is_ascii_hexdigit() || c == '_'),
    ));
    let exponent = recognize((one_of("eE"), opt(one_of("+-")), digit1));
    let with_int = recognize((
        digits_underscore,
        opt(pair(char('.'), opt(digits_underscore))),
        opt(exponent),
    ));
    let exponent2 = recognize((one_of("eE"), opt(one_of("+-")), digit1));
    let frac_only = recognize((char('.'), digits_underscore, opt(exponent2)));
    alt((hex, with_int, frac_only)).parse(i)
}

/// The value of a number literal as Prometheus reads it: first as an
/// integer with Go's base prefixes (`0x1f`, and a leading `0` means octal,
/// so `010` is 8), then as a float (`08` is 8). A float beyond the f64
/// range is an error, not infinity.
fn parse_number_text(text: &str) -> Result<f64, String> {
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let int = if let Some(hex) = clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
    {
        i64::from_str_radix(hex, 16).ok()
    } else if clean.len() > 1 && clean.starts_with('0') {
        i64::from_str_radix(&clean[1..], 8).ok()
    } else {
        clean.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Ok(i as f64);
    }
    let syntax =
        || format!("error parsing number: strconv.ParseFloat: parsing {text:?}: invalid syntax");
    if clean.starts_with("0x") || clean.starts_with("0X") {
        // Go reads hex floats only with a `p` exponent, which the lexer
        // never produces: a hex integer past i64 is this error.
        return Err(syntax());
    }
    match clean.parse::<f64>() {
        Ok(v) if v.is_infinite() => Err(format!(
            "error parsing number: strconv.ParseFloat: parsing {text:?}: value out of range"
        )),
        Ok(v) => Ok(v),
        Err(_) => Err(syntax()),
    }
}

/// Reads a quoted string at the start of `i` (which begins with the quote
/// character); returns the unescaped value and the consumed byte length.
fn string_literal(i: &str, start: usize) -> Result<(String, usize), ParseError> {
    let quote = i.chars().next().unwrap_or('"');
    let mut out: Vec<u8> = Vec::new();
    let mut chars = i.char_indices().skip(1).peekable();
    let err = |pos: usize, msg: &str| ParseError::at(start + pos, msg.to_string());
    while let Some((pos, c)) = chars.next() {
        if c == quote {
            let s =
                String::from_utf8(out).map_err(|_| err(pos, "invalid UTF-8 in string literal"))?;
            return Ok((s, pos + c.len_utf8()));
        }
        if quote == '`' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        if c == '\n' {
            return Err(err(pos, "unterminated quoted string"));
        }
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some((epos, e)) = chars.next() else {
            return Err(err(pos, "unterminated quoted string"));
        };
        match e {
            'a' => out.push(7),
            'b' => out.push(8),
            'f' => out.push(12),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(11),
            '\\' => out.push(b'\\'),
            '"' | '\'' if e == quote => out.push(e as u8),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut v: u32 = 0;
                for _ in 0..n {
                    match chars.next() {
                        Some((_, h)) if h.is_ascii_hexdigit() => {
                            v = v * 16 + h.to_digit(16).unwrap_or(0);
                        }
                        _ => return Err(err(epos, "unknown escape sequence")),
                    }
                }
                if e == 'x' {
                    out.push(v as u8);
                } else {
                    let ch = char::from_u32(v).ok_or_else(|| {
                        err(epos, "invalid Unicode code point in escape sequence")
                    })?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
            }
            '0'..='7' => {
                let mut v: u32 = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.next() {
                        Some((_, o)) if ('0'..='7').contains(&o) => {
                            v = v * 8 + o.to_digit(8).unwrap_or(0);
                        }
                        _ => return Err(err(epos, "unknown escape sequence")),
                    }
                }
                if v > 255 {
                    return Err(err(epos, "octal escape value > 255"));
                }
                out.push(v as u8);
            }
            _ => return Err(err(epos, "unknown escape sequence")),
        }
    }
    Err(ParseError::at(start, "unterminated quoted string".into()))
}

/// Splits the whole input into tokens (ending with `Eof`).
pub fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let mut toks = Vec::new();
    let mut open: Vec<(Tok, usize)> = Vec::new();
    let mut pos = 0;
    let bytes = input.as_bytes();
    while pos < input.len() {
        let rest = &input[pos..];
        let c = match rest.chars().next() {
            Some(c) => c,
            None => break,
        };
        if c.is_whitespace() {
            pos += c.len_utf8();
            continue;
        }
        if c == '#' {
            // Comments run to the end of the line.
            pos += rest.find('\n').unwrap_or(rest.len());
            continue;
        }
        let start = pos;
        let two = rest.get(..2).unwrap_or("");
        let (tok, len) = match two {
            "==" => (Tok::Eql, 2),
            "!=" => (Tok::Neq, 2),
            "=~" => (Tok::RegexMatch, 2),
            "!~" => (Tok::RegexNoMatch, 2),
            "<=" => (Tok::Lte, 2),
            ">=" => (Tok::Gte, 2),
            _ => match c {
                '(' => (Tok::LParen, 1),
                ')' => (Tok::RParen, 1),
                '{' => (Tok::LBrace, 1),
                '}' => (Tok::RBrace, 1),
                '[' => (Tok::LBracket, 1),
                ']' => (Tok::RBracket, 1),
                ',' => (Tok::Comma, 1),
                ':' => (Tok::Colon, 1),
                '@' => (Tok::At, 1),
                '=' => (Tok::Assign, 1),
                '<' => (Tok::Lss, 1),
                '>' => (Tok::Gtr, 1),
                '+' => (Tok::Add, 1),
                '-' => (Tok::Sub, 1),
                '*' => (Tok::Mul, 1),
                '/' => (Tok::Div, 1),
                '%' => (Tok::Mod, 1),
                '^' => (Tok::Pow, 1),
                '"' | '\'' | '`' => {
                    let (s, len) = string_literal(rest, start)?;
                    (Tok::Str(s), len)
                }
                '!' => {
                    return Err(ParseError::at(
                        start,
                        "unexpected character after '!': expected '=' or '~'".into(),
                    ))
                }
                c if c.is_ascii_digit()
                    || (c == '.' && bytes.get(pos + 1).is_some_and(u8::is_ascii_digit)) =>
                {
                    lex_number_or_duration(rest, start)?
                }
                c if is_ident_start(c) => {
                    let (r, id) = identifier(rest).map_err(|_| {
                        ParseError::at(start, format!("unexpected character: {c:?}"))
                    })?;
                    (Tok::Ident(id.to_string()), rest.len() - r.len())
                }
                c => {
                    return Err(ParseError::at(
                        start,
                        format!("unexpected character: {c:?}"),
                    ))
                }
            },
        };
        // Unbalanced brackets are reported by the lexer, as Prometheus does.
        match tok {
            Tok::LParen | Tok::LBrace | Tok::LBracket => open.push((tok.clone(), start)),
            Tok::RParen | Tok::RBrace | Tok::RBracket => {
                let want = match tok {
                    Tok::RParen => Tok::LParen,
                    Tok::RBrace => Tok::LBrace,
                    _ => Tok::LBracket,
                };
                match open.last() {
                    Some((t, _)) if *t == want => {
                        open.pop();
                    }
                    _ => {
                        let what = match tok {
                            Tok::RParen => "right parenthesis ')'",
                            Tok::RBrace => "right brace '}'",
                            _ => "right bracket ']'",
                        };
                        return Err(ParseError::at(start, format!("unexpected {what}")));
                    }
                }
            }
            _ => {}
        }
        toks.push(Token {
            tok,
            start,
            end: start + len,
        });
        pos += len;
    }
    if let Some((t, _)) = open.last() {
        // Reported where the input ends, as Prometheus does.
        let msg = match t {
            Tok::LParen => "unclosed left parenthesis",
            Tok::LBrace => "unexpected end of input inside braces",
            _ => "unclosed left bracket",
        };
        return Err(ParseError::at(input.len(), msg.to_string()));
    }
    toks.push(Token {
        tok: Tok::Eof,
        start: input.len(),
        end: input.len(),
    });
    Ok(toks)
}

fn lex_number_or_duration(rest: &str, start: usize) -> Result<(Tok, usize), ParseError> {
    let bad = || ParseError::at(start, "bad number or duration syntax: \"".to_string());
    // A duration wins when it is followed by no further identifier char.
    if let Ok((r, d)) = duration(rest) {
        if !r.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            let ms = panoptes_model::parse_duration_ms(d).map_err(|e| {
                ParseError::at(start, format!("bad duration syntax: {:?}: {}", d, e.reason))
            })?;
            let ms = i64::try_from(ms).map_err(|_| bad())?;
            return Ok((Tok::Duration(ms), d.len()));
        }
    }
    let (r, text) = number(rest).map_err(|_| bad())?;
    if r.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        let tail: String = r
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        return Err(ParseError::at(
            start,
            format!("bad number or duration syntax: \"{text}{tail}\""),
        ));
    }
    let v = parse_number_text(text).map_err(|msg| ParseError::at(start, msg))?;
    Ok((Tok::Number(v), text.len()))
}

/// Whether an identifier spells a float literal (`Inf`, `NaN`, any case).
pub fn ident_number(s: &str) -> Option<f64> {
    let r: IResult<&str, &str> = alt((tag_no_case("inf"), tag_no_case("nan"))).parse(s);
    match r {
        Ok(("", w)) if w.eq_ignore_ascii_case("inf") => Some(f64::INFINITY),
        Ok(("", _)) => Some(f64::NAN),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(kinds("1h30m"), vec![Tok::Duration(5_400_000), Tok::Eof]);
        assert_eq!(kinds("0x1F"), vec![Tok::Number(31.0), Tok::Eof]);
        assert_eq!(kinds(".5e1"), vec![Tok::Number(5.0), Tok::Eof]);
        assert_eq!(kinds("2."), vec![Tok::Number(2.0), Tok::Eof]);
        assert_eq!(kinds("1_000"), vec![Tok::Number(1000.0), Tok::Eof]);
        // Go's integer syntax first: a leading 0 is octal, unless that fails.
        assert_eq!(kinds("010"), vec![Tok::Number(8.0), Tok::Eof]);
        assert_eq!(kinds("08"), vec![Tok::Number(8.0), Tok::Eof]);
        assert_eq!(kinds("0755.5"), vec![Tok::Number(755.5), Tok::Eof]);
        assert_eq!(kinds("1e-400"), vec![Tok::Number(0.0), Tok::Eof]);
        let err = tokenize("-1e309").unwrap_err().to_string();
        assert!(err.contains("value out of range"), "{err}");
        let err = tokenize("0xFFFFFFFFFFFFFFFFFF").unwrap_err().to_string();
        assert!(err.contains("invalid syntax"), "{err}");
        assert!(tokenize("1x").is_err());
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(
            kinds(r#""a\"b\n""#),
            vec![Tok::Str("a\"b\n".into()), Tok::Eof]
        );
        assert_eq!(kinds(r"'\u00e9'"), vec![Tok::Str("é".into()), Tok::Eof]);
        assert_eq!(kinds(r"`a\n`"), vec![Tok::Str("a\\n".into()), Tok::Eof]);
        assert!(tokenize("\"abc").is_err());
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(
            kinds("a # comment\n+ b"),
            vec![
                Tok::Ident("a".into()),
                Tok::Add,
                Tok::Ident("b".into()),
                Tok::Eof
            ]
        );
    }
}
