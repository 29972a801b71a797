"""Cross-references in deploy/terraform, checked offline (what `terraform validate` would
report if the provider could be downloaded here, minus the provider schema):

  R1 a module call passes only variables the module declares, and every variable without a
     default
  R2 `module.<name>.<output>` names a module call of this directory and one of its outputs
  R3 `var.<name>` and `local.<name>` are declared in this directory
  R4 `<resource type>.<name>` and `data.<type>.<name>` name a block of this directory
  R5 every key of a `*.tfvars*` example (commented-out ones included) is a declared variable

Usage: tf_refs.py <dir containing .tf directories>  (exit status 1 and one line per problem)
"""

import re
import sys
from pathlib import Path

import hcl2

META = {"source", "version", "count", "for_each", "depends_on", "providers"}
RESOURCE_PREFIXES = ("aws_", "terraform_data")


def _strip_comments(text):
    # Good enough for this code base: `#` and `//` comments never occur inside strings here
    # except in heredocs, which hold shell (their `#` lines carry no references).
    return re.sub(r"(?m)(^|\s)(#|//).*$", "", text)


def _blocks(doc, kind):
    for entry in doc.get(kind, []):
        yield from entry.items()


class Dir:
    """The declarations of one Terraform directory (a module or a root)."""

    def __init__(self, path):
        self.path = path
        self.files = sorted(path.glob("*.tf"))
        self.docs = {f: hcl2.loads(f.read_text(encoding="utf-8")) for f in self.files}
        self.variables, self.outputs, self.locals, self.modules = {}, set(), set(), {}
        self.resources, self.data = set(), set()
        for doc in self.docs.values():
            for name, body in _blocks(doc, "variable"):
                self.variables[name] = "default" in body
            for name, _ in _blocks(doc, "output"):
                self.outputs.add(name)
            for entry in doc.get("locals", []):
                self.locals.update(k for k in entry if not k.startswith("__"))
            for name, body in _blocks(doc, "module"):
                source = body["source"][0] if isinstance(body["source"], list) else body["source"]
                self.modules[name] = (source, {k for k in body if not k.startswith("__")})
            for entry in doc.get("resource", []):
                for rtype, named in entry.items():
                    self.resources.update(f"{rtype}.{n}" for n in named)
            for entry in doc.get("data", []):
                for dtype, named in entry.items():
                    self.data.update(f"{dtype}.{n}" for n in named)


def check(root):
    problems = []
    dirs = {}
    for tf in sorted(Path(root).rglob("*.tf")):
        if ".terraform" not in tf.parts and tf.parent not in dirs:
            dirs[tf.parent.resolve()] = Dir(tf.parent.resolve())
    if not dirs:
        return [f"no .tf files under {root}"]

    for d in dirs.values():
        for call, (source, args) in d.modules.items():
            target = (d.path / source).resolve()
            callee = dirs.get(target)
            if callee is None:
                problems.append(f"R1 {d.path}: module {call}: source {source} has no .tf files")
                continue
            for arg in sorted(args - META):
                if arg not in callee.variables:
                    problems.append(f"R1 {d.path}: module {call} passes {arg}, which {source} does not declare")
            for var, has_default in sorted(callee.variables.items()):
                if not has_default and var not in args:
                    problems.append(f"R1 {d.path}: module {call} does not set required variable {var}")

        for f in d.files:
            text = _strip_comments(f.read_text(encoding="utf-8"))
            where = f"{f}"
            for m in re.finditer(r"\bmodule\.([a-z0-9_]+)(?:\[[^\]]*\])?\.([a-z0-9_]+)", text):
                call, output = m.groups()
                if call not in d.modules:
                    problems.append(f"R2 {where}: module.{call} is not a module call here")
                    continue
                callee = dirs.get((d.path / d.modules[call][0]).resolve())
                if callee and output not in callee.outputs:
                    problems.append(f"R2 {where}: module.{call}.{output}: no such output in {d.modules[call][0]}")
            for m in re.finditer(r"(?<![\w.])var\.([a-z0-9_]+)", text):
                if m.group(1) not in d.variables:
                    problems.append(f"R3 {where}: var.{m.group(1)} is not declared")
            for m in re.finditer(r"(?<![\w.])local\.([a-z0-9_]+)", text):
                if m.group(1) not in d.locals:
                    problems.append(f"R3 {where}: local.{m.group(1)} is not declared")
            for m in re.finditer(r"(?<![\w.\"/:-])((?:aws_[a-z0-9_]+|terraform_data))\.([a-z0-9_]+)\b", text):
                ref = f"{m.group(1)}.{m.group(2)}"
                if ref not in d.resources:
                    problems.append(f"R4 {where}: {ref} is not a resource here")
            for m in re.finditer(r"(?<![\w.])data\.([a-z0-9_]+)\.([a-z0-9_]+)", text):
                ref = f"{m.group(1)}.{m.group(2)}"
                if ref not in d.data:
                    problems.append(f"R4 {where}: data.{ref} is not a data source here")
    for example in sorted(Path(root).rglob("*.tfvars*")):
        d = dirs.get(example.parent.resolve())
        declared = d.variables if d else {}
        for n, line in enumerate(example.read_text(encoding="utf-8").splitlines(), 1):
            m = re.match(r"^#?\s*([a-z][a-z0-9_]*)\s*=", line)
            if m and m.group(1) not in declared:
                problems.append(f"R5 {example}:{n}: {m.group(1)} is not a variable of {example.parent}")
    return sorted(set(problems))


def main(argv):
    problems = check(argv[1] if len(argv) > 1 else ".")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print("Terraform references resolve")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
