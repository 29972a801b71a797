#!/usr/bin/env bash
# Proxy benchmark: Tollgate against nginx proxy_pass on the same pinned core.
#   bench/run.sh --smoke             every scenario, 1 round x 1 s (CI), ~30 s, < 90 s
#   bench/run.sh                     every scenario, 3 rounds x 10 s (~12 min)
#   bench/run.sh --scenario plain --rounds 1 --duration 10 --warmup 1 --flamegraph
#   bench/run.sh --scenario plain --rounds 3 --duration 10 --bin PATH
#   bench/run.sh --list
# Needs: nginx, wrk, h2load (nghttp2-client), python3 (+ websockets for ws-echo), perf and
# inferno for --flamegraph:
# bench/setup.sh installs them. See bench/RESULTS.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/proxy_bench.py" "$@"
