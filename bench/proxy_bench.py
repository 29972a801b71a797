#!/usr/bin/env python3
"""Proxy benchmark: Tollgate against nginx `proxy_pass`, same routes, same pinned core.

    bench/run.sh                         # every scenario, 3 rounds of 10 s (~12 min)
    bench/run.sh --smoke                 # every scenario, 1 round of 1 s, no warm-up (CI; ~30 s)
    bench/run.sh --scenario plain --rounds 3 --duration 10
    bench/run.sh --scenario plain --rounds 1 --flamegraph   # + results/flame-plain-*.svg
    bench/run.sh --list                  # scenario names

Layout: core 0 runs the upstream (nginx answering 200 "ok") and the load generator; core 1
runs the proxy under test (the gateway, then nginx, alternating; the order flips every
round). Each scenario starts a fresh gateway (DB-less, declarative config; SQLite filled by
`tollgate config db_import` for consumers-1m and keyauth-ratelimit) and a fresh nginx peer
with the same routes, checks both answer, warms both up, then runs the rounds.

key-auth + rate-limiting are set up through the Admin API (POST /routes/root/plugins); while
the gateway refuses them the scenario is reported as "unavailable: plugin not implemented"
(with the gateway's answer), never as a pass.

Per scenario and proxy it prints req/s, p50/p99/p99.9 latency, CPU-seconds per request
(utime+stime delta of the proxy process over the run, /proc/<pid>/stat; the nginx worker),
peak RSS (VmHWM), how busy the proxy's core was, and the gateway/nginx ratio of each (median
of the per-round ratios), with the load average at the start of each scenario.
Results go to bench/results/latest.json (bench/results/smoke.json with --smoke);
bench/report.py turns them into bench/results/proxy.png and Markdown tables.
Only loopback addresses are used; every run is bounded in time."""

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

PROXY_CPU = 1
LOAD_CPU = 0
METRICS = ("rps", "p50_ms", "p99_ms", "p999_ms", "cpu_us_per_req", "peak_rss_mb",
           "proxy_core_busy_pct")
LOWER_IS_BETTER = {"p50_ms", "p99_ms", "p999_ms", "cpu_us_per_req", "peak_rss_mb"}

