//! Aggregation operators (`sum`, `avg`, `count`, `min`, `max`, `group`,
//! `stddev`, `stdvar`, `quantile`, `topk`, `bottomk`, `limitk`,
//! `limit_ratio`, `count_values`) with `by`/`without` grouping. Group keys
//! are computed once per input series, not once per step.

use rustc_hash::FxHashMap as HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use panoptes_model::{Labels, METRIC_NAME};
use panoptes_promql_parser::{format_float, AggregateExpr, AggregateOp, Expr, ValueType};

use crate::binary::StepCursor;
use crate::engine::{exec_err, EResult, EvalVal, Evaluator, Grid, StepSeries};
use crate::functions::{kahan_inc, quantile};

#[derive(Clone, Copy, Default)]
struct Acc {
    n: f64,
    value: f64,
    c: f64,
    mean: f64,
    incremental: bool,
    drop_name: bool,
}

/// Adds a sample to a group's accumulator (not the group's first).
fn accumulate(op: AggregateOp, x: &mut Acc, v: f64) {
    match op {
        AggregateOp::Sum => (x.value, x.c) = kahan_inc(v, x.value, x.c),
        AggregateOp::Avg => {
            if !x.incremental {
                let (nv, nc) = kahan_inc(v, x.value, x.c);
                if !nv.is_infinite() {
                    x.value = nv;
                    x.c = nc;
                    return;
                }
                // The sum overflowed: continue with an incremental mean.
                x.incremental = true;
                x.mean = x.value / (x.n - 1.0);
                x.c /= x.n - 1.0;
            }
            let q = (x.n - 1.0) / x.n;
            (x.mean, x.c) = kahan_inc(v / x.n, q * x.mean, q * x.c);
        }
        AggregateOp::Count => x.value = x.n,
        AggregateOp::Min if x.value > v || x.value.is_nan() => x.value = v,
        AggregateOp::Max if x.value < v || x.value.is_nan() => x.value = v,
        AggregateOp::Stddev | AggregateOp::Stdvar => {
            let delta = v - x.mean;
            x.mean += delta / x.n;
            x.value += delta * (v - x.mean);
        }
        _ => {}
    }
}

/// The aggregated value of a group's accumulator.
fn finish(op: AggregateOp, x: &Acc) -> f64 {
    match op {
        AggregateOp::Sum if x.value.is_infinite() => x.value,
        AggregateOp::Sum => x.value + x.c,
        AggregateOp::Avg if x.incremental => x.mean + x.c,
        AggregateOp::Avg => x.value / x.n + x.c / x.n,
        AggregateOp::Stdvar => x.value / x.n,
        AggregateOp::Stddev => (x.value / x.n).sqrt(),
        _ => x.value,
    }
}

/// Grouping labels of a series.
fn group_labels(l: &Labels, a: &AggregateExpr) -> Labels {
    let names: Vec<&str> = a.grouping.iter().map(|s| s.as_str()).collect();
    if a.without {
        let mut b = l.to_builder();
        for n in &names {
            b.del(n);
        }
        b.del(METRIC_NAME);
        b.build()
    } else {
        l.keep_only(&names)
    }
}

