//! The PromQL abstract syntax tree: typed expression nodes with the byte
//! span they were parsed from (annotations and errors point at them).

use panoptes_model::Matcher;

/// A byte range `[start, end)` of the query text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// `line:column` (both 1-based) of the span start within `input`, as
    /// Prometheus prints positions in errors and annotations.
    pub fn line_col(&self, input: &str) -> (usize, usize) {
        line_col(input, self.start)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(input: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(input.len());
    let mut line = 1;
    let mut line_start = 0;
    for (i, c) in input.char_indices() {
        if i >= pos {
            break;
        }
        if c == '\n' {
            line += 1;
            line_start = i + 1;
        }
    }
    let col = input
        .get(line_start..pos)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// The four PromQL value types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    Scalar,
    Vector,
    Matrix,
    String,
}

impl ValueType {
    /// The name Prometheus uses in type errors (`instant vector`, …).
    pub fn name(&self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "instant vector",
            ValueType::Matrix => "range vector",
            ValueType::String => "string",
        }
    }

    /// The name used in the HTTP API's `resultType`.
    pub fn api_name(&self) -> &'static str {
        match self {
            ValueType::Scalar => "scalar",
            ValueType::Vector => "vector",
            ValueType::Matrix => "matrix",
            ValueType::String => "string",
        }
    }
}

/// A PromQL expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Number(NumberLiteral),
    String(StringLiteral),
    Vector(VectorSelector),
    Matrix(MatrixSelector),
    Subquery(SubqueryExpr),
    Paren(ParenExpr),
    Unary(UnaryExpr),
    Binary(BinaryExpr),
    Aggregate(AggregateExpr),
    Call(Call),
}

/// A float literal (`1`, `0x1f`, `1e3`, `Inf`, `NaN`, or a duration such
/// as `5m` used as a number of seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct NumberLiteral {
    pub value: f64,
    /// The duration text when the literal was written as one (`5m`), so the
    /// printer keeps it.
    pub duration: Option<i64>,
    pub span: Span,
}

/// A string literal, unescaped.
#[derive(Clone, Debug, PartialEq)]
pub struct StringLiteral {
    pub value: String,
    pub span: Span,
}

/// The `@` modifier of a selector or subquery.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AtModifier {
    /// A fixed time in milliseconds.
    Timestamp(i64),
    Start,
    End,
}

/// A duration written in a range, step or offset position: a literal, or
/// (Prometheus's experimental duration expressions) arithmetic over
/// durations, numbers of seconds, `step()`, `range()`, `min_of`, `max_of`.
#[derive(Clone, Debug, PartialEq)]
pub enum DurationExpr {
    /// A duration literal, in milliseconds (may be negative for offsets).
    Literal(i64),
    /// A plain number: seconds.
    Number(f64),
    Neg(Box<DurationExpr>),
    Pos(Box<DurationExpr>),
    Paren(Box<DurationExpr>),
    Binary(DurBinOp, Box<DurationExpr>, Box<DurationExpr>),
    Step,
    Range,
    MinOf(Box<DurationExpr>, Box<DurationExpr>),
    MaxOf(Box<DurationExpr>, Box<DurationExpr>),
}

/// Arithmetic operators of duration expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurBinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

/// The query-level values a duration expression may depend on.
#[derive(Clone, Copy, Debug, Default)]
pub struct DurationContext {
    /// The range query's step (0 for instant queries), ms.
    pub step_ms: i64,
    /// The range query's `end - start` (0 for instant queries), ms.
    pub range_ms: i64,
}

impl DurationExpr {
    /// The value in milliseconds, if it needs no query context.
    pub fn as_literal(&self) -> Option<i64> {
        match self {
            DurationExpr::Literal(ms) => Some(*ms),
            _ => None,
        }
    }

    /// Whether evaluating needs `step()` or `range()`.
    pub fn is_dynamic(&self) -> bool {
        match self {
            DurationExpr::Literal(_) | DurationExpr::Number(_) => false,
            DurationExpr::Step | DurationExpr::Range => true,
            DurationExpr::Neg(e) | DurationExpr::Pos(e) | DurationExpr::Paren(e) => e.is_dynamic(),
            DurationExpr::Binary(_, a, b)
            | DurationExpr::MinOf(a, b)
            | DurationExpr::MaxOf(a, b) => a.is_dynamic() || b.is_dynamic(),
        }
    }

