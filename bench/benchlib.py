"""Shared helpers for the proxy benchmarks (bench/proxy_bench.py, bench/callgrind.py):
ports, /proc readings, the upstream and peer nginx configurations, the gateway's
declarative configuration and its process. Loopback only; every wait is bounded."""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


def die(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---------------------------------------------------------------- /proc readings


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_status_mb(pid, key):
    """VmHWM / VmRSS of a process in MB (MiB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if int(rest[1]) == pid:
                out.append(int(d))
        except OSError:
            pass
    return out


def is_listening(port):
    """True when 127.0.0.1:port is in LISTEN state, read from /proc/net/tcp without
    touching the process (a connect would cost it instructions under callgrind)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def wait_listening(port, proc=None, deadline_s=60, what="process"):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        if proc is not None and proc.poll() is not None:
            die(f"{what} exited with {proc.returncode} before listening on {port}")
        if is_listening(port):
            return time.perf_counter() - t0
        time.sleep(0.01)
    die(f"{what} did not listen on {port} within {deadline_s}s")


def http_get(port, path="/", timeout=5, tls=False, method="GET", body=None, headers=None):
    if tls:
        import ssl

        ctx = ssl._create_unverified_context()
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def need_tools(names):
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        die(
            "missing tools: "
            + ", ".join(missing)
            + " (install them with bench/setup.sh: apt-get install -y nginx-light wrk "
            "nghttp2-client valgrind)"
        )


def stop(proc, grace=15):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return cert, key


# ---------------------------------------------------------------- nginx

NGINX = "nginx"


# The request headers the upstream's /bench/headers answers with, one `name=value` a line.
ECHOED = ("connection", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
          "x-forwarded-port", "x-forwarded-path", "x-forwarded-prefix", "x-real-ip",
          "x-kong-request-id", "via", "te", "upgrade")
UPSTREAM_ECHO = "".join(f"{n}=$http_{n.replace('-', '_')}\\n" for n in ECHOED)
# The response headers Kong adds by default (and the peer with KONG_HEADERS).
KONG_RESPONSE = ("via", "x-kong-upstream-latency", "x-kong-proxy-latency", "x-kong-request-id")


def upstream_conf(tmp, port, big_file, foreground_single=False):
    """The upstream: nginx answering 200 "ok" (any path), and a 1 MiB file at /stream/big."""
    head = "master_process off;\n" if foreground_single else ""
    return f"""{head}worker_processes 1;
user root;
pid {tmp}/upstream.pid;
error_log {tmp}/upstream-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_max_body_size 0;
  client_body_temp_path {tmp}/up_body;
  default_type text/plain;
  upstream self {{ server 127.0.0.1:{port}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    # the upstream-3targets scenario balances over three loopback addresses
    listen 127.0.0.2:{port} backlog=4096;
    listen 127.0.0.3:{port} backlog=4096;
    location / {{ return 200 "ok"; }}
    # What a proxy sent: proxy_bench.same_work compares the gateway's and the peer's.
    location = /bench/headers {{ return 200 "{UPSTREAM_ECHO}"; }}
    location = /stream/big {{ default_type application/octet-stream; alias {big_file}; }}
    # Uploads: read the whole body (in memory) before answering, as an upload service
    # would; `return` alone answers first and discards, which makes a streaming proxy
    # close the client connection. The inner request is a loop to the "ok" location.
    location = /stream/up {{
      client_body_buffer_size 2m;
      proxy_pass http://self/ok;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


# The headers Kong's nginx sets on the upstream request (`kong/templates/nginx_kong.lua`,
# 3.9: `proxy_set_header X-Forwarded-For $upstream_x_forwarded_for` and the rest, the
# request id being nginx's `$request_id`) and those its header_filter adds to the response
# with the default `headers` (`Via`, both latency headers, `X-Kong-Request-Id`). The
# gateway does this work on every request by default, so the nginx peer does it too: the
# same request reaches the upstream and the same response the client (checked by
# `proxy_bench.same_work`). `bare=True` leaves it out (nginx's plain `proxy_pass`, the
# `plain-bare` scenario and `callgrind.sh --bare-peer`).
KONG_HEADERS = (
    "proxy_set_header Connection keep-alive; "
    "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; "
    "proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $host; "
    "proxy_set_header X-Forwarded-Port $server_port; "
    "proxy_set_header X-Forwarded-Path $uri; proxy_set_header X-Real-IP $remote_addr; "
    "proxy_set_header X-Kong-Request-Id $request_id; "
    "proxy_set_header Via \"1.1 kong/3.9.1\"; "
    "add_header X-Kong-Upstream-Latency $upstream_response_time always; "
    "add_header X-Kong-Proxy-Latency $upstream_connect_time always; "
    "add_header Via \"1.1 kong/3.9.1\" always; "
    "add_header X-Kong-Request-Id $request_id always;"
)
BARE_HEADERS = "proxy_set_header Connection \"\";"


def peer_conf(tmp, port, tls_port, upstream_port, ws_port, cert, key, routes=0,
              keyauth=None, foreground_single=False, bare=False):
    """nginx proxy_pass with the same routes as the gateway: one worker, upstream
    keep-alive 64, access_log off, Kong's headers (`KONG_HEADERS`) unless `bare`.
    `routes` > 0 adds that many `location /svc-N` blocks (the 10,000-routes scenario).
    `keyauth` = (key, ...) adds an apikey check and a limit_req zone (the key-auth +
    rate-limiting peer)."""
    headers = BARE_HEADERS if bare else KONG_HEADERS
    head = "master_process off;\n" if foreground_single else ""
    tls_listen = f"    listen 127.0.0.1:{tls_port} ssl http2 backlog=4096;\n" if tls_port else ""
    tls = (
        f"  ssl_certificate {cert};\n  ssl_certificate_key {key};\n"
        "  ssl_protocols TLSv1.2 TLSv1.3;\n"
        if tls_port
        else ""
    )
    proxied = f"proxy_pass http://up; proxy_http_version 1.1; {headers}"
    auth = ""
    zone = ""
    if keyauth:
        zone = "  limit_req_zone $http_apikey zone=rl:10m rate=100000000r/s;\n"
        auth = (
            f"if ($http_apikey != \"{keyauth}\") {{ return 401; }} "
            "limit_req zone=rl burst=1000000 nodelay; "
        )
    locs = [f"    location / {{ {auth}{proxied} }}"]
    locs.append(
        f"    location /stream/ {{ {proxied} proxy_request_buffering off; "
        "proxy_buffering off; proxy_buffer_size 64k; proxy_buffers 8 64k; "
        "proxy_busy_buffers_size 128k; client_body_buffer_size 64k; }"
    )
    if ws_port:
        locs.append(
            "    location /ws { proxy_pass http://ws; proxy_http_version 1.1; "
            "proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection \"upgrade\"; "
            "proxy_read_timeout 300s; }"
        )
    for i in range(routes):
        locs.append(f"    location /svc-{i} {{ {proxied} }}")
    ws_up = (
        f"  upstream ws {{ server 127.0.0.1:{ws_port}; }}\n" if ws_port else ""
    )
    locations = "\n".join(locs)
    return f"""{head}worker_processes 1;
user root;
pid {tmp}/peer.pid;
error_log {tmp}/peer-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_max_body_size 0;
  client_body_temp_path {tmp}/peer_body;
  proxy_temp_path {tmp}/peer_proxy;
  server_names_hash_bucket_size 128;
  upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; keepalive_requests 10000000; }}
{ws_up}{zone}{tls}  server {{
    listen 127.0.0.1:{port} backlog=4096;
{tls_listen}{locations}
  }}
}}
"""


def start_nginx(tmp, name, conf_text, cpu, port, valgrind=None):
    """Starts nginx (daemon off) pinned to `cpu`; returns (Popen, worker pid)."""
    conf = os.path.join(tmp, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    cmd = ["taskset", "-c", str(cpu)]
    if valgrind:
        cmd += valgrind
    cmd += [NGINX, "-p", tmp, "-c", conf, "-e", os.path.join(tmp, f"{name}-error.log"),
            "-g", "daemon off;"]
    log = open(os.path.join(tmp, f"{name}.out"), "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_listening(port, p, deadline_s=120 if valgrind else 30, what=f"nginx ({name})")
    if valgrind:
        return p, p.pid
    worker = None
    for _ in range(300):
        kids = children(p.pid)
        if kids:
            worker = kids[0]
            break
        time.sleep(0.01)
    if worker is None:
        die(f"nginx ({name}) has no worker process")
    return p, worker


# ---------------------------------------------------------------- gateway


def default_bin():
    for cand in (
        os.environ.get("TOLLGATE_BIN"),
        "/root/.cache/tollgate/target-bench/release/tollgate",
        os.path.join(os.environ.get("CARGO_TARGET_DIR", ""), "release/tollgate")
        if os.environ.get("CARGO_TARGET_DIR") else None,
        os.path.join(REPO, "target/release/tollgate"),
        os.path.expanduser("~/.cache/tollgate/target/release/tollgate"),
    ):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def ratelimit_plugin(ratelimit):
    """A global rate-limiting plugin entry that never blocks (a per-second limit no load
    reaches, by ip): `local`, or `redis:<port>` for a Redis on 127.0.0.1."""
    if ratelimit == "local":
        policy = "policy: local"
    else:
        port = int(ratelimit.split(":", 1)[1])
        policy = f"policy: redis, redis: {{host: 127.0.0.1, port: {port}}}"
    return (f"- name: rate-limiting\n  config: {{second: 1000000000, limit_by: ip, "
            f"{policy}}}\n")


def declarative(upstream_port, ws_port=None, routes=0, consumers=0, keyauth=None,
                base_routes=True, prometheus=False, balanced=False, ratelimit=None):
    """Kong 3.0 declarative YAML with the same routes as peer_conf. `prometheus`: plus a
    global prometheus plugin counting statuses, latencies and bandwidth. `balanced`: the
    base service goes through an upstream of three targets (127.0.0.1-3), round-robin
    (True or "round-robin") or "consistent-hashing" (hash_on ip)
    `ratelimit`: plus a global rate-limiting plugin (see `ratelimit_plugin`)."""
    out = ['_format_version: "3.0"\n']
    if prometheus or ratelimit:
        out.append("plugins:\n")
    if prometheus:
        out.append(
            "- name: prometheus\n  config: {status_code_metrics: true, "
            "latency_metrics: true, bandwidth_metrics: true, upstream_health_metrics: true}\n"
        )
    if ratelimit:
        out.append(ratelimit_plugin(ratelimit))
    if balanced:
        out.append("upstreams:\n- name: bench-3\n")
        if balanced == "consistent-hashing":
            out.append("  algorithm: consistent-hashing\n  hash_on: ip\n")
        out.append("  targets:\n")
        for i in (1, 2, 3):
            out.append(f"  - target: 127.0.0.{i}:{upstream_port}\n")
    out.append("services:\n")
    base_url = "http://bench-3" if balanced else f"http://127.0.0.1:{upstream_port}"
    if base_routes:
        plugins = ""
        if keyauth:
            plugins = (
                "    plugins:\n"
                "    - name: key-auth\n"
                "    - name: rate-limiting\n"
                "      config: {second: 100000000, policy: local}\n"
            )
        out.append(
            f"- name: upstream\n  url: {base_url}\n  routes:\n"
            f"  - name: root\n    paths: [/]\n    strip_path: false\n{plugins}"
            "  - name: stream\n    paths: [/stream/]\n    strip_path: false\n"
            "    request_buffering: false\n    response_buffering: false\n"
        )
        if ws_port:
            out.append(
                f"- name: ws\n  url: http://127.0.0.1:{ws_port}\n  routes:\n"
                "  - name: ws\n    paths: [/ws]\n    strip_path: false\n"
            )
    for i in range(routes):
        out.append(
            f"- name: svc-{i}\n  url: http://127.0.0.1:{upstream_port}\n  routes:\n"
            f"  - name: route-{i}\n    paths: [/svc-{i}]\n    strip_path: false\n"
        )
    if consumers or keyauth:
        out.append("consumers:\n")
        if keyauth:
            out.append(f"- username: bench\n  keyauth_credentials:\n  - key: {keyauth}\n")
        for i in range(consumers):
            out.append(f"- username: user-{i}\n  keyauth_credentials:\n  - key: key-{i:08d}\n")
    return "".join(out)


def base_env(prefix, database="off"):
    """The environment of a gateway command: no KONG_/TOLLGATE_ leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KONG_", "TOLLGATE_"))}
    env.update(TOLLGATE_PREFIX=prefix, TOLLGATE_DATABASE=database, TOLLGATE_LOG_LEVEL="warn")
    return env


