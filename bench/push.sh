#!/usr/bin/env bash
# Push load, side by side with Debian's Pushgateway 1.5.1: pushes/s, p50/p99
# latency, CPU per push and RSS at 200, 500 and 5000 grouping keys. The
# script lives with the stage; this is its entry point for users.
#   bench/push.sh           (see stages/push_ingest/bench/push_bench.sh)
# The shared harness's wrk-driven variant: bench/side_by_side.sh push
exec "$(dirname "$0")/../stages/push_ingest/bench/push_bench.sh" "$@"