    /// Evaluates to seconds (float), as Prometheus computes them.
    pub fn eval_seconds(&self, ctx: &DurationContext) -> f64 {
        match self {
            DurationExpr::Literal(ms) => *ms as f64 / 1000.0,
            DurationExpr::Number(v) => *v,
            DurationExpr::Neg(e) => -e.eval_seconds(ctx),
            DurationExpr::Pos(e) | DurationExpr::Paren(e) => e.eval_seconds(ctx),
            DurationExpr::Step => ctx.step_ms as f64 / 1000.0,
            DurationExpr::Range => ctx.range_ms as f64 / 1000.0,
            DurationExpr::MinOf(a, b) => a.eval_seconds(ctx).min(b.eval_seconds(ctx)),
            DurationExpr::MaxOf(a, b) => a.eval_seconds(ctx).max(b.eval_seconds(ctx)),
            DurationExpr::Binary(op, a, b) => {
                let (x, y) = (a.eval_seconds(ctx), b.eval_seconds(ctx));
                match op {
                    DurBinOp::Add => x + y,
                    DurBinOp::Sub => x - y,
                    DurBinOp::Mul => x * y,
                    DurBinOp::Div => x / y,
                    DurBinOp::Mod => x % y,
                    DurBinOp::Pow => x.powf(y),
                }
            }
        }
    }

    /// Evaluates to whole milliseconds.
    pub fn eval_ms(&self, ctx: &DurationContext) -> i64 {
        if let DurationExpr::Literal(ms) = self {
            return *ms;
        }
        let s = self.eval_seconds(ctx);
        (s * 1000.0).round() as i64
    }
}

/// An instant vector selector: `name{matchers} offset … @ …`.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorSelector {
    /// The metric name when written outside the braces (or as a quoted
    /// string inside them); it is also present among `matchers`.
    pub name: Option<String>,
    /// Every matcher, including the `__name__` one for the name.
    pub matchers: Vec<Matcher>,
    pub offset: Option<DurationExpr>,
    pub at: Option<AtModifier>,
    /// Experimental `anchored` / `smoothed` modifiers.
    pub anchored: bool,
    pub smoothed: bool,
    pub span: Span,
}

/// A range vector selector: `selector[range]`.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixSelector {
    pub vector: VectorSelector,
    pub range: DurationExpr,
    pub span: Span,
}

/// A subquery: `expr[range:step]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SubqueryExpr {
    pub expr: Box<Expr>,
    pub range: DurationExpr,
    /// `None` means the default (global evaluation interval).
    pub step: Option<DurationExpr>,
    pub offset: Option<DurationExpr>,
    pub at: Option<AtModifier>,
    pub span: Span,
}

/// `( expr )`.
#[derive(Clone, Debug, PartialEq)]
pub struct ParenExpr {
    pub expr: Box<Expr>,
    pub span: Span,
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Pos,
}

/// `-expr` or `+expr`.
#[derive(Clone, Debug, PartialEq)]
pub struct UnaryExpr {
    pub op: UnaryOp,
    pub expr: Box<Expr>,
    pub span: Span,
}

/// Binary operators, in no particular order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eql,
    Neq,
    Lss,
    Gtr,
    Lte,
    Gte,
    And,
    Or,
    Unless,
}

impl BinaryOp {
    pub fn as_str(&self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Atan2 => "atan2",
            BinaryOp::Eql => "==",
            BinaryOp::Neq => "!=",
            BinaryOp::Lss => "<",
            BinaryOp::Gtr => ">",
            BinaryOp::Lte => "<=",
            BinaryOp::Gte => ">=",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Unless => "unless",
        }
    }

    /// Precedence, higher binds tighter (Prometheus's order).
    pub fn precedence(&self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And | BinaryOp::Unless => 2,
            BinaryOp::Eql
            | BinaryOp::Neq
            | BinaryOp::Lss
            | BinaryOp::Gtr
            | BinaryOp::Lte
            | BinaryOp::Gte => 3,
            BinaryOp::Add | BinaryOp::Sub => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod | BinaryOp::Atan2 => 5,
            BinaryOp::Pow => 6,
        }
    }

    pub fn is_right_assoc(&self) -> bool {
        matches!(self, BinaryOp::Pow)
    }

    pub fn is_comparison(&self) -> bool {
        matches!(
            self,
            BinaryOp::Eql
                | BinaryOp::Neq
                | BinaryOp::Lss
                | BinaryOp::Gtr
                | BinaryOp::Lte
                | BinaryOp::Gte
        )
    }

    pub fn is_set(&self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless)
    }
}

/// How two vectors' elements are paired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cardinality {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

/// The `on`/`ignoring`/`group_*` clause of a binary operation.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorMatching {
    pub card: Cardinality,
    /// The `on(...)` or `ignoring(...)` label list.
    pub labels: Vec<String>,
    /// True for `on`, false for `ignoring` (or no clause).
    pub on: bool,
    /// Whether an explicit `on`/`ignoring` was written.
    pub explicit: bool,
    /// The `group_left(...)`/`group_right(...)` extra labels.
    pub include: Vec<String>,
}

impl Default for VectorMatching {
    fn default() -> Self {
        VectorMatching {
            card: Cardinality::OneToOne,
            labels: Vec::new(),
            on: false,
            explicit: false,
            include: Vec::new(),
        }
    }
}

/// Experimental `fill(v)`, `fill_left(v)`, `fill_right(v)` modifiers: the
/// value to use for a missing match on either side.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct FillModifier {
    pub left: Option<f64>,
    pub right: Option<f64>,
}

