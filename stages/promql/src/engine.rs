//! The evaluator core: query entry points, the step grid, selectors,
//! subqueries and the dispatch to functions, aggregations and operators.
//!
//! Every node is evaluated once for the whole step grid of the query (not
//! once per step): a selector reads its series from the store once, for the
//! union of all the windows it needs, and walks them with a cursor.

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use panoptes_model::{is_stale_nan, Labels, SeriesSelect, METRIC_NAME};
use panoptes_promql_parser::{
    AtModifier, DurationContext, DurationExpr, Expr, MatrixSelector, SubqueryExpr, ValueType,
    VectorSelector,
};

use crate::value::{QueryError, QueryResult, RangeSeries, Sample, Value};

/// Limits and defaults of query evaluation.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (default 5m).
    pub lookback_delta_ms: i64,
    /// The most samples a query may hold at once.
    pub max_samples: usize,
    /// Wall-clock limit of one query.
    pub timeout: Duration,
    /// Step of subqueries written without one (`x[1h:]`): the global
    /// evaluation interval (default 1m).
    pub default_subquery_step_ms: i64,
    /// Prometheus 3's `promql-delayed-name-removal` feature: functions and
    /// operators that drop `__name__` only mark the series, and the name is
    /// removed when the query finishes (so `label_replace` and `by
    /// (__name__)` still see it). Off by default, as in Prometheus; the
    /// conformance harness turns it on.
    pub delayed_name_removal: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60_000,
            delayed_name_removal: false,
        }
    }
}

/// The PromQL engine: stateless apart from its options, shareable.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub opts: EngineOptions,
}

/// The step grid a node is evaluated over.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Grid {
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

impl Grid {
    pub fn len(&self) -> usize {
        if self.end < self.start || self.step <= 0 {
            0
        } else {
            let span = (self.end as i128 - self.start as i128) / self.step as i128;
            usize::try_from(span)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        }
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.start
            .saturating_add((i as i64).saturating_mul(self.step))
    }

    pub fn index_of(&self, t: i64) -> usize {
        (t.saturating_sub(self.start) / self.step.max(1)) as usize
    }
}

/// One series of a node's result over the grid: a point per step where it
/// has a value.
#[derive(Clone, Debug)]
pub(crate) struct StepSeries {
    pub labels: Arc<Labels>,
    pub points: Vec<(i64, f64)>,
    /// Delayed `__name__` removal: drop the name when the query finishes.
    pub drop_name: bool,
}

/// The raw samples behind a range argument (a matrix selector or a
/// subquery) and how to window them per step.
pub(crate) struct RangeArg {
    pub series: Vec<StepSeries>,
    pub range_ms: i64,
    pub offset_ms: i64,
    pub at: Option<i64>,
    /// The argument was a matrix selector with these flags.
    pub anchored: bool,
    pub smoothed: bool,
    pub is_selector: bool,
}

impl RangeArg {
    /// The window end (evaluation time after `@` and offset) at step time `t`.
    pub fn window_end(&self, t: i64) -> i64 {
        self.at.unwrap_or(t).saturating_sub(self.offset_ms)
    }

    /// Points in `(end - range, end]`.
    pub fn window<'a>(&self, s: &'a StepSeries, t: i64) -> &'a [(i64, f64)] {
        let end = self.window_end(t);
        let start = end.saturating_sub(self.range_ms);
        let lo = s.points.partition_point(|p| p.0 <= start);
        let hi = s.points.partition_point(|p| p.0 <= end);
        &s.points[lo..hi.max(lo)]
    }
}

/// Intermediate values.
pub(crate) enum EvalVal {
    /// One value per grid step.
    Scalar(Vec<f64>),
    Vector(Vec<StepSeries>),
    /// Only at the top level of an instant query: the raw windows.
    Matrix(Vec<StepSeries>),
    String(String),
}

