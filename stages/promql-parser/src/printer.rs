//! Renders an AST back to canonical PromQL, in the style of Prometheus's
//! `format_query` (single line): `sum by (job) (rate(x[5m]))`.

use std::fmt::{self, Display, Write};

use panoptes_model::{format_duration_ms, MatchOp, Matcher, METRIC_NAME};

use crate::ast::*;

/// Formats a float the way Go's `%v` / `strconv.FormatFloat(v, 'g', -1, 64)`
/// does: shortest round-trip digits, exponent form below 1e-4 and from 1e6,
/// `+Inf`, `-Inf`, `NaN`. The text format's writer prints `-0` as `0`;
/// PromQL keeps the sign.
pub fn format_float(v: f64) -> String {
    if v == 0.0 && v.is_sign_negative() {
        return "-0".into();
    }
    panoptes_model::format_float(v)
}

/// Quotes a string like Go's `strconv.Quote`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether a name is a legacy (unquoted) metric name.
pub fn is_legacy_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether a name is a legacy (unquoted) label name.
pub fn is_legacy_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn label_name(s: &str) -> String {
    if is_legacy_label_name(s) {
        s.to_string()
    } else {
        quote(s)
    }
}

fn matcher_str(m: &Matcher) -> String {
    format!(
        "{}{}{}",
        label_name(&m.name),
        m.op.as_str(),
        quote(&m.value)
    )
}

fn label_list(labels: &[String]) -> String {
    labels
        .iter()
        .map(|l| label_name(l))
        .collect::<Vec<_>>()
        .join(", ")
}

fn duration_str(ms: i64) -> String {
    if ms < 0 {
        format!("-{}", format_duration_ms(ms.unsigned_abs()))
    } else {
        format_duration_ms(ms as u64)
    }
}

impl Display for DurationExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationExpr::Literal(ms) => f.write_str(&duration_str(*ms)),
            DurationExpr::Number(v) => f.write_str(&format_float(*v)),
            DurationExpr::Neg(e) => write!(f, "-{e}"),
            DurationExpr::Pos(e) => write!(f, "+{e}"),
            DurationExpr::Paren(e) => write!(f, "({e})"),
            DurationExpr::Binary(op, a, b) => {
                let o = match op {
                    DurBinOp::Add => "+",
                    DurBinOp::Sub => "-",
                    DurBinOp::Mul => "*",
                    DurBinOp::Div => "/",
                    DurBinOp::Mod => "%",
                    DurBinOp::Pow => "^",
                };
                write!(f, "{a} {o} {b}")
            }
            DurationExpr::Step => f.write_str("step()"),
            DurationExpr::Range => f.write_str("range()"),
            DurationExpr::MinOf(a, b) => write!(f, "min_of({a}, {b})"),
            DurationExpr::MaxOf(a, b) => write!(f, "max_of({a}, {b})"),
        }
    }
}

fn at_str(at: &Option<AtModifier>) -> String {
    match at {
        None => String::new(),
        Some(AtModifier::Start) => " @ start()".into(),
        Some(AtModifier::End) => " @ end()".into(),
        Some(AtModifier::Timestamp(ms)) => format!(" @ {:.3}", *ms as f64 / 1000.0),
    }
}

fn offset_str(o: &Option<DurationExpr>) -> String {
    match o {
        None => String::new(),
        Some(d) => format!(" offset {d}"),
    }
}

impl VectorSelector {
    /// The selector without modifiers: `name{matchers}`.
    fn base_str(&self) -> String {
        let mut out = String::new();
        let mut rest: Vec<&Matcher> = Vec::new();
        let mut name_written = false;
        for m in &self.matchers {
            if !name_written
                && m.name == METRIC_NAME
                && m.op == MatchOp::Equal
                && self.name.as_deref() == Some(m.value.as_str())
            {
                name_written = true;
                continue;
            }
            rest.push(m);
        }
        let mut inner: Vec<String> = Vec::new();
        match (&self.name, name_written) {
            (Some(n), true) if is_legacy_metric_name(n) => out.push_str(n),
            (Some(n), true) => inner.push(quote(n)),
            _ => {}
        }
        inner.extend(rest.iter().map(|m| matcher_str(m)));
        if !inner.is_empty() || out.is_empty() {
            out.push('{');
            out.push_str(&inner.join(", "));
            out.push('}');
        }
        out
    }