/// `lhs op [bool] [on|ignoring(...)] [group_x(...)] [fill(...)] rhs`.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryExpr {
    pub op: BinaryOp,
    pub lhs: Box<Expr>,
    pub rhs: Box<Expr>,
    pub return_bool: bool,
    /// Present when both sides are vectors.
    pub matching: Option<VectorMatching>,
    pub fill: FillModifier,
    pub span: Span,
}

/// Aggregation operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AggregateOp {
    Sum,
    Avg,
    Count,
    Min,
    Max,
    Group,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
    Quantile,
    CountValues,
    Limitk,
    LimitRatio,
}

impl AggregateOp {
    pub fn from_name(s: &str) -> Option<AggregateOp> {
        Some(match s {
            "sum" => AggregateOp::Sum,
            "avg" => AggregateOp::Avg,
            "count" => AggregateOp::Count,
            "min" => AggregateOp::Min,
            "max" => AggregateOp::Max,
            "group" => AggregateOp::Group,
            "stddev" => AggregateOp::Stddev,
            "stdvar" => AggregateOp::Stdvar,
            "topk" => AggregateOp::Topk,
            "bottomk" => AggregateOp::Bottomk,
            "quantile" => AggregateOp::Quantile,
            "count_values" => AggregateOp::CountValues,
            "limitk" => AggregateOp::Limitk,
            "limit_ratio" => AggregateOp::LimitRatio,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            AggregateOp::Sum => "sum",
            AggregateOp::Avg => "avg",
            AggregateOp::Count => "count",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
            AggregateOp::Group => "group",
            AggregateOp::Stddev => "stddev",
            AggregateOp::Stdvar => "stdvar",
            AggregateOp::Topk => "topk",
            AggregateOp::Bottomk => "bottomk",
            AggregateOp::Quantile => "quantile",
            AggregateOp::CountValues => "count_values",
            AggregateOp::Limitk => "limitk",
            AggregateOp::LimitRatio => "limit_ratio",
        }
    }

    /// The type of the parameter, for operators that take one.
    pub fn param_type(&self) -> Option<ValueType> {
        match self {
            AggregateOp::Topk
            | AggregateOp::Bottomk
            | AggregateOp::Quantile
            | AggregateOp::Limitk
            | AggregateOp::LimitRatio => Some(ValueType::Scalar),
            AggregateOp::CountValues => Some(ValueType::String),
            _ => None,
        }
    }
}

/// `op [by|without (labels)] ([param,] expr)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateExpr {
    pub op: AggregateOp,
    pub expr: Box<Expr>,
    pub param: Option<Box<Expr>>,
    pub grouping: Vec<String>,
    pub without: bool,
    /// Whether `by`/`without` was written at all (`sum by () (x)`).
    pub has_grouping: bool,
    pub span: Span,
}

/// A function call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub func: &'static crate::functions::Function,
    pub args: Vec<Expr>,
    pub span: Span,
}

impl Expr {
    /// The type of value the expression evaluates to.
    pub fn value_type(&self) -> ValueType {
        match self {
            Expr::Number(_) => ValueType::Scalar,
            Expr::String(_) => ValueType::String,
            Expr::Vector(_) => ValueType::Vector,
            Expr::Matrix(_) | Expr::Subquery(_) => ValueType::Matrix,
            Expr::Paren(p) => p.expr.value_type(),
            Expr::Unary(u) => u.expr.value_type(),
            Expr::Binary(b) => {
                if b.lhs.value_type() == ValueType::Scalar
                    && b.rhs.value_type() == ValueType::Scalar
                {
                    ValueType::Scalar
                } else {
                    ValueType::Vector
                }
            }
            Expr::Aggregate(_) => ValueType::Vector,
            Expr::Call(c) => c.func.return_type,
        }
    }

    /// The source span of the node.
    pub fn span(&self) -> Span {
        match self {
            Expr::Number(n) => n.span,
            Expr::String(s) => s.span,
            Expr::Vector(v) => v.span,
            Expr::Matrix(m) => m.span,
            Expr::Subquery(s) => s.span,
            Expr::Paren(p) => p.span,
            Expr::Unary(u) => u.span,
            Expr::Binary(b) => b.span,
            Expr::Aggregate(a) => a.span,
            Expr::Call(c) => c.span,
        }
    }

    /// Strips any number of enclosing parentheses.
    pub fn unparen(&self) -> &Expr {
        let mut e = self;
        while let Expr::Paren(p) = e {
            e = &p.expr;
        }
        e
    }

    /// Visits this node and every descendant, parents first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Number(_) | Expr::String(_) | Expr::Vector(_) | Expr::Matrix(_) => {}
            Expr::Subquery(s) => s.expr.walk(f),
            Expr::Paren(p) => p.expr.walk(f),
            Expr::Unary(u) => u.expr.walk(f),
            Expr::Binary(b) => {
                b.lhs.walk(f);
                b.rhs.walk(f);
            }
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    p.walk(f);
                }
                a.expr.walk(f);
            }
            Expr::Call(c) => {
                for a in &c.args {
                    a.walk(f);
                }
            }
        }
    }
}