pub(crate) struct Evaluator<'a> {
    pub store: &'a dyn SeriesSelect,
    pub opts: &'a EngineOptions,
    pub query_start: i64,
    pub query_end: i64,
    pub dur: DurationContext,
    pub deadline: Instant,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    /// Whether the query is a range query (for annotations).
    pub is_range: bool,
    /// The query text, when known, for `line:col` positions.
    pub text: Option<&'a str>,
    /// Set by the caller to abandon the query (`canceled`).
    pub cancel: Option<&'a AtomicBool>,
}

pub(crate) type EResult<T> = Result<T, QueryError>;

pub(crate) fn exec_err<T>(msg: impl Into<String>) -> EResult<T> {
    Err(QueryError::Execution(msg.into()))
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    /// Evaluates `expr` at one instant.
    /// An upper bound on what an instant evaluation of `expr` reads, in
    /// series, from the store's index: a range selector counts its series
    /// once per started minute of range (`x[5m]` over 10 series is 50).
    /// `None` when the store cannot tell or for subqueries.
    pub fn instant_read_bound(store: &dyn SeriesSelect, expr: &Expr) -> Option<usize> {
        const MINUTE_MS: i64 = 60_000;
        let mut total = Some(0usize);
        expr.walk(&mut |e| {
            let Some(sum) = total else { return };
            total = match e {
                Expr::Subquery(_) => None,
                Expr::Vector(v) => store
                    .series_upper_bound(&v.matchers)
                    .map(|n| sum.saturating_add(n)),
                Expr::Matrix(m) => m.range.as_literal().and_then(|ms| {
                    let minutes = usize::try_from((ms + MINUTE_MS - 1) / MINUTE_MS).ok()?;
                    let n = store.series_upper_bound(&m.vector.matchers)?;
                    Some(sum.saturating_add(n.saturating_mul(minutes.max(1))))
                }),
                _ => Some(sum),
            };
        });
        total
    }

    pub fn instant(
        &self,
        store: &dyn SeriesSelect,
        expr: &Expr,
        ts_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.instant_cancellable(store, expr, ts_ms, None)
    }

    /// Like [`Engine::instant`]; setting `cancel` makes the query stop with
    /// a `canceled` error at its next check.
    pub fn instant_cancellable(
        &self,
        store: &dyn SeriesSelect,
        expr: &Expr,
        ts_ms: i64,
        cancel: Option<&AtomicBool>,
    ) -> Result<QueryResult, QueryError> {
        let mut ev = self.evaluator(store, ts_ms, ts_ms, 0, false);
        ev.cancel = cancel;
        let grid = Grid {
            start: ts_ms,
            end: ts_ms,
            step: 1,
        };
        let v = ev.eval(expr, grid)?;
        let value = match v {
            EvalVal::Scalar(v) => Value::Scalar(ts_ms, v.first().copied().unwrap_or(f64::NAN)),
            EvalVal::String(s) => Value::String(ts_ms, s),
            EvalVal::Vector(series) => {
                let series = finish_names(series, true)?;
                Value::Vector(
                    series
                        .into_iter()
                        .filter_map(|s| {
                            s.points.first().map(|p| Sample {
                                labels: Arc::unwrap_or_clone(s.labels),
                                t: ts_ms,
                                v: p.1,
                            })
                        })
                        .collect(),
                )
            }
            EvalVal::Matrix(series) => {
                let mut series = finish_names(series, false)?;
                series.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Matrix(
                    series
                        .into_iter()
                        .filter(|s| !s.points.is_empty())
                        .map(|s| RangeSeries {
                            labels: Arc::unwrap_or_clone(s.labels),
                            points: s.points,
                        })
                        .collect(),
                )
            }
        };
        Ok(QueryResult {
            value,
            warnings: ev.warnings,
            infos: ev.infos,
        })
    }

    /// Parses and evaluates a query at one instant; parse errors are
    /// `bad_data` with Prometheus's message, and annotation positions
    /// refer to `query`'s lines and columns.
    pub fn instant_query(
        &self,
        store: &dyn SeriesSelect,
        query: &str,
        ts_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let expr =
            panoptes_promql_parser::parse(query).map_err(|e| QueryError::BadData(e.to_string()))?;
        let mut r = self.instant(store, &expr, ts_ms)?;
        relocate(&mut r, query);
        Ok(r)
    }

    /// Parses and evaluates a range query (see [`Engine::instant_query`]).
    pub fn range_query(
        &self,
        store: &dyn SeriesSelect,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        let expr =
            panoptes_promql_parser::parse(query).map_err(|e| QueryError::BadData(e.to_string()))?;
        let mut r = self.range(store, &expr, start_ms, end_ms, step_ms)?;
        relocate(&mut r, query);
        Ok(r)
    }

    /// Evaluates `expr` at every step from `start_ms` to `end_ms`.
    pub fn range(
        &self,
        store: &dyn SeriesSelect,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<QueryResult, QueryError> {
        self.range_cancellable(store, expr, start_ms, end_ms, step_ms, None)
    }

    /// Like [`Engine::range`], with a cancel flag.
    pub fn range_cancellable(
        &self,
        store: &dyn SeriesSelect,
        expr: &Expr,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        cancel: Option<&AtomicBool>,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::BadData(
                "end timestamp must not be before start time".into(),
            ));
        }
        match expr.value_type() {
            ValueType::Scalar | ValueType::Vector => {}
            t => {
                return Err(QueryError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                t.name()
            )))
            }
        }
        let mut ev = self.evaluator(store, start_ms, end_ms, step_ms, true);
        ev.cancel = cancel;
        let grid = Grid {
            start: start_ms,
            end: end_ms,
            step: step_ms,
        };
        ev.check_samples(grid.len())?;
        let v = ev.eval(expr, grid)?;
        let series = match v {
            EvalVal::Scalar(vals) => vec![RangeSeries {
                labels: Labels::empty(),
                points: vals
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (grid.ts(i), *v))
                    .collect(),
            }],
            EvalVal::Vector(series) => {
                let mut s: Vec<RangeSeries> = finish_names(series, false)?
                    .into_iter()
                    .filter(|s| !s.points.is_empty())
                    .map(|s| RangeSeries {
                        labels: Arc::unwrap_or_clone(s.labels),
                        points: s.points,
                    })
                    .collect();
                s.sort_by(|a, b| a.labels.cmp(&b.labels));
                s
            }
            _ => {
                return Err(QueryError::BadData(
                    "invalid expression type for range query, must be Scalar or instant Vector"
                        .into(),
                ))
            }
        };
        Ok(QueryResult {
            value: Value::Matrix(series),
            warnings: ev.warnings,
            infos: ev.infos,
        })
    }

    fn evaluator<'a>(
        &'a self,
        store: &'a dyn SeriesSelect,
        start: i64,
        end: i64,
        step: i64,
        is_range: bool,
    ) -> Evaluator<'a> {
        Evaluator {
            store,
            opts: &self.opts,
            query_start: start,
            query_end: end,
            dur: DurationContext {
                step_ms: step,
                range_ms: end - start,
            },
            deadline: Instant::now() + self.opts.timeout,
            warnings: Vec::new(),
            infos: Vec::new(),
            is_range,
            text: None,
            cancel: None,
        }
    }
}