WRK_LUA = r"""
local method = os.getenv("BENCH_METHOD") or "GET"
local size = tonumber(os.getenv("BENCH_BODY") or "0")
local apikey = os.getenv("BENCH_APIKEY")
wrk.method = method
if size > 0 then
  wrk.body = string.rep("x", size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end
if apikey and apikey ~= "" then wrk.headers["apikey"] = apikey end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,' ..
    '"mean_us":%.1f,"max_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""


class Scenario:
    def __init__(self, name, desc, tool="wrk", path="/", tls=False, conns=32, method="GET",
                 body=0, routes=0, ws=False, smoke=False, special=None, expect=b"ok",
                 prometheus=False, balanced=False, ratelimit=None, bare=False):
        self.name, self.desc, self.tool, self.path, self.tls = name, desc, tool, path, tls
        self.bare = bare
        self.ratelimit = ratelimit
        self.balanced = balanced
        self.conns, self.method, self.body, self.routes, self.ws = conns, method, body, routes, ws
        self.smoke, self.special, self.expect = smoke, special, expect
        self.prometheus = prometheus


SCENARIOS = [
    Scenario("plain", "HTTP/1.1, GET /, 1 route, 32 connections"),
    Scenario("plain-bare", "as plain, against nginx's bare proxy_pass: the peer does not "
             "set Kong's headers, which the gateway still does", bare=True),
    Scenario("prometheus", "plain + a global prometheus plugin (status codes, latencies, "
             "bandwidth, upstream health); compare with plain", prometheus=True),
    Scenario("ratelimit-local", "plain + a global rate-limiting plugin (local policy, a "
             "per-second limit never reached, by ip); compare with plain", ratelimit="local"),
    Scenario("ratelimit-redis", "as ratelimit-local with the redis policy, against a "
             "redis-server on the load generator's core", ratelimit="redis"),
    Scenario("upstream-3targets", "as plain, through an upstream of 3 targets (round-robin)",
             balanced=True),
    Scenario("tls-h1", "TLS 1.3 + HTTP/1.1 (wrk), keep-alive", tls=True),
    Scenario("tls-h2", "TLS 1.3 + HTTP/2 (h2load, 16 connections x 10 streams)",
             tool="h2load", tls=True, conns=16),
    Scenario("routes-10k", "10,000 routes (10,000 services), GET /svc-5000/x",
             path="/svc-5000/x", routes=10000),
    Scenario("keyauth-ratelimit", "key-auth + rate-limiting (local) on the route, via Admin API",
             special="keyauth"),
    Scenario("keyauth-acl", "key-auth + acl (allow one group) on the route, via Admin API",
             special="keyauth"),
    Scenario("http-log-stalled", "http-log on the route to a log receiver that accepts and "
             "never answers (queue.max_entries 10,000), via Admin API; compare p99 with plain",
             special="httplog"),
    Scenario("consumers-1m", "1,000,000 consumers + key-auth credentials loaded by "
             "`config db_import` (SQLite), GET /", special="consumers"),
    Scenario("ws-echo", "WebSocket echo, 64-byte messages, 16 connections (Python client)",
             tool="ws", path="/ws", ws=True, conns=16),
    Scenario("body-1mib-up", "1 MiB request body POSTed, streamed (request_buffering off)",
             path="/stream/up", method="POST", body=B.MIB, conns=8),
    Scenario("body-1mib-down", "1 MiB response body, streamed (response_buffering off)",
             path="/stream/big", conns=8, expect=None),
    Scenario("memory", "idle RSS; RSS with 10,000 routes + 100,000 consumers",
             special="memory"),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def log(msg):
    print(msg, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- load generators


def run_wrk(env, url, conns, duration, sc, apikey=None):
    e = dict(os.environ, BENCH_METHOD=sc.method, BENCH_BODY=str(sc.body),
             BENCH_APIKEY=apikey or "")
    cmd = ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
           "--latency", "--timeout", "10s", "-s", env.wrk_lua, url]
    p = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=duration + 60)
    line = next((l for l in p.stdout.splitlines() if l.startswith("BENCH_JSON ")), None)
    if p.returncode != 0 or line is None:
        B.die(f"wrk failed ({p.returncode}): {p.stdout[-2000:]} {p.stderr[-2000:]}")
    d = json.loads(line[len("BENCH_JSON "):])
    secs = d["duration_us"] / 1e6
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return {"requests": d["requests"], "seconds": secs, "rps": d["requests"] / secs,
            "p50_ms": d["p50_us"] / 1e3, "p99_ms": d["p99_us"] / 1e3,
            "p999_ms": d["p999_us"] / 1e3, "errors": errors,
            "error_detail": {k: d[k] for k in ("connect", "read", "write", "status", "timeout")}}


def run_h2load(env, url, conns, duration, sc):
    logf = os.path.join(env.tmp, "h2load.log")
    if os.path.exists(logf):
        os.unlink(logf)
    cmd = ["taskset", "-c", str(LOAD_CPU), "h2load", "-t1", f"-c{conns}", "-m10",
           f"-D{duration}", "--log-file", logf, url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    out = p.stdout
    if p.returncode != 0 or "Application protocol: h2" not in out:
        B.die(f"h2load failed or did not negotiate h2 ({p.returncode}): {out[-2000:]} "
              f"{p.stderr[-1000:]}")
    lat = []
    with open(logf) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    lat.sort()
    import re

    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    s = re.search(r"status codes: (\d+) 2xx", out)
    done, ok = int(m.group(2)), int(s.group(1))
    errors = int(m.group(4)) + int(m.group(5)) + int(m.group(6)) + (done - ok)
    from ws_echo import percentile

    return {"requests": done, "seconds": float(duration), "rps": done / float(duration),
            "p50_ms": percentile(lat, 50) / 1e3, "p99_ms": percentile(lat, 99) / 1e3,
            "p999_ms": percentile(lat, 99.9) / 1e3, "errors": errors}


def run_ws(env, url, conns, duration, sc):
    cmd = ["taskset", "-c", str(LOAD_CPU), sys.executable,
           os.path.join(B.HERE, "ws_echo.py"), "client", "--url", url, "--connections",
           str(conns), "--duration", str(duration), "--warmup", "0.5"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if p.returncode != 0:
        B.die(f"ws client failed: {p.stderr[-2000:]}")
    d = json.loads(p.stdout.strip().splitlines()[-1])
    d["requests"] = d.pop("messages")
    if p.stderr.strip():
        d["stderr"] = p.stderr.strip()[-500:]
    return d


def load(env, sc, port, duration, conns=None, apikey=None):
    conns = conns or sc.conns
    scheme = "https" if sc.tls else "http"
    if sc.tool == "wrk":
        return run_wrk(env, f"{scheme}://127.0.0.1:{port}{sc.path}", conns, duration, sc,
                       apikey)
    if sc.tool == "h2load":
        return run_h2load(env, f"https://127.0.0.1:{port}{sc.path}", conns, duration, sc)
    if sc.tool == "ws":
        return run_ws(env, f"ws://127.0.0.1:{port}{sc.path}", conns, duration, sc)
    raise ValueError(sc.tool)


# ---------------------------------------------------------------- targets


class Target:
    """One proxy under test: its process, the pid whose CPU/RSS we read, its ports."""

    def __init__(self, name, proc, pid, port, tls_port):
        self.name, self.proc, self.pid, self.port, self.tls_port = name, proc, pid, port, tls_port
        self.idle_rss_mb = B.proc_status_mb(pid, "VmRSS")

    def port_for(self, sc):
        return self.tls_port if sc.tls else self.port


class Env:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="tollgate-bench-")
        os.chmod(self.tmp, 0o755)
        self.wrk_lua = os.path.join(self.tmp, "report.lua")
        with open(self.wrk_lua, "w") as f:
            f.write(WRK_LUA)
        self.big = os.path.join(self.tmp, "big.bin")
        with open(self.big, "wb") as f:
            f.write(b"y" * B.MIB)
        self.cert, self.key = B.make_cert(self.tmp)
        self.up_port = B.free_port()
        self.upstream, self.upstream_pid = B.start_nginx(
            self.tmp, "upstream", B.upstream_conf(self.tmp, self.up_port, self.big), LOAD_CPU,
            self.up_port)
        self.ws_port = None
        self.ws_server = None
        self.procs = []

    def start_ws_server(self):
        if self.ws_server is None:
            self.ws_port = B.free_port()
            self.ws_server = subprocess.Popen(
                ["taskset", "-c", str(LOAD_CPU), sys.executable,
                 os.path.join(B.HERE, "ws_echo.py"), "server", "--port", str(self.ws_port)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            line = self.ws_server.stdout.readline()
            if line.strip() != "ready":
                B.die(f"ws echo server did not start: {self.ws_server.stderr.read()[-1000:]}")
        return self.ws_port

    def new_prefix(self):
        return tempfile.mkdtemp(prefix="gw-", dir=self.tmp)

    def db_import(self, prefix, cfg, timeout):
        """`tollgate config db_import cfg` into the SQLite store of `prefix`;
        returns (seconds, peak RSS MB, error or None)."""
        t0 = time.perf_counter()
        errf = open(os.path.join(prefix, "db_import.log"), "w")
        p = subprocess.Popen(["taskset", "-c", str(PROXY_CPU), self.args.bin, "config",
                              "db_import", cfg], env=B.base_env(prefix, "sqlite"),
                             stdout=errf, stderr=subprocess.STDOUT)
        self.procs.append(p)
        deadline = time.perf_counter() + timeout
        while True:
            pid, st, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(st)
                break
            if time.perf_counter() > deadline:
                B.stop(p)
                return None, None, f"db_import did not finish within {timeout:.0f} s"
            time.sleep(0.05)
        dt = time.perf_counter() - t0
        errf.close()
        if p.returncode != 0:
            with open(os.path.join(prefix, "db_import.log")) as f:
                return dt, None, f"db_import failed ({p.returncode}): {f.read()[-1500:]}"
        return dt, ru.ru_maxrss / 1024.0, None

    def start_gateway(self, config_text, tls=True, deadline_s=120, cpu=PROXY_CPU,
                      database="off", prefix=None):
        """A gateway pinned to `cpu`: DB-less with `config_text`, or (database="sqlite")
        on the store already in `prefix`."""
        prefix = prefix or self.new_prefix()
        cfg = os.path.join(prefix, "kong.yml")
        if database == "off":
            with open(cfg, "w") as f:
                f.write(config_text)
        port, tls_port = B.free_port(), (B.free_port() if tls else None)
        admin, status = B.free_port(), B.free_port()
        env = B.gateway_env(prefix, port, tls_port, admin, status, cfg, self.cert, self.key,
                            database=database)
        errlog = open(os.path.join(prefix, "stderr.log"), "w")
        t0 = time.perf_counter()
        p = subprocess.Popen(["taskset", "-c", str(cpu), self.args.bin, "start"], env=env,
                             stdout=errlog, stderr=subprocess.STDOUT)
        self.procs.append(p)
        waited = B.wait_ready(status, p, deadline_s=deadline_s)
        ready_s = time.perf_counter() - t0
        if waited is None:
            B.stop(p)
            with open(os.path.join(prefix, "stderr.log")) as f:
                tail = f.read()[-3000:]
            return None, f"gateway did not become ready (exit {p.returncode}): {tail}"
        t = Target("gateway", p, p.pid, port, tls_port)
        t.admin, t.status, t.ready_s, t.prefix = admin, status, ready_s, prefix
        return t, None

    def start_peer(self, routes=0, keyauth=None, ws=False, bare=False):
        port, tls_port = B.free_port(), B.free_port()
        conf = B.peer_conf(self.tmp, port, tls_port, self.up_port, self.ws_port if ws else None,
                           self.cert, self.key, routes=routes, keyauth=keyauth, bare=bare)
        p, worker = B.start_nginx(self.tmp, "peer", conf, PROXY_CPU, port)
        self.procs.append(p)
        return Target("nginx", p, worker, port, tls_port)

    def close(self):
        for p in self.procs:
            B.stop(p)
        B.stop(self.ws_server)
        B.stop(self.upstream)
        if not self.args.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- measurement


def check(target, sc, apikey=None):
    """One request through the proxy before measuring: 200 and the upstream's body."""
    if sc.tool == "ws":
        return
    body = b"x" * sc.body if sc.body else None
    headers = {"apikey": apikey} if apikey else {}
    status, got, _ = B.http_get(target.port_for(sc), sc.path, tls=sc.tls, method=sc.method,
                                body=body, headers=headers)
    if status != 200 or (sc.expect is not None and got != sc.expect):
        B.die(f"{target.name} answered {status} {got[:200]!r} on {sc.path} ({sc.name})")
    if sc.path == "/stream/big" and len(got) != B.MIB:
        B.die(f"{target.name} returned {len(got)} bytes on /stream/big")


