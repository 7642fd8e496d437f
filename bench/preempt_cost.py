"""Does pricing a preemption pay? TRAIL with and without `rebuild_cost` where preemption
recomputes (vLLM's only mode), on a CPU engine's step cost, in the simulator.

vLLM frees a preempted request's KV and recomputes its prompt and output when it resumes.
On a CPU that prefill is compute-bound (a 150-token prefill of SmolLM2 costs about eleven
decode steps of the whole batch), so a displacement that saves the newcomer less than that
is a loss. This replays Poisson workloads through `trail.sim.simulate` with the engine's
fitted step cost (`trail.engine.StepCost`: constant + rows + prefill tokens + context) and
`preempt_mode=RECOMPUTE`, under FCFS, SJF (prompt-only), TRAIL-paper, TRAIL with
`rebuild_cost=0` (the cost-blind rule) and TRAIL (rebuild_cost "auto" = 1), and TRAIL+ both
ways, at several loads and batch sizes, and reports mean and p99 latency against FCFS and
the rank preemptions each made.

    python bench/preempt_cost.py                         # bench/results/preempt_cost_<date>.*
    python bench/preempt_cost.py --step-cost runs/demo-smollm2/summary.json
    python bench/preempt_cost.py --smoke                 # seconds: checks the script

`--step-cost`: a `trail demo` summary.json (its fitted clock) or a StepCost JSON; default:
SmolLM2-135M's cost fitted by the 2026-11-30 demo run (bench/results/demo_smollm2_2026-11-30.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import pathlib
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import results_dir, run_header  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_COST = ROOT / "bench" / "results" / "demo_smollm2_2026-11-30.json"
# (label, set-up, overrides of its settings). "margin 0": TRAIL where its predictors' errors
# are not measured (the vLLM adapter's case), so only the rebuild's price holds it back.
RUNS = (("FCFS", "FCFS", {}), ("SJF", "SJF", {}), ("TRAIL-paper", "TRAIL-paper", {}),
        ("TRAIL rebuild 0", "TRAIL", {"rebuild_cost": 0.0}), ("TRAIL", "TRAIL", {}),
        ("TRAIL margin 0, rebuild 0", "TRAIL", {"rebuild_cost": 0.0, "preempt_margin": 0.0}),
        ("TRAIL margin 0", "TRAIL", {"preempt_margin": 0.0}),
        ("TRAIL+ rebuild 0", "TRAIL+", {"rebuild_cost": 0.0}), ("TRAIL+", "TRAIL+", {}))
PAIRS = (("TRAIL", "TRAIL rebuild 0"), ("TRAIL margin 0", "TRAIL margin 0, rebuild 0"),
         ("TRAIL+", "TRAIL+ rebuild 0"))
KV_TOKENS = 12_288  # vLLM's 512 MiB of float32 SmolLM2 KV (46 KB a token), the benchmark's


def load_cost(path: pathlib.Path) -> Any:
    """A StepCost from a demo summary (its virtual clock) or a StepCost JSON."""
    from trail.engine import StepCost

    raw = json.loads(path.read_text())
    if "clock" in raw:
        raw = raw["clock"]["step_cost"]
    return StepCost(**{k: v for k, v in raw.items() if k in StepCost.__dataclass_fields__})


def cell(cost: Any, trace_kind: str, load: float, slots: int, n: int, seed: int,
         max_new: int) -> list[dict[str, Any]]:
    """Every run of RUNS on one workload; a row each."""
    from trail import policies
    from trail.engine.setups import step_cost_server
    from trail.sim.cost_model import EngineStepCost
    from trail.sim.predictors import (DEFAULT_PROBE_MAE, DEFAULT_PROMPT_MAE, EmbeddingProbe,
                                      Given, Oracle, PromptOnly)
    from trail.sim.simulator import capacity, simulate
    from trail.sim.traces import synthetic_trace

    import trail_ext as te

    trace = synthetic_trace(trace_kind, n=n, seed=seed)
    prompt = np.minimum(trace.prompt_tokens, 1024)
    output = np.minimum(trace.output_tokens, max_new)
    memory = dict(max_running=slots, kv_capacity_tokens=KV_TOKENS, block_size=16,
                  preempt_mode=te.PreemptMode.RECOMPUTE)
    sim_cost = EngineStepCost(cost)
    fcfs = policies.scheduler_config("FCFS", **memory)
    cap = capacity(prompt, output, fcfs, sim_cost, n=n, seed=seed)
    rng = np.random.default_rng(seed + 7)
    arrival = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0 / (load * cap), n - 1))])
    srv = step_cost_server(cost, slots, 256)
    works = output + srv.prefill_weight * prompt
    rate = (n - 1) / float(arrival[-1])
    srv = replace(srv, arrival_mae=DEFAULT_PROMPT_MAE, probe_mae=DEFAULT_PROBE_MAE,
                  work_rate=rate * float(works.mean()) / load,
                  boost_gamma=policies.boost_gamma(rate, works, rate * float(works.mean())
                                                   / load))
    rows = []
    for label, name, overrides in RUNS:
        sp = policies.spec(name)
        settings = policies.settings_of(name, **overrides)
        cfg = policies.scheduler_config(name, srv, settings, **memory)
        predictor: Any = {None: Given(), "prompt-only": PromptOnly(),
                          "probe": EmbeddingProbe(predict_every=8),
                          "true": Oracle()}[sp.lengths]
        t = time.perf_counter()
        r = simulate(arrival, prompt, output, cfg, sim_cost, predictor, predict_every=8,
                     max_new_tokens=max_new, seed=seed, progress=False)
        a = r.aggregates()
        rows.append({"trace": trace_kind, "load": load, "slots": slots, "seed": seed,
                     "policy": label, "rebuild_cost": cfg.rebuild_cost,
                     "prefill_weight": cfg.prefill_weight,
                     "preempt_margin": cfg.preempt_margin,
                     "latency_s_mean": a["latency_s_mean"], "latency_s_p99": a["latency_s_p99"],
                     "ttft_s_mean": a["ttft_s_mean"], "preemptions": a.get("preemptions", 0),
                     "capacity_req_s": cap, "wall_s": time.perf_counter() - t})
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (trace, load, slots, policy): mean and p99 against FCFS, geometric mean over
    seeds, and preemptions summed."""
    groups: dict[tuple, dict[str, list]] = {}
    fcfs = {(r["trace"], r["load"], r["slots"], r["seed"]): r for r in rows
            if r["policy"] == "FCFS"}
    for r in rows:
        f = fcfs[(r["trace"], r["load"], r["slots"], r["seed"])]
        g = groups.setdefault((r["trace"], r["load"], r["slots"], r["policy"]),
                              {"mean": [], "p99": [], "pre": []})
        g["mean"].append(r["latency_s_mean"] / f["latency_s_mean"])
        g["p99"].append(r["latency_s_p99"] / f["latency_s_p99"])
        g["pre"].append(r["preemptions"])
    return [{"trace": k[0], "load": k[1], "slots": k[2], "policy": k[3],
             "mean_vs_fcfs": float(np.exp(np.mean(np.log(v["mean"])))),
             "p99_vs_fcfs": float(np.exp(np.mean(np.log(v["p99"])))),
             "preemptions": int(np.sum(v["pre"]))} for k, v in groups.items()]


