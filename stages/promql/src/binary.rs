//! Binary operators: scalar/scalar, vector/scalar, and vector/vector with
//! one-to-one, many-to-one, one-to-many and set matching, Prometheus's
//! duplicate-match errors, and the experimental `fill*` modifiers.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use panoptes_model::{Labels, LabelsBuilder, METRIC_NAME};
use panoptes_promql_parser::{BinaryExpr, BinaryOp, Cardinality, VectorMatching};

use crate::engine::{exec_err, EResult, EvalVal, Evaluator, Grid, StepSeries};

/// Applies an operator to two floats; `None` means a comparison filtered
/// the element out.
pub(crate) fn elem_op(op: BinaryOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinaryOp::Add => (l + r, true),
        BinaryOp::Sub => (l - r, true),
        BinaryOp::Mul => (l * r, true),
        BinaryOp::Div => (l / r, true),
        BinaryOp::Pow => (l.powf(r), true),
        BinaryOp::Mod => (l % r, true),
        BinaryOp::Atan2 => (l.atan2(r), true),
        BinaryOp::Eql => (l, l == r),
        BinaryOp::Neq => (l, l != r),
        BinaryOp::Gtr => (l, l > r),
        BinaryOp::Lss => (l, l < r),
        BinaryOp::Gte => (l, l >= r),
        BinaryOp::Lte => (l, l <= r),
        BinaryOp::And | BinaryOp::Or | BinaryOp::Unless => (l, true),
    }
}

fn drops_name(op: BinaryOp) -> bool {
    matches!(
        op,
        BinaryOp::Add
            | BinaryOp::Sub
            | BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Pow
            | BinaryOp::Mod
            | BinaryOp::Atan2
    )
}

/// The labels two samples are matched on.
fn signature(l: &Labels, m: &VectorMatching) -> Labels {
    let names: Vec<&str> = m.labels.iter().map(|s| s.as_str()).collect();
    if m.on {
        l.keep_only(&names)
    } else {
        let mut b = l.to_builder();
        for n in &names {
            b.del(n);
        }
        b.del(METRIC_NAME);
        b.build()
    }
}

/// The output labels of a matched pair (Prometheus's `resultMetric`).
fn result_metric(lhs: &Labels, rhs: Option<&Labels>, m: &VectorMatching) -> Labels {
    let mut b: LabelsBuilder = lhs.to_builder();
    if m.card == Cardinality::OneToOne {
        if m.on {
            b.retain(|l| m.labels.iter().any(|n| **n == *l.name));
        } else {
            for n in &m.labels {
                b.del(n);
            }
        }
    }
    for n in &m.include {
        match rhs.and_then(|r| r.get(n)) {
            Some(v) if !v.is_empty() => {
                b.set(n.as_str(), v);
            }
            _ => {
                b.del(n);
            }
        }
    }
    b.build()
}

/// Per-step view of one side: the series with a point at each step.
pub(crate) struct StepCursor {
    pos: Vec<usize>,
}

impl StepCursor {
    pub(crate) fn new(n: usize) -> Self {
        StepCursor { pos: vec![0; n] }
    }

    /// Samples `(series index, value)` at time `t`.
    pub(crate) fn at(&mut self, series: &[StepSeries], t: i64, out: &mut Vec<(usize, f64)>) {
        out.clear();
        for (i, s) in series.iter().enumerate() {
            let p = &mut self.pos[i];
            while *p < s.points.len() && s.points[*p].0 < t {
                *p += 1;
            }
            if *p < s.points.len() && s.points[*p].0 == t {
                out.push((i, s.points[*p].1));
            }
        }
    }
}

/// Accumulates output points into series keyed by label set.
struct OutAcc {
    series: Vec<StepSeries>,
    index: HashMap<Arc<Labels>, usize>,
}

impl OutAcc {
    fn new() -> Self {
        OutAcc {
            series: Vec::new(),
            index: HashMap::default(),
        }
    }

