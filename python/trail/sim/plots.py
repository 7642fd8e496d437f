"""Plots of simulation results (matplotlib PNG): the paper's Figures 5 and 6, latency CDFs.

Each function takes plain rows or arrays (what the JSON results hold) and writes one PNG, so
a result can be re-plotted without re-running it. The helpers (`pyplot`, `series_style`,
`plain_ticks`, `run_title`, `finish`) are shared with the other plots of the project.
"""

from __future__ import annotations

import math
import pathlib
import textwrap
from typing import Any

import numpy as np

# One look per policy in every plot. Colour, line style and marker all differ so that series
# stay apart in greyscale and where they coincide; SRPT and TRAIL+ get larger hollow markers
# because they often sit exactly on TRAIL, whose filled marker then shows inside theirs.
POLICY_STYLES: dict[str, dict[str, Any]] = {
    "FCFS": {"color": "C0", "linestyle": (0, (7, 2)), "marker": "o"},
    "SJF": {"color": "C1", "linestyle": (0, (3, 1.5)), "marker": "s"},
    "SJF-work": {"color": "C9", "linestyle": (0, (3, 1.5, 1, 1.5)), "marker": "v"},
    "SRPT": {"color": "C2", "linestyle": (0, (1, 1.2)), "marker": "D", "hollow": True},
    "TRAIL-paper": {"color": "C7", "linestyle": (0, (4, 1, 1, 1)), "marker": "<"},
    "TRAIL": {"color": "C3", "linestyle": "-", "marker": "^", "linewidth": 2.0},
    "TRAIL+": {"color": "C4", "linestyle": (0, (6, 2, 1, 2)), "marker": "o", "hollow": True},
    "LTR": {"color": "C5", "linestyle": (0, (6, 1.5, 1, 1.5, 1, 1.5)), "marker": "P"},
    "TRAIL max1": {"color": "C6", "linestyle": (0, (10, 2, 3, 2)), "marker": "X"},
    "MLFQ": {"color": "C8", "linestyle": (0, (1, 3)), "marker": "*"},
}
_SPARE_LINESTYLES = ("-", (0, (5, 2)), (0, (1, 1)), (0, (5, 2, 1, 2)), (0, (8, 2, 2, 2)))
_SPARE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def series_style(name: str, k: int, styles: dict[str, dict[str, Any]] | None = None,
                 markersize: float = 6.0) -> dict[str, Any]:
    """Keyword arguments for `ax.plot` giving series `name` (the k-th) its own look."""
    spec = dict((styles if styles is not None else POLICY_STYLES).get(name) or {
        "color": f"C{k % 10}", "linestyle": _SPARE_LINESTYLES[k % len(_SPARE_LINESTYLES)],
        "marker": _SPARE_MARKERS[k % len(_SPARE_MARKERS)]})
    hollow = spec.pop("hollow", False)
    spec.setdefault("linewidth", 1.5)
    spec["markersize"] = markersize * (1.35 if hollow else 1.0)
    if hollow:
        spec.update(markerfacecolor="none", markeredgewidth=1.4)
    return spec


def _plain(value: float, _pos: Any = None) -> str:
    """A tick value as a plain number: 0.5, 6, 1,000 (never 6×10⁰)."""
    return f"{value:,.6g}"


def plain_ticks(ax: Any) -> None:
    """Plain-number tick labels on both axes of `ax`; log axes label some minor ticks too.

    A log axis spanning a decade or two would otherwise show one label or "6×10⁰"-style
    ones. Axes with a formatter of their own (categories, custom labels) are left alone.
    """
    from matplotlib.ticker import (FuncFormatter, LogFormatter, MaxNLocator, NullFormatter,
                                   ScalarFormatter)

    for axis in (ax.xaxis, ax.yaxis):
        major = axis.get_major_formatter()
        if axis.get_scale() == "log" and isinstance(major, LogFormatter):
            lo, hi = sorted(axis.get_view_interval())
            decades = math.log10(hi / lo) if lo > 0 else math.inf
            if decades < 0.6:
                # within half a decade the 1-2-5 log ticks leave one label or none: take
                # evenly spaced round numbers instead
                axis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
                axis.set_major_formatter(FuncFormatter(_plain))
                axis.set_minor_formatter(NullFormatter())
                continue
            # label fewer minor ticks the more decades there are, so labels never collide
            subs = ((2, 3, 5) if decades < 1.4 else (2, 5) if decades < 2.8 else ())

            def minor(value: float, _pos: Any = None, subs: tuple[int, ...] = subs) -> str:
                mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
                return _plain(value) if mantissa in subs else ""

            axis.set_major_formatter(FuncFormatter(_plain))
            axis.set_minor_formatter(FuncFormatter(minor) if subs else NullFormatter())
        elif type(major) is ScalarFormatter:
            fmt = ScalarFormatter(useOffset=False)
            fmt.set_scientific(False)
            axis.set_major_formatter(fmt)


