#!/usr/bin/env python3
"""PostgreSQL cluster benchmarks (issue 8): three gateway nodes on one private PostgreSQL
(scripts/pg), all on loopback.

1. Propagation: a route created through node 1's Admin API, timed until it serves on
   nodes 2 and 3 (polled over keep-alive connections); p50/p99/max over --writes writes.
2. Admin API creates per second on PostgreSQL (consumers, one client, keep-alive).
3. Proxy throughput on node 1 (wrk) alone, then while --rate writes per second (route
   creates and deletes through nodes 2 and 3, each one a snapshot update on node 1)
   stream through the cluster; rounds alternate.
4. CPU time per write (no proxy load): node 1's, which only follows the writes, and the
   whole cluster's (three nodes and PostgreSQL): user+system time while the writers
   stream, less the idle time over as long, divided by the writes. Unlike req/s this
   hardly depends on what else the machine runs.

    python3 bench/propagation.py --bin target/release/tollgate
    python3 bench/propagation.py --bin target/debug/tollgate --smoke

With --db cassandra (issue 12): two gateway nodes on one Cassandra node (scripts/cassandra,
or an existing one with --cassandra HOST:PORT), polling `cluster_events` every --frequency
seconds: propagation from node 1's Admin API to node 2's proxy, Admin API creates per
second, and with --routes N the start time of a node on a keyspace holding N routes
(written with `config db_import`): until /status/ready, and until the last route serves.

    python3 bench/propagation.py --db cassandra --frequency 0.05 --bin target/release/tollgate
    python3 bench/propagation.py --db cassandra --frequency 5 --writes 40 --routes 10000 …

Prints a Markdown table; --json FILE also writes the figures."""

import argparse, http.client, json, os, random, re, shutil, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class Conn:
    """One keep-alive HTTP/1.1 connection, reopened on failure."""

    def __init__(self, port):
        self.port = port
        self.c = None

    def request(self, method, path, body=None):
        for attempt in range(2):
            try:
                if self.c is None:
                    self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                headers = {"content-type": "application/json"} if body is not None else {}
                self.c.request(method, path, body=json.dumps(body) if body is not None else None,
                               headers=headers)
                r = self.c.getresponse()
                data = r.read()
                return r.status, data
            except (OSError, http.client.HTTPException):
                self.c = None
                if attempt:
                    raise


