"""How far the simulator is from the engine it models, on one `trail demo` run.

Reads a demo output directory (summary.json, workload.json, its predictors' report.json) and
replays its workload (arrivals, prompt lengths, the true output lengths of the first pass)
through `trail.sim.simulate` under every policy the demo served, with the engine's own
step cost (`EngineStepCost` over the StepCost of the demo's virtual clock: for a model other
than the demo model, the one fitted to its first pass), the same scheduler settings (β as the
engine learned it), the same prompt-only predictions and LTR scores (`Given`), the true
lengths for TRAIL+, and for the probe's policies the simulator's probe model with the
demo probe's measured error profile. Reports each policy's mean latency and mean TTFT in
both, and the simulator's relative error (issue 14's target: mean latency within 15%).

    python bench/sim_vs_engine.py runs/demo-smollm2 [--label NAME]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
from typing import Any

import numpy as np

from trail.provenance import commit

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = 0.15


def compare(demo: pathlib.Path, progress: bool = True) -> dict[str, Any]:
    """Engine vs simulator per policy for the demo run in `demo`."""
    from trail.demo.end_to_end import DemoConfig, demo_server, policy_scheduler
    from trail.engine import StepCost
    from trail.sim.cost_model import EngineStepCost
    from trail.sim.predictors import EmbeddingProbe, Given
    from trail.sim.simulator import simulate

    summary = json.loads((demo / "summary.json").read_text())
    w = json.loads((demo / "workload.json").read_text())
    clock = summary["clock"]
    if clock["kind"] != "virtual" or not clock.get("step_cost"):
        raise ValueError(f"{demo}: the demo ran on the wall clock; compare a virtual-clock run "
                         f"(its latencies then come from one known step cost)")
    fields = dict(summary["config"])
    cfg = DemoConfig(**fields)
    step = StepCost(**clock["step_cost"])
    model_cost = StepCost(**clock["model_step_cost"])
    predictors = pathlib.Path(summary.get("predictors") or demo / "probe_eval")
    report = json.loads((predictors / "report.json").read_text())
    profile = report["error_profile_geometric" if report["better_bins"] == "geometric"
                     else "error_profile"]
    arrival = np.asarray(w["arrival_s"], float)
    prompt = np.asarray(w["prompt_tokens"], np.int64)
    output = np.asarray(w["output_tokens"], np.int64)
    rows = {}
    server = demo_server(cfg, model_cost, arrival, prompt, output, summary["prompt_only_mae"],
                         summary["probe_mae"])  # as the demo's run resolved its settings
    for name, engine_row in summary["policies"].items():
        settings = summary["settings"][name]
        sched = policy_scheduler(name, cfg, int(w["kv_tokens"]), server)
        if settings.get("prefill_weight_used") is not None:
            sched.prefill_weight = float(settings["prefill_weight_used"])
        gittins = settings.get("rank") == "gittins"
        at_arrival = Given(np.asarray(w["prompt_gittins" if gittins else "prompt_pred"]),
                           rank="gittins" if gittins else "mean")
        predictor: Any = {
            "FCFS": Given(), "MLFQ": Given(), "SJF": at_arrival, "SJF-work": at_arrival,
            "LTR": Given(scores=np.asarray(w["ltr_score"])),
            "TRAIL+": Given(output.astype(float))}.get(name)
        probe_every = None
        if predictor is None:  # TRAIL-paper, TRAIL: the probe model with the measured errors
            predictor = EmbeddingProbe(profile=profile, predict_every=cfg.predict_every,
                                       at_arrival=at_arrival, rank="gittins" if gittins
                                       else "mean")
            probe_every = cfg.predict_every
        cost = EngineStepCost(step, probe_every=probe_every)
        r = simulate(arrival, prompt, output, sched, cost, predictor,
                     predict_every=cfg.predict_every, max_new_tokens=int(w["max_new_tokens"]),
                     seed=cfg.seed, progress=progress, desc=f"simulating {name}")
        a = r.aggregates()
        sim = {"latency_s_mean": a["latency_s_mean"], "ttft_s_mean": a["ttft_s_mean"]}
        rows[name] = {"engine": {k: engine_row[k] for k in sim}, "simulator": sim,
                      "relative_error": {k: sim[k] / engine_row[k] - 1 if engine_row[k]
                                         else float("nan") for k in sim}}
    return {"demo": str(demo), "model": summary.get("model", "demo"),
            "workload": summary["workload"], "step_cost": clock["step_cost"],
            "policies": rows,
            "within_target": {n: abs(r["relative_error"]["latency_s_mean"]) <= TARGET
                              for n, r in rows.items()}}


def markdown(result: dict[str, Any], label: str) -> str:
    lines = [f"# Simulator vs engine: {result['model']} ({label})", "",
             f"Demo run `{result['demo']}`: {result['workload']['requests']} requests at load "
             f"{result['workload']['load']}; the engine's latencies on its virtual clock, the "
             "simulator's with the same step cost. Target: mean latency within "
             f"{TARGET:.0%}.", "",
             "| policy | engine mean latency (s) | simulator | error | engine mean TTFT (s) | "
             "simulator | error |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in result["policies"].items():
        e, s, err = r["engine"], r["simulator"], r["relative_error"]
        lines.append(f"| {name} | {e['latency_s_mean']:.3f} | {s['latency_s_mean']:.3f} | "
                     f"{err['latency_s_mean']:+.1%} | {e['ttft_s_mean']:.3f} | "
                     f"{s['ttft_s_mean']:.3f} | {err['ttft_s_mean']:+.1%} |")
    met = [n for n, ok in result["within_target"].items() if ok]
    lines += ["", f"Within {TARGET:.0%}: {len(met)} of {len(result['policies'])} policies "
              f"({', '.join(met) or 'none'})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=pathlib.Path, help="a `trail demo` output directory")
    ap.add_argument("--label", default=None, help="file name suffix (default: the date)")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    result = compare(args.demo, progress=not args.quiet)
    label = args.label or dt.date.today().isoformat()
    result.update(commit=commit(), date=dt.date.today().isoformat(),
                  command=f"python bench/sim_vs_engine.py {args.demo}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"sim_vs_engine_{label}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result, label)
    (args.out / f"sim_vs_engine_{label}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
