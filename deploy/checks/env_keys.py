"""Every Tollgate setting the kit passes as an environment variable is checked by the real
binary: `tollgate check` must accept it without a warning (an unknown key, a deprecated key or
a typo — like the 2017 seed's KONG_CASSANDRA_CASSANDRA_PORTs — warns; an invalid value fails).

Sources: the Dockerfile's ENV, each Tollgate service of the compose file (on top of the
image's ENV), and every TOLLGATE_* assignment in deploy/terraform (one run per database).
Terraform values that are expressions get a placeholder of the right shape.

Usage: env_keys.py <tollgate binary> <Dockerfile> <compose.yml> <terraform dir>
"""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import docker_rules  # noqa: E402
import yaml  # noqa: E402

PREFIXES = ("TOLLGATE_", "KONG_")


def _placeholder(key):
    """A valid value for a key whose Terraform value is only known at apply time."""
    if key.endswith("_PORT"):
        return "5432"
    if key.endswith("_DATA_CENTERS"):
        return "dc1:3"
    return "placeholder.internal"


def dockerfile_env(text):
    env = {}
    for keyword, args in docker_rules._instructions(text):
        if keyword == "FROM":
            env = {}  # only the final stage's ENV reaches the image
        elif keyword == "ENV":
            env.update(docker_rules._env_pairs(args))
    return env


def compose_envs(text, image_env):
    doc = yaml.safe_load(text)
    out = {}
    for name, service in doc["services"].items():
        if "build" not in service and not str(service.get("image", "")).startswith("tollgate"):
            continue
        env = dict(image_env)
        for k, v in docker_rules._environment(service).items():
            # ${VAR:-default} → default (what compose uses when VAR is unset)
            env[k] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v)
        out[f"compose service {name}"] = env
    return out


def terraform_envs(root):
    assignments = {}  # key -> list of values
    for tf in sorted(Path(root).rglob("*.tf")):
        if ".terraform" in tf.parts:
            continue
        defaults = {}
        for vf in tf.parent.glob("variables.tf"):
            for m in re.finditer(r'variable "([a-z0-9_]+)" \{(.*?)\n\}', vf.read_text(), re.S):
                d = re.search(r'\n  default\s*=\s*"?([^"\n]*)"?', m.group(2))
                if d:
                    defaults[m.group(1)] = d.group(1)
        for m in re.finditer(r"^\s*((?:TOLLGATE|KONG)_[A-Z0-9_]+)\s*=\s*(.+?)\s*$", tf.read_text(), re.M):
            key, expr = m.groups()
            expr = re.sub(r"\s+#.*$", "", expr)
            lit = re.fullmatch(r'"((?:[^"\\]|\\.)*)"', expr)
            if lit:
                value = lit.group(1)
                value = re.sub(r"\$\{var\.([a-z0-9_]+)\}", lambda v: defaults.get(v.group(1), "x"), value)
                if "${" in value:
                    value = _placeholder(key)
            elif expr.startswith("var.") and expr[4:] in defaults:
                value = defaults[expr[4:]]
            else:
                value = _placeholder(key)
            assignments.setdefault(key, []).append(value)
    databases = assignments.pop("TOLLGATE_DATABASE", ["postgres"])
    base = {k: v[-1] for k, v in assignments.items()}
    return {f"terraform, database = {db}": {**base, "TOLLGATE_DATABASE": db} for db in databases}


def run_check(binary, env):
    with tempfile.TemporaryDirectory() as home:
        full = {"PATH": os.environ.get("PATH", ""), "HOME": home, "NO_COLOR": "1"}
        full.update(env)
        full["TOLLGATE_PREFIX"] = home  # the image's prefix does not exist here
        r = subprocess.run([binary, "check"], env=full, capture_output=True, text=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


def main(argv):
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    binary, dockerfile, compose, terraform = argv[1:]
    image_env = dockerfile_env(Path(dockerfile).read_text())
    sets = {"Dockerfile ENV": image_env}
    sets.update(compose_envs(Path(compose).read_text(), image_env))
    sets.update(terraform_envs(terraform))
    failed = False
    for name, env in sets.items():
        keys = sorted(k for k in env if k.startswith(PREFIXES))
        code, output = run_check(binary, env)
        if code != 0 or "warn" in output.lower():
            failed = True
            print(f"{name}: tollgate check failed (exit {code}):\n  {output}", file=sys.stderr)
        else:
            print(f"{name}: {len(keys)} settings accepted")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
