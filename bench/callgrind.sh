#!/usr/bin/env bash
# Instructions per proxied request under callgrind, gateway and nginx (deterministic figure).
#   bench/callgrind.sh [--n1 200] [--n2 1200] [--bin PATH] [--only gateway|nginx] [--prometheus] [--ratelimit local|redis]
#   [--upstream round-robin|consistent-hashing]
# Writes bench/results/callgrind.json and callgrind-<proxy>.txt (per-request profile).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/callgrind.py" "$@"
