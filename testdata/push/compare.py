#!/usr/bin/env python3
"""Side-by-side check of Panoptes' push_ingest against a real Pushgateway.

Sends the same script of pushes (good and bad; text, gzip and delimited
protobuf bodies; base64 grouping keys) to both, then the Python client's
push_to_gateway / pushadd_to_gateway / delete_from_gateway, and compares:
status codes of every request, the /metrics content (minus the gateway's
own go_/process_/pushgateway_ metrics and the push timestamps' values) and
the /api/v1/metrics groups (minus time stamps).

Both sides need the admin API (the script wipes them first):
  prometheus-pushgateway --web.listen-address=127.0.0.1:29191 \
      --web.enable-admin-api --persistence.file=/tmp/pgw.data
  cargo run -p panoptes-push-ingest --example serve -- 127.0.0.1:29192

  python3 testdata/push/compare.py [--pushgateway URL] [--panoptes URL]
  python3 testdata/push/compare.py --pushgateway none   # Panoptes alone,
      # against the status codes recorded from Pushgateway 1.5.1

Exit status 0 when everything that must match matches. Error *messages*
are shown side by side but only their status codes must match (text parse
errors are worded by different parsers).
Needs Python 3 and `pip install prometheus-client`.
"""

import argparse
import gzip
import json
import re
import struct
import sys
import urllib.error
import urllib.request

PROTO_CT = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"


# --- a minimal protobuf encoder for io.prometheus.client.MetricFamily -------

def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(tag, wire, payload):
    return _varint((tag << 3) | wire) + payload


def _str(tag, s):
    b = s.encode()
    return _field(tag, 2, _varint(len(b)) + b)


def _msg(tag, body):
    return _field(tag, 2, _varint(len(body)) + body)


def _double(tag, v):
    return _field(tag, 1, struct.pack("<d", v))


def _uint(tag, v):
    return _field(tag, 0, _varint(v))


COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM = 0, 1, 2, 3, 4


def metric(labels=(), gauge=None, counter=None, untyped=None, summary=None,
           histogram=None, timestamp_ms=None):
    b = b""
    for n, v in labels:
        b += _msg(1, _str(1, n) + _str(2, v))
    if gauge is not None:
        b += _msg(2, _double(1, gauge))
    if counter is not None:
        b += _msg(3, _double(1, counter))
    if summary is not None:
        count, total, quantiles = summary
        s = _uint(1, count) + _double(2, total)
        for q, v in quantiles:
            s += _msg(3, _double(1, q) + _double(2, v))
        b += _msg(4, s)
    if untyped is not None:
        b += _msg(5, _double(1, untyped))
    if timestamp_ms is not None:
        b += _uint(6, timestamp_ms)
    if histogram is not None:
        count, total, buckets = histogram
        h = _uint(1, count) + _double(2, total)
        for ub, c in buckets:
            h += _msg(3, _uint(1, c) + _double(2, ub))
        b += _msg(7, h)
    return b


def family(name, mtype, metrics, help_=None):
    b = _str(1, name)
    if help_ is not None:
        b += _str(2, help_)
    b += _uint(3, mtype)
    for m in metrics:
        b += _msg(4, m)
    return _varint(len(b)) + b


# --- the script ---------------------------------------------------------------

def text(s):
    return s.encode()


