#!/usr/bin/env python3
"""Instructions per proxied request under callgrind, for the gateway and for nginx.

    bench/callgrind.sh                       # N1=200, N2=1200, measured twice
    bench/callgrind.sh --n1 200 --n2 1200 --repeat 2 --bin PATH --only gateway

For each proxy, two runs under `valgrind --tool=callgrind`, one serving N1 and one N2
sequential GET / requests on one keep-alive connection (a Python client); each run is
start-up, the requests, SIGTERM and exit. The per-request figure is
(Ir(N2) - Ir(N1)) / (N2 - N1): start-up, the first connection and shutdown cancel out.
Readiness is read from /proc/net/tcp and a fixed sleep, so no polling request lands in
the measured process. Both proxies run pinned to one core (so the gateway's runtime has
one worker, as in bench/run.sh); the upstream is native nginx on the other core.

Also writes bench/results/callgrind-<proxy>.txt: the per-request cost by function (the
difference of the two runs' function totals, divided by N2 - N1), i.e. a deterministic
profile of one proxied request.

Two nginx figures: `nginx` sets Kong's headers on the upstream request and the response as
the gateway does by default (`benchlib.KONG_HEADERS`: the same bytes on the wire), and
`nginx-bare` is its plain `proxy_pass`, which does less than either."""

import argparse
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402


def client(port, n, path="/"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in range(n):
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200 or body != b"ok":
            B.die(f"request {i} got {r.status} {body[:100]!r}")
    c.close()


def totals(out_file):
    with open(out_file) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    B.die(f"no totals in {out_file}")


FN_LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.+?)\s*$")


def functions(out_file, inclusive=False):
    """{function: Ir} self (or inclusive) cost by function, from callgrind_annotate."""
    p = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no",
                        f"--inclusive={'yes' if inclusive else 'no'}", out_file],
                       capture_output=True, text=True, timeout=600)
    fns = {}
    started = False
    for line in p.stdout.splitlines():
        if "file:function" in line:
            started = True
            continue
        if not started or not line.strip() or line.startswith("-"):
            if started and line.startswith("---") and fns:
                break
            continue
        m = FN_LINE.match(line)
        if m:
            name = re.sub(r"\s*\[[^\]]*\]$", "", m.group(2))
            fns[name] = fns.get(name, 0) + int(m.group(1).replace(",", ""))
    return fns


