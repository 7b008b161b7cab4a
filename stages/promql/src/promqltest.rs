//! A runner for Prometheus's PromQL test-script DSL (`load`, `clear`,
//! `eval instant|range` with `expect …` lines), with the reference
//! harness's re-checks: `@`-pinned variants and the range-mode re-check of
//! instant evals. Evals that involve native histograms (which this engine
//! does not store) are counted as skipped.

use std::fmt;
use std::time::Duration;

use panoptes_model::{is_stale_nan, parse_duration_ms, stale_nan, Labels, Matcher};
use panoptes_promql_parser::{parse, AtModifier, Expr};
use regex::Regex;

use crate::engine::{Engine, EngineOptions};
use crate::memstore::MemStore;
use crate::value::{QueryResult, Value};

/// Outcome of one eval.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Involves native histograms.
    Skip,
}

/// Result of one eval command.
#[derive(Debug, Clone)]
pub struct EvalReport {
    pub line: usize,
    pub expr: String,
    pub outcome: Outcome,
}

/// Result of one file.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    pub evals: Vec<EvalReport>,
    /// A load or syntax problem that stopped the file.
    pub fatal: Option<String>,
}

impl FileReport {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.evals.iter().filter(|e| f(&e.outcome)).count()
    }
    pub fn passed(&self) -> usize {
        self.count(|o| *o == Outcome::Pass)
    }
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| *o == Outcome::Skip)
    }
}

/// A script-level error (bad syntax in the test file itself).
#[derive(Debug, Clone)]
pub struct ScriptError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn serr<T>(line: usize, message: impl Into<String>) -> Result<T, ScriptError> {
    Err(ScriptError {
        line,
        message: message.into(),
    })
}

/// One expected value (`_` is `None`).
type ExpVal = Option<f64>;

#[derive(Debug, Default)]
struct Expect {
    fail: bool,
    fail_msg: Option<String>,
    fail_regex: Option<String>,
    ordered: bool,
    warn: Vec<Option<AnnoMatch>>,
    info: Vec<Option<AnnoMatch>>,
    no_warn: bool,
    no_info: bool,
    range_vector: Option<(i64, i64, i64)>,
    string: Option<String>,
    scalar: Option<f64>,
    series: Vec<(Labels, Vec<ExpVal>)>,
    has_histogram: bool,
}

#[derive(Debug, Clone)]
enum AnnoMatch {
    Exact(String),
    Regex(String),
}

fn parse_time(s: &str, line: usize) -> Result<i64, ScriptError> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-') {
        return parse_time(rest, line).map(|v| -v);
    }
    if let Ok(ms) = parse_duration_ms(s) {
        return Ok(ms as i64);
    }
    // Plain numbers are seconds.
    match s.parse::<f64>() {
        Ok(v) => Ok((v * 1000.0).round() as i64),
        Err(_) => serr(line, format!("invalid time {s:?}")),
    }
}

fn parse_number(s: &str) -> Option<f64> {
    crate::functions::parse_go_float(s)
}