    fn slot(&mut self, labels: Arc<Labels>) -> usize {
        if let Some(&i) = self.index.get(&labels) {
            return i;
        }
        let i = self.series.len();
        self.index.insert(labels.clone(), i);
        self.series.push(StepSeries {
            labels,
            points: Vec::new(),
            drop_name: false,
        });
        i
    }

    fn push(&mut self, slot: usize, t: i64, v: f64, drop_name: bool) -> EResult<()> {
        let s = &mut self.series[slot];
        if s.points.last().is_some_and(|p| p.0 == t) {
            return exec_err("vector cannot contain metrics with the same labelset");
        }
        s.points.push((t, v));
        s.drop_name |= drop_name;
        Ok(())
    }
}

impl<'a> Evaluator<'a> {
    pub(crate) fn eval_binary(&mut self, b: &BinaryExpr, grid: Grid) -> EResult<EvalVal> {
        let lhs = self.eval(&b.lhs, grid)?;
        let rhs = self.eval(&b.rhs, grid)?;
        let op = b.op;
        match (lhs, rhs) {
            (EvalVal::Scalar(l), EvalVal::Scalar(r)) => Ok(EvalVal::Scalar(
                l.iter()
                    .zip(r.iter())
                    .map(|(&x, &y)| {
                        let (v, keep) = elem_op(op, x, y);
                        if op.is_comparison() {
                            if keep {
                                1.0
                            } else {
                                0.0
                            }
                        } else {
                            v
                        }
                    })
                    .collect(),
            )),
            (EvalVal::Vector(v), EvalVal::Scalar(s)) => Ok(EvalVal::Vector(vector_scalar(
                op,
                b.return_bool,
                v,
                &s,
                grid,
                false,
            ))),
            (EvalVal::Scalar(s), EvalVal::Vector(v)) => Ok(EvalVal::Vector(vector_scalar(
                op,
                b.return_bool,
                v,
                &s,
                grid,
                true,
            ))),
            (EvalVal::Vector(l), EvalVal::Vector(r)) => {
                let m = b.matching.clone().unwrap_or_default();
                let out = if op.is_set() {
                    self.set_op(op, &m, l, r, grid)?
                } else {
                    self.vector_op(b, &m, l, r, grid)?
                };
                Ok(EvalVal::Vector(out))
            }
            _ => exec_err("binary expression must contain only scalar and instant vector types"),
        }
    }