def run_one(args, tmp, which, n, up_port, rep=0):
    out = os.path.join(tmp, f"callgrind.{which}.{n}.{rep}.out")
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
          "--dump-line=no"]
    if which == "gateway":
        prefix = tempfile.mkdtemp(prefix="gw-", dir=tmp)
        cfg = os.path.join(prefix, "kong.yml")
        with open(cfg, "w") as f:
            f.write(B.declarative(up_port, prometheus=args.prometheus,
                                  ratelimit=args.ratelimit_conf, balanced=args.upstream,
                                  routes=args.routes))
        port, admin, status = B.free_port(), B.free_port(), B.free_port()
        env = B.gateway_env(prefix, port, None, admin, status, cfg, None, None)
        log = open(os.path.join(prefix, "stderr.log"), "w")
        proc = subprocess.Popen(["taskset", "-c", "1"] + vg + [args.bin, "start"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        B.wait_listening(port, proc, deadline_s=300, what="gateway under valgrind")
    else:
        port = B.free_port()
        conf = B.peer_conf(tmp, port, None, up_port, None, None, None, foreground_single=True,
                           bare=which == "nginx-bare", routes=args.routes)
        proc, _ = B.start_nginx(tmp, f"peer-{n}", conf, 1, port, valgrind=vg)
    time.sleep(args.settle)
    t0 = time.perf_counter()
    client(port, n, f"/svc-{args.routes // 2}/x" if args.routes else "/")
    dt = time.perf_counter() - t0
    time.sleep(0.2)
    B.stop(proc, grace=120)
    return out, totals(out), dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n1", type=int, default=200)
    ap.add_argument("--n2", type=int, default=1200)
    ap.add_argument("--bin", default=None)
    ap.add_argument("--only", choices=["gateway", "nginx", "nginx-bare"], default=None,
                    help="one proxy: nginx sets Kong's headers as the gateway does "
                    "(benchlib.KONG_HEADERS), nginx-bare is its plain proxy_pass")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds to wait after the proxy listens, before the first request")
    ap.add_argument("--results", default=os.path.join(B.HERE, "results"))
    ap.add_argument("--repeat", type=int, default=2,
                    help="measure each proxy this many times (to show the figure is stable)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--prometheus", action="store_true",
                    help="the gateway with a global prometheus plugin (the 'prometheus' scenario)")
    ap.add_argument("--ratelimit", choices=["local", "redis"], default=None,
                    help="the gateway with a global rate-limiting plugin (the 'ratelimit-*' "
                    "scenarios); redis starts a redis-server on core 0")
    ap.add_argument("--upstream", choices=["round-robin", "consistent-hashing"], default=None,
                    help="the gateway's service through an upstream of three targets "
                    "(127.0.0.1-3) with this algorithm (consistent-hashing: hash_on ip)")
    ap.add_argument("--routes", type=int, default=0,
                    help="N more routes, /svc-0 … /svc-(N-1), each with its own service, and "
                    "GET /svc-(N/2)/x (the 'routes-10k' scenario with 10000); start-up with 10,000 "
                    "routes under valgrind can outlast --settle, so read the worker thread's "
                    "inclusive figure in the profile")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    B.need_tools(["valgrind", "nginx", "taskset", "callgrind_annotate"])
    args.bin = args.bin or B.default_bin()
    if (args.only != "nginx") and (not args.bin or not os.path.isfile(args.bin)):
        B.die("no tollgate binary: build it or pass --bin PATH")
    if args.n2 <= args.n1:
        B.die("--n2 must be larger than --n1")

    tmp = tempfile.mkdtemp(prefix="tollgate-callgrind-")
    os.chmod(tmp, 0o755)
    big = os.path.join(tmp, "big.bin")
    open(big, "wb").close()
    up_port = B.free_port()
    upstream, _ = B.start_nginx(tmp, "upstream", B.upstream_conf(tmp, up_port, big), 0, up_port)
    redis = None
    args.ratelimit_conf = args.ratelimit
    if args.ratelimit == "redis":
        redis, port = B.start_redis(tmp, cpu=0)
        args.ratelimit_conf = f"redis:{port}"
    results = {}
    try:
        for which in ([args.only] if args.only else ["gateway", "nginx", "nginx-bare"]):
            reps = []
            for rep in range(args.repeat):
                runs = {}
                for n in (args.n1, args.n2):
                    out, ir, dt = run_one(args, tmp, which, n, up_port, rep)
                    runs[n] = (out, ir)
                    print(f"{which:10s} run {rep + 1} N={n:5d}: {ir:,} instructions in total "
                          f"({dt:.1f} s of requests under valgrind)", flush=True)
                per = (runs[args.n2][1] - runs[args.n1][1]) / (args.n2 - args.n1)
                print(f"{which:10s} run {rep + 1}: {per:,.0f} instructions per request",
                      flush=True)
                reps.append({"instructions_per_request": per, "ir_n1": runs[args.n1][1],
                             "ir_n2": runs[args.n2][1]})
                if rep == 0:
                    first = runs
                else:
                    for n in (args.n1, args.n2):
                        os.unlink(runs[n][0])
            runs = first
            pers = [r["instructions_per_request"] for r in reps]
            per = pers[0]
            results[which] = {"instructions_per_request": per, "runs": reps,
                              "spread_pct": 100 * (max(pers) - min(pers)) / min(pers)}
            if not args.no_profile:
                os.makedirs(args.results, exist_ok=True)
                path = os.path.join(args.results, f"callgrind-{which}.txt")
                with open(path, "w") as f:
                    f.write(f"# {which}: instructions per proxied request by function, "
                            f"callgrind, (Ir[N={args.n2}] - Ir[N={args.n1}]) / "
                            f"{args.n2 - args.n1}\n# total: {per:,.0f} instructions/request\n")
                    for inclusive, count in ((False, 80), (True, 120)):
                        f1 = functions(runs[args.n1][0], inclusive)
                        f2 = functions(runs[args.n2][0], inclusive)
                        diff = {k: (f2.get(k, 0) - f1.get(k, 0)) / (args.n2 - args.n1)
                                for k in set(f1) | set(f2)}
                        top = sorted(diff.items(), key=lambda kv: -kv[1])[:count]
                        f.write(f"\n## {'inclusive' if inclusive else 'self'} cost, top "
                                f"{count} functions\n\n")
                        for name, v in top:
                            f.write(f"{v:12,.0f}  {100 * v / per:5.1f}%  {name}\n")
                results[which]["profile"] = os.path.relpath(path, B.REPO)
    finally:
        B.stop(upstream)
        if redis is not None:
            B.stop(redis)
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"instructions per proxied request (callgrind, (Ir[{args.n2}] - Ir[{args.n1}]) / "
          f"{args.n2 - args.n1}):")
    for which, r in results.items():
        each = ", ".join(f"{x['instructions_per_request']:,.0f}" for x in r["runs"])
        print(f"  {which:10s} {each}  (spread {r['spread_pct']:.2f}%)")
    for peer, key in (("nginx", "ratio"), ("nginx-bare", "ratio_bare")):
        if "gateway" in results and peer in results:
            ratio = results["gateway"]["instructions_per_request"] / \
                results[peer]["instructions_per_request"]
            print(f"  gateway/{peer} {ratio:.2f}x")
            results[key] = ratio
    os.makedirs(args.results, exist_ok=True)
    results["meta"] = {"n1": args.n1, "n2": args.n2, "repeat": args.repeat,
                       "binary": args.bin, "valgrind": subprocess.run(
                           ["valgrind", "--version"], capture_output=True,
                           text=True).stdout.strip()}
    with open(os.path.join(args.results, "callgrind.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
