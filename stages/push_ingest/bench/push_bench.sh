#!/usr/bin/env bash
# Side-by-side push benchmark: Panoptes push_ingest vs the Pushgateway.
#
# Bounded: each row is at most PUSHES pushes or MAX_SECONDS seconds, 70% PUT /
# 30% POST of small groups (6 series) over K grouping keys (pre-populated),
# from 16 concurrent keep-alive connections, on 127.0.0.1 only.
# Prints a markdown table: pushes/s, p50/p99 latency, server CPU per push,
# server RSS. The Pushgateway rows are skipped if prometheus-pushgateway is
# not installed; keys above PG_MAX_KEYS are skipped for it (pre-populating
# thousands of groups takes minutes there, its cost grows with what it holds).
#
#   stages/push_ingest/bench/push_bench.sh            # keys 200 500 5000
#   KEYS="200 500 5000" PG_MAX_KEYS=5000 stages/push_ingest/bench/push_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
KEYS=${KEYS:-"200 500 5000"}
PUSHES=${PUSHES:-50000}
PG_PUSHES=${PG_PUSHES:-5000}
MAX_SECONDS=${MAX_SECONDS:-30}
PG_MAX_KEYS=${PG_MAX_KEYS:-500}
OURS_ADDR=127.0.0.1:29192
PG_ADDR=127.0.0.1:29191

cargo build --release -q -p panoptes-push-ingest --examples
BENCH=target/release/examples/push_bench
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

target/release/examples/serve "$OURS_ADDR" > "$TMP/ours.log" 2>&1 &
OURS=$!; PIDS+=("$OURS")
PG=""
if command -v prometheus-pushgateway > /dev/null; then
  prometheus-pushgateway --web.listen-address="$PG_ADDR" --web.enable-admin-api \
    --persistence.file="$TMP/pgw.data" > "$TMP/pgw.log" 2>&1 &
  PG=$!; PIDS+=("$PG")
fi
sleep 1

echo "| server | keys | pushes | pushes/s | p50 ms | p99 ms | server CPU ms/push | server RSS MiB | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
for k in $KEYS; do
  if [ -n "$PG" ] && [ "$k" -le "$PG_MAX_KEYS" ]; then
    "$BENCH" --url "http://$PG_ADDR" --keys "$k" --pushes "$PG_PUSHES" --max-seconds "$MAX_SECONDS" --pid "$PG" --label "pushgateway $(prometheus-pushgateway --version 2>&1 | head -1 | awk '{print $3}')"
  fi
  "$BENCH" --url "http://$OURS_ADDR" --keys "$k" --pushes "$PUSHES" --max-seconds "$MAX_SECONDS" --pid "$OURS" --label "panoptes push_ingest"
done
