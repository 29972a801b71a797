"""Tollgate's rules for deploy/docker/Dockerfile and deploy/docker/compose.yml.

hadolint and checkov cover generic Dockerfile hygiene; these rules cover what this project
requires of its image and local cluster and what no generic linter knows:

Dockerfile
  D1 multi-stage: at least two stages and the final one copies from an earlier stage
  D2 every external base image is pinned: an explicit tag other than `latest`, or a digest
     (ARG defaults declared before the first FROM are resolved)
  D3 the final stage runs as a non-root USER
  D4 the final stage has a HEALTHCHECK that runs `tollgate health`
  D5 no ADD of a remote URL (unverified downloads into the image)
  D6 the image's default Admin API listener is loopback only; the status listener is not
     (the load balancer health-checks /status/ready on it)
compose
  C1 the file parses and has services
  C2 a PostgreSQL service with a pinned image and a healthcheck
  C3 at least three Tollgate nodes, each with a healthcheck running `tollgate health`
  C4 every depends_on entry has a condition; nodes start only after a migrations service
     completed successfully, and that runs only once PostgreSQL is healthy
  C5 published ports bind the host's loopback only
  C6 a node whose Admin API listens beyond loopback sets TOLLGATE_ADMIN_AUTH
  C7 images of non-built services are pinned

Usage: docker_rules.py Dockerfile compose.yml  (exit status 1 and one line per violation)
"""

import ipaddress
import json
import re
import shlex
import sys

import yaml

# ---------------------------------------------------------------------------- Dockerfile


def _instructions(text):
    """(keyword, arguments) pairs: comments dropped, continuation lines joined."""
    out, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    if buf.strip():
        keyword, _, args = buf.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _exec_or_shell(args):
    """The words of an exec-form (JSON array) or shell-form command."""
    if args.startswith("["):
        try:
            words = json.loads(args)
            if isinstance(words, list):
                return [str(w) for w in words]
        except ValueError:
            pass
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def _env_pairs(args):
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}  # legacy `ENV KEY value`
    return dict(w.split("=", 1) for w in words if "=" in w)


def _substitute(value, args):
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
        lambda m: args.get(m.group(1), m.group(0)),
        value,
    )


