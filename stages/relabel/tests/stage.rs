//! Drives the `relabel` stage through the Stage contract: compile a section,
//! start it with a hand-built context, feed sample batches, read both ports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver};
use panoptes_engine::global::GlobalConfig;
use panoptes_engine::port::{Downstream, EdgeCounters, Input, Output};
use panoptes_engine::stage::{
    CompileContext, Message, MessageType, Reconfigure, StageContext, StageKind,
};
use panoptes_model::{is_stale_nan, stale_nan, Labels, Sample, SampleBatch};
use panoptes_relabel::RelabelKind;
use serde_json::json;

fn compile_ctx() -> CompileContext {
    CompileContext {
        stage_id: "clean".into(),
        base_dir: ".".into(),
        global: GlobalConfig::default(),
    }
}

fn wired(port: &str) -> (Output, Receiver<Message>) {
    let out = Output::new("clean", port, MessageType::Samples);
    let (tx, rx) = bounded(16);
    out.set_downstream(vec![Downstream {
        stage: "sink".into(),
        tx,
        drop_when_full: false,
        counters: Arc::new(EdgeCounters::default()),
    }]);
    (out, rx)
}

fn sample(pairs: &[(&str, &str)], v: f64) -> Sample {
    Sample {
        labels: Labels::from_pairs(pairs.iter().copied()),
        timestamp_ms: 1000,
        value: v,
    }
}

fn samples_of(m: Message) -> Arc<SampleBatch> {
    match m {
        Message::Samples(b) => b,
        other => panic!("expected samples, got {:?}", other.message_type()),
    }
}

#[test]
fn compile_reports_every_issue_with_paths() {
    let section = json!({"rules": [
        {"source_labels": ["a"]},
        {"action": "hashmod", "target_label": "x"},
        {"regex": "("}
    ]});
    let issues = RelabelKind.compile(&compile_ctx(), &section).unwrap_err();
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert!(paths.contains(&"rules[0].target_label"), "{paths:?}");
    assert!(paths.contains(&"rules[1].modulus"), "{paths:?}");
    assert!(paths.contains(&"rules[2].regex"), "{paths:?}");
    let schema = RelabelKind.config_schema();
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(
        schema["properties"]["rules"]["items"]["additionalProperties"],
        json!(false)
    );
}

#[test]
fn stage_relabels_drops_and_passes_stale_markers() {
    let section = json!({"rules": [
        {"source_labels": ["__name__"], "regex": "tmp_.*", "action": "drop"},
        {"regex": "instance", "action": "labeldrop"}
    ]});
    let cfg = RelabelKind
        .compile(&compile_ctx(), &section)
        .expect("valid section");
    assert_eq!(cfg.input(), Some(MessageType::Samples));
    assert_eq!(cfg.outputs().len(), 2);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (in_tx, in_rx) = bounded(16);
    let (kept_out, kept_rx) = wired("");
    let (dropped_out, dropped_rx) = wired("dropped");
    let mut outputs = BTreeMap::new();
    outputs.insert(String::new(), kept_out);
    outputs.insert("dropped".to_string(), dropped_out);
    let ctx = StageContext {
        input: Some(Input::new(in_rx)),
        outputs,
        ..StageContext::standalone("clean", rt.handle().clone(), ".")
    };
    let mut running = cfg.start(ctx).expect("starts");

    let mut batch = SampleBatch::new("node");
    batch.samples.push(sample(
        &[("__name__", "up"), ("instance", "a:1"), ("job", "node")],
        1.0,
    ));
    batch
        .samples
        .push(sample(&[("__name__", "tmp_x"), ("job", "node")], 2.0));
    batch.samples.push(sample(
        &[("__name__", "gone"), ("instance", "a:1")],
        stale_nan(),
    ));
    in_tx.send(Message::Samples(Arc::new(batch))).unwrap();

    let kept = samples_of(
        kept_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("kept batch"),
    );
    assert_eq!(kept.samples.len(), 2);
    assert_eq!(
        kept.samples[0].labels,
        Labels::from_pairs([("__name__", "up"), ("job", "node")])
    );
    assert_eq!(
        kept.samples[1].labels,
        Labels::from_pairs([("__name__", "gone")])
    );
    assert!(
        is_stale_nan(kept.samples[1].value),
        "stale markers keep their bit pattern"
    );
    let dropped = samples_of(
        dropped_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("dropped batch"),
    );
    assert_eq!(dropped.samples.len(), 1);
    assert_eq!(dropped.samples[0].labels.metric_name(), Some("tmp_x"));

    // An untouched batch is forwarded as is (same allocation).
    let mut clean = SampleBatch::new("node");
    clean.samples.push(sample(&[("__name__", "ok")], 1.0));
    let clean = Arc::new(clean);
    in_tx.send(Message::Samples(clean.clone())).unwrap();
    let got = samples_of(kept_rx.recv_timeout(Duration::from_secs(5)).unwrap());
    assert!(Arc::ptr_eq(&got, &clean));

    // New rules apply in place.
    let new_cfg = RelabelKind
        .compile(
            &compile_ctx(),
            &json!({"rules": [{"target_label": "env", "replacement": "prod"}]}),
        )
        .unwrap();
    assert!(matches!(
        running.reconfigure(new_cfg.as_ref()),
        Reconfigure::Applied
    ));
    in_tx.send(Message::Samples(clean.clone())).unwrap();
    let got = samples_of(kept_rx.recv_timeout(Duration::from_secs(5)).unwrap());
    assert_eq!(got.samples[0].labels.get("env"), Some("prod"));

    // Queued work is processed before stop returns.
    for _ in 0..5 {
        in_tx.send(Message::Samples(clean.clone())).unwrap();
    }
    running.stop();
    assert_eq!(kept_rx.try_iter().count(), 5);
}
