#!/usr/bin/env python3
"""Turns bench/results/latest.json (bench/run.sh) and bench/results/callgrind.json
(bench/callgrind.sh) into the plot bench/results/proxy.png and the Markdown tables that
bench/RESULTS.md quotes.

    python3 bench/report.py                      # plot + tables on stdout
    python3 bench/report.py --in bench/results/smoke.json --png /tmp/smoke.png"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import proxy_bench as P  # noqa: E402


def plot(results, png, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, r in results.items() if r.get("summary")]
    if not names:
        print("nothing to plot", file=sys.stderr)
        return
    g = [results[n]["summary"]["gateway"] for n in names]
    x = [results[n]["summary"]["nginx"] for n in names]
    pos = list(range(len(names)))
    w = 0.38
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.25 * len(names) + 2), 8))
    for ax, key, label, log in ((axes[0], "rps", "requests (messages) / s, higher is better",
                                 True),
                                (axes[1], "p99_ms", "p99 latency, ms, lower is better", True)):
        gv = [m[key] or 0 for m in g]
        nv = [m[key] or 0 for m in x]
        bg = ax.bar([p - w / 2 for p in pos], gv, w, label="tollgate", color="#d95f02")
        bn = ax.bar([p + w / 2 for p in pos], nv, w, label="nginx proxy_pass", color="#1b9e77")
        for bars, vals in ((bg, gv), (bn, nv)):
            for b, v in zip(bars, vals):
                txt = f"{v:,.0f}" if key == "rps" else f"{v:.2f}"
                ax.annotate(txt, (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7, rotation=90,
                            xytext=(0, 2), textcoords="offset points")
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_xticks(pos)
        ax.set_xticklabels(names, rotation=20, ha="right")
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.25)
    axes[0].legend(loc="upper right")
    axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    print(f"wrote {os.path.relpath(png, os.getcwd())}", file=sys.stderr)


def callgrind_table(cg):
    lines = ["| proxy | instructions / request, run 1 | run 2 | spread |",
             "|---|---:|---:|---:|"]
    names = {"nginx": "nginx (Kong's headers)", "nginx-bare": "nginx, bare proxy_pass"}
    for who in ("gateway", "nginx", "nginx-bare"):
        r = cg.get(who)
        if not r:
            continue
        runs = [f"{x['instructions_per_request']:,.0f}" for x in r["runs"]]
        runs += [""] * (2 - len(runs))
        lines.append(f"| {names.get(who, who)} | {runs[0]} | {' / '.join(runs[1:])} | "
                     f"{r['spread_pct']:.2f}% |")
    for key, peer in (("ratio", "nginx"), ("ratio_bare", "nginx-bare")):
        if key in cg:
            lines.append(f"| **gateway/{peer}** | **{cg[key]:.2f}×** | | |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--in", dest="inp", default=os.path.join(B.HERE, "results", "latest.json"))
    ap.add_argument("--callgrind", default=os.path.join(B.HERE, "results", "callgrind.json"))
    ap.add_argument("--png", default=os.path.join(B.HERE, "results", "proxy.png"))
    a = ap.parse_args()
    with open(a.inp) as f:
        d = json.load(f)
    meta, results = d["meta"], d["scenarios"]
    title = (f"tollgate vs nginx, proxy pinned to 1 core; {meta['rounds']} x "
             f"{meta['duration_s']} s, median; {meta['date'][:10]}")
    plot(results, a.png, title)
    print(f"<!-- from {os.path.relpath(a.inp, B.REPO)}: {meta['command']}, {meta['date']}, "
          f"load average at start {meta['machine']['loadavg']}, at end "
          f"{meta.get('loadavg_end', '?')} -->")
    print()
    print(P.summary_table(results))
    print()
    print(P.table(results))
    print()
    print("| scenario | load average (1/5/15 min) at its start |")
    print("|---|---|")
    for n, r in results.items():
        print(f"| {n} | {r.get('loadavg_start', '?')} |")
    if os.path.exists(a.callgrind):
        with open(a.callgrind) as f:
            cg = json.load(f)
        print()
        print(callgrind_table(cg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
