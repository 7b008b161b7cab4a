//! The query API end to end: a target scraped into the TSDB and queried
//! over Prometheus's HTTP API shapes (query, query_range, series, labels,
//! label values, metadata, format_query, errors, admin endpoints).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{api_pipeline, write, Running, Target};

fn json(p: &Running, path: &str) -> (u16, Value) {
    let (code, body) = p.get(path).expect("GET");
    (
        code,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
    )
}

fn start(admin: bool) -> (Target, Running) {
    let target = Target::start(
        "# HELP demo_requests_total Requests.\n# TYPE demo_requests_total counter\ndemo_requests_total{code=\"200\"} 10\ndemo_requests_total{code=\"500\"} 2\n# TYPE demo_temp gauge\ndemo_temp 21.5\n",
    );
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", &api_pipeline(&target.addr()));
    let extra: &[&str] = if admin { &["--enable-admin-api"] } else { &[] };
    let p = Running::start(dir, "p.yaml", extra);
    p.wait_until(Duration::from_secs(20), "samples stored", |p| {
        p.get("/api/v1/query?query=count(demo_requests_total)")
            .is_some_and(|(c, b)| c == 200 && b.contains("\"2\""))
    });
    (target, p)
}

#[test]
fn query_api_answers_in_prometheus_shapes() {
    let (target, p) = start(false);
    let inst = target.addr();

    let (code, v) = json(&p, "/api/v1/query?query=up");
    assert_eq!(code, 200);
    assert_eq!(v["status"], "success");
    assert_eq!(v["data"]["resultType"], "vector");
    let r = &v["data"]["result"][0];
    assert_eq!(r["metric"]["__name__"], "up");
    assert_eq!(r["metric"]["job"], "demo");
    assert_eq!(r["metric"]["instance"], inst.as_str());
    assert_eq!(r["value"][1], "1");
    assert!(r["value"][0].is_number());

    let (_, v) = json(
        &p,
        "/api/v1/query?query=sum%20by%20(code)%20(demo_requests_total)&time=9999999999",
    );
    assert_eq!(
        v["data"]["result"].as_array().unwrap().len(),
        0,
        "nothing 5m after the last sample"
    );

    let (_, v) = json(&p, "/api/v1/query?query=1%2B1");
    assert_eq!(
        v["data"],
        serde_json::json!({"resultType": "scalar", "result": v["data"]["result"]})
    );
    assert_eq!(v["data"]["result"][1], "2");

    // A few more scrapes, so that a range query over the last seconds has
    // several steps with data.
    std::thread::sleep(Duration::from_millis(1500));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (code, v) = json(
        &p,
        &format!(
            "/api/v1/query_range?query=demo_temp&start={}&end={}&step=0.5",
            now - 5.0,
            now
        ),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["resultType"], "matrix");
    let values = v["data"]["result"][0]["values"].as_array().unwrap();
    assert!(values.len() >= 2, "{v}");
    assert_eq!(values.last().unwrap()[1], "21.5");

    let (_, v) = json(&p, "/api/v1/series?match[]=demo_requests_total");
    let series = v["data"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    assert_eq!(series[0]["code"], "200");

    let (_, v) = json(&p, "/api/v1/labels");
    let names: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for n in ["__name__", "code", "instance", "job"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let (_, v) = json(&p, "/api/v1/label/__name__/values");
    let metrics: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for m in [
        "demo_requests_total",
        "demo_temp",
        "up",
        "scrape_duration_seconds",
    ] {
        assert!(metrics.contains(&m), "{metrics:?}");
    }

    // Metadata from the scraped body, in Prometheus's shape: family ->
    // list of distinct {type, help, unit}.
    let (code, v) = json(&p, "/api/v1/metadata");
    assert_eq!(code, 200);
    assert_eq!(
        v["data"]["demo_requests_total"],
        serde_json::json!([{"type": "counter", "help": "Requests.", "unit": ""}])
    );
    assert_eq!(
        v["data"]["demo_temp"],
        serde_json::json!([{"type": "gauge", "help": "", "unit": ""}])
    );
    let (_, v) = json(&p, "/api/v1/metadata?metric=demo_temp");
    assert_eq!(v["data"].as_object().unwrap().len(), 1);
    let (_, v) = json(&p, "/api/v1/metadata?limit=1");
    assert_eq!(v["data"].as_object().unwrap().len(), 1);

    let (_, v) = json(&p, "/api/v1/format_query?query=sum(rate(x[5m]))by(job)");
    assert_eq!(v["data"], "sum by (job) (rate(x[5m]))");

    // Errors: Prometheus's errorType and HTTP codes.
    let (code, v) = json(&p, "/api/v1/query?query=sum(");
    assert_eq!(code, 400);
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    assert!(v["error"].as_str().unwrap().contains("parse error"), "{v}");
    let (code, v) = json(&p, "/api/v1/query_range?query=up&start=10&end=5&step=1");
    assert_eq!(code, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("end timestamp must not be before start time"),
        "{v}"
    );
    let (code, _) = json(&p, "/api/v1/series");
    assert_eq!(code, 400);
    let (code, v) = json(
        &p,
        "/api/v1/query?query=demo_requests_total%20%2B%20on()%20demo_requests_total",
    );
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["errorType"], "execution");

    // POST form works like GET.
    let resp = reqwest::blocking::Client::new()
        .post(p.url("/api/v1/query"))
        .form(&[("query", "demo_temp * 2")])
        .send()
        .unwrap();
    let v: Value = resp.json().unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "43");

    // Status endpoints Grafana and scripts read.
    let (_, v) = json(&p, "/api/v1/status/buildinfo");
    assert!(v["data"]["version"].is_string());
    let (_, v) = json(&p, "/api/v1/status/config");
    assert!(v["data"]["yaml"].as_str().unwrap().contains("kind: api"));
    let (_, v) = json(&p, "/api/v1/status/flags");
    assert_eq!(v["data"]["web.enable-admin-api"], "false");
    let (_, v) = json(&p, "/api/v1/status/runtimeinfo");
    assert_eq!(v["data"]["reloadConfigSuccess"], true);
    let (_, v) = json(&p, "/api/v1/status/tsdb");
    assert_eq!(v["status"], "success");

    // Admin endpoints are off by default.
    let (code, body) = p.post("/api/v1/admin/tsdb/snapshot");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("admin APIs disabled"));
}

#[test]
fn admin_api_when_enabled() {
    let (_target, p) = start(true);
    let (code, body) = p.post("/api/v1/admin/tsdb/clean_tombstones");
    assert!(
        code == 204 || body.contains("not supported"),
        "{code} {body}"
    );
}