STEPS = [
    # (name, method, path, body, headers)
    ("put simple", "PUT", "/metrics/job/some_job", text("some_metric 3.14\n"), {}),
    ("curl seed", "POST", "/metrics/job/seed_job", text("some_metric 3.14\n"), {}),
    ("timestamp rejected", "POST", "/metrics/job/ts_job", text("some_metric 3.14 1000\n"), {}),
    ("job label overridden", "POST", "/metrics/job/c_job", text('some_metric{job="other"} 3.14\n'), {}),
    ("instance label overridden", "POST", "/metrics/job/c_job/instance/y", text('some_metric{instance="x"} 3.14\n'), {}),
    ("type conflict with other group", "POST", "/metrics/job/t_job", text("# TYPE some_metric counter\nsome_metric 3\n"), {}),
    ("help differs from other group", "POST", "/metrics/job/h_job", text("# HELP some_metric other help\nsome_metric 3\n"), {}),
    ("invalid body", "POST", "/metrics/job/i_job", text("some_metric{ 3.14\n"), {}),
    ("second TYPE line", "PUT", "/metrics/job/i_job", text("# TYPE g gauge\n# TYPE g gauge\ng 1\n"), {}),
    ("duplicate series in body", "POST", "/metrics/job/d_job", text("dup 1\ndup 2\n"), {}),
    ("odd label components", "POST", "/metrics/job/j/a", text("x 1\n"), {}),
    ("reserved label name", "POST", "/metrics/job/j/__a/b", text("x 1\n"), {}),
    ("invalid label name", "POST", "/metrics/job/j/a-b/c", text("x 1\n"), {}),
    ("base64 job and empty value", "POST", "/metrics/job@base64/Zm9vL2Jhcg/path@base64/=", text("x 1\n"), {}),
    ("base64 label with slash", "PUT", "/metrics/job/b64/dir@base64/L3Zhci90bXA", text("y 2\n"), {}),
    ("delete", "DELETE", "/metrics/job/some_job", b"", {}),
    ("delete missing group", "DELETE", "/metrics/job/nope/a/b", b"", {}),
    ("histogram and summary", "PUT", "/metrics/job/hist/instance/i1", text(
        "# HELP h a hist\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1\"} 2\n"
        "h_bucket{le=\"+Inf\"} 3\nh_sum 2.5\nh_count 3\n# TYPE s summary\n"
        "s{quantile=\"0.5\"} 1\ns{quantile=\"0.9\"} 2\ns_sum 10\ns_count 4\n"), {}),
    ("histogram without +Inf", "PUT", "/metrics/job/h2", text(
        "# TYPE h2 histogram\nh2_bucket{le=\"1\"} 1\nh2_sum 1\nh2_count 1\n"), {}),
    ("PUT group", "PUT", "/metrics/job/j1", text(
        "# HELP a help a\n# TYPE a counter\na{x=\"1\"} 1\na{x=\"2\"} 2\nb 5\n"), {}),
    ("POST replaces same-name family only", "POST", "/metrics/job/j1", text('a{x="3"} 3\n'), {}),
    ("PUT replaces whole group", "PUT", "/metrics/job/j3", text("c 1\nd 2\n"), {}),
    ("PUT replaces whole group 2", "PUT", "/metrics/job/j3", text("c 5\n"), {}),
    ("empty PUT", "PUT", "/metrics/job/empty", b"", {}),
    ("suffix collision", "PUT", "/metrics/job/coll", text("h_count 1\n"), {}),
    ("grouping superset duplicate", "PUT", "/metrics/job/sup", text('sup{x="1"} 1\n'), {}),
    ("grouping superset duplicate 2", "PUT", "/metrics/job/sup/x/1", text("sup 1\n"), {}),
    ("special values", "PUT", "/metrics/job/vals", text(
        "nn NaN\nni +Inf\nnm -Inf\nbig 1e21\nsmall 1e-7\nint 123456789\nneg -0.5\n"), {}),
    ("escaping", "PUT", "/metrics/job/esc", text(
        'esc{a="x\\\\y\\"z\\nw"} 1\n# HELP esc2 line\\\\n and \\n newline\nesc2 1\n'), {}),
    ("gzip body", "PUT", "/metrics/job/gz", gzip.compress(text("gz 1\n")), {"Content-Encoding": "gzip"}),
    ("broken gzip", "PUT", "/metrics/job/gz2", b"not gzip", {"Content-Encoding": "gzip"}),
    ("protobuf gauge+counter", "PUT", "/metrics/job/pb", family("pb_g", GAUGE, [metric([("a", "1")], gauge=1.5)], "pb gauge")
     + family("pb_c", COUNTER, [metric([], counter=7)]), {"Content-Type": PROTO_CT}),
    ("protobuf histogram+summary", "POST", "/metrics/job/pb", family("pb_h", HISTOGRAM, [metric([], histogram=(5, 2.5, [(0.1, 1), (1, 4)]))])
     + family("pb_s", SUMMARY, [metric([("k", "v")], summary=(3, 9.0, [(0.5, 2.0), (0.99, 4.0)]))]), {"Content-Type": PROTO_CT}),
    ("protobuf timestamp", "PUT", "/metrics/job/pbts", family("pbts", GAUGE, [metric([], gauge=1, timestamp_ms=5)]), {"Content-Type": PROTO_CT}),
    ("protobuf type/value mismatch", "PUT", "/metrics/job/pbmm", family("pbmm", GAUGE, [metric([], counter=1)]), {"Content-Type": PROTO_CT}),
    ("protobuf quantile label in summary", "PUT", "/metrics/job/pbq", family("pbq", SUMMARY, [metric([("quantile", "x")], summary=(1, 1.0, []))]), {"Content-Type": PROTO_CT}),
    ("protobuf duplicate label", "PUT", "/metrics/job/pbd", family("pbd", GAUGE, [metric([("a", "1"), ("a", "2")], gauge=1)]), {"Content-Type": PROTO_CT}),
    ("protobuf truncated", "PUT", "/metrics/job/pbt", family("pbt", GAUGE, [metric([], gauge=1)])[:-3], {"Content-Type": PROTO_CT}),
    ("type conflict inside a group via POST", "POST", "/metrics/job/pb", text("# TYPE pb_g counter\npb_g 1\n"), {}),
    ("empty label value and unicode", "PUT", "/metrics/job/misc", text(
        'emp{a="",b="ü ✓"} 1\nrec:rule:sum 2\n# HELP only_help Just help.\n# TYPE only_type gauge\n'), {}),
    ("summary without sum and count", "PUT", "/metrics/job/sumonly", text(
        "# TYPE so summary\nso{quantile=\"0.5\"} 1\n"), {}),
    ("untyped with le label", "PUT", "/metrics/job/le", text('u{le="1"} 1\n'), {}),
    ("counter with _total name", "PUT", "/metrics/job/tot", text("# TYPE reqs_total counter\nreqs_total 5\n"), {}),
    ("same family other group, same type", "PUT", "/metrics/job/pb2", family("pb_g", GAUGE, [metric([], gauge=2)], "pb gauge"), {"Content-Type": PROTO_CT}),
]


