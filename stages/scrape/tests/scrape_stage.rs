//! Drives the `scrape` stage end to end: a tiny axum server on 127.0.0.1
//! serves bodies, the stage is started with a hand-built context, targets
//! are sent on its input and the batches read from its output.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{stale_names, tls_path, value, Harness};
use panoptes_model::{is_stale_nan, Labels, TargetHealth};
use serde_json::json;

#[test]
fn scrapes_series_then_http_errors_give_up_zero_and_stale_markers() {
    let mut h = Harness::start(json!({"scrape_interval": "500ms", "scrape_timeout": "450ms"}));
    *h.server.body.lock() = "# TYPE a gauge\na 1\nb{x=\"y\"} 2\n".into();
    h.set_targets(&[&h.addr]);

    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(1.0));
    assert_eq!(value(&b, "scrape_samples_scraped"), Some(2.0));
    assert_eq!(
        value(&b, "scrape_samples_post_metric_relabeling"),
        Some(2.0)
    );
    assert_eq!(value(&b, "scrape_series_added"), Some(2.0));
    assert!(value(&b, "scrape_duration_seconds").is_some_and(|d| (0.0..0.45).contains(&d)));
    let a = b
        .samples
        .iter()
        .find(|s| s.labels.metric_name() == Some("b"))
        .unwrap();
    assert_eq!(
        a.labels,
        Labels::from_pairs([
            ("__name__", "b"),
            ("env", "test"),
            ("instance", h.addr.as_str()),
            ("job", "node"),
            ("x", "y")
        ])
    );
    assert_eq!(b.metadata.len(), 1);
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert_eq!(
        hdrs.get("accept").unwrap().to_str().unwrap(),
        panoptes_exposition::SCRAPE_ACCEPT_HEADER
    );
    assert_eq!(
        hdrs.get("x-prometheus-scrape-timeout-seconds").unwrap(),
        "0.45"
    );
    let views = h.targets.all();
    let t = &views[0].1.targets()[0];
    assert_eq!(t.health, TargetHealth::Up);
    assert_eq!(t.scrape_url, format!("http://{}/metrics", h.addr));

    // The server fails: up 0, stale markers for both series, no samples.
    *h.server.status.lock() = Some(StatusCode::INTERNAL_SERVER_ERROR);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    assert_eq!(stale_names(&b), ["a", "b"]);
    assert_eq!(b.samples.len(), 2 + 5);
    let t = &h.targets.all()[0].1.targets()[0];
    assert_eq!(t.health, TargetHealth::Down);
    assert!(t.last_error.contains("500"), "{}", t.last_error);

    // Recovery, then the target goes away: stale markers for everything.
    *h.server.status.lock() = None;
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(1.0));
    h.set_targets(&[]);
    let b = h.next_batch();
    assert_eq!(
        stale_names(&b),
        [
            "a",
            "b",
            "scrape_duration_seconds",
            "scrape_samples_post_metric_relabeling",
            "scrape_samples_scraped",
            "scrape_series_added",
            "up"
        ]
    );
    assert!(h.targets.all()[0].1.targets().is_empty());
    h.stop();
    assert!(
        h.targets.all().is_empty(),
        "the view is unregistered on stop"
    );
}

#[test]
fn a_target_that_never_answers_times_out() {
    let h = Harness::start(
        json!({"scrape_interval": "400ms", "scrape_timeout": "200ms", "metrics_path": "/slow"}),
    );
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    let d = value(&b, "scrape_duration_seconds").unwrap();
    assert!((0.19..1.0).contains(&d), "duration {d}");
    let t = &h.targets.all()[0].1.targets()[0];
    assert!(t.last_error.contains("timed out"), "{}", t.last_error);
}

