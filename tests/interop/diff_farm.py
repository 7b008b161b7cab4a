"""Deterministic scrape target for the differential PromQL test.

One `DiffFarm` is an HTTP target on 127.0.0.1 that serves Prometheus text
format (0.0.4) with an EXPLICIT timestamp on every sample. It advances one
tick per scrape of /metrics, so a scraper that scrapes it `ticks` times stores
exactly the sample stream `body(0) .. body(ticks-1)` whatever its own timing.
The differential test runs two farms built from the same seed and epoch, one
per system (Panoptes and Prometheus 2.42): both stores then hold the same
samples, and the test checks that first by comparing raw range vectors.
After the last tick the farm answers an empty body: no new samples, and no
staleness markers either (Prometheus writes none for series that carried
explicit timestamps), so the stored data stays identical.

Timestamps: tick k of a family is stamped
    epoch_ms + k * step_ms + frac + jitter(k)
with `frac` in 137..536 ms (job "db": 437..836 ms). No sample ever sits on a
whole second nor on .900 s: the test evaluates at `epoch + n + 0.9 s` and
uses whole-second ranges, offsets and subquery steps, so no sample is ever on
a window's left boundary (Prometheus 3.x made range and lookback windows
left-open; 2.42 has them closed) and no subquery step lands on one either.

Counters are 0 on tick 0 (a process that just started): Prometheus 2.51+
(so 3.x) applies rate()'s "do not extrapolate below zero" limit after the
"series starts inside the window" decision, 2.42 before it; with a first
value of 0 both give the same answer, and this deliberate change stays out
of the comparison.

What the families cover: counters with resets (instance app-3 restarts at
tick 40, app-2 at tick 71), a counter that never moves, float counters,
big and negative gauges, NaN/±Inf/-0/tiny/huge values, classic histograms
(`le` written in the canonical float form "1.0", "+Inf" so that 3.x's `le`
normalisation at ingestion cannot make the two stores differ), one whose
buckets now and then are not monotonic, one with only a +Inf bucket, and a
summary,
an info metric for group_left joins, a gauge whose series can never tie
(worker_load: topk/bottomk/sort do not define an order among equal values), a series that goes away for longer
than the 5m lookback and comes back, a short-lived series, labels made for
label_replace/label_join, and label values with characters that need
escaping. Every series carries its own `job` and `instance` (scrape with
honor_labels: true) so the two farms' different ports do not show.

Standalone: python3 diff_farm.py --port 9911 --ticks 90 --seed 1 --epoch 1700000000
(prints tick bodies on demand; for debugging the data set).
"""
import argparse
import math
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STEP_MS = 15_000
TICKS = 90

LAT_LE = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "+Inf"]
API_INSTANCES = ["app-1:8080", "app-2:8080", "app-3:8080"]
DB_INSTANCES = ["db-1:5432", "db-2:5432"]
NODE_INSTANCES = ["node-1:9100", "node-2:9100"]
WORKERS = ["w-1", "w-2", "w-3", "w-4", "w-5"]
# (method, handler, code, mean requests per tick); GET / 500 on app-1 never moves
REQ_COMBOS = [("GET", "/", "200", 50), ("GET", "/", "500", 1), ("POST", "/login", "200", 10),
              ("POST", "/login", "401", 2), ("GET", "/static", "404", 3)]
RESTART_AT = {"app-3:8080": 40, "app-2:8080": 71, "db-2:5432": 55}
GAP = range(30, 60)        # job_heartbeat is absent on these ticks (450 s > 5m lookback)
SHORT_LIVED = range(10, 25)  # short_lived_total exists only on these ticks


