"""Where does ordering matter on an engine? Find the load, slot count and generation cap at
which the oracle (TRAIL+, true lengths) gains enough over FCFS, before paying hours of
engine time to confirm it.

Replays Poisson workloads through `trail.sim.simulate` with an engine's fitted step cost
(`trail.engine.StepCost`: a `trail demo` summary.json's clock or a StepCost JSON) and a
sample of the model's real answer lengths (a `trail collect` folder, as `trail demo`
writes under probe_data/, or `--lengths alpaca-shaped` for the synthetic trace), and
reports per configuration TRAIL+'s mean latency / FCFS's (mean, min and max over seeds)
with the engine time one pass would take (its tokens at the batch's decode speed), so the
cheapest configuration with headroom can be chosen:

    python bench/engine_headroom.py --lengths runs/demo/probe_data --step-cost runs/demo/summary.json
    python bench/engine_headroom.py --smoke

Prompts are alpaca-shaped (`trail.sim.traces.synthetic_trace`); answers are drawn from the
sample and capped at each generation cap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import pathlib
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from preempt_cost import DEFAULT_COST, load_cost  # noqa: E402
from results_io import results_dir, run_header  # noqa: E402


def answer_lengths(source: str) -> np.ndarray:
    """Answer lengths: one per request of a collection folder, or a synthetic trace's."""
    if source == "alpaca-shaped":
        from trail.sim.traces import synthetic_trace

        return synthetic_trace("alpaca-shaped", n=5000, seed=0).output_tokens
    from safetensors import safe_open

    totals: dict[int, int] = {}
    for path in sorted(glob.glob(str(pathlib.Path(source) / "shard_*.safetensors"))):
        with safe_open(path, "np") as f:
            for r, t in zip(f.get_tensor("request"), f.get_tensor("total")):
                totals[int(r)] = int(t)
    if not totals:
        raise FileNotFoundError(f"--lengths {source}: no shard_*.safetensors with request "
                                f"and total (a `trail collect` folder)")
    return np.array(list(totals.values()), np.int64)


