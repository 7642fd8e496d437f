"""Turn bench_scheduler.py's pytest-benchmark JSON into a results table, JSON and plot.

    python bench/summarize_scheduler.py RUN.json bench/results [--label NAME]

Writes OUT/scheduler_<label>.md (table + machine), OUT/scheduler_<label>.json (medians) and
OUT/scheduler_<label>.png (median µs per iteration vs waiting requests, log-log).
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections import defaultdict
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import machine_lines, summary_args, write_json  # noqa: E402

TARGET_US = 25.0  # issue target: native median per iteration at W = 10k


def load(path: pathlib.Path) -> tuple[dict[str, Any], dict[tuple[str, str, int], dict]]:
    raw = json.loads(path.read_text())
    rows: dict[tuple[str, str, int], dict] = {}
    for b in raw["benchmarks"]:
        x = b["extra_info"]
        rows[(x["scenario"], x["impl"], int(x["waiting"]))] = {
            "median_us": b["stats"]["median"] * 1e6,
            "mean_us": b["stats"]["mean"] * 1e6,
            "rounds": b["stats"]["rounds"],
            "preemptions_per_iter": x.get("preemptions_per_iter"),
            "finished_per_iter": x.get("finished_per_iter"),
        }
    return raw, rows


def table(rows: dict[tuple[str, str, int], dict], scenario: str) -> list[str]:
    ws = sorted({w for s, _, w in rows if s == scenario})
    impls = [i for i in ("native", "reference", "sort_everything", "driver_only")
             if (scenario, i, ws[0]) in rows]
    out = ["| W waiting | " + " | ".join(f"{i} (µs)" for i in impls)
           + " | native − driver (µs) | reference / native | preemptions / iter"
           + " | finished / iter |",
           "|---:|" + "---:|" * (len(impls) + 4)]
    for w in ws:
        r = {i: rows[(scenario, i, w)] for i in impls}
        net = r["native"]["median_us"] - r["driver_only"]["median_us"]
        out.append(
            f"| {w:,} | " + " | ".join(f"{r[i]['median_us']:.1f}" for i in impls)
            + f" | {net:.1f} | {r['reference']['median_us'] / r['native']['median_us']:.0f}×"
            + f" | {r['native']['preemptions_per_iter']:.2f}"
            + f" | {r['native']['finished_per_iter']:.2f} |")
    return out


def checks(rows: dict[tuple[str, str, int], dict], scenario: str) -> list[str]:
    med = {(i, w): v["median_us"] for (s, i, w), v in rows.items() if s == scenario}
    lines = []
    n10k = med[("native", 10_000)]
    lines.append(f"- native median at W = 10k: {n10k:.1f} µs (target ≤ {TARGET_US:.0f} µs): "
                 + ("met" if n10k <= TARGET_US else "missed"))
    ratio = min(med[("reference", w)] / med[("native", w)] for w in (1_000, 10_000, 100_000))
    lines.append(f"- smallest reference / native speed-up: {ratio:.0f}× (target ≥ 20×): "
                 + ("met" if ratio >= 20 else "missed"))
    scale = med[("native", 100_000)] / med[("native", 1_000)]
    net = ((med[("native", 100_000)] - med[("driver_only", 100_000)])
           / (med[("native", 1_000)] - med[("driver_only", 1_000)]))
    lines.append(f"- native W = 100k / W = 1k: {scale:.2f}× per iteration (target ≤ 2×): "
                 + ("met" if scale <= 2 else "missed")
                 + f"; {net:.2f}× with the driver's own time taken out")
    return lines


def plot(rows: dict[tuple[str, str, int], dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = sorted({s for s, _, _ in rows})
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for (s, i, w), v in sorted(rows.items()):
            if s == scenario:
                series[i].append((w, v["median_us"]))
        for impl, pts in series.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=impl)
        ax.axhline(TARGET_US, color="grey", linestyle=":", label="25 µs target")
        ax.set(xscale="log", yscale="log", xlabel="waiting requests W",
               ylabel="median µs per iteration", title=f"TRAIL scheduler, {scenario}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = summary_args(__doc__)
    raw, rows = load(args.run_json)
    date = raw["datetime"][:10]
    label = args.label or date
    args.out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# Scheduler benchmark ({date})", "",
             "One serving-loop iteration = `schedule` + `on_step` + `update_predictions` for "
             "256 running requests + `add` of replacements; TRAIL policy, c = 0.8; medians. "
             "`driver_only` is the benchmark driver's own numpy work with a no-op scheduler "
             "(included in every other column). See bench/bench_scheduler.py.", ""]
    lines += machine_lines(raw) + [""]
    for scenario in ("steady", "drain"):
        if not any(s == scenario for s, _, _ in rows):
            continue
        lines += [f"## {scenario}", ""] + table(rows, scenario) + [""] + checks(rows, scenario)
        lines.append("")
    md = args.out_dir / f"scheduler_{label}.md"
    md.write_text("\n".join(lines))
    write_json(args.out_dir / f"scheduler_{label}.json", raw,
               [{"scenario": s, "impl": i, "waiting": w, **v}
                for (s, i, w), v in sorted(rows.items())])
    plot(rows, args.out_dir / f"scheduler_{label}.png")
    print(md.read_text())


if __name__ == "__main__":
    main()
