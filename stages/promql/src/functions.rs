//! PromQL functions: the `*_over_time` family and rate/increase/delta with
//! Prometheus's extrapolation, math and date functions, label functions,
//! sorting, `absent`, `scalar`/`vector`, classic-bucket histogram functions.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use panoptes_model::{Labels, MatchOp, METRIC_NAME};
use panoptes_promql_parser::{Call, Expr};
use regex::Regex;

use crate::engine::{exec_err, EResult, EvalVal, Evaluator, Grid, RangeArg, StepSeries};

/// Neumaier-compensated summation step, as Prometheus's `kahanSumInc`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// Go's `math.Max`: NaN and +Inf win, +0 beats -0.
pub(crate) fn go_max(a: f64, b: f64) -> f64 {
    if a.is_infinite() && a > 0.0 || b.is_infinite() && b > 0.0 {
        return f64::INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { b } else { a };
    }
    if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: NaN and -Inf win, -0 beats +0.
pub(crate) fn go_min(a: f64, b: f64) -> f64 {
    if a.is_infinite() && a < 0.0 || b.is_infinite() && b < 0.0 {
        return f64::NEG_INFINITY;
    }
    if a.is_nan() || b.is_nan() {
        return f64::NAN;
    }
    if a == 0.0 && b == 0.0 {
        return if a.is_sign_negative() { a } else { b };
    }
    if a < b {
        a
    } else {
        b
    }
}

/// Least-squares fit of the points, x measured in seconds from
/// `intercept_t`; returns (slope, intercept).
pub(crate) fn linear_regression(points: &[(i64, f64)], intercept_t: i64) -> (f64, f64) {
    let mut n = 0.0;
    let (mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = points[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in points.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_t) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    sx += cx;
    sy += cy;
    sxy += cxy;
    sx2 += cx2;
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// The φ-quantile of values (Prometheus's interpolation between ranks).
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, as Go's sort.Float64s orders it.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// Rate-like extrapolation over one window (`extrapolatedRate`).
fn extrapolated_rate(
    w: &[(i64, f64)],
    range_start: i64,
    range_end: i64,
    range_ms: i64,
    is_counter: bool,
    is_rate: bool,
) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let first = w[0];
    let last = w[w.len() - 1];
    let mut result = last.1 - first.1;
    if is_counter {
        let mut prev = 0.0;
        for p in w {
            if p.1 < prev {
                result += prev;
            }
            prev = p.1;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let mut to_end = (range_end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = sampled / (w.len() - 1) as f64;
    let threshold = avg * 1.1;
    if to_start >= threshold {
        to_start = avg / 2.0;
    }
    if is_counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= range_ms as f64 / 1000.0;
    }
    Some(result * factor)
}

/// Value of a series at `t` for the `anchored` (last sample at or before
/// `t` within lookback) and `smoothed` (linear interpolation between the
/// neighbours) modifiers.
pub(crate) fn smoothed_value(
    pts: &[(i64, f64)],
    t: i64,
    lookback: i64,
    smoothed: bool,
) -> Option<f64> {
    let pts_ok = |p: &(i64, f64)| !panoptes_model::is_stale_nan(p.1);
    let idx = pts.partition_point(|p| p.0 <= t);
    let before = if idx > 0 { Some(pts[idx - 1]) } else { None };
    let before = before.filter(|p| p.0 > t.saturating_sub(lookback) && pts_ok(p));
    if !smoothed {
        return before.map(|p| p.1);
    }
    let after = pts
        .get(idx)
        .copied()
        .filter(|p| p.0 < t.saturating_add(lookback) && pts_ok(p));
    match (before, after) {
        (Some(b), _) if b.0 == t => Some(b.1),
        (Some(b), Some(a)) => Some(b.1 + (a.1 - b.1) * (t - b.0) as f64 / (a.0 - b.0) as f64),
        (Some(b), None) => Some(b.1),
        (None, Some(a)) => Some(a.1),
        (None, None) => None,
    }
}

/// The window for anchored/smoothed range functions: a boundary value at
/// the window start, the samples inside, and (smoothed) an interpolated
/// value at the end. Counters are reset-corrected before interpolating.
/// At least one sample must lie inside the (left-open) window.
fn boundary_window(
    all: &[(i64, f64)],
    start: i64,
    end: i64,
    lookback: i64,
    smoothed: bool,
    is_counter: bool,
) -> Option<Vec<(i64, f64)>> {
    let lo = all.partition_point(|p| p.0 <= start);
    let hi = all.partition_point(|p| p.0 <= end);
    // Anchored needs a sample inside the window; smoothed needs data on
    // both sides of it (at or before its end, and after its start).
    if (!smoothed && lo >= hi) || (smoothed && (hi == 0 || lo >= all.len())) {
        return None;
    }
    let inside = &all[lo..hi.max(lo)];
    if !smoothed {
        let first = if lo > 0 && all[lo - 1].0 > start.saturating_sub(lookback) {
            all[lo - 1]
        } else {
            inside[0]
        };
        let mut out = Vec::with_capacity(inside.len() + 1);
        out.push(first);
        out.extend_from_slice(inside);
        return Some(out);
    }
    let from = lo.saturating_sub(1);
    let to = (hi + 1).min(all.len());
    let mut seg: Vec<(i64, f64)> = all[from..to].to_vec();
    if is_counter {
        let mut acc = 0.0;
        let mut prev = seg[0].1;
        for p in seg.iter_mut().skip(1) {
            let raw = p.1;
            if raw < prev {
                acc += prev;
            }
            prev = raw;
            p.1 = raw + acc;
        }
    }
    let vs = smoothed_value(&seg, start, lookback, true)?;
    let ve = smoothed_value(&seg, end, lookback, true)?;
    let mut out = Vec::with_capacity(inside.len() + 2);
    out.push((start, vs));
    let ilo = seg.partition_point(|p| p.0 <= start);
    let ihi = seg.partition_point(|p| p.0 < end);
    out.extend_from_slice(&seg[ilo..ihi.max(ilo)]);
    out.push((end, ve));
    Some(out)
}

const KEEP_NAME: &[&str] = &[
    "last_over_time",
    "first_over_time",
    "sort",
    "sort_desc",
    "sort_by_label",
    "sort_by_label_desc",
    "label_replace",
    "label_join",
    "info",
];

/// Applies a range function to one window. `window` is the slice of
/// `s.points` in `(end - range, end]`; anchored/smoothed windows are
/// rebuilt from the whole series.
fn apply_range_fn(
    name: &str,
    arg: &RangeArg,
    s: &StepSeries,
    window: &[(i64, f64)],
    t: i64,
    params: &[f64],
    lookback: i64,
) -> EResult<Option<f64>> {
    let end = arg.window_end(t);
    let start = end.saturating_sub(arg.range_ms);
    if arg.anchored || arg.smoothed {
        let is_counter = matches!(name, "rate" | "increase");
        let w = match boundary_window(&s.points, start, end, lookback, arg.smoothed, is_counter) {
            Some(w) => w,
            None => return Ok(None),
        };
        return Ok(match name {
            "rate" | "increase" | "delta" => {
                let mut result = w[w.len() - 1].1 - w[0].1;
                if name != "delta" {
                    let mut prev = w[0].1;
                    for p in &w[1..] {
                        if p.1 < prev {
                            result += prev;
                        }
                        prev = p.1;
                    }
                }
                if name == "rate" {
                    result /= arg.range_ms as f64 / 1000.0;
                }
                Some(result)
            }
            "changes" => Some(count_changes(&w)),
            "resets" => Some(count_resets(&w)),
            _ => None,
        });
    }
    let w = window;
    if w.is_empty() {
        return Ok(None);
    }
    Ok(match name {
        "rate" => extrapolated_rate(w, start, end, arg.range_ms, true, true),
        "increase" => extrapolated_rate(w, start, end, arg.range_ms, true, false),
        "delta" => extrapolated_rate(w, start, end, arg.range_ms, false, false),
        "irate" | "idelta" => {
            if w.len() < 2 {
                return Ok(None);
            }
            let (pt, pv) = w[w.len() - 2];
            let (lt, lv) = w[w.len() - 1];
            let mut d = if name == "irate" && lv < pv {
                lv
            } else {
                lv - pv
            };
            if name == "irate" {
                let dt = lt - pt;
                if dt == 0 {
                    return Ok(None);
                }
                d /= dt as f64 / 1000.0;
            }
            Some(d)
        }
        "changes" => Some(count_changes(w)),
        "resets" => Some(count_resets(w)),
        "deriv" => {
            if w.len() < 2 {
                return Ok(None);
            }
            Some(linear_regression(w, w[0].0).0)
        }
        "predict_linear" => {
            if w.len() < 2 {
                return Ok(None);
            }
            // The intercept is at the evaluation time, even with `@`.
            let (slope, intercept) = linear_regression(w, t);
            Some(intercept + slope * params[0])
        }
        "avg_over_time" => {
            let mut sum = w[0].1;
            let mut count = 1.0;
            let (mut mean, mut c) = (0.0, 0.0);
            let mut incremental = false;
            for (i, p) in w[1..].iter().enumerate() {
                count = (i + 2) as f64;
                if !incremental {
                    let (ns, nc) = kahan_inc(p.1, sum, c);
                    if !ns.is_infinite() {
                        sum = ns;
                        c = nc;
                        continue;
                    }
                    incremental = true;
                    mean = sum / (count - 1.0);
                    c /= count - 1.0;
                }
                let q = (count - 1.0) / count;
                (mean, c) = kahan_inc(p.1 / count, q * mean, q * c);
            }
            Some(if incremental {
                mean + c
            } else {
                sum / count + c / count
            })
        }
        "sum_over_time" => {
            let (mut s, mut c) = (0.0, 0.0);
            for p in w {
                (s, c) = kahan_inc(p.1, s, c);
            }
            Some(if s.is_infinite() { s } else { s + c })
        }
        "count_over_time" => Some(w.len() as f64),
        "present_over_time" => Some(1.0),
        "last_over_time" => Some(w[w.len() - 1].1),
        "first_over_time" => Some(w[0].1),
        "ts_of_last_over_time" => Some(w[w.len() - 1].0 as f64 / 1000.0),
        "ts_of_first_over_time" => Some(w[0].0 as f64 / 1000.0),
        "max_over_time" | "ts_of_max_over_time" => {
            let mut best = w[0];
            for p in w {
                if p.1 > best.1 || best.1.is_nan() {
                    best = *p;
                }
            }
            Some(if name == "max_over_time" {
                best.1
            } else {
                best.0 as f64 / 1000.0
            })
        }
        "min_over_time" | "ts_of_min_over_time" => {
            let mut best = w[0];
            for p in w {
                if p.1 < best.1 || best.1.is_nan() {
                    best = *p;
                }
            }
            Some(if name == "min_over_time" {
                best.1
            } else {
                best.0 as f64 / 1000.0
            })
        }
        "stddev_over_time" | "stdvar_over_time" => {
            let mut count = 0.0;
            let (mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0);
            for p in w {
                count += 1.0;
                let delta = p.1 - (mean + cm);
                (mean, cm) = kahan_inc(delta / count, mean, cm);
                (aux, ca) = kahan_inc(delta * (p.1 - (mean + cm)), aux, ca);
            }
            let var = (aux + ca) / count;
            Some(if name == "stddev_over_time" {
                var.sqrt()
            } else {
                var
            })
        }
        "quantile_over_time" => {
            let mut vals: Vec<f64> = w.iter().map(|p| p.1).collect();
            Some(quantile(params[0], &mut vals))
        }
        "mad_over_time" if w.iter().any(|p| p.1.is_nan()) => Some(f64::NAN),
        "mad_over_time" => {
            let mut vals: Vec<f64> = w.iter().map(|p| p.1).collect();
            let median = quantile(0.5, &mut vals);
            let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
            Some(quantile(0.5, &mut dev))
        }
        "double_exponential_smoothing" | "holt_winters" => {
            let (sf, tf) = (params[0], params[1]);
            if !(sf > 0.0 && sf < 1.0) {
                return exec_err(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                ));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return exec_err(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                ));
            }
            if w.len() < 2 {
                return Ok(None);
            }
            let mut s0 = 0.0;
            let mut s1 = w[0].1;
            let mut b = w[1].1 - w[0].1;
            for (i, p) in w.iter().enumerate().skip(1) {
                let x = sf * p.1;
                if i > 1 {
                    b = tf * (s1 - s0) + (1.0 - tf) * b;
                }
                let y = (1.0 - sf) * (s1 + b);
                s0 = s1;
                s1 = x + y;
            }
            Some(s1)
        }
        _ => return exec_err(format!("function {name} is not supported")),
    })
}

fn count_changes(w: &[(i64, f64)]) -> f64 {
    let mut n = 0.0;
    for p in w.windows(2) {
        let (a, b) = (p[0].1, p[1].1);
        if !(a == b || a.is_nan() && b.is_nan()) {
            n += 1.0;
        }
    }
    n
}

fn count_resets(w: &[(i64, f64)]) -> f64 {
    w.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64
}

fn simple_math(name: &str, v: f64) -> Option<f64> {
    Some(match name {
        "abs" => v.abs(),
        "ceil" => v.ceil(),
        "floor" => v.floor(),
        "exp" => v.exp(),
        "sqrt" => v.sqrt(),
        "ln" => v.ln(),
        "log2" => v.log2(),
        "log10" => v.log10(),
        "sgn" => {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        }
        "sin" => v.sin(),
        "cos" => v.cos(),
        "tan" => v.tan(),
        "asin" => v.asin(),
        "acos" => v.acos(),
        "atan" => v.atan(),
        "sinh" => v.sinh(),
        "cosh" => v.cosh(),
        "tanh" => v.tanh(),
        "asinh" => v.asinh(),
        "acosh" => v.acosh(),
        "atanh" => v.atanh(),
        "deg" => v * 180.0 / std::f64::consts::PI,
        "rad" => v * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

/// `int64(v)` as Go compiles it on amd64: truncation toward zero, and the
/// "integer indefinite" `i64::MIN` for NaN and anything out of range.
fn go_int64(v: f64) -> i64 {
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&v) {
        v as i64
    } else {
        i64::MIN
    }
}

/// A UTC calendar date as Go's `time.Unix(sec, 0).UTC()` gives it.
struct GoDate {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    /// 0-based day of the year.
    yday: u32,
    hour: u32,
    minute: u32,
    /// 0 = Sunday.
    weekday: u32,
}

const SECONDS_PER_DAY: u64 = 86_400;
const DAYS_PER_400_YEARS: u64 = 365 * 400 + 97;
const DAYS_PER_100_YEARS: u64 = 365 * 100 + 24;
const DAYS_PER_4_YEARS: u64 = 365 * 4 + 1;
/// The year Go's unsigned "absolute" time counts from.
const ABSOLUTE_ZERO_YEAR: i64 = -292_277_022_399;
/// Seconds from Go's absolute zero to the Unix epoch.
const UNIX_TO_ABSOLUTE: i64 = 9_223_372_028_715_321_600;
const DAYS_BEFORE_MONTH: [u32; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

impl GoDate {
    /// The same arithmetic as Go's `time` package (before Go 1.23, which
    /// Prometheus 2.x is built with), wrapping the same way for seconds
    /// beyond any calendar, so `year(1e300)` answers what Prometheus does.
    fn from_unix(sec: i64) -> GoDate {
        let abs = sec.wrapping_add(UNIX_TO_ABSOLUTE) as u64;
        let mut d = abs / SECONDS_PER_DAY;
        let mut n = d / DAYS_PER_400_YEARS;
        let mut y = 400 * n;
        d -= DAYS_PER_400_YEARS * n;
        // The last 100- and 1-year cycles of a 400/4-year cycle are a day
        // longer; `n >> 2` keeps their last day in the cycle.
        n = d / DAYS_PER_100_YEARS;
        n -= n >> 2;
        y += 100 * n;
        d -= DAYS_PER_100_YEARS * n;
        n = d / DAYS_PER_4_YEARS;
        y += 4 * n;
        d -= DAYS_PER_4_YEARS * n;
        n = d / 365;
        n -= n >> 2;
        y += n;
        d -= 365 * n;
        let year = (y as i64).wrapping_add(ABSOLUTE_ZERO_YEAR);
        let yday = d as u32;
        let mut day = yday;
        let (month, day) = if is_leap(year) && day == 31 + 29 - 1 {
            (2, 29)
        } else {
            if is_leap(year) && day > 31 + 29 - 1 {
                day -= 1;
            }
            let mut m = (day / 31) as usize;
            let end = DAYS_BEFORE_MONTH[m + 1];
            let begin = if day >= end {
                m += 1;
                end
            } else {
                DAYS_BEFORE_MONTH[m]
            };
            (m as u32 + 1, day - begin + 1)
        };
        GoDate {
            year,
            month,
            day,
            yday,
            hour: ((abs % SECONDS_PER_DAY) / 3600) as u32,
            minute: ((abs % 3600) / 60) as u32,
            // Go's absolute zero is a Monday.
            weekday: ((abs.wrapping_add(SECONDS_PER_DAY) % (7 * SECONDS_PER_DAY)) / SECONDS_PER_DAY)
                as u32,
        }
    }

    fn days_in_month(&self) -> u32 {
        match self.month {
            2 if is_leap(self.year) => 29,
            m => DAYS_BEFORE_MONTH[m as usize] - DAYS_BEFORE_MONTH[m as usize - 1],
        }
    }
}

fn date_fn(name: &str, v: f64) -> Option<f64> {
    let t = GoDate::from_unix(go_int64(v));
    Some(match name {
        "day_of_month" => t.day as f64,
        "day_of_week" => t.weekday as f64,
        "day_of_year" => (t.yday + 1) as f64,
        "days_in_month" => t.days_in_month() as f64,
        "hour" => t.hour as f64,
        "minute" => t.minute as f64,
        "month" => t.month as f64,
        "year" => t.year as f64,
        _ => return None,
    })
}

/// Natural ordering of strings (digit runs compare numerically), as
/// `sort_by_label` uses.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let na = a[si..i].trim_start_matches('0');
            let nb = b[sj..j].trim_start_matches('0');
            let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if o != Ordering::Equal {
                return o;
            }
        } else {
            let o = ab[i].cmp(&bb[j]);
            if o != Ordering::Equal {
                return o;
            }
            i += 1;
            j += 1;
        }
    }
    (ab.len() - i).cmp(&(bb.len() - j))
}

/// Merges series that ended up with equal label sets; equal labels at the
/// same step are Prometheus's duplicate-labelset error.
pub(crate) fn merge_same_labels(series: Vec<StepSeries>) -> EResult<Vec<StepSeries>> {
    let mut out: Vec<StepSeries> = Vec::with_capacity(series.len());
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::default();
    for s in series {
        match index.get(&s.labels) {
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
            Some(&i) => {
                let e = &mut out[i];
                let mut merged: Vec<(i64, f64)> = Vec::new();
                merged.extend_from_slice(&e.points);
                merged.extend_from_slice(&s.points);
                merged.sort_by_key(|p| p.0);
                if merged.windows(2).any(|w| w[0].0 == w[1].0) {
                    return exec_err("vector cannot contain metrics with the same labelset");
                }
                e.points = merged;
                e.drop_name |= s.drop_name;
            }
        }
    }
    Ok(out)
}

fn string_arg(e: &Expr) -> EResult<String> {
    match e.unparen() {
        Expr::String(s) => Ok(s.value.clone()),
        _ => exec_err("expected string literal argument"),
    }
}

fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
}

impl<'a> Evaluator<'a> {
    pub(crate) fn eval_call(&mut self, c: &Call, grid: Grid) -> EResult<EvalVal> {
        let name = c.func.name;
        let n = grid.len();
        match name {
            "time" => {
                return Ok(EvalVal::Scalar(
                    (0..n).map(|i| grid.ts(i) as f64 / 1000.0).collect(),
                ))
            }
            "pi" => return Ok(EvalVal::Scalar(vec![std::f64::consts::PI; n])),
            "min_of" | "max_of" => {
                let a = self.eval_scalar(&c.args[0], grid)?;
                let b = self.eval_scalar(&c.args[1], grid)?;
                let f = if name == "min_of" { go_min } else { go_max };
                return Ok(EvalVal::Scalar(
                    a.iter().zip(&b).map(|(x, y)| f(*x, *y)).collect(),
                ));
            }
            "start" => return Ok(EvalVal::Scalar(vec![self.query_start as f64 / 1000.0; n])),
            "end" => return Ok(EvalVal::Scalar(vec![self.query_end as f64 / 1000.0; n])),
            "step" => return Ok(EvalVal::Scalar(vec![self.dur.step_ms as f64 / 1000.0; n])),
            "range" => return Ok(EvalVal::Scalar(vec![self.dur.range_ms as f64 / 1000.0; n])),
            "vector" => {
                let vals = self.eval_scalar(&c.args[0], grid)?;
                return Ok(EvalVal::Vector(vec![StepSeries {
                    labels: Arc::new(Labels::empty()),
                    points: vals
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (grid.ts(i), *v))
                        .collect(),
                    drop_name: false,
                }]));
            }
            "scalar" => {
                let series = self.eval_vector(&c.args[0], grid)?;
                let mut count = vec![0u32; n];
                let mut vals = vec![f64::NAN; n];
                for s in &series {
                    for p in &s.points {
                        let i = grid.index_of(p.0);
                        count[i] += 1;
                        vals[i] = p.1;
                    }
                }
                for i in 0..n {
                    if count[i] != 1 {
                        vals[i] = f64::NAN;
                    }
                }
                return Ok(EvalVal::Scalar(vals));
            }
            "timestamp" => {
                let series = match c.args[0].unparen() {
                    Expr::Vector(vs) => self.eval_vector_selector(vs, grid, true)?,
                    other => {
                        let mut s = self.eval_vector(other, grid)?;
                        for x in &mut s {
                            for p in &mut x.points {
                                p.1 = p.0 as f64 / 1000.0;
                            }
                        }
                        s
                    }
                };
                return Ok(EvalVal::Vector(
                    series
                        .into_iter()
                        .map(|mut s| {
                            s.drop_name = true;
                            s
                        })
                        .collect(),
                ));
            }
            "absent" => return self.absent(c, grid),
            "absent_over_time" => return self.absent_over_time(c, grid),
            "label_replace" => return self.label_replace(c, grid),
            "label_join" => return self.label_join(c, grid),
            "sort" | "sort_desc" | "sort_by_label" | "sort_by_label_desc" => {
                return self.sort_fn(c, grid)
            }
            "histogram_quantile" | "histogram_fraction" | "histogram_quantiles" => {
                return self.histogram_fn(c, grid)
            }
            "info" => return self.info_fn(c, grid),
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" => {
                // These read native histograms only and skip float samples,
                // as in Prometheus; the store holds floats only, so the
                // result is always empty.
                let _ = self.eval(&c.args[0], grid)?;
                return Ok(EvalVal::Vector(Vec::new()));
            }
            _ => {}
        }
        // Range-vector functions.
        let matrix_idx = c
            .func
            .arg_types
            .iter()
            .position(|t| *t == panoptes_promql_parser::ValueType::Matrix);
        if let Some(mi) = matrix_idx {
            let mut params: Vec<Vec<f64>> = Vec::new();
            for (i, a) in c.args.iter().enumerate() {
                if i != mi {
                    params.push(self.eval_scalar(a, grid)?);
                }
            }
            if name == "quantile_over_time" {
                let q = params
                    .first()
                    .and_then(|p| p.first())
                    .copied()
                    .unwrap_or(0.0);
                if !(0.0..=1.0).contains(&q) || q.is_nan() {
                    self.warnings.push(format!(
                        "PromQL warning: quantile value should be between 0 and 1, got {}{}",
                        panoptes_promql_parser::format_float(q),
                        self.pos(&c.args[0])
                    ));
                }
            }
            let arg = self.eval_range_arg(&c.args[mi], grid)?;
            let keep_name = KEEP_NAME.contains(&name);
            let lookback = self.opts.lookback_delta_ms;
            let mut out = Vec::with_capacity(arg.series.len());
            let mut pv = vec![0.0; params.len()];
            let invariant = arg.at.is_some()
                && name != "predict_linear"
                && params
                    .iter()
                    .all(|p| p.windows(2).all(|w| w[0].to_bits() == w[1].to_bits()));
            let sees_past_window = arg.anchored || arg.smoothed;
            for s in &arg.series {
                self.check_deadline()?;
                let mut points = Vec::new();
                // Window bounds only move forward with the steps (or stay,
                // with `@`), so two cursors find them.
                let (mut lo, mut hi) = (0usize, 0usize);
                let pts = &s.points;
                let mut first: Option<Option<f64>> = None;
                for i in 0..n {
                    // With `@`, every step sees the same window: compute once.
                    if invariant {
                        if let Some(v) = first {
                            if let Some(v) = v {
                                points.push((grid.ts(i), v));
                            }
                            continue;
                        }
                    }
                    let t = grid.ts(i);
                    let end = arg.window_end(t);
                    let start = end.saturating_sub(arg.range_ms);
                    while hi < pts.len() && pts[hi].0 <= end {
                        hi += 1;
                    }
                    while lo < hi && pts[lo].0 <= start {
                        lo += 1;
                    }
                    // An empty window has no value, unless the modifier
                    // looks past it: a long range over a short-lived series
                    // is mostly such steps.
                    if lo == hi && !sees_past_window {
                        continue;
                    }
                    for (k, p) in params.iter().enumerate() {
                        pv[k] = p[i];
                    }
                    let window = &pts[lo..hi];
                    let r = apply_range_fn(name, &arg, s, window, t, &pv, lookback)?;
                    if invariant {
                        first = Some(r);
                    }
                    if let Some(v) = r {
                        points.push((t, v));
                    }
                }
                if !points.is_empty() {
                    out.push(StepSeries {
                        labels: s.labels.clone(),
                        points,
                        drop_name: s.drop_name || !keep_name,
                    });
                }
            }
            if (name == "rate" || name == "increase") && arg.is_selector {
                self.non_counter_info(&out, &c.args[mi]);
            }
            return Ok(EvalVal::Vector(out));
        }
        // Instant-vector functions, element-wise with optional scalars.
        let mut series = if c.args.is_empty() {
            // Date functions default to vector(time()).
            vec![StepSeries {
                labels: Arc::new(Labels::empty()),
                points: (0..n)
                    .map(|i| (grid.ts(i), grid.ts(i) as f64 / 1000.0))
                    .collect(),
                drop_name: false,
            }]
        } else {
            self.eval_vector(&c.args[0], grid)?
        };
        let mut params: Vec<Vec<f64>> = Vec::new();
        for a in c.args.iter().skip(1) {
            params.push(self.eval_scalar(a, grid)?);
        }
        for s in &mut series {
            let mut pts = Vec::with_capacity(s.points.len());
            for &(t, v) in &s.points {
                let i = grid.index_of(t);
                let r = match name {
                    "round" => {
                        let to = params.first().map(|p| p[i]).unwrap_or(1.0);
                        let inv = 1.0 / to;
                        Some((v * inv + 0.5).floor() / inv)
                    }
                    "clamp" => {
                        let (lo, hi) = (params[0][i], params[1][i]);
                        if hi < lo {
                            None
                        } else {
                            Some(go_max(lo, go_min(hi, v)))
                        }
                    }
                    "clamp_min" => Some(go_max(params[0][i], v)),
                    "clamp_max" => Some(go_min(params[0][i], v)),
                    "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour"
                    | "minute" | "month" | "year" => date_fn(name, v),
                    _ => match simple_math(name, v) {
                        Some(r) => Some(r),
                        None => return exec_err(format!("function {name} is not supported")),
                    },
                };
                if let Some(r) = r {
                    pts.push((t, r));
                }
            }
            s.points = pts;
            s.drop_name = true;
        }
        series.retain(|s| !s.points.is_empty());
        Ok(EvalVal::Vector(series))
    }

    fn non_counter_info(&mut self, out: &[StepSeries], arg: &Expr) {
        let mut seen: Vec<String> = Vec::new();
        for s in out {
            if let Some(name) = s.labels.metric_name() {
                let ok = ["_total", "_sum", "_count", "_bucket"]
                    .iter()
                    .any(|suf| name.ends_with(suf));
                if !ok && !seen.iter().any(|n| n == name) {
                    seen.push(name.to_string());
                    self.infos.push(format!(
                        "PromQL info: metric might not be a counter, name does not end in _total/_sum/_count/_bucket: {:?}{}",
                        name,
                        self.pos(arg)
                    ));
                }
            }
        }
    }

    fn absent_labels(e: &Expr) -> Labels {
        let vs = match e.unparen() {
            Expr::Vector(vs) => vs,
            Expr::Matrix(ms) => &ms.vector,
            _ => return Labels::empty(),
        };
        // An equality matcher sets its label unless the label was already
        // constrained; any other matcher on a label removes it.
        let mut b = panoptes_model::LabelsBuilder::new();
        let mut seen: Vec<&str> = Vec::new();
        for m in &vs.matchers {
            if m.name == METRIC_NAME {
                continue;
            }
            if m.op == MatchOp::Equal && !seen.contains(&m.name.as_str()) {
                b.set(m.name.as_str(), m.value.as_str());
            } else {
                b.del(&m.name);
            }
            seen.push(&m.name);
        }
        b.build()
    }

    fn absent(&mut self, c: &Call, grid: Grid) -> EResult<EvalVal> {
        let series = self.eval_vector(&c.args[0], grid)?;
        let n = grid.len();
        let mut present = vec![false; n];
        for s in &series {
            for p in &s.points {
                present[grid.index_of(p.0)] = true;
            }
        }
        let points: Vec<(i64, f64)> = (0..n)
            .filter(|i| !present[*i])
            .map(|i| (grid.ts(i), 1.0))
            .collect();
        if points.is_empty() {
            return Ok(EvalVal::Vector(Vec::new()));
        }
        Ok(EvalVal::Vector(vec![StepSeries {
            labels: Arc::new(Self::absent_labels(&c.args[0])),
            points,
            drop_name: false,
        }]))
    }

    fn absent_over_time(&mut self, c: &Call, grid: Grid) -> EResult<EvalVal> {
        let arg = self.eval_range_arg(&c.args[0], grid)?;
        let mut points = Vec::new();
        for i in 0..grid.len() {
            let t = grid.ts(i);
            if !arg.series.iter().any(|s| !arg.window(s, t).is_empty()) {
                points.push((t, 1.0));
            }
        }
        if points.is_empty() {
            return Ok(EvalVal::Vector(Vec::new()));
        }
        Ok(EvalVal::Vector(vec![StepSeries {
            labels: Arc::new(Self::absent_labels(&c.args[0])),
            points,
            drop_name: false,
        }]))
    }

    fn label_replace(&mut self, c: &Call, grid: Grid) -> EResult<EvalVal> {
        let dst = string_arg(&c.args[1])?;
        let repl = string_arg(&c.args[2])?;
        let src = string_arg(&c.args[3])?;
        let re_src = string_arg(&c.args[4])?;
        let re = Regex::new(&format!("^(?s:{re_src})$")).map_err(|e| {
            crate::value::QueryError::Execution(format!(
                "invalid regular expression in label_replace(): {re_src}: {e}"
            ))
        })?;
        if !valid_label_name(&dst) {
            return exec_err(format!(
                "invalid destination label name in label_replace(): {dst}"
            ));
        }
        let series = self.eval_vector(&c.args[0], grid)?;
        let mut out = Vec::with_capacity(series.len());
        for mut s in series {
            let sv = s.labels.get(&src).unwrap_or("").to_string();
            if let Some(caps) = re.captures(&sv) {
                let mut res = String::new();
                caps.expand(&repl, &mut res);
                set_destination_label(&mut s, &dst, &res);
            }
            out.push(s);
        }
        Ok(EvalVal::Vector(merge_same_labels(out)?))
    }

    fn label_join(&mut self, c: &Call, grid: Grid) -> EResult<EvalVal> {
        let dst = string_arg(&c.args[1])?;
        let sep = string_arg(&c.args[2])?;
        let mut srcs = Vec::new();
        for a in &c.args[3..] {
            srcs.push(string_arg(a)?);
        }
        if !valid_label_name(&dst) {
            return exec_err(format!(
                "invalid destination label name in label_join(): {dst}"
            ));
        }
        let series = self.eval_vector(&c.args[0], grid)?;
        let mut out = Vec::with_capacity(series.len());
        for mut s in series {
            let joined = srcs
                .iter()
                .map(|l| s.labels.get(l).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(&sep);
            set_destination_label(&mut s, &dst, &joined);
            out.push(s);
        }
        Ok(EvalVal::Vector(merge_same_labels(out)?))
    }

    fn sort_fn(&mut self, c: &Call, grid: Grid) -> EResult<EvalVal> {
        let name = c.func.name;
        let mut series = self.eval_vector(&c.args[0], grid)?;
        if self.is_range {
            self.warnings.push(format!(
                "PromQL warning: sort is ineffective for range queries since results are always ordered by labels{}",
                self.pos(&Expr::Call(c.clone()))
            ));
            return Ok(EvalVal::Vector(series));
        }
        let val = |s: &StepSeries| s.points.first().map(|p| p.1).unwrap_or(f64::NAN);
        match name {
            "sort" | "sort_desc" => {
                let desc = name == "sort_desc";
                series.sort_by(|a, b| {
                    let (x, y) = (val(a), val(b));
                    match (x.is_nan(), y.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ => {
                            let o = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
                            if desc {
                                o.reverse()
                            } else {
                                o
                            }
                        }
                    }
                });
            }
            _ => {
                let mut labels = Vec::new();
                for a in &c.args[1..] {
                    labels.push(string_arg(a)?);
                }
                let desc = name == "sort_by_label_desc";
                series.sort_by(|a, b| {
                    for l in &labels {
                        let (x, y) = (a.labels.get(l).unwrap_or(""), b.labels.get(l).unwrap_or(""));
                        if x != y {
                            let o = natural_cmp(x, y);
                            return if desc { o.reverse() } else { o };
                        }
                    }
                    let o = a.labels.cmp(&b.labels);
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                });
            }
        }
        Ok(EvalVal::Vector(series))
    }

    fn histogram_fn(&mut self, c: &Call, grid: Grid) -> EResult<EvalVal> {
        let name = c.func.name;
        let n = grid.len();
        // (quantiles or fraction bounds, the vector argument, the label
        // that `histogram_quantiles` adds)
        let mut qs: Vec<Vec<f64>> = Vec::new();
        let mut bounds: Option<(Vec<f64>, Vec<f64>)> = None;
        let mut qlabel: Option<String> = None;
        let vec_arg = match name {
            "histogram_fraction" => {
                bounds = Some((
                    self.eval_scalar(&c.args[0], grid)?,
                    self.eval_scalar(&c.args[1], grid)?,
                ));
                &c.args[2]
            }
            "histogram_quantiles" => {
                qlabel = Some(string_arg(&c.args[1])?);
                for a in &c.args[2..] {
                    qs.push(self.eval_scalar(a, grid)?);
                }
                &c.args[0]
            }
            _ => {
                qs.push(self.eval_scalar(&c.args[0], grid)?);
                &c.args[1]
            }
        };
        let series = self.eval_vector(vec_arg, grid)?;
        // Group series by labels without `le` (the name stays in the key but
        // not in the output).
        let mut groups: Vec<BucketGroup> = Vec::new();
        let mut index: HashMap<Labels, usize> = HashMap::default();
        let mut warned: Vec<String> = Vec::new();
        for (si, s) in series.iter().enumerate() {
            let le = s.labels.get("le").unwrap_or("");
            let ub = match parse_go_float(le) {
                Some(v) => v,
                None => {
                    let mname = s.labels.metric_name().unwrap_or("").to_string();
                    if !warned.contains(&mname) {
                        self.warnings.push(format!(
                            "PromQL warning: bucket label \"le\" is missing or has a malformed value of {:?} for metric name {:?}{}",
                            le,
                            mname,
                            self.pos(vec_arg)
                        ));
                        warned.push(mname);
                    }
                    continue;
                }
            };
            let key = s.labels.drop_names(&["le"]);
            let gi = match index.get(&key) {
                Some(&g) => g,
                None => {
                    let out = Arc::new(crate::engine::drop_metric_name(&key));
                    index.insert(key, groups.len());
                    groups.push((out, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[gi].1.push((ub, si));
        }
        let nq = qs.len().max(1);
        let mut out: Vec<StepSeries> = Vec::new();
        let mut cursors = vec![0usize; series.len()];
        let mut monotonic_warned = false;
        for (labels, members) in &groups {
            if let Some(l) = &qlabel {
                if labels.get(l).is_some() {
                    return exec_err(format!(
                        "label {l:?} already exists in the input of histogram_quantiles"
                    ));
                }
            }
            let mut points: Vec<Vec<(i64, f64)>> = vec![Vec::new(); nq];
            for i in 0..n {
                let t = grid.ts(i);
                let mut buckets: Vec<(f64, f64)> = Vec::with_capacity(members.len());
                for &(ub, si) in members {
                    let pts = &series[si].points;
                    let c = &mut cursors[si];
                    while *c < pts.len() && pts[*c].0 < t {
                        *c += 1;
                    }
                    if *c < pts.len() && pts[*c].0 == t {
                        buckets.push((ub, pts[*c].1));
                    }
                }
                if buckets.is_empty() {
                    continue;
                }
                if let Some((lo, hi)) = &bounds {
                    points[0].push((t, bucket_fraction(lo[i], hi[i], &mut buckets)));
                    continue;
                }
                for (k, q) in qs.iter().enumerate() {
                    let mut b = buckets.clone();
                    let (v, forced) = bucket_quantile(q[i], &mut b);
                    if forced && !monotonic_warned {
                        monotonic_warned = true;
                        self.infos.push(format!(
                            "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}{}",
                            series[members[0].1].labels.metric_name().unwrap_or(""),
                            self.pos(vec_arg)
                        ));
                    }
                    points[k].push((t, v));
                }
            }
            for (k, pts) in points.into_iter().enumerate() {
                if pts.is_empty() {
                    continue;
                }
                let labels = match &qlabel {
                    Some(l) => {
                        let mut b = labels.to_builder();
                        b.set(l.as_str(), format_quantile_label(qs[k][0]));
                        Arc::new(b.build())
                    }
                    None => labels.clone(),
                };
                out.push(StepSeries {
                    labels,
                    points: pts,
                    drop_name: false,
                });
            }
        }
        for (k, q) in qs.iter().enumerate() {
            if let Some(q) = q.first() {
                if !(0.0..=1.0).contains(q) {
                    let at = if qlabel.is_some() {
                        &c.args[2 + k]
                    } else {
                        &c.args[0]
                    };
                    self.warnings.push(format!(
                        "PromQL warning: quantile value should be between 0 and 1, got {}{}",
                        panoptes_promql_parser::format_float(*q),
                        self.pos(at)
                    ));
                }
            }
        }
        Ok(EvalVal::Vector(merge_same_labels(out)?))
    }

    fn info_fn(&mut self, c: &Call, grid: Grid) -> EResult<EvalVal> {
        crate::info::eval_info(self, c, grid)
    }
}

/// Output labels of one histogram and its buckets `(upper bound, series)`.
type BucketGroup = (Arc<Labels>, Vec<(f64, usize)>);

/// Parses a float as Go's `strconv.ParseFloat` accepts it (incl. `+Inf`).
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    match t.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => return Some(f64::INFINITY),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok().map(|v| v as f64);
    }
    t.parse::<f64>().ok()
}

fn sort_coalesce(buckets: &mut Vec<(f64, f64)>) {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &b in buckets.iter() {
        match out.last_mut() {
            Some(l) if l.0 == b.0 => l.1 += b.1,
            _ => out.push(b),
        }
    }
    *buckets = out;
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < f64::MIN_POSITIVE {
        return diff < eps * f64::MIN_POSITIVE;
    }
    diff / (a.abs() + b.abs()) < eps
}

/// Quantile over classic buckets `(upper_bound, cumulative_count)`;
/// returns the value and whether monotonicity had to be forced.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    sort_coalesce(buckets);
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return (f64::NAN, false),
    }
    let mut forced = false;
    let mut prev = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        let cur = b.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) {
            b.1 = prev;
            continue;
        }
        if cur < prev {
            b.1 = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    if buckets.len() < 2 {
        return (f64::NAN, forced);
    }
    let obs = buckets[buckets.len() - 1].1;
    if obs == 0.0 || obs.is_nan() {
        return (f64::NAN, forced);
    }
    let mut rank = q * obs;
    let nb = buckets.len() - 1;
    let b = buckets[..nb].partition_point(|x| x.1 < rank);
    if b == nb {
        return (buckets[nb - 1].0, forced);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return (buckets[0].0, forced);
    }
    let mut start = 0.0;
    let end = buckets[b].0;
    let mut count = buckets[b].1;
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

/// Fraction of observations between `lower` and `upper` over classic
/// buckets: finite buckets contribute in proportion to their overlap; a
/// bucket of infinite width contributes fully only when the range reaches
/// its infinite end, and nothing otherwise.
pub(crate) fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    sort_coalesce(buckets);
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let mut sum = 0.0;
    let mut prev_ub = f64::NEG_INFINITY;
    let mut prev_count = 0.0;
    for (i, &(ub, cnt)) in buckets.iter().enumerate() {
        let lb = if i == 0 && ub > 0.0 { 0.0 } else { prev_ub };
        let c = cnt - prev_count;
        if lb.is_infinite() || ub.is_infinite() {
            if (lb.is_infinite() && lower == f64::NEG_INFINITY && upper > lb)
                || (ub.is_infinite() && upper == f64::INFINITY && lower < ub)
            {
                sum += c;
            }
        } else {
            let lo = lower.max(lb);
            let hi = upper.min(ub);
            if hi > lo && ub > lb {
                sum += c * (hi - lo) / (ub - lb);
            }
        }
        prev_ub = ub;
        prev_count = cnt;
    }
    sum / total
}

