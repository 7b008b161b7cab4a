"""push_ingest end to end: the panoptes binary side by side with Debian's
prometheus-pushgateway 1.5.1 (the same script of good and bad pushes gives
the same status codes and /metrics; testdata/push/compare.py), the seed's
curl one-liner, and pushed values flowing through the pipeline into the
store and the query API."""
import json, os, subprocess, sys, tempfile, time, urllib.parse

from harness import check, free_port, http_get, start, stop, wait_for, wait_http

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PIPELINE = """
global: {{scrape_interval: 1s}}
stages:
  push:
    kind: push_ingest
    listen: 127.0.0.1:{push_port}
    enable_admin_api: true
    interval: 500ms
  tsdb:
    kind: store
    inputs: [push]
  api:
    kind: api
    store: tsdb
"""


def run(binary):
    d = tempfile.mkdtemp(prefix="panoptes-interop-push-")
    pgw_port, push_port, port = free_port(), free_port(), free_port()
    pgw = start(["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{pgw_port}",
                 "--web.enable-admin-api", "--persistence.file="], log=os.path.join(d, "pgw.log"))
    with open(os.path.join(d, "p.yaml"), "w") as f:
        f.write(PIPELINE.format(push_port=push_port))
    pan = start([binary, "run", "p.yaml", "--listen", f"127.0.0.1:{port}"], cwd=d,
                log=os.path.join(d, "panoptes.log"))
    wait_http(f"http://127.0.0.1:{pgw_port}/-/ready")
    wait_http(f"http://127.0.0.1:{push_port}/-/ready")
    base = f"http://127.0.0.1:{port}"

    def side_by_side():
        r = subprocess.run([sys.executable, os.path.join(REPO, "testdata/push/compare.py"),
                            "--pushgateway", f"http://127.0.0.1:{pgw_port}",
                            "--panoptes", f"http://127.0.0.1:{push_port}"],
                           capture_output=True, text=True, timeout=120)
        print(r.stdout[-3000:])
        assert r.returncode == 0, r.stderr[-3000:]

    def curl_push_reaches_the_store():
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "@-",
                            f"http://127.0.0.1:{push_port}/metrics/job/some_job"],
                           input="some_metric 3.14\n", capture_output=True, text=True, timeout=20)
        assert r.stdout == "200", r.stdout + r.stderr
        q = urllib.parse.quote('some_metric{job="some_job"}')

        def stored():
            _, body = http_get(f"{base}/api/v1/query?query={q}")
            res = json.loads(body)["data"]["result"]
            return res and res[0]["value"][1] == "3.14"
        wait_for("pushed value queryable", stored, timeout=20)
        q = urllib.parse.quote('time() - push_time_seconds{job="some_job"}')
        _, body = http_get(f"{base}/api/v1/query?query={q}")
        age = float(json.loads(body)["data"]["result"][0]["value"][1])
        assert 0 <= age < 60, age

    def python_client():
        code = (
            "from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, pushadd_to_gateway, delete_from_gateway\n"
            "r = CollectorRegistry()\n"
            "g = Gauge('job_last_success_unixtime', 'Last success', registry=r)\n"
            "g.set_to_current_time()\n"
            f"push_to_gateway('127.0.0.1:{push_port}', job='batch', registry=r, grouping_key={{'path': 'a/b'}})\n"
            f"pushadd_to_gateway('127.0.0.1:{push_port}', job='batch', registry=r, grouping_key={{'path': 'a/b'}})\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
        q = urllib.parse.quote('job_last_success_unixtime{job="batch",path="a/b"}')
        wait_for("python client push stored", lambda: json.loads(http_get(f"{base}/api/v1/query?query={q}")[1])["data"]["result"], timeout=20)
        subprocess.run([sys.executable, "-c",
                        f"from prometheus_client import delete_from_gateway\ndelete_from_gateway('127.0.0.1:{push_port}', job='batch', grouping_key={{'path': 'a/b'}})\n"],
                       check=True, timeout=30)
        _, body = http_get(f"http://127.0.0.1:{push_port}/api/v1/metrics")
        groups = json.loads(body)["data"]
        assert not any(g["labels"].get("job") == "batch" for g in groups), groups

    check("push: same status codes and /metrics as pushgateway 1.5.1 (compare.py)", side_by_side)
    check("push: curl one-liner reaches the store; time() - push_time_seconds", curl_push_reaches_the_store)
    check("push: python client push/pushadd/delete with a base64 grouping key", python_client)
    check("push: SIGTERM shuts down cleanly", lambda: (lambda c: c == 0 or (_ for _ in ()).throw(AssertionError(c)))(stop(pan)))
    stop(pgw)
