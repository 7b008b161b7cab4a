#!/usr/bin/env python3
"""The seed article's hello-world exporter: a counter, a gauge, a summary and
a histogram from prometheus_client, served on 127.0.0.1:PORT and changing
every 100 ms. Exits after --seconds (bounded)."""
import argparse, random, time

from prometheus_client import Counter, Gauge, Histogram, Summary, start_http_server

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("--seconds", type=float, default=600)
a = ap.parse_args()

REQUESTS = Counter("hello_requests", "Requests handled.", ["method"])
INPROGRESS = Gauge("hello_inprogress_requests", "Requests in progress.")
LATENCY = Summary("hello_request_latency_seconds", "Request latency.")
SIZE = Histogram("hello_response_size_bytes", "Response sizes.", buckets=[100, 1000, 10000, float("inf")])

start_http_server(a.port, addr="127.0.0.1")
end = time.time() + a.seconds
while time.time() < end:
    REQUESTS.labels(method=random.choice(["get", "post"])).inc()
    INPROGRESS.set(random.randint(0, 10))
    LATENCY.observe(random.random() / 10)
    SIZE.observe(random.choice([50, 500, 5000, 50000]))
    time.sleep(0.1)
