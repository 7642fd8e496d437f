"""Record the policy comparison on a real trace: load sweep, latency CDFs, aging guard, c.

On the Azure conversation trace with the A100 preset (the paper's GPU), by default:
- every policy of `trail simulate --compare` (plus TRAIL with at most one preemption per
  request) at loads 0.5-0.95 of the FCFS capacity: mean / p50 / p99 latency, mean and p99
  TTFT, preemptions; the ratios TRAIL / FCFS and TRAIL / TRAIL+ (the paper's Figure 6);
- latency CDFs with p99 marked at the highest load;
- the aging guard's trade-off at load 0.9: TRAIL (and SJF) with `starvation_steps` from off
  to short, mean latency against p99;
- mean latency versus c at load 0.9 (Figure 5), by simulation and by M/G/1 theory.

    python bench/sim_compare.py                  # ~10 min on 2 cores; writes bench/results/
    python bench/sim_compare.py --smoke          # seconds; checks the script only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import platform
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np
from trail.machine import describe
from trail.progress import progress_bar
from trail.sim.compare import (
    COMPARE,
    SimSettings,
    at_load,
    describe_short,
    run,
    setup,
    summary_row,
    sweep_c,
)
from trail.sim.compare import describe as policy_settings
from trail.sim.cost_model import CostModel
from trail.sim.plots import plot_guard_tradeoff, plot_latency_cdf, plot_rate_sweep, plot_sweep
from trail.sim.traces import load_trace

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import commit  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIMITED = "TRAIL max1"  # TRAIL with max_preemptions = 1


def row(result: Any) -> dict[str, Any]:
    """summary.json's per-policy entry, plus p99 TTFT and the simulator's wall time."""
    return {**summary_row(result), "p99_ttft_s": result.aggregates()["ttft_s_p99"],
            "wall_s": result.wall_s}


def policy_run(trace: Any, name: str, settings: SimSettings) -> Any:
    """One run; LIMITED is TRAIL with at most one preemption per request."""
    if name == LIMITED:
        return run(trace, "TRAIL", replace(settings, max_preemptions=1))
    return run(trace, name, settings)


def load_sweep(trace: Any, settings: SimSettings, loads: list[float], names: list[str],
               cdf_load: float) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Rows per (load, policy) and the latencies of every policy at `cdf_load`."""
    rows: list[dict[str, Any]] = []
    cdf: dict[str, np.ndarray] = {}
    bar = progress_bar(len(loads) * len(names), "simulating the load sweep", "run", True)
    for load in loads:
        scaled, cap = at_load(trace, replace(settings, load=load))
        for name in names:
            result = policy_run(scaled, name, settings)
            rows.append({"load": load, "rate_req_s": scaled.rate, "capacity_req_s": cap,
                         "policy": name, **row(result)})
            if load == cdf_load:
                cdf[name] = result.finish - result.arrival
            bar.update(1)
    bar.close()
    return rows, cdf


