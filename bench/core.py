#!/usr/bin/env python3
"""Core benchmarks (issue: gateway core): Admin API creates per second on SQLite,
`config db_import` of 10,000 services with routes plus 100,000 consumers with key-auth
credentials (wall time and peak RSS), and start-to-ready with that data.

    python3 bench/core.py --bin target/release/tollgate            # full run
    python3 bench/core.py --bin target/debug/tollgate --smoke     # tiny sizes, for CI

Only loopback, bounded counts. Prints a Markdown table of the figures."""

import argparse, json, os, socket, subprocess, sys, tempfile, threading, time
import http.client


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def env_for(prefix, admin=None, proxy=None, status=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KONG_", "TOLLGATE_"))}
    env["TOLLGATE_PREFIX"] = prefix
    if admin:
        env["TOLLGATE_ADMIN_LISTEN"] = f"127.0.0.1:{admin}"
        env["TOLLGATE_PROXY_LISTEN"] = f"127.0.0.1:{proxy}"
        env["TOLLGATE_STATUS_LISTEN"] = f"127.0.0.1:{status}"
    env["TOLLGATE_LOG_LEVEL"] = "warn"
    return env


def run_measured(cmd, env):
    """Runs a command, returns (seconds, peak RSS in MB, exit code)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{cmd} failed ({code}):\n{err}")
    return dt, ru.ru_maxrss / 1024.0, code


def write_config(path, services, consumers):
    with open(path, "w") as f:
        f.write('_format_version: "3.0"\nservices:\n')
        for i in range(services):
            f.write(f"- name: svc-{i}\n  url: http://10.0.{i // 250}.{i % 250}:8080/api\n"
                    f"  routes:\n  - name: route-{i}\n    paths: [/svc-{i}]\n")
        f.write("consumers:\n")
        for i in range(consumers):
            f.write(f"- username: user-{i}\n  keyauth_credentials:\n  - key: key-{i:08d}\n")


def wait_ready(status_port, deadline_s=60):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        try:
            c = http.client.HTTPConnection("127.0.0.1", status_port, timeout=1)
            c.request("GET", "/status/ready")
            if c.getresponse().status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.005)
    sys.exit("gateway did not become ready")


def admin_creates(admin_port, seconds, workers):
    count = [0] * workers
    errors = [0] * workers
    stop = time.perf_counter() + seconds

    def work(w):
        c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
        c.connect()
        # http.client writes headers and body separately; without NODELAY, Nagle plus
        # delayed ACKs would measure the client, not the gateway.
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        i = 0
        while time.perf_counter() < stop:
            body = json.dumps({"username": f"bench-{workers}-{w}-{i}"})
            c.request("POST", "/consumers", body, {"content-type": "application/json"})
            r = c.getresponse()
            body = r.read()
            if r.status == 201:
                count[w] += 1
            else:
                errors[w] += 1
                if errors[w] == 1:
                    print(f"admin create failed: {r.status} {body}", file=sys.stderr)
            i += 1

    t0 = time.perf_counter()
    ts = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    return sum(count) / dt, sum(errors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    services, consumers, seconds = (100, 1000, 1) if a.smoke else (10_000, 100_000, 10)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        prefix = os.path.join(d, "prefix")
        cfg = os.path.join(d, "kong.yml")
        write_config(cfg, services, consumers)
        dt, rss, _ = run_measured([a.bin, "config", "db_import", cfg], env_for(prefix))
        rows.append((f"db_import {services} services+routes, {consumers} consumers+key-auth", f"{dt:.2f} s", f"peak RSS {rss:.0f} MB"))

        ports = (free_port(), free_port(), free_port())
        env = env_for(prefix, *ports)
        t0 = time.perf_counter()
        p = subprocess.Popen([a.bin, "start"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ready = wait_ready(ports[2])
            rows.append(("start-to-ready with that data", f"{ready:.3f} s", ""))
            for workers in (1, 4):
                rate, errs = admin_creates(ports[0], seconds, workers)
                if errs:
                    sys.exit(f"{errs} admin creates failed")
                rows.append((f"Admin API creates/s (POST /consumers, {workers} client{'s' if workers > 1 else ''})", f"{rate:.0f}/s", "SQLite, synchronous=FULL"))
            with open(f"/proc/{p.pid}/status") as f:
                hwm = next(l for l in f if l.startswith("VmHWM")).split()[1]
            rows.append(("gateway peak RSS after the run", f"{int(hwm) / 1024:.0f} MB", ""))
        finally:
            p.terminate()
            p.wait(timeout=30)
    print("| benchmark | figure | note |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