def same_work(gw, peer):
    """Proof that the gateway and the nginx peer do the same header work (`KONG_HEADERS`):
    the same request headers reach the upstream (its /bench/headers echoes them) and the
    client gets Kong's response headers from both. Values differ (addresses, ids,
    latencies); which headers are there must not."""
    seen = {}
    for t in (gw, peer):
        status, body, headers = B.http_get(t.port, "/bench/headers")
        if status != 200:
            B.die(f"{t.name} answered {status} on /bench/headers")
        sent = {n for n, _, v in (ln.partition("=") for ln in body.decode().splitlines()) if v}
        names = {k.lower() for k in headers}
        seen[t.name] = (sent, {n for n in B.KONG_RESPONSE if n in names})
    if seen[gw.name] != seen[peer.name] or not seen[gw.name][1]:
        B.die("the gateway and the nginx peer do not do the same header work "
              f"(upstream request headers, Kong's response headers): {seen}")
    return sorted(seen[gw.name][0]), sorted(seen[gw.name][1])


def measure(env, target, sc, duration, apikey=None, perf_out=None):
    c0 = B.cpu_seconds(target.pid)
    perf = None
    if perf_out:
        perf = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "997", "--call-graph", "dwarf,16384",
             "-p", str(target.pid), "-o", perf_out, "--", "sleep", str(duration)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
    r = load(env, sc, target.port_for(sc), duration, apikey=apikey)
    if perf:
        perf.wait(timeout=120)
    cpu = B.cpu_seconds(target.pid) - c0
    r["cpu_s"] = cpu
    r["cpu_us_per_req"] = cpu / r["requests"] * 1e6 if r["requests"] else None
    # below ~95% the proxy was not the bottleneck (the load core was)
    r["proxy_core_busy_pct"] = 100.0 * cpu / r["seconds"] if r["seconds"] else None
    r["peak_rss_mb"] = B.proc_status_mb(target.pid, "VmHWM")
    if target.proc.poll() is not None:
        B.die(f"{target.name} exited during {sc.name}")
    return r


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def run_pair(env, sc, gw, peer, args, apikey=None):
    """Warm-up, then `rounds` alternating rounds; returns the scenario's result dict."""
    targets = {"gateway": gw, "nginx": peer}
    for t in targets.values():
        check(t, sc, apikey)
    for t in targets.values():
        if args.warmup > 0:
            load(env, sc, t.port_for(sc), args.warmup, apikey=apikey)
    rounds = []
    for r in range(args.rounds):
        order = ["gateway", "nginx"] if r % 2 == 0 else ["nginx", "gateway"]
        res = {}
        for name in order:
            perf_out = None
            if args.flamegraph and r == 0:
                perf_out = os.path.join(env.tmp, f"perf-{sc.name}-{name}.data")
            res[name] = measure(env, targets[name], sc, args.duration, apikey, perf_out)
            m = res[name]
            log(f"  round {r + 1} {name:7s} {fmt(m['rps'], 0):>10s} req/s  "
                f"p50 {fmt(m['p50_ms'], 3)} ms  p99 {fmt(m['p99_ms'], 3)} ms  "
                f"p99.9 {fmt(m['p999_ms'], 3)} ms  cpu {fmt(m['cpu_us_per_req'], 1)} us/req  "
                f"hwm {fmt(m['peak_rss_mb'], 1)} MB  core {fmt(m['proxy_core_busy_pct'], 0)}%  "
                f"errors {m['errors']}")
            if m["errors"]:
                log(f"  WARNING: {m['errors']} errors: {m.get('error_detail', '')}")
            if args.flamegraph and perf_out:
                flamegraph(env, perf_out, sc.name, name)
            time.sleep(0.2)
        rounds.append(res)
    summary = {}
    for name in targets:
        summary[name] = {k: median([rd[name][k] for rd in rounds]) for k in METRICS}
        summary[name]["errors"] = sum(rd[name]["errors"] for rd in rounds)
        summary[name]["idle_rss_mb"] = targets[name].idle_rss_mb
    ratio = {}
    for k in METRICS:
        per = []
        for rd in rounds:
            a, b = rd["gateway"][k], rd["nginx"][k]
            if a is not None and b:
                per.append(a / b)
        ratio[k] = median(per)
    summary["ratio"] = ratio
    return {"status": "ok", "description": sc.desc, "tool": sc.tool, "connections": sc.conns,
            "rounds": rounds, "summary": summary,
            "gateway_ready_s": getattr(gw, "ready_s", None)}


