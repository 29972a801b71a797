#!/usr/bin/env python3
"""System calls per proxied request, gateway and nginx (strace -c on every thread of the
proxy while a keep-alive client sends N sequential GET / requests).

    python3 bench/syscalls.py [--n 2000] [--bin PATH] [--conns 1]

On loopback most of a proxy's CPU time is in the kernel, so this explains the CPU-seconds
per request of bench/run.sh better than instruction counts do. strace slows the proxy down
(so the figures are counts, not times) and a multi-connection run under strace may batch
differently from a full-speed one; with one connection the counts are exact."""

import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402


def client(port, n, out):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(n):
        c.request("GET", "/")
        r = c.getresponse()
        if r.status != 200 or r.read() != b"ok":
            out.append("bad answer")
            return
    c.close()


def count(pid, port, n, conns, tmp, name):
    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    out = os.path.join(tmp, f"strace-{name}.txt")
    cmd = ["strace", "-c", "-o", out]
    for t in tids:
        cmd += ["-p", str(t)]
    st = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    errs = []
    ts = [threading.Thread(target=client, args=(port, n // conns, errs)) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    time.sleep(0.3)
    st.send_signal(signal.SIGINT)
    st.wait(timeout=30)
    if errs:
        B.die(f"{name}: {errs[0]}")
    calls = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--bin", default=None)
    a = ap.parse_args()
    B.need_tools(["strace", "nginx", "taskset"])
    a.bin = a.bin or B.default_bin()
    tmp = tempfile.mkdtemp(prefix="tollgate-syscalls-")
    os.chmod(tmp, 0o755)
    procs = []
    try:
        big = os.path.join(tmp, "big.bin")
        open(big, "wb").close()
        up = B.free_port()
        upstream, _ = B.start_nginx(tmp, "upstream", B.upstream_conf(tmp, up, big), 0, up)
        procs.append(upstream)
        # gateway
        prefix = tempfile.mkdtemp(prefix="gw-", dir=tmp)
        cfg = os.path.join(prefix, "kong.yml")
        with open(cfg, "w") as f:
            f.write(B.declarative(up))
        port, admin, status = B.free_port(), B.free_port(), B.free_port()
        env = B.gateway_env(prefix, port, None, admin, status, cfg, None, None)
        gw = subprocess.Popen(["taskset", "-c", "1", a.bin, "start"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gw)
        B.wait_ready(status, gw)
        client(port, 50, [])
        res = {"gateway": count(gw.pid, port, a.n, a.conns, tmp, "gateway")}
        B.stop(gw)
        pport = B.free_port()
        peer, worker = B.start_nginx(tmp, "peer", B.peer_conf(tmp, pport, None, up, None, None,
                                                              None), 1, pport)
        procs.append(peer)
        client(pport, 50, [])
        res["nginx"] = count(worker, pport, a.n, a.conns, tmp, "nginx")
    finally:
        for p in procs:
            B.stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    names = sorted(set(res["gateway"]) | set(res["nginx"]),
                   key=lambda k: -(res["gateway"].get(k, 0) + res["nginx"].get(k, 0)))
    print(f"system calls per request ({a.n} GET / on {a.conns} keep-alive connection(s)):")
    print("| syscall | gateway | nginx |\n|---|---:|---:|")
    for k in names:
        g, x = res["gateway"].get(k, 0) / a.n, res["nginx"].get(k, 0) / a.n
        if g >= 0.01 or x >= 0.01:
            print(f"| {k} | {g:.2f} | {x:.2f} |")
    tg = sum(res["gateway"].values()) / a.n
    tx = sum(res["nginx"].values()) / a.n
    print(f"| **total** | **{tg:.2f}** | **{tx:.2f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