def run_title(title: str = "", trace: str = "", preset: str = "",
              load: float | None = None) -> str:
    """`title` followed by what the run was: "title — trace, preset, load 0.9".

    A trace or preset given as a file path is named by its file name alone.
    """
    facts = [pathlib.PurePath(f).name for f in (trace, preset) if f]
    if load is not None:
        facts.append(f"load {load:g}")
    if not facts:
        return title
    return f"{title} — {', '.join(facts)}" if title else ", ".join(facts)


def finish(fig: Any, axes: Any, path: str, title: str, legend: bool = True,
           footnote: str = "", grid: bool = True) -> None:
    """Title, grid, plain ticks and legend; write the figure to `path` and close it.

    `axes` is one Axes or several; with several, `title` goes above them all and the
    legend (if any) on the first. `footnote` is a line of small print under the figure.
    """
    many = list(np.ravel(axes)) if isinstance(axes, (list, tuple, np.ndarray)) else [axes]
    if title:
        # wrap to the figure's width (about 13 characters an inch at this size)
        title = textwrap.fill(title, width=int(13 * fig.get_figwidth()))
    if title and len(many) > 1:
        fig.suptitle(title, fontsize=10)
    elif title:
        many[0].set_title(title, fontsize=10)
    for ax in many:
        if grid:
            ax.grid(alpha=0.3)
            ax.grid(which="minor", alpha=0.08)
        plain_ticks(ax)
    if legend:
        many[0].legend(fontsize=8)
    if footnote:
        fig.text(0.5, 0.01, footnote, ha="center", va="bottom", fontsize=8, color="dimgrey")
    fig.tight_layout(rect=(0, 0.05 if footnote else 0, 1, 1))
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def _markevery(k: int, n: int, step: float = 0.12) -> tuple[float, float]:
    """markevery for series k of n: markers every `step` of the axes diagonal.

    Each series starts a little later, so the markers of coinciding curves fall side by side
    instead of on top of each other.
    """
    return (step * (k + 0.5) / max(n, 1), step)


def plot_rate_sweep(rows: list[dict[str, Any]], path: str, title: str = "", *,
                    trace: str = "", preset: str = "") -> None:
    """Mean latency and mean TTFT versus request rate, one line per policy (Figure 6).

    A second row divides each policy by FCFS at the same rate: the absolute curves of the
    size-based policies coincide on a log axis, their ratios to FCFS do not.
    """
    plt = pyplot()
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    relative = len(policies) > 1 and "FCFS" in policies
    fig, axes = plt.subplots(2 if relative else 1, 2, figsize=(11, 7.5 if relative else 4.2),
                             sharex=True, squeeze=False)
    fcfs = {r["rate_req_s"]: r for r in rows if r["policy"] == "FCFS"}
    keys = (("latency_s_mean", "mean latency (s)"), ("ttft_s_mean", "mean TTFT (s)"))
    for k, name in enumerate(policies):
        mine = sorted((r for r in rows if r["policy"] == name), key=lambda r: r["rate_req_s"])
        rate = [r["rate_req_s"] for r in mine]
        style = series_style(name, k)
        for col, (key, _) in enumerate(keys):
            axes[0, col].plot(rate, [r[key] for r in mine], label=name, **style)
            if relative and name != "FCFS":
                axes[1, col].plot(rate, [r[key] / fcfs[r["rate_req_s"]][key] for r in mine],
                                  label=name, **style)
    for col, (_, what) in enumerate(keys):
        axes[0, col].set(ylabel=what, yscale="log")
        axes[-1, col].set_xlabel("request rate (req/s)")
        if relative:
            axes[1, col].axhline(1.0, color=POLICY_STYLES["FCFS"]["color"], linewidth=1,
                                 linestyle=POLICY_STYLES["FCFS"]["linestyle"],
                                 label="FCFS (= 1)")
            axes[1, col].set_ylabel(f"{what.split(' (')[0]} relative to FCFS")
    loads = {r["rate_req_s"]: r["load"] for r in rows if r.get("load")}
    if loads:
        # the rate is load × a fixed capacity: show the load along the top as well
        capacity = float(np.median([rate / load for rate, load in loads.items()]))
        for col in range(2):
            top = axes[0, col].secondary_xaxis(
                "top", functions=(lambda x: x / capacity, lambda x: x * capacity))
            top.set_xticks(sorted(set(loads.values())), [_plain(v) for v in
                                                         sorted(set(loads.values()))])
            top.set_xlabel("load (fraction of the saturated FCFS capacity)", fontsize=8)
    axes[0, 0].legend(fontsize=8, loc="upper left")
    if relative:
        # the policies are named in the legend above; here only the reference line
        for ax in axes[1]:
            ax.legend(handles=ax.get_lines()[-1:], fontsize=8, loc="best")
    finish(fig, axes, path, run_title(title or "Latency versus request rate", trace, preset),
           legend=False)


