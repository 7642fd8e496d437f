"""Judge TRAIL's settings on a grid, never on one trace: traces × loads × presets × slots.

Every cell serves one trace, rescaled to a load (a fraction of the saturated FCFS capacity),
on one cost-model preset with a number of running slots, under FCFS, SJF (the paper's
prompt-only baseline), SJF-work and TRAIL (both with `trail.policies.TRAIL_SETTINGS`, and
again with each variant's settings), and records per cell

- TRAIL's mean latency / min(SJF, SJF-work)'s, and TRAIL's p99 / FCFS's p99,
- every policy's mean, p50, p99 latency, mean TTFT and preemptions,

with the issue's targets checked per cell (load <= 0.9: mean ratio <= 1.02 and p99 ratio <=
1.3; load >= 1.0: mean ratio <= 1.02) and heat maps of both ratios beside the JSON.

`--variants` adds TRAIL set-ups with some settings changed (e.g. the tail rule), each scored
the same way, so candidate defaults are compared on the whole grid in one run:

    python bench/sim_grid.py                                   # the full grid, bench/results/
    python bench/sim_grid.py --variants "aging:tail=aging;none:tail=none" --label candidates
    python bench/sim_grid.py --smoke                           # seconds: checks the script

Traces: azure-conv and azure-code (the first `--limit` requests: whole by default), and the
synthetic "alpaca-shaped" and "heavy-tail" (`trail.sim.traces.synthetic_trace`, 10,000
requests or `--limit`).
`--jobs` runs cells in parallel processes (each one thread).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import pathlib
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent

TRACES = ("azure-conv", "azure-code", "alpaca-shaped", "heavy-tail")
LOADS = (0.7, 0.8, 0.9, 1.0, 1.1)
PRESETS = ("llama3-8b-a100-80gb", "llama3-8b-h100")
SLOTS = (48, 128)
MEAN_TARGET, P99_TARGET = 1.02, 1.3
SYNTHETIC_N = 10_000  # requests of a synthetic trace (at most --limit)


def parse_variants(text: str) -> dict[str, dict[str, Any]]:
    """"label:field=value,field=value;label2:..." -> {label: {field: value}} (numbers parsed)."""
    out: dict[str, dict[str, Any]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        label, _, body = part.partition(":")
        fields: dict[str, Any] = {}
        for kv in filter(None, (x.strip() for x in body.split(","))):
            k, _, v = kv.partition("=")
            try:
                fields[k.strip()] = float(v)
            except ValueError:
                fields[k.strip()] = {"true": True, "false": False}.get(v.strip().lower(),
                                                                        v.strip())
        out[label.strip()] = fields
    return out


def run_cell(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """One cell: every baseline and every TRAIL variant; a row each."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from trail.sim.compare import SimSettings, at_load, describe, describe_short, run, setup
    from trail.sim.compare import summary_row
    from trail.sim.cost_model import CostModel
    from trail.sim.traces import load_trace, synthetic_trace

    if cell["trace"] in ("alpaca-shaped", "heavy-tail"):
        trace = synthetic_trace(cell["trace"], n=min(cell["limit"], SYNTHETIC_N),
                                seed=cell["seed"])
    else:
        trace = load_trace(cell["trace"]).head(cell["limit"])
    base = SimSettings(cost=CostModel.preset(cell["preset"]), load=cell["load"],
                       max_running=cell["slots"], seed=cell["seed"])
    scaled, cap = at_load(trace, base)
    rows = []
    runs = [(name, name, base) for name in ("FCFS", "SJF")]
    for label, fields in cell["variants"].items():  # SJF-work takes each variant's settings
        tag = f"[{label}]" if label else ""
        runs += [(f"SJF-work{tag}", "SJF-work", replace(base, **fields)),
                 (f"TRAIL{tag}", "TRAIL", replace(base, **fields))]
    for label, name, settings in runs:
        t = time.perf_counter()
        r = summary_row(run(scaled, name, settings))
        rows.append({**{k: cell[k] for k in ("trace", "load", "preset", "slots")},
                     "policy": label, "capacity_req_s": cap,
                     "settings": describe_short(describe(setup(name, settings, scaled))),
                     **r, "wall_s": time.perf_counter() - t})
    return rows