/// Expands one value token of the series notation.
fn expand_value(tok: &str, line: usize) -> Result<Vec<ExpVal>, ScriptError> {
    if tok == "_" {
        return Ok(vec![None]);
    }
    if let Some(n) = tok.strip_prefix("_x") {
        let n: usize = n
            .parse()
            .or_else(|_| serr(line, format!("bad repetition {tok:?}")))?;
        return Ok(vec![None; n]);
    }
    if tok == "stale" {
        return Ok(vec![Some(stale_nan())]);
    }
    // `0x59` is 0 repeated, not hex: repetition wins over hex literals.
    let is_repeat = tok.rsplit_once('x').is_some_and(|(b, n)| {
        !b.is_empty() && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
    });
    if let Some(v) = parse_number(tok).filter(|_| !is_repeat) {
        return Ok(vec![Some(v)]);
    }
    // a x N, a+b x N, a-b x N
    let (body, count) = match tok.rsplit_once('x') {
        Some((b, n)) if !b.is_empty() && n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
            (b, n.parse::<usize>().unwrap_or(0))
        }
        _ => return serr(line, format!("bad value {tok:?}")),
    };
    if body == "stale" {
        return Ok(vec![Some(stale_nan()); count + 1]);
    }
    if let Some(v) = parse_number(body) {
        return Ok(vec![Some(v); count + 1]);
    }
    // Find the operator that separates start and delta: a + or - not at
    // position 0 and not right after an exponent marker.
    let bytes = body.as_bytes();
    let mut split = None;
    for i in 1..bytes.len() {
        if (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E') {
            split = Some(i);
            break;
        }
    }
    let Some(i) = split else {
        return serr(line, format!("bad value {tok:?}"));
    };
    let start = parse_number(&body[..i]);
    let delta = parse_number(&body[i + 1..]);
    let (Some(start), Some(delta)) = (start, delta) else {
        return serr(line, format!("bad value {tok:?}"));
    };
    let delta = if bytes[i] == b'-' { -delta } else { delta };
    let mut out = Vec::with_capacity(count + 1);
    let mut v = start;
    for _ in 0..=count {
        out.push(Some(v));
        v += delta;
    }
    Ok(out)
}

/// Splits a series line into its selector text and the rest.
fn split_series(s: &str) -> (&str, &str) {
    let s = s.trim();
    let mut in_quote: Option<char> = None;
    let mut depth = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                in_quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => in_quote = Some(c),
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return (&s[..=i], &s[i + 1..]);
                }
            }
            c if c.is_whitespace() && depth == 0 => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

fn parse_labels(sel: &str, line: usize) -> Result<Labels, ScriptError> {
    let sel = sel.trim();
    if sel == "{}" {
        return Ok(Labels::empty());
    }
    match parse(sel) {
        Ok(Expr::Vector(vs)) => Ok(Labels::from_pairs(
            vs.matchers
                .iter()
                .map(|m| (m.name.clone(), m.value.clone())),
        )),
        Ok(_) => serr(line, format!("not a series: {sel:?}")),
        Err(e) => serr(line, format!("bad series {sel:?}: {e}")),
    }
}

