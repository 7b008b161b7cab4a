#!/usr/bin/env python3
"""Reload figure: how long `POST /-/reload` of an unchanged 20-stage pipeline
takes, and proof that it restarts nothing.

Starts `panoptes run` on 127.0.0.1 with a generated 20-stage pipeline
(discovery -> scrape -> a chain of relabel stages -> file), reloads it N times
without changing the file, and prints the server-side reload duration
(/api/v1/status/reload) and what the engine kept. Bounded: N reloads, one
process, killed at the end.

    python3 bench/reload.py [--bin target/release/panoptes] [--reloads 50]
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pipeline(stages):
    lines = ["global: {scrape_interval: 1s, scrape_timeout: 500ms}", "stages:",
             "  targets:", "    kind: discovery",
             "    static_configs: [{targets: ['127.0.0.1:1'], labels: {job: bench}}]",
             "  scrape:", "    kind: scrape", "    inputs: [targets]"]
    prev = "scrape"
    for i in range(stages - 3):
        lines += [f"  r{i}:", "    kind: relabel", f"    inputs: [{prev}]",
                  f"    rules: [{{action: replace, target_label: step{i}, replacement: '{i}'}}]"]
        prev = f"r{i}"
    lines += ["  out:", "    kind: file", f"    inputs: [{prev}]", "    path: out.txt"]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/panoptes")
    ap.add_argument("--reloads", type=int, default=50)
    ap.add_argument("--stages", type=int, default=20)
    a = ap.parse_args()
    binary = os.path.abspath(a.bin)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "p.yaml"), "w") as f:
            f.write(pipeline(a.stages))
        port = free_port()
        proc = subprocess.Popen([binary, "run", "p.yaml", "--listen", f"127.0.0.1:{port}",
                                 "--log.level", "warn"], cwd=d)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/-/ready", timeout=1)
                    break
                except Exception:
                    time.sleep(0.1)
            server, client, reports = [], [], set()
            for _ in range(a.reloads):
                t = time.perf_counter()
                body = urllib.request.urlopen(urllib.request.Request(base + "/-/reload", method="POST"), timeout=10).read().decode()
                client.append((time.perf_counter() - t) * 1000)
                st = json.load(urllib.request.urlopen(base + "/api/v1/status/reload", timeout=5))["data"]
                server.append(st["last_duration_seconds"] * 1000)
                reports.add(st["last_report"])
            stages = json.load(urllib.request.urlopen(base + "/api/v1/status/stages", timeout=5))["data"]
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    print(f"stages: {len(stages)}; reloads: {a.reloads}; engine reports: {sorted(reports)}")
    q = lambda xs: statistics.quantiles(xs, n=100)
    print(f"reload (server side, ms): median {statistics.median(server):.3f}  p99 {q(server)[98]:.3f}  max {max(server):.3f}")
    print(f"reload (HTTP round trip, ms): median {statistics.median(client):.3f}  max {max(client):.3f}")
    ok = reports == {f"kept={len(stages)} reconfigured=0 rebuilt=0 added=0 removed=0"} and max(server) < 50
    print("PASS: unchanged reload restarts nothing and stays under 50 ms" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