def score(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell and TRAIL variant: mean / min(SJF, SJF-work), p99 / FCFS, targets met."""
    cells: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["trace"], r["load"], r["preset"], r["slots"]), {})[r["policy"]] = r
    out = []
    for key, by in cells.items():
        for name, r in by.items():
            if not name.startswith("TRAIL"):
                continue
            work = by["SJF-work" + name[len("TRAIL"):]]
            best = min(by["SJF"]["latency_s_mean"], work["latency_s_mean"])
            mean_ratio = r["latency_s_mean"] / best
            p99_ratio = r["latency_s_p99"] / by["FCFS"]["latency_s_p99"]
            ok = mean_ratio <= MEAN_TARGET and (key[1] >= 1.0 or p99_ratio <= P99_TARGET)
            out.append({"trace": key[0], "load": key[1], "preset": key[2], "slots": key[3],
                        "policy": name, "mean_vs_best_sjf": mean_ratio,
                        "p99_vs_fcfs": p99_ratio,
                        "mean_vs_fcfs": r["latency_s_mean"] / by["FCFS"]["latency_s_mean"],
                        "sjf_work_p99_vs_fcfs": work["latency_s_p99"]
                        / by["FCFS"]["latency_s_p99"], "target_met": ok})
    return out


def short(preset: str) -> str:
    return "a100" if "a100" in preset else "h100" if "h100" in preset else preset


def heatmaps(scores: list[dict[str, Any]], policy: str, path: pathlib.Path) -> None:
    """Two heat maps (mean / best SJF, p99 / FCFS): rows trace × preset × slots, columns
    loads; a cell that misses its target is outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    mine = [s for s in scores if s["policy"] == policy]
    rows = sorted({(s["trace"], short(s["preset"]), s["slots"]) for s in mine})
    loads = sorted({s["load"] for s in mine})
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.32 * len(rows) + 2.2))
    for ax, key, target, title in ((axes[0], "mean_vs_best_sjf", MEAN_TARGET,
                                    "mean latency / min(SJF, SJF-work)"),
                                   (axes[1], "p99_vs_fcfs", P99_TARGET, "p99 latency / FCFS")):
        grid = np.full((len(rows), len(loads)), np.nan)
        for s in mine:
            grid[rows.index((s["trace"], short(s["preset"]), s["slots"])),
                 loads.index(s["load"])] = s[key]
        lim = max(abs(math.log(target)) * 3, float(np.nanmax(np.abs(np.log(grid)))))
        im = ax.imshow(np.log(grid), cmap="RdYlGn_r", vmin=-lim, vmax=lim, aspect="auto")
        for i in range(len(rows)):
            for j in range(len(loads)):
                v = grid[i, j]
                miss = v > target and (key == "mean_vs_best_sjf" or loads[j] <= 0.9)
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        fontweight="bold" if miss else "normal")
        ax.set_xticks(range(len(loads)), [f"{x:g}" for x in loads])
        ax.set_yticks(range(len(rows)), [f"{t} {p} {n}" for t, p, n in rows], fontsize=7)
        ax.set_xlabel("load")
        ax.set_title(f"{policy}: {title} (bold: target missed)", fontsize=9)
        fig.colorbar(im, ax=ax, label="log ratio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_md(path: pathlib.Path, meta: dict[str, Any], scores: list[dict[str, Any]],
             rows: list[dict[str, Any]]) -> None:
    policies = list(dict.fromkeys(s["policy"] for s in scores))
    lines = [f"# TRAIL on the grid ({meta['date']})", "",
             f"Machine: {meta['provenance']['machine']}; commit {meta['provenance']['commit']}; "
             f"command `{meta['command']}`; {meta['wall_s']:.0f} s.", "",
             f"Traces {', '.join(meta['traces'])} (first {meta['limit']} requests each), loads "
             f"{', '.join(f'{x:g}' for x in meta['loads'])}, presets "
             f"{', '.join(meta['presets'])}, slots {', '.join(map(str, meta['slots']))}.",
             f"Targets: mean <= {MEAN_TARGET}× min(SJF, SJF-work) in every cell; p99 <= "
             f"{P99_TARGET}× FCFS where load <= 0.9.", "",
             "| TRAIL set-up | settings (azure-conv, A100, 48, load 0.9) | cells meeting both "
             "| mean target | p99 target (load <= 0.9) | worst mean ratio | worst p99 ratio "
             "(load <= 0.9) |", "|---|---|---|---|---|---|---|"]
    for p in policies:
        mine = [s for s in scores if s["policy"] == p]
        low = [s for s in mine if s["load"] <= 0.9]
        ref = next((r["settings"] for r in rows if r["policy"] == p and
                    r["trace"] == "azure-conv" and r["load"] == 0.9 and r["slots"] == 48
                    and "a100" in r["preset"]), "")
        lines.append(f"| {p} | {ref} | {sum(s['target_met'] for s in mine)}/{len(mine)} | "
                     f"{sum(s['mean_vs_best_sjf'] <= MEAN_TARGET for s in mine)}/{len(mine)} | "
                     f"{sum(s['p99_vs_fcfs'] <= P99_TARGET for s in low)}/{len(low)} | "
                     f"{max(s['mean_vs_best_sjf'] for s in mine):.3f} | "
                     f"{max((s['p99_vs_fcfs'] for s in low), default=math.nan):.2f} |")
    for p in policies:
        lines += ["", f"## {p}: mean / min(SJF, SJF-work) · p99 / FCFS per cell", "",
                  "| trace | preset | slots | " + " | ".join(f"load {x:g}" for x in meta["loads"])
                  + " |", "|---|---|---|" + "---|" * len(meta["loads"])]
        mine = {(s["trace"], short(s["preset"]), s["slots"], s["load"]): s
                for s in scores if s["policy"] == p}
        for t, pr, n in sorted({k[:3] for k in mine}):
            cells = []
            for x in meta["loads"]:
                s = mine.get((t, pr, n, x))
                cells.append("" if s is None else
                             f"{s['mean_vs_best_sjf']:.3f} · {s['p99_vs_fcfs']:.2f}"
                             + ("" if s["target_met"] else " ✗"))
            lines.append(f"| {t} | {pr} | {n} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", default=",".join(TRACES))
    ap.add_argument("--loads", default=",".join(map(str, LOADS)))
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--slots", default=",".join(map(str, SLOTS)))
    ap.add_argument("--limit", type=int, default=20_000,
                    help="requests per trace (default 20000: the whole Azure traces; the "
                         "synthetic ones have at most 10000)")
    ap.add_argument("--variants", default="",
                    help="extra TRAIL set-ups: 'label:field=value,...;label2:...' "
                         "(SimSettings fields, e.g. tail=aging)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--label", default=None, help="results file suffix (default: the date)")
    ap.add_argument("--out", default=None,
                    help="results folder (default bench/results; with --smoke a temporary one)")
    ap.add_argument("--smoke", action="store_true", help="one tiny cell per trace")
    args = ap.parse_args(argv)
    from trail.progress import progress_bar

    traces = [t.strip() for t in args.traces.split(",") if t.strip()]
    bad = sorted(set(traces) - set(TRACES))
    if bad:
        ap.error(f"--traces: unknown {bad}; choose from {', '.join(TRACES)}")
    loads = [float(x) for x in args.loads.split(",")]
    presets = [p.strip() for p in args.presets.split(",")]
    slots = [int(x) for x in args.slots.split(",")]
    limit = args.limit
    if args.smoke:
        loads, presets, slots, limit = [0.9], presets[:1], slots[:1], 300
    variants = {"": {}, **parse_variants(args.variants)}
    cells = [{"trace": t, "load": x, "preset": p, "slots": n, "limit": limit,
              "seed": args.seed, "variants": variants}
             for t in traces for p in presets for n in slots for x in loads]
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    bar = progress_bar(len(cells), "grid cells", "cell", True)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for got in pool.map(run_cell, cells):
            rows += got
            bar.update(1)
    bar.close()
    scores = score(rows)
    label = args.label or dt.date.today().isoformat()
    sys.path.insert(0, str(ROOT / "bench"))
    from results_io import results_dir, run_header

    out = results_dir(args.out, args.smoke)
    stem = out / f"sim_grid_{label}"
    meta = run_header("sim_grid.py", argv, date=dt.date.today().isoformat(), traces=traces,
                      loads=loads, presets=presets, slots=slots, limit=limit, seed=args.seed,
                      variants=variants, wall_s=time.perf_counter() - t0)
    stem.with_suffix(".json").write_text(json.dumps({**meta, "scores": scores, "rows": rows},
                                                    indent=1) + "\n")
    write_md(stem.with_suffix(".md"), meta, scores, rows)
    for p in dict.fromkeys(s["policy"] for s in scores):
        tag = p.replace("TRAIL[", "").replace("]", "").replace("TRAIL", "trail") or "trail"
        heatmaps(scores, p, pathlib.Path(f"{stem}_{tag}.png"))
    met = {p: sum(s["target_met"] for s in scores if s["policy"] == p)
           for p in dict.fromkeys(s["policy"] for s in scores)}
    print(f"wrote {stem}.json/.md and heat maps; cells meeting the targets: "
          + ", ".join(f"{p} {m}/{len(cells)}" for p, m in met.items()))
    if args.smoke:
        print("smoke run done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