def fmt(v):
    """Text-format float: Go-compatible specials, shortest round-trip repr otherwise."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0 and math.copysign(1, v) < 0:
        return "-0"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def esc(v):
    return v.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def series(name, labels, value, ts):
    ls = ",".join('%s="%s"' % (k, esc(v)) for k, v in labels)
    return "%s{%s} %s %d\n" % (name, ls, fmt(value), ts)


class Model:
    """The whole data set, generated tick by tick from one seed."""

    def __init__(self, seed, epoch_ms):
        self.rng = random.Random(seed)
        self.epoch_ms = epoch_ms
        self.req = {}      # (instance, method, handler, code) -> count
        self.cpu = {}      # instance -> seconds
        self.hist = {}     # (instance, handler) -> (bucket counts list, sum, count)
        self.summ = {}     # instance -> (sum, count)
        self.mem = {i: 8_000_000_000 + 1_000_000_000 * n for n, i in enumerate(NODE_INSTANCES)}
        self.temp = {(i, s): base for i in NODE_INSTANCES
                     for s, base in (("cpu", 55.0), ("ambient", 21.5), ("outdoor", -4.25))}
        self.queue = {i: 5 for i in API_INSTANCES}
        self.short = 0
        self.broken = [0] * 4  # cumulative counts of broken_duration_seconds' 4 buckets

    def ts(self, k, job):
        frac = 137 + (k * 7919) % 400
        if job == "db":
            frac += 300
        return self.epoch_ms + k * STEP_MS + frac

    def body(self, k):
        """Exposition of tick k; must be called for k = 0, 1, 2, ... in order."""
        r = self.rng
        out = []
        for inst, at in RESTART_AT.items():
            if k == at:  # the process restarted: its counters start again from zero
                for key in [x for x in self.req if x[0] == inst]:
                    self.req[key] = 0
                self.cpu.pop(inst, None)
                for key in [x for x in self.hist if x[0] == inst]:
                    del self.hist[key]
                self.summ.pop(inst, None)

        t = self.ts(k, "api")
        out.append("# HELP http_requests_total Requests by method, handler and code.\n"
                   "# TYPE http_requests_total counter\n")
        for n, inst in enumerate(API_INSTANCES):
            for method, handler, code, mean in REQ_COMBOS:
                key = (inst, method, handler, code)
                inc = 0 if (inst == "app-1:8080" and code == "500") else r.randint(0, 2 * mean * (n + 1))
                if k == 0:
                    inc = 0
                self.req[key] = self.req.get(key, 0) + inc
                out.append(series("http_requests_total", [("code", code), ("handler", handler),
                                  ("instance", inst), ("job", "api"), ("method", method)], self.req[key], t))

        out.append("# TYPE process_cpu_seconds_total counter\n")
        for inst in API_INSTANCES + DB_INSTANCES:
            job = "db" if inst in DB_INSTANCES else "api"
            inc = r.randint(1, 300) / 100
            self.cpu[inst] = round(self.cpu.get(inst, 0.0) + (0 if k == 0 else inc), 2)
            out.append(series("process_cpu_seconds_total", [("instance", inst), ("job", job)],
                              self.cpu[inst], self.ts(k, job)))

        out.append("# TYPE queue_depth gauge\n")
        for inst in API_INSTANCES:
            self.queue[inst] = max(0, min(20, self.queue[inst] + r.randint(-3, 3)))
            out.append(series("queue_depth", [("instance", inst), ("job", "api")], self.queue[inst], t))

        out.append("# TYPE worker_load gauge\n")
        for n, w in enumerate(WORKERS):
            # the tenths digit is the worker's own, so two workers never tie
            out.append(series("worker_load", [("instance", w), ("job", "worker")],
                              r.randint(0, 40) + (n + 1) / 10, t))

        out.append("# TYPE build_info gauge\n")
        for inst, ver in zip(API_INSTANCES, ["1.2.3", "1.2.3", "1.3.0"]):
            out.append(series("build_info", [("instance", inst), ("job", "api"),
                              ("revision", "r" + ver.replace(".", "")), ("version", ver)], 1, t))

        out.append("# TYPE request_duration_seconds histogram\n")
        for n, inst in enumerate(API_INSTANCES):
            for handler, scale in (("/", 0.08), ("/login", 0.6)):
                buckets, total, count = self.hist.get((inst, handler), ([0] * len(LAT_LE), 0.0, 0))
                buckets = list(buckets)
                for _ in range(0 if k == 0 else r.randint(0, 30 * (n + 1))):
                    v = r.expovariate(1 / scale)
                    total += v
                    count += 1
                    for i, le in enumerate(LAT_LE):
                        if v <= float(le):
                            buckets[i] += 1
                self.hist[(inst, handler)] = (buckets, total, count)
                base = [("handler", handler), ("instance", inst), ("job", "api")]
                for le, c in zip(LAT_LE, buckets):
                    out.append(series("request_duration_seconds_bucket", base + [("le", le)], c, t))
                out.append(series("request_duration_seconds_sum", base, round(total, 6), t))
                out.append(series("request_duration_seconds_count", base, count, t))

        # A histogram whose buckets are not monotonic now and then (as when the
        # buckets are read while being updated) and one with only the +Inf bucket.
        out.append("# TYPE broken_duration_seconds histogram\n")
        if k > 0:
            self.broken = [b + r.randint(0, 5) for b in self.broken]
            self.broken = [max(self.broken[:i + 1]) for i in range(4)]
        shown = list(self.broken)
        if k % 5 == 2:
            shown[1] = shown[0] - r.randint(1, 3)  # dips below the 0.1 bucket
        for le, c in zip(["0.1", "0.5", "1.0", "+Inf"], shown):
            out.append(series("broken_duration_seconds_bucket", [("instance", "app-1:8080"), ("job", "api"),
                                                                 ("le", le)], max(c, 0), t))
        out.append(series("broken_duration_seconds_count", [("instance", "app-1:8080"), ("job", "api")],
                          self.broken[3], t))
        out.append("# TYPE inf_only_seconds histogram\n")
        out.append(series("inf_only_seconds_bucket", [("instance", "app-1:8080"), ("job", "api"), ("le", "+Inf")],
                          3 * k, t))

        out.append("# TYPE rpc_duration_seconds summary\n")
        for inst in DB_INSTANCES:
            tdb = self.ts(k, "db")
            total, count = self.summ.get(inst, (0.0, 0))
            obs = sorted(r.lognormvariate(-3, 0.7) for _ in range(r.randint(5, 40)))
            if k > 0:
                total, count = total + sum(obs), count + len(obs)
            self.summ[inst] = (total, count)
            base = [("instance", inst), ("job", "db")]
            for q in ("0.5", "0.9", "0.99"):
                out.append(series("rpc_duration_seconds", base + [("quantile", q)],
                                  round(obs[min(len(obs) - 1, int(float(q) * len(obs)))], 6), tdb))
            out.append(series("rpc_duration_seconds_sum", base, round(total, 6), tdb))
            out.append(series("rpc_duration_seconds_count", base, count, tdb))

        out.append("# TYPE node_memory_free_bytes gauge\n")
        for inst in NODE_INSTANCES:
            self.mem[inst] += r.randint(-50, 50) * 1_000_000
            out.append(series("node_memory_free_bytes", [("instance", inst), ("job", "node")], self.mem[inst], t))
        out.append("# TYPE node_memory_total_bytes gauge\n")
        for inst in NODE_INSTANCES:
            out.append(series("node_memory_total_bytes", [("instance", inst), ("job", "node")], 17179869184, t))
        out.append("# TYPE temperature_celsius gauge\n")
        for (inst, sensor), v in sorted(self.temp.items()):
            v = round(v + r.randint(-40, 40) / 100, 2)
            self.temp[(inst, sensor)] = v
            out.append(series("temperature_celsius", [("instance", inst), ("job", "node"), ("sensor", sensor)], v, t))

        out.append("# TYPE weird_value gauge\n")
        weird = [("nan", float("nan")), ("posinf", float("inf")), ("neginf", float("-inf")),
                 ("mixed", float("nan") if k % 7 == 3 else r.randint(-100, 100) / 4),
                 ("negzero", -0.0), ("tiny", 1.5e-12 * (k + 1)), ("huge", 1e15 + k * 3.0),
                 ("large", 1.25e300 * (1 + k % 3))]
        for kind, v in weird:
            out.append(series("weird_value", [("instance", "edge-1"), ("job", "edge"), ("kind", kind)], v, t))

        if k not in GAP:
            out.append("# TYPE job_heartbeat gauge\n")
            out.append(series("job_heartbeat", [("instance", "batch-1"), ("job", "batch")], k, t))
        out.append("# TYPE batch_last_success_timestamp_seconds gauge\n")
        out.append(series("batch_last_success_timestamp_seconds", [("instance", "batch-1"), ("job", "batch")],
                          (self.epoch_ms + (k // 10) * 10 * STEP_MS) / 1000, t))
        if k in SHORT_LIVED:
            self.short += 0 if k == SHORT_LIVED[0] else r.randint(1, 9)
            out.append("# TYPE short_lived_total counter\n")
            out.append(series("short_lived_total", [("instance", "batch-2"), ("job", "batch")], self.short, t))

        out.append("# TYPE label_test gauge\n")
        for path, src, v in (("/var/lib/data", "a-b-c", 1), ("/home/user", "x-y", 2), ("/", "single", 3)):
            out.append(series("label_test", [("instance", "m-1"), ("job", "misc"), ("path", path),
                              ("quote", 'say "hi"\\ok'), ("src", src)], v + k % 2, t))
        return "".join(out)


class DiffFarm:
    """One target: serves tick k on the k-th scrape of /metrics, then empty bodies."""

    def __init__(self, port, seed, epoch_ms, ticks=TICKS):
        self.model = Model(seed, epoch_ms)
        self.ticks = ticks
        self.served = 0
        self.lock = threading.Lock()
        farm = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                with farm.lock:
                    if farm.served < farm.ticks:
                        body = farm.model.body(farm.served).encode()
                        farm.served += 1
                    else:
                        body = b""
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):  # keep the test output readable
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def done(self):
        with self.lock:
            return self.served >= self.ticks

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ticks", type=int, default=TICKS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epoch", type=int, default=1_700_000_000, help="epoch, seconds")
    ap.add_argument("--print", type=int, default=-1, help="print the body of this tick and exit")
    a = ap.parse_args()
    if a.print >= 0:
        m = Model(a.seed, a.epoch * 1000)
        for k in range(a.print + 1):
            b = m.body(k)
        print(b, end="")
        return
    farm = DiffFarm(a.port, a.seed, a.epoch * 1000, a.ticks).start()
    print("serving on 127.0.0.1:%d" % farm.server.server_address[1], flush=True)
    try:
        farm.thread.join()
    except KeyboardInterrupt:
        farm.stop()


if __name__ == "__main__":
    main()
