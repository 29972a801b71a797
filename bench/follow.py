#!/usr/bin/env python3
"""What a proxying node itself spends to follow a write stream (issue 8: "proxy req/s within
3 % while 100 writes per second stream through the cluster").

Two nodes on one private PostgreSQL (scripts/pg): node P proxies (pinned to core 1, and
measured), node W takes the writes through its Admin API (route creates and deletes, each
one a snapshot update on P). Everything but P runs on core 0. Unlike req/s on a shared
machine, these figures count only P's own work, so CPU stolen by PostgreSQL, W, wrk or
other processes does not enter them.

CPU mode (default), for each --routes count (routes configured before measuring):
  - P's user+system CPU-ms per 1,000 proxied requests (wrk), without and with --rate
    writes/s streaming through W; the difference over the idle figure is what req/s would
    lose were P alone on its core and busy;
  - P's CPU-ms per write with no proxy load (CPU while the writes stream, less the idle
    CPU over as long), and the share of one core that --rate writes/s take.

Callgrind mode (--callgrind): P runs under valgrind's callgrind for --cg-seconds twice, once
idle and once while --cg-writes writes arrive spaced out (each followed on its own, no
folding); (Ir[writes] - Ir[idle]) / writes is the instruction count P spends per followed
write, deterministic whatever the load, and the per-function difference is written to
bench/results/callgrind-follow-<routes>.txt.

    python3 bench/follow.py --bin target/release/tollgate                 # 100 and 1,000 routes
    python3 bench/follow.py --bin ... --routes 100 --callgrind --cg-seconds 15 --cg-writes 30
    python3 bench/follow.py --bin target/debug/tollgate --smoke
"""

import argparse, json, os, re, shutil, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402
import propagation as prop  # noqa: E402
from callgrind import functions, totals  # noqa: E402


def start(binary, tmp, k, pg_port, cpu, valgrind=None):
    """Node k pinned to `cpu` (optionally under valgrind); returns (Popen, ports)."""
    return prop.start_node(binary, tmp, k, prop.pg_env(pg_port), 5,
                           wrap=["taskset", "-c", str(cpu)] + (valgrind or []))


def add_routes(admin_port, have, want):
    admin = prop.Conn(admin_port)
    for i in range(have, want):
        s, body = admin.request("POST", "/services/up/routes",
                                {"name": f"r{i}", "paths": [f"/r{i}"]})
        if s != 201:
            benchlib.die(f"route create: {s} {body[:200]}")


class Writers:
    """`rate` writes/s through `node` (two writers, one request at a time each, so the
    rate holds on a busy machine) until stopped; `.made` counts them."""

    def __init__(self, node, rate):
        self.stop, self.count = threading.Event(), [0]
        self.threads = [threading.Thread(target=prop.writer,
                                         args=(node, rate / 2, self.stop, self.count, w))
                        for w in range(2)]
        self.t0 = time.perf_counter()
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.count[0], self.count[0] / (time.perf_counter() - self.t0)


def writes(node, rate, seconds):
    """`rate` writes/s through `node` for `seconds`; returns the writes made."""
    w = Writers(node, rate)
    time.sleep(seconds)
    return w.finish()[0]


def wrk(port, seconds, path):
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", "-c32", f"-d{seconds}s",
                          f"http://127.0.0.1:{port}{path}"],
                         check=True, capture_output=True, text=True).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return n, int(errors.group(1)) if errors else 0


def cpu_round(p, w, rate, seconds, path):
    """One round: P's CPU-ms per 1,000 requests idle and with writes, per write unloaded."""
    pid = p[0].pid
    cpu = lambda: prop.cpu_seconds(pid)  # noqa: E731
    r = {}
    a = cpu()
    n, e0 = wrk(p[1]["proxy"], seconds, path)
    b = cpu()
    r["idle_ms_per_1k"], r["idle_rps"] = 1e6 * (b - a) / n, n / seconds
    ws = Writers(w, rate)
    a = cpu()
    n, e1 = wrk(p[1]["proxy"], seconds, path)
    b = cpu()
    r["writes_per_s"] = ws.finish()[1]
    r["writes_ms_per_1k"], r["writes_rps"] = 1e6 * (b - a) / n, n / seconds
    a = cpu()
    time.sleep(seconds)
    b = cpu()
    made = writes(w, rate, seconds)
    c = cpu()
    r["ms_per_write"] = 1000 * ((c - b) - (b - a)) / max(made, 1)
    r["non_2xx"] = e0 + e1
    return r


