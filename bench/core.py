#!/usr/bin/env python3
"""Core benchmarks (issue: gateway core): Admin API creates per second on SQLite,
`config db_import` of 10,000 services with routes plus 100,000 consumers with key-auth
credentials (wall time and peak RSS), and start-to-ready with that data.

    python3 bench/core.py --bin target/release/tollgate            # full run
    python3 bench/core.py --bin target/debug/tollgate --smoke     # tiny sizes, for CI
    python3 bench/core.py --bin target/release/tollgate --consumers 1000000

`--consumers N` runs the consumer-index benchmark instead (issue: plugins): N consumers
with key-auth credentials imported, the gateway's start-to-ready and RSS growth for them
(against the same gateway started without them), and how long one credential created
(or deleted) through the Admin API takes to take effect on a key-auth route.

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


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith(key)).split()[1]) / 1024.0


def start_gateway(binary, prefix):
    ports = (free_port(), free_port(), free_port())
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "start"], env=env_for(prefix, *ports),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready = wait_ready(ports[2], deadline_s=600)
    return p, ports, ready, time.perf_counter() - t0


def upstream():
    """A loopback upstream answering 200 to everything."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv.server_address[1]


def write_consumers_config(path, consumers, up_port):
    with open(path, "w") as f:
        f.write('_format_version: "3.0"\nservices:\n'
                f"- name: ka\n  url: http://127.0.0.1:{up_port}/\n"
                "  routes:\n  - name: ka\n    paths: [/ka]\n"
                "  plugins:\n  - name: key-auth\n")
        if consumers:
            f.write("consumers:\n")
            for i in range(consumers):
                f.write(f"- username: user-{i}\n  keyauth_credentials:\n  - key: key-{i:08d}\n")


def status_of(proxy_port, key):
    c = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=5)
    c.request("GET", "/ka", headers={"apikey": key})
    r = c.getresponse()
    r.read()
    return r.status


def time_until(proxy_port, key, want, deadline_s=30):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        if status_of(proxy_port, key) == want:
            return time.perf_counter() - t0
        time.sleep(0.001)
    sys.exit(f"key {key} did not answer {want} within {deadline_s} s")


def admin(admin_port, method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=30)
    c.request(method, path, json.dumps(body) if body is not None else None,
              {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    return r.status, json.loads(data) if data else None


def consumers_bench(a, n, rows):
    up = upstream()
    with tempfile.TemporaryDirectory() as d:
        base_prefix, prefix = os.path.join(d, "base"), os.path.join(d, "prefix")
        cfg0, cfg = os.path.join(d, "base.yml"), os.path.join(d, "kong.yml")
        write_consumers_config(cfg0, 0, up)
        write_consumers_config(cfg, n, up)
        run_measured([a.bin, "config", "db_import", cfg0], env_for(base_prefix))
        dt, rss, _ = run_measured([a.bin, "config", "db_import", cfg], env_for(prefix))
        rows.append((f"db_import {n} consumers+key-auth", f"{dt:.2f} s", f"peak RSS {rss:.0f} MB"))

        p, ports, _, _ = start_gateway(a.bin, base_prefix)
        try:
            time.sleep(0.5)
            base_rss = vm(p.pid, "VmRSS")
        finally:
            p.terminate()
            p.wait(timeout=30)

        p, ports, ready, _ = start_gateway(a.bin, prefix)
        try:
            rows.append((f"start-to-ready with {n} consumers (index load included)", f"{ready:.3f} s", ""))
            time.sleep(0.5)
            rss = vm(p.pid, "VmRSS")
            rows.append((f"gateway RSS growth for {n} consumers+key-auth", f"{rss - base_rss:.0f} MB",
                         f"{rss:.0f} MB vs {base_rss:.0f} MB without them; peak {vm(p.pid, 'VmHWM'):.0f} MB"))
            assert status_of(ports[1], f"key-{n - 1:08d}") == 200
            assert status_of(ports[1], "nope") == 401
            adds, dels = [], []
            for i in range(5):
                key = f"fresh-{i}-{time.time_ns()}"
                t0 = time.perf_counter()
                st, cred = admin(ports[0], "POST", f"/consumers/user-{i}/key-auth", {"key": key})
                if st != 201:
                    sys.exit(f"credential create failed: {st} {cred}")
                time_until(ports[1], key, 200)
                adds.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                st, _ = admin(ports[0], "DELETE", f"/consumers/user-{i}/key-auth/{cred['id']}")
                if st != 204:
                    sys.exit(f"credential delete failed: {st}")
                time_until(ports[1], key, 401)
                dels.append(time.perf_counter() - t0)
            rows.append(("new key-auth credential to effect (Admin POST until the route answers 200)",
                         f"{max(adds) * 1000:.1f} ms", f"max of 5; median {sorted(adds)[2] * 1000:.1f} ms"))
            rows.append(("deleted credential to effect (Admin DELETE until 401)",
                         f"{max(dels) * 1000:.1f} ms", f"max of 5; median {sorted(dels)[2] * 1000:.1f} ms"))
            rate, errs = admin_creates(ports[0], 5, 1)
            rows.append((f"Admin API creates/s with {n} consumers indexed", f"{rate:.0f}/s", f"{errs} errors"))
            rows.append(("gateway RSS after those writes", f"{vm(p.pid, 'VmRSS'):.0f} MB",
                         f"peak {vm(p.pid, 'VmHWM'):.0f} MB"))
        finally:
            p.terminate()
            p.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--consumers", type=int, default=0,
                    help="run the consumer-index benchmark with this many consumers instead")
    a = ap.parse_args()
    if a.consumers:
        rows = []
        consumers_bench(a, a.consumers, rows)
        print("| benchmark | figure | note |\n|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
        return
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