def plot_latency_cdf(latencies: dict[str, np.ndarray], path: str, title: str = "", *,
                     trace: str = "", preset: str = "", load: float | None = None,
                     zoom_from: float = 0.8) -> None:
    """Empirical CDF of request latency per policy, beside a zoom into the slowest requests.

    The size-based policies coincide below their tail; the second panel shows the CDF from
    the `zoom_from` quantile up, where they differ, with each policy's p99 marked.
    """
    plt = pyplot()
    fig, (ax, tail) = plt.subplots(1, 2, figsize=(11, 4.6),
                                   gridspec_kw={"width_ratios": [1, 1.15]})
    series = {name: np.sort(np.asarray(lat, float)[np.isfinite(lat)])
              for name, lat in latencies.items()}
    series = {name: v for name, v in series.items() if len(v)}
    lo_x, hi_x = math.inf, 0.0
    for k, (name, v) in enumerate(series.items()):
        frac = np.arange(1, len(v) + 1) / len(v)
        p99 = float(np.percentile(v, 99))
        style = series_style(name, k)
        label = f"{name} (p99 {_plain(round(p99, 1 if p99 < 100 else 0))} s)"
        for a in (ax, tail):
            a.plot(v, frac, label=label, markevery=_markevery(k, len(series)), **style)
        # the p99 point again, larger, so each policy's p99 reads off the zoomed panel
        tail.plot([p99], [0.99], **{**style, "linestyle": "none", "markersize": 9,
                                    "markeredgecolor": "black"})
        lo_x = min(lo_x, float(np.quantile(v, zoom_from)))
        hi_x = max(hi_x, float(v[-1]))
    for a in (ax, tail):
        a.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
        a.set(xlabel="latency (s)", xscale="log")
    ax.set(ylabel="fraction of requests finished within x", ylim=(0, 1.005))
    ax.axhspan(zoom_from, 1.0, color="grey", alpha=0.08)
    ax.text(0.02, (1 + zoom_from) / 2, "zoomed at right", transform=ax.get_yaxis_transform(),
            fontsize=7, color="dimgrey", va="center")
    if series:
        tail.set_xlim(lo_x / 1.3, hi_x * 1.3)
    tail.set(ylim=(zoom_from, 1.002),
             title=f"slowest {100 * (1 - zoom_from):g}% (dotted line: p99; large marker: "
                   f"each policy's p99)")
    tail.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="lower right", title="policy", title_fontsize=8)
    finish(fig, [ax, tail], path,
           run_title(title or "Request latency CDF", trace, preset, load), legend=False)