# The status codes Debian's prometheus-pushgateway 1.5.1 answered to STEPS,
# for runs without a Pushgateway (`--pushgateway none`).
PUSHGATEWAY_1_5_1_CODES = {
    "put simple": 200,
    "curl seed": 200,
    "timestamp rejected": 400,
    "job label overridden": 200,
    "instance label overridden": 200,
    "type conflict with other group": 400,
    "help differs from other group": 200,
    "invalid body": 400,
    "second TYPE line": 400,
    "duplicate series in body": 400,
    "odd label components": 400,
    "reserved label name": 400,
    "invalid label name": 400,
    "base64 job and empty value": 200,
    "base64 label with slash": 200,
    "delete": 202,
    "delete missing group": 202,
    "histogram and summary": 200,
    "histogram without +Inf": 200,
    "PUT group": 200,
    "POST replaces same-name family only": 200,
    "PUT replaces whole group": 200,
    "PUT replaces whole group 2": 200,
    "empty PUT": 200,
    "suffix collision": 400,
    "grouping superset duplicate": 200,
    "grouping superset duplicate 2": 400,
    "special values": 200,
    "escaping": 200,
    "gzip body": 200,
    "broken gzip": 400,
    "protobuf gauge+counter": 200,
    "protobuf histogram+summary": 200,
    "protobuf timestamp": 400,
    "protobuf type/value mismatch": 400,
    "protobuf quantile label in summary": 400,
    "protobuf duplicate label": 400,
    "protobuf truncated": 400,
    "type conflict inside a group via POST": 200,
    "empty label value and unicode": 200,
    "summary without sum and count": 200,
    "untyped with le label": 200,
    "counter with _total name": 200,
    "same family other group, same type": 400,
}

