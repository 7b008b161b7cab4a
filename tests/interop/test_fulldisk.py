"""The store on a disk that fills up, for real: the data directory is a small
tmpfs; a filler file takes the last free byte while Panoptes ingests. Appends
must then fail with a clear error and a metric, reads must go on, ingestion
must resume by itself once the filler is deleted, and a restart on the same
directory must replay everything accepted. Needs root to mount the tmpfs;
without it the check says so and is skipped."""
import json, os, subprocess, tempfile, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import check, free_port, http_get, start, stop, wait_for, wait_http

SERIES = 2000

PIPELINE = """
global: {{scrape_interval: 200ms, scrape_timeout: 190ms}}
stages:
  targets:
    kind: discovery
    static_configs: [{{targets: ["127.0.0.1:{target_port}"]}}]
  scrape:
    kind: scrape
    inputs: [targets]
    job_name: fill
  tsdb:
    kind: store
    inputs: [scrape]
    path: {data}
  api:
    kind: api
    store: tsdb
"""


class Target(BaseHTTPRequestHandler):
    tick = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        Target.tick += 1
        k = Target.tick
        body = "".join(f'fill_bytes_total{{n="{i}"}} {k * 1000 + (i * 7919 + k * 104729) % 997}\n'
                       for i in range(SERIES)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def metric(base, name):
    _, body = http_get(f"{base}/metrics")
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def query(base, q):
    _, body = http_get(f"{base}/api/v1/query?query={urllib.parse.quote(q)}")
    return json.loads(body)


def fill(path):
    """Writes until the disk is full; returns the bytes written."""
    n = 0
    chunk = b"\0" * (256 * 1024)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError:
                break
        # The last partial chunks, byte-sized down to nothing left.
        size = 4096
        while size >= 1:
            try:
                n += f.write(b"\0" * size)
            except OSError:
                size //= 2
    return n


def run(binary):
    d = tempfile.mkdtemp(prefix="panoptes-interop-fulldisk-")
    mnt = os.path.join(d, "disk")
    os.mkdir(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"SKIP fulldisk: cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); run as root")
        return
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = os.path.join(mnt, "data")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cfg = os.path.join(d, "p.yaml")
    with open(cfg, "w") as f:
        f.write(PIPELINE.format(target_port=server.server_address[1], data=data))
    log = os.path.join(d, "panoptes.log")
    filler = os.path.join(mnt, "filler")
    pan = None
    try:
        pan = start([binary, "run", cfg, "--listen", f"127.0.0.1:{port}"], cwd=d, log=log)
        wait_http(f"{base}/-/ready")

        state = {}

        def full_disk_fails_appends_and_keeps_reads():
            wait_for("samples stored", lambda: metric(base, "panoptes_tsdb_head_samples_appended_total") > SERIES * 3)
            state["filled"] = fill(filler)
            wait_for("append failures counted",
                     lambda: metric(base, "panoptes_tsdb_append_failures_total") > 0, timeout=30)
            failed_before = metric(base, "panoptes_tsdb_append_failures_total")
            time.sleep(1)
            assert metric(base, "panoptes_tsdb_append_failures_total") > failed_before, "appends keep failing while full"
            with open(log) as f:
                text = f.read()
            assert "No space left on device" in text, "the log names the cause"
            assert "append failed" in text
            # Reads go on over what was stored.
            res = query(base, "count(fill_bytes_total)")
            assert res["status"] == "success" and res["data"]["result"][0]["value"][1] == str(SERIES), res
            code, _ = http_get(f"{base}/-/healthy")
            assert code == 200
            state["before_free"] = query(base, "max(timestamp(fill_bytes_total))")["data"]["result"][0]["value"][1]

        def appends_resume_when_space_returns():
            os.remove(filler)
            appended = metric(base, "panoptes_tsdb_head_samples_appended_total")
            wait_for("appends resume",
                     lambda: metric(base, "panoptes_tsdb_head_samples_appended_total") > appended + SERIES * 3,
                     timeout=30)
            failures = metric(base, "panoptes_tsdb_append_failures_total")
            time.sleep(1.5)
            assert metric(base, "panoptes_tsdb_append_failures_total") == failures, "no more failures with space"
            now = query(base, "max(timestamp(fill_bytes_total))")["data"]["result"][0]["value"][1]
            assert float(now) > float(state["before_free"]), (now, state["before_free"])

        def restart_replays_what_was_accepted():
            nonlocal pan
            appended = metric(base, "panoptes_tsdb_head_samples_appended_total")
            stop(pan)
            # Count, from the files alone, what the restarted store holds for
            # one series: nothing accepted may be missing after the replay.
            pan = start([binary, "run", cfg, "--listen", f"127.0.0.1:{port}"], cwd=d, log=log + ".2")
            wait_http(f"{base}/-/ready")
            res = query(base, 'count_over_time(fill_bytes_total{n="0"}[1h])')
            got = float(res["data"]["result"][0]["value"][1])
            # Every scrape gives each series one sample; what was accepted per
            # series is the total over the series count (failed batches are
            # not accepted, so they are not in the total either).
            want = appended / (SERIES + 5)  # + the 5 synthetic series per scrape
            assert got >= want - 0.5, (got, want)
            assert metric(base, "panoptes_tsdb_wal_corruptions_total") == 0

        check("fulldisk: a full disk fails appends with a clear error and a metric; reads go on",
              full_disk_fails_appends_and_keeps_reads)
        check("fulldisk: ingestion resumes by itself when space returns", appends_resume_when_space_returns)
        check("fulldisk: a restart replays everything accepted, with no WAL corruption",
              restart_replays_what_was_accepted)
    finally:
        if pan:
            stop(pan)
        server.shutdown()
        subprocess.run(["umount", mnt], capture_output=True)