def plot_guard_tradeoff(rows: list[dict[str, Any]], path: str, title: str = "", *,
                        trace: str = "", preset: str = "", load: float | None = None) -> None:
    """Mean versus p99 latency: one line per policy through its aging-guard settings.

    The short thresholds all land next to FCFS; a second panel zooms into that corner (the
    settings whose p99 is within 25% of FCFS's) so their labels can be read.
    """
    plt = pyplot()
    fcfs = [r for r in rows if r["policy"] == "FCFS"]
    near = ([r for r in rows if r["policy"] != "FCFS"
             and r["latency_s_p99"] <= 1.25 * fcfs[0]["latency_s_p99"]] if fcfs else [])
    zoom = len(near) >= 2
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(12, 4.8) if zoom else (7, 4.8),
                             squeeze=False, gridspec_kw={"width_ratios": [1.4, 1]} if zoom
                             else None)
    axes = list(axes[0])
    for k, policy in enumerate(dict.fromkeys(r["policy"] for r in rows)):
        mine = [r for r in rows if r["policy"] == policy]
        style = series_style(policy, k)
        # off (0) first, then from the longest threshold to the shortest
        mine.sort(key=lambda r: -(r["starvation_steps"] or float("inf")))
        for a, ax in enumerate(axes):
            if policy == "FCFS":
                ax.plot([r["latency_s_mean"] for r in mine], [r["latency_s_p99"] for r in mine],
                        marker="*", markersize=14, color="black", linestyle="none",
                        label="FCFS", zorder=2.5)  # over the lines, under the labels
                continue
            ax.plot([r["latency_s_mean"] for r in mine], [r["latency_s_p99"] for r in mine],
                    label=f"{policy}, guard off → shorter thresholds", **style)
            # settings that land on the same point share one label
            points: dict[tuple[float, float], list[str]] = {}
            for r in mine:
                if not (a == 0 and zoom and any(r is n for n in near)):  # else: zoom labels it
                    points.setdefault((r["latency_s_mean"], r["latency_s_p99"]), []).append(
                        str(r["starvation_steps"] or "off"))
            for j, (xy, names) in enumerate(points.items()):
                # alternate sides so neighbouring settings' labels do not print over each
                # other
                right = j % 2 == 0
                ax.annotate(", ".join(names), xy, fontsize=7,
                            xytext=(6 if right else -6, 4 if right else -10),
                            textcoords="offset points", color=style["color"],
                            ha="left" if right else "right")
    axes[0].set(xlabel="mean latency (s)", ylabel="p99 latency (s)", yscale="log")
    if zoom:
        box = near + fcfs
        xs = [r["latency_s_mean"] for r in box]
        ys = [r["latency_s_p99"] for r in box]
        # a margin of 15% of the spread, and never less than 1% of the values themselves
        pad_x = 0.15 * (max(xs) - min(xs)) + 0.01 * max(xs)
        pad_y = 0.15 * (max(ys) - min(ys)) + 0.01 * max(ys)
        x0, x1, y0, y1 = min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y
        axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                        edgecolor="grey", linestyle=":"))
        axes[1].set(xlim=(x0, x1), ylim=(y0, y1), xlabel="mean latency (s)",
                    ylabel="p99 latency (s)",
                    title="zoom: the settings within 25% of FCFS's p99 (dotted box at left)")
        axes[1].title.set_fontsize(9)
    for ax in axes:
        _keep_labels_inside(ax)
    finish(fig, axes, path, run_title(title or "Aging guard: mean versus p99 latency", trace,
                                      preset, load),
           footnote="point labels: starvation_steps, the scheduling iterations a request may "
                    "be left out of the batch before it runs first (off: no guard)")


def _keep_labels_inside(ax: Any, edge: float = 0.25) -> None:
    """Turn point labels that would run off the left or right edge of `ax` to the other side."""
    x0, x1 = ax.get_xlim()
    for text in ax.texts:
        if not hasattr(text, "xyann"):
            continue  # not an annotation
        where = (text.xy[0] - x0) / (x1 - x0)
        dx, dy = text.xyann
        if text.get_ha() == "left" and where > 1 - edge:
            text.set_ha("right")
            text.xyann = (-abs(dx), dy)
        elif text.get_ha() == "right" and where < edge:
            text.set_ha("left")
            text.xyann = (abs(dx), dy)