def write_json(path, data, indent=2):
    """The results as JSON at `path` (when one was asked for)."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=indent)


def cleanup(procs, nginx, tmp, db=None):
    """Stops the nodes and nginx, destroys the database this run started (`db`: "pg" or
    "cassandra", kept under tmp) and removes tmp."""
    for p in procs:
        benchlib.stop(p)
    benchlib.stop(nginx)
    if db:
        subprocess.run([os.path.join(benchlib.REPO, "scripts", db), "destroy", os.path.join(tmp, db)])
    shutil.rmtree(tmp, ignore_errors=True)


def start_pg(tmp):
    out = subprocess.run([os.path.join(benchlib.REPO, "scripts/pg"), "start",
                          os.path.join(tmp, "pg"), "--owner", str(os.getpid())],
                         check=True, capture_output=True, text=True)
    url = out.stdout.strip()
    port = int(re.search(r":(\d+)/", url).group(1))
    subprocess.run(["psql", url, "-qc", "CREATE DATABASE bench"], check=True)
    return port


def pg_env(pg_port):
    return {
        "TOLLGATE_DATABASE": "postgres",
        "TOLLGATE_PG_HOST": "127.0.0.1",
        "TOLLGATE_PG_PORT": str(pg_port),
        "TOLLGATE_PG_USER": "postgres",
        "TOLLGATE_PG_DATABASE": "bench",
    }


def cassandra_env(contact, keyspace):
    host, port = contact.rsplit(":", 1)
    return {
        "TOLLGATE_DATABASE": "cassandra",
        "TOLLGATE_CASSANDRA_CONTACT_POINTS": host,
        "TOLLGATE_CASSANDRA_PORT": port,
        "TOLLGATE_CASSANDRA_KEYSPACE": keyspace,
        # A busy 2-core machine: schema changes may take seconds each.
        "TOLLGATE_CASSANDRA_SCHEMA_CONSENSUS_TIMEOUT": "60000",
        "TOLLGATE_CASSANDRA_TIMEOUT": "10000",
    }


def clean_env(prefix, db_env):
    env = {k2: v for k2, v in os.environ.items() if not k2.startswith(("KONG_", "TOLLGATE_"))}
    env.update(db_env)
    env["TOLLGATE_PREFIX"] = prefix
    return env


def start_node(binary, tmp, k, db_env, frequency, wrap=()):
    """Node k on the database (`db_env`); `wrap` goes before the binary (taskset, valgrind)."""
    prefix = os.path.join(tmp, f"node{k}")
    os.makedirs(prefix, exist_ok=True)
    ports = [benchlib.free_port() for _ in range(3)]
    env = clean_env(prefix, db_env)
    env.update({
        "TOLLGATE_DB_UPDATE_FREQUENCY": str(frequency),
        "TOLLGATE_PROXY_LISTEN": f"127.0.0.1:{ports[0]}",
        "TOLLGATE_ADMIN_LISTEN": f"127.0.0.1:{ports[1]}",
        "TOLLGATE_STATUS_LISTEN": f"127.0.0.1:{ports[2]}",
        "TOLLGATE_LOG_LEVEL": "warn",
        "TOLLGATE_NGINX_WORKER_PROCESSES": "1",
    })
    log = open(os.path.join(prefix, "out.log"), "w")
    p = subprocess.Popen([*wrap, binary, "start"], env=env, stdout=log, stderr=subprocess.STDOUT)
    return p, {"proxy": ports[0], "admin": ports[1], "status": ports[2]}


def wait_ready(nodes, deadline_s=60):
    deadline = time.time() + deadline_s
    for p, ports in nodes:
        while True:
            try:
                s, _ = Conn(ports["status"]).request("GET", "/status/ready")
                if s == 200:
                    break
            except OSError:
                pass
            if p.poll() is not None or time.time() > deadline:
                benchlib.die(f"node on {ports} did not start")
            time.sleep(0.05)


def propagation(nodes, writes, jitter=0.0):
    """Milliseconds from each route create on node 1 until the others serve it. With a
    polled store, `jitter` (the poll interval) spreads the writes over the poll cycle:
    a write made right after the previous one was seen would always wait a full cycle."""
    admin = Conn(nodes[0][1]["admin"])
    pollers = [Conn(n[1]["proxy"]) for n in nodes[1:]]
    times = []
    for i in range(writes):
        if jitter:
            time.sleep(random.uniform(0, jitter))
        # The trailing slash keeps /prop1/ from prefix-matching /prop10/ (an earlier
        # route would serve the new path before the new route arrives).
        path = f"/prop{i}/"
        t0 = time.perf_counter()
        s, body = admin.request("POST", "/services/up/routes", {"paths": [path]})
        if s != 201:
            benchlib.die(f"route create: {s} {body[:200]}")
        pending = set(range(len(pollers)))
        while pending:
            for j in list(pending):
                s, _ = pollers[j].request("GET", path)
                if s == 200:
                    pending.discard(j)
            if time.perf_counter() - t0 > 10:
                benchlib.die(f"{path} did not propagate in 10 s")
            # A breath between rounds: a busy loop of requests would take a core from the
            # nodes being measured (2 cores here); it adds at most 1 ms to a figure.
            if pending:
                time.sleep(0.001)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def admin_creates(node, n):
    admin = Conn(node[1]["admin"])
    t0 = time.perf_counter()
    for i in range(n):
        s, body = admin.request("POST", "/consumers", {"username": f"bench-{i}"})
        if s != 201:
            benchlib.die(f"consumer create: {s} {body[:200]}")
    return n / (time.perf_counter() - t0)


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/prop0/"],
                         check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, int(errors.group(1)) if errors else 0


def cpu_seconds(pid, children=False):
    """User + system CPU time of a process so far (with its reaped children's)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def pg_cpu_seconds(postmaster):
    """The PostgreSQL server's CPU time: the postmaster, its live backends, the reaped ones."""
    total = cpu_seconds(postmaster, children=True)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == postmaster:
                total += cpu_seconds(int(d))
        except (OSError, ValueError):
            pass
    return total


def stream_writes(nodes, rate, seconds):
    """--rate writes/s for `seconds` through nodes 2 and 3; returns the writes made."""
    stop, count = threading.Event(), [0]
    threads = [threading.Thread(target=writer, args=(nodes[1 + w], rate / 2, stop, count, w))
               for w in range(2)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return count[0]


def write_cpu(nodes, postmaster, rate, seconds):
    """CPU milliseconds per write made through nodes 2 and 3: node 1's, the cluster's."""
    def now():
        node1 = cpu_seconds(nodes[0][0].pid)
        return node1, node1 + sum(cpu_seconds(p.pid) for p, _ in nodes[1:]) + pg_cpu_seconds(postmaster)
    a = now()
    time.sleep(seconds)
    b = now()
    n = stream_writes(nodes, rate, seconds)
    c = now()
    return tuple(1000 * ((c[i] - b[i]) - (b[i] - a[i])) / max(n, 1) for i in range(2))


def writer(node, rate, stop, count, tag):
    admin = Conn(node[1]["admin"])
    interval = 1.0 / rate
    nxt = time.perf_counter()
    i = 0
    while not stop.is_set():
        name = f"churn{tag}-{i % 50}"
        if i // 50 % 2 == 0:
            admin.request("POST", "/services/up/routes", {"name": name, "paths": [f"/{name}"]})
        else:
            admin.request("DELETE", f"/routes/{name}")
        count[0] += 1
        i += 1
        nxt += interval
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def start_cassandra(tmp):
    out = subprocess.run([os.path.join(benchlib.REPO, "scripts/cassandra"), "start",
                          os.path.join(tmp, "cassandra"), "--owner", str(os.getpid())],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def until_serves(port, path, deadline_s):
    c = Conn(port)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        try:
            if c.request("GET", path)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)
    benchlib.die(f"{path} did not serve within {deadline_s} s")


def start_time(a, tmp, contact, up_port):
    """Seconds until a node on a keyspace with --routes routes is ready, and until its last
    route serves (median of 3 starts); the import's seconds."""
    keyspace = f"bench_routes_{os.getpid()}"
    prefix = os.path.join(tmp, "importer")
    os.makedirs(prefix, exist_ok=True)
    env = clean_env(prefix, cassandra_env(contact, keyspace))
    cfg = os.path.join(tmp, "routes.yaml")
    with open(cfg, "w") as f:
        f.write(f'_format_version: "3.0"\nservices:\n- name: up\n  url: http://127.0.0.1:{up_port}\n'
                "  routes:\n")
        for i in range(a.routes):
            f.write(f"  - name: route-{i}\n    paths: [/r-{i}/]\n")
    subprocess.run([a.bin, "migrations", "bootstrap"], env=env, check=True, capture_output=True)
    t0 = time.perf_counter()
    subprocess.run([a.bin, "config", "db_import", cfg], env=env, check=True, capture_output=True)
    imported = time.perf_counter() - t0
    ready, serving = [], []
    for k in range(3):
        t0 = time.perf_counter()
        node = start_node(a.bin, tmp, f"start{k}", cassandra_env(contact, keyspace), a.frequency)
        try:
            wait_ready([node], 180)
            ready.append(time.perf_counter() - t0)
            until_serves(node[1]["proxy"], f"/r-{a.routes - 1}/", 180)
            serving.append(time.perf_counter() - t0)
        finally:
            benchlib.stop(node[0])
    return sorted(ready)[1], sorted(serving)[1], imported


def main_cassandra(a):
    """Two nodes on one Cassandra node: propagation, creates/s, start time."""
    benchlib.need_tools(["nginx"])
    tmp = tempfile.mkdtemp(prefix="tollgate-prop-cass-")
    up_port = benchlib.free_port()
    nginx, _ = benchlib.start_nginx(tmp, "upstream", benchlib.upstream_conf(tmp, up_port, "/dev/null"),
                                    0, up_port)
    contact = a.cassandra or start_cassandra(tmp)
    keyspace = f"bench_{os.getpid()}"
    nodes = []
    try:
        # Started together on an absent keyspace: one bootstraps, the other waits for it.
        nodes = [start_node(a.bin, tmp, k, cassandra_env(contact, keyspace), a.frequency)
                 for k in range(2)]
        wait_ready(nodes, 180)
        s, body = Conn(nodes[0][1]["admin"]).request(
            "POST", "/services", {"name": "up", "url": f"http://127.0.0.1:{up_port}"})
        if s != 201:
            benchlib.die(f"service create: {s} {body[:200]}")
        times = propagation(nodes, a.writes, a.frequency)
        creates = admin_creates(nodes[0], a.creates)
        for p, _ in nodes:
            benchlib.stop(p)
        nodes = []
        res = {
            "db": "cassandra",
            "db_update_frequency": a.frequency,
            "propagation_ms": {"p50": pct(times, 50), "p99": pct(times, 99), "max": max(times),
                               "writes": len(times)},
            "admin_creates_per_s": creates,
        }
        print("| figure | value |\n|---|---|")
        p = res["propagation_ms"]
        print(f"| propagation, node 1 write → serving on node 2, db_update_frequency {a.frequency} "
              f"({p['writes']} writes) | p50 {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms, max {p['max']:.1f} ms |")
        print(f"| Admin API creates/s on Cassandra (consumers, 1 client) | {creates:.0f} |")
        if a.routes:
            ready, serving, imported = start_time(a, tmp, contact, up_port)
            res.update({"routes": a.routes, "start_ready_s": ready, "start_serving_s": serving,
                        "db_import_s": imported})
            print(f"| `config db_import` of {a.routes} routes into Cassandra | {imported:.1f} s |")
            print(f"| start with {a.routes} routes in Cassandra (median of 3): ready / last route "
                  f"serves | {ready:.2f} s / {serving:.2f} s |")
        write_json(a.json, res)
    finally:
        cleanup([p for p, _ in nodes], nginx, tmp, None if a.cassandra else "cassandra")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=["postgres", "cassandra"], default="postgres")
    ap.add_argument("--frequency", type=float, default=5,
                    help="db_update_frequency of the Cassandra nodes (s)")
    ap.add_argument("--cassandra", help="HOST:PORT of a running Cassandra (else one is started)")
    ap.add_argument("--routes", type=int, default=0,
                    help="Cassandra: also time a start with this many routes")
    ap.add_argument("--bin", default=benchlib.default_bin())
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--creates", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    if not a.bin:
        benchlib.die("no binary: pass --bin")
    if a.smoke:
        a.writes, a.creates, a.seconds, a.rounds = 10, 50, 1, 1
        a.routes = min(a.routes, 100)
    if a.db == "cassandra":
        return main_cassandra(a)
    benchlib.need_tools(["wrk", "nginx", "psql"])
    tmp = tempfile.mkdtemp(prefix="tollgate-prop-")
    os.chmod(tmp, 0o755)  # the PostgreSQL server runs as the postgres user
    up_port = benchlib.free_port()
    nginx, _ = benchlib.start_nginx(tmp, "upstream", benchlib.upstream_conf(tmp, up_port, "/dev/null"),
                                    0, up_port)
    pg_port = start_pg(tmp)
    nodes = []
    try:
        # Started together on the empty database: one bootstraps, the others wait for it.
        nodes = [start_node(a.bin, tmp, k, pg_env(pg_port), 5) for k in range(3)]
        wait_ready(nodes)
        s, body = Conn(nodes[0][1]["admin"]).request(
            "POST", "/services", {"name": "up", "url": f"http://127.0.0.1:{up_port}"})
        if s != 201:
            benchlib.die(f"service create: {s} {body[:200]}")
        times = propagation(nodes, a.writes)
        creates = admin_creates(nodes[0], a.creates)
        with open(os.path.join(tmp, "pg", "data", "postmaster.pid")) as f:
            postmaster = int(f.readline())
        cpu = [write_cpu(nodes, postmaster, a.rate, a.seconds) for _ in range(a.rounds)]
        cpu_node1 = sorted(c[0] for c in cpu)[a.rounds // 2]
        cpu_cluster = sorted(c[1] for c in cpu)[a.rounds // 2]
        base, loaded, errors, written = [], [], 0, 0
        for _ in range(a.rounds):
            rps, e = wrk(nodes[0][1]["proxy"], a.seconds)
            base.append(rps)
            errors += e
            # Two writers (one request at a time each) so the rate holds on a busy machine.
            stop, count = threading.Event(), [0]
            threads = [threading.Thread(target=writer, args=(nodes[1 + w], a.rate / 2, stop, count, w))
                       for w in range(2)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            rps, e = wrk(nodes[0][1]["proxy"], a.seconds)
            stop.set()
            for t in threads:
                t.join()
            loaded.append(rps)
            errors += e
            written += count[0] / (time.perf_counter() - t0)
        res = {
            "propagation_ms": {"p50": pct(times, 50), "p99": pct(times, 99), "max": max(times),
                               "writes": len(times)},
            "admin_creates_per_s": creates,
            "proxy_rps_idle": sorted(base)[len(base) // 2],
            "proxy_rps_with_writes": sorted(loaded)[len(loaded) // 2],
            "writes_per_s_achieved": written / a.rounds,
            "proxy_non_2xx": errors,
            "node1_cpu_ms_per_write": cpu_node1,
            "cluster_cpu_ms_per_write": cpu_cluster,
        }
        res["proxy_change_pct"] = 100 * (res["proxy_rps_with_writes"] / res["proxy_rps_idle"] - 1)
        print("| figure | value |\n|---|---|")
        p = res["propagation_ms"]
        print(f"| propagation, node 1 write → serving on nodes 2 and 3 ({p['writes']} writes) | "
              f"p50 {p['p50']:.1f} ms, p99 {p['p99']:.1f} ms, max {p['max']:.1f} ms |")
        print(f"| Admin API creates/s on PostgreSQL (consumers, 1 client) | {creates:.0f} |")
        print(f"| proxy req/s on node 1, no writes (median of {a.rounds}) | {res['proxy_rps_idle']:.0f} |")
        print(f"| proxy req/s on node 1 with {res['writes_per_s_achieved']:.0f} writes/s through nodes 2 and 3 | "
              f"{res['proxy_rps_with_writes']:.0f} ({res['proxy_change_pct']:+.1f}%) |")
        print(f"| non-2xx proxied responses | {errors} |")
        print(f"| CPU per write, no proxy load (median of {a.rounds}): node 1 (follows) / "
              f"cluster (3 nodes + PostgreSQL) | {cpu_node1:.2f} ms / {cpu_cluster:.2f} ms |")
        write_json(a.json, res)
    finally:
        cleanup([p for p, _ in nodes], nginx, tmp, "pg")


if __name__ == "__main__":
    main()
