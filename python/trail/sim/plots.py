"""Plots of simulation results (matplotlib PNG): the paper's Figures 5 and 6, latency CDFs.

Each function takes plain rows or arrays (what the JSON results hold) and writes one PNG, so
a result can be re-plotted without re-running it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Any, ax: Any, path: str, title: str, legend: bool = True) -> None:
    """Title, grid and legend on `ax`; write the figure to `path` and close it."""
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def plot_rate_sweep(rows: list[dict[str, Any]], path: str, title: str = "") -> None:
    """Mean latency and mean TTFT versus request rate, one line per policy (Figure 6)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for name in policies:
        mine = sorted((r for r in rows if r["policy"] == name), key=lambda r: r["rate_req_s"])
        rate = [r["rate_req_s"] for r in mine]
        axes[0].plot(rate, [r["mean_latency_s"] for r in mine], marker="o", label=name)
        axes[1].plot(rate, [r["mean_ttft_s"] for r in mine], marker="o", label=name)
    for ax, what in zip(axes, ("mean latency (s)", "mean TTFT (s)")):
        ax.set(xlabel="request rate (req/s)", ylabel=what, yscale="log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_latency_cdf(latencies: dict[str, np.ndarray], path: str, title: str = "") -> None:
    """Empirical CDF of request latency per policy, each policy's p99 marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, lat in latencies.items():
        v = np.sort(np.asarray(lat, float)[np.isfinite(lat)])
        if not len(v):
            continue
        line, = ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name)
        p99 = float(np.percentile(v, 99))
        ax.plot([p99], [0.99], marker="x", color=line.get_color(), markersize=8)
        ax.axvline(p99, color=line.get_color(), linewidth=0.8, linestyle=":")
    ax.axhline(0.99, color="grey", linewidth=0.6, linestyle=":")
    ax.set(xlabel="latency (s), x = p99", ylabel="fraction of requests", xscale="log",
           ylim=(0, 1.005))
    _finish(fig, ax, path, title)


def plot_guard_tradeoff(rows: list[dict[str, Any]], path: str, title: str = "") -> None:
    """Mean versus p99 latency: one line per policy through its aging-guard settings."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, policy in enumerate(dict.fromkeys(r["policy"] for r in rows)):
        mine = [r for r in rows if r["policy"] == policy]
        if policy == "FCFS":
            ax.plot([r["mean_latency_s"] for r in mine], [r["p99_latency_s"] for r in mine],
                    marker="*", markersize=12, color="black", linestyle="none", label="FCFS")
            continue
        # off (0) first, then from the longest threshold to the shortest
        mine.sort(key=lambda r: -(r["starvation_steps"] or float("inf")))
        ax.plot([r["mean_latency_s"] for r in mine], [r["p99_latency_s"] for r in mine],
                marker="o", color=f"C{k}", label=f"{policy} (off, then shorter thresholds)")
        for r in mine:
            ax.annotate(str(r["starvation_steps"] or "off"),
                        (r["mean_latency_s"], r["p99_latency_s"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points", color=f"C{k}")
    ax.set(xlabel="mean latency (s)", ylabel="p99 latency (s)", yscale="log")
    _finish(fig, ax, path, title)


def plot_sweep(sweep: dict[str, Any], path: str) -> None:
    """Mean latency versus c (simulated, with p99) beside the M/G/1 prediction (PNG)."""
    plt = _pyplot()
    cs = [r["c"] for r in sweep["rows"]]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(cs, [r["mean_latency_s"] for r in sweep["rows"]], marker="o", label="simulated mean")
    ax.plot(cs, [r["p99_latency_s"] for r in sweep["rows"]], marker="s", linestyle="--",
            label="simulated p99")
    ax.set(xlabel="c (preemptible while generated <= c x predicted length)",
           ylabel="latency (s)", yscale="log", title="TRAIL: latency versus c")
    theory = ax.twinx()
    theory.plot(cs, [r["theory_mean_response_tokens"] for r in sweep["rows"]], color="grey",
                marker="^", label="M/G/1 theory (tokens)")
    theory.set_ylabel("M/G/1 mean response (tokens of service)")
    ax.axvline(sweep["recommended_c"], color="green", alpha=0.4)
    lines = ax.get_legend_handles_labels()
    more = theory.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
