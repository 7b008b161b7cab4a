//! Runs one push_ingest stage on its own, as a standalone Pushgateway, for
//! side-by-side comparisons and benchmarks:
//! `cargo run -p panoptes-push-ingest --example serve -- 127.0.0.1:29192 [persistence_file]`.
//! Emitted batches are counted and dropped. Stops on Ctrl-C / SIGTERM.

use std::collections::BTreeMap;
use std::sync::Arc;

use panoptes_engine::global::GlobalConfig;
use panoptes_engine::port::{Downstream, EdgeCounters, Output};
use panoptes_engine::stage::{CompileContext, MessageType, StageContext, StageKind};
use panoptes_push_ingest::PushIngestKind;

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:29192".into());
    let persistence = args.next();
    let mut section = serde_json::json!({
        "listen": listen,
        "interval": "10s",
        "enable_admin_api": true,
        "max_group_series": 0,
        "max_total_series": 0,
    });
    if let Some(p) = persistence {
        section["persistence_file"] = serde_json::json!(p);
    }
    let cwd = std::env::current_dir().expect("current directory");
    let cctx = CompileContext {
        stage_id: "push".into(),
        base_dir: cwd.clone(),
        global: GlobalConfig::default(),
    };
    let cfg = match PushIngestKind.compile(&cctx, &section) {
        Ok(c) => c,
        Err(issues) => {
            for i in issues {
                eprintln!("{}: {}", i.path, i.message);
            }
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (tx, rx) = crossbeam_channel::bounded(4);
    let out = Output::new("push", "", MessageType::Samples);
    out.set_downstream(vec![Downstream {
        stage: "sink".into(),
        tx,
        drop_when_full: true,
        counters: Arc::new(EdgeCounters::default()),
    }]);
    std::thread::spawn(move || for _ in rx {});
    let ctx = StageContext {
        outputs: BTreeMap::from([(String::new(), out)]),
        ..StageContext::standalone("push", rt.handle().clone(), cwd)
    };
    let stage = match cfg.start(ctx) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    eprintln!("push_ingest listening on {listen}");
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    stage.stop();
}
