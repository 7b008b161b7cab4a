//! Relabeling throughput (`cargo bench -p panoptes-relabel`): a typical
//! metric_relabel_configs set over 100k distinct series, for series the
//! rules leave alone (the common case) and series they rewrite.

use std::time::Instant;

use panoptes_model::Labels;
use panoptes_relabel::{compile_rules, process_cow};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rules = compile_rules(
        &serde_json::json!([
            {"source_labels": ["__name__"], "regex": "go_(gc|memstats)_.*", "action": "drop"},
            {"source_labels": ["__name__", "le"], "regex": "apiserver_.*;(0\\.0[0-9]+)", "action": "drop"},
            {"regex": "tmp_.*", "action": "labeldrop"},
            {"source_labels": ["pod"], "regex": "(.+)-[a-z0-9]{5}", "target_label": "workload", "replacement": "$1"},
            {"source_labels": ["env"], "regex": "", "target_label": "env", "replacement": "prod"}
        ]),
        "rules",
    )
    .expect("valid rules");
    let series: Vec<Labels> = (0..100_000)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", format!("http_requests_total_{}", i % 50)),
                ("env", "staging".to_string()),
                ("instance", format!("10.0.{}.{}:9100", i / 250, i % 250)),
                ("job", "node".to_string()),
                ("method", ["GET", "POST", "PUT"][i % 3].to_string()),
            ])
        })
        .collect();
    let rewritten: Vec<Labels> = series
        .iter()
        .map(|l| {
            let mut b = l.to_builder();
            b.set("pod", "frontend-7d9f8b6c4d-x2x9z");
            b.build()
        })
        .collect();
    for (name, set) in [("unchanged", &series), ("rewritten", &rewritten)] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            let mut kept = 0usize;
            for l in set.iter() {
                kept += usize::from(process_cow(l, &rules).is_some());
            }
            assert_eq!(kept, set.len());
            best = best.min(t0.elapsed().as_nanos() as f64 / set.len() as f64);
        }
        println!("relabel, 5 rules, {name} series: {best:.0} ns/series");
    }
}