/// Rewrites the single-line ` (1:N)` positions of annotations into the
/// line and column of byte offset N-1 of a multi-line query.
fn relocate(r: &mut QueryResult, query: &str) {
    if !query.contains('\n') {
        return;
    }
    for a in r.warnings.iter_mut().chain(r.infos.iter_mut()) {
        let Some(open) = a.rfind(" (1:") else {
            continue;
        };
        let Some(n) = a[open + 4..]
            .strip_suffix(')')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let (l, c) = panoptes_promql_parser::ast::line_col(query, n.saturating_sub(1));
        a.truncate(open);
        a.push_str(&format!(" ({l}:{c})"));
    }
}

/// The label set without the metric name and the type and unit metadata
/// labels that go with it.
pub(crate) fn drop_metric_name(l: &Labels) -> Labels {
    if !l.iter().any(|x| x.name.starts_with("__")) {
        return l.clone();
    }
    l.drop_names(&[METRIC_NAME, "__type__", "__unit__"])
}

/// Applies delayed `__name__` removal, then checks that no two series share
/// a label set at the same time (merging those that do not overlap).
pub(crate) fn finish_names(series: Vec<StepSeries>, instant: bool) -> EResult<Vec<StepSeries>> {
    if !series.iter().any(|s| s.drop_name) {
        return Ok(series);
    }
    let mut out: Vec<StepSeries> = Vec::with_capacity(series.len());
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::default();
    for mut s in series {
        if s.drop_name {
            s.labels = Arc::new(drop_metric_name(&s.labels));
        }
        s.drop_name = false;
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&i) => {
                let existing = &mut out[i];
                if instant {
                    return exec_err("vector cannot contain metrics with the same labelset");
                }
                let mut merged = Vec::with_capacity(existing.points.len() + s.points.len());
                let (mut a, mut b) = (0, 0);
                while a < existing.points.len() || b < s.points.len() {
                    match (existing.points.get(a), s.points.get(b)) {
                        (Some(x), Some(y)) if x.0 == y.0 => {
                            return exec_err(
                                "vector cannot contain metrics with the same labelset",
                            );
                        }
                        (Some(x), Some(y)) if x.0 < y.0 => {
                            merged.push(*x);
                            a += 1;
                        }
                        (Some(_), Some(y)) => {
                            merged.push(*y);
                            b += 1;
                        }
                        (Some(x), None) => {
                            merged.push(*x);
                            a += 1;
                        }
                        (None, Some(y)) => {
                            merged.push(*y);
                            b += 1;
                        }
                        (None, None) => break,
                    }
                }
                existing.points = merged;
            }
        }
    }
    Ok(out)
}