def ratio(cost: Any, lengths: np.ndarray, slots: int, cap: int, load: float, n: int,
          seed: int) -> tuple[float, float, int]:
    """(TRAIL+ / FCFS mean latency, FCFS mean latency, tokens served) for one workload."""
    from trail import policies
    from trail.demo.end_to_end import DemoConfig, demo_server, policy_scheduler
    from trail.sim.cost_model import EngineStepCost
    from trail.sim.predictors import Given
    from trail.sim.simulator import capacity, simulate
    from trail.sim.traces import synthetic_trace

    rng = np.random.default_rng(seed)
    prompt = synthetic_trace("alpaca-shaped", n=n, seed=seed).prompt_tokens
    output = np.minimum(rng.choice(lengths, n), cap).astype(np.int64)
    cfg = DemoConfig(model="engine", prompts="-", max_running=slots, max_new_tokens=cap,
                     workload=n, load=load)
    kv = 2 * slots * (int(prompt.max()) + cap + 16)
    sim_cost = EngineStepCost(cost)
    cap_rate = capacity(prompt, output, policy_scheduler("FCFS", cfg, kv, policies.Server()),
                        sim_cost, n=n, seed=seed)
    arrival = np.concatenate([[0.0], np.cumsum(rng.exponential(1 / (load * cap_rate), n - 1))])
    srv = demo_server(cfg, cost, arrival, prompt, output, 0.0, 0.0)
    lat = {}
    for name, pred in (("FCFS", Given()), ("TRAIL+", Given(output.astype(float)))):
        r = simulate(arrival, prompt, output, policy_scheduler(name, cfg, kv, srv), sim_cost,
                     pred, predict_every=8, max_new_tokens=cap, seed=seed, progress=False)
        lat[name] = r.aggregates()["latency_s_mean"]
    return lat["TRAIL+"] / lat["FCFS"], lat["FCFS"], int(output.sum())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="alpaca-shaped",
                    help="a `trail collect` folder, or 'alpaca-shaped'")
    ap.add_argument("--step-cost", type=pathlib.Path, default=DEFAULT_COST)
    ap.add_argument("--slots", default="2,3,4,8")
    ap.add_argument("--caps", default="192,256,400")
    ap.add_argument("--loads", default="0.9,1.0,1.1")
    ap.add_argument("--requests", default="80,100,150")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--target", type=float, default=0.75, help="TRAIL+ / FCFS wanted")
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.slots, args.caps, args.loads, args.requests, args.seeds = "2", "128", "1.0", "30", 1
    cost, lengths = load_cost(args.step_cost), answer_lengths(args.lengths)
    t0 = time.perf_counter()
    rows = []
    grid = [(s, c, x, n) for s in map(int, args.slots.split(","))
            for c in map(int, args.caps.split(",")) for x in map(float, args.loads.split(","))
            for n in map(int, args.requests.split(","))]
    for i, (slots, cap, load, n) in enumerate(grid, 1):
        got = [ratio(cost, lengths, slots, cap, load, n, seed) for seed in range(args.seeds)]
        r = np.array([g[0] for g in got])
        tokens = float(np.mean([g[2] for g in got]))
        step = 1.0 / cost.decode_tokens_per_s(slots, max(1, cap // 2))  # s a full step
        rows.append({"slots": slots, "cap": cap, "load": load, "requests": n,
                     "ratio_mean": float(r.mean()), "ratio_min": float(r.min()),
                     "ratio_max": float(r.max()),
                     "fcfs_latency_s": float(np.mean([g[1] for g in got])),
                     "tokens": tokens, "pass_engine_s": tokens / slots * step})
        print(f"[{i}/{len(grid)}] slots {slots} cap {cap} load {load:g} n {n}: TRAIL+/FCFS "
              f"{r.mean():.3f} [{r.min():.3f}, {r.max():.3f}]", flush=True)
    ok = sorted((x for x in rows if x["ratio_max"] <= args.target + 0.05
                 and x["ratio_mean"] <= args.target), key=lambda x: x["pass_engine_s"])
    label = args.label or dt.date.today().isoformat()
    out = results_dir(args.out, args.smoke)
    stem = out / f"engine_headroom_{label}"
    meta = {**run_header("engine_headroom.py", argv), "date": dt.date.today().isoformat(),
            "wall_s": time.perf_counter() - t0, "lengths": args.lengths,
            "answers": {"n": int(lengths.size), "mean": float(lengths.mean()),
                        "median": float(np.median(lengths))},
            "step_cost": getattr(cost, "name", ""), "target": args.target,
            "cheapest_meeting_target": ok[0] if ok else None}
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# Where ordering matters on the engine ({meta['date']})", "",
             f"Machine: {meta['provenance']['machine']}; commit {meta['provenance']['commit']}; "
             f"command `{meta['command']}`; {meta['wall_s']:.0f} s. Simulator.", "",
             f"Step cost: {meta['step_cost']}. Answers from `{args.lengths}` ({lengths.size}, "
             f"mean {lengths.mean():.0f}, median {np.median(lengths):.0f} tokens). "
             f"{args.seeds} seeds per row.", "",
             "| slots | cap | load | requests | TRAIL+ / FCFS mean [min, max] | FCFS mean (s) "
             "| tokens a pass | engine time a pass |", "|---:|---:|---:|---:|---|---:|---:|---:|"]
    for x in rows:
        lines.append(f"| {x['slots']} | {x['cap']} | {x['load']:g} | {x['requests']} | "
                     f"{x['ratio_mean']:.3f} [{x['ratio_min']:.3f}, {x['ratio_max']:.3f}] | "
                     f"{x['fcfs_latency_s']:.1f} | {x['tokens']:.0f} | "
                     f"{x['pass_engine_s'] / 60:.1f} min |")
    best = ok[0] if ok else None
    lines += ["", "Cheapest configuration with TRAIL+ <= "
              f"{args.target}× FCFS on the mean over seeds (and at most {args.target + 0.05:.2f}× "
              "on the worst seed): " + (f"{best['slots']} slots, cap {best['cap']}, load "
                                        f"{best['load']:g}, {best['requests']} requests "
                                        f"({best['pass_engine_s'] / 60:.1f} min a pass)."
                                        if best else "none in this grid.")]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
