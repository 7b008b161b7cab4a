"""Differential PromQL test: Panoptes against Debian's Prometheus 2.42 on the
same data, through /api/v1/query and /api/v1/query_range.

Both systems scrape their own copy of the deterministic target of
diff_farm.py (same seed, same epoch; one tick per scrape, explicit
timestamps), so both stores hold the same samples; a first check proves it
by comparing the raw samples. Then every query of promql_queries.txt runs as
an instant query at several times and as a range query at two steps, on
both systems, and the answers must be identical: same HTTP status, same
resultType, same label sets, floats equal within 1e-9 relative (NaN equal to
NaN, ±Inf exact), same timestamps, same errorType for errors (messages are
printed side by side, not compared: they are worded differently on purpose).

What Prometheus 3.x changed on purpose relative to 2.42, and how the test
keeps out of its way (Panoptes follows 3.x):
  * Range and lookback windows are left-open in 3.x ((t-r, t]) and closed in
    2.42 ([t-r, t]). The farm never stamps a sample on a whole second nor on
    x.900 s; every evaluation time is `epoch + n + 0.9 s`, and all ranges,
    offsets, @ times and subquery steps are whole seconds, so no sample and
    no subquery step ever sits on a window's left boundary.
  * `holt_winters` was renamed `double_exponential_smoothing` (and made
    experimental); the 2.x name is only sent as `holt_winters`, which Panoptes
    keeps as an alias.
  * 3.x normalises `le`/`quantile` label values at ingestion ("1" -> "1.0");
    the farm writes them in the normalised form already.
  * 3.x adds `infos` and some new warnings (annotations); warnings and infos
    are printed when they differ but not compared.
  * 3.x functions and aggregations that 2.42 lacks (limitk, limit_ratio,
    sort_by_label, mad_over_time, info, ts_of_*, double_exponential_smoothing,
    duration expressions) are not sent.
  * Series the scrapers make themselves (up, scrape_*) are stamped with the
    scrape's wall-clock time; the farm's epoch lies before the ingest starts,
    so at every evaluation time they lie in the future and no query sees them.
See DELIBERATE_3X_DIFFERENCES and KNOWN_DIFFERENCES below for single queries.

Alone: python3 tests/interop/test_promql_diff.py --bin target/debug/panoptes
Against two systems already loaded from diff_farm.py (to iterate on queries):
  ... --attach http://127.0.0.1:P1,http://127.0.0.1:P2,EPOCH [--only GROUP]
"""
import json, math, os, re, sys, tempfile, time, urllib.error, urllib.parse, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
from diff_farm import DiffFarm, STEP_MS, TICKS  # noqa: E402
from harness import check, free_port, start, stop, wait_for, wait_http  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 4242
REL_TOL = 1e-9

# Instant evaluation times, seconds after the epoch (always x.9, see above):
# early data; inside job_heartbeat's gap, after its lookback expired; just
# after the last tick (~1335.5 s); within 5m of it; more than 5m after it.
INSTANT_TIMES = [300.9, 800.9, 1347.9, 1600.9, 1700.9]
# Range queries: one wide window at 60s, one narrower at a step that cycles
# through odd values with the query's index.
RANGE_WIDE = (60.9, 1700.9, 60)
RANGE_NARROW_STEPS = [7, 15, 37, 90]
RANGE_NARROW = (200.9, 1400.9)