impl<'a> Evaluator<'a> {
    /// Position suffix ` (line:col)` of a node for annotations. Without the
    /// query text, the query is taken to be a single line.
    pub fn pos(&self, e: &Expr) -> String {
        let (l, c) = match self.text {
            Some(t) => e.span().line_col(t),
            None => (1, e.span().start + 1),
        };
        format!(" ({l}:{c})")
    }

    pub fn check_deadline(&self) -> EResult<()> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(QueryError::Canceled(
                "query was canceled in expression evaluation".into(),
            ));
        }
        if Instant::now() > self.deadline {
            return Err(QueryError::Timeout(
                "query timed out in expression evaluation".into(),
            ));
        }
        Ok(())
    }

    pub fn check_samples(&self, n: usize) -> EResult<()> {
        if n > self.opts.max_samples {
            return exec_err(
                "query processing would load too many samples into memory in query execution",
            );
        }
        Ok(())
    }

    pub fn duration_ms(&self, d: &DurationExpr) -> i64 {
        d.eval_ms(&self.dur)
    }

    pub fn resolve_at(&self, at: &Option<AtModifier>) -> Option<i64> {
        at.map(|a| match a {
            AtModifier::Timestamp(t) => t,
            AtModifier::Start => self.query_start,
            AtModifier::End => self.query_end,
        })
    }

    pub fn eval(&mut self, expr: &Expr, grid: Grid) -> EResult<EvalVal> {
        let v = self.eval_node(expr, grid)?;
        if self.opts.delayed_name_removal {
            return Ok(v);
        }
        // Without delayed removal the name goes as soon as a node drops it.
        Ok(match v {
            EvalVal::Vector(s) if s.iter().any(|x| x.drop_name) => {
                EvalVal::Vector(finish_names(s, false)?)
            }
            other => other,
        })
    }

    pub(crate) fn eval_node(&mut self, expr: &Expr, grid: Grid) -> EResult<EvalVal> {
        self.check_deadline()?;
        match expr {
            Expr::Number(n) => Ok(EvalVal::Scalar(vec![n.value; grid.len()])),
            Expr::String(s) => Ok(EvalVal::String(s.value.clone())),
            Expr::Paren(p) => self.eval(&p.expr, grid),
            Expr::Vector(vs) => Ok(EvalVal::Vector(self.eval_vector_selector(vs, grid, false)?)),
            Expr::Matrix(ms) => {
                // Top level of an instant query: the raw window at the time.
                let arg = self.eval_matrix_selector(ms, grid)?;
                Ok(EvalVal::Matrix(self.windows_at(&arg, grid.start)))
            }
            Expr::Subquery(sq) => {
                let arg = self.eval_subquery(sq, grid)?;
                Ok(EvalVal::Matrix(self.windows_at(&arg, grid.start)))
            }
            Expr::Unary(u) => {
                let v = self.eval(&u.expr, grid)?;
                if u.op == panoptes_promql_parser::UnaryOp::Pos {
                    return Ok(v);
                }
                Ok(match v {
                    EvalVal::Scalar(vals) => EvalVal::Scalar(vals.iter().map(|v| -v).collect()),
                    EvalVal::Vector(mut series) => {
                        for s in &mut series {
                            for p in &mut s.points {
                                p.1 = -p.1;
                            }
                            s.drop_name = true;
                        }
                        EvalVal::Vector(series)
                    }
                    other => other,
                })
            }
            Expr::Binary(b) => self.eval_binary(b, grid),
            Expr::Aggregate(a) => self.eval_aggregate(a, grid),
            Expr::Call(c) => self.eval_call(c, grid),
        }
    }

    /// Evaluates an expression known to be scalar-typed.
    pub fn eval_scalar(&mut self, expr: &Expr, grid: Grid) -> EResult<Vec<f64>> {
        match self.eval(expr, grid)? {
            EvalVal::Scalar(v) => Ok(v),
            _ => exec_err("expected scalar"),
        }
    }

    /// Evaluates an expression known to be vector-typed.
    pub fn eval_vector(&mut self, expr: &Expr, grid: Grid) -> EResult<Vec<StepSeries>> {
        match self.eval(expr, grid)? {
            EvalVal::Vector(v) => Ok(v),
            _ => exec_err("expected instant vector"),
        }
    }

    fn windows_at(&self, arg: &RangeArg, t: i64) -> Vec<StepSeries> {
        arg.series
            .iter()
            .map(|s| StepSeries {
                labels: s.labels.clone(),
                points: arg.window(s, t).to_vec(),
                drop_name: s.drop_name,
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    }

    /// An instant vector selector over the grid. With `sample_ts`, values
    /// are replaced by the selected samples' timestamps (for `timestamp()`).
    pub fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        grid: Grid,
        sample_ts: bool,
    ) -> EResult<Vec<StepSeries>> {
        let offset = vs.offset.as_ref().map(|d| self.duration_ms(d)).unwrap_or(0);
        let at = self.resolve_at(&vs.at);
        let n = grid.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let lookback = self.opts.lookback_delta_ms;
        let (first_te, last_te) = match at {
            Some(a) => (a.saturating_sub(offset), a.saturating_sub(offset)),
            None => (
                grid.start.saturating_sub(offset),
                grid.end.saturating_sub(offset),
            ),
        };
        // A smoothed selector interpolates towards the next sample.
        let after = if vs.smoothed { lookback } else { 0 };
        let (mint, maxt) = (
            first_te.saturating_sub(lookback).saturating_add(1),
            last_te.saturating_add(after),
        );
        // One evaluation time (an instant query, or `@`): only the newest
        // sample of each series matters, so the store need not hand over
        // the whole lookback window of every series.
        let selected = if first_te == last_te && !vs.smoothed && !vs.anchored {
            self.store.select_latest(&vs.matchers, mint, maxt)?
        } else {
            self.store.select(&vs.matchers, mint, maxt)?
        };
        let mut out = Vec::with_capacity(selected.len());
        let mut total = 0usize;
        for s in selected {
            let pts = &s.samples;
            let mut points = Vec::with_capacity(n.min(pts.len() * 4 + 1));
            if vs.smoothed || vs.anchored {
                for i in 0..n {
                    let t = grid.ts(i);
                    let te = at.unwrap_or(t).saturating_sub(offset);
                    if let Some(v) =
                        crate::functions::smoothed_value(pts, te, lookback, vs.smoothed)
                    {
                        points.push((t, v));
                    }
                }
            } else {
                let mut cur = 0usize;
                for i in 0..n {
                    let t = grid.ts(i);
                    let te = at.unwrap_or(t).saturating_sub(offset);
                    // Cursor to the first sample after te (monotone in te
                    // unless `@` pins it, when te is constant).
                    while cur < pts.len() && pts[cur].0 <= te {
                        cur += 1;
                    }
                    if cur == 0 {
                        continue;
                    }
                    let (st, sv) = pts[cur - 1];
                    if st <= te.saturating_sub(lookback) || is_stale_nan(sv) {
                        continue;
                    }
                    points.push((t, if sample_ts { st as f64 / 1000.0 } else { sv }));
                }
            }
            if points.is_empty() {
                continue;
            }
            total += 1;
            out.push(StepSeries {
                labels: Arc::new(s.labels),
                points,
                drop_name: false,
            });
        }
        self.check_samples(total)?;
        Ok(out)
    }

    /// Reads the samples a matrix selector needs for the whole grid.
    pub fn eval_matrix_selector(&mut self, ms: &MatrixSelector, grid: Grid) -> EResult<RangeArg> {
        let vs = &ms.vector;
        let offset = vs.offset.as_ref().map(|d| self.duration_ms(d)).unwrap_or(0);
        let range = self.duration_ms(&ms.range);
        if range <= 0 {
            return exec_err(format!(
                "duration must be greater than 0 for range, got {range}ms"
            ));
        }
        let at = self.resolve_at(&vs.at);
        let (first_te, last_te) = match at {
            Some(a) => (a.saturating_sub(offset), a.saturating_sub(offset)),
            None => (
                grid.start.saturating_sub(offset),
                grid.end.saturating_sub(offset),
            ),
        };
        // anchored/smoothed look one lookback before the window (and
        // smoothed one lookback after) for the boundary samples.
        let extra_before = if vs.anchored || vs.smoothed {
            self.opts.lookback_delta_ms
        } else {
            0
        };
        let extra_after = if vs.smoothed {
            self.opts.lookback_delta_ms
        } else {
            0
        };
        let selected = self.store.select(
            &vs.matchers,
            first_te
                .saturating_sub(range)
                .saturating_sub(extra_before)
                .saturating_add(1),
            last_te.saturating_add(extra_after),
        )?;
        let mut series = Vec::with_capacity(selected.len());
        let mut total = 0;
        for s in selected {
            let mut points = s.samples;
            points.retain(|p| !is_stale_nan(p.1));
            if points.is_empty() {
                continue;
            }
            // Samples held at once: those of one window (the last one).
            let lo = points.partition_point(|p| p.0 <= last_te.saturating_sub(range));
            total += points.len() - lo.min(points.len());
            series.push(StepSeries {
                labels: Arc::new(s.labels),
                points,
                drop_name: false,
            });
        }
        self.check_samples(total)?;
        Ok(RangeArg {
            series,
            range_ms: range,
            offset_ms: offset,
            at,
            anchored: vs.anchored,
            smoothed: vs.smoothed,
            is_selector: true,
        })
    }

    /// Evaluates a subquery's inner expression on its own aligned grid
    /// covering every window the outer grid needs.
    pub fn eval_subquery(&mut self, sq: &SubqueryExpr, grid: Grid) -> EResult<RangeArg> {
        let offset = sq.offset.as_ref().map(|d| self.duration_ms(d)).unwrap_or(0);
        let range = self.duration_ms(&sq.range);
        let step = sq
            .step
            .as_ref()
            .map(|d| self.duration_ms(d))
            .unwrap_or(self.opts.default_subquery_step_ms);
        if range <= 0 || step <= 0 {
            return exec_err("subquery range and step must be greater than 0");
        }
        let at = self.resolve_at(&sq.at);
        let (first_te, last_te) = match at {
            Some(a) => (a.saturating_sub(offset), a.saturating_sub(offset)),
            None => (
                grid.start.saturating_sub(offset),
                grid.end.saturating_sub(offset),
            ),
        };
        let lower = first_te.saturating_sub(range);
        // First step-aligned time strictly after the window start.
        let mut start = lower.div_euclid(step).saturating_mul(step);
        if start <= lower {
            start = start.saturating_add(step);
        }
        let inner_grid = Grid {
            start,
            end: last_te,
            step,
        };
        // Every step holds at least one sample per series: a grid longer
        // than the sample limit cannot be evaluated.
        self.check_samples(inner_grid.len())?;
        let series = if inner_grid.len() == 0 {
            Vec::new()
        } else {
            match self.eval(&sq.expr, inner_grid)? {
                EvalVal::Vector(v) => v,
                EvalVal::Scalar(vals) => vec![StepSeries {
                    labels: Arc::new(Labels::empty()),
                    points: vals
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (inner_grid.ts(i), *v))
                        .collect(),
                    drop_name: false,
                }],
                _ => return exec_err("subquery is only allowed on instant vector"),
            }
        };
        Ok(RangeArg {
            series,
            range_ms: range,
            offset_ms: offset,
            at,
            anchored: false,
            smoothed: false,
            is_selector: false,
        })
    }

    /// Evaluates a range-vector argument (matrix selector or subquery,
    /// possibly parenthesised).
    pub fn eval_range_arg(&mut self, e: &Expr, grid: Grid) -> EResult<RangeArg> {
        match e.unparen() {
            Expr::Matrix(ms) => self.eval_matrix_selector(ms, grid),
            Expr::Subquery(sq) => self.eval_subquery(sq, grid),
            _ => exec_err("expected range vector"),
        }
    }
}

