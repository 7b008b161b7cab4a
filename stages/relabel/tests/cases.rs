//! Runs the table of relabel cases in testdata/relabel/cases.yaml: each case
//! gives input labels, rules, and the outcome Prometheus produces.

use std::collections::BTreeMap;
use std::path::PathBuf;

use panoptes_model::Labels;
use panoptes_relabel::{compile_rules, process};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    input: BTreeMap<String, String>,
    rules: serde_json::Value,
    #[serde(default)]
    output: Option<BTreeMap<String, String>>,
    #[serde(default)]
    drop: bool,
    #[serde(default)]
    error: Option<String>,
}

fn labels(m: &BTreeMap<String, String>) -> Labels {
    Labels::from_pairs(m.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

#[test]
fn relabel_cases_match_prometheus() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/relabel/cases.yaml");
    let text = std::fs::read_to_string(&path).expect("cases.yaml is readable");
    let cases: Vec<Case> = serde_yaml::from_str(&text).expect("cases.yaml parses");
    assert!(cases.len() >= 40, "the table has all its cases");
    let mut failures = Vec::new();
    for case in &cases {
        let compiled = compile_rules(&case.rules, "rules");
        match (&case.error, compiled) {
            (Some(want), Err(issues)) => {
                if !issues.iter().any(|i| i.path == format!("rules{want}")) {
                    failures.push(format!(
                        "{}: expected an issue at rules{want}, got {issues:?}",
                        case.name
                    ));
                }
            }
            (Some(want), Ok(_)) => {
                failures.push(format!("{}: expected an error at {want}", case.name))
            }
            (None, Err(issues)) => {
                failures.push(format!("{}: unexpected issues {issues:?}", case.name))
            }
            (None, Ok(rules)) => {
                let got = process(&labels(&case.input), &rules);
                let want = if case.drop {
                    None
                } else {
                    case.output.as_ref().map(labels)
                };
                if case.output.is_none() && !case.drop {
                    failures.push(format!("{}: case has neither output nor drop", case.name));
                } else if got != want {
                    failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
