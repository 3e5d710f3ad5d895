#!/usr/bin/env python3
"""Plots the samples of a soak run (tests/src/bin/soak.rs).

usage: soak-plot.py SOAK_CSV OUT_PNG

Four panels over time: resident memory of each process, CPU (share of one
core between samples), the agent's queue and the delivery lag; faults are
shaded.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) < 2:
        sys.exit(f"{src}: fewer than two samples")
    t = [float(r["t_s"]) / 60 for r in rows]
    procs = ["agent", "collector0", "collector1", "clickhouse"]
    fig, ax = plt.subplots(4, 1, figsize=(12, 13), sharex=True)
    for p in procs:
        ax[0].plot(t, [float(r[f"{p}_rss_mib"]) for r in rows], label=p)
        cpu = [float(r[f"{p}_cpu_s"]) for r in rows]
        share = [float("nan")]
        for i in range(1, len(rows)):
            dt = (t[i] - t[i - 1]) * 60
            d = cpu[i] - cpu[i - 1]
            share.append(d / dt * 100 if dt > 0 and d >= 0 else float("nan"))
        ax[1].plot(t, share, label=p, linewidth=0.8)
    ax[2].plot(t, [float(r["queue_records"]) for r in rows], color="tab:purple")
    ax[3].plot(t, [float(r["lag_s"]) for r in rows], color="tab:red")
    ax[0].set_ylabel("RSS (MiB)")
    ax[1].set_ylabel("CPU (% of a core)")
    ax[2].set_ylabel("agent queue (records)")
    ax[3].set_ylabel("delivery lag (s)")
    ax[3].set_xlabel("minutes")
    ax[0].legend(loc="upper left", ncol=4)
    ax[1].legend(loc="upper left", ncol=4)
    # A fault lasts from its sample to the next ("back"): shaded.
    for i, r in enumerate(rows):
        if r["fault"] and r["fault"] != "back":
            end = t[i + 1] if i + 1 < len(rows) else t[i]
            for a in ax:
                a.axvspan(t[i], end, color="grey", alpha=0.25, linewidth=0)
            ax[0].annotate(r["fault"], (t[i], ax[0].get_ylim()[1]), rotation=90,
                           fontsize=7, va="top", ha="right", color="grey")
    written, stored = rows[-1]["written"], rows[-1]["stored"]
    fig.suptitle(f"logferry soak: {float(written):,.0f} lines written, "
                 f"{float(stored):,.0f} stored at the last sample")
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
