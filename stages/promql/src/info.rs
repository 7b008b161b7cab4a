//! The experimental `info()` function: enriches series with the data labels
//! of info metrics (`target_info` by default) that share their identifying
//! labels (`instance`, `job`).

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use panoptes_model::{Labels, Matcher, Sym, METRIC_NAME};
use panoptes_promql_parser::{Call, Expr, VectorSelector};

use crate::engine::{exec_err, EResult, EvalVal, Evaluator, Grid, StepSeries};

const IDENTIFYING: [&str; 2] = ["instance", "job"];

pub(crate) fn eval_info(ev: &mut Evaluator<'_>, c: &Call, grid: Grid) -> EResult<EvalVal> {
    let input = ev.eval_vector(&c.args[0], grid)?;
    let selector = match c.args.get(1).map(|a| a.unparen()) {
        Some(Expr::Vector(vs)) => Some(vs),
        Some(_) => return exec_err("expected label selectors as the second argument to \"info\""),
        None => None,
    };
    let mut name_matchers: Vec<Matcher> = Vec::new();
    let mut data_matchers: Vec<Matcher> = Vec::new();
    if let Some(vs) = selector {
        for m in &vs.matchers {
            if m.name == METRIC_NAME {
                name_matchers.push(m.clone());
            } else {
                data_matchers.push(m.clone());
            }
        }
    }
    if name_matchers.is_empty() {
        name_matchers.push(Matcher::equal(METRIC_NAME, "target_info"));
    }
    // Without an exact name, only metrics named like info metrics qualify.
    let exact = name_matchers
        .iter()
        .any(|m| m.op == panoptes_model::MatchOp::Equal);
    let mut select_name = name_matchers.clone();
    if !exact {
        if let Ok(m) = Matcher::new(panoptes_model::MatchOp::RegexMatch, METRIC_NAME, ".*_info") {
            select_name.push(m);
        }
    }
    let mut all = select_name;
    all.extend(data_matchers.iter().cloned());
    let info_vs = VectorSelector {
        name: None,
        matchers: all,
        offset: None,
        at: None,
        anchored: false,
        smoothed: false,
        span: c.span,
    };
    // Info series are looked up at the time the input's samples refer to
    // (after its `@` and offsets), which is either fixed or the step time
    // shifted by a constant.
    let r0 = ref_time(ev, &c.args[0], grid.start);
    let r1 = ref_time(ev, &c.args[0], grid.end);
    let fixed = grid.len() > 1 && r0 == r1 || grid.len() == 1 && ref_is_fixed(&c.args[0]);
    let info_grid = if fixed {
        Grid {
            start: r0,
            end: r0,
            step: 1,
        }
    } else {
        Grid {
            start: r0,
            end: r0 + (grid.end - grid.start),
            step: grid.step,
        }
    };
    let map_t = |t: i64| -> i64 {
        if fixed {
            r0
        } else {
            t - grid.start + r0
        }
    };
    // Values are the samples' timestamps: of several series of one info
    // metric, the most recent one wins.
    let infos = ev.eval_vector_selector(&info_vs, info_grid, true)?;
    // Info series by identifying-label values.
    let mut by_id: HashMap<(String, String), Vec<usize>> = HashMap::default();
    for (i, s) in infos.iter().enumerate() {
        let key = (
            s.labels.get("instance").unwrap_or("").to_string(),
            s.labels.get("job").unwrap_or("").to_string(),
        );
        by_id.entry(key).or_default().push(i);
    }
    let requires_match = data_matchers.iter().any(|m| !m.matches_empty());
    let mut out: Vec<StepSeries> = Vec::new();
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::default();
    for s in &input {
        let name = s.labels.metric_name().unwrap_or("");
        // Input series that are themselves info series (by a positive name
        // matcher) are passed through unchanged.
        let is_info = name_matchers.iter().any(|m| {
            matches!(
                m.op,
                panoptes_model::MatchOp::Equal | panoptes_model::MatchOp::RegexMatch
            )
        }) && name_matchers.iter().all(|m| m.matches(name));
        let key = (
            s.labels.get("instance").unwrap_or("").to_string(),
            s.labels.get("job").unwrap_or("").to_string(),
        );
        let candidates = if is_info { None } else { by_id.get(&key) };
        for &(t, v) in &s.points {
            let mut labels = s.labels.clone();
            let mut matched = false;
            if let Some(cands) = candidates {
                let mut b = s.labels.to_builder();
                let mut added: Vec<(Sym, Sym)> = Vec::new();
                // Latest series per info metric name at this time.
                let mut best: Vec<(&str, f64, usize)> = Vec::new();
                for &ci in cands {
                    let info = &infos[ci];
                    let Ok(pi) = info.points.binary_search_by_key(&map_t(t), |p| p.0) else {
                        continue;
                    };
                    let ts = info.points[pi].1;
                    let iname = info.labels.metric_name().unwrap_or("");
                    match best.iter_mut().find(|b| b.0 == iname) {
                        Some(b) if ts > b.1 => *b = (iname, ts, ci),
                        Some(_) => {}
                        None => best.push((iname, ts, ci)),
                    }
                }
                for &(_, _, ci) in &best {
                    let info = &infos[ci];
                    matched = true;
                    for l in info.labels.iter() {
                        let n = &*l.name;
                        if n == METRIC_NAME || IDENTIFYING.contains(&n) {
                            continue;
                        }
                        if !data_matchers.is_empty() && !data_matchers.iter().any(|m| m.name == n) {
                            continue;
                        }
                        if s.labels.get(n).is_some() {
                            continue;
                        }
                        if let Some((_, v)) = added.iter().find(|(an, _)| **an == *n) {
                            if *v != l.value {
                                return exec_err(format!(
                                    "conflicting label {n:?}: info series disagree ({v:?} and {:?})",
                                    &*l.value
                                ));
                            }
                            continue;
                        }
                        added.push((l.name.clone(), l.value.clone()));
                        b.set(l.name.clone(), l.value.clone());
                    }
                }
                labels = Arc::new(b.build());
            }
            if !matched && requires_match && !is_info {
                continue;
            }
            let slot = match index.get(&labels) {
                Some(&x) => x,
                None => {
                    index.insert(labels.clone(), out.len());
                    out.push(StepSeries {
                        labels,
                        points: Vec::new(),
                        drop_name: s.drop_name,
                    });
                    out.len() - 1
                }
            };
            out[slot].points.push((t, v));
        }
    }
    for s in &mut out {
        s.points.sort_by_key(|p| p.0);
    }
    Ok(EvalVal::Vector(out))
}

