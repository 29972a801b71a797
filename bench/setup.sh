#!/usr/bin/env bash
# Installs what the benchmarks need (Debian packages, PyPI packages, inferno for flame
# graphs). Run once per machine as root: bench/setup.sh [--no-inferno]
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nginx-light wrk nghttp2-client valgrind linux-perf python3-matplotlib \
  openssl util-linux curl strace >/dev/null
python3 -m pip install -q websockets matplotlib
# Debian's nginx package starts a system nginx on port 80; the benchmarks run their own.
if command -v systemctl >/dev/null && systemctl is-active -q nginx 2>/dev/null; then
  systemctl stop nginx || true
fi
if [[ "${1:-}" != "--no-inferno" ]] && ! command -v inferno-flamegraph >/dev/null \
   && [[ ! -x "$HOME/.cargo/bin/inferno-flamegraph" ]]; then
  cargo install -q inferno
fi
echo "bench dependencies installed"
