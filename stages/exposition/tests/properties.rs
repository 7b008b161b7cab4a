//! Property tests: no input makes the parsers panic (or yield anything after
//! an error), and rendering samples with `write_text` then parsing them back
//! gives the same samples and metadata.

use std::collections::BTreeMap;

use panoptes_exposition::{parse_to_batch, write_text, Entry, FastEntry, Format, Parser};
use panoptes_model::{Labels, MetricMetadata, MetricType, Sample};
use proptest::prelude::*;

fn consume(body: &[u8], format: Format) {
    let mut parser = Parser::new(body, format);
    let mut errored = false;
    for entry in parser.by_ref() {
        assert!(!errored, "an entry after an error");
        errored = entry.is_err();
    }
    assert!(parser.next().is_none(), "a finished parser stays finished");
}

/// Bodies made of the characters the grammars care about, so that random
/// inputs reach deep into the line parsers rather than failing at once.
fn exposition_like() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        r#"([a-z_:]{1,6}(\{([a-z_]{1,3}="([a-z"\\n ]|\\.){0,6}",?){0,3}\})?( [-+0-9.eEInfNa]{0,8}){0,3}( # \{[a-z]="x"\} 1( 2)?)?|# (HELP|TYPE|UNIT|EOF)( [a-z_]{1,5})?( [a-z \\]{0,10})?|[ \t#{}="\\,]{0,4})(\n|\r\n)?"#,
    )
    .expect("valid regex")
    .prop_map(|s| s)
}

/// The fast path with every quick-read sample re-parsed must give exactly
/// the full parser's entries and error; and where a quick read's line parses,
/// its series text, value and timestamp are the full parser's.
fn fast_path_agrees(body: &[u8]) {
    let full: Vec<_> = Parser::new(body, Format::PrometheusText).collect();
    let mut fast = Vec::new();
    let mut p = Parser::new(body, Format::PrometheusText);
    while let Some(e) = p.next_fast() {
        match e {
            Ok(FastEntry::Sample {
                series,
                value,
                timestamp_ms,
            }) => {
                let e = p.reparse_last();
                if let Ok(Entry::Sample(se)) = &e {
                    assert_eq!(se.series.as_bytes(), series, "series span");
                    assert_eq!(se.value.to_bits(), value.to_bits(), "value");
                    assert_eq!(se.timestamp_ms, timestamp_ms, "timestamp");
                }
                fast.push(e);
            }
            Ok(FastEntry::Parsed(e)) => fast.push(Ok(e)),
            Err(e) => fast.push(Err(e)),
        }
    }
    // Debug text: NaN values make the entries themselves unequal to
    // themselves.
    assert_eq!(format!("{fast:?}"), format!("{full:?}"));
}

#[test]
fn fast_path_agrees_on_captured_bodies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/exposition");
    let mut n = 0;
    for sub in ["", "malformed"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = e.unwrap().path();
            if path.is_file()
                && !path
                    .extension()
                    .is_some_and(|x| x == "py" || x == "sh" || x == "md")
            {
                fast_path_agrees(&std::fs::read(&path).unwrap());
                n += 1;
            }
        }
    }
    assert!(n > 20, "bodies found: {n}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn fast_path_agrees_with_the_full_parser(lines in proptest::collection::vec(exposition_like(), 0..12)) {
        fast_path_agrees(lines.concat().as_bytes());
    }

    #[test]
    fn fast_path_agrees_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        fast_path_agrees(&body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        consume(&body, Format::PrometheusText);
        consume(&body, Format::OpenMetrics);
        let _ = parse_to_batch(&body, Format::PrometheusText, 0, "p");
        let _ = parse_to_batch(&body, Format::OpenMetrics, 0, "p");
    }

    #[test]
    fn exposition_like_lines_never_panic(lines in proptest::collection::vec(exposition_like(), 0..12)) {
        let body = lines.concat();
        consume(body.as_bytes(), Format::PrometheusText);
        consume(body.as_bytes(), Format::OpenMetrics);
        let om = format!("{body}# EOF\n");
        consume(om.as_bytes(), Format::OpenMetrics);
    }
}

fn metric_type() -> impl Strategy<Value = MetricType> {
    prop_oneof![
        Just(MetricType::Counter),
        Just(MetricType::Gauge),
        Just(MetricType::Unknown),
    ]
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.5),
        Just(1e6),
        (-1000i32..1000).prop_map(f64::from),
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        "m_[a-z]{1,3}",
        proptest::collection::vec(
            ("[a-zA-Z_][a-zA-Z0-9_]{0,4}", "\\PC{0,8}|[\"\\\\\n]{1,3}"),
            0..4,
        ),
        value(),
        // The text format's timestamps are unsigned (Prometheus rejects a sign).
        0..i64::MAX,
    )
        .prop_map(|(name, pairs, value, timestamp_ms)| {
            let mut labels = vec![("__name__".to_string(), name)];
            labels.extend(pairs.into_iter().filter(|(n, _)| n != "__name__"));
            Sample {
                labels: Labels::from_pairs(labels),
                timestamp_ms,
                value,
            }
        })
}

/// A comparable form of a sample: labels as text, value bits (NaN unified).
fn key(s: &Sample, with_ts: bool) -> (String, u64, Option<i64>) {
    let bits = if s.value.is_nan() {
        f64::NAN.to_bits()
    } else if s.value == 0.0 {
        0
    } else {
        s.value.to_bits()
    };
    (
        s.labels.to_string(),
        bits,
        with_ts.then_some(s.timestamp_ms),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn write_then_parse_round_trips(
        samples in proptest::collection::vec(sample(), 0..40),
        families in proptest::collection::btree_map("m_[a-z]{1,3}", (metric_type(), "\\PC{0,20}|[\\\\\n a]{0,6}"), 0..6),
        with_ts in any::<bool>(),
    ) {
        let metadata: Vec<MetricMetadata> = families
            .iter()
            .map(|(name, (t, help))| MetricMetadata {
                metric_family: name.clone(),
                metric_type: *t,
                help: help.clone(),
                unit: String::new(),
            })
            .collect();
        let mut body = String::new();
        write_text(&mut body, &metadata, &samples, with_ts);
        let batch = parse_to_batch(body.as_bytes(), Format::PrometheusText, -7, "rt")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;

        let mut want: Vec<_> = samples.iter().map(|s| key(s, with_ts)).collect();
        let mut got: Vec<_> = batch.samples.iter().map(|s| key(s, with_ts)).collect();
        want.sort();
        got.sort();
        prop_assert_eq!(got, want);
        if !with_ts {
            prop_assert!(batch.samples.iter().all(|s| s.timestamp_ms == -7));
        }

        // Every family that has samples comes back with its type and help.
        let parsed: BTreeMap<&str, &MetricMetadata> =
            batch.metadata.iter().map(|m| (m.metric_family.as_str(), m)).collect();
        for m in &metadata {
            let has_samples = samples.iter().any(|s| s.labels.metric_name() == Some(&m.metric_family));
            if !has_samples {
                continue;
            }
            let p = parsed.get(m.metric_family.as_str());
            prop_assert!(p.is_some(), "family {} lost", m.metric_family);
            if let Some(p) = p {
                prop_assert_eq!(p.metric_type, m.metric_type);
                prop_assert_eq!(&p.help, &m.help);
            }
        }
    }
}