#[test]
fn a_200_mb_body_hits_body_size_limit_without_being_buffered() {
    let h = Harness::start(json!({
        "scrape_interval": "5s", "scrape_timeout": "4s",
        "metrics_path": "/huge", "body_size_limit": "1MB"
    }));
    h.set_targets(&[&h.addr]);
    let started = Instant::now();
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    assert_eq!(b.samples.len(), 5, "only the synthetic series");
    let t = &h.targets.all()[0].1.targets()[0];
    assert!(t.last_error.contains("body size limit"), "{}", t.last_error);
    // The connection was dropped early: the server produced far less than
    // the 200 MB it would have sent.
    std::thread::sleep(Duration::from_millis(200));
    let sent = h.server.huge_bytes_sent.load(Ordering::Relaxed);
    assert!(sent < 50 << 20, "server produced {sent} bytes");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[test]
fn one_hundred_thousand_series_past_sample_limit() {
    let h = Harness::start(json!({
        "scrape_interval": "5s", "scrape_timeout": "4s",
        "metrics_path": "/many", "sample_limit": 1000
    }));
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    assert_eq!(value(&b, "scrape_samples_scraped"), Some(100_000.0));
    assert_eq!(
        value(&b, "scrape_samples_post_metric_relabeling"),
        Some(100_000.0)
    );
    assert_eq!(b.samples.len(), 5, "no partial samples");
    let t = &h.targets.all()[0].1.targets()[0];
    assert!(
        t.last_error.contains("sample limit exceeded"),
        "{}",
        t.last_error
    );
}

#[test]
fn openmetrics_auth_relabeling_and_limits() {
    let h = Harness::start(json!({
        "scrape_interval": "500ms", "scrape_timeout": "450ms",
        "job_name": "custom",
        "authorization": {"credentials": "s3cret"},
        "params": {"module": ["m1"]},
        "relabel_configs": [{"source_labels": ["env"], "target_label": "stage"}],
        "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "skip_.*", "action": "drop"}],
        "label_limit": 6
    }));
    *h.server.content_type.lock() =
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8".into());
    *h.server.body.lock() = "# TYPE c counter\nc_total 3 1700000000.5\nskip_me 1\n# EOF\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(
        value(&b, "up"),
        Some(1.0),
        "{:?}",
        h.targets.all()[0].1.targets()[0].last_error
    );
    assert_eq!(value(&b, "scrape_samples_scraped"), Some(2.0));
    assert_eq!(
        value(&b, "scrape_samples_post_metric_relabeling"),
        Some(1.0)
    );
    let c = b
        .samples
        .iter()
        .find(|s| s.labels.metric_name() == Some("c_total"))
        .unwrap();
    assert_eq!(c.timestamp_ms, 1_700_000_000_500);
    assert_eq!(c.labels.get("job"), Some("custom"));
    assert_eq!(c.labels.get("stage"), Some("test"));
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert_eq!(hdrs.get("authorization").unwrap(), "Bearer s3cret");
    let t = &h.targets.all()[0].1.targets()[0];
    assert_eq!(t.scrape_url, format!("http://{}/metrics?module=m1", h.addr));

    // A series with too many labels fails the whole scrape.
    *h.server.body.lock() = "# TYPE c counter\nc_total{a=\"1\",b=\"2\"} 4\n# EOF\n".into();
    let b = loop {
        let b = h.next_batch();
        if value(&b, "up") == Some(0.0) {
            break b;
        }
    };
    // c_total carried its own timestamp, so (as in Prometheus) it gets no
    // stale marker; only the synthetic series are in the batch.
    assert!(stale_names(&b).is_empty());
    assert_eq!(b.samples.len(), 5);
    let t = &h.targets.all()[0].1.targets()[0];
    assert!(
        t.last_error.contains("label_limit exceeded"),
        "{}",
        t.last_error
    );
}

#[test]
fn gzip_bodies_are_decompressed_and_can_be_refused() {
    let h = Harness::start(
        json!({"scrape_interval": "500ms", "scrape_timeout": "450ms", "metrics_path": "/gz"}),
    );
    *h.server.body.lock() = "zipped_total 42\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(1.0));
    assert_eq!(value(&b, "zipped_total"), Some(42.0));
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert!(hdrs
        .get("accept-encoding")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("gzip"));

    let h = Harness::start(
        json!({"scrape_interval": "500ms", "scrape_timeout": "450ms", "metrics_path": "/gz", "gzip": false}),
    );
    *h.server.body.lock() = "plain_total 7\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "plain_total"), Some(7.0));
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert_eq!(hdrs.get("accept-encoding").unwrap(), "identity");
}

