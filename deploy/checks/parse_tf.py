"""Parses every .tf file under the given directories with python-hcl2, and lists the inline
checkov skips, each of which must give its reason (`#checkov:skip=ID:reason`).

Exit status 1 (with file, line and column) when a file does not parse, a skip has no reason,
or no .tf file is found at all (a check that checks nothing must not pass).
"""

import re
import sys
from pathlib import Path

import hcl2


def parse_all(roots):
    files = sorted(p for root in roots for p in Path(root).rglob("*.tf") if ".terraform" not in p.parts)
    if not files:
        raise SystemExit(f"no .tf files under {', '.join(roots)}")
    errors = []
    for path in files:
        try:
            with path.open(encoding="utf-8") as f:
                hcl2.load(f)
        except Exception as e:  # hcl2 raises lark errors of several types
            errors.append(f"{path}: {type(e).__name__}: {e}")
    return files, errors


SKIP = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def skips(files):
    """(path, line number, check id, reason) of every inline checkov skip."""
    found = []
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = SKIP.search(line)
            if m:
                found.append((path, n, m.group(1), (m.group(2) or "").strip()))
    return found


def main(argv):
    files, errors = parse_all(argv[1:] or ["."])
    for path, n, check, reason in skips(files):
        if len(reason) < 20:
            errors.append(f"{path}:{n}: checkov skip of {check} without a reason (#checkov:skip={check}:<why>)")
        else:
            print(f"skip {check} at {path}:{n}: {reason}")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print(f"{len(files)} .tf files parse")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
