"""Ingest end to end: the binary scrapes Debian's node exporter and a Python
prometheus_client exporter found through file_sd; the file sink shows their
series with `up 1`; stopping an exporter gives `up 0` and stale markers;
editing the file_sd file while running adds and removes targets."""
import json, os, re, signal, sys, tempfile, time

from harness import check, free_port, http_get, start, stop, wait_for, wait_http

HERE = os.path.dirname(os.path.abspath(__file__))

PIPELINE = """
global: {scrape_interval: 1s, scrape_timeout: 900ms}
stages:
  targets:
    kind: discovery
    file_sd_configs:
      - files: [sd/*.json]
        refresh_interval: 1s
  scrape:
    kind: scrape
    inputs: [targets]
    job_name: interop
  out:
    kind: file
    inputs: [scrape]
    path: out.txt
"""


def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def series_value(ls, name, instance):
    """Last value written for `name{...instance="X"...}`."""
    val = None
    for l in ls:
        if l.startswith(name + "{") and f'instance="{instance}"' in l:
            val = l.rsplit(" ", 2)[1]
    return val


def write_sd(d, targets):
    tmp = os.path.join(d, "sd", ".tmp.json")
    with open(tmp, "w") as f:
        json.dump([{"targets": targets, "labels": {"env": "interop"}}], f)
    os.replace(tmp, os.path.join(d, "sd", "targets.json"))


def run(binary):
    d = tempfile.mkdtemp(prefix="panoptes-interop-ingest-")
    os.makedirs(os.path.join(d, "sd"))
    node_port, py_port, py2_port, port = free_port(), free_port(), free_port(), free_port()
    node = start(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{node_port}",
                  "--collector.disable-defaults", "--collector.cpu", "--collector.meminfo",
                  "--collector.loadavg", "--collector.filesystem"], log=os.path.join(d, "node.log"))
    py = start([sys.executable, os.path.join(HERE, "hello_exporter.py"), str(py_port), "--seconds", "300"])
    wait_http(f"http://127.0.0.1:{node_port}/metrics")
    wait_http(f"http://127.0.0.1:{py_port}/metrics")
    node_t, py_t = f"127.0.0.1:{node_port}", f"127.0.0.1:{py_port}"
    write_sd(d, [node_t, py_t])
    with open(os.path.join(d, "p.yaml"), "w") as f:
        f.write(PIPELINE)
    out = os.path.join(d, "out.txt")
    pan = start([binary, "run", "p.yaml", "--listen", f"127.0.0.1:{port}"], cwd=d, log=os.path.join(d, "panoptes.log"))
    base = f"http://127.0.0.1:{port}"

    def both_up():
        wait_http(base + "/-/ready")
        ls = wait_for("up 1 from both targets", lambda: (
            lambda ls: ls if series_value(ls, "up", node_t) == "1" and series_value(ls, "up", py_t) == "1" else None)(lines(out)))
        text = "\n".join(ls)
        assert re.search(r'^node_cpu_seconds_total\{.*instance="%s".*job="interop".*\} [0-9.e+]+ \d{13}$' % re.escape(node_t), text, re.M), "node_exporter series"
        assert re.search(r'^hello_requests_total\{.*instance="%s".*method="get".*\} ' % re.escape(py_t), text, re.M), "python counter"
        assert re.search(r'^hello_response_size_bytes_bucket\{.*le="1000(\.0)?".*\} ', text, re.M), "python histogram buckets"
        assert re.search(r'^hello_request_latency_seconds_count\{', text, re.M), "python summary"
        assert re.search(r'^hello_inprogress_requests\{', text, re.M), "python gauge"
        assert 'env="interop"' in text, "file_sd group labels attached"
        for name in ["scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling", "scrape_series_added"]:
            assert series_value(ls, name, node_t) is not None, name

    def targets_api():
        _, body = http_get(base + "/api/v1/targets")
        data = json.loads(body)["data"]["activeTargets"]
        healths = {t["labels"]["instance"]: t["health"] for t in data}
        assert healths.get(node_t) == "up" and healths.get(py_t) == "up", healths

    def exporter_stops():
        stop(py)
        wait_for("up 0 for the stopped exporter", lambda: series_value(lines(out), "up", py_t) == "0", timeout=20)
        wait_for("stale markers for its series", lambda: series_value(lines(out), "hello_inprogress_requests", py_t) == "stale", timeout=20)
        _, body = http_get(base + "/api/v1/targets")
        t = [t for t in json.loads(body)["data"]["activeTargets"] if t["labels"]["instance"] == py_t][0]
        assert t["health"] == "down" and t["lastError"], t

    def file_sd_edit():
        py2 = start([sys.executable, os.path.join(HERE, "hello_exporter.py"), str(py2_port), "--seconds", "300"])
        wait_http(f"http://127.0.0.1:{py2_port}/metrics")
        py2_t = f"127.0.0.1:{py2_port}"
        write_sd(d, [py2_t])  # node exporter and the dead exporter leave, a new one comes
        wait_for("new target scraped", lambda: series_value(lines(out), "up", py2_t) == "1", timeout=20)
        wait_for("removed target's series go stale", lambda: series_value(lines(out), "up", node_t) == "stale", timeout=20)
        assert series_value(lines(out), "node_load1", node_t) == "stale"
        stop(py2)

    def clean_shutdown():
        code = stop(pan)
        assert code == 0, f"exit code {code}"

    check("ingest: node exporter and python exporter scraped via file_sd, up 1", both_up)
    check("ingest: /api/v1/targets shows both targets up", targets_api)
    check("ingest: stopped exporter gives up 0, stale markers, lastError", exporter_stops)
    check("ingest: file_sd edit adds and removes targets while running", file_sd_edit)
    check("ingest: SIGTERM shuts down cleanly", clean_shutdown)
    stop(node)