def write_declarative(path, upstream_port, consumers=0, routes=0, ws_port=None):
    """Writes the same YAML as `declarative` to `path` without holding it in memory
    (1,000,000 consumers are ~80 MiB of YAML); returns its size in bytes."""
    head = declarative(upstream_port, ws_port=ws_port, routes=routes)
    with open(path, "w") as f:
        f.write(head)
        if consumers:
            f.write("consumers:\n")
            chunk = []
            for i in range(consumers):
                chunk.append(f"- username: user-{i}\n  keyauth_credentials:\n"
                             f"  - key: key-{i:08d}\n")
                if len(chunk) == 10000:
                    f.write("".join(chunk))
                    chunk = []
            f.write("".join(chunk))
    return os.path.getsize(path)


def admin_json(port, method, path, body=None, timeout=30):
    """An Admin API call with a JSON body; returns (status, parsed JSON or text)."""
    import json

    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"} if data is not None else {}
    status, raw, _ = http_get(port, path, timeout=timeout, method=method, body=data,
                              headers=headers)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def gateway_env(prefix, proxy, tls, admin, status, config_file, cert, key, database="off"):
    """`database` "off": DB-less with `config_file`; "sqlite": the store in `prefix`
    (filled beforehand with `tollgate config db_import`), `config_file` ignored."""
    env = base_env(prefix, database)
    listen = f"127.0.0.1:{proxy} backlog=4096"
    if tls:
        listen += f", 127.0.0.1:{tls} http2 ssl backlog=4096"
    env.update(
        TOLLGATE_PROXY_LISTEN=listen,
        TOLLGATE_ADMIN_LISTEN=f"127.0.0.1:{admin}",
        TOLLGATE_STATUS_LISTEN=f"127.0.0.1:{status}",
        TOLLGATE_LOG_LEVEL="warn",
        TOLLGATE_PROXY_ACCESS_LOG="off",
        TOLLGATE_ADMIN_ACCESS_LOG="off",
        TOLLGATE_STATUS_ACCESS_LOG="off",
        TOLLGATE_UPSTREAM_KEEPALIVE_POOL_SIZE="64",
    )
    if database == "off":
        env["TOLLGATE_DECLARATIVE_CONFIG"] = config_file
    if tls and cert:
        env.update(TOLLGATE_SSL_CERT=cert, TOLLGATE_SSL_CERT_KEY=key)
    return env


def wait_ready(status_port, proc, deadline_s=60, poll=0.01):
    """Polls GET /status/ready until 200; returns seconds waited."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        if proc.poll() is not None:
            return None
        try:
            c = http.client.HTTPConnection("127.0.0.1", status_port, timeout=2)
            c.request("GET", "/status/ready")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(poll)
    return None


def start_redis(tmp, cpu=None):
    """A redis-server on a free loopback port (no persistence); returns (proc, port)."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no"]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu)] + cmd
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, deadline_s=10, what="redis-server")
    return proc, port