/// The time the samples of `e` at step time `t` refer to.
fn ref_time(ev: &Evaluator<'_>, e: &Expr, t: i64) -> i64 {
    match e {
        Expr::Vector(vs) => {
            ev.resolve_at(&vs.at).unwrap_or(t)
                - vs.offset.as_ref().map(|d| ev.duration_ms(d)).unwrap_or(0)
        }
        Expr::Matrix(ms) => {
            ev.resolve_at(&ms.vector.at).unwrap_or(t)
                - ms.vector
                    .offset
                    .as_ref()
                    .map(|d| ev.duration_ms(d))
                    .unwrap_or(0)
        }
        Expr::Subquery(sq) => {
            let te = ev.resolve_at(&sq.at).unwrap_or(t)
                - sq.offset.as_ref().map(|d| ev.duration_ms(d)).unwrap_or(0);
            ref_time(ev, &sq.expr, te)
        }
        Expr::Paren(p) => ref_time(ev, &p.expr, t),
        Expr::Unary(u) => ref_time(ev, &u.expr, t),
        Expr::Binary(b) => ref_time(ev, &b.lhs, t),
        Expr::Aggregate(a) => ref_time(ev, &a.expr, t),
        Expr::Call(c) => c
            .args
            .iter()
            .find(|a| {
                matches!(
                    a.value_type(),
                    panoptes_promql_parser::ValueType::Vector
                        | panoptes_promql_parser::ValueType::Matrix
                )
            })
            .map(|a| ref_time(ev, a, t))
            .unwrap_or(t),
        Expr::Number(_) | Expr::String(_) => t,
    }
}

/// Whether the reference time does not depend on the step time (`@`).
fn ref_is_fixed(e: &Expr) -> bool {
    match e {
        Expr::Vector(vs) => vs.at.is_some(),
        Expr::Matrix(ms) => ms.vector.at.is_some(),
        Expr::Subquery(sq) => sq.at.is_some() || ref_is_fixed(&sq.expr),
        Expr::Paren(p) => ref_is_fixed(&p.expr),
        Expr::Unary(u) => ref_is_fixed(&u.expr),
        Expr::Binary(b) => ref_is_fixed(&b.lhs),
        Expr::Aggregate(a) => ref_is_fixed(&a.expr),
        Expr::Call(c) => c
            .args
            .iter()
            .find(|a| {
                matches!(
                    a.value_type(),
                    panoptes_promql_parser::ValueType::Vector
                        | panoptes_promql_parser::ValueType::Matrix
                )
            })
            .is_some_and(ref_is_fixed),
        Expr::Number(_) | Expr::String(_) => false,
    }
}
