#!/usr/bin/env python3
"""Scrape-path CPU, side by side: CPU seconds per million samples scraped
from the shared target farm (../shared/bench/targets.py, 50 x 2000 series at
1 s), for

  prometheus-agent   Prometheus 2.42 in agent mode: scrape, parse, relabel,
                     append to its WAL; no head, no blocks, no queries. Its
                     own scrape path plus a WAL: the closest thing to
                     "Prometheus's scrape path alone" the binary offers.
  prometheus         Prometheus 2.42 as a server (scrape to TSDB), the
                     ingest anchor.
  panoptes           Panoptes scraping into its full TSDB (WAL + head), i.e.
                     more work than the agent does.
  panoptes-scrape    Panoptes' scrape stage alone (HTTP, parse, relabel,
                     staleness, batch; the batches go nowhere): the issue's
                     "scrape path" exactly.

Each system gets a fresh farm and data dir, a warm-up, then a measured
window: CPU from /proc/PID/stat, samples from the farm's own count of
scrapes served. Everything on 127.0.0.1, every wait bounded.

  bench/scrape_path.py [--seconds 60] [--warmup 20] [--systems a,b,c]

Needs the Debian package prometheus and a release build of panoptes
(PANOPTES_BIN=path to measure another build).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.environ.get("BENCH_HARNESS", os.path.join(REPO, "..", "shared", "bench"))
TARGETS, SERIES = 50, 2000
BASE_PORT, CONTROL_PORT, LISTEN_PORT = 19500, 19499, 19590
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def farm_stats():
    with urllib.request.urlopen(f"http://127.0.0.1:{CONTROL_PORT}/stats", timeout=5) as r:
        return json.load(r)


def wait_http(url, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def targets():
    return [f"127.0.0.1:{BASE_PORT + i}" for i in range(TARGETS)]


def prometheus_cmd(d, agent):
    cfg = os.path.join(d, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                "scrape_configs:\n  - job_name: farm\n    honor_timestamps: true\n"
                f"    static_configs: [{{targets: {json.dumps(targets())}}}]\n")
    cmd = ["prometheus", f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{LISTEN_PORT}"]
    if agent:
        cmd += ["--enable-feature=agent", f"--storage.agent.path={d}/data"]
    else:
        cmd += [f"--storage.tsdb.path={d}/data"]
    return cmd


def panoptes_cmd(d, scrape_only=False):
    tpl = open(os.path.join(REPO, "bench", "templates", "ingest.yaml")).read()
    if scrape_only:
        tpl = tpl[:tpl.index("  tsdb:")]
    cfg = os.path.join(d, "pipeline.yaml")
    with open(cfg, "w") as f:
        f.write(tpl.replace("{scrape_interval}", "1s").replace("{scrape_timeout}", "1s")
                .replace("{job}", "farm").replace("{targets_yaml}", json.dumps(targets()))
                .replace("{data_dir}", f"{d}/data"))
    binary = os.environ.get("PANOPTES_BIN", os.path.join(REPO, "target", "release", "panoptes"))
    return [binary, "run", cfg, "--listen", f"127.0.0.1:{LISTEN_PORT}", "--data-dir", f"{d}/data",
            "--log.level", "warn"]


def measure(system, seconds, warmup):
    d = tempfile.mkdtemp(prefix=f"bench-scrape-{system}-")
    farm = subprocess.Popen([sys.executable, os.path.join(HARNESS, "targets.py"), "--targets", str(TARGETS),
                             "--series", str(SERIES), "--base-port", str(BASE_PORT),
                             "--control-port", str(CONTROL_PORT),
                             "--max-seconds", str(seconds + warmup + 60)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = None
    try:
        wait_http(f"http://127.0.0.1:{CONTROL_PORT}/stats")
        if system.startswith("panoptes"):
            cmd = panoptes_cmd(d, scrape_only=system == "panoptes-scrape")
        else:
            cmd = prometheus_cmd(d, system == "prometheus-agent")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "log"), "w"))
        wait_http(f"http://127.0.0.1:{LISTEN_PORT}/-/ready")
        time.sleep(warmup)
        c0, s0, t0 = cpu_seconds(proc.pid), farm_stats()["scrapes_total"], time.time()
        time.sleep(seconds)
        c1, s1, t1 = cpu_seconds(proc.pid), farm_stats()["scrapes_total"], time.time()
        samples = (s1 - s0) * SERIES
        return {"system": system, "seconds": round(t1 - t0, 1), "samples_per_s": round(samples / (t1 - t0)),
                "cpu_s_per_million": round((c1 - c0) / (samples / 1e6), 3)}
    finally:
        for p in (proc, farm):
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--systems", default="prometheus-agent,prometheus,panoptes,panoptes-scrape")
    a = ap.parse_args()
    rows = [measure(s, a.seconds, a.warmup) for s in a.systems.split(",")]
    for r in rows:
        print(json.dumps(r), flush=True)
    base = {r["system"]: r["cpu_s_per_million"] for r in rows}
    print("\n| system | samples/s | CPU s per 1M samples | vs Prometheus agent |\n|---|---:|---:|---:|")
    for r in rows:
        ratio = r["cpu_s_per_million"] / base["prometheus-agent"] if "prometheus-agent" in base else float("nan")
        print(f"| {r['system']} | {r['samples_per_s']:,} | {r['cpu_s_per_million']} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