# Queries whose answer differs because Prometheus 3.x changed the semantics on
# purpose (Panoptes follows 3.x). They still run; a difference is printed but
# does not fail, a match is reported so the entry can go.
DELIBERATE_3X_DIFFERENCES = {
    # UTF-8 names (3.0): any UTF-8 string is a valid label name
    'label_replace(queue_depth, "1invalid", "x", "", "")':
        "3.x accepts any UTF-8 label name (name validation scheme UTF-8 by default), so "
        "'1invalid' is a valid destination; 2.42 fails the query (execution, 422)",
    'count_values("1bad", queue_depth)':
        "3.x accepts any UTF-8 label name as count_values' label; 2.42 fails (execution, 422)",
    # rate()/increase() extrapolation at a series' start (prometheus PR #13725, 2.51)
    "rate(sum by (job) (http_requests_total)[5m:30s])":
        "when a series starts inside the window, 3.x first caps the extrapolation to the start at "
        "half an interval and then at the counter's zero point; 2.42 does it the other way round. "
        "The subquery's first point is not 0 here (the farm's own counters start at 0 to stay clear "
        "of this), so the windows at the start of the data differ",
    "rate(http_requests_total[5m:])":
        "same extrapolation change as above: the first 1m subquery point is not 0",
    "increase(weird_value[5m])":
        "same extrapolation change: a gauge does not start at 0 (windows holding the series' start)",
    # 3.x parser additions
    "1_000":
        "3.x accepts underscores in number literals (prometheus PR #12821); 2.42 fails with bad_data",
    "count_over_time(queue_depth[300])":
        "3.x accepts a plain number of seconds as a range (promqltest duration_expression.test: "
        "[1800]); 2.42 fails with bad_data",
    "queue_depth offset 90":
        "3.x accepts a plain number of seconds as an offset; 2.42 fails with bad_data",
    # functions 3.x added (experimental there; Panoptes enables them): 2.42 answers bad_data
    "limitk(1, queue_depth)": "limitk() is new in 3.x",
    'sort_by_label(queue_depth, "instance")': "sort_by_label() is new in 3.x",
    "mad_over_time(queue_depth[5m])": "mad_over_time() is new in 3.x",
    "double_exponential_smoothing(queue_depth[5m], 0.5, 0.5)": "3.x's name for holt_winters()",
    # atan2 drops the metric name in 3.x (promqltest operators.test: `trigy atan2 trigx` -> {})
    "weird_value atan2 weird_value":
        "3.x drops __name__ for atan2 like for the other arithmetic operators; 2.42 keeps it",
    # left-open windows (3.0)
    "max_over_time(avg_over_time(queue_depth[2m:30s])[10m:1m])":
        "the outer subquery evaluates the inner one at whole minutes, so the inner 2m window starts "
        "exactly on an inner 30s step: 3.x leaves it out (left-open), 2.42 keeps it. Kept as the "
        "visible example of the change; the same query with a 125s inner range is compared",
    # Kahan summation (2.50+ for sum/avg, and ±Inf handling in kahanSumInc)
    'sum(weird_value{kind="negzero"})':
        "3.x sums with Kahan compensation and adds the compensation term (+0) at the end, so the sum "
        "of a single -0 is 0; 2.42 returns -0",
    'stddev_over_time(weird_value{kind="large"}[5m])':
        "the squares of 1e300-sized deltas overflow: 3.x's Kahan increment resets its compensation on "
        "±Inf and returns +Inf, 2.42's computes Inf - Inf and returns NaN",
}

# Queries that differ because Panoptes is wrong: known differences to fix.
# They still run; a difference is printed but does not fail the group, and a
# match prints "now matches, remove from KNOWN_DIFFERENCES".
KNOWN_DIFFERENCES = {
}

# Same float, written differently in the JSON answer. A client that parses the
# number gets the same value, so these are counted and printed, not failed.
KNOWN_FORMAT_DIFFERENCES = {
    "last-digit": "a 17-digit value exactly halfway between two shortest texts: Go "
                  "rounds the last digit half-to-even ('…999.62'), Panoptes up ('…999.63')",
}

PROM_CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1m
scrape_configs:
  - job_name: diff
    honor_labels: true
    honor_timestamps: true
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""

PIPELINE = """
global: {{scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1m}}
stages:
  targets:
    kind: discovery
    static_configs:
      - targets: ["127.0.0.1:{port}"]
  scrape:
    kind: scrape
    inputs: [targets]
    job_name: diff
    honor_labels: true
    honor_timestamps: true
  tsdb:
    kind: store
    inputs: [scrape]
  api:
    kind: api
    store: tsdb
"""