def plot_sweep(sweep: dict[str, Any], path: str, *, trace: str = "", preset: str = "",
               load: float | None = None) -> None:
    """TRAIL's latency versus c, one quantity per panel (Figure 5).

    Simulated mean and p99 latency (seconds) beside the M/G/1 mean response time (tokens of
    service). trace, preset and load default to the sweep's own fields (`trail tune-c`
    records them).
    """
    plt = pyplot()
    rows = sweep["rows"]
    cs = [r["c"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), sharex=True)
    panels = (("latency_s_mean", "mean latency (s)", "simulated mean latency"),
              ("latency_s_p99", "p99 latency (s)", "simulated p99 latency"),
              ("theory_mean_response_tokens", "mean response time (tokens of service)",
               "M/G/1 theory: mean response time"))
    for ax, (key, ylabel, heading) in zip(axes, panels):
        # the model dashed and grey, the simulation in TRAIL's look
        style = ({"color": "dimgrey", "linestyle": (0, (5, 2)), "marker": "s"}
                 if key.startswith("theory") else series_style("TRAIL", 0))
        ax.plot(cs, [r[key] for r in rows], label=heading, **style)
        ax.set(xlabel="c", ylabel=ylabel, title=heading)
        ax.title.set_fontsize(9)
    recommended = f"recommended c = {sweep['recommended_c']:g} (lowest simulated mean)"
    for ax in axes[:2]:
        ax.axvline(sweep["recommended_c"], color="green", alpha=0.5, linewidth=2,
                   label=recommended)
    axes[2].axvline(sweep["theory_best_c"], color="grey", alpha=0.7, linewidth=2,
                    linestyle="--", label=f"theory's best c = {sweep['theory_best_c']:g}")
    # an empty handle: a legend line that explains the model rather than a series
    axes[2].plot([], [], " ", label="one server, exact sizes (the trace's\n"
                                    "output lengths), same load")
    for ax in axes:
        ax.legend(fontsize=7)
    title = run_title("TRAIL: latency versus c", trace or sweep.get("trace", ""),
                      preset or sweep.get("preset", ""),
                      load if load is not None else sweep.get("load"))
    finish(fig, list(axes), path, title, legend=False,
           footnote="c: a running request may be preempted only while its generated tokens "
                    "≤ c × its predicted length (c = 0: never, as in SJF; c = 1: SRPT with "
                    "exact sizes)")