def plot(summary: list[dict[str, Any]], path: pathlib.Path) -> None:
    """Mean latency / FCFS against load, one panel per (trace, slots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(s["trace"], s["slots"]) for s in summary})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (trace, slots) in zip(axes[0], panels):
        for label, _, _ in RUNS[1:]:
            pts = sorted((s["load"], s["mean_vs_fcfs"]) for s in summary
                         if s["trace"] == trace and s["slots"] == slots and s["policy"] == label)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label,
                    linestyle="--" if "rebuild 0" in label else "-")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(f"{trace}, {slots} slots", fontsize=9)
        ax.set_xlabel("load")
        ax.set_ylabel("mean latency / FCFS")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(meta: dict[str, Any], summary: list[dict[str, Any]]) -> str:
    lines = [f"# Pricing a preemption where it recomputes ({meta['date']})", "",
             f"Machine: {meta['provenance']['machine']}; commit "
             f"{meta['provenance']['commit']}; command `{meta['command']}`; "
             f"{meta['wall_s']:.0f} s. Simulator, deterministic per seed.", "",
             f"Step cost: {meta['step_cost']} (β at a full batch: "
             + ", ".join(f"{k} slots {v:.3f}" for k, v in meta["beta"].items()) + "). "
             f"Every policy preempts by RECOMPUTE (vLLM's mode); KV {KV_TOKENS} tokens; "
             f"{meta['n']} requests per run, seeds {meta['seeds']}, answers capped at "
             f"{meta['max_new']} tokens. Ratios are geometric means over seeds.", "",
             "| trace | slots | load | policy | mean / FCFS | p99 / FCFS | preemptions |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for s in sorted(summary, key=lambda s: (s["trace"], s["slots"], s["load"])):
        if s["policy"] == "FCFS":
            continue
        lines.append(f"| {s['trace']} | {s['slots']} | {s['load']:g} | {s['policy']} | "
                     f"{s['mean_vs_fcfs']:.3f} | {s['p99_vs_fcfs']:.2f} | {s['preemptions']} |")
    by = {(s["trace"], s["slots"], s["load"], s["policy"]): s for s in summary}
    for priced, blind in PAIRS:
        lines += ["", f"## {priced} against the cost-blind rule ({blind})", "",
                  "| trace | slots | load | mean: priced / blind | p99: priced / blind | "
                  "preemptions (blind → priced) |", "|---|---:|---:|---:|---:|---|"]
        ratios = []
        for (trace, slots, load, p) in sorted(by):
            if p != priced:
                continue
            a, b = by[(trace, slots, load, priced)], by[(trace, slots, load, blind)]
            ratios.append(a["mean_vs_fcfs"] / b["mean_vs_fcfs"])
            lines.append(f"| {trace} | {slots} | {load:g} | {ratios[-1]:.3f} | "
                         f"{a['p99_vs_fcfs'] / b['p99_vs_fcfs']:.3f} | "
                         f"{b['preemptions']} → {a['preemptions']} |")
        lines += ["", f"Priced at or below blind in {sum(r <= 1.0 for r in ratios)} of "
                  f"{len(ratios)} cells; geometric mean {np.exp(np.mean(np.log(ratios))):.3f}, "
                  f"worst {max(ratios):.3f}."]
    lines += ["", f"Plot: `{meta['plot']}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-cost", type=pathlib.Path, default=DEFAULT_COST)
    ap.add_argument("--traces", default="alpaca-shaped,heavy-tail")
    ap.add_argument("--loads", default="0.7,0.9,1.0,1.1")
    ap.add_argument("--slots", default="4,16")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.traces, args.loads, args.slots, args.requests, args.seeds = (
            "alpaca-shaped", "0.9", "4", 40, 1)
    cost = load_cost(args.step_cost)
    traces = args.traces.split(",")
    loads = [float(x) for x in args.loads.split(",")]
    slots = [int(x) for x in args.slots.split(",")]
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    todo = [(t, x, n, s) for t in traces for n in slots for x in loads for s in range(args.seeds)]
    for i, (t, x, n, s) in enumerate(todo, 1):
        rows += cell(cost, t, x, n, args.requests, s, args.max_new)
        print(f"[{i}/{len(todo)}] {t} load {x:g} slots {n} seed {s}", flush=True)
    summary = summarize(rows)
    out = results_dir(args.out, args.smoke)
    label = args.label or dt.date.today().isoformat()
    stem = out / f"preempt_cost_{label}"
    meta = {**run_header("preempt_cost.py", argv), "date": dt.date.today().isoformat(),
            "wall_s": time.perf_counter() - t0, "step_cost": getattr(cost, "name", "") or
            str(args.step_cost.name), "n": args.requests, "seeds": args.seeds,
            "max_new": args.max_new,
            "beta": {n: cost.prefill_weight(n, 256) for n in slots},
            "plot": stem.name + ".png"}
    (stem.with_suffix(".json")).write_text(json.dumps(
        {**meta, "summary": summary, "rows": rows}, indent=1, default=float) + "\n")
    plot(summary, stem.with_suffix(".png"))
    text = markdown(meta, summary)
    stem.with_suffix(".md").write_text(text)
    print(text)
    if not all(math.isfinite(s["mean_vs_fcfs"]) for s in summary):
        raise SystemExit("a run produced no finite latency")


if __name__ == "__main__":
    main()
