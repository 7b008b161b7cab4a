#!/usr/bin/env bash
# Re-captures the real exposition bodies used by panoptes-exposition's tests.
# Needs: prometheus-node-exporter, prometheus-pushgateway (Debian), python3 with
# prometheus-client, curl. Everything binds to 127.0.0.1:29100-29102, every
# wait is bounded, and every process started here is killed on exit.
set -euo pipefail
cd "$(dirname "$0")"

OM_ACCEPT='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
TEXT_ACCEPT='text/plain;version=0.0.4'
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_up() { # url
  for _ in $(seq 1 50); do
    curl -fsS -m 1 -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}

fetch() { # accept url out
  curl -fsS -m 5 -H "Accept: $1" -D "$3.headers" -o "$3" "$2"
  grep -i '^content-type' "$3.headers" | tr -d '\r' >&2
  rm -f "$3.headers"
}

# (1) Debian's node exporter.
prometheus-node-exporter --web.listen-address=127.0.0.1:29100 >/dev/null 2>&1 &
PIDS+=($!)
wait_up http://127.0.0.1:29100/metrics
fetch "$TEXT_ACCEPT" http://127.0.0.1:29100/metrics node_exporter.prom.txt
# Debian's 1.5.0 build answers the OpenMetrics Accept header with text 0.0.4
# (checked: Content-Type is printed), so there is no separate OM capture.
curl -fsS -m 5 -H "Accept: $OM_ACCEPT" -o /dev/null -D - http://127.0.0.1:29100/metrics | grep -i '^content-type' >&2

# (2) The Python client's hello-world exporter.
python3 hello_exporter.py 29101 &
PIDS+=($!)
wait_up http://127.0.0.1:29101/metrics
fetch "$TEXT_ACCEPT" http://127.0.0.1:29101/metrics python_client.prom.txt
fetch "$OM_ACCEPT" http://127.0.0.1:29101/metrics python_client.om.txt

# (3) Debian's Pushgateway after one push.
prometheus-pushgateway --web.listen-address=127.0.0.1:29102 >/dev/null 2>&1 &
PIDS+=($!)
wait_up http://127.0.0.1:29102/metrics
printf 'some_metric 3.14\n' | curl -fsS -m 5 --data-binary @- http://127.0.0.1:29102/metrics/job/some_job
fetch "$TEXT_ACCEPT" http://127.0.0.1:29102/metrics pushgateway.prom.txt
curl -fsS -m 5 -H "Accept: $OM_ACCEPT" -o /dev/null -D - http://127.0.0.1:29102/metrics | grep -i '^content-type' >&2

echo "captured into $(pwd)" >&2
