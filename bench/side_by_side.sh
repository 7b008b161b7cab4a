#!/usr/bin/env bash
# Side-by-side figures against the real anchors, through the shared harness
# (../shared/bench): ingest (CPU per million samples, RSS per series, bytes
# per sample), the query battery (latency, and every answer compared with
# Prometheus's), and the push load (pushes/s, latency, CPU per push).
#
#   bench/side_by_side.sh [ingest|query|push|all]     (default: all)
#
# Needs: the Debian packages prometheus, victoria-metrics,
# prometheus-pushgateway and wrk (installed here if missing), a release
# build (built here). Bounded: each run has the harness's own timeouts.
# Results: bench/results/*.jsonl and a markdown report on stdout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
harness=${BENCH_HARNESS:-$repo/../shared/bench}
what=${1:-all}
[ -d "$harness" ] || { echo "no harness at $harness (set BENCH_HARNESS)"; exit 1; }

need=()
for p in prometheus victoria-metrics prometheus-pushgateway wrk; do command -v "$p" >/dev/null || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
(cd "$repo" && cargo build --release -q -p panoptes)

export BENCH_RESULTS=${BENCH_RESULTS:-$repo/bench/results}
mkdir -p "$BENCH_RESULTS"
bin=$repo/target/release/panoptes
export OURS_CMD="$bin run {config} --listen {listen} --data-dir {data_dir} --enable-admin-api --log.level warn"
export OURS_CONFIG_TEMPLATE=$repo/bench/templates/ingest.yaml
export OURS_SAMPLES_METRIC=panoptes_tsdb_head_samples_appended_total
export OURS_SERIES_METRIC=panoptes_tsdb_head_series
export OURS_FLUSH='POST /api/v1/admin/tsdb/snapshot'
export OURS_DISK_PATHS='{data_dir}/snapshots'
export OURS_DISK_CHUNK_PATHS='{data_dir}/snapshots/*/*/chunks'
export OURS_VERSION_CMD="$bin --version"
# The push receiver listens on {listen}; the main listener takes a port of its own.
export OURS_PUSH_CMD="$bin run {config} --listen 127.0.0.1:19190 --data-dir {data_dir} --log.level warn"
export OURS_PUSH_CONFIG_TEMPLATE=$repo/bench/templates/push.yaml

cd "$harness"
case "$what" in
  ingest) ./ingest.sh prometheus; ./ingest.sh victoria-metrics; ./ingest.sh ours ;;
  query)  ./query.sh prometheus; ./query.sh ours ;;
  push)   for keys in 200 500 5000; do
            PUSH_TOTAL=50000 PUSH_KEYS=$keys ./push.sh pushgateway
            PUSH_TOTAL=50000 PUSH_KEYS=$keys ./push.sh ours-push
          done ;;
  all)    "$0" ingest; "$0" query; "$0" push ;;
  *) echo "usage: $0 [ingest|query|push|all]"; exit 2 ;;
esac
python3 harness.py report
