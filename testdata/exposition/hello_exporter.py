"""The Prometheus Python client "hello world" exporter used to capture test bodies.

Exposes a counter, a gauge, a summary and a histogram (plus labels whose values
need escaping) on 127.0.0.1:PORT, observes a fixed set of values so captures are
stable apart from the `_created` timestamps, and serves until killed.
Usage: python3 hello_exporter.py [PORT]
"""

import sys
import time

from prometheus_client import Counter, Gauge, Histogram, Summary, start_http_server

REQUEST_TIME = Summary("request_processing_seconds", "Time spent processing request")
REQUESTS = Counter("hello_requests", "Requests handled", ["method", "path"])
IN_PROGRESS = Gauge("hello_in_progress", "Requests in progress")
LATENCY = Histogram(
    "hello_latency_seconds",
    "Request latency.\nSecond line with a backslash \\ in it",
    ["handler"],
    buckets=(0.005, 0.01, 0.1, 1.0, 10.0),
)
TEMPERATURE = Gauge("hello_temperature_celsius", "A gauge with a unit", unit="celsius")

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 29101
    for v in (0.002, 0.02, 0.2, 2.0):
        REQUEST_TIME.observe(v)
    REQUESTS.labels(method="GET", path="/").inc(3)
    REQUESTS.labels(method="POST", path='/a "quoted" \\ path\nnewline').inc()
    IN_PROGRESS.set(2)
    for v in (0.001, 0.05, 0.5, 5.0, 50.0):
        LATENCY.labels(handler="/").observe(v)
    TEMPERATURE.set(-12.5)
    start_http_server(port, addr="127.0.0.1")
    while True:
        time.sleep(1)