def guard_sweep(trace: Any, settings: SimSettings, steps: list[int]) -> list[dict[str, Any]]:
    """Mean and p99 latency of TRAIL and SJF for each aging-guard setting, FCFS beside."""
    scaled, _ = at_load(trace, settings)
    rows = [{"label": "FCFS", "policy": "FCFS", "starvation_steps": 0,
             **row(run(scaled, "FCFS", settings))}]
    bar = progress_bar(2 * len(steps), "simulating aging-guard settings", "run", True)
    for policy in ("TRAIL", "SJF"):
        for k in steps:
            r = run(scaled, policy, replace(settings, starvation_steps=k))
            rows.append({"label": f"{policy} {k or 'off'}", "policy": policy,
                         "starvation_steps": k, **row(r)})
            bar.update(1)
    bar.close()
    return rows


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], guard: list[dict[str, Any]],
             csweep: dict[str, Any]) -> str:
    """The recorded tables."""
    names = list(dict.fromkeys(r["policy"] for r in rows))
    loads = sorted({r["load"] for r in rows})
    at = {(r["load"], r["policy"]): r for r in rows}
    lines = [f"# Policies on {meta['trace']} with {meta['preset']} ({meta['date']})", "",
             f"`python bench/sim_compare.py` simulates {meta['requests']} requests of the "
             f"trace, rescaled in time to each load (load = arrival rate / the saturated FCFS "
             f"throughput of {meta['max_running']} slots), through the C++ scheduler on the "
             f"roofline cost model. TRAIL: probe predictions refreshed every "
             f"{meta['predict_every']} tokens (simulated error, MAE 33.9 at prefill, "
             f"correlated over {meta['corr_tokens']:g} tokens), a prompt-only prediction "
             f"(MAE 46.1) while waiting, {meta['trail']}; TRAIL+: the same rule with true "
             f"lengths; TRAIL-paper: the paper's rule (c = 0.8, output tokens only); SJF: "
             f"prompt-only, output tokens only; SJF-work: prompt-only with TRAIL's key; "
             f"`{LIMITED}`: TRAIL, at most one preemption per request "
             f"(trail.sim.compare).", "",
             f"- machine: {meta['machine']}",
             f"- python {meta['python']}, numpy {meta['numpy']}, commit {meta['commit']}",
             f"- run: {meta['started']}, {meta['wall_s']:.0f} s", "",
             "## Mean latency (s) and the ratios", "",
             "| load | req/s | " + " | ".join(names) + " | TRAIL/FCFS | TRAIL/TRAIL+ |",
             "|---|---:|" + "---:|" * (len(names) + 2)]
    for load in loads:
        f, t, tp = at[(load, "FCFS")], at[(load, "TRAIL")], at[(load, "TRAIL+")]
        lines.append(f"| {load} | {f['rate_req_s']:.2f} | "
                     + " | ".join(f"{at[(load, n)]['mean_latency_s']:.2f}" for n in names)
                     + f" | {t['mean_latency_s'] / f['mean_latency_s']:.3f} | "
                       f"{t['mean_latency_s'] / tp['mean_latency_s']:.3f} |")
    for key, title in (("mean_ttft_s", "Mean TTFT (s)"), ("p99_latency_s", "p99 latency (s)"),
                       ("p50_latency_s", "Median latency (s)")):
        lines += ["", f"## {title}", "",
                  "| load | " + " | ".join(names) + " | TRAIL/FCFS | TRAIL/TRAIL+ |",
                  "|---|" + "---:|" * (len(names) + 2)]
        for load in loads:
            f, t, tp = at[(load, "FCFS")], at[(load, "TRAIL")], at[(load, "TRAIL+")]
            lines.append(f"| {load} | " + " | ".join(f"{at[(load, n)][key]:.2f}" for n in names)
                         + f" | {t[key] / f[key]:.3f} | {t[key] / tp[key]:.3f} |")
    lines += ["", "## Preemptions", "", "| load | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    for load in loads:
        lines.append(f"| {load} | " + " | ".join(str(at[(load, n)]["preemptions"])
                                                  for n in names) + " |")
    lines += ["", f"## Aging guard at load {meta['guard_load']}", "",
              "`starvation_steps = k`: a request left out of the batch for k scheduling "
              "iterations runs first until it finishes (docs/scheduler.md).", "",
              "| setting | mean latency | p50 | p99 | mean TTFT | p99 TTFT | preemptions |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in guard:
        lines.append(f"| {r['label']} | {r['mean_latency_s']:.2f} | {r['p50_latency_s']:.2f} | "
                     f"{r['p99_latency_s']:.1f} | {r['mean_ttft_s']:.2f} | "
                     f"{r['p99_ttft_s']:.1f} | {r['preemptions']} |")
    lines += ["", f"## TRAIL's c at load {meta['guard_load']} (Figure 5)", "",
              "| c | mean latency | p99 | mean TTFT | preemptions | M/G/1 theory (tokens) |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in csweep["rows"]:
        lines.append(f"| {r['c']} | {r['mean_latency_s']:.2f} | {r['p99_latency_s']:.1f} | "
                     f"{r['mean_ttft_s']:.2f} | {r['preemptions']} | "
                     f"{r['theory_mean_response_tokens']:.1f} |")
    lines += ["", f"Recommended c (simulation): {csweep['recommended_c']}; "
              f"M/G/1 theory prefers c = {csweep['theory_best_c']}.", "",
              "Plots: `*_rate_sweep.png` (Figure 6), `*_latency_cdf.png`, `*_guard.png`, "
              "`*_latency_vs_c.png`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="azure-conv")
    ap.add_argument("--preset", default="llama3-8b-a100-80gb")
    ap.add_argument("--loads", default="0.5,0.6,0.7,0.8,0.9,0.95")
    ap.add_argument("--guard-load", type=float, default=0.9)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    ap.add_argument("--smoke", action="store_true", help="tiny run; checks the script only")
    args = ap.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    trace = load_trace(args.trace)
    loads = [float(x) for x in args.loads.split(",")]
    steps, cs = [0, 16000, 8000, 4000, 2000, 1000, 500], [0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    if args.smoke:
        trace, loads, steps, cs = trace.head(400), [0.5, 0.9], [0, 200], [0.0, 0.8]
    settings = SimSettings(cost=CostModel.preset(args.preset), load=args.guard_load)
    names = list(COMPARE) + [LIMITED]
    rows, cdf = load_sweep(trace, settings, loads, names, max(loads))
    guard = guard_sweep(trace, settings, steps)
    scaled, _ = at_load(trace, settings)
    csweep = sweep_c(scaled, settings, cs)
    meta = {"date": args.label or started.date().isoformat(),
            "started": started.isoformat(timespec="seconds"), "machine": describe(),
            "python": platform.python_version(), "numpy": np.__version__, "commit": commit(),
            "trace": args.trace, "requests": len(trace), "preset": args.preset,
            "max_running": settings.max_running, "c": settings.c,
            "predict_every": settings.predict_every, "corr_tokens": settings.corr_tokens,
            "trail": describe_short(policy_settings(setup("TRAIL", settings))),
            "policy_settings": {n: policy_settings(setup(n, settings)) for n in COMPARE},
            "guard_load": args.guard_load,
            "cdf_load": max(loads), "wall_s": time.perf_counter() - t0}
    md = markdown(meta, rows, guard, csweep)
    if args.smoke:
        print(md)
        print("smoke run done (nothing written)")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    stem = str(args.out / f"sim_compare_{meta['date']}")
    pathlib.Path(stem + ".json").write_text(json.dumps(
        {**meta, "load_sweep": rows, "aging_guard": guard, "c_sweep": csweep}, indent=1) + "\n")
    pathlib.Path(stem + ".md").write_text(md)
    facts = {"trace": args.trace, "preset": args.preset}
    plot_rate_sweep(rows, stem + "_rate_sweep.png", **facts)
    plot_latency_cdf(cdf, stem + "_latency_cdf.png", **facts, load=max(loads))
    plot_guard_tradeoff(guard, stem + "_guard.png", **facts, load=args.guard_load)
    plot_sweep(csweep, stem + "_latency_vs_c.png", **facts, load=args.guard_load)
    print(md)
    print(f"wrote {stem}.json, .md and 4 plots")


if __name__ == "__main__":
    main()