    fn modifiers_str(&self) -> String {
        let mut s = String::new();
        if self.anchored {
            s.push_str(" anchored");
        }
        if self.smoothed {
            s.push_str(" smoothed");
        }
        s
    }
}

/// ` bool on (a) group_left (b) fill(0)`: everything between a binary
/// operator and its right operand.
fn binary_modifiers(b: &BinaryExpr) -> String {
    let mut out = String::new();
    if b.return_bool {
        out.push_str(" bool");
    }
    if let Some(m) = &b.matching {
        let group = match m.card {
            Cardinality::ManyToOne => Some("group_left"),
            Cardinality::OneToMany => Some("group_right"),
            _ => None,
        };
        if m.explicit && (m.on || !m.labels.is_empty()) {
            let tag = if m.on { "on" } else { "ignoring" };
            out.push_str(&format!(" {tag} ({})", label_list(&m.labels)));
            if let Some(g) = group {
                out.push_str(&format!(" {g} ({})", label_list(&m.include)));
            }
        } else if let (true, Some(g)) = (m.explicit, group) {
            out.push_str(&format!(" ignoring () {g} ({})", label_list(&m.include)));
        }
    }
    match (b.fill.left, b.fill.right) {
        (Some(l), Some(r)) if l.to_bits() == r.to_bits() => {
            out.push_str(&format!(" fill({})", format_float(l)))
        }
        (l, r) => {
            if let Some(l) = l {
                out.push_str(&format!(" fill_left({})", format_float(l)));
            }
            if let Some(r) = r {
                out.push_str(&format!(" fill_right({})", format_float(r)));
            }
        }
    }
    out
}

/// `sum by (a) ` / `topk` : the operator and its grouping.
fn aggregate_prefix(a: &AggregateExpr) -> String {
    let mut out = a.op.as_str().to_string();
    if a.without {
        out.push_str(&format!(" without ({}) ", label_list(&a.grouping)));
    } else if !a.grouping.is_empty() {
        out.push_str(&format!(" by ({}) ", label_list(&a.grouping)));
    }
    out
}

/// `[range:step] @ t offset d` of a subquery.
fn subquery_suffix(s: &SubqueryExpr) -> String {
    let step = s.step.as_ref().map(|d| d.to_string()).unwrap_or_default();
    format!(
        "[{}:{}]{}{}",
        s.range,
        step,
        at_str(&s.at),
        offset_str(&s.offset)
    )
}

/// Lines longer than this are split by [`Expr::pretty`].
const MAX_LINE: usize = 100;

impl Expr {
    /// The multi-line form Prometheus's `format_query` returns: a node
    /// whose one-line form exceeds 100 characters is split, its children
    /// indented by two spaces per level.
    pub fn pretty(&self) -> String {
        self.pretty_at(0)
    }