#[test]
fn reconfigure_keeps_loops_unless_scrape_settings_change() {
    let base = json!({"scrape_interval": "500ms", "scrape_timeout": "450ms"});
    let mut h = Harness::start(base.clone());
    *h.server.body.lock() = "m 1\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "scrape_series_added"), Some(1.0));

    // Only target relabeling changes, and the target survives it: the loop
    // (and its series cache) keeps running.
    let mut keep = base.clone();
    keep["relabel_configs"] =
        json!([{"source_labels": ["env"], "regex": "prod", "action": "drop"}]);
    assert!(h.reconfigure(keep));
    for _ in 0..2 {
        let b = h.next_batch();
        assert_eq!(value(&b, "scrape_series_added"), Some(0.0));
    }

    // Metric relabeling changes: loops restart with the new rules.
    let mut changed = base.clone();
    changed["metric_relabel_configs"] = json!([{"target_label": "tier", "replacement": "gold"}]);
    assert!(h.reconfigure(changed));
    let b = loop {
        let b = h.next_batch();
        if b.samples.iter().any(|s| s.labels.get("tier").is_some()) {
            break b;
        }
    };
    assert_eq!(value(&b, "scrape_series_added"), Some(1.0));
    let m = b
        .samples
        .iter()
        .find(|s| s.labels.metric_name() == Some("m"))
        .unwrap();
    assert_eq!(m.labels.get("tier"), Some("gold"));
    assert!(!m.value.is_nan());

    // Target relabeling now drops the target: it goes away with stale
    // markers and shows up as dropped.
    let mut drop_all = base;
    drop_all["relabel_configs"] =
        json!([{"source_labels": ["env"], "regex": "test", "action": "drop"}]);
    assert!(h.reconfigure(drop_all));
    let b = loop {
        let b = h.next_batch();
        if b.samples.iter().all(|s| is_stale_nan(s.value)) {
            break b;
        }
    };
    assert!(stale_names(&b).contains(&"up".to_string()));
    let view = &h.targets.all()[0].1;
    assert!(view.targets().is_empty());
    assert_eq!(view.dropped_targets().len(), 1);
    h.stop();
}

#[test]
fn tls_with_a_private_ca_and_server_name() {
    let scrape = |tls: serde_json::Value| {
        let h = Harness::start(json!({
            "scrape_interval": "500ms", "scrape_timeout": "450ms",
            "scheme": "https", "tls_config": tls
        }));
        *h.server.body.lock() = "secure_total 1\n".into();
        let addr = h.spawn_tls_server();
        h.set_targets(&[&addr]);
        let b = h.next_batch();
        let err = h.targets.all()[0].1.targets()[0].last_error.clone();
        (value(&b, "up"), value(&b, "secure_total"), err)
    };
    // The certificate names panoptes.test, the URL 127.0.0.1: verification
    // against the URL fails, against server_name succeeds.
    let (up, _, err) = scrape(json!({"ca_file": tls_path("ca.crt")}));
    assert_eq!(up, Some(0.0));
    assert!(!err.is_empty());
    let (up, v, err) =
        scrape(json!({"ca_file": tls_path("ca.crt"), "server_name": "panoptes.test"}));
    assert_eq!((up, v), (Some(1.0), Some(1.0)), "{err}");
    // Without the CA the certificate is unknown, unless verification is off.
    let (up, _, _) = scrape(json!({"server_name": "panoptes.test"}));
    assert_eq!(up, Some(0.0));
    let (up, v, err) = scrape(json!({"insecure_skip_verify": true}));
    assert_eq!((up, v), (Some(1.0), Some(1.0)), "{err}");
}

#[test]
fn a_stopped_exporter_refuses_connections_and_is_down() {
    let h = Harness::start(json!({"scrape_interval": "500ms", "scrape_timeout": "450ms"}));
    // A port that was free a moment ago: nothing listens on it any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    h.set_targets(&[&gone]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    assert_eq!(value(&b, "scrape_samples_scraped"), Some(0.0));
    let t = &h.targets.all()[0].1.targets()[0];
    assert_eq!(t.health, TargetHealth::Down);
    assert!(
        t.last_error
            .starts_with(&format!("Get \"http://{gone}/metrics\"")),
        "{}",
        t.last_error
    );
    assert!(
        t.last_error.to_lowercase().contains("refused"),
        "{}",
        t.last_error
    );
}