# API-level cases beyond PromQL itself: (name, [POST ]path, params); both
# systems must give the same status and errorType (or the same result).
# "@n" is epoch + n seconds, "@RFC3339:n" the same instant as RFC 3339 text.
API_CASES = [
    ("query without query", "/api/v1/query", {}),
    ("query with a bad time", "/api/v1/query", {"query": "1", "time": "yesterday"}),
    ("query with an RFC 3339 time", "/api/v1/query", {"query": "queue_depth", "time": "@RFC3339:800.9"}),
    ("query_range with step 0", "/api/v1/query_range", {"query": "1", "start": "@100.9", "end": "@200.9", "step": "0"}),
    ("query_range with end before start", "/api/v1/query_range", {"query": "1", "start": "@200.9", "end": "@100.9", "step": "10"}),
    ("query_range over 11000 points", "/api/v1/query_range", {"query": "1", "start": "@0.9", "end": "@20000.9", "step": "1"}),
    ("query_range with a duration step", "/api/v1/query_range", {"query": "queue_depth", "start": "@200.9", "end": "@900.9", "step": "1m30s"}),
    ("query_range without step", "/api/v1/query_range", {"query": "1", "start": "@100.9", "end": "@200.9"}),
    ("query_range with a bad step", "/api/v1/query_range", {"query": "1", "start": "@100.9", "end": "@200.9", "step": "abc"}),
    ("query_range with a negative step", "/api/v1/query_range", {"query": "1", "start": "@100.9", "end": "@200.9", "step": "-5"}),
    ("query_range with a fractional step", "/api/v1/query_range", {"query": "time()", "start": "@100.9", "end": "@200.9", "step": "7.5"}),
    ("query_range with RFC 3339 start and float end", "/api/v1/query_range",
     {"query": "rate(http_requests_total[5m])", "start": "@RFC3339:400.9", "end": "@900.9", "step": "60"}),
    ("POST form query", "POST /api/v1/query", {"query": "sum by (instance) (rate(http_requests_total[5m]))", "time": "@800.9"}),
    ("POST form query_range", "POST /api/v1/query_range",
     {"query": "histogram_quantile(0.9, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
      "start": "@300.9", "end": "@1300.9", "step": "30"}),
    ("POST form parse error", "POST /api/v1/query", {"query": "sum(rate(", "time": "@800.9"}),
    ("query with a generous timeout", "/api/v1/query", {"query": "sum(rate(http_requests_total[5m]))", "time": "@800.9",
                                                         "timeout": "30s"}),
    ("query with a bad timeout", "/api/v1/query", {"query": "1", "time": "@800.9", "timeout": "abc"}),
    # What Grafana's Prometheus data source sends (POST forms by default;
    # its health check is an instant `1+1`; the query editor's label, metric
    # and series pickers; exemplars for the panel overlay).
    ("grafana: health check", "POST /api/v1/query", {"query": "1+1", "time": "@800.9"}),
    ("grafana: range panel", "POST /api/v1/query_range",
     {"query": "sum by (method) (rate(http_requests_total[1m]))", "start": "@300", "end": "@1200", "step": "15"}),
    ("grafana: label names", "/api/v1/labels", {"start": "@300", "end": "@1200"}),
    ("grafana: label names of a metric", "POST /api/v1/labels",
     {"match[]": "http_requests_total", "start": "@300", "end": "@1200"}),
    ("grafana: metric names", "/api/v1/label/__name__/values", {"start": "@300", "end": "@1200"}),
    ("grafana: label values of a metric", "/api/v1/label/method/values",
     {"match[]": "http_requests_total", "start": "@300", "end": "@1200"}),
    ("grafana: series", "POST /api/v1/series",
     {"match[]": 'http_requests_total{method="GET"}', "start": "@300", "end": "@1200"}),
    ("grafana: exemplars", "POST /api/v1/query_exemplars",
     {"query": "http_requests_total", "start": "@300", "end": "@1200"}),
    ("metadata of every scraped family", "/api/v1/metadata", {}),
    ("metadata of one family", "/api/v1/metadata", {"metric": "http_requests_total"}),
    ("metadata of an unknown family", "/api/v1/metadata", {"metric": "no_such_metric"}),
    ("query with a timeout it cannot meet", "/api/v1/query",
     # 360k subquery steps: seconds of work for either engine, so a 1ms timeout
     # fires on any machine (a [1h:1s] subquery finished inside 1ms on a fast one).
     {"query": "max(max_over_time(rate(http_requests_total[5m])[1h:10ms]))", "time": "@1400.9", "timeout": "1ms"}),
]

