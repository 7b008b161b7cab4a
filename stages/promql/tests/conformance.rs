//! Runs Prometheus's PromQL test scripts (when the shared conformance
//! directory is present) and checks that the passing count never drops
//! below the one recorded in CONFORMANCE.md.

use std::path::Path;

use panoptes_promql::promqltest::{harness_options, run_script};

#[test]
fn conformance_count_never_decreases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/promqltest");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "conformance scripts not found at {}; skipping",
            dir.display()
        );
        return;
    };
    let recorded: usize =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("CONFORMANCE.md"))
            .expect("CONFORMANCE.md is readable")
            .lines()
            .find_map(|l| {
                l.strip_prefix("passed: ")
                    .and_then(|n| n.trim().parse().ok())
            })
            .expect("CONFORMANCE.md has a `passed: N` line");
    let mut passed = 0;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "test") {
            let text = std::fs::read_to_string(&p).expect("script is readable");
            let r = run_script(&text, &harness_options());
            assert!(r.fatal.is_none(), "{}: {:?}", p.display(), r.fatal);
            passed += r.passed();
        }
    }
    assert!(
        passed >= recorded,
        "conformance dropped: {passed} passed, CONFORMANCE.md records {recorded}"
    );
}
