//! Snapshot tests over real exposition bodies captured into
//! `testdata/exposition/` (see `capture.sh` there): Debian's node exporter
//! and Pushgateway, the Python client's hello-world exporter in both
//! formats, Prometheus's conformance bodies, hand-written bodies covering
//! every type and edge case, and one malformed body per error class.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use panoptes_exposition::{parse_to_batch, Entry, Format, Parser, SampleEntry};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/exposition")
}

fn read(rel: &str) -> Vec<u8> {
    let path = dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn format_of(path: &Path) -> Format {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".om.txt") {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    }
}

fn labels(out: &mut String, labels: &[(&str, std::borrow::Cow<'_, str>)]) {
    out.push('{');
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{n}={v:?}");
    }
    out.push('}');
}

fn sample_line(out: &mut String, s: &SampleEntry<'_>) {
    let _ = write!(out, "S {} ", s.name);
    labels(out, &s.labels);
    let _ = write!(out, " = {:?}", s.value);
    if let Some(ts) = s.timestamp_ms {
        let _ = write!(out, " @{ts}");
    }
    if let Some(e) = &s.exemplar {
        out.push_str(" # ");
        labels(out, &e.labels);
        let _ = write!(out, " {:?}", e.value);
        if let Some(ts) = e.timestamp_ms {
            let _ = write!(out, " @{ts}");
        }
    }
    out.push('\n');
}

/// One line per entry; the error, if any, last.
fn render(body: &[u8], format: Format) -> String {
    let mut out = String::new();
    for entry in Parser::new(body, format) {
        match entry {
            Ok(Entry::Help { family, help }) => {
                let _ = writeln!(out, "HELP {family} {help:?}");
            }
            Ok(Entry::Type {
                family,
                metric_type,
            }) => {
                let _ = writeln!(out, "TYPE {family} {}", metric_type.as_str());
            }
            Ok(Entry::Unit { family, unit }) => {
                let _ = writeln!(out, "UNIT {family} {unit:?}");
            }
            Ok(Entry::Sample(s)) => sample_line(&mut out, &s),
            Err(e) => {
                let _ = writeln!(out, "ERROR {e}");
            }
        }
    }
    out
}

/// One line per family for large bodies: type, sample count, first sample.
fn family_summary(body: &[u8], format: Format) -> String {
    let mut out = String::new();
    let mut current: Option<(String, String, usize, String)> = None;
    let flush = |c: &mut Option<(String, String, usize, String)>, out: &mut String| {
        if let Some((family, t, n, first)) = c.take() {
            let _ = writeln!(out, "{family} [{t}] {n} samples, first: {first}");
        }
    };
    for entry in Parser::new(body, format) {
        match entry.expect("real bodies parse") {
            Entry::Type {
                family,
                metric_type,
            } => {
                flush(&mut current, &mut out);
                current = Some((family.into(), metric_type.as_str().into(), 0, String::new()));
            }
            Entry::Sample(s) => {
                if current.is_none() {
                    current = Some((s.name.into(), "no TYPE".into(), 0, String::new()));
                }
                if let Some(c) = current.as_mut() {
                    if c.2 == 0 {
                        let mut line = String::new();
                        sample_line(&mut line, &s);
                        c.3 = line.trim_end().to_string();
                    }
                    c.2 += 1;
                }
            }
            Entry::Help { .. } | Entry::Unit { .. } => {}
        }
    }
    flush(&mut current, &mut out);
    out
}

/// Counts the lines that are samples by a rule independent of the parser.
fn naive_sample_lines(body: &[u8]) -> usize {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .count()
}

fn sample_count(body: &[u8], format: Format) -> usize {
    Parser::new(body, format)
        .filter(|e| matches!(e, Ok(Entry::Sample(_))))
        .count()
}

#[test]
fn python_client_text() {
    let body = read("python_client.prom.txt");
    insta::assert_snapshot!(render(&body, Format::PrometheusText));
}

#[test]
fn python_client_openmetrics() {
    let body = read("python_client.om.txt");
    insta::assert_snapshot!(render(&body, Format::OpenMetrics));
}

#[test]
fn pushgateway_text() {
    let body = read("pushgateway.prom.txt");
    insta::assert_snapshot!(render(&body, Format::PrometheusText));
}

#[test]
fn node_exporter_text() {
    let body = read("node_exporter.prom.txt");
    assert_eq!(
        sample_count(&body, Format::PrometheusText),
        naive_sample_lines(&body)
    );
    insta::assert_snapshot!(family_summary(&body, Format::PrometheusText));
}

#[test]
fn handwritten_text_edge_cases() {
    let body = read("text_edgecases.prom.txt");
    insta::assert_snapshot!(render(&body, Format::PrometheusText));
}

#[test]
fn handwritten_openmetrics_all_types() {
    let body = read("openmetrics_alltypes.om.txt");
    insta::assert_snapshot!(render(&body, Format::OpenMetrics));
}

#[test]
fn conformance_bodies() {
    let mut out = String::new();
    for name in [
        "1histogram.om.txt",
        "alltypes.5mfs.om.txt",
        "alltypes.237mfs.prom.txt",
        "alltypes.237mfs.nometa.prom.txt",
    ] {
        let body = read(&format!("conformance/{name}"));
        let format = format_of(Path::new(name));
        assert_eq!(
            sample_count(&body, format),
            naive_sample_lines(&body),
            "{name}"
        );
        let _ = writeln!(out, "== {name}");
        out.push_str(&family_summary(&body, format));
    }
    insta::assert_snapshot!(out);
}

#[test]
fn malformed_bodies_each_fail_with_a_located_message() {
    let paths = files_in(&dir().join("malformed"));
    assert!(paths.len() >= 40, "only {} malformed bodies", paths.len());
    let mut out = String::new();
    for path in paths {
        let body = std::fs::read(&path).expect("read body");
        let format = format_of(&path);
        let errors: Vec<_> = Parser::new(&body, format).filter_map(Result::err).collect();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        assert_eq!(errors.len(), 1, "{name} must fail exactly once");
        // parse_to_batch fails the same way.
        let batch_err = parse_to_batch(&body, format, 0, "t").expect_err(name);
        assert_eq!(batch_err, errors[0], "{name}");
        let _ = writeln!(out, "{name}: {}", errors[0]);
    }
    insta::assert_snapshot!(out);
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("testdata dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
}

#[test]
fn metadata_rule_violations_fail_only_when_strict() {
    // Prometheus's scrape parser accepts these; the text format's rules (and
    // the Pushgateway) reject them.
    let paths = files_in(&dir().join("malformed/strict"));
    assert!(paths.len() >= 4);
    let mut out = String::new();
    for path in paths {
        let body = std::fs::read(&path).expect("read body");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        assert!(
            Parser::new(&body, Format::PrometheusText).all(|e| e.is_ok()),
            "{name} parses without strict_metadata"
        );
        let err = Parser::new(&body, Format::PrometheusText)
            .strict_metadata()
            .find_map(Result::err)
            .expect(name);
        let batch_err = parse_to_batch(&body, Format::PrometheusText, 0, "t").expect_err(name);
        assert_eq!(batch_err, err, "{name}");
        let _ = writeln!(out, "{name}: {err}");
    }
    insta::assert_snapshot!(out);
}

#[test]
fn go_client_openmetrics_family_collision_is_accepted() {
    // client_golang exposes go_memstats_alloc_bytes (gauge) and
    // go_memstats_alloc_bytes_total (counter), whose OpenMetrics families
    // collide; Prometheus ingests both, and so must we, even when strict.
    let body = read("go_client_collision.om.txt");
    let batch = parse_to_batch(&body, Format::OpenMetrics, 0, "t").expect("accepted");
    assert_eq!(batch.samples.len(), 2);
    insta::assert_snapshot!(render(&body, Format::OpenMetrics));
}

#[test]
fn text_and_openmetrics_captures_of_the_same_exporter_agree() {
    // The Python client's two captures expose the same series; only the
    // `_created` values differ in formatting, so compare the rest.
    let text = parse_to_batch(
        &read("python_client.prom.txt"),
        Format::PrometheusText,
        0,
        "t",
    )
    .expect("text parses");
    let om = parse_to_batch(&read("python_client.om.txt"), Format::OpenMetrics, 0, "t")
        .expect("om parses");
    let key = |b: &panoptes_model::SampleBatch| {
        let mut v: Vec<String> = b
            .samples
            .iter()
            .filter(|s| {
                let n = s.labels.metric_name().unwrap_or("");
                !n.ends_with("_created")
                    && !n.starts_with("python_gc")
                    && !n.starts_with("process_")
            })
            .map(|s| format!("{} {}", s.labels, s.value))
            .collect();
        v.sort();
        v
    };
    assert_eq!(key(&text), key(&om));
}

#[test]
fn write_text_reproduces_go_exposition_bodies() {
    // Parsing a Go exporter's /metrics and writing it back gives the same
    // bytes (families sorted by name, Go's float formatting), except for
    // labels with empty values, which the model drops as Prometheus does.
    for name in [
        "pushgateway.prom.txt",
        "node_exporter.prom.txt",
        "conformance/alltypes.237mfs.prom.txt",
    ] {
        check_rewrite(name);
    }
}

/// `a{x="",y="1"} 2` -> `a{y="1"} 2` (and `a{x=""} 2` -> `a 2`), with a
/// scanner independent of the parser under test.
fn drop_empty_labels(line: &str) -> String {
    let (Some(open), false) = (line.find('{'), line.starts_with('#')) else {
        return line.to_string();
    };
    let mut pairs = Vec::new();
    let mut rest = &line[open + 1..];
    while !rest.starts_with('}') {
        let eq = rest.find("=\"").expect("label");
        let name = &rest[..eq];
        let mut end = eq + 2;
        let bytes = rest.as_bytes();
        while bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let value = &rest[eq + 2..end];
        if !value.is_empty() {
            pairs.push(format!("{name}=\"{value}\""));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    let labels = if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    };
    format!("{}{labels}{}", &line[..open], &rest[1..])
}

fn check_rewrite(name: &str) {
    let body = read(name);
    let batch = parse_to_batch(&body, Format::PrometheusText, 0, "t").expect("parses");
    let mut out = String::new();
    panoptes_exposition::write_text(&mut out, &batch.metadata, &batch.samples, false);
    let want: String = String::from_utf8(body)
        .expect("utf8")
        .lines()
        // Free comments (this corpus ends with a "# EOF" comment) are not
        // data and are not written back.
        .filter(|l| !l.starts_with('#') || l.starts_with("# HELP ") || l.starts_with("# TYPE "))
        .map(|l| drop_empty_labels(l) + "\n")
        .collect();
    if out != want {
        let first_diff = out
            .lines()
            .zip(want.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("wrote {a:?}\nwant  {b:?}"));
        panic!("{name}: rewrite differs: {first_diff:?}");
    }
}