# API cases where Panoptes is wrong (same rules as KNOWN_DIFFERENCES).
KNOWN_API_DIFFERENCES = {
}


def load_queries(path):
    """[(group, [query, ...]), ...] from the queries file."""
    groups = []
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.startswith("## "):
                groups.append((line[3:].strip(), []))
            elif not line.strip() or line.lstrip().startswith("#"):
                continue
            elif not groups:
                raise ValueError(f"{path}: query before the first '## group' line: {line!r}")
            else:
                groups[-1][1].append(line.strip())
    return groups


def expand(query, epoch):
    """T(n) -> epoch + n + 0.9 s: like evaluation times, never a whole second,
    so `x[10m:1m] @ T(n)` cannot put a subquery step on its window's edge."""
    return re.sub(r"T\((-?\d+)\)", lambda m: f"{epoch + int(m.group(1))}.9", query)


def api(base, path, params, timeout=60, post=False):
    """(http status, decoded JSON or None, raw text) — errors are answers too.
    post=True sends the parameters as an urlencoded form body."""
    form = urllib.parse.urlencode(params)
    if post:
        req = urllib.request.Request(base + path, data=form.encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        req = urllib.request.Request(base + path + ("?" + form if params else ""))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    try:
        return status, json.loads(text), text
    except ValueError:
        return status, None, text


def parse_float(s):
    return float(s)  # Python reads "NaN", "+Inf", "-Inf" as Go writes them


def floats_equal(a, b):
    fa, fb = parse_float(a), parse_float(b)
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    if math.isinf(fa) or math.isinf(fb):
        return fa == fb
    if fa == fb:
        return True
    return abs(fa - fb) <= REL_TOL * max(abs(fa), abs(fb))


def ts_ms(t):
    return round(float(t) * 1000)


def labels_key(metric):
    return tuple(sorted(metric.items()))


def format_kind(a, b):
    """Which known way two texts of the same float differ, or None if unknown."""
    if ("e" in a.lower()) != ("e" in b.lower()):
        return "exponent"
    if len(a) == len(b) and a[:-1] == b[:-1]:
        return "last-digit"
    return None


class Formats:
    """Same float, different text: counted per kind; kinds not in
    KNOWN_FORMAT_DIFFERENCES are differences."""
    seen = {}

    @classmethod
    def note(cls, where, a, b, diffs):
        kind = format_kind(a, b)
        if kind in KNOWN_FORMAT_DIFFERENCES:
            example = f"{a!r} (Panoptes) vs {b!r} (Prometheus)"
            entry = cls.seen.setdefault(kind, [0, example])
            entry[0] += 1
            if len(example) < len(entry[1]):
                entry[1] = example
        else:
            diffs.append(f"{where}: same value written differently: {a!r} != {b!r}")


def compare_point(where, pp, qq, diffs):
    """pp from Panoptes, qq from Prometheus: [ts, "value"]."""
    if ts_ms(pp[0]) != ts_ms(qq[0]):
        diffs.append(f"{where}: timestamp {pp[0]} != {qq[0]}")
    if not floats_equal(pp[1], qq[1]):
        diffs.append(f"{where}: value {pp[1]} != {qq[1]}")
    elif parse_float(pp[1]) == parse_float(qq[1]) and pp[1] != qq[1] and not math.isnan(parse_float(pp[1])):
        Formats.note(where, pp[1], qq[1], diffs)


def value_runs(result, rtype):
    """An ordered vector as runs of equal values: [(value, {label sets}), ...].
    Prometheus's sort() is not stable, so equal values may come in any order."""
    runs = []
    for s in result:
        v = parse_float(s["value"][1]) if rtype == "vector" else None
        key = labels_key(s["metric"])
        if runs and (runs[-1][0] == v or (v != v and runs[-1][0] != runs[-1][0])):
            runs[-1][1].add(key)
        else:
            runs.append((v, {key}))
    return runs


def compare_result(rtype, pan, prom, ordered, strict_matrix_order):
    """Differences between two `data.result` of the same resultType."""
    diffs = []
    if rtype in ("scalar", "string"):
        if rtype == "string":
            if ts_ms(pan[0]) != ts_ms(prom[0]) or pan[1] != prom[1]:
                diffs.append(f"string {pan} != {prom}")
        else:
            compare_point("scalar", pan, prom, diffs)
        return diffs
    pk = [labels_key(s["metric"]) for s in pan]
    qk = [labels_key(s["metric"]) for s in prom]
    if sorted(pk) != sorted(qk):
        only_p = sorted(set(pk) - set(qk))
        only_q = sorted(set(qk) - set(pk))
        if only_p:
            diffs.append(f"series only in Panoptes: {[dict(k) for k in only_p][:5]}")
        if only_q:
            diffs.append(f"series only in Prometheus: {[dict(k) for k in only_q][:5]}")
        if len(pk) != len(set(pk)) or len(qk) != len(set(qk)):
            diffs.append(f"duplicate label sets: Panoptes {len(pk)}/{len(set(pk))}, Prometheus {len(qk)}/{len(set(qk))}")
        return diffs
    if ordered and rtype == "vector":
        pr, qr = [r[1] for r in value_runs(pan, rtype)], [r[1] for r in value_runs(prom, rtype)]
        if pr != qr:
            diffs.append(f"order differs: Panoptes {[dict(k) for k in pk][:6]} / Prometheus {[dict(k) for k in qk][:6]}")
    elif strict_matrix_order and pk != qk:
        diffs.append(f"order differs: Panoptes {[dict(k) for k in pk][:6]} / Prometheus {[dict(k) for k in qk][:6]}")
    by_key = {labels_key(s["metric"]): s for s in prom}
    for s in pan:
        k = labels_key(s["metric"])
        q = by_key[k]
        name = "{" + ",".join(f'{a}="{b}"' for a, b in k) + "}"
        if rtype == "vector":
            compare_point(name, s["value"], q["value"], diffs)
        else:
            pv, qv = s.get("values", []), q.get("values", [])
            if [ts_ms(p[0]) for p in pv] != [ts_ms(p[0]) for p in qv]:
                diffs.append(f"{name}: timestamps differ: Panoptes {[p[0] for p in pv][:8]}… ({len(pv)}) / "
                             f"Prometheus {[p[0] for p in qv][:8]}… ({len(qv)})")
                continue
            for p, qq in zip(pv, qv):
                compare_point(name, p, qq, diffs)
            if s.get("histograms") or q.get("histograms"):
                diffs.append(f"{name}: unexpected native histograms in the answer")
    return diffs


def compare_answers(pan, prom, ordered=False, strict_matrix_order=False):
    """(differences, notes): notes are printed, differences fail."""
    (ps, pj, ptext), (qs, qj, qtext) = pan, prom
    diffs, notes = [], []
    if pj is None or qj is None:
        if pj is None:
            diffs.append(f"Panoptes answered non-JSON (HTTP {ps}): {ptext[:200]!r}")
        if qj is None:
            diffs.append(f"Prometheus answered non-JSON (HTTP {qs}): {qtext[:200]!r}")
        return diffs, notes
    if ps != qs:
        diffs.append(f"HTTP status {ps} != {qs}")
    if pj.get("status") != qj.get("status"):
        diffs.append(f"status {pj.get('status')} != {qj.get('status')}: Panoptes {ptext[:300]} / Prometheus {qtext[:300]}")
        return diffs, notes
    if qj.get("status") == "error":
        if pj.get("errorType") != qj.get("errorType"):
            diffs.append(f"errorType {pj.get('errorType')!r} != {qj.get('errorType')!r}")
        notes.append(f"error messages: Panoptes {pj.get('error')!r} / Prometheus {qj.get('error')!r}")
        return diffs, notes
    for key in ("warnings", "infos"):
        if sorted(pj.get(key) or []) != sorted(qj.get(key) or []):
            notes.append(f"{key} differ: Panoptes {pj.get(key)} / Prometheus {qj.get(key)}")
    pd, qd = pj.get("data"), qj.get("data")
    if not (isinstance(qd, dict) and "resultType" in qd):
        # Not a query answer (metadata, labels, ...): the data must be equal.
        if pd != qd:
            diffs.append(f"data differ: Panoptes {json.dumps(pd)[:300]} / Prometheus {json.dumps(qd)[:300]}")
        return diffs, notes
    pd = pd if isinstance(pd, dict) else {}
    if pd.get("resultType") != qd.get("resultType"):
        diffs.append(f"resultType {pd.get('resultType')} != {qd.get('resultType')}")
        return diffs, notes
    diffs += compare_result(qd["resultType"], pd.get("result"), qd.get("result"), ordered, strict_matrix_order)
    return diffs, notes


def is_ordered(query):
    """Only sort() and sort_desc() at the top promise an order for a vector."""
    return re.match(r"^\s*sort(_desc)?\s*\(", query) is not None


class Systems:
    """The two query endpoints and the farm epoch the queries are relative to."""

    def __init__(self, pan_base, prom_base, epoch):
        self.pan, self.prom, self.epoch = pan_base, prom_base, epoch

    def t(self, rel):
        return f"{self.epoch + rel:.3f}"

    def both(self, path, params, post=False):
        return api(self.pan, path, params, post=post), api(self.prom, path, params, post=post)

    def evaluations(self, query, index):
        """(label, path, params, strict matrix order) of every evaluation of one query."""
        q = expand(query, self.epoch)
        out = [(f"instant @+{rel}", "/api/v1/query", {"query": q, "time": self.t(rel)}, False)
               for rel in INSTANT_TIMES]
        s, e, step = RANGE_WIDE
        out.append((f"range +{s}..+{e} step {step}", "/api/v1/query_range",
                    {"query": q, "start": self.t(s), "end": self.t(e), "step": str(step)}, True))
        step = RANGE_NARROW_STEPS[index % len(RANGE_NARROW_STEPS)]
        s, e = RANGE_NARROW
        out.append((f"range +{s}..+{e} step {step}", "/api/v1/query_range",
                    {"query": q, "start": self.t(s), "end": self.t(e), "step": str(step)}, True))
        return out


def show(diffs, limit=6):
    for d in diffs[:limit]:
        print(f"        {d}")
    if len(diffs) > limit:
        print(f"        … {len(diffs) - limit} more")


def run_query(sysm, query, index, verbose_errors=True):
    """All evaluations of one query; returns the list of (evaluation, diffs)."""
    failures = []
    printed_messages = False
    for label, path, params, strict in sysm.evaluations(query, index):
        pan, prom = sysm.both(path, params)
        diffs, notes = compare_answers(pan, prom, ordered=is_ordered(query), strict_matrix_order=strict)
        if diffs:
            failures.append((label, diffs))
        if notes and verbose_errors and not printed_messages:
            # error messages are worded differently on purpose: show them once per query
            for n in notes:
                print(f"      {query!r} [{label}]: {n}")
            printed_messages = True
    return failures


def query_group(sysm, name, queries, start_index, summary):
    def body():
        bad = []
        for i, q in enumerate(queries):
            failures = run_query(sysm, q, start_index + i)
            if q in KNOWN_DIFFERENCES or q in DELIBERATE_3X_DIFFERENCES:
                table = "KNOWN_DIFFERENCES" if q in KNOWN_DIFFERENCES else "DELIBERATE_3X_DIFFERENCES"
                if failures:
                    summary["excluded_differs"].append(q)
                    print(f"    excluded ({table}): {q}")
                    for label, diffs in failures[:2]:
                        print(f"      [{label}]")
                        show(diffs, 3)
                else:
                    summary["excluded_matches"].append(q)
                    print(f"    now matches, remove from {table}: {q}")
                continue
            if failures:
                bad.append(q)
                summary["failed"].append(q)
                print(f"    DIFFERS: {q}")
                for label, diffs in failures[:3]:
                    print(f"      [{label}]")
                    show(diffs)
            else:
                summary["passed"] += 1
        print(f"    {name}: {len(queries) - len(bad)}/{len(queries)} queries identical")
        assert not bad, f"{len(bad)} queries differ: {bad}"
    return body


def run(binary):
    d = tempfile.mkdtemp(prefix="panoptes-interop-promql-diff-")
    # The farm's epoch lies well before the ingest: every sample is in the
    # past (Prometheus 2.42 takes samples up to 1h behind its head), and the
    # scrapers' own series (stamped now) stay after every evaluation time.
    epoch = int(time.time()) - TICKS * STEP_MS // 1000 - 900
    epoch -= epoch % 60
    farm_pan = DiffFarm(free_port(), SEED, epoch * 1000).start()
    farm_prom = DiffFarm(free_port(), SEED, epoch * 1000).start()
    pan_port, prom_port = free_port(), free_port()
    with open(os.path.join(d, "prometheus.yml"), "w") as f:
        f.write(PROM_CONFIG.format(port=farm_prom.server.server_address[1]))
    with open(os.path.join(d, "p.yaml"), "w") as f:
        f.write(PIPELINE.format(port=farm_pan.server.server_address[1]))
    prom = start(["prometheus", f"--config.file={d}/prometheus.yml", f"--storage.tsdb.path={d}/prom-data",
                  f"--web.listen-address=127.0.0.1:{prom_port}"], log=os.path.join(d, "prometheus.log"))
    pan = start([binary, "run", "p.yaml", "--listen", f"127.0.0.1:{pan_port}", "--data-dir", "data"],
                cwd=d, log=os.path.join(d, "panoptes.log"))
    pan_base, prom_base = f"http://127.0.0.1:{pan_port}", f"http://127.0.0.1:{prom_port}"
    sysm = Systems(pan_base, prom_base, epoch)
    print(f"    promql-diff: epoch {epoch}, {TICKS} ticks of {STEP_MS // 1000}s, logs in {d}", flush=True)
    state = {"ingested": False}

    def ingest():
        wait_http(prom_base + "/-/ready", timeout=60)
        wait_http(pan_base + "/-/ready", timeout=60)
        # one tick per scrape at 1s: TICKS seconds plus start-up, bounded
        wait_for("both farms scraped to the last tick", lambda: farm_pan.done() and farm_prom.done(),
                 timeout=TICKS + 90, interval=1)
        # let the last scrape reach both stores: label_test is the last family of every body
        q = {"query": "count_over_time(label_test[1h])", "time": sysm.t(1700.9)}

        def settled():
            a, b = sysm.both("/api/v1/query", q)
            counts = [[s["value"][1] for s in x[1]["data"]["result"]] for x in (a, b)]
            return counts[0] == counts[1] == [str(TICKS)] * 3
        wait_for("the last tick in both stores", settled, timeout=30, interval=1)
        state["ingested"] = True

    check("promql-diff: both systems ingest the farm (explicit timestamps, one tick per scrape)", ingest)
    farm_pan.stop()
    farm_prom.stop()
    if state["ingested"]:
        compare_all(sysm)
    stop(pan)
    stop(prom)


RAW_NAMES = ["http_requests_total", "process_cpu_seconds_total", "queue_depth", "build_info",
             "request_duration_seconds_bucket", "request_duration_seconds_sum",
             "request_duration_seconds_count", "rpc_duration_seconds", "rpc_duration_seconds_sum",
             "rpc_duration_seconds_count", "node_memory_free_bytes", "node_memory_total_bytes",
             "temperature_celsius", "weird_value", "job_heartbeat", "batch_last_success_timestamp_seconds",
             "short_lived_total", "label_test", "worker_load", "broken_duration_seconds_bucket",
             "broken_duration_seconds_count", "inf_only_seconds_bucket"]


def compare_all(sysm, only=""):
    """The checks that need both stores loaded: raw data, query groups, API cases."""

    def same_raw_samples():
        # every stored sample, per metric name, as a range vector over the whole data set
        total = 0
        for n in RAW_NAMES:
            pan_a, prom_a = sysm.both("/api/v1/query", {"query": f"{n}[1500s]", "time": sysm.t(1400.9)})
            diffs, _ = compare_answers(pan_a, prom_a, strict_matrix_order=True)
            assert not diffs, f"{n}: stored samples differ:\n" + "\n".join(diffs[:10])
            res = prom_a[1]["data"]["result"]
            assert res, f"{n}: Prometheus stored nothing"
            total += sum(len(s["values"]) for s in res)
        print(f"    {total} raw samples identical in both stores")

    check("promql-diff: both stores hold identical raw samples", same_raw_samples)

    groups = load_queries(os.path.join(HERE, "promql_queries.txt"))
    nq = sum(len(qs) for name, qs in groups if only in name)
    summary = {"passed": 0, "failed": [], "excluded_differs": [], "excluded_matches": []}
    index = 0
    t0 = time.time()
    for name, queries in groups:
        if only in name:
            check(f"promql-diff: {name} ({len(queries)} queries)", query_group(sysm, name, queries, index, summary))
        index += len(queries)

    def api_cases():
        bad = []
        for name, path, params in API_CASES:
            p = {}
            for k, v in params.items():
                if v.startswith("@RFC3339:"):
                    rel = float(v.split(":", 1)[1])
                    v = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sysm.epoch + int(rel))) + \
                        f".{round((rel % 1) * 1000):03d}Z"
                elif v.startswith("@"):
                    v = sysm.t(float(v[1:]))
                p[k] = v
            post = path.startswith("POST ")
            pan_a, prom_a = sysm.both(path.removeprefix("POST "), p, post=post)
            diffs, notes = compare_answers(pan_a, prom_a, strict_matrix_order=True)
            for n in notes:
                print(f"      {name}: {n}")
            if name in KNOWN_API_DIFFERENCES:
                print(f"    {'excluded (KNOWN_API_DIFFERENCES)' if diffs else 'now matches, remove from KNOWN_API_DIFFERENCES'}: {name}")
                show(diffs, 2)
            elif diffs:
                bad.append(name)
                print(f"    DIFFERS: {name}")
                show(diffs)
        assert not bad, f"API cases differ: {bad}"

    check(f"promql-diff: API parameter handling ({len(API_CASES)} cases)", api_cases)
    for kind, (count, example) in sorted(Formats.seen.items()):
        print(f"    promql-diff: {count} values written differently ({kind}, KNOWN_FORMAT_DIFFERENCES), e.g. {example[:160]}")
    print(f"    promql-diff: {nq} queries x ({len(INSTANT_TIMES)} instant + 2 range) evaluations in "
          f"{time.time() - t0:.0f}s: {summary['passed']} identical, {len(summary['failed'])} differ, "
          f"{len(summary['excluded_differs'])} excluded still differ, "
          f"{len(summary['excluded_matches'])} excluded now match", flush=True)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/panoptes")
    ap.add_argument("--attach", metavar="PANOPTES_URL,PROMETHEUS_URL,EPOCH",
                    help="compare two systems already loaded from diff_farm.py with this epoch (debugging)")
    ap.add_argument("--only", default="", help="run only the query groups whose name contains this")
    a = ap.parse_args()
    try:
        if a.attach:
            pan_url, prom_url, ep = a.attach.split(",")
            compare_all(Systems(pan_url, prom_url, int(ep)), a.only)
        else:
            run(os.path.abspath(a.bin))
    finally:
        harness.finish()