def median(xs):
    return sorted(xs)[len(xs) // 2]


def callgrind_run(a, tmp, pg_port, k, w, n_writes, seconds):
    out = os.path.join(tmp, f"cg.{k}.{n_writes}.out")
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
          "--dump-line=no"]
    p = start(a.bin, tmp, k, pg_port, 1, vg)
    try:
        prop.wait_ready([p], deadline_s=600)
        time.sleep(a.settle)
        made = writes(w, n_writes / seconds, seconds) if n_writes else (time.sleep(seconds) or 0)
        time.sleep(a.settle)  # the last write followed
    finally:
        benchlib.stop(p[0], grace=300)
    return out, totals(out), made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=benchlib.default_bin())
    ap.add_argument("--routes", default="100,1000")
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--cg-seconds", type=float, default=20)
    ap.add_argument("--cg-writes", type=int, default=40)
    ap.add_argument("--settle", type=float, default=3)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not a.bin:
        benchlib.die("no binary: pass --bin")
    if a.smoke:
        a.seconds, a.rounds, a.routes, a.cg_seconds, a.cg_writes = 1, 1, "10", 4, 4
    counts = [int(x) for x in a.routes.split(",")]
    benchlib.need_tools(["wrk", "nginx", "psql", "taskset"] + (["valgrind"] if a.callgrind else []))
    tmp = tempfile.mkdtemp(prefix="tollgate-follow-")
    os.chmod(tmp, 0o755)  # the PostgreSQL server runs as the postgres user
    up_port = benchlib.free_port()
    nginx, _ = benchlib.start_nginx(tmp, "upstream", benchlib.upstream_conf(tmp, up_port, "/dev/null"),
                                    0, up_port)
    pg_port = prop.start_pg(tmp)
    procs, results = [], {}
    try:
        w = start(a.bin, tmp, 1, pg_port, 0)
        procs.append(w[0])
        prop.wait_ready([w])
        s, body = prop.Conn(w[1]["admin"]).request(
            "POST", "/services", {"name": "up", "url": f"http://127.0.0.1:{up_port}"})
        if s != 201:
            benchlib.die(f"service create: {s} {body[:200]}")
        have = 0
        for n_routes in counts:
            add_routes(w[1]["admin"], have, n_routes)
            have = n_routes
            path = f"/r{n_routes // 2}"
            res = {}
            if a.callgrind:
                runs = [callgrind_run(a, tmp, pg_port, 2, w, k, a.cg_seconds)
                        for k in (0, a.cg_writes)]
                (idle_out, idle_ir, _), (w_out, w_ir, made) = runs
                per = (w_ir - idle_ir) / max(made, 1)
                res["callgrind"] = {"instructions_per_write": per, "writes": made,
                                    "ir_idle": idle_ir, "ir_writes": w_ir}
                prof = os.path.join(HERE, "results", f"callgrind-follow-{n_routes}.txt")
                os.makedirs(os.path.dirname(prof), exist_ok=True)
                with open(prof, "w") as f:
                    f.write(f"# proxy node following writes, {n_routes} routes: instructions "
                            f"per followed write by function\n# (Ir[{made} writes] - Ir[idle]) "
                            f"/ {made}, each over {a.cg_seconds} s\n# total: {per:,.0f}\n")
                    for inclusive, count in ((False, 60), (True, 100)):
                        f1, f2 = functions(idle_out, inclusive), functions(w_out, inclusive)
                        diff = {k: (f2.get(k, 0) - f1.get(k, 0)) / max(made, 1)
                                for k in set(f1) | set(f2)}
                        f.write(f"\n## {'inclusive' if inclusive else 'self'}\n\n")
                        for name, v in sorted(diff.items(), key=lambda kv: -kv[1])[:count]:
                            f.write(f"{v:14,.0f}  {100 * v / per:6.1f}%  {name}\n")
                print(f"{n_routes} routes: {per:,.0f} instructions per followed write "
                      f"({made} writes) -> {os.path.relpath(prof, benchlib.REPO)}", flush=True)
            else:
                p = start(a.bin, tmp, 0, pg_port, 1)
                procs.append(p[0])
                prop.wait_ready([p])
                prop.until_serves(p[1]["proxy"], path, 600)
                wrk(p[1]["proxy"], 1, path)  # warm-up
                rounds = [cpu_round(p, w, a.rate, a.seconds, path) for _ in range(a.rounds)]
                benchlib.stop(p[0])
                procs.remove(p[0])
                res = {k: median([r[k] for r in rounds]) for k in rounds[0]}
                res["rounds"] = rounds
                res["extra_pct"] = 100 * (res["writes_ms_per_1k"] / res["idle_ms_per_1k"] - 1)
                res["core_share_pct"] = res["ms_per_write"] * a.rate / 10
                print(f"{n_routes} routes: P CPU-ms per 1,000 requests {res['idle_ms_per_1k']:.1f} "
                      f"idle, {res['writes_ms_per_1k']:.1f} with {res['writes_per_s']:.0f} writes/s "
                      f"({res['extra_pct']:+.1f} %); {res['ms_per_write']:.3f} CPU-ms per write "
                      f"unloaded = {res['core_share_pct']:.1f} % of a core at {a.rate}/s; "
                      f"req/s {res['idle_rps']:.0f} / {res['writes_rps']:.0f}; "
                      f"non-2xx {res['non_2xx']}", flush=True)
            results[n_routes] = res
        prop.write_json(a.json, results, indent=1)
    finally:
        prop.cleanup(procs, nginx, tmp, "pg")


if __name__ == "__main__":
    main()