/// Prometheus's `labels.Labels.Hash()`: XXH64 of `name\xffvalue\xff…`.
fn prometheus_label_hash(l: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for x in l.iter() {
        h.update(x.name.as_bytes());
        h.update(&[0xff]);
        h.update(x.value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`.
fn format_f(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// The grouping of an aggregation: the group label sets, and the group
/// of each input series. With `by`, a series' key is hashed straight from
/// its labels and compared in place, so no label set is built per series,
/// only one per group.
fn group_series(series: &[StepSeries], a: &AggregateExpr) -> (Vec<Arc<Labels>>, Vec<usize>) {
    let mut groups: Vec<Arc<Labels>> = Vec::new();
    let mut gi_of = Vec::with_capacity(series.len());
    if a.without {
        let mut index: HashMap<Labels, usize> = HashMap::default();
        for s in series {
            let key = group_labels(&s.labels, a);
            let gi = match index.get(&key) {
                Some(&g) => g,
                None => {
                    groups.push(Arc::new(key.clone()));
                    index.insert(key, groups.len() - 1);
                    groups.len() - 1
                }
            };
            gi_of.push(gi);
        }
        return (groups, gi_of);
    }
    let names: Vec<&str> = a.grouping.iter().map(|s| s.as_str()).collect();
    let kept = |l: &Labels| -> Vec<usize> {
        l.iter()
            .enumerate()
            .filter(|(_, x)| names.contains(&&*x.name))
            .map(|(i, _)| i)
            .collect()
    };
    // Groups by key hash; a hash shared by several groups lists them all.
    let mut index: HashMap<u64, Vec<usize>> = HashMap::default();
    for s in series {
        let mut h = rustc_hash::FxHasher::default();
        let mut n = 0usize;
        for x in s.labels.iter().filter(|x| names.contains(&&*x.name)) {
            x.name.hash(&mut h);
            x.value.hash(&mut h);
            n += 1;
        }
        let hash = h.finish();
        let cands = index.entry(hash).or_default();
        let same = |g: &Labels| {
            g.len() == n
                && g.iter()
                    .zip(s.labels.iter().filter(|x| names.contains(&&*x.name)))
                    .all(|(p, q)| p.name == q.name && p.value == q.value)
        };
        let gi = match cands.iter().copied().find(|&g| same(&groups[g])) {
            Some(g) => g,
            None => {
                let l = &s.labels;
                let idx = kept(l);
                let key =
                    Labels::from_sorted(idx.iter().map(|&i| l.as_slice()[i].clone()).collect());
                groups.push(Arc::new(key));
                cands.push(groups.len() - 1);
                groups.len() - 1
            }
        };
        gi_of.push(gi);
    }
    (groups, gi_of)
}

/// The labels a name-dropping function or operator removes.
const NAME_LABELS: [&str; 3] = [METRIC_NAME, "__type__", "__unit__"];

impl<'a> Evaluator<'a> {
    /// The input vector of an aggregation. Without delayed name removal, a
    /// vector whose series drop their name is normally renamed (and checked
    /// for label sets made equal by the rename) before anything reads it.
    /// An aggregation `by` labels other than the name ones never sees the
    /// names, so when the rename cannot make two series equal — a range
    /// function over a selector (distinct series) all of one metric name —
    /// the renaming is left out.
    fn aggregate_input(&mut self, a: &AggregateExpr, grid: Grid) -> EResult<Vec<StepSeries>> {
        let groups_by_plain_labels = !a.without
            && !a.grouping.iter().any(|g| NAME_LABELS.contains(&g.as_str()))
            && matches!(
                a.op,
                AggregateOp::Sum
                    | AggregateOp::Avg
                    | AggregateOp::Count
                    | AggregateOp::Min
                    | AggregateOp::Max
                    | AggregateOp::Group
                    | AggregateOp::Stddev
                    | AggregateOp::Stdvar
                    | AggregateOp::Quantile
            );
        let range_fn_of_selector = match a.expr.unparen() {
            Expr::Call(c) if c.func.name != "absent_over_time" => c
                .func
                .arg_types
                .iter()
                .position(|t| *t == ValueType::Matrix)
                .and_then(|mi| c.args.get(mi))
                .is_some_and(|m| matches!(m.unparen(), Expr::Matrix(_))),
            _ => false,
        };
        if self.opts.delayed_name_removal || !groups_by_plain_labels || !range_fn_of_selector {
            return self.eval_vector(&a.expr, grid);
        }
        let series = match self.eval_node(&a.expr, grid)? {
            EvalVal::Vector(v) => v,
            _ => return exec_err("expected instant vector"),
        };
        fn name_key(s: &StepSeries) -> [Option<&str>; 3] {
            NAME_LABELS.map(|n| s.labels.get(n))
        }
        let one_name = series.split_first().is_none_or(|(first, rest)| {
            let k = name_key(first);
            rest.iter().all(|s| name_key(s) == k)
        });
        if one_name {
            Ok(series)
        } else {
            crate::engine::finish_names(series, false)
        }
    }

    pub(crate) fn eval_aggregate(&mut self, a: &AggregateExpr, grid: Grid) -> EResult<EvalVal> {
        let n = grid.len();
        let param: Option<Vec<f64>> = match (&a.param, a.op) {
            (Some(p), op) if op != AggregateOp::CountValues => Some(self.eval_scalar(p, grid)?),
            _ => None,
        };
        let series = self.aggregate_input(a, grid)?;
        match a.op {
            AggregateOp::Topk
            | AggregateOp::Bottomk
            | AggregateOp::Limitk
            | AggregateOp::LimitRatio => {
                return self.select_k(a, series, param.unwrap_or_default(), grid);
            }
            AggregateOp::CountValues => return self.count_values(a, series, grid),
            _ => {}
        }
        if a.op == AggregateOp::Quantile {
            if let Some(q) = param.as_ref().and_then(|p| p.first()) {
                if !(0.0..=1.0).contains(q) {
                    self.warnings.push(format!(
                        "PromQL warning: quantile value should be between 0 and 1, got {}{}",
                        format_float(*q),
                        self.pos(a.param.as_deref().unwrap_or(&Expr::Aggregate(a.clone())))
                    ));
                }
            }
        }
        // Group index per input series.
        let (groups, gi_of) = group_series(&series, a);
        let ng = groups.len();
        // Step by step, so that only one step's accumulators (one per
        // group) are alive at a time.
        let mut cursor = StepCursor::new(series.len());
        let mut at_step: Vec<(usize, f64)> = Vec::new();
        let mut points: Vec<Vec<(i64, f64)>> = vec![Vec::new(); ng];
        let mut dn = vec![false; ng];
        let mut touched: Vec<usize> = Vec::new();
        if a.op == AggregateOp::Quantile {
            let q = param.unwrap_or_default();
            let mut vals: Vec<Vec<f64>> = vec![Vec::new(); ng];
            for (i, &qi) in q.iter().enumerate().take(n) {
                let t = grid.ts(i);
                cursor.at(&series, t, &mut at_step);
                for &(si, v) in &at_step {
                    let g = gi_of[si];
                    if vals[g].is_empty() {
                        touched.push(g);
                    }
                    vals[g].push(v);
                    dn[g] |= series[si].drop_name;
                }
                for g in touched.drain(..) {
                    points[g].push((t, quantile(qi, &mut vals[g])));
                    vals[g].clear();
                }
            }
        } else {
            let mut acc: Vec<Acc> = vec![Acc::default(); ng];
            for i in 0..n {
                let t = grid.ts(i);
                cursor.at(&series, t, &mut at_step);
                for &(si, v) in &at_step {
                    let g = gi_of[si];
                    let x = &mut acc[g];
                    x.drop_name |= series[si].drop_name;
                    if x.n == 0.0 {
                        touched.push(g);
                        x.n = 1.0;
                        match a.op {
                            AggregateOp::Stddev | AggregateOp::Stdvar => {
                                x.mean = v;
                                x.value = if v.is_finite() { 0.0 } else { f64::NAN };
                            }
                            AggregateOp::Count | AggregateOp::Group => x.value = 1.0,
                            _ => x.value = v,
                        }
                        continue;
                    }
                    x.n += 1.0;
                    accumulate(a.op, x, v);
                }
                for g in touched.drain(..) {
                    let x = &mut acc[g];
                    dn[g] |= x.drop_name;
                    points[g].push((t, finish(a.op, x)));
                    *x = Acc::default();
                }
            }
        }
        let out = points
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(g, p)| StepSeries {
                labels: groups[g].clone(),
                points: p,
                drop_name: dn[g] && groups[g].get(METRIC_NAME).is_some(),
            })
            .collect();
        Ok(EvalVal::Vector(out))
    }

    fn select_k(
        &mut self,
        a: &AggregateExpr,
        series: Vec<StepSeries>,
        param: Vec<f64>,
        grid: Grid,
    ) -> EResult<EvalVal> {
        let n = grid.len();
        for p in &param {
            if p.is_nan() {
                return exec_err(if a.op == AggregateOp::LimitRatio {
                    "Ratio value is NaN"
                } else {
                    "Parameter value is NaN"
                });
            }
        }
        if a.op == AggregateOp::LimitRatio {
            if let Some(r) = param.first() {
                if !(-1.0..=1.0).contains(r) {
                    self.warnings.push(format!(
                        "PromQL warning: ratio value should be between -1 and 1, got {}{}",
                        format_float(*r),
                        self.pos(a.param.as_deref().unwrap_or(&Expr::Aggregate(a.clone())))
                    ));
                }
            }
        }
        let mut index: HashMap<Labels, usize> = HashMap::default();
        let mut gi_of = Vec::with_capacity(series.len());
        for s in &series {
            let key = group_labels(&s.labels, a);
            let len = index.len();
            gi_of.push(*index.entry(key).or_insert(len));
        }
        let ng = index.len();
        // limit_ratio's per-series position in [0, 1], computed once.
        let offsets: Vec<f64> = if a.op == AggregateOp::LimitRatio {
            series
                .iter()
                .map(|s| prometheus_label_hash(&s.labels) as f64 / u64::MAX as f64)
                .collect()
        } else {
            Vec::new()
        };
        let mut cursor = StepCursor::new(series.len());
        let mut at_step: Vec<(usize, f64)> = Vec::new();
        let mut buckets: Vec<Vec<(usize, f64)>> = vec![Vec::new(); ng];
        let mut touched: Vec<usize> = Vec::new();
        let mut out_pts: Vec<Vec<(i64, f64)>> = vec![Vec::new(); series.len()];
        // Output order of the first (instant) step, for sorted results.
        let mut order: Vec<usize> = Vec::new();
        for i in 0..n {
            let t = grid.ts(i);
            let p = param.get(i).copied().unwrap_or(0.0);
            cursor.at(&series, t, &mut at_step);
            for &(si, v) in &at_step {
                let g = gi_of[si];
                if buckets[g].is_empty() {
                    touched.push(g);
                }
                buckets[g].push((si, v));
            }
            // Groups in order of first appearance, as Prometheus emits them.
            touched.sort_unstable();
            for g in touched.drain(..) {
                let mut members = std::mem::take(&mut buckets[g]);
                let chosen: Vec<(usize, f64)> = match a.op {
                    AggregateOp::Topk | AggregateOp::Bottomk => {
                        let k = if p >= 9.2e18 { i64::MAX } else { p as i64 };
                        if k < 1 {
                            continue;
                        }
                        let k = (k as usize).min(members.len());
                        let top = a.op == AggregateOp::Topk;
                        // NaN sorts last for both directions.
                        members.sort_by(|x, y| {
                            use std::cmp::Ordering::*;
                            match (x.1.is_nan(), y.1.is_nan()) {
                                (true, true) => Equal,
                                (true, false) => Greater,
                                (false, true) => Less,
                                _ => {
                                    let o = x.1.partial_cmp(&y.1).unwrap_or(Equal);
                                    if top {
                                        o.reverse()
                                    } else {
                                        o
                                    }
                                }
                            }
                        });
                        members.truncate(k);
                        members
                    }
                    AggregateOp::Limitk => {
                        let k = if p >= 9.2e18 { i64::MAX } else { p as i64 };
                        if k < 1 {
                            continue;
                        }
                        members.truncate(k as usize);
                        members
                    }
                    _ => {
                        // limit_ratio: a series is in if its position in
                        // [0, 1) (its Prometheus label hash) is below the ratio
                        // (or, for a negative ratio, at or above 1 + ratio).
                        let r = p.clamp(-1.0, 1.0);
                        members
                            .into_iter()
                            .filter(|(si, _)| {
                                let off = offsets[*si];
                                if r >= 0.0 {
                                    off < r
                                } else {
                                    off >= 1.0 + r
                                }
                            })
                            .collect()
                    }
                };
                for (si, v) in chosen {
                    if i == 0 {
                        order.push(si);
                    }
                    out_pts[si].push((t, v));
                }
            }
        }
        let mut out = Vec::new();
        if n == 1 {
            for si in order {
                let pts = std::mem::take(&mut out_pts[si]);
                out.push(StepSeries {
                    labels: series[si].labels.clone(),
                    points: pts,
                    drop_name: series[si].drop_name,
                });
            }
        } else {
            for (si, pts) in out_pts.into_iter().enumerate() {
                if !pts.is_empty() {
                    out.push(StepSeries {
                        labels: series[si].labels.clone(),
                        points: pts,
                        drop_name: series[si].drop_name,
                    });
                }
            }
        }
        Ok(EvalVal::Vector(out))
    }

    fn count_values(
        &mut self,
        a: &AggregateExpr,
        series: Vec<StepSeries>,
        grid: Grid,
    ) -> EResult<EvalVal> {
        let label = match a.param.as_deref().map(|p| p.unparen()) {
            Some(Expr::String(s)) => s.value.clone(),
            _ => return exec_err("count_values requires a string parameter"),
        };
        if label.is_empty() {
            return exec_err(format!("invalid label name {label:?}"));
        }
        let mut index: HashMap<Labels, usize> = HashMap::default();
        let mut out: Vec<StepSeries> = Vec::new();
        let mut gl: Vec<Labels> = Vec::with_capacity(series.len());
        for s in &series {
            gl.push(group_labels(&s.labels, a));
        }
        let mut cursors = vec![0usize; series.len()];
        for i in 0..grid.len() {
            let t = grid.ts(i);
            for (si, s) in series.iter().enumerate() {
                let c = &mut cursors[si];
                while *c < s.points.len() && s.points[*c].0 < t {
                    *c += 1;
                }
                if *c < s.points.len() && s.points[*c].0 == t {
                    let v = s.points[*c].1;
                    let mut b = gl[si].to_builder();
                    b.set(label.as_str(), format_f(v));
                    let key = b.build();
                    let slot = match index.get(&key) {
                        Some(&x) => x,
                        None => {
                            index.insert(key.clone(), out.len());
                            out.push(StepSeries {
                                labels: Arc::new(key),
                                points: Vec::new(),
                                drop_name: false,
                            });
                            out.len() - 1
                        }
                    };
                    let o = &mut out[slot];
                    match o.points.last_mut() {
                        Some(p) if p.0 == t => p.1 += 1.0,
                        _ => o.points.push((t, 1.0)),
                    }
                }
            }
        }
        Ok(EvalVal::Vector(out))
    }
}