def flamegraph(env, perf_data, name, who):
    out_dir = env.args.results
    os.makedirs(out_dir, exist_ok=True)
    folded = os.path.join(env.tmp, f"flame-{name}-{who}.folded")  # MBs: not kept
    svg = os.path.join(out_dir, f"flame-{name}-{who}.svg")
    collapse = shutil.which("inferno-collapse-perf") or os.path.expanduser(
        "~/.cargo/bin/inferno-collapse-perf")
    flame = shutil.which("inferno-flamegraph") or os.path.expanduser(
        "~/.cargo/bin/inferno-flamegraph")
    if not (os.path.exists(collapse) and os.path.exists(flame)):
        log("  flame graph skipped: inferno not installed (cargo install inferno)")
        return
    with open(folded, "w") as f:
        script = subprocess.Popen(["perf", "script", "-i", perf_data], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        subprocess.run([collapse, "--kernel"], stdin=script.stdout, stdout=f,
                       check=True)
        script.wait()
    with open(folded) as fi, open(svg, "w") as fo:
        subprocess.run([flame, "--title", f"{who}: {name} (perf cpu-clock 997 Hz, dwarf "
                        "unwinding, proxy core only)"],
                       stdin=fi, stdout=fo, check=True)
    log(f"  flame graph: {os.path.relpath(svg, B.REPO)}")
    top = os.path.join(out_dir, f"flame-{name}-{who}.top.txt")
    with open(top, "w") as f:
        f.write(flame_summary(folded, f"{who}: {name}"))
    log(f"  self-time summary: {os.path.relpath(top, B.REPO)}")


def flame_summary(folded, title, n=40):
    """Kernel/user split and the functions with the most self time (leaf samples) and
    the most total time (inclusive) in a folded-stacks file, as text."""
    import collections

    total = kern = 0
    leaf, incl = collections.Counter(), collections.Counter()
    with open(folded) as f:
        for line in f:
            stack, _, cnt = line.rstrip("\n").rpartition(" ")
            if not cnt.isdigit():
                continue
            c = int(cnt)
            frames = stack.split(";")
            total += c
            if frames[-1].endswith("_[k]"):
                kern += c
            leaf[frames[-1]] += c
            for fr in set(frames):
                incl[fr] += c
    if not total:
        return f"# {title}: no samples\n"
    out = [f"# {title}: perf cpu-clock samples of the proxy process",
           f"# kernel (leaf frame in the kernel): {100 * kern / total:.1f}%, user space: "
           f"{100 * (total - kern) / total:.1f}%", "", f"## self time, top {n}", ""]
    out += [f"{100 * c / total:6.2f}%  {fr[:300]}" for fr, c in leaf.most_common(n)]
    out += ["", f"## inclusive time, top {2 * n} (frames of this process's code only)", ""]
    mine = [(fr, c) for fr, c in incl.most_common() if "tollgate" in fr]
    out += [f"{100 * c / total:6.2f}%  {fr[:300]}" for fr, c in mine[:2 * n]]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- scenarios


def scenario_load(env, sc, args):
    if sc.tool == "h2load" and shutil.which("h2load") is None:
        return skipped("h2load not installed (apt-get install nghttp2-client)")
    if sc.tool == "ws":
        try:
            import websockets  # noqa: F401
        except ImportError:
            return skipped("Python package 'websockets' not installed (pip install websockets)")
    ws_port = env.start_ws_server() if sc.ws else None
    routes = sc.routes
    redis = None
    ratelimit = sc.ratelimit
    if ratelimit == "redis":
        if shutil.which("redis-server") is None:
            return skipped("redis-server not installed (apt-get install redis-server)")
        redis, port = B.start_redis(env.tmp, cpu=LOAD_CPU)
        ratelimit = f"redis:{port}"
    cfg = B.declarative(env.up_port, ws_port=ws_port, routes=routes, prometheus=sc.prometheus,
                        balanced=sc.balanced, ratelimit=ratelimit)
    gw, err = env.start_gateway(cfg)
    if gw is None:
        B.die(err)
    peer = env.start_peer(routes=routes, ws=sc.ws, bare=sc.bare)
    try:
        if not sc.bare:
            sent, added = same_work(gw, peer)
            log(f"  same header work: upstream gets {', '.join(sent)}; client gets "
                f"{', '.join(added)}")
        if ratelimit:
            ratelimit_answers(gw)
        res = run_pair(env, sc, gw, peer, args)
        res["routes"] = routes or None
        if sc.prometheus:
            res["metrics_counted"] = metrics_counted(gw)
    finally:
        B.stop(gw.proc)
        B.stop(peer.proc)
        if redis is not None:
            B.stop(redis)
    return res


def ratelimit_answers(gw):
    """Proof the rate-limiting plugin runs: its headers on a proxied response."""
    status, _, headers = B.http_get(gw.port, "/")
    names = {k.lower() for k in dict(headers)}
    if status != 200 or "x-ratelimit-remaining-second" not in names:
        B.die(f"the rate-limiting scenario got {status} without its headers: {headers}")


def metrics_counted(gw):
    """Requests the gateway's /metrics (status listener) counted: proof the plugin ran."""
    status, body, _ = B.http_get(gw.status, "/metrics")
    if status != 200:
        B.die(f"/metrics answered {status}")
    total = 0
    for line in body.decode().splitlines():
        if line.startswith("kong_http_requests_total{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    if total == 0:
        B.die("the prometheus scenario counted no request on /metrics")
    log(f"  /metrics: kong_http_requests_total = {total}")
    return total


def skipped(reason):
    log(f"  SKIPPED: {reason}")
    return {"status": "skipped", "reason": reason}


def unavailable(reason, **extra):
    """A scenario the gateway cannot run yet (e.g. its plugins do not exist): reported
    as such in the table and the JSON, never as a pass."""
    log(f"  UNAVAILABLE: {reason}")
    return dict(extra, status="unavailable", reason=f"unavailable: {reason}")


def plugins_enabled(env):
    """The gateway's enabled plugins (GET /plugins/enabled), from a throwaway instance."""
    gw, err = env.start_gateway(B.declarative(env.up_port), tls=False)
    if gw is None:
        B.die(err)
    try:
        status, body, _ = B.http_get(gw.admin, "/plugins/enabled")
        enabled = json.loads(body).get("enabled_plugins", []) if status == 200 else []
        return enabled, gw.idle_rss_mb
    finally:
        B.stop(gw.proc)


def sqlite_gateway(env, args, consumers=0, tls=True):
    """A gateway on SQLite, filled by `tollgate config db_import` of a generated file with
    the base routes (and `consumers` consumers with key-auth credentials). Returns
    (gateway Target or None, import figures dict)."""
    prefix = env.new_prefix()
    cfg = os.path.join(prefix, "import.yml")
    t0 = time.perf_counter()
    size = B.write_declarative(cfg, env.up_port, consumers=consumers)
    gen_s = time.perf_counter() - t0
    dt, rss, err = env.db_import(prefix, cfg, timeout=args.load_timeout)
    os.unlink(cfg)
    figs = {"consumers": consumers, "config_mib": size / B.MIB, "generate_s": gen_s,
            "import_s": dt, "import_peak_rss_mb": rss}
    if err:
        figs.update(status="failed", reason=err[:800])
        return None, figs
    gw, err = env.start_gateway(None, tls=tls, deadline_s=args.load_timeout,
                                database="sqlite", prefix=prefix)
    if gw is None:
        figs.update(status="failed", reason=err[:800])
        return None, figs
    figs.update(status="ok", ready_s=gw.ready_s, rss_mb=B.proc_status_mb(gw.pid, "VmRSS"),
                peak_rss_mb=B.proc_status_mb(gw.pid, "VmHWM"))
    return gw, figs


def wait_status(port, want, apikey=None, deadline_s=15):
    """Polls GET / until it answers `want` (the snapshot is rebuilt asynchronously after
    an Admin API write); returns the last status."""
    t0 = time.perf_counter()
    status = None
    while time.perf_counter() - t0 < deadline_s:
        status, _, _ = B.http_get(port, "/", headers={"apikey": apikey} if apikey else {})
        if status == want:
            return status
        time.sleep(0.05)
    return status


def scenario_keyauth(env, sc, args):
    """key-auth + rate-limiting set up the way a Kong user does it, through the Admin API
    (POST /routes/root/plugins, POST /consumers, POST /consumers/bench/key-auth) on a
    SQLite-backed gateway. Until Tollgate has the plugins, POST /plugins is refused and the
    scenario reports "unavailable: plugin not implemented" with the gateway's answer."""
    key = "bench-secret-key"
    second = ({"name": "acl", "config": {"allow": ["bench"]}} if sc.name == "keyauth-acl"
              else {"name": "rate-limiting", "config": {"second": 100000000, "policy": "local"}})
    gw, figs = sqlite_gateway(env, args, tls=False)
    if gw is None:
        B.die(f"gateway on SQLite did not start: {figs.get('reason')}")
    peer = None
    try:
        refused = []
        for body in ({"name": "key-auth", "config": {"key_names": ["apikey"]}}, second):
            status, answer = B.admin_json(gw.admin, "POST", "/routes/root/plugins", body)
            if status not in (200, 201):
                msg = answer.get("message") if isinstance(answer, dict) else answer
                refused.append(f"POST /routes/root/plugins name={body['name']} -> {status} "
                               f"{str(msg)[:200]}")
        if refused:
            return unavailable("plugin not implemented (" + "; ".join(refused) + ")",
                               refused=refused)
        for path, body in (("/consumers", {"username": "bench"}),
                           ("/consumers/bench/key-auth", {"key": key}),
                           ("/consumers/bench/acls", {"group": "bench"})):
            status, answer = B.admin_json(gw.admin, "POST", path, body)
            if status not in (200, 201):
                B.die(f"POST {path} -> {status} {answer}")
        got = wait_status(gw.port, 401)
        if got != 401:
            B.die(f"key-auth accepted by the Admin API but GET / without a key got {got}")
        got = wait_status(gw.port, 200, apikey=key)
        if got != 200:
            B.die(f"GET / with a valid key got {got}")
        peer = env.start_peer(keyauth=key)
        return run_pair(env, sc, gw, peer, args, apikey=key)
    finally:
        B.stop(gw.proc)
        if peer:
            B.stop(peer.proc)


def stalled_receiver():
    """A log receiver that accepts connections and never reads or answers: http-log's
    first request waits for its 10 s timeout, retries follow, and the queue fills.
    Returns (port, list of accepted connections)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted.append(conn)  # held open, never answered

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], accepted


def scenario_httplog(env, sc, args):
    """http-log added through the Admin API on a SQLite-backed gateway, pointed at a
    receiver that stalls: logging must not slow the proxied responses (p99 against the
    plain scenario's), and the queue stays bounded."""
    port, accepted = stalled_receiver()
    gw, figs = sqlite_gateway(env, args, tls=False)
    if gw is None:
        B.die(f"gateway on SQLite did not start: {figs.get('reason')}")
    peer = None
    try:
        body = {"name": "http-log", "config": {
            "http_endpoint": f"http://127.0.0.1:{port}/log", "queue": {"max_entries": 10000}}}
        status, answer = B.admin_json(gw.admin, "POST", "/routes/root/plugins", body)
        if status not in (200, 201):
            msg = answer.get("message") if isinstance(answer, dict) else answer
            return unavailable(f"POST /routes/root/plugins name=http-log -> {status} "
                               f"{str(msg)[:200]}")
        t0 = time.perf_counter()
        while not accepted:
            if time.perf_counter() - t0 > 15:
                B.die("http-log accepted by the Admin API but no log request reached the "
                      "receiver")
            B.http_get(gw.port, "/")
            time.sleep(0.05)
        peer = env.start_peer()
        res = run_pair(env, sc, gw, peer, args)
        res["receiver_connections"] = len(accepted)
        res["gateway_rss_mb_after"] = B.proc_status_mb(gw.pid, "VmRSS")
        return res
    finally:
        B.stop(gw.proc)
        if peer:
            B.stop(peer.proc)


def scenario_consumers(env, sc, args):
    """`consumers` consumers with key-auth credentials imported into SQLite by
    `tollgate config db_import`, then GET / proxied with them loaded (the nginx peer is
    the plain one: it has no consumers). The key-auth lookup itself is measured once the
    plugin exists (keyauth-ratelimit); here a key from the middle of the set is sent."""
    n = args.consumers
    log(f"  generating {n:,} consumers + key-auth credentials; config db_import into SQLite")
    gw, figs = sqlite_gateway(env, args, consumers=n)
    if gw is None:
        log(f"  gateway did not load {n:,} consumers: {figs['reason']}")
        return {"status": "failed", "reason": figs["reason"], "load": figs}
    log(f"  db_import of {figs['config_mib']:.0f} MiB: {figs['import_s']:.1f} s, peak RSS "
        f"{figs['import_peak_rss_mb']:.0f} MB; gateway ready in {figs['ready_s']:.2f} s, "
        f"RSS {figs['rss_mb']:.1f} MB")
    key = f"key-{n // 2:08d}"
    status, _, _ = B.http_get(gw.admin, f"/consumers/user-{n // 2}")
    if status != 200:
        B.stop(gw.proc)
        B.die(f"GET /consumers/user-{n // 2} -> {status}: the import lost consumers")
    # key-auth on the route, so every request looks its key up among the n consumers.
    status, answer = B.admin_json(gw.admin, "POST", "/routes/root/plugins",
                                  {"name": "key-auth", "config": {"key_names": ["apikey"]}})
    keyauth = status in (200, 201)
    if keyauth:
        if wait_status(gw.port, 401) != 401 or wait_status(gw.port, 200, apikey=key) != 200:
            B.stop(gw.proc)
            B.die("key-auth with the imported consumers did not answer 401 without a key "
                  "and 200 with one")
    peer = env.start_peer(keyauth=key if keyauth else None)
    try:
        res = run_pair(env, sc, gw, peer, args, apikey=key)
        res["load"] = figs
        res["note"] = (f"key-auth on the route: each request's key is looked up among {n:,}"
                       if keyauth else
                       f"key-auth refused ({status} {answer}): the consumers are loaded but no "
                       "request looks one up")
        return res
    finally:
        B.stop(gw.proc)
        B.stop(peer.proc)


def gateway_load_figures(env, config_text, deadline_s):
    gw, err = env.start_gateway(config_text, tls=False, deadline_s=deadline_s)
    if gw is None:
        return {"status": "failed", "reason": err[:500]}
    try:
        return {"status": "ok", "ready_s": gw.ready_s,
                "rss_mb": B.proc_status_mb(gw.pid, "VmRSS"),
                "peak_rss_mb": B.proc_status_mb(gw.pid, "VmHWM")}
    finally:
        B.stop(gw.proc)


def scenario_memory(env, sc, args):
    _, idle = plugins_enabled(env)
    peer = env.start_peer()
    peer_idle = peer.idle_rss_mb
    B.stop(peer.proc)
    log(f"  idle RSS: gateway {idle:.1f} MB, nginx worker {peer_idle:.1f} MB")
    routes, consumers = args.memory_routes, args.memory_consumers
    big = gateway_load_figures(
        env, B.declarative(env.up_port, routes=routes, consumers=consumers),
        deadline_s=args.load_timeout)
    if big["status"] == "ok":
        log(f"  gateway with {routes:,} routes + {consumers:,} consumers: ready in "
            f"{big['ready_s']:.2f} s, RSS {big['rss_mb']:.1f} MB, peak {big['peak_rss_mb']:.1f} MB")
    else:
        log(f"  gateway did not load {routes:,} routes + {consumers:,} consumers: {big['reason']}")
    return {"status": "ok", "idle_rss_mb": {"gateway": idle, "nginx": peer_idle},
            "loaded": dict(big, routes=routes, consumers=consumers)}


# ---------------------------------------------------------------- report


def summary_table(results):
    """One row per scenario: gateway vs nginx and the ratio (median of per-round ratios)."""
    lines = ["| scenario | req/s gateway | req/s nginx | ratio | p99 ms gateway | p99 ms nginx | "
             "ratio | CPU µs/req gateway | CPU µs/req nginx | ratio | peak RSS MB gateway | "
             "peak RSS MB nginx |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if r.get("summary"):
            g, n, q = r["summary"]["gateway"], r["summary"]["nginx"], r["summary"]["ratio"]
            lines.append(
                f"| {name} | {fmt(g['rps'], 0)} | {fmt(n['rps'], 0)} | **{fmt(q['rps'])}×** | "
                f"{fmt(g['p99_ms'], 3)} | {fmt(n['p99_ms'], 3)} | **{fmt(q['p99_ms'])}×** | "
                f"{fmt(g['cpu_us_per_req'], 1)} | {fmt(n['cpu_us_per_req'], 1)} | "
                f"**{fmt(q['cpu_us_per_req'])}×** | {fmt(g['peak_rss_mb'], 1)} | "
                f"{fmt(n['peak_rss_mb'], 1)} |")
        elif r.get("status") in ("unavailable", "skipped", "failed"):
            lines.append(f"| {name} | {r['status'].upper()} | | | | | | | | | | |")
    return "\n".join(lines)


def table(results):
    lines = ["| scenario | proxy | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | peak RSS MB "
             "| proxy core busy |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for name, r in results.items():
        if r.get("summary"):
            s = r["summary"]
            for who in ("gateway", "nginx"):
                m = s[who]
                lines.append(f"| {name} | {who} | {fmt(m['rps'], 0)} | {fmt(m['p50_ms'], 3)} | "
                             f"{fmt(m['p99_ms'], 3)} | {fmt(m['p999_ms'], 3)} | "
                             f"{fmt(m['cpu_us_per_req'], 1)} | {fmt(m['peak_rss_mb'], 1)} | "
                             f"{fmt(m.get('proxy_core_busy_pct'), 0)}% |")
            q = s["ratio"]
            lines.append(f"| {name} | **gateway/nginx** | **{fmt(q['rps'])}×** | "
                         f"{fmt(q['p50_ms'])}× | **{fmt(q['p99_ms'])}×** | {fmt(q['p999_ms'])}× "
                         f"| **{fmt(q['cpu_us_per_req'])}×** | {fmt(q['peak_rss_mb'])}× | |")
            errs = s["gateway"]["errors"] + s["nginx"]["errors"]
            if errs:
                notes.append(f"- **{name}**: {s['gateway']['errors']} gateway / "
                             f"{s['nginx']['errors']} nginx errors during the runs")
        if r.get("status") == "unavailable":
            notes.append(f"- **{name}**: {r['reason']}")
        elif r.get("status") in ("skipped", "failed"):
            notes.append(f"- **{name}**: {r['status'].upper()} — {r['reason']}")
        if r.get("note"):
            notes.append(f"- **{name}**: {r['note']}")
        if r.get("load"):
            ld = r["load"]
            if ld.get("status") == "ok":
                notes.append(f"- **{name}**: `config db_import` of {ld['consumers']:,} consumers "
                             f"+ key-auth credentials ({ld['config_mib']:.0f} MiB of YAML) took "
                             f"{ld['import_s']:.1f} s (peak RSS {ld['import_peak_rss_mb']:.0f} "
                             f"MB); the gateway was then ready in {ld['ready_s']:.2f} s with "
                             f"RSS {ld['rss_mb']:.1f} MB")
            else:
                notes.append(f"- **{name}**: loading {ld.get('consumers')} consumers failed: "
                             f"{ld.get('reason')}")
        if name == "memory" and r.get("status") == "ok":
            i = r["idle_rss_mb"]
            ld = r["loaded"]
            notes.append(f"- **memory**: idle RSS gateway {i['gateway']:.1f} MB, nginx worker "
                         f"{i['nginx']:.1f} MB")
            if ld.get("status") == "ok":
                notes.append(f"- **memory**: gateway (DB-less) with {ld['routes']:,} routes + "
                             f"{ld['consumers']:,} consumers: RSS {ld['rss_mb']:.1f} MB, peak "
                             f"{ld['peak_rss_mb']:.1f} MB, ready in {ld['ready_s']:.2f} s")
            else:
                notes.append(f"- **memory**: gateway with {ld['routes']:,} routes + "
                             f"{ld['consumers']:,} consumers failed: {ld.get('reason')}")
        if r.get("loadavg"):
            pass
    return "\n".join(lines + [""] + notes)


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    model = ""
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return {"nproc": sh(["nproc"]), "cpu": model, "kernel": platform.release(),
            "nginx": sh(["nginx", "-v"]) or subprocess.run(
                ["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
            "wrk": (sh(["wrk", "-v"]).splitlines() or [""])[0],
            "h2load": sh(["h2load", "--version"]),
            "loadavg": open("/proc/loadavg").read().strip()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="CI mode: every scenario, no warm-up, 1 round of 1 s, 10,000 "
                    "consumers (< 90 s in all)")
    ap.add_argument("--scenario", action="append", default=[],
                    help="scenario name (repeatable or comma-separated); default all")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--duration", type=int, default=None, help="seconds per run")
    ap.add_argument("--warmup", type=int, default=None, help="seconds of warm-up per proxy")
    ap.add_argument("--bin", default=None, help="tollgate binary")
    ap.add_argument("--consumers", type=int, default=None,
                    help="consumers for consumers-1m (default 1,000,000; smoke 10,000)")
    ap.add_argument("--memory-routes", type=int, default=10000)
    ap.add_argument("--memory-consumers", type=int, default=100000)
    ap.add_argument("--load-timeout", type=float, default=600,
                    help="seconds allowed for a large declarative config to load")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/latest.json"
                    ", or smoke.json with --smoke)")
    ap.add_argument("--results", default=os.path.join(B.HERE, "results"))
    ap.add_argument("--flamegraph", action="store_true",
                    help="perf record the gateway in round 1 and write flame-<scenario>.svg")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()

    if args.list:
        for s in SCENARIOS:
            log(f"{s.name:18s} {s.desc}")
        return 0
    names = [n for arg in args.scenario for n in arg.split(",") if n]
    for n in names:
        if n not in BY_NAME:
            B.die(f"unknown scenario {n!r}; --list shows them")
    if not names:
        names = [s.name for s in SCENARIOS]
    if args.smoke:
        args.rounds = args.rounds or 1
        args.duration = args.duration or 1
        args.warmup = 0 if args.warmup is None else args.warmup
        args.consumers = args.consumers or 10000
        args.memory_consumers = min(args.memory_consumers, 10000)
        args.load_timeout = min(args.load_timeout, 60)
    args.rounds = args.rounds or 3
    args.duration = args.duration or 10
    args.warmup = 2 if args.warmup is None else args.warmup
    args.consumers = args.consumers or 1000000
    # wrk and h2load take whole seconds.
    if args.duration < 1 or args.duration != int(args.duration):
        B.die("--duration must be a whole number of seconds")
    if args.warmup != int(args.warmup):
        B.die("--warmup must be a whole number of seconds (0 for none)")
    args.duration, args.warmup = int(args.duration), int(args.warmup)
    args.bin = args.bin or B.default_bin()
    if not args.bin or not os.path.isfile(args.bin):
        B.die("no tollgate binary: build it (cargo build --release) or pass --bin PATH")
    args.bin = os.path.abspath(args.bin)
    tools = ["nginx", "wrk", "taskset", "openssl"]
    B.need_tools(tools)
    if os.cpu_count() < 2:
        B.die("needs at least 2 CPUs (core 0: load + upstream, core 1: proxy)")
    if args.flamegraph:
        B.need_tools(["perf"])
    out = args.out or os.path.join(args.results, "smoke.json" if args.smoke else "latest.json")

    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["bench/run.sh"] + sys.argv[1:]),
            "binary": args.bin, "smoke": args.smoke, "rounds": args.rounds,
            "duration_s": args.duration, "warmup_s": args.warmup,
            "machine": machine(), "proxy_cpu": PROXY_CPU, "load_cpu": LOAD_CPU}
    log(f"tollgate bench: {args.bin}; {args.rounds} round(s) x {args.duration} s; "
        f"proxy on core {PROXY_CPU}, upstream + load on core {LOAD_CPU}")
    log(f"load average at start: {meta['machine']['loadavg']}")
    t_start = time.perf_counter()
    env = Env(args)
    results = {}
    try:
        for name in names:
            sc = BY_NAME[name]
            la = open("/proc/loadavg").read().split()[:3]
            log(f"== {name}: {sc.desc}  (load average {' '.join(la)})")
            if sc.special == "keyauth":
                results[name] = scenario_keyauth(env, sc, args)
            elif sc.special == "httplog":
                results[name] = scenario_httplog(env, sc, args)
            elif sc.special == "consumers":
                results[name] = scenario_consumers(env, sc, args)
            elif sc.special == "memory":
                results[name] = scenario_memory(env, sc, args)
            else:
                results[name] = scenario_load(env, sc, args)
            results[name]["loadavg_start"] = " ".join(la)
    finally:
        env.close()
    meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    meta["loadavg_end"] = open("/proc/loadavg").read().strip()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"meta": meta, "scenarios": results}, f, indent=1)
    log("")
    log(f"Results (median over {args.rounds} round(s); ratio = median of per-round "
        f"gateway/nginx; lower is better except req/s):")
    log("")
    log(summary_table(results))
    log("")
    log(table(results))
    log("")
    log(f"load average at end: {meta['loadavg_end']}")
    log(f"wrote {os.path.relpath(out, os.getcwd())} in {meta['elapsed_s']} s")
    # A scenario that ran and broke fails the run (CI's smoke mode relies on it); one whose
    # feature is missing ("unavailable") or whose tool is absent ("skipped") is reported only.
    failed = [n for n, r in results.items() if r.get("status") == "failed"]
    if failed:
        log(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
