#!/usr/bin/env bash
# Makes sure a Python venv with moto's server is installed and prints the path of its
# `moto_server`. Used by tests/moto.rs; safe to run by several tests at once (flock).
# The venv lives under ~/.cache/tollgate so later runs reuse it.
set -euo pipefail

MOTO_SPEC='moto[server]==5.2.5'
VENV="${TOLLGATE_MOTO_VENV:-$HOME/.cache/tollgate/moto-venv}"
mkdir -p "$(dirname "$VENV")"

exec 9>"$VENV.lock"
flock 9

stamp="$VENV/.tollgate-installed"
if [ -x "$VENV/bin/moto_server" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$MOTO_SPEC" ]; then
  echo "$VENV/bin/moto_server"
  exit 0
fi

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing python3-venv (Debian)" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
  else
    echo "moto needs python3 with venv: apt-get install python3-venv as root" >&2
    exit 1
  fi
fi

rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "$MOTO_SPEC" >&2
echo "$MOTO_SPEC" > "$stamp"
echo "$VENV/bin/moto_server"