    fn set_op(
        &mut self,
        op: BinaryOp,
        m: &VectorMatching,
        lhs: Vec<StepSeries>,
        rhs: Vec<StepSeries>,
        grid: Grid,
    ) -> EResult<Vec<StepSeries>> {
        // Fast paths that need no per-step work.
        match op {
            BinaryOp::And if lhs.is_empty() || rhs.is_empty() => return Ok(Vec::new()),
            BinaryOp::Unless if rhs.is_empty() => return Ok(lhs),
            BinaryOp::Or if rhs.is_empty() => return Ok(lhs),
            BinaryOp::Or if lhs.is_empty() => return Ok(rhs),
            _ => {}
        }
        let mut sig_ids: HashMap<Labels, usize> = HashMap::default();
        let mut sig_of = |s: &StepSeries| {
            let sig = signature(&s.labels, m);
            let n = sig_ids.len();
            *sig_ids.entry(sig).or_insert(n)
        };
        let lsig: Vec<usize> = lhs.iter().map(&mut sig_of).collect();
        let rsig: Vec<usize> = rhs.iter().map(&mut sig_of).collect();
        let nsig = sig_ids.len();
        let mut seen = vec![usize::MAX; nsig];
        let mut lc = StepCursor::new(lhs.len());
        let mut rc = StepCursor::new(rhs.len());
        let (mut lv, mut rv) = (Vec::new(), Vec::new());
        let mut lout: Vec<Vec<(i64, f64)>> = vec![Vec::new(); lhs.len()];
        let mut rout: Vec<Vec<(i64, f64)>> = vec![Vec::new(); rhs.len()];
        for i in 0..grid.len() {
            let t = grid.ts(i);
            lc.at(&lhs, t, &mut lv);
            rc.at(&rhs, t, &mut rv);
            match op {
                BinaryOp::And | BinaryOp::Unless => {
                    for &(ri, _) in &rv {
                        seen[rsig[ri]] = i;
                    }
                    for &(li, v) in &lv {
                        let present = seen[lsig[li]] == i;
                        if present == (op == BinaryOp::And) {
                            lout[li].push((t, v));
                        }
                    }
                }
                _ => {
                    for &(li, v) in &lv {
                        seen[lsig[li]] = i;
                        lout[li].push((t, v));
                    }
                    for &(ri, v) in &rv {
                        if seen[rsig[ri]] != i {
                            rout[ri].push((t, v));
                        }
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (s, pts) in lhs.into_iter().zip(lout) {
            if !pts.is_empty() {
                out.push(StepSeries {
                    labels: s.labels,
                    points: pts,
                    drop_name: s.drop_name,
                });
            }
        }
        for (s, pts) in rhs.into_iter().zip(rout) {
            if !pts.is_empty() {
                out.push(StepSeries {
                    labels: s.labels,
                    points: pts,
                    drop_name: s.drop_name,
                });
            }
        }
        crate::functions::merge_same_labels(out)
    }

    fn vector_op(
        &mut self,
        b: &BinaryExpr,
        m: &VectorMatching,
        lhs: Vec<StepSeries>,
        rhs: Vec<StepSeries>,
        grid: Grid,
    ) -> EResult<Vec<StepSeries>> {
        let op = b.op;
        let has_fill = b.fill.left.is_some() || b.fill.right.is_some();
        if !has_fill && (lhs.is_empty() || rhs.is_empty()) {
            return Ok(Vec::new());
        }
        // For one-to-many, the right side is the "many" side: swap so the
        // internal left is always the many side.
        let swapped = m.card == Cardinality::OneToMany;
        let (many, one) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
        let (fill_many, fill_one) = (b.fill.left, b.fill.right);
        let mut sig_ids: HashMap<Labels, usize> = HashMap::default();
        let mut sig_labels: Vec<Arc<Labels>> = Vec::new();
        let mut sig_of = |s: &StepSeries| {
            let sig = signature(&s.labels, m);
            if let Some(&i) = sig_ids.get(&sig) {
                return i;
            }
            let i = sig_ids.len();
            sig_labels.push(Arc::new(sig.clone()));
            sig_ids.insert(sig, i);
            i
        };
        let msig: Vec<usize> = many.iter().map(&mut sig_of).collect();
        let osig: Vec<usize> = one.iter().map(&mut sig_of).collect();
        let nsig = sig_ids.len();
        let mut one_at: Vec<Option<(usize, f64, usize)>> = vec![None; nsig];
        let mut matched_step = vec![usize::MAX; nsig];
        let mut inserted: HashMap<usize, Vec<Arc<Labels>>> = HashMap::default();
        let mut mc = StepCursor::new(many.len());
        let mut oc = StepCursor::new(one.len());
        let (mut mv, mut ov) = (Vec::new(), Vec::new());
        let mut out = OutAcc::new();
        let mut pair_slot: HashMap<(usize, usize), usize> = HashMap::default();
        let drop = drops_name(op) || b.return_bool;
        for i in 0..grid.len() {
            self.check_deadline()?;
            let t = grid.ts(i);
            mc.at(&many, t, &mut mv);
            oc.at(&one, t, &mut ov);
            for &(oi, v) in &ov {
                let sig = osig[oi];
                if let Some((prev, _, step)) = one_at[sig] {
                    if step == i {
                        let side = if swapped { "left" } else { "right" };
                        return exec_err(format!(
                            "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                            go_labels(&sig_labels[sig]),
                            go_labels(&one[prev].labels),
                            go_labels(&one[oi].labels)
                        ));
                    }
                }
                one_at[sig] = Some((oi, v, i));
            }
            inserted.clear();
            for &(mi, v) in &mv {
                let sig = msig[mi];
                let rs = match one_at[sig] {
                    Some((oi, ov, step)) if step == i => Some((oi, ov)),
                    _ => None,
                };
                let (ri, rv) = match (rs, fill_one) {
                    (Some((oi, ov)), _) => (Some(oi), ov),
                    (None, Some(f)) => (None, f),
                    (None, None) => continue,
                };
                if ri.is_some() {
                    // Mark the one-side sample as matched (for fill_many).
                    matched_step[sig] = i;
                }
                // One-to-one: a second left sample in the same match group
                // is an error even if the comparison would drop it.
                if m.card == Cardinality::OneToOne && ri.is_some() {
                    if inserted.contains_key(&sig) {
                        return exec_err(
                            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                        );
                    }
                    inserted.insert(sig, Vec::new());
                }
                let (fl, fr) = if swapped { (rv, v) } else { (v, rv) };
                let (mut value, keep) = elem_op(op, fl, fr);
                if b.return_bool {
                    value = if keep { 1.0 } else { 0.0 };
                } else if !keep {
                    continue;
                }
                if op.is_comparison() && !b.return_bool && swapped {
                    value = fl;
                }
                let key = (mi, ri.unwrap_or(usize::MAX));
                let slot = match pair_slot.get(&key) {
                    Some(&s) => s,
                    None => {
                        let labels =
                            result_metric(&many[mi].labels, ri.map(|r| &*one[r].labels), m);
                        let s = out.slot(Arc::new(labels));
                        pair_slot.insert(key, s);
                        s
                    }
                };
                if m.card != Cardinality::OneToOne {
                    let labels = out.series[slot].labels.clone();
                    let entry = inserted.entry(sig).or_default();
                    if entry.contains(&labels) {
                        return exec_err(
                            "multiple matches for labels: grouping labels must ensure unique matches",
                        );
                    }
                    entry.push(labels);
                }
                out.push(slot, t, value, drop || many[mi].drop_name)?;
            }
            if let Some(f) = fill_many {
                for &(oi, v) in &ov {
                    let sig = osig[oi];
                    if matched_step[sig] == i {
                        continue;
                    }
                    let (fl, fr) = if swapped { (v, f) } else { (f, v) };
                    let (mut value, keep) = elem_op(op, fl, fr);
                    if b.return_bool {
                        value = if keep { 1.0 } else { 0.0 };
                    } else if !keep {
                        continue;
                    }
                    let slot = out.slot(sig_labels[sig].clone());
                    out.push(slot, t, value, drop)?;
                }
            }
        }
        Ok(out
            .series
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect())
    }
}

/// A label set printed as Go's `labels.Labels.String()`:
/// `{__name__="x", a="b"}`.
pub(crate) fn go_labels(l: &Labels) -> String {
    let inner: Vec<String> = l
        .iter()
        .map(|x| format!("{}={}", x.name, panoptes_promql_parser::quote(&x.value)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

fn vector_scalar(
    op: BinaryOp,
    return_bool: bool,
    mut series: Vec<StepSeries>,
    scalar: &[f64],
    grid: Grid,
    scalar_left: bool,
) -> Vec<StepSeries> {
    let drop = drops_name(op) || return_bool;
    for s in &mut series {
        let mut pts = Vec::with_capacity(s.points.len());
        for &(t, v) in &s.points {
            let sv = scalar[grid.index_of(t)];
            let (l, r) = if scalar_left { (sv, v) } else { (v, sv) };
            let (mut value, keep) = elem_op(op, l, r);
            if op.is_comparison() && scalar_left {
                value = v;
            }
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            pts.push((t, value));
        }
        s.points = pts;
        s.drop_name |= drop;
    }
    series.retain(|s| !s.points.is_empty());
    series
}
