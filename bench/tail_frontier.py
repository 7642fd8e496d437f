"""The tail frontier: mean against p99 latency for TRAIL's tail keys on one trace and load.

TRAIL's key bounds how long a long request can wait behind shorter ones by one of two rules
(`trail.policies.TAILS`): linear aging (key + α × arrival, α in tokens per second: earliest
deadline first on deadlines that grow with a request's work) and γ-Boost (α × arrival −
B(work), Yu & Scully 2024, α the server's work rate). This sweeps each rule's knob, beside
FCFS, SJF (the paper's baseline), SJF-work and TRAIL without a tail term, and records every
point's mean and p99 latency with a plot (the issue's target box: mean <= 0.60× FCFS and p99
<= 1.3× FCFS). Boost's γ is swept as multiples of its rule's value (the decay rate of FCFS's
tail at this load, `trail.policies.boost_gamma`); aging's α as multiples of its rule's value
(AGING_FRACTION of one request's decode speed).

    python bench/tail_frontier.py                          # azure-conv, A100, 48, load 0.9
    python bench/tail_frontier.py --trace azure-code --preset llama3-8b-h100
    python bench/tail_frontier.py --smoke                  # seconds: checks the script
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import sys
import time
from dataclasses import replace
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent

AGING_MULTIPLES = (0.25, 1.0, 3.0, 10.0)
BOOST_MULTIPLES = (1.0, 0.1, 0.01, 0.003, 0.001)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default="azure-conv")
    ap.add_argument("--preset", default="llama3-8b-a100-80gb")
    ap.add_argument("--slots", type=int, default=48)
    ap.add_argument("--load", type=float, default=0.9)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--label", default=None, help="results file suffix (default: trace, date)")
    ap.add_argument("--out", default=None,
                    help="results folder (default bench/results; with --smoke a temporary one)")
    ap.add_argument("--smoke", action="store_true", help="400 requests, two points per rule")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trail.progress import progress_bar
    from trail.sim.compare import SimSettings, at_load, describe, describe_short, run, setup
    from trail.sim.compare import summary_row
    from trail.sim.cost_model import CostModel
    from trail.sim.traces import load_trace

    trace = load_trace(args.trace)
    limit = 400 if args.smoke else args.limit
    if limit:
        trace = trace.head(limit)
    base = SimSettings(cost=CostModel.preset(args.preset), load=args.load,
                       max_running=args.slots)
    scaled, cap = at_load(trace, base)
    aging = replace(base, tail="aging")
    alpha = setup("TRAIL", aging, scaled).config.aging_rate
    boost = replace(base, tail="boost")
    gamma = setup("TRAIL", boost, scaled).config.boost_gamma
    am = AGING_MULTIPLES[:2] if args.smoke else AGING_MULTIPLES
    bm = BOOST_MULTIPLES[:2] if args.smoke else BOOST_MULTIPLES
    points: list[tuple[str, str, Any, float | None]] = [
        ("FCFS", "FCFS", base, None), ("SJF", "SJF", base, None),
        ("SJF-work", "SJF-work", replace(base, tail="none"), None),
        ("none", "TRAIL", replace(base, tail="none"), None)]
    points += [("aging", "TRAIL", replace(aging, aging_rate=m * alpha), m) for m in am]
    points += [("boost", "TRAIL", replace(boost, boost_gamma=m * gamma), m) for m in bm
               if gamma > 0]
    rows = []
    t0 = time.perf_counter()
    bar = progress_bar(len(points), "simulating the frontier", "run", True)
    for rule, name, settings, mult in points:
        r = summary_row(run(scaled, name, settings))
        rows.append({"rule": rule, "policy": name, "multiple": mult,
                     "settings": describe_short(describe(setup(name, settings, scaled))),
                     **r})
        bar.update(1)
    bar.close()
    fcfs = rows[0]
    for r in rows:
        r["mean_vs_fcfs"] = r["latency_s_mean"] / fcfs["latency_s_mean"]
        r["p99_vs_fcfs"] = r["latency_s_p99"] / fcfs["latency_s_p99"]
    label = args.label or f"{args.trace}_{dt.date.today().isoformat()}"
    sys.path.insert(0, str(ROOT / "bench"))
    from results_io import results_dir, run_header

    out = results_dir(args.out, args.smoke)
    stem = out / f"tail_frontier_{label}"
    meta = run_header("tail_frontier.py", argv, **{
        "trace": args.trace, "requests": len(trace), "preset": args.preset,
        "slots": args.slots, "load": args.load, "capacity_req_s": cap,
        "aging_rate_rule": alpha, "boost_gamma_rule": gamma,
        "wall_s": time.perf_counter() - t0})
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# Tail frontier: {args.trace}, {args.preset}, {args.slots} slots, load "
             f"{args.load:g}", "",
             f"Machine: {meta['provenance']['machine']}; commit {meta['provenance']['commit']}; "
             f"`{meta['command']}`. Rules: aging α = {alpha:.4g} tokens/s, Boost γ = "
             f"{gamma:.4g} per token; the knob column is the multiple of the rule's value.", "",
             "| rule | knob | mean (s) | p99 (s) | mean / FCFS | p99 / FCFS | settings |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r["policy"] if r["rule"] == r["policy"] else f"TRAIL, {r['rule']}"
        knob = "" if r["multiple"] is None else f"×{r['multiple']:g}"
        lines.append(f"| {name} | {knob} | {r['latency_s_mean']:.2f} | {r['latency_s_p99']:.1f} "
                     f"| {r['mean_vs_fcfs']:.3f} | {r['p99_vs_fcfs']:.2f} | {r['settings']} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for rule, style in (("aging", "o-"), ("boost", "s-")):
        pts = [r for r in rows if r["rule"] == rule]
        if pts:
            ax.plot([r["mean_vs_fcfs"] for r in pts], [r["p99_vs_fcfs"] for r in pts], style,
                    label=f"TRAIL, {rule} (×rule's value)")
            for r in pts:
                ax.annotate(f"×{r['multiple']:g}", (r["mean_vs_fcfs"], r["p99_vs_fcfs"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
    for r in rows:
        if r["multiple"] is None:
            ax.plot(r["mean_vs_fcfs"], r["p99_vs_fcfs"], "k^" if r["rule"] == "none" else "kx")
            ax.annotate("TRAIL, no tail" if r["rule"] == "none" else r["policy"],
                        (r["mean_vs_fcfs"], r["p99_vs_fcfs"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
    ax.fill_between([0, 0.60], 0, 1.3, color="tab:green", alpha=0.12, label="target box")
    ax.set_xlabel("mean latency / FCFS")
    ax.set_ylabel("p99 latency / FCFS")
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set_title(f"{args.trace}, {args.preset}, {args.slots} slots, load {args.load:g}",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=110)
    print(f"wrote {stem}.json/.md/.png")
    if args.smoke:
        print("smoke run done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