def image_is_pinned(image):
    """True for `name:tag` (tag not `latest`) or `name@sha256:…`."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]  # a registry host may carry a :port
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def _is_loopback_listen(value):
    """Whether every entry of a kong.conf *_listen value binds loopback (or is `off`)."""
    for entry in value.split(","):
        words = entry.split()
        if not words or words[0] == "off":
            continue
        host = words[0].rsplit(":", 1)[0].strip("[]")
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False  # a hostname or `*`: not provably loopback
    return True


def check_dockerfile(text):
    problems = []
    global_args, stages = {}, []
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            image = words[0] if words else ""
            alias = words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append({"image": image, "alias": alias, "ins": []})
        elif not stages:
            if keyword == "ARG":
                name, _, default = args.partition("=")
                global_args[name.strip()] = default.strip().strip('"')
        else:
            stages[-1]["ins"].append((keyword, args))

    if not stages:
        return ["D1 no FROM instruction"]
    aliases = {s["alias"] for s in stages if s["alias"]}
    final = stages[-1]

    copies_from_stage = any(
        k == "COPY" and re.search(r"--from=(\S+)", a) for k, a in final["ins"]
    )
    if len(stages) < 2 or not copies_from_stage:
        problems.append("D1 not a multi-stage build (the final stage must COPY --from an earlier stage)")

    for s in stages:
        image = _substitute(s["image"], global_args)
        if image.lower() in aliases or image == "scratch":
            continue
        if not image_is_pinned(image):
            problems.append(f"D2 base image {s['image']!r} (= {image!r}) is not pinned to a tag or digest")

    users = [a for k, a in final["ins"] if k == "USER"]
    if not users:
        problems.append("D3 the final stage has no USER (it would run as root)")
    else:
        user = users[-1].split(":", 1)[0].strip()
        if user in ("root", "0", ""):
            problems.append(f"D3 the final stage runs as {users[-1]!r}")

    checks = [a for k, a in final["ins"] if k == "HEALTHCHECK"]
    if not checks:
        problems.append("D4 the final stage has no HEALTHCHECK")
    else:
        hc = checks[-1]
        if hc.strip().upper() == "NONE":
            problems.append("D4 HEALTHCHECK NONE disables the health check")
        else:
            _, _, cmd = hc.partition("CMD")
            words = _exec_or_shell(cmd.strip())
            if not any(
                w.rsplit("/", 1)[-1] == "tollgate" and words[i + 1 : i + 2] == ["health"]
                for i, w in enumerate(words)
            ):
                problems.append(f"D4 HEALTHCHECK does not run `tollgate health`: {hc!r}")

    for s in stages:
        for k, a in s["ins"]:
            if k == "ADD" and re.search(r"(^|\s)(https?|ftp)://|(^|\s)git@", a):
                problems.append(f"D5 ADD of a remote URL: {a!r}")

    env = {}
    for k, a in final["ins"]:
        if k == "ENV":
            env.update(_env_pairs(a))
    for prefix in ("KONG_", "TOLLGATE_"):
        admin = env.get(prefix + "ADMIN_LISTEN")
        if admin is not None and not _is_loopback_listen(admin) and not env.get(prefix + "ADMIN_AUTH"):
            problems.append(f"D6 the image exposes the Admin API ({prefix}ADMIN_LISTEN={admin!r}) without ADMIN_AUTH")
    status = env.get("TOLLGATE_STATUS_LISTEN", env.get("KONG_STATUS_LISTEN"))
    if status is None or _is_loopback_listen(status):
        problems.append("D6 the status listener must listen beyond loopback (TOLLGATE_STATUS_LISTEN=0.0.0.0:8007)")
    return problems


# ------------------------------------------------------------------------------- compose


def _runs_tollgate_health(healthcheck):
    if not isinstance(healthcheck, dict) or healthcheck.get("disable"):
        return False
    test = healthcheck.get("test")
    if isinstance(test, str):
        words = ["CMD-SHELL"] + shlex.split(test)
    elif isinstance(test, list):
        words = [str(w) for w in test]
    else:
        return False
    if not words or words[0] not in ("CMD", "CMD-SHELL"):
        return False
    if words[0] == "CMD-SHELL" and len(words) == 2:
        words = ["CMD-SHELL"] + shlex.split(words[1])
    return any(
        w.rsplit("/", 1)[-1] == "tollgate" and words[i + 1 : i + 2] == ["health"]
        for i, w in enumerate(words)
    )


def _command(service):
    cmd = service.get("command")
    if isinstance(cmd, str):
        return shlex.split(cmd)
    return [str(c) for c in cmd] if isinstance(cmd, list) else []


def _environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _depends(service):
    dep = service.get("depends_on") or {}
    if isinstance(dep, list):
        return {name: None for name in dep}
    return {name: (spec or {}).get("condition") for name, spec in dep.items()}


def _published_host_ip(port):
    """The host IP of a published port, '' when it binds every interface, None if not published."""
    if isinstance(port, dict):
        if "published" not in port:
            return None
        return str(port.get("host_ip", ""))
    text = str(port)
    parts = text.rsplit("/", 1)[0].split(":")
    if len(parts) == 1:
        return ""  # "8000": a random host port on every interface
    if len(parts) == 2:
        return ""
    return ":".join(parts[:-2]).strip("[]")


def check_compose(text):
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"C1 compose file does not parse: {e}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict) or not doc["services"]:
        return ["C1 compose file has no services"]
    services = doc["services"]
    problems = []

    def is_tollgate(s):
        image = str(s.get("image", ""))
        return "build" in s or image.rsplit("/", 1)[-1].startswith("tollgate")

    postgres = [n for n, s in services.items() if str(s.get("image", "")).rsplit("/", 1)[-1].startswith("postgres")]
    migrations = [n for n, s in services.items() if is_tollgate(s) and _command(s)[:1] == ["migrations"]]
    nodes = [n for n, s in services.items() if is_tollgate(s) and n not in migrations]

    if not postgres:
        problems.append("C2 no PostgreSQL service")
    for n in postgres:
        hc = services[n].get("healthcheck")
        if not isinstance(hc, dict) or hc.get("disable") or not hc.get("test"):
            problems.append(f"C2 {n}: PostgreSQL has no healthcheck")

    if len(nodes) < 3:
        problems.append(f"C3 {len(nodes)} Tollgate node(s), a cluster needs at least 3")
    for n in nodes:
        if not _runs_tollgate_health(services[n].get("healthcheck")):
            problems.append(f"C3 {n}: no healthcheck running `tollgate health`")

    for n, s in services.items():
        for dep, cond in _depends(s).items():
            if dep not in services:
                problems.append(f"C4 {n}: depends on unknown service {dep!r}")
            elif cond not in ("service_healthy", "service_completed_successfully"):
                problems.append(f"C4 {n}: depends_on {dep} without a health/completion condition")

    def reaches(start, goal_ok, seen=None):
        """Whether some depends_on path from `start` ends in an edge satisfying goal_ok."""
        seen = seen or set()
        for dep, cond in _depends(services.get(start, {})).items():
            if dep in seen or dep not in services:
                continue
            if goal_ok(dep, cond) or reaches(dep, goal_ok, seen | {dep}):
                return True
        return False

    for m in migrations:
        if not reaches(m, lambda d, c: d in postgres and c == "service_healthy"):
            problems.append(f"C4 {m}: migrations do not wait for PostgreSQL to be healthy")
    if not migrations:
        problems.append("C4 no migrations service (command: [migrations, ...])")
    for n in nodes:
        if not reaches(n, lambda d, c: d in migrations and c == "service_completed_successfully"):
            problems.append(f"C4 {n}: does not wait for the migrations to complete successfully")

    for n, s in services.items():
        for p in s.get("ports") or []:
            ip = _published_host_ip(p)
            if ip is None:
                continue
            try:
                loopback = ip not in ("", "0.0.0.0", "::") and ipaddress.ip_address(ip).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                problems.append(f"C5 {n}: port {p!r} is published beyond the host's loopback")

    for n in nodes + migrations:
        env = _environment(services[n])
        for prefix in ("KONG_", "TOLLGATE_"):
            admin = env.get(prefix + "ADMIN_LISTEN")
            if admin and not _is_loopback_listen(admin) and not (
                env.get("TOLLGATE_ADMIN_AUTH") or env.get("KONG_ADMIN_AUTH")
            ):
                problems.append(f"C6 {n}: Admin API on {admin!r} without TOLLGATE_ADMIN_AUTH")

    for n, s in services.items():
        if "build" not in s and "image" in s and not image_is_pinned(str(s["image"])):
            problems.append(f"C7 {n}: image {s['image']!r} is not pinned")
    return problems


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    problems = []
    with open(argv[1], encoding="utf-8") as f:
        problems += [f"{argv[1]}: {p}" for p in check_dockerfile(f.read())]
    with open(argv[2], encoding="utf-8") as f:
        problems += [f"{argv[2]}: {p}" for p in check_compose(f.read())]
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print("Dockerfile and compose rules pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