/// Value tokens, keeping `{{...}}` histogram literals as one token.
fn value_tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '{' => {
                depth += 1;
                cur.push(c);
            }
            '}' => {
                depth -= 1;
                cur.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Parses the values of a series line; histogram tokens become `None` and
/// set the flag.
fn parse_values(rest: &str, line: usize, has_hist: &mut bool) -> Result<Vec<ExpVal>, ScriptError> {
    let mut out = Vec::new();
    for tok in value_tokens(rest) {
        if tok.contains("{{") {
            *has_hist = true;
            // Count repetitions of histogram tokens as missing floats.
            let reps = tok
                .rsplit_once("}}x")
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .map(|n| n + 1)
                .unwrap_or(1);
            out.extend(std::iter::repeat_n(None, reps));
            continue;
        }
        out.extend(expand_value(&tok, line)?);
    }
    Ok(out)
}

/// Runs one test file's text.
pub fn run_script(text: &str, opts: &EngineOptions) -> FileReport {
    let mut report = FileReport::default();
    let mut store = MemStore::new();
    let mut nh_series: Vec<Labels> = Vec::new();
    let engine = Engine::new(opts.clone());
    // Lines, trimmed, with comments as blank lines.
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim();
            if t.starts_with('#') {
                String::new()
            } else {
                t.to_string()
            }
        })
        .collect();
    let mut i = 0;
    let header_re =
        Regex::new(r"^(?i)(eval(?:_fail|_warn|_info|_ordered)?)\s+(instant|range)\s+(.*)$")
            .expect("static regex");
    while i < lines.len() {
        let l = &lines[i];
        if l.is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        while end < lines.len() && !lines[end].is_empty() {
            end += 1;
        }
        let body = &lines[start + 1..end];
        let word = l
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let res: Result<(), ScriptError> = if word == "clear" {
            // `clear` is a single-line command: what follows may be a
            // command of its own without a blank line in between.
            store.clear();
            nh_series.clear();
            i = start + 1;
            continue;
        } else if word == "load" || word == "load_with_nhcb" {
            load(
                &mut store,
                &mut nh_series,
                l,
                body,
                start + 1,
                word == "load_with_nhcb",
            )
        } else if word.starts_with("eval") {
            match header_re.captures(l) {
                Some(c) => {
                    let r = run_eval(
                        &engine,
                        &store,
                        &nh_series,
                        &c[1].to_ascii_lowercase(),
                        &c[2].to_ascii_lowercase(),
                        &c[3],
                        body,
                        start + 1,
                    );
                    match r {
                        Ok(rep) => {
                            report.evals.push(rep);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                None => serr(start + 1, format!("invalid eval command {l:?}")),
            }
        } else {
            serr(start + 1, format!("unknown command {l:?}"))
        };
        if let Err(e) = res {
            // A broken eval counts as a failure; a broken load stops the file.
            if word.starts_with("eval") {
                report.evals.push(EvalReport {
                    line: e.line,
                    expr: l.clone(),
                    outcome: Outcome::Fail(e.message),
                });
            } else {
                report.fatal = Some(e.to_string());
                return report;
            }
        }
        i = end;
    }
    report
}

fn load(
    store: &mut MemStore,
    nh: &mut Vec<Labels>,
    header: &str,
    body: &[String],
    line: usize,
    nhcb: bool,
) -> Result<(), ScriptError> {
    let interval = header.split_whitespace().nth(1).unwrap_or("");
    let step = parse_time(interval, line)?;
    for (k, l) in body.iter().enumerate() {
        let ln = line + 1 + k;
        let (sel, rest) = split_series(l);
        if sel.ends_with("@st") || rest.trim_start().starts_with("@st") {
            // Start timestamps are not modelled; the sample line follows.
            continue;
        }
        let labels = parse_labels(sel, ln)?;
        let mut has_hist = false;
        let values = parse_values(rest, ln, &mut has_hist)?;
        if has_hist {
            nh.push(labels.clone());
        }
        for (j, v) in values.iter().enumerate() {
            if let Some(v) = v {
                store.add(&labels, j as i64 * step, *v);
            }
        }
        if nhcb {
            if let Some(name) = labels.metric_name() {
                for suffix in ["_bucket", "_count", "_sum"] {
                    if let Some(base) = name.strip_suffix(suffix) {
                        let mut b = labels.to_builder();
                        b.set("__name__", base);
                        b.del("le");
                        nh.push(b.build());
                    }
                }
            }
        }
    }
    Ok(())
}

fn parse_expect(body: &[String], line: usize, is_range: bool) -> Result<Expect, ScriptError> {
    let mut e = Expect::default();
    for (k, l) in body.iter().enumerate() {
        let ln = line + 1 + k;
        if let Some(rest) = l.strip_prefix("expect") {
            let rest = rest.trim_start();
            let (kind, tail) = rest
                .split_once(|c: char| c.is_whitespace())
                .unwrap_or((rest, ""));
            let tail = tail.trim();
            let anno = |tail: &str| -> Option<AnnoMatch> {
                if let Some(m) = tail.strip_prefix("msg:") {
                    Some(AnnoMatch::Exact(m.trim().to_string()))
                } else {
                    tail.strip_prefix("regex:")
                        .map(|r| AnnoMatch::Regex(r.trim().to_string()))
                }
            };
            match kind {
                "fail" => {
                    e.fail = true;
                    match anno(tail) {
                        Some(AnnoMatch::Exact(m)) => e.fail_msg = Some(m),
                        Some(AnnoMatch::Regex(r)) => e.fail_regex = Some(r),
                        None => {}
                    }
                }
                "ordered" => e.ordered = true,
                "warn" => e.warn.push(anno(tail)),
                "info" => e.info.push(anno(tail)),
                "no_warn" => e.no_warn = true,
                "no_info" => e.no_info = true,
                "string" => {
                    let t = tail.trim();
                    let s = if t.len() >= 2 {
                        match parse(t) {
                            Ok(Expr::String(s)) => s.value,
                            _ => t[1..t.len() - 1].to_string(),
                        }
                    } else {
                        String::new()
                    };
                    e.string = Some(s);
                }
                "range" => {
                    // range vector from <t1> to <t2> step <s>
                    let w: Vec<&str> = tail.split_whitespace().collect();
                    if w.len() != 7
                        || w[0] != "vector"
                        || w[1] != "from"
                        || w[3] != "to"
                        || w[5] != "step"
                    {
                        return serr(ln, format!("bad expect range line {l:?}"));
                    }
                    e.range_vector = Some((
                        parse_time(w[2], ln)?,
                        parse_time(w[4], ln)?,
                        parse_time(w[6], ln)?,
                    ));
                }
                _ => return serr(ln, format!("unknown expect {l:?}")),
            }
            continue;
        }
        if let Some(v) = parse_number(l) {
            e.scalar = Some(v);
            continue;
        }
        let (sel, rest) = split_series(l);
        let labels = parse_labels(sel, ln)?;
        let mut has_hist = false;
        let vals = parse_values(rest, ln, &mut has_hist)?;
        if has_hist {
            e.has_histogram = true;
        }
        if !is_range && e.range_vector.is_none() && vals.len() != 1 {
            return serr(ln, format!("expected one value in instant eval: {l:?}"));
        }
        e.series.push((labels, vals));
    }
    Ok(e)
}

fn almost_equal(a: f64, b: f64) -> bool {
    if is_stale_nan(a) || is_stale_nan(b) {
        return is_stale_nan(a) && is_stale_nan(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let eps = 1e-6;
    let diff = (a - b).abs();
    let min_normal = f64::MIN_POSITIVE;
    if a == 0.0 || b == 0.0 || a.abs() + b.abs() < min_normal {
        return diff < eps * min_normal;
    }
    diff / (a.abs() + b.abs()) < eps
}

const TIME_FUNCS: &[&str] = &[
    "time",
    "timestamp",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "start",
    "end",
    "range",
    "step",
];

fn uses_funcs(e: &Expr, names: &[&str]) -> bool {
    let mut found = false;
    e.walk(&mut |n| {
        if let Expr::Call(c) = n {
            if names.contains(&c.func.name) {
                found = true;
            }
        }
    });
    found
}

/// Whether the expression uses step()/range() in a duration position.
fn uses_dynamic_durations(e: &Expr) -> bool {
    let dynamic = |d: &Option<panoptes_promql_parser::DurationExpr>| {
        d.as_ref().is_some_and(|d| d.is_dynamic())
    };
    let mut found = false;
    e.walk(&mut |n| {
        found |= match n {
            Expr::Vector(vs) => dynamic(&vs.offset),
            Expr::Matrix(ms) => ms.range.is_dynamic() || dynamic(&ms.vector.offset),
            Expr::Subquery(sq) => sq.range.is_dynamic() || dynamic(&sq.step) || dynamic(&sq.offset),
            _ => false,
        };
    });
    found
}

/// Pins every selector and subquery without `@` to `t` (not descending
/// into pinned subqueries). Returns whether anything changed.
fn pin_at(e: &mut Expr, t: i64) -> bool {
    match e {
        Expr::Vector(vs) => {
            if vs.at.is_none() {
                vs.at = Some(AtModifier::Timestamp(t));
                return true;
            }
            false
        }
        Expr::Matrix(ms) => {
            if ms.vector.at.is_none() {
                ms.vector.at = Some(AtModifier::Timestamp(t));
                return true;
            }
            false
        }
        Expr::Subquery(sq) => {
            if sq.at.is_none() {
                sq.at = Some(AtModifier::Timestamp(t));
                return true;
            }
            false
        }
        Expr::Paren(p) => pin_at(&mut p.expr, t),
        Expr::Unary(u) => pin_at(&mut u.expr, t),
        Expr::Binary(b) => {
            let l = pin_at(&mut b.lhs, t);
            let r = pin_at(&mut b.rhs, t);
            l || r
        }
        Expr::Aggregate(a) => {
            let mut c = false;
            if let Some(p) = a.param.as_mut() {
                c |= pin_at(p, t);
            }
            c | pin_at(&mut a.expr, t)
        }
        Expr::Call(c) => {
            let mut ch = false;
            for a in c.args.iter_mut() {
                ch |= pin_at(a, t);
            }
            ch
        }
        Expr::Number(_) | Expr::String(_) => false,
    }
}

/// Whether an eval touches native-histogram series (COUNTS.md's rule).
fn touches_nh(e: &Expr, nh: &[Labels]) -> bool {
    if nh.is_empty() {
        return false;
    }
    let mut found = false;
    e.walk(&mut |n| {
        let ms: Option<&[Matcher]> = match n {
            Expr::Vector(vs) => Some(&vs.matchers),
            Expr::Matrix(m) => Some(&m.vector.matchers),
            _ => None,
        };
        if let Some(ms) = ms {
            if nh.iter().any(|l| ms.iter().all(|m| m.matches_labels(l))) {
                found = true;
            }
        }
    });
    found
}

#[allow(clippy::too_many_arguments)]
fn run_eval(
    engine: &Engine,
    store: &MemStore,
    nh: &[Labels],
    cmd: &str,
    kind: &str,
    rest: &str,
    body: &[String],
    line: usize,
) -> Result<EvalReport, ScriptError> {
    let is_range = kind == "range";
    let (expr_text, t, range) = if is_range {
        // from <t1> to <t2> step <s> <expr>
        let w: Vec<&str> = rest.splitn(7, char::is_whitespace).collect();
        if w.len() < 7 || w[0] != "from" || w[2] != "to" || w[4] != "step" {
            return serr(line, format!("bad range eval {rest:?}"));
        }
        let (a, b, s) = (
            parse_time(w[1], line)?,
            parse_time(w[3], line)?,
            parse_time(w[5], line)?,
        );
        if b < a {
            return serr(line, "range eval end before start");
        }
        (w[6].trim().to_string(), a, Some((a, b, s)))
    } else {
        let r = rest.trim();
        let r = r.strip_prefix("at ").unwrap_or(r);
        let (ts, ex) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
        (ex.trim().to_string(), parse_time(ts, line)?, None)
    };
    let mut exp = parse_expect(body, line, is_range)?;
    match cmd {
        "eval_fail" => exp.fail = true,
        "eval_ordered" => exp.ordered = true,
        "eval_warn" => exp.warn.push(None),
        "eval_info" => exp.info.push(None),
        _ => {}
    }
    let report = |outcome| EvalReport {
        line,
        expr: expr_text.clone(),
        outcome,
    };
    let parsed = parse(&expr_text);
    if exp.has_histogram {
        return Ok(report(Outcome::Skip));
    }
    match &parsed {
        Ok(e) if touches_nh(e, nh) => return Ok(report(Outcome::Skip)),
        // Unparseable (e.g. histogram-only operators): judge by names.
        Err(_)
            if nh
                .iter()
                .any(|l| l.metric_name().is_some_and(|n| expr_text.contains(n))) =>
        {
            return Ok(report(Outcome::Skip))
        }
        _ => {}
    }
    let expr = match parsed {
        Ok(e) => e,
        Err(err) => {
            return Ok(report(if exp.fail {
                check_fail_msg(&exp, &err.message)
            } else {
                Outcome::Fail(format!("parse error: {err}"))
            }))
        }
    };
    let run = |e: &Expr, at: i64| -> Result<QueryResult, crate::value::QueryError> {
        match range {
            Some((a, b, s)) => engine.range(store, e, a, b, s),
            None => engine.instant(store, e, at),
        }
    };
    // `expect range vector from t1 to t2 …` evaluates at t2.
    let t = exp.range_vector.map(|(_, t2, _)| t2).unwrap_or(t);
    let res = run(&expr, t);
    let first = match res {
        Err(err) if exp.fail => {
            let outcome = check_fail_msg(&exp, &err.to_string());
            if outcome != Outcome::Pass || is_range {
                return Ok(report(outcome));
            }
            // An expected failure must also happen in every `@` variant.
            for (pinned, at) in at_variants(&expr, t) {
                if run(&pinned, at).is_ok() {
                    return Ok(report(Outcome::Fail(format!(
                        "@-pinned variant evaluated at {at}ms did not fail ({pinned})"
                    ))));
                }
            }
            return Ok(report(Outcome::Pass));
        }
        Err(err) => return Ok(report(Outcome::Fail(format!("unexpected error: {err}")))),
        Ok(r) => r,
    };
    if exp.fail {
        return Ok(report(Outcome::Fail(format!(
            "expected an error, got {}",
            first.value.type_name()
        ))));
    }
    if let Err(why) = check_annotations(&exp, &first) {
        return Ok(report(Outcome::Fail(why)));
    }
    if let Err(why) = compare(&exp, &first.value, range, exp.ordered) {
        return Ok(report(Outcome::Fail(why)));
    }
    if is_range {
        return Ok(report(Outcome::Pass));
    }
    // `@` variants.
    for (pinned, at) in at_variants(&expr, t) {
        match run(&pinned, at) {
            Err(err) => {
                return Ok(report(Outcome::Fail(format!(
                    "@-pinned variant at {at}ms failed: {err} ({pinned})"
                ))))
            }
            Ok(r) => {
                if let Err(why) = compare(&exp, &r.value, None, exp.ordered) {
                    return Ok(report(Outcome::Fail(format!(
                        "@-pinned variant evaluated at {at}ms: {why} ({pinned})"
                    ))));
                }
            }
        }
    }
    // Range-mode re-check.
    let skip_range = exp.ordered
        || exp.range_vector.is_some()
        || exp.string.is_some()
        || uses_funcs(&expr, &["start", "end", "range", "step"])
        || uses_dynamic_durations(&expr)
        || !matches!(
            expr.value_type(),
            panoptes_promql_parser::ValueType::Scalar | panoptes_promql_parser::ValueType::Vector
        );
    if !skip_range {
        match engine.range(store, &expr, t - 60_000, t + 60_000, 60_000) {
            Err(err) => {
                return Ok(report(Outcome::Fail(format!(
                    "range-mode re-check failed: {err}"
                ))))
            }
            Ok(r) => {
                let at_t = matrix_at(&r.value, t, expr.value_type());
                if let Err(why) = compare(&exp, &at_t, None, false) {
                    return Ok(report(Outcome::Fail(format!("range-mode re-check: {why}"))));
                }
            }
        }
    }
    Ok(report(Outcome::Pass))
}

/// The harness's `@` variants of an instant eval at `t`: the expression
/// with every selector and subquery pinned to `t`, and the times to run it
/// at. None when the expression depends on the evaluation time or has
/// nothing to pin.
fn at_variants(expr: &Expr, t: i64) -> Vec<(Expr, i64)> {
    if uses_funcs(expr, TIME_FUNCS) {
        return Vec::new();
    }
    let mut pinned = expr.clone();
    if !pin_at(&mut pinned, t) {
        return Vec::new();
    }
    let times: Vec<i64> = if t == 0 {
        vec![-1000, 0, 1000]
    } else {
        vec![-10 * t, 0, t / 5, t, 10 * t]
    };
    times.into_iter().map(|at| (pinned.clone(), at)).collect()
}

/// The points of a range result at `t`, as an instant result.
fn matrix_at(v: &Value, t: i64, vt: panoptes_promql_parser::ValueType) -> Value {
    match v {
        Value::Matrix(m) if vt == panoptes_promql_parser::ValueType::Scalar => {
            let p = m.first().and_then(|s| s.points.iter().find(|p| p.0 == t));
            Value::Scalar(t, p.map(|p| p.1).unwrap_or(f64::NAN))
        }
        Value::Matrix(m) => {
            let samples: Vec<crate::value::Sample> = m
                .iter()
                .filter_map(|s| {
                    s.points
                        .iter()
                        .find(|p| p.0 == t)
                        .map(|p| crate::value::Sample {
                            labels: s.labels.clone(),
                            t,
                            v: p.1,
                        })
                })
                .collect();
            Value::Vector(samples)
        }
        other => other.clone(),
    }
}

fn check_fail_msg(exp: &Expect, msg: &str) -> Outcome {
    if let Some(m) = &exp.fail_msg {
        if msg != m {
            return Outcome::Fail(format!("error message {msg:?}, expected {m:?}"));
        }
    }
    if let Some(r) = &exp.fail_regex {
        match Regex::new(r) {
            Ok(re) if re.is_match(msg) => {}
            _ => return Outcome::Fail(format!("error message {msg:?} does not match /{r}/")),
        }
    }
    Outcome::Pass
}

fn check_annotations(exp: &Expect, r: &QueryResult) -> Result<(), String> {
    fn check(
        kind: &str,
        want: &[Option<AnnoMatch>],
        none: bool,
        got: &[String],
    ) -> Result<(), String> {
        if none && !got.is_empty() {
            return Err(format!("unexpected {kind} annotations: {got:?}"));
        }
        if want.is_empty() {
            return Ok(());
        }
        if got.is_empty() {
            return Err(format!("expected {kind} annotations, got none"));
        }
        let matches = |m: &AnnoMatch, a: &str| match m {
            AnnoMatch::Exact(s) => a == s,
            AnnoMatch::Regex(r) => Regex::new(r).map(|re| re.is_match(a)).unwrap_or(false),
        };
        let specific: Vec<&AnnoMatch> = want.iter().flatten().collect();
        for m in &specific {
            if !got.iter().any(|a| matches(m, a)) {
                return Err(format!("no {kind} annotation matches {m:?}; got {got:?}"));
            }
        }
        if !specific.is_empty() {
            for a in got {
                if !specific.iter().any(|m| matches(m, a)) {
                    return Err(format!("unexpected {kind} annotation {a:?}"));
                }
            }
        }
        Ok(())
    }
    check("warn", &exp.warn, exp.no_warn, &r.warnings)?;
    check("info", &exp.info, exp.no_info, &r.infos)
}

fn fmt_val(v: f64) -> String {
    panoptes_promql_parser::format_float(v)
}

fn compare(
    exp: &Expect,
    got: &Value,
    range: Option<(i64, i64, i64)>,
    ordered: bool,
) -> Result<(), String> {
    if let Some(s) = &exp.string {
        return match got {
            Value::String(_, g) if g == s => Ok(()),
            other => Err(format!("expected string {s:?}, got {other:?}")),
        };
    }
    if let Some(v) = exp.scalar {
        return match got {
            Value::Scalar(_, g) if almost_equal(*g, v) => Ok(()),
            Value::Scalar(_, g) => Err(format!(
                "expected scalar {}, got {}",
                fmt_val(v),
                fmt_val(*g)
            )),
            other => Err(format!("expected scalar, got {}", other.type_name())),
        };
    }
    let grid = range.or(exp.range_vector);
    match (got, grid) {
        (Value::Matrix(m), Some((a, _b, s))) => {
            for w in m.windows(2) {
                if w[0].labels >= w[1].labels {
                    return Err("matrix is not sorted by labels".into());
                }
            }
            let mut matched = vec![false; exp.series.len()];
            for series in m {
                let Some(ei) = exp.series.iter().position(|(l, _)| *l == series.labels) else {
                    return Err(format!("unexpected series {}", series.labels));
                };
                matched[ei] = true;
                let want: Vec<(i64, f64)> = exp.series[ei]
                    .1
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (a + i as i64 * s, v)))
                    .collect();
                if want.len() != series.points.len() {
                    return Err(format!(
                        "series {}: expected {} points, got {} ({:?})",
                        series.labels,
                        want.len(),
                        series.points.len(),
                        series.points
                    ));
                }
                for (w, g) in want.iter().zip(series.points.iter()) {
                    if w.0 != g.0 || !almost_equal(w.1, g.1) {
                        return Err(format!(
                            "series {}: expected {}@{}, got {}@{}",
                            series.labels,
                            fmt_val(w.1),
                            w.0,
                            fmt_val(g.1),
                            g.0
                        ));
                    }
                }
            }
            // Expected series with no points at all need not be returned.
            for (i, m) in matched.iter().enumerate() {
                if !m && exp.series[i].1.iter().any(|v| v.is_some()) {
                    return Err(format!("missing series {}", exp.series[i].0));
                }
            }
            Ok(())
        }
        (Value::Vector(v), None) => {
            let mut matched = vec![false; exp.series.len()];
            for (pos, s) in v.iter().enumerate() {
                let Some(ei) = exp.series.iter().position(|(l, _)| *l == s.labels) else {
                    return Err(format!("unexpected series {} {}", s.labels, fmt_val(s.v)));
                };
                if matched[ei] {
                    return Err(format!("duplicate series {}", s.labels));
                }
                matched[ei] = true;
                if ordered && ei != pos {
                    return Err(format!(
                        "series {} at position {}, expected {}",
                        s.labels,
                        pos + 1,
                        ei + 1
                    ));
                }
                let want = exp.series[ei].1.first().copied().flatten();
                match want {
                    Some(w) if almost_equal(w, s.v) => {}
                    Some(w) => {
                        return Err(format!(
                            "series {}: expected {}, got {}",
                            s.labels,
                            fmt_val(w),
                            fmt_val(s.v)
                        ))
                    }
                    None => return Err(format!("series {}: expected no value", s.labels)),
                }
            }
            if let Some(i) = matched.iter().position(|m| !m) {
                return Err(format!("missing series {}", exp.series[i].0));
            }
            Ok(())
        }
        (Value::Scalar(_, v), _) => Err(format!("expected vector, got scalar {}", fmt_val(*v))),
        (other, _) => Err(format!(
            "unexpected result type {} for this expectation",
            other.type_name()
        )),
    }
}

/// Engine options of the reference harness: 5m lookback, 1m default
/// subquery step, 10000 max samples, 100s timeout, delayed name removal.
pub fn harness_options() -> EngineOptions {
    EngineOptions {
        lookback_delta_ms: 5 * 60 * 1000,
        max_samples: 10_000,
        timeout: Duration::from_secs(100),
        default_subquery_step_ms: 60_000,
        delayed_name_removal: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_series_notation() {
        assert_eq!(
            expand_value("1+2x2", 1).unwrap(),
            vec![Some(1.0), Some(3.0), Some(5.0)]
        );
        assert_eq!(
            expand_value("5-1x1", 1).unwrap(),
            vec![Some(5.0), Some(4.0)]
        );
        assert_eq!(expand_value("_x2", 1).unwrap(), vec![None, None]);
        assert_eq!(expand_value("3x1", 1).unwrap(), vec![Some(3.0), Some(3.0)]);
        assert_eq!(expand_value("-1e3", 1).unwrap(), vec![Some(-1000.0)]);
        assert_eq!(expand_value("1e-3+1x1", 1).unwrap().len(), 2);
    }

    #[test]
    fn runs_a_small_script() {
        let script = "load 10s\n  metric{a=\"1\"} 0+10x10\n\neval instant at 50s metric\n  metric{a=\"1\"} 50\n\neval instant at 50s metric\n  metric{a=\"1\"} 51\n";
        let r = run_script(script, &harness_options());
        assert_eq!(r.passed(), 1);
        assert_eq!(r.failed(), 1);
    }
}