#[cfg(test)]
mod read_bound_tests {
    use super::*;
    use panoptes_model::{Matcher, Series, StorageError};
    use panoptes_promql_parser::parse;

    /// A store whose index says each metric name matches as many series as
    /// the number in its name (`m7` → 7) and cannot bound anything else.
    struct Sized;

    impl SeriesSelect for Sized {
        fn select(&self, _: &[Matcher], _: i64, _: i64) -> Result<Vec<Series>, StorageError> {
            Ok(Vec::new())
        }
        fn label_names(&self, _: &[Matcher], _: i64, _: i64) -> Result<Vec<String>, StorageError> {
            Ok(Vec::new())
        }
        fn label_values(
            &self,
            _: &str,
            _: &[Matcher],
            _: i64,
            _: i64,
        ) -> Result<Vec<String>, StorageError> {
            Ok(Vec::new())
        }
        fn series_upper_bound(&self, matchers: &[Matcher]) -> Option<usize> {
            matchers
                .iter()
                .find(|m| m.name == METRIC_NAME)
                .and_then(|m| m.value.strip_prefix('m')?.parse().ok())
        }
    }

    fn bound(q: &str) -> Option<usize> {
        Engine::instant_read_bound(&Sized, &parse(q).unwrap())
    }

    #[test]
    fn bounds_add_up_over_selectors_weighted_by_range() {
        assert_eq!(bound("1 + 2"), Some(0));
        assert_eq!(bound("m7"), Some(7));
        assert_eq!(
            bound("sum by (a) (rate(m7[5m])) / on() group_left m30"),
            Some(65)
        );
        assert_eq!(bound("{job=\"x\"}"), None);
        assert_eq!(bound("rate(m7[2h])"), Some(840));
        assert_eq!(bound("rate(m7[10s])"), Some(7));
        assert_eq!(bound("max_over_time(m7[5m:1m])"), None);
    }
}
