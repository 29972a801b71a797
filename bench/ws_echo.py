#!/usr/bin/env python3
"""WebSocket echo server and load client for the proxy benchmark (PyPI `websockets`).

    python3 bench/ws_echo.py server --port 9000
    python3 bench/ws_echo.py client --url ws://127.0.0.1:8000/ws --connections 16 --duration 10

The client keeps `connections` sockets open, each sending a message and waiting for its
echo in a loop, for `duration` seconds (after `warmup` seconds not counted), and prints one
JSON line: messages, seconds, msg/s, latency percentiles in ms, errors."""

import argparse
import asyncio
import json
import sys
import time


def percentile(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


async def server(port):
    try:
        from websockets.asyncio.server import serve
    except ImportError:  # websockets < 13
        from websockets.server import serve

    async def echo(ws, *_):
        async for msg in ws:
            await ws.send(msg)

    async with serve(echo, "127.0.0.1", port, compression=None, max_size=None,
                     ping_interval=None, backlog=1024):
        print("ready", flush=True)
        await asyncio.Future()


async def client(url, connections, duration, warmup, size):
    try:
        from websockets.asyncio.client import connect
    except ImportError:
        from websockets.client import connect
    payload = b"x" * size
    lat = []
    count = [0]
    errors = [0]
    start = time.perf_counter()
    t_measure = start + warmup
    t_end = t_measure + duration

    async def one():
        try:
            async with connect(url, compression=None, max_size=None, ping_interval=None,
                               open_timeout=10) as ws:
                while True:
                    t0 = time.perf_counter()
                    if t0 >= t_end:
                        break
                    await ws.send(payload)
                    got = await ws.recv()
                    t1 = time.perf_counter()
                    if len(got) != size:
                        errors[0] += 1
                    if t0 >= t_measure:
                        count[0] += 1
                        lat.append(t1 - t0)
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors[0] += 1
            print(f"ws client error: {e!r}", file=sys.stderr)

    await asyncio.gather(*(one() for _ in range(connections)))
    lat.sort()
    secs = duration
    print(json.dumps({
        "messages": count[0],
        "seconds": secs,
        "rps": count[0] / secs if secs else 0.0,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "p999_ms": percentile(lat, 99.9) * 1e3,
        "errors": errors[0],
    }), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--connections", type=int, default=16)
    c.add_argument("--duration", type=float, default=10)
    c.add_argument("--warmup", type=float, default=0)
    c.add_argument("--size", type=int, default=64)
    a = ap.parse_args()
    if a.mode == "server":
        asyncio.run(server(a.port))
    else:
        asyncio.run(client(a.url, a.connections, a.duration, a.warmup, a.size))


if __name__ == "__main__":
    main()