#[test]
fn redirects_are_followed_up_to_ten() {
    // Ten hops (301, 302, 303, 307, 308, with relative Locations), all on
    // the same host and port: the scrape succeeds and keeps its headers.
    let h = Harness::start(json!({
        "scrape_interval": "500ms", "scrape_timeout": "450ms",
        "metrics_path": "/redirect/10",
        "authorization": {"credentials": "s3cret"}
    }));
    *h.server.body.lock() = "redirected_total 1\n".into();
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    let err = h.targets.all()[0].1.targets()[0].last_error.clone();
    assert_eq!(value(&b, "up"), Some(1.0), "{err}");
    assert_eq!(value(&b, "redirected_total"), Some(1.0));
    let hdrs = h.server.headers.lock().clone().unwrap();
    assert_eq!(hdrs.get("authorization").unwrap(), "Bearer s3cret");
    assert_eq!(
        hdrs.get("accept").unwrap().to_str().unwrap(),
        panoptes_exposition::SCRAPE_ACCEPT_HEADER
    );
    assert_eq!(
        hdrs.get("x-prometheus-scrape-timeout-seconds").unwrap(),
        "0.45"
    );
    assert_eq!(
        hdrs.get("referer").unwrap().to_str().unwrap(),
        format!("http://{}/redirect/1", h.addr)
    );

    // An eleventh hop is one too many.
    let h = Harness::start(json!({
        "scrape_interval": "500ms", "scrape_timeout": "450ms",
        "metrics_path": "/redirect/11"
    }));
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    let t = &h.targets.all()[0].1.targets()[0];
    assert_eq!(
        t.last_error,
        format!(
            "Get \"http://{}/redirect/11\": stopped after 10 redirects",
            h.addr
        )
    );
}

#[test]
fn credentials_stay_behind_when_a_redirect_leaves_the_host() {
    let h = Harness::start(json!({
        "scrape_interval": "500ms", "scrape_timeout": "450ms",
        "metrics_path": "/away",
        "basic_auth": {"username": "u", "password": "p"}
    }));
    *h.server.body.lock() = "m 1\n".into();
    // First to the same host and port: basic auth goes along.
    *h.server.redirect_to.lock() = format!("http://{}/metrics", h.addr);
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(1.0));
    let hdrs = h.server.headers.lock().take().unwrap();
    assert_eq!(hdrs.get("authorization").unwrap(), "Basic dTpw");

    // Then to another port: same IP, but another host:port for Go.
    let other = h.spawn_second_server();
    *h.server.redirect_to.lock() = format!("http://{other}/metrics");
    let hdrs = loop {
        let b = h.next_batch();
        assert_eq!(value(&b, "up"), Some(1.0));
        let hdrs = h.server.headers.lock().clone().unwrap();
        if hdrs.get("host").unwrap().to_str().unwrap() == other {
            break hdrs;
        }
    };
    assert!(hdrs.get("authorization").is_none(), "{hdrs:?}");
    assert_eq!(
        hdrs.get("referer").unwrap().to_str().unwrap(),
        format!("http://{}/away", h.addr)
    );
}

#[test]
fn a_1_mb_body_is_read_whole_through_the_capped_read_buffer() {
    let mut body = String::new();
    for i in 0..25_000 {
        body.push_str(&format!(
            "big_body_series{{i=\"{i:06}\",pad=\"xxxxxxxx\"}} {i}\n"
        ));
    }
    assert!(body.len() > 1 << 20);
    for path in ["/metrics", "/gz"] {
        let h = Harness::start(json!({
            "scrape_interval": "2s", "scrape_timeout": "1900ms", "metrics_path": path
        }));
        *h.server.body.lock() = body.clone();
        h.set_targets(&[&h.addr]);
        let b = h.next_batch();
        let err = h.targets.all()[0].1.targets()[0].last_error.clone();
        assert_eq!(value(&b, "up"), Some(1.0), "{path}: {err}");
        assert_eq!(value(&b, "scrape_samples_scraped"), Some(25_000.0));
        assert!(b
            .samples
            .iter()
            .any(|s| s.labels.get("i") == Some("024999") && s.value == 24_999.0));
    }
}

#[test]
fn body_size_limit_counts_gzipped_bodies_decompressed() {
    // 220 KB that compresses to about 1 KB.
    let h = Harness::start(json!({
        "scrape_interval": "500ms", "scrape_timeout": "450ms",
        "metrics_path": "/gz", "body_size_limit": "64KB"
    }));
    *h.server.body.lock() = "compressible_series 1\n".repeat(10_000);
    h.set_targets(&[&h.addr]);
    let b = h.next_batch();
    assert_eq!(value(&b, "up"), Some(0.0));
    let t = &h.targets.all()[0].1.targets()[0];
    assert_eq!(
        t.last_error, "body size limit exceeded (limit: 65536 bytes)",
        "{}",
        t.last_error
    );
}
