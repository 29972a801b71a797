#!/usr/bin/env bash
# Static checks of the deployment kit (no container engine, no AWS account, no network
# beyond PyPI on the first run):
#   1. every .tf file parses (python-hcl2) and its references resolve (module arguments and
#      outputs, variables, locals, resources: deploy/checks/tf_refs.py);
#   2. Tollgate's own Terraform rules (deploy/checks/tf_rules.py: ALB health check on
#      /status/ready of the status listener, HTTPS listeners, Admin API never open to the
#      internet), then checkov with the justified skips (see terraform/.checkov.yaml);
#   3. `terraform fmt -check -recursive`, when a terraform binary is installed;
#   4. hadolint and Tollgate's own rules (deploy/checks/docker_rules.py) pass on the
#      Dockerfile and the compose file, and checkov passes on the Dockerfile;
#   5. shellcheck on the kit's shell scripts;
#   6. every TOLLGATE_* setting in these files passes `tollgate check` (when a binary is built);
#   7. the rules' own tests (deploy/tests): deliberately broken copies must fail.
# The tools live in a venv under ~/.cache/tollgate, rebuilt only when requirements.txt changes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

venv="${TOLLGATE_DEPLOY_VENV:-$HOME/.cache/tollgate/deploy-venv}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "deploy: installing the check tools into $venv"
  # Debian splits venv/ensurepip out of python3; as root on a fresh machine it is installed here.
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "deploy/check.sh needs Python's venv module: apt-get install python3-venv as root" >&2
      exit 1
    fi
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" >"$stamp"
fi
py="$venv/bin/python"
export PATH="$venv/bin:$PATH"

step() { printf -- '--> deploy: %s\n' "$*"; }

step "parse every .tf file"
"$py" checks/parse_tf.py terraform

step "Terraform references"
"$py" checks/tf_refs.py terraform

step "Tollgate's Terraform rules"
"$py" checks/tf_rules.py terraform

step "checkov (terraform)"
# checkov prints every failed check; --quiet hides the passed ones. A parse error is only a
# counter in checkov's summary, which is why parse_tf.py runs first.
checkov --quiet --compact --skip-download --framework terraform \
  --config-file terraform/.checkov.yaml --directory terraform

step "terraform fmt"
if command -v terraform >/dev/null; then
  # TF_CLI_CONFIG_FILE=/dev/null: fmt needs no CLI configuration (and warns when a missing one is named).
  TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff terraform
else
  echo "terraform not installed: fmt check skipped"
fi

step "shellcheck"
shellcheck check.sh terraform/modules/gateway/scripts/*.sh

step "hadolint"
hadolint --config docker/.hadolint.yaml docker/Dockerfile

step "checkov (dockerfile)"
checkov --quiet --compact --skip-download --framework dockerfile \
  --config-file docker/.checkov.yaml --file docker/Dockerfile

step "Dockerfile and compose rules"
"$py" checks/docker_rules.py docker/Dockerfile docker/compose.yml

# The real binary judges every TOLLGATE_* setting the kit passes (unknown, deprecated or
# invalid keys fail). scripts/test has built it by now; elsewhere set TOLLGATE_BIN.
# A binary named explicitly (as scripts/test does) must exist: CI never skips this step.
bin="${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$here/../target}/debug/tollgate}"
step "environment settings against $bin"
if [ -n "${TOLLGATE_BIN:-}" ] && [ ! -x "$bin" ]; then
  echo "TOLLGATE_BIN=$bin is not an executable: build it first (cargo build --bin tollgate)" >&2
  exit 1
fi
if [ -x "$bin" ]; then
  export TOLLGATE_BIN="$bin"
  "$py" checks/env_keys.py "$bin" docker/Dockerfile docker/compose.yml terraform
else
  echo "NOT RUN: no tollgate binary at $bin (cargo build --bin tollgate, or set TOLLGATE_BIN)"
fi

step "the checks catch broken files"
"$py" -m unittest discover -s tests -p "test_*.py"

echo "deploy: all checks passed"