# Sent to Panoptes only, with the status the Pushgateway documents: the
# Pushgateway 1.5.1 answers a bad base64 *job* with 400 but then keeps that
# route's push lock, so every later push on it hangs (a bug in its handler).
PANOPTES_ONLY = [
    ("bad base64 job", "PUT", "/metrics/job@base64/!!!", text("x 1\n"), {}, 400),
    ("bad base64 label", "PUT", "/metrics/job/j/a@base64/!!!", text("x 1\n"), {}, 400),
    ("empty job", "PUT", "/metrics/job/", text("x 1\n"), {}, 307),
]


def request(base, method, path, body=b"", headers=None):
    req = urllib.request.Request(base + path, data=body if method in ("PUT", "POST") else None,
                                 method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


OWN = re.compile(r"^(# (HELP|TYPE) )?(go|process|pushgateway)_")
# Values that are times: the push timestamps, and the Python client's
# `_created` gauges (set when each side's registry was built).
PUSH_TS = re.compile(r"^(push_(failure_)?time_seconds\{[^}]*\}|[a-zA-Z_:][a-zA-Z0-9_:]*_created\{[^}]*\}) (.*)$")


def normalized_metrics(base):
    _, body = request(base, "GET", "/metrics")
    out = []
    for line in body.splitlines():
        if OWN.match(line):
            continue
        # The groups hold some_metric with different help texts ("help
        # differs from other group"): Go shows the help of whichever group
        # its map iteration meets first, so that line is not comparable.
        if line.startswith("# HELP some_metric "):
            continue
        m = PUSH_TS.match(line)
        if m:
            line = m.group(1) + (" 0" if m.group(3) == "0" else " <time>")
        out.append(line)
    return out


def normalized_api(base):
    _, body = request(base, "GET", "/api/v1/metrics")
    data = json.loads(body)["data"]
    groups = []
    for g in data:
        g = dict(g)
        for k, v in g.items():
            if isinstance(v, dict) and "metrics" in v:
                v.pop("time_stamp", None)
                if k.startswith("push_") or k.endswith("_created"):
                    for m in v["metrics"]:
                        m["value"] = "0" if m["value"] == "0" else "<time>"
        groups.append(g)
    groups.sort(key=lambda g: json.dumps(g["labels"], sort_keys=True))
    return json.dumps(groups, sort_keys=True, indent=1).splitlines()


def python_client(base):
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
    from prometheus_client import delete_from_gateway, push_to_gateway, pushadd_to_gateway

    gw = base.replace("http://", "")
    reg = CollectorRegistry()
    g = Gauge("job_last_success_unixtime", "Last time a batch job successfully finished", registry=reg)
    g.set(1234.5)
    c = Counter("job_records", "Records processed", ["kind"], registry=reg)
    c.labels("a").inc(3)
    h = Histogram("job_duration_seconds", "Duration", buckets=(0.1, 1.0), registry=reg)
    h.observe(0.5)
    s = Summary("job_latency_seconds", "Latency", registry=reg)
    s.observe(0.2)
    key = {"instance": "host/with/slashes", "empty": ""}
    push_to_gateway(gw, job="batch job", registry=reg, grouping_key=key)
    reg2 = CollectorRegistry()
    Gauge("job_extra", "Extra", registry=reg2).set(1)
    pushadd_to_gateway(gw, job="batch job", registry=reg2, grouping_key=key)
    push_to_gateway(gw, job="to_delete", registry=reg2)
    delete_from_gateway(gw, job="to_delete")


def diff(a, b):
    import difflib
    return list(difflib.unified_diff(a, b, "pushgateway", "panoptes", lineterm="", n=1))


def check_recorded(base):
    """Runs STEPS against Panoptes alone, comparing with recorded codes."""
    failures = 0
    code, body = request(base, "PUT", "/api/v1/admin/wipe")
    if code != 202:
        return f"{base}: wipe failed ({code} {body.strip()}): is the admin API enabled?"
    print(f"{'step':45} {'recorded':>11} {'panoptes':>9}")
    for name, method, path, body, headers in STEPS:
        want = PUSHGATEWAY_1_5_1_CODES[name]
        got, _ = request(base, method, path, body, headers)
        mark = "ok" if got == want else "DIFF"
        failures += got != want
        print(f"{name:45} {want:>11} {got:>9}  {mark}")
    for name, method, path, body, headers, want in PANOPTES_ONLY:
        got, _ = request(base, method, path, body, headers)
        mark = "ok" if got == want else "DIFF"
        failures += got != want
        print(f"{name:45} {want:>11} {got:>9}  {mark}")
    python_client(base)
    text_ = "\n".join(normalized_metrics(base))
    for want in ['job_last_success_unixtime{empty="",instance="host/with/slashes",job="batch job"} 1234.5',
                 'job_extra{empty="",instance="host/with/slashes",job="batch job"} 1',
                 'some_metric{instance="",job="seed_job"} 3.14']:
        ok = want in text_
        failures += not ok
        print(f"/metrics has {want}: {'ok' if ok else 'MISSING'}")
    if 'job="to_delete"' in text_:
        failures += 1
        print("/metrics still has the deleted group: DIFF")
    print("RESULT:", "PASS" if failures == 0 else f"FAIL ({failures} differences)")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pushgateway", default="http://127.0.0.1:29191",
                    help="a Pushgateway URL, or 'none' to check Panoptes against the recorded 1.5.1 status codes only")
    ap.add_argument("--panoptes", default="http://127.0.0.1:29192")
    args = ap.parse_args()
    if args.pushgateway == "none":
        sys.exit(check_recorded(args.panoptes))
    sides = [args.pushgateway, args.panoptes]
    failures = 0
    for base in sides:
        code, body = request(base, "PUT", "/api/v1/admin/wipe")
        if code != 202:
            sys.exit(f"{base}: wipe failed ({code} {body.strip()}): is the admin API enabled?")

    print(f"{'step':45} {'pushgateway':>11} {'panoptes':>9}")
    for name, method, path, body, headers in STEPS:
        (c1, b1), (c2, b2) = [request(base, method, path, body, headers) for base in sides]
        mark = "ok" if c1 == c2 else "DIFF"
        if c1 != c2:
            failures += 1
        print(f"{name:45} {c1:>11} {c2:>9}  {mark}")
        if b1.strip() != b2.strip() and (c1 >= 300 or c2 >= 300):
            print(f"    pushgateway: {b1.strip()[:160]}")
            print(f"    panoptes:    {b2.strip()[:160]}")

    for name, method, path, body, headers, want in PANOPTES_ONLY:
        code, text_ = request(args.panoptes, method, path, body, headers)
        mark = "ok" if code == want else "DIFF"
        if code != want:
            failures += 1
        print(f"{name:45} {want:>11} {code:>9}  {mark} (panoptes only)")

    for base in sides:
        python_client(base)
    print("python client push_to_gateway / pushadd_to_gateway / delete_from_gateway: sent")

    for what, fn in [("/metrics", normalized_metrics), ("/api/v1/metrics", normalized_api)]:
        d = diff(fn(sides[0]), fn(sides[1]))
        if d:
            failures += 1
            print(f"{what}: DIFFERENT")
            print("\n".join(d[:80]))
        else:
            print(f"{what}: identical (apart from timestamps and the gateway's own metrics)")

    print("RESULT:", "PASS" if failures == 0 else f"FAIL ({failures} differences)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
