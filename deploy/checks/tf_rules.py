"""Tollgate's own rules for deploy/terraform, beyond checkov's generic ones:

  L1 every ALB target group health-checks GET /status/ready on the status listener (8007),
     never the Admin API (8001) or the proxy
  L2 every ALB listener speaks HTTPS (TLS ends at the ALB with the ACM certificate)
  L3 no security group rule opens the Admin API port to the internet (0.0.0.0/0, ::/0)

Values are resolved through literals, `var.x` defaults of the same module and `tostring()`.
Usage: tf_rules.py <terraform dir>  (exit status 1 and one line per violation)
"""

import re
import sys
from pathlib import Path

import hcl2

STATUS_PORT = 8007
ADMIN_PORT = 8001


def _one(v):
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def _resolve(value, defaults):
    value = _one(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{(?:tostring\()?var\.([a-z0-9_]+)\)?\}", value)
        if m:
            return _one(defaults.get(m.group(1)))
        if value.isdigit():
            return int(value)
    return value


def _module_docs(directory):
    docs = [hcl2.loads(f.read_text(encoding="utf-8")) for f in sorted(directory.glob("*.tf"))]
    defaults = {}
    for doc in docs:
        for entry in doc.get("variable", []):
            for name, body in entry.items():
                if "default" in body:
                    defaults[name] = body["default"]
    return docs, defaults


def _resources(docs, rtype):
    for doc in docs:
        for entry in doc.get("resource", []):
            for name, body in entry.get(rtype, {}).items():
                yield name, body


def check(root):
    problems = []
    dirs = sorted({p.parent for p in Path(root).rglob("*.tf") if ".terraform" not in p.parts})
    for d in dirs:
        docs, defaults = _module_docs(d)
        for name, tg in _resources(docs, "aws_lb_target_group"):
            hc = _one(tg.get("health_check"))
            if not isinstance(hc, dict):
                problems.append(f"L1 {d}: aws_lb_target_group.{name} has no health_check")
                continue
            path = _resolve(hc.get("path"), defaults)
            port = _resolve(hc.get("port"), defaults)
            if path != "/status/ready":
                problems.append(f"L1 {d}: aws_lb_target_group.{name} health-checks {path!r}, not /status/ready")
            if port != STATUS_PORT:
                problems.append(f"L1 {d}: aws_lb_target_group.{name} health-checks port {port!r}, not the status listener {STATUS_PORT}")
        for name, listener in _resources(docs, "aws_lb_listener"):
            protocol = _resolve(listener.get("protocol"), defaults)
            if protocol != "HTTPS":
                problems.append(f"L2 {d}: aws_lb_listener.{name} uses {protocol!r}, not HTTPS")
        for rtype in ("aws_vpc_security_group_ingress_rule", "aws_security_group_rule"):
            for name, rule in _resources(docs, rtype):
                lo, hi = _resolve(rule.get("from_port"), defaults), _resolve(rule.get("to_port"), defaults)
                cidrs = [_resolve(rule.get(k), defaults) for k in ("cidr_ipv4", "cidr_ipv6")]
                cidrs += list(_one(rule.get("cidr_blocks")) or [])
                if isinstance(lo, int) and isinstance(hi, int) and lo <= ADMIN_PORT <= hi:
                    if any(c in ("0.0.0.0/0", "::/0") for c in cidrs):
                        problems.append(f"L3 {d}: {rtype}.{name} opens the Admin API port to the internet")
    return problems


def main(argv):
    problems = check(argv[1] if len(argv) > 1 else ".")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print("Tollgate's Terraform rules pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
