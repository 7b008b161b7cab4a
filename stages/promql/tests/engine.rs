//! End-to-end tests of the evaluator over a MemStore: result shapes,
//! Prometheus semantics on small data, and error types and limits.

use std::time::Duration;

use panoptes_model::{stale_nan, Labels};
use panoptes_promql::parser::parse;
use panoptes_promql::{Engine, EngineOptions, MemStore, QueryError, Value};

fn lbl(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// `http_requests_total{job, instance}` counting up by `rate` per second,
/// one sample every 15 s for an hour.
fn store() -> MemStore {
    let mut s = MemStore::new();
    for (job, inst, rate) in [("api", "0", 1.0), ("api", "1", 2.0), ("db", "0", 3.0)] {
        let l = lbl(&[
            ("__name__", "http_requests_total"),
            ("job", job),
            ("instance", inst),
        ]);
        for i in 0..=240 {
            s.add(&l, i * 15_000, rate * 15.0 * i as f64);
        }
    }
    let g = lbl(&[("__name__", "gauge")]);
    s.add(&g, 0, 1.0);
    s.add(&g, 60_000, 2.0);
    s.add(&g, 120_000, stale_nan());
    s
}

fn instant(q: &str, t: i64) -> Result<Value, QueryError> {
    Engine::default()
        .instant(&store(), &parse(q).expect("query parses"), t)
        .map(|r| r.value)
}

fn vector(q: &str, t: i64) -> Vec<(String, f64)> {
    match instant(q, t).expect("query runs") {
        Value::Vector(v) => {
            let mut out: Vec<(String, f64)> =
                v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
        other => panic!("expected a vector, got {other:?}"),
    }
}

#[test]
fn lookback_and_staleness() {
    assert_eq!(vector("gauge", 90_000), vec![("gauge".into(), 2.0)]);
    // The stale marker at 2m ends the series at once.
    assert!(vector("gauge", 120_000).is_empty());
    // Without a marker, the last sample is found for 5 minutes (left-open).
    let l = "http_requests_total{job=\"db\"}";
    assert_eq!(vector(l, 3_600_000 + 299_000).len(), 1);
    assert!(vector(l, 3_600_000 + 300_000).is_empty());
}

#[test]
fn rate_and_aggregation() {
    let got = vector("sum by (job) (rate(http_requests_total[5m]))", 1_800_000);
    assert_eq!(got.len(), 2);
    assert!((got[0].1 - 3.0).abs() < 1e-9, "{got:?}");
    assert!((got[1].1 - 3.0).abs() < 1e-9, "{got:?}");
    assert_eq!(got[0].0, "{job=\"api\"}");
    // increase over a window fully covered by samples equals rate * range.
    let inc = vector(
        "increase(http_requests_total{instance=\"1\"}[1m])",
        1_800_000,
    );
    assert!((inc[0].1 - 120.0).abs() < 1e-9, "{inc:?}");
}

#[test]
fn binary_matching_and_name_dropping() {
    let got = vector(
        "http_requests_total / on(job) group_left sum by (job) (http_requests_total)",
        1_800_000,
    );
    assert_eq!(got.len(), 3);
    assert!(got
        .iter()
        .all(|(l, _)| !l.starts_with("http_requests_total")));
    let total: f64 = got
        .iter()
        .filter(|(l, _)| l.contains("api"))
        .map(|(_, v)| v)
        .sum();
    assert!((total - 1.0).abs() < 1e-9);
    // Comparison filters keep the name.
    let kept = vector("http_requests_total > 2000", 1_800_000);
    assert!(kept
        .iter()
        .all(|(l, _)| l.starts_with("http_requests_total")));
}

#[test]
fn duplicate_match_is_an_execution_error() {
    let err = instant(
        "http_requests_total + on(job) http_requests_total",
        1_800_000,
    )
    .expect_err("many-to-many must fail");
    assert_eq!(err.error_type(), "execution");
    assert!(
        err.to_string()
            .contains("many-to-many matching not allowed"),
        "{err}"
    );
}

#[test]
fn result_shapes() {
    match instant("1 + 2", 0).expect("runs") {
        Value::Scalar(t, v) => assert_eq!((t, v), (0, 3.0)),
        other => panic!("{other:?}"),
    }
    match instant("gauge[2m]", 90_000).expect("runs") {
        Value::Matrix(m) => assert_eq!(m[0].points, vec![(0, 1.0), (60_000, 2.0)]),
        other => panic!("{other:?}"),
    }
    let r = Engine::default()
        .range(
            &store(),
            &parse("http_requests_total").expect("parses"),
            0,
            600_000,
            60_000,
        )
        .expect("runs");
    match r.value {
        Value::Matrix(m) => {
            assert_eq!(m.len(), 3);
            assert!(m.windows(2).all(|w| w[0].labels < w[1].labels));
            assert_eq!(m[0].points.len(), 11);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn range_query_rejects_range_vectors() {
    let err = Engine::default()
        .range(
            &store(),
            &parse("gauge[1m]").expect("parses"),
            0,
            60_000,
            1_000,
        )
        .expect_err("matrix is not allowed");
    assert_eq!(err.error_type(), "bad_data");
}

#[test]
fn limits_have_prometheus_error_types() {
    let opts = EngineOptions {
        max_samples: 10,
        ..EngineOptions::default()
    };
    let err = Engine::new(opts)
        .instant(
            &store(),
            &parse("count_over_time(http_requests_total[10m])").expect("parses"),
            1_800_000,
        )
        .expect_err("too many samples");
    assert_eq!(err.error_type(), "execution");
    assert!(err.to_string().contains("too many samples"), "{err}");

    let opts = EngineOptions {
        timeout: Duration::ZERO,
        ..EngineOptions::default()
    };
    std::thread::sleep(Duration::from_millis(2));
    let err = Engine::new(opts)
        .instant(
            &store(),
            &parse("sum(http_requests_total)").expect("parses"),
            0,
        )
        .expect_err("times out");
    assert_eq!(err.error_type(), "timeout");
}

#[test]
fn go_float_semantics() {
    match instant("-0 * 1", 0).expect("runs") {
        Value::Scalar(_, v) => assert!(v == 0.0 && v.is_sign_negative()),
        other => panic!("{other:?}"),
    }
    match instant("NaN == bool NaN", 0).expect("runs") {
        Value::Scalar(_, v) => assert_eq!(v, 0.0),
        other => panic!("{other:?}"),
    }
    let got = vector("clamp_max(vector(NaN), 1)", 0);
    assert!(got[0].1.is_nan());
}

#[test]
fn query_text_entry_points_report_positions_and_parse_errors() {
    let e = Engine::default();
    let r = e
        .instant_query(&store(), "quantile(\n  2, http_requests_total)", 1_800_000)
        .expect("runs");
    assert_eq!(
        r.warnings,
        vec!["PromQL warning: quantile value should be between 0 and 1, got 2 (2:3)".to_string()]
    );
    let err = e
        .range_query(&store(), "sum(", 0, 60_000, 15_000)
        .expect_err("does not parse");
    assert_eq!(err.error_type(), "bad_data");
    assert_eq!(
        err.to_string(),
        "1:5: parse error: unclosed left parenthesis"
    );
}

#[test]
fn cancelled_queries_report_canceled() {
    let flag = std::sync::atomic::AtomicBool::new(true);
    let err = Engine::default()
        .range_cancellable(
            &store(),
            &parse("rate(http_requests_total[5m])").expect("parses"),
            0,
            600_000,
            15_000,
            Some(&flag),
        )
        .expect_err("canceled");
    assert_eq!(err.error_type(), "canceled");
}

#[test]
fn name_removal_immediate_by_default_delayed_on_request() {
    let q = parse(
        "label_replace(rate(http_requests_total{instance=\"1\"}[5m]), \"was\", \"$1\", \"__name__\", \"(.+)\")",
    )
    .expect("parses");
    let labels = |opts: EngineOptions| match Engine::new(opts)
        .instant(&store(), &q, 1_800_000)
        .expect("runs")
        .value
    {
        Value::Vector(v) => v[0].labels.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        labels(EngineOptions::default()),
        "{instance=\"1\", job=\"api\"}"
    );
    let delayed = EngineOptions {
        delayed_name_removal: true,
        ..EngineOptions::default()
    };
    assert_eq!(
        labels(delayed),
        "{instance=\"1\", job=\"api\", was=\"http_requests_total\"}"
    );
}

#[test]
fn aggregating_a_rate_renames_or_refuses_like_a_plain_rate() {
    // `sum by` over a range function of one metric: the input's name
    // removal is skipped, the answer must not change.
    let mut s = store();
    let other = lbl(&[
        ("__name__", "other_total"),
        ("job", "api"),
        ("instance", "0"),
    ]);
    for i in 0..=240 {
        s.add(&other, i * 15_000, 7.0 * i as f64);
    }
    let run = |q: &str| {
        Engine::default()
            .instant(&s, &parse(q).expect("parses"), 1_800_000)
            .map(|r| match r.value {
                Value::Vector(v) => {
                    let mut out: Vec<(String, f64)> =
                        v.into_iter().map(|x| (x.labels.to_string(), x.v)).collect();
                    out.sort_by(|a, b| a.0.cmp(&b.0));
                    out
                }
                other => panic!("{other:?}"),
            })
    };
    let by_job = run("sum by (job) (rate(http_requests_total[5m]))").expect("runs");
    let by_job_via_binary = run("sum by (job) (rate(http_requests_total[5m]) * 1)").expect("runs");
    assert_eq!(by_job, by_job_via_binary);
    assert_eq!(
        run("count by (instance, job) (rate({__name__=~\".+_total\", job=\"db\"}[5m]))")
            .expect("runs"),
        vec![("{instance=\"0\", job=\"db\"}".to_string(), 1.0)]
    );
    // Two metrics whose series are equal once the name is gone: the same
    // error as without the aggregation.
    let q = "sum by (job) (rate({__name__=~\"http_requests_total|other_total\"}[5m]))";
    match run(q) {
        Err(QueryError::Execution(m)) => {
            assert!(m.contains("same labelset"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(run("rate({__name__=~\"http_requests_total|other_total\"}[5m])").is_err());
    // Grouping by the name keeps it out of the shortcut.
    assert!(run("sum by (__name__) (rate(http_requests_total[5m]))")
        .expect("runs")
        .iter()
        .all(|(l, _)| l == "{}"));
}
