//! `panoptes validate`, `schema` and `graph` on real files: every broken
//! pipeline under testdata/invalid/ gives its snapshotted errors, every
//! example under pipelines/ validates, and the committed schema is current.

mod support;

use support::panoptes;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn invalid_pipelines_report_every_error_with_its_position() {
    let mut files: Vec<_> = std::fs::read_dir(support::repo_root().join("testdata/invalid"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 12, "one broken pipeline per error class");
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let rel = format!(
            "testdata/invalid/{}",
            f.file_name().unwrap().to_string_lossy()
        );
        let out = panoptes(&["validate", &rel]);
        assert_eq!(out.status.code(), Some(1), "{rel} must be rejected");
        let text = stdout(&out);
        for line in text
            .lines()
            .filter(|l| !l.ends_with("error)") && !l.ends_with("errors)"))
        {
            assert!(
                line.starts_with(&format!("{rel}:")),
                "FILE:LINE:COL form: {line}"
            );
        }
        insta::assert_snapshot!(format!("invalid_{name}"), text);
    }
}

#[test]
fn json_format_gives_the_same_errors() {
    let out = panoptes(&[
        "validate",
        "--format",
        "json",
        "testdata/invalid/many_errors.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let errors = v["files"][0]["errors"].as_array().unwrap();
    let text = stdout(&panoptes(&[
        "validate",
        "testdata/invalid/many_errors.yaml",
    ]));
    assert_eq!(errors.len(), text.lines().count() - 1);
    for e in errors {
        assert!(e["line"].as_u64().unwrap() > 0);
        assert!(e["column"].as_u64().unwrap() > 0);
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
}

#[test]
fn validate_reads_standard_input_as_dash() {
    let root = support::repo_root();
    // A broken pipeline: the same errors as for the file, named `<stdin>`.
    let rel = "testdata/invalid/unknown_field.yaml";
    let text = std::fs::read_to_string(root.join(rel)).unwrap();
    let out = support::panoptes_with_stdin(&["validate", "-"], &root, &text);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let got = stdout(&out);
    assert!(
        got.starts_with("<stdin>:4:5: stages.targets.static_config: unknown field"),
        "{got}"
    );
    assert!(got.ends_with("<stdin>: invalid (1 error)\n"), "{got}");
    let from_file = stdout(&panoptes(&["validate", rel]));
    assert_eq!(got, from_file.replace(rel, "<stdin>"));

    // A good one.
    let text = std::fs::read_to_string(root.join("pipelines/default.yaml")).unwrap();
    let out = support::panoptes_with_stdin(&["validate", "-"], &root, &text);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("<stdin>: valid ("),
        "{}",
        stdout(&out)
    );

    // Alongside files, and only once.
    let out = support::panoptes_with_stdin(
        &["validate", "pipelines/default.yaml", "-"],
        &root,
        "stages: {}\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("\n<stdin>: valid (0 stages"),
        "{}",
        stdout(&out)
    );
    let out = support::panoptes_with_stdin(&["validate", "-", "-"], &root, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only once"));
}

/// `--stdin-name` (hidden; `run` uses it for its schema-check helper) names
/// the text as if read from that file: the output is the file's, byte for
/// byte, and relative paths resolve against its directory.
#[test]
fn stdin_name_makes_stdin_read_like_the_file() {
    let root = support::repo_root();
    for rel in [
        "testdata/invalid/many_errors.yaml",
        "testdata/invalid/unknown_field.yaml",
        "pipelines/default.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(rel)).unwrap();
        let name = format!("--stdin-name={rel}");
        for format in ["text", "json"] {
            let piped = support::panoptes_with_stdin(
                &["validate", "--format", format, &name, "-"],
                &root,
                &text,
            );
            let direct = panoptes(&["validate", "--format", format, rel]);
            assert_eq!(piped.status.code(), direct.status.code(), "{rel}");
            assert_eq!(stdout(&piped), stdout(&direct), "{rel} as {format}");
        }
    }
    let help = stdout(&panoptes(&["validate", "--help"]));
    assert!(!help.contains("stdin-name"), "hidden from --help: {help}");
    assert!(help.contains("`-` reads one from standard input"), "{help}");
}

#[test]
fn example_pipelines_validate() {
    let mut n = 0;
    for entry in std::fs::read_dir(support::repo_root().join("pipelines")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let out = panoptes(&["validate", p.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                p.display(),
                stdout(&out)
            );
            assert!(stdout(&out).contains(": valid ("));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn committed_schema_is_the_generated_one() {
    let out = panoptes(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::repo_root().join("schemas/pipeline.schema.json"))
            .expect("schemas/pipeline.schema.json exists"),
    )
    .unwrap();
    assert!(
        generated == committed,
        "schemas/pipeline.schema.json is stale: run `panoptes schema > schemas/pipeline.schema.json`"
    );
    // Every kind's section is closed: unknown fields are errors.
    for (name, def) in generated["$defs"].as_object().unwrap() {
        if name.starts_with("stage_") {
            assert_eq!(def["additionalProperties"], false, "{name}");
        }
    }
}

#[test]
fn graph_prints_dot() {
    let out = panoptes(&["graph", "testdata/graph.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!("graph_dot", stdout(&out));
}

#[test]
fn graph_of_an_invalid_file_fails_with_errors() {
    let out = panoptes(&["graph", "testdata/invalid/cycle.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cycle among data edges"));
}