/// A quantile as the label value `histogram_quantiles` gives it (`0.0`,
/// `0.25`, `1.0`, `NaN`).
fn format_quantile_label(q: f64) -> String {
    if q.is_nan() {
        return "NaN".into();
    }
    if q.is_infinite() {
        return if q > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{q}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Sets (or, for an empty value, removes) the destination label of
/// `label_replace` / `label_join`; writing `__name__` keeps the name.
fn set_destination_label(s: &mut StepSeries, dst: &str, value: &str) {
    let mut b = s.labels.to_builder();
    if value.is_empty() {
        b.del(dst);
    } else {
        b.set(dst, value);
    }
    s.labels = Arc::new(b.build());
    if dst == METRIC_NAME {
        s.drop_name = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_min_max_semantics() {
        assert!(go_max(f64::NAN, 1.0).is_nan());
        assert_eq!(go_max(f64::NAN, f64::INFINITY), f64::INFINITY);
        assert!(go_min(-0.0, 0.0).is_sign_negative());
        assert_eq!(go_min(1.0, 2.0), 1.0);
    }

    #[test]
    fn quantile_interpolates() {
        assert_eq!(quantile(0.5, &mut [1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(2.0, &mut [1.0]), f64::INFINITY);
    }

    #[test]
    fn classic_bucket_quantile() {
        let mut b = vec![(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 20.0)];
        let (v, forced) = bucket_quantile(0.5, &mut b);
        assert!(!forced);
        assert!((v - 0.1).abs() < 1e-12);
        let mut b = vec![(1.0, 5.0), (f64::INFINITY, 4.0)];
        assert!(bucket_quantile(0.5, &mut b).1);
    }

    #[test]
    fn rate_extrapolates_to_window() {
        // 0,1,...,5 every 10s inside a 60s window ending at 60s.
        let w: Vec<(i64, f64)> = (1..=6).map(|i| (i * 10_000, i as f64)).collect();
        let r = extrapolated_rate(&w, 0, 60_000, 60_000, true, false).unwrap();
        assert!((r - 6.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("a2", "a10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("b", "a10"), std::cmp::Ordering::Greater);
    }
}

#[cfg(test)]
mod go_date_tests {
    use super::*;

    #[test]
    fn dates_match_go_for_any_value() {
        // 2024-02-29 12:34:56 UTC, a Thursday.
        let t = GoDate::from_unix(1_709_210_096);
        assert_eq!((t.year, t.month, t.day, t.yday), (2024, 2, 29, 59));
        assert_eq!((t.hour, t.minute, t.weekday), (12, 34, 4));
        assert_eq!(t.days_in_month(), 29);
        let t = GoDate::from_unix(-1);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.weekday),
            (1969, 12, 31, 23, 3)
        );
        // Far outside any calendar, Go's wrapping arithmetic (what
        // Prometheus answers).
        assert_eq!(date_fn("year", 1e15), Some(31_690_708.0));
        assert_eq!(date_fn("year", f64::NAN), Some(292_277_026_596.0));
        assert_eq!(date_fn("hour", f64::INFINITY), Some(15.0));
        assert_eq!(date_fn("hour", 1e300), Some(15.0));
    }
}