def plot_frontier(rows: list[dict[str, Any]], path: str, title: str = "", *,
                  trace: str = "", preset: str = "", load: float | None = None) -> None:
    """Mean (y) versus p99 (x) latency, one line per policy through its tail knob's values.

    Rows: {policy, knob, value, latency_s_mean, latency_s_p99, label (optional)}; `knob` is
    "aging_rate" (α, tokens per second of waiting) or "starvation_steps" (the aging guard,
    0 = off), or None for a reference point (FCFS: a black star). Points are labelled with
    `label`, else the knob's value; lower-left is better on both counts.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.6))
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    for k, policy in enumerate(policies):
        mine = [r for r in rows if r["policy"] == policy]
        if all(r.get("knob") is None for r in mine):
            ax.plot([r["latency_s_p99"] for r in mine], [r["latency_s_mean"] for r in mine],
                    marker="*", markersize=14, color="black", linestyle="none", label=policy,
                    zorder=2.5)
            continue
        knob = mine[0]["knob"]
        if knob == "starvation_steps":  # off first, then from the longest guard to the shortest
            mine.sort(key=lambda r: -(r["value"] or float("inf")))
            what, label = "guard k", (lambda v: "off" if not v else f"{v:g}")
        else:
            mine.sort(key=lambda r: r["value"])
            what, label = "α", (lambda v: f"{v:g}")
        style = series_style(policy, k)
        ax.plot([r["latency_s_p99"] for r in mine], [r["latency_s_mean"] for r in mine],
                label=f"{policy} ({what})", **style)
        points: dict[tuple[float, float], list[str]] = {}
        for r in mine:
            points.setdefault((r["latency_s_p99"], r["latency_s_mean"]), []).append(
                r.get("label") or label(r["value"]))
        for j, (xy, names) in enumerate(points.items()):
            right = (j + k) % 2 == 0  # alternate sides so neighbours' labels stay apart
            ax.annotate(", ".join(names), xy, fontsize=7, color=style["color"],
                        xytext=(6 if right else -6, 4 if right else -10),
                        textcoords="offset points", ha="left" if right else "right")
    ax.set(xlabel="p99 latency (s)", ylabel="mean latency (s)", xscale="log")
    _keep_labels_inside(ax)
    finish(fig, ax, path, run_title(title or "Mean versus p99 latency: the tail knobs",
                                    trace, preset, load),
           footnote="α: aging rate of the work-aware key (tokens/s of waiting); guard k: "
                    "starvation_steps (off = 0). Lower left is better.")


def plot_ratio_map(cells: list[dict[str, Any]], path: str, title: str = "", *,
                   value: str = "ratio", rows_key: str = "slots", cols_key: str = "load",
                   panel_key: str = "trace", what: str = "TRAIL / SJF-work mean latency"
                   ) -> None:
    """A heat map per panel (e.g. per trace) of `value` over rows × columns (slots × load).

    Diverging colours centred on 1: blue below (the numerator better), red above; each cell
    carries its number. Cells without a value stay blank.
    """
    from matplotlib.colors import TwoSlopeNorm

    plt = pyplot()
    panels = list(dict.fromkeys(c[panel_key] for c in cells))
    row_vals = sorted({c[rows_key] for c in cells})
    col_vals = sorted({c[cols_key] for c in cells})
    vals = [c[value] for c in cells if c.get(value) is not None and math.isfinite(c[value])]
    spread = max([0.05] + [abs(v - 1.0) for v in vals])
    norm = TwoSlopeNorm(vcenter=1.0, vmin=1.0 - spread, vmax=1.0 + spread)
    fig, axes = plt.subplots(1, len(panels), figsize=(1.2 + 3.4 * len(panels), 3.9),
                             squeeze=False)
    axes = list(axes[0])
    image = None
    for ax, panel in zip(axes, panels):
        grid = np.full((len(row_vals), len(col_vals)), np.nan)
        for c in cells:
            if c[panel_key] == panel and c.get(value) is not None:
                grid[row_vals.index(c[rows_key]), col_vals.index(c[cols_key])] = c[value]
        image = ax.imshow(grid, cmap="RdBu_r", norm=norm, aspect="auto", origin="lower")
        for i in range(len(row_vals)):
            for j in range(len(col_vals)):
                if math.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=9,
                            color="white" if abs(grid[i, j] - 1) > 0.6 * spread else "black")
        ax.set_xticks(range(len(col_vals)), [_plain(v) for v in col_vals])
        ax.set_yticks(range(len(row_vals)), [_plain(v) for v in row_vals])
        # a panel named by a file path (a trace CSV) is named by its file name alone
        ax.set(xlabel=cols_key, title=pathlib.PurePath(str(panel)).name)
        ax.title.set_fontsize(9)
    axes[0].set_ylabel(rows_key)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.85, label=what)
    fig.suptitle(title or what, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_regime_axes(axes_rows: dict[str, list[dict[str, Any]]], path: str,
                     title: str = "", *, reference: str = "SJF-work",
                     focus: tuple[str, ...] = ("TRAIL", "TRAIL+")) -> None:
    """One column per axis of a regime map: each policy's mean latency over `reference`'s at
    every value of that axis (the others at their base values); the dotted line at 1 is the
    reference. The top row shows the `focus` policies alone (their ratios sit within a few
    percent of 1, which a policy far from 1 would flatten), the bottom row every policy.
    Rows: {label, ratios: {policy: ratio}} in axis order."""
    plt = pyplot()
    names = list(axes_rows)
    fig, axes = plt.subplots(2, len(names), figsize=(2.2 + 2.9 * len(names), 7.4),
                             squeeze=False, sharey="row")
    for col, axis in enumerate(names):
        rows = axes_rows[axis]
        labels = [pathlib.PurePath(str(r["label"])).name for r in rows]
        policies = list(dict.fromkeys(k for r in rows for k in r.get("ratios", {})))
        for row, shown in enumerate(([p for p in policies if p in focus], policies)):
            ax = axes[row, col]
            for policy in shown:
                ax.plot(range(len(rows)), [r["ratios"].get(policy, np.nan) for r in rows],
                        label=f"{policy} / {reference}",
                        **series_style(policy, policies.index(policy)))
            ax.axhline(1.0, color="grey", linewidth=1, linestyle=":")
            ax.set_xticks(range(len(rows)), labels, fontsize=8)
            ax.set(xlim=(-0.4, len(rows) - 0.6))
        axes[1, col].set_xlabel(axis)
    axes[0, 0].set_ylabel(f"mean latency / {reference}'s\n({', '.join(focus)})")
    axes[1, 0].set_ylabel(f"mean latency / {reference}'s\n(every policy)")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    finish(fig, axes, path, title or f"Mean latency relative to {reference}, one axis at a "
                                     f"time", legend=False)
