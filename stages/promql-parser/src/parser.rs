//! The recursive-descent (precedence-climbing) PromQL parser over the
//! lexer's tokens, with Prometheus's type checks applied as nodes are built.

use panoptes_model::{MatchOp, Matcher, METRIC_NAME};

use crate::ast::*;
use crate::error::ParseError;
use crate::functions;
use crate::lexer::{ident_number, tokenize, Tok, Token};

type PResult<T> = Result<T, ParseError>;

/// Parses and type-checks a PromQL expression.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    parse_inner(input).map_err(|e| e.locate(input))
}

fn parse_inner(input: &str) -> PResult<Expr> {
    let toks = tokenize(input)?;
    let mut p = Parser {
        toks,
        pos: 0,
        allow_empty_selector: false,
    };
    if p.peek() == &Tok::Eof {
        return Err(ParseError::at(0, "no expression found in input".into()));
    }
    let e = p.expr(0)?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected(""));
    }
    Ok(e)
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    /// Set while parsing `info()`'s label-selector argument, which may
    /// consist of matchers that all match the empty string.
    allow_empty_selector: bool,
}

fn err<T>(pos: usize, msg: impl Into<String>) -> PResult<T> {
    Err(ParseError::at(pos, msg.into()))
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }

    fn cur(&self) -> &Token {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn start(&self) -> usize {
        self.cur().start
    }

    /// End offset of the last consumed token.
    fn last_end(&self) -> usize {
        if self.pos == 0 {
            0
        } else {
            self.toks[self.pos - 1].end
        }
    }

    fn next(&mut self) -> Token {
        let t = self.cur().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn unexpected(&self, context: &str) -> ParseError {
        let t = self.cur();
        let what = t.tok.describe();
        let msg = if context.is_empty() {
            format!("unexpected {what}")
        } else {
            format!("unexpected {what} in {context}")
        };
        ParseError::at(t.start, msg)
    }

    fn expect(&mut self, tok: Tok, context: &str) -> PResult<Token> {
        if *self.peek() == tok {
            Ok(self.next())
        } else {
            let mut e = self.unexpected(context);
            e.message
                .push_str(&format!(", expected {}", tok.describe()));
            Err(e)
        }
    }

    fn peek_ident(&self) -> Option<&str> {
        match self.peek() {
            Tok::Ident(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn peek_keyword(&self, kw: &str) -> bool {
        self.peek_ident()
            .is_some_and(|s| s.eq_ignore_ascii_case(kw))
    }

    /// The binary operator at the cursor, if any.
    fn peek_binop(&self) -> Option<BinaryOp> {
        Some(match self.peek() {
            Tok::Add => BinaryOp::Add,
            Tok::Sub => BinaryOp::Sub,
            Tok::Mul => BinaryOp::Mul,
            Tok::Div => BinaryOp::Div,
            Tok::Mod => BinaryOp::Mod,
            Tok::Pow => BinaryOp::Pow,
            Tok::Eql => BinaryOp::Eql,
            Tok::Neq => BinaryOp::Neq,
            Tok::Lss => BinaryOp::Lss,
            Tok::Lte => BinaryOp::Lte,
            Tok::Gtr => BinaryOp::Gtr,
            Tok::Gte => BinaryOp::Gte,
            Tok::Ident(s) => match s.to_ascii_lowercase().as_str() {
                "and" => BinaryOp::And,
                "or" => BinaryOp::Or,
                "unless" => BinaryOp::Unless,
                "atan2" => BinaryOp::Atan2,
                _ => return None,
            },
            _ => return None,
        })
    }

    fn expr(&mut self, min_prec: u8) -> PResult<Expr> {
        let mut lhs = self.unary()?;
        while let Some(op) = self.peek_binop() {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            let op_pos = self.start();
            self.next();
            let (return_bool, matching, fill) = self.bin_modifiers(op)?;
            let next_min = if op.is_right_assoc() { prec } else { prec + 1 };
            let rhs = self.expr(next_min)?;
            lhs = build_binary(op, op_pos, lhs, rhs, return_bool, matching, fill)?;
        }
        Ok(lhs)
    }

    fn bin_modifiers(
        &mut self,
        op: BinaryOp,
    ) -> PResult<(bool, Option<VectorMatching>, FillModifier)> {
        let mut return_bool = false;
        if self.peek_keyword("bool") {
            let p = self.start();
            self.next();
            if !op.is_comparison() {
                return err(p, "bool modifier can only be used on comparison operators");
            }
            return_bool = true;
        }
        let mut matching: Option<VectorMatching> = None;
        if self.peek_keyword("on") || self.peek_keyword("ignoring") {
            let on = self.peek_keyword("on");
            self.next();
            let labels = self.label_list()?;
            matching = Some(VectorMatching {
                labels,
                on,
                explicit: true,
                ..Default::default()
            });
            if self.peek_keyword("group_left") || self.peek_keyword("group_right") {
                let left = self.peek_keyword("group_left");
                let gpos = self.start();
                self.next();
                if op.is_set() {
                    return err(
                        gpos,
                        format!("no grouping allowed for \"{}\" operation", op.as_str()),
                    );
                }
                let include = if *self.peek() == Tok::LParen {
                    self.label_list()?
                } else {
                    Vec::new()
                };
                if let Some(m) = matching.as_mut() {
                    m.card = if left {
                        Cardinality::ManyToOne
                    } else {
                        Cardinality::OneToMany
                    };
                    if m.on {
                        for l in &include {
                            if m.labels.contains(l) {
                                return err(
                                    gpos,
                                    format!(
                                        "label \"{l}\" must not occur in ON and GROUP clause at once"
                                    ),
                                );
                            }
                        }
                    }
                    m.include = include;
                }
            }
        } else if self.peek_keyword("group_left") || self.peek_keyword("group_right") {
            return Err(self.unexpected("binary expression"));
        }
        let mut fill = FillModifier::default();
        loop {
            let which = match self.peek_ident().map(|s| s.to_ascii_lowercase()) {
                Some(s) if s == "fill" || s == "fill_left" || s == "fill_right" => s,
                _ => break,
            };
            if *self.peek_at(1) != Tok::LParen {
                break;
            }
            self.next();
            self.next();
            let neg = match self.peek() {
                Tok::Sub => {
                    self.next();
                    true
                }
                Tok::Add => {
                    self.next();
                    false
                }
                _ => false,
            };
            let v = match self.peek().clone() {
                Tok::Number(v) => v,
                Tok::Ident(s) => match ident_number(&s) {
                    Some(v) => v,
                    None => return Err(self.unexpected("fill modifier")),
                },
                _ => return Err(self.unexpected("fill modifier")),
            };
            self.next();
            let v = if neg { -v } else { v };
            self.expect(Tok::RParen, "fill modifier")?;
            match which.as_str() {
                "fill" => {
                    fill.left = Some(v);
                    fill.right = Some(v);
                }
                "fill_left" => fill.left = Some(v),
                _ => fill.right = Some(v),
            }
        }
        Ok((return_bool, matching, fill))
    }

    /// `( name, "quoted", ... )` for on/ignoring/group_x/by/without.
    fn label_list(&mut self) -> PResult<Vec<String>> {
        self.expect(Tok::LParen, "grouping opts")?;
        let mut out = Vec::new();
        loop {
            match self.peek().clone() {
                Tok::RParen => {
                    self.next();
                    return Ok(out);
                }
                Tok::Ident(s) => {
                    if s.contains(':') {
                        return Err(self.unexpected("grouping opts"));
                    }
                    self.next();
                    out.push(s);
                }
                Tok::Str(s) => {
                    self.next();
                    out.push(s);
                }
                _ => {
                    let mut e = self.unexpected("grouping opts");
                    e.message.push_str(", expected label");
                    return Err(e);
                }
            }
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {}
                _ => {
                    let mut e = self.unexpected("grouping opts");
                    e.message.push_str(", expected \",\" or \")\"");
                    return Err(e);
                }
            }
        }
    }

    fn unary(&mut self) -> PResult<Expr> {
        let op = match self.peek() {
            Tok::Add => UnaryOp::Pos,
            Tok::Sub => UnaryOp::Neg,
            _ => return self.postfix(),
        };
        let start = self.start();
        self.next();
        // Unary operators bind like `*`: only `^` binds tighter.
        let operand = self.expr(BinaryOp::Pow.precedence())?;
        let span = Span::new(start, self.last_end());
        match operand.value_type() {
            ValueType::Scalar | ValueType::Vector => {}
            t => {
                return err(
                    start,
                    format!(
                        "unary expression only allowed on expressions of type scalar or instant vector, got {:?}",
                        t.name()
                    ),
                )
            }
        }
        if let Expr::Number(n) = &operand {
            let value = if op == UnaryOp::Neg {
                -n.value
            } else {
                n.value
            };
            let duration = n.duration.map(|d| if op == UnaryOp::Neg { -d } else { d });
            return Ok(Expr::Number(NumberLiteral {
                value,
                duration,
                span,
            }));
        }
        Ok(Expr::Unary(UnaryExpr {
            op,
            expr: Box::new(operand),
            span,
        }))
    }

    /// A primary expression followed by range, subquery, offset, `@` and
    /// anchored/smoothed modifiers.
    fn postfix(&mut self) -> PResult<Expr> {
        let start = self.start();
        let mut e = self.primary()?;
        loop {
            match self.peek().clone() {
                Tok::LBracket => {
                    e = self.range_or_subquery(e, start)?;
                }
                Tok::At => {
                    let at_pos = self.start();
                    self.next();
                    let at = self.at_value()?;
                    set_at(&mut e, at, at_pos)?;
                    extend_span(&mut e, self.last_end());
                }
                Tok::Ident(s) if s.eq_ignore_ascii_case("offset") => {
                    let off_pos = self.start();
                    self.next();
                    let d = self.offset_value()?;
                    set_offset(&mut e, d, off_pos)?;
                    extend_span(&mut e, self.last_end());
                }
                Tok::Ident(s)
                    if s.eq_ignore_ascii_case("anchored") || s.eq_ignore_ascii_case("smoothed") =>
                {
                    let p = self.start();
                    let anchored = s.eq_ignore_ascii_case("anchored");
                    let vs = match &mut e {
                        Expr::Vector(v) => v,
                        Expr::Matrix(m) => &mut m.vector,
                        _ => {
                            return err(
                                p,
                                format!(
                                    "{} modifier must be preceded by a vector selector or range vector selector",
                                    s.to_ascii_lowercase()
                                ),
                            )
                        }
                    };
                    if vs.anchored || vs.smoothed {
                        return err(
                            p,
                            "anchored and smoothed modifiers may not be set multiple times",
                        );
                    }
                    if anchored {
                        vs.anchored = true;
                    } else {
                        vs.smoothed = true;
                    }
                    self.next();
                    extend_span(&mut e, self.last_end());
                }
                _ => return Ok(e),
            }
        }
    }

    fn range_or_subquery(&mut self, e: Expr, start: usize) -> PResult<Expr> {
        let lb = self.start();
        self.next();
        let range = self.duration_expr(0)?;
        if *self.peek() == Tok::Colon {
            self.next();
            let step = if *self.peek() == Tok::RBracket {
                None
            } else {
                Some(self.duration_expr(0)?)
            };
            self.expect(Tok::RBracket, "subquery selector")?;
            if e.value_type() != ValueType::Vector {
                return err(
                    start,
                    format!(
                        "subquery is only allowed on instant vector, got {} instead",
                        e.value_type().name()
                    ),
                );
            }
            check_positive_duration(&range, lb, "range")?;
            if let Some(s) = &step {
                check_positive_duration(s, lb, "step")?;
            }
            return Ok(Expr::Subquery(SubqueryExpr {
                expr: Box::new(e),
                range,
                step,
                offset: None,
                at: None,
                span: Span::new(start, self.last_end()),
            }));
        }
        self.expect(Tok::RBracket, "matrix selector")?;
        let vs = match e {
            Expr::Vector(v) => v,
            _ => return err(lb, "ranges only allowed for vector selectors"),
        };
        if vs.offset.is_some() {
            return err(lb, "no offset modifiers allowed before range");
        }
        if vs.at.is_some() {
            return err(lb, "no @ modifiers allowed before range");
        }
        check_positive_duration(&range, lb, "range")?;
        Ok(Expr::Matrix(MatrixSelector {
            vector: vs,
            range,
            span: Span::new(start, self.last_end()),
        }))
    }

    fn at_value(&mut self) -> PResult<AtModifier> {
        let p = self.start();
        if self.peek_keyword("start") || self.peek_keyword("end") {
            let is_start = self.peek_keyword("start");
            self.next();
            self.expect(Tok::LParen, "@ modifier")?;
            self.expect(Tok::RParen, "@ modifier")?;
            return Ok(if is_start {
                AtModifier::Start
            } else {
                AtModifier::End
            });
        }
        let neg = match self.peek() {
            Tok::Sub => {
                self.next();
                true
            }
            Tok::Add => {
                self.next();
                false
            }
            _ => false,
        };
        let v = match self.peek().clone() {
            Tok::Number(v) => v,
            Tok::Duration(ms) => ms as f64 / 1000.0,
            Tok::Ident(s) => match ident_number(&s) {
                Some(v) => v,
                None => return Err(self.unexpected("@")),
            },
            _ => {
                let mut e = self.unexpected("@");
                e.message.push_str(", expected timestamp");
                return Err(e);
            }
        };
        self.next();
        let v = if neg { -v } else { v };
        let ms = v * 1000.0;
        if !ms.is_finite() || ms >= i64::MAX as f64 || ms <= i64::MIN as f64 {
            let shown = if v.is_finite() {
                format!("{v:.6}")
            } else {
                crate::printer::format_float(v)
            };
            return err(
                p,
                format!("timestamp out of bounds for @ modifier: {shown}"),
            );
        }
        Ok(AtModifier::Timestamp(ms.round() as i64))
    }

    /// The value after `offset`: a signed single duration term.
    fn offset_value(&mut self) -> PResult<DurationExpr> {
        let d = match self.peek() {
            Tok::Sub => {
                self.next();
                let inner = self.duration_atom()?;
                match inner {
                    DurationExpr::Literal(ms) => DurationExpr::Literal(-ms),
                    other => DurationExpr::Neg(Box::new(other)),
                }
            }
            Tok::Add => {
                self.next();
                let inner = self.duration_atom()?;
                match inner {
                    DurationExpr::Literal(ms) => DurationExpr::Literal(ms),
                    other => DurationExpr::Pos(Box::new(other)),
                }
            }
            _ => self.duration_atom()?,
        };
        Ok(fold_number(d))
    }

    /// A duration expression (inside `[...]` or parentheses).
    fn duration_expr(&mut self, min_prec: u8) -> PResult<DurationExpr> {
        let mut lhs = match self.peek() {
            Tok::Sub | Tok::Add => {
                let neg = *self.peek() == Tok::Sub;
                self.next();
                let inner = self.duration_expr(BinaryOp::Pow.precedence())?;
                if neg {
                    DurationExpr::Neg(Box::new(inner))
                } else {
                    DurationExpr::Pos(Box::new(inner))
                }
            }
            _ => self.duration_atom()?,
        };
        loop {
            let op = match self.peek() {
                Tok::Add => DurBinOp::Add,
                Tok::Sub => DurBinOp::Sub,
                Tok::Mul => DurBinOp::Mul,
                Tok::Div => DurBinOp::Div,
                Tok::Mod => DurBinOp::Mod,
                Tok::Pow => DurBinOp::Pow,
                _ => break,
            };
            let prec = match op {
                DurBinOp::Add | DurBinOp::Sub => 4,
                DurBinOp::Mul | DurBinOp::Div | DurBinOp::Mod => 5,
                DurBinOp::Pow => 6,
            };
            if prec < min_prec {
                break;
            }
            self.next();
            let next_min = if op == DurBinOp::Pow { prec } else { prec + 1 };
            let rhs = self.duration_expr(next_min)?;
            lhs = DurationExpr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(fold_number(lhs))
    }

    fn duration_atom(&mut self) -> PResult<DurationExpr> {
        match self.peek().clone() {
            Tok::Duration(ms) => {
                self.next();
                Ok(DurationExpr::Literal(ms))
            }
            Tok::Number(v) => {
                self.next();
                Ok(DurationExpr::Number(v))
            }
            Tok::LParen => {
                self.next();
                let inner = self.duration_expr(0)?;
                self.expect(Tok::RParen, "duration expression")?;
                Ok(DurationExpr::Paren(Box::new(inner)))
            }
            Tok::Ident(s) => {
                let lower = s.to_ascii_lowercase();
                match lower.as_str() {
                    "step" | "range" => {
                        self.next();
                        self.expect(Tok::LParen, "duration expression")?;
                        self.expect(Tok::RParen, "duration expression")?;
                        Ok(if lower == "step" {
                            DurationExpr::Step
                        } else {
                            DurationExpr::Range
                        })
                    }
                    "min_of" | "max_of" => {
                        self.next();
                        self.expect(Tok::LParen, "duration expression")?;
                        let a = self.duration_expr(0)?;
                        self.expect(Tok::Comma, "duration expression")?;
                        let b = self.duration_expr(0)?;
                        self.expect(Tok::RParen, "duration expression")?;
                        Ok(if lower == "min_of" {
                            DurationExpr::MinOf(Box::new(a), Box::new(b))
                        } else {
                            DurationExpr::MaxOf(Box::new(a), Box::new(b))
                        })
                    }
                    _ => {
                        let mut e = self.unexpected("duration expression");
                        e.message.push_str(", expected duration");
                        Err(e)
                    }
                }
            }
            _ => {
                let mut e = self.unexpected("duration expression");
                e.message.push_str(", expected duration");
                Err(e)
            }
        }
    }

    fn primary(&mut self) -> PResult<Expr> {
        let t = self.cur().clone();
        match t.tok {
            Tok::Number(v) => {
                self.next();
                Ok(Expr::Number(NumberLiteral {
                    value: v,
                    duration: None,
                    span: Span::new(t.start, t.end),
                }))
            }
            Tok::Duration(ms) => {
                self.next();
                Ok(Expr::Number(NumberLiteral {
                    value: ms as f64 / 1000.0,
                    duration: Some(ms),
                    span: Span::new(t.start, t.end),
                }))
            }
            Tok::Str(s) => {
                self.next();
                Ok(Expr::String(StringLiteral {
                    value: s,
                    span: Span::new(t.start, t.end),
                }))
            }
            Tok::LParen => {
                self.next();
                let inner = self.expr(0)?;
                self.expect(Tok::RParen, "paren expression")?;
                Ok(Expr::Paren(ParenExpr {
                    expr: Box::new(inner),
                    span: Span::new(t.start, self.last_end()),
                }))
            }
            Tok::LBrace => self.selector(None, t.start),
            Tok::Ident(name) => {
                let lower = name.to_ascii_lowercase();
                if let Some(op) = AggregateOp::from_name(&lower) {
                    if matches!(self.peek_at(1), Tok::LParen)
                        || matches!(self.peek_at(1), Tok::Ident(k) if k.eq_ignore_ascii_case("by") || k.eq_ignore_ascii_case("without"))
                    {
                        self.next();
                        return self.aggregate(op, t.start);
                    }
                }
                if *self.peek_at(1) == Tok::LParen {
                    self.next();
                    return self.call(&name, t.start);
                }
                if let Some(v) = ident_number(&name) {
                    self.next();
                    return Ok(Expr::Number(NumberLiteral {
                        value: v,
                        duration: None,
                        span: Span::new(t.start, t.end),
                    }));
                }
                if is_keyword(&lower) {
                    return Err(self.unexpected(""));
                }
                self.next();
                self.selector(Some(name), t.start)
            }
            Tok::Eof => Err(ParseError::at(t.start, "unexpected end of input".into())),
            _ => Err(self.unexpected("")),
        }
    }

    fn selector(&mut self, name: Option<String>, start: usize) -> PResult<Expr> {
        let mut matchers: Vec<Matcher> = Vec::new();
        let mut name = name;
        if let Some(n) = &name {
            matchers.push(Matcher::equal(METRIC_NAME, n.clone()));
        }
        if *self.peek() == Tok::LBrace {
            self.next();
            loop {
                let t = self.cur().clone();
                match t.tok {
                    Tok::RBrace => {
                        self.next();
                        break;
                    }
                    Tok::Ident(label) => {
                        self.next();
                        let m = self.matcher_rest(label)?;
                        matchers.push(m);
                    }
                    Tok::Str(s) => {
                        self.next();
                        let is_matcher = matches!(
                            self.peek(),
                            Tok::Assign | Tok::Neq | Tok::RegexMatch | Tok::RegexNoMatch
                        );
                        if is_matcher {
                            let m = self.matcher_rest(s)?;
                            matchers.push(m);
                        } else {
                            // A bare quoted string is the metric name (3.x).
                            if let Some(old) = &name {
                                return err(
                                    t.start,
                                    format!("metric name must not be set twice: {old:?} or {s:?}"),
                                );
                            }
                            matchers.push(Matcher::equal(METRIC_NAME, s.clone()));
                            name = Some(s);
                        }
                    }
                    _ => {
                        let mut e = self.unexpected("label matching");
                        e.message.push_str(", expected identifier or \"}\"");
                        return Err(e);
                    }
                }
                match self.peek() {
                    Tok::Comma => {
                        self.next();
                    }
                    Tok::RBrace => {}
                    _ => {
                        let mut e = self.unexpected("label matching");
                        e.message.push_str(", expected \",\" or \"}\"");
                        return Err(e);
                    }
                }
            }
        }
        let span = Span::new(start, self.last_end());
        // A name outside braces plus a `__name__` matcher inside is an error.
        let name_matchers = matchers.iter().filter(|m| m.name == METRIC_NAME).count();
        if name.is_some() && name_matchers > 1 {
            let other = matchers
                .iter()
                .filter(|m| m.name == METRIC_NAME)
                .nth(1)
                .map(|m| m.value.clone())
                .unwrap_or_default();
            return err(
                start,
                format!(
                    "metric name must not be set twice: {:?} or {:?}",
                    name.clone().unwrap_or_default(),
                    other
                ),
            );
        }
        if matchers.iter().all(|m| m.matches_empty()) && !self.allow_empty_selector {
            return err(
                start,
                "vector selector must contain at least one non-empty matcher",
            );
        }
        Ok(Expr::Vector(VectorSelector {
            name,
            matchers,
            offset: None,
            at: None,
            anchored: false,
            smoothed: false,
            span,
        }))
    }

    fn matcher_rest(&mut self, label: String) -> PResult<Matcher> {
        let op = match self.peek() {
            Tok::Assign => MatchOp::Equal,
            Tok::Neq => MatchOp::NotEqual,
            Tok::RegexMatch => MatchOp::RegexMatch,
            Tok::RegexNoMatch => MatchOp::RegexNoMatch,
            _ => {
                let mut e = self.unexpected("label matching");
                e.message
                    .push_str(", expected one of \"=\", \"!=\", \"=~\", \"!~\"");
                return Err(e);
            }
        };
        self.next();
        let vt = self.cur().clone();
        let value = match vt.tok {
            Tok::Str(s) => s,
            _ => {
                let mut e = self.unexpected("label matching");
                e.message.push_str(", expected string");
                return Err(e);
            }
        };
        self.next();
        Matcher::new(op, label, value).map_err(|e| match e {
            panoptes_model::MatcherError::BadRegex { source, .. } => {
                ParseError::at(vt.start, format!("error parsing regexp: {source}"))
            }
        })
    }

    fn aggregate(&mut self, op: AggregateOp, start: usize) -> PResult<Expr> {
        let mut grouping = Vec::new();
        let mut without = false;
        let mut has_grouping = false;
        if self.peek_keyword("by") || self.peek_keyword("without") {
            without = self.peek_keyword("without");
            self.next();
            grouping = self.label_list()?;
            has_grouping = true;
        }
        let lp = self.start();
        self.expect(Tok::LParen, "aggregation")?;
        let mut args = Vec::new();
        if *self.peek() != Tok::RParen {
            loop {
                args.push(self.expr(0)?);
                if *self.peek() == Tok::Comma {
                    self.next();
                    if *self.peek() == Tok::RParen {
                        break;
                    }
                    continue;
                }
                break;
            }
        }
        self.expect(Tok::RParen, "aggregation")?;
        if self.peek_keyword("by") || self.peek_keyword("without") {
            if has_grouping {
                return Err(self.unexpected("aggregation"));
            }
            without = self.peek_keyword("without");
            self.next();
            grouping = self.label_list()?;
            has_grouping = true;
        }
        let span = Span::new(start, self.last_end());
        let want = if op.param_type().is_some() { 2 } else { 1 };
        if args.len() != want {
            return err(
                lp,
                format!(
                    "wrong number of arguments for aggregate expression provided, expected {want}, got {}",
                    args.len()
                ),
            );
        }
        let expr = args
            .pop()
            .ok_or_else(|| ParseError::at(lp, "missing argument".into()))?;
        let param = args.pop();
        if expr.value_type() != ValueType::Vector {
            return err(
                expr.span().start,
                format!(
                    "expected type instant vector in aggregation expression, got {}",
                    expr.value_type().name()
                ),
            );
        }
        if let (Some(p), Some(t)) = (&param, op.param_type()) {
            if p.value_type() != t {
                return err(
                    p.span().start,
                    format!(
                        "expected type {} in aggregation parameter, got {}",
                        t.name(),
                        p.value_type().name()
                    ),
                );
            }
        }
        Ok(Expr::Aggregate(AggregateExpr {
            op,
            expr: Box::new(expr),
            param: param.map(Box::new),
            grouping,
            without,
            has_grouping,
            span,
        }))
    }

    fn call(&mut self, name: &str, start: usize) -> PResult<Expr> {
        let func = functions::lookup(name)
            .ok_or_else(|| ParseError::at(start, format!("unknown function with name {name:?}")))?;
        self.expect(Tok::LParen, "function call")?;
        let mut args = Vec::new();
        if *self.peek() != Tok::RParen {
            loop {
                self.allow_empty_selector = func.name == "info" && args.len() == 1;
                let arg = self.expr(0);
                self.allow_empty_selector = false;
                args.push(arg?);
                if *self.peek() == Tok::Comma {
                    self.next();
                    if *self.peek() == Tok::RParen {
                        break;
                    }
                    continue;
                }
                break;
            }
        }
        let rp = self.start();
        self.expect(Tok::RParen, "function call")?;
        let span = Span::new(start, self.last_end());
        let n = args.len();
        let nt = func.arg_types.len();
        if func.variadic == 0 {
            if n != nt {
                return err(
                    rp,
                    format!(
                        "expected {nt} argument(s) in call to {:?}, got {n}",
                        func.name
                    ),
                );
            }
        } else {
            // The last listed argument is optional; `variadic > 0` caps how
            // many more may follow, `-1` means any number.
            let min = nt - 1;
            if n < min {
                return err(
                    rp,
                    format!(
                        "expected at least {min} argument(s) in call to {:?}, got {n}",
                        func.name
                    ),
                );
            }
            let max = min + func.variadic.max(0) as usize;
            if func.variadic > 0 && n > max {
                return err(
                    rp,
                    format!(
                        "expected at most {max} argument(s) in call to {:?}, got {n}",
                        func.name
                    ),
                );
            }
        }
        for (i, a) in args.iter().enumerate() {
            let want = if i >= nt {
                match func.arg_types.last() {
                    Some(t) => *t,
                    None => break,
                }
            } else {
                func.arg_types[i]
            };
            let got = a.value_type();
            if got != want {
                return err(
                    a.span().start,
                    format!(
                        "expected type {} in call to function {:?}, got {}",
                        want.name(),
                        func.name,
                        got.name()
                    ),
                );
            }
        }
        if func.name == "info" {
            if let Some(a) = args.get(1) {
                if !matches!(a, Expr::Vector(_)) {
                    return err(
                        a.span().start,
                        "expected label selectors as the second argument to \"info\" function",
                    );
                }
            }
        }
        // anchored/smoothed only make sense for a few functions.
        for a in &args {
            if let Expr::Matrix(m) = a {
                if m.vector.smoothed && !matches!(func.name, "delta" | "increase" | "rate") {
                    return err(
                        a.span().start,
                        format!(
                            "smoothed modifier can only be used with: delta, increase, rate - not with {}",
                            func.name
                        ),
                    );
                }
                if m.vector.anchored
                    && !matches!(
                        func.name,
                        "changes" | "delta" | "increase" | "rate" | "resets"
                    )
                {
                    return err(
                        a.span().start,
                        format!(
                            "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with {}",
                            func.name
                        ),
                    );
                }
            }
        }
        Ok(Expr::Call(Call { func, args, span }))
    }
}

fn is_keyword(lower: &str) -> bool {
    matches!(
        lower,
        "and"
            | "or"
            | "unless"
            | "atan2"
            | "by"
            | "without"
            | "on"
            | "ignoring"
            | "group_left"
            | "group_right"
            | "bool"
            | "offset"
    )
}

/// A bare number in duration position means seconds.
fn fold_number(d: DurationExpr) -> DurationExpr {
    match d {
        DurationExpr::Number(v) if v.is_finite() && (v * 1000.0).fract() == 0.0 => {
            DurationExpr::Literal((v * 1000.0) as i64)
        }
        other => other,
    }
}

fn check_positive_duration(d: &DurationExpr, pos: usize, what: &str) -> PResult<()> {
    if d.is_dynamic() {
        return Ok(());
    }
    let ms = d.eval_ms(&DurationContext::default());
    if ms <= 0 {
        let shown = if ms < 0 {
            format!("-{}", panoptes_model::format_duration_ms(ms.unsigned_abs()))
        } else {
            "0s".to_string()
        };
        let msg = if what == "range" {
            format!("duration must be greater than 0 for range, got {shown}")
        } else {
            format!("duration must be greater than 0 for step, got {shown}")
        };
        return err(pos, msg);
    }
    Ok(())
}

fn extend_span(e: &mut Expr, end: usize) {
    match e {
        Expr::Vector(v) => v.span.end = end,
        Expr::Matrix(m) => m.span.end = end,
        Expr::Subquery(s) => s.span.end = end,
        _ => {}
    }
}

fn set_offset(e: &mut Expr, d: DurationExpr, pos: usize) -> PResult<()> {
    let slot = match e {
        Expr::Vector(v) => &mut v.offset,
        Expr::Matrix(m) => &mut m.vector.offset,
        Expr::Subquery(s) => &mut s.offset,
        _ => {
            return err(
                pos,
                "offset modifier must be preceded by an instant vector selector or range vector selector or a subquery",
            )
        }
    };
    if slot.is_some() {
        return err(pos, "offset may not be set multiple times");
    }
    *slot = Some(d);
    Ok(())
}

fn set_at(e: &mut Expr, at: AtModifier, pos: usize) -> PResult<()> {
    let slot = match e {
        Expr::Vector(v) => &mut v.at,
        Expr::Matrix(m) => &mut m.vector.at,
        Expr::Subquery(s) => &mut s.at,
        _ => {
            return err(
                pos,
                "@ modifier must be preceded by an instant vector selector or range vector selector or a subquery",
            )
        }
    };
    if slot.is_some() {
        return err(pos, "@ <timestamp> may not be set multiple times");
    }
    *slot = Some(at);
    Ok(())
}

fn build_binary(
    op: BinaryOp,
    op_pos: usize,
    lhs: Expr,
    rhs: Expr,
    return_bool: bool,
    matching: Option<VectorMatching>,
    fill: FillModifier,
) -> PResult<Expr> {
    let lt = lhs.value_type();
    let rt = rhs.value_type();
    let span = Span::new(lhs.span().start, rhs.span().end);
    for (t, e) in [(lt, &lhs), (rt, &rhs)] {
        if t != ValueType::Scalar && t != ValueType::Vector {
            return err(
                e.span().start,
                "binary expression must contain only scalar and instant vector types",
            );
        }
    }
    let both_vectors = lt == ValueType::Vector && rt == ValueType::Vector;
    if op.is_comparison() && !return_bool && lt == ValueType::Scalar && rt == ValueType::Scalar {
        return err(op_pos, "comparisons between scalars must use BOOL modifier");
    }
    if op.is_set() && (lt == ValueType::Scalar || rt == ValueType::Scalar) {
        return err(
            op_pos,
            format!(
                "set operator \"{}\" not allowed in binary scalar expression",
                op.as_str()
            ),
        );
    }
    if !both_vectors && matching.as_ref().is_some_and(|m| m.explicit) {
        return err(
            op_pos,
            "vector matching only allowed between instant vectors",
        );
    }
    let matching = if both_vectors {
        let mut m = matching.unwrap_or_default();
        if op.is_set() {
            m.card = Cardinality::ManyToMany;
        }
        Some(m)
    } else {
        None
    };
    Ok(Expr::Binary(BinaryExpr {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        return_bool,
        matching,
        fill,
        span,
    }))
}
