//! Property test: whatever expression parses, evaluating it (instant and
//! range) over a small store returns a value or an error, never panics.

use panoptes_model::{stale_nan, Labels};
use panoptes_promql::parser::parse;
use panoptes_promql::{Engine, EngineOptions, MemStore};
use proptest::prelude::*;

fn store() -> MemStore {
    let mut s = MemStore::new();
    for (i, name) in ["a_total", "b", "c_bucket"].iter().enumerate() {
        for j in 0..3 {
            let le = ["0.1", "1", "+Inf"][j];
            let l = Labels::from_pairs([("__name__", *name), ("x", &*j.to_string()), ("le", le)]);
            for k in 0..20i64 {
                let v = match (k + j as i64) % 7 {
                    0 => f64::NAN,
                    1 => stale_nan(),
                    2 => -0.0,
                    _ => (k * (i as i64 + 1)) as f64,
                };
                s.add(&l, k * 15_000 - 60_000, v);
            }
        }
    }
    s
}

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a_total".to_string()),
        Just("b{x=~\"0|1\"}".to_string()),
        Just("c_bucket".to_string()),
        Just("{__name__=~\".+\"}".to_string()),
        (-3i64..3).prop_map(|v| v.to_string()),
        Just("NaN".to_string()),
        Just("-Inf".to_string()),
        Just("time()".to_string()),
        Just("a_total offset -1m".to_string()),
        Just("b @ end()".to_string()),
    ]
}

fn range() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1m".to_string()),
        Just("1m anchored".to_string()),
        Just("2m smoothed".to_string()),
        Just("1ms".to_string()),
        Just("5m:1s".to_string()),
        Just("1h:".to_string()),
        Just("9999999999999s".to_string()),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    atom().prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop_oneof![
                    Just("+"),
                    Just("/"),
                    Just("%"),
                    Just("^"),
                    Just(">"),
                    Just("== bool"),
                    Just("and"),
                    Just("or"),
                    Just("unless"),
                    Just("atan2"),
                    Just("+ on(x) group_left"),
                    Just("* ignoring(le) fill(0)")
                ],
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            (
                prop_oneof![
                    Just("sum"),
                    Just("avg"),
                    Just("count"),
                    Just("max"),
                    Just("stddev"),
                    Just("group")
                ],
                inner.clone()
            )
                .prop_map(|(op, a)| format!("{op} by (x) ({a})")),
            (
                prop_oneof![
                    Just("topk"),
                    Just("bottomk"),
                    Just("quantile"),
                    Just("limitk"),
                    Just("limit_ratio")
                ],
                inner.clone(),
                -2i64..4
            )
                .prop_map(|(op, a, k)| format!("{op}({k}, {a})")),
            (
                prop_oneof![
                    Just("abs"),
                    Just("ln"),
                    Just("sort_desc"),
                    Just("timestamp"),
                    Just("absent"),
                    Just("scalar"),
                    Just("histogram_quantile(0.5, "),
                    Just("label_replace(")
                ],
                inner.clone()
            )
                .prop_map(|(f, a)| if f.ends_with(", ") {
                    format!("{f}{a})")
                } else if f == "label_replace(" {
                    format!("label_replace({a}, \"y\", \"$1\", \"x\", \"(.*)\")")
                } else if f == "scalar" {
                    format!("vector(scalar({a}))")
                } else {
                    format!("{f}({a})")
                }),
            (
                prop_oneof![
                    Just("rate"),
                    Just("deriv"),
                    Just("quantile_over_time(0.3, "),
                    Just("max_over_time"),
                    Just("predict_linear"),
                    Just("changes")
                ],
                inner.clone(),
                range()
            )
                .prop_map(|(f, a, r)| {
                    // A bare selector takes a range directly; anything else
                    // needs a subquery.
                    let bare = !a.contains(['(', ' ']);
                    let r = if bare || r.contains(':') {
                        r
                    } else {
                        format!("{r}:")
                    };
                    let m = if bare {
                        format!("{a}[{r}]")
                    } else {
                        format!("({a})[{r}]")
                    };
                    match f {
                        "quantile_over_time(0.3, " => format!("{f}{m})"),
                        "predict_linear" => format!("predict_linear({m}, 60)"),
                        _ => format!("{f}({m})"),
                    }
                }),
            (inner, -100i64..100).prop_map(|(a, o)| format!("({a})[2m:30s] offset {o}s @ 100")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn evaluation_never_panics(q in expr(), t in -100_000i64..400_000) {
        let store = store();
        let engine = Engine::new(EngineOptions { max_samples: 100_000, ..EngineOptions::default() });
        // Many generated strings are not valid PromQL (types); only what
        // parses is evaluated.
        if let Ok(e) = parse(&q) {
            let _ = engine.instant(&store, &e, t);
            let _ = engine.range(&store, &e, t, t + 120_000, 15_000);
        }
    }
}