    fn pretty_at(&self, level: usize) -> String {
        let ind = "  ".repeat(level);
        let flat = self.to_string();
        let split = flat.len() > MAX_LINE;
        match self {
            Expr::Aggregate(a) if split => {
                let mut out = format!("{ind}{}(\n", aggregate_prefix(a));
                if let Some(p) = &a.param {
                    out.push_str(&format!("{},\n", p.pretty_at(level + 1)));
                }
                out.push_str(&format!("{}\n{ind})", a.expr.pretty_at(level + 1)));
                out
            }
            Expr::Binary(b) if split => format!(
                "{}\n{ind}{}{}\n{}",
                b.lhs.pretty_at(level + 1),
                b.op.as_str(),
                binary_modifiers(b),
                b.rhs.pretty_at(level + 1)
            ),
            Expr::Call(c) if split => {
                let args: Vec<String> = c.args.iter().map(|a| a.pretty_at(level + 1)).collect();
                format!("{ind}{}(\n{}\n{ind})", c.func.name, args.join(",\n"))
            }
            Expr::Paren(p) if split => {
                format!("{ind}(\n{}\n{ind})", p.expr.pretty_at(level + 1))
            }
            Expr::Subquery(s) if split => {
                format!("{}{}", s.expr.pretty_at(level), subquery_suffix(s))
            }
            // Prometheus prints an unsplit subquery without indentation.
            Expr::Subquery(_) => flat,
            Expr::Unary(u) => {
                let op = if u.op == UnaryOp::Neg { "-" } else { "+" };
                format!("{ind}{op}{}", u.expr.pretty_at(level).trim())
            }
            _ => format!("{ind}{flat}"),
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Number(n) => match n.duration {
                Some(ms) => f.write_str(&duration_str(ms)),
                None => f.write_str(&format_float(n.value)),
            },
            Expr::String(s) => f.write_str(&quote(&s.value)),
            Expr::Vector(v) => write!(
                f,
                "{}{}{}{}",
                v.base_str(),
                v.modifiers_str(),
                at_str(&v.at),
                offset_str(&v.offset)
            ),
            Expr::Matrix(m) => write!(
                f,
                "{}[{}]{}{}{}",
                m.vector.base_str(),
                m.range,
                m.vector.modifiers_str(),
                at_str(&m.vector.at),
                offset_str(&m.vector.offset)
            ),
            Expr::Subquery(s) => write!(f, "{}{}", s.expr, subquery_suffix(s)),
            Expr::Paren(p) => write!(f, "({})", p.expr),
            Expr::Unary(u) => {
                let op = if u.op == UnaryOp::Neg { "-" } else { "+" };
                write!(f, "{op}{}", u.expr)
            }
            Expr::Binary(b) => write!(
                f,
                "{} {}{} {}",
                b.lhs,
                b.op.as_str(),
                binary_modifiers(b),
                b.rhs
            ),
            Expr::Aggregate(a) => {
                f.write_str(&aggregate_prefix(a))?;
                f.write_str("(")?;
                if let Some(p) = &a.param {
                    write!(f, "{p}, ")?;
                }
                write!(f, "{})", a.expr)
            }
            Expr::Call(c) => {
                write!(f, "{}(", c.func.name)?;
                for (i, a) in c.args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(1e6), "1e+06");
        assert_eq!(format_float(100000.0), "100000");
        assert_eq!(format_float(1e-5), "1e-05");
        assert_eq!(format_float(0.0001), "0.0001");
        assert_eq!(format_float(123456789.0), "1.23456789e+08");
        assert_eq!(format_float(-2.5), "-2.5");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn pretty_splits_long_expressions() {
        let q = "sum by (job) (rate(http_requests_total{job=\"api-server\", instance=\"10.0.0.1:9090\"}[5m])) / on (job) group_left sum by (job) (rate(x[5m]))";
        let e = crate::parse(q).expect("parses");
        let want = "  sum by (job) (rate(http_requests_total{job=\"api-server\", instance=\"10.0.0.1:9090\"}[5m]))\n/ on (job) group_left ()\n  sum by (job) (rate(x[5m]))";
        assert_eq!(e.pretty(), want);
        let long = format!(
            "histogram_quantile(0.9, sum by (le) (rate({}_bucket[5m])))",
            "x".repeat(90)
        );
        let want = format!(
            "histogram_quantile(\n  0.9,\n  sum by (le) (\n    rate(\n      {}_bucket[5m]\n    )\n  )\n)",
            "x".repeat(90)
        );
        assert_eq!(crate::parse(&long).expect("parses").pretty(), want);
        assert_eq!(crate::parse("up").expect("parses").pretty(), "up");
    }

    #[test]
    fn quote_escapes() {
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }
}
