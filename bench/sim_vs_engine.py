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

    python bench/sim_vs_engine.py runs/demo-smollm2 [--label NAME] [--draws 200]

With --draws, every policy also runs on that many workloads re-drawn from the demo's (its
requests in a random order at fresh Poisson arrivals of the same rate), which says how much
of a gap between two policies in one engine run is the luck of its draw.
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


def compare(demo: pathlib.Path, progress: bool = True, draws: int = 0,
            margins: tuple[float, ...] = ()) -> dict[str, Any]:
    """Engine vs simulator per policy for the demo run in `demo`; with `draws`, also every
    policy's mean and p99 latency / FCFS's on that many re-drawn workloads (`redraws`), and
    TRAIL's with each preemption margin of `margins` in place of its own."""
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
    columns = {k: np.asarray(w[k], float) for k in ("prompt_pred", "prompt_gittins",
                                                     "ltr_score")}

    def replay(name: str, order: np.ndarray, at: np.ndarray, seed: int, bar: bool) -> Any:
        """`name` (or "TRAIL, margin M") on the requests in `order` arriving at `at`."""
        name, _, margin = name.partition(", margin ")
        settings = summary["settings"][name]
        sched = policy_scheduler(name, cfg, int(w["kv_tokens"]), server)
        if margin:
            sched.preempt_margin = float(margin)
        if settings.get("prefill_weight_used") is not None:
            sched.prefill_weight = float(settings["prefill_weight_used"])
        gittins = settings.get("rank") == "gittins"
        at_arrival = Given(columns["prompt_gittins" if gittins else "prompt_pred"][order],
                           rank="gittins" if gittins else "mean")
        predictor: Any = {
            "FCFS": Given(), "MLFQ": Given(), "SJF": at_arrival, "SJF-work": at_arrival,
            "LTR": Given(scores=columns["ltr_score"][order]),
            "TRAIL+": Given(output[order].astype(float))}.get(name)
        probe_every = None
        if predictor is None:  # TRAIL-paper, TRAIL: the probe model with the measured errors
            predictor = EmbeddingProbe(profile=profile, predict_every=cfg.predict_every,
                                       at_arrival=at_arrival, rank="gittins" if gittins
                                       else "mean")
            probe_every = cfg.predict_every
        cost = EngineStepCost(step, probe_every=probe_every)
        return simulate(at, prompt[order], output[order], sched, cost, predictor,
                        predict_every=cfg.predict_every,
                        max_new_tokens=int(w["max_new_tokens"]), seed=seed, progress=bar,
                        desc=f"simulating {name}")

    same = np.arange(len(arrival))
    for name, engine_row in summary["policies"].items():
        a = replay(name, same, arrival, cfg.seed, progress).aggregates()
        sim = {"latency_s_mean": a["latency_s_mean"], "ttft_s_mean": a["ttft_s_mean"]}
        rows[name] = {"engine": {k: engine_row[k] for k in sim}, "simulator": sim,
                      "relative_error": {k: sim[k] / engine_row[k] - 1 if engine_row[k]
                                         else float("nan") for k in sim}}
    out = {"demo": str(demo), "model": summary.get("model", "demo"),
           "workload": summary["workload"], "step_cost": clock["step_cost"],
           "policies": rows,
           "within_target": {n: abs(r["relative_error"]["latency_s_mean"]) <= TARGET
                             for n, r in rows.items()}}
    out["calibration"] = predictor_calibration(demo, w)
    if draws:
        names = list(summary["policies"]) + [f"TRAIL, margin {m:g}" for m in margins]
        out["redraws"] = redraws(replay, names, arrival, draws, cfg.seed)
    return out


def predictor_calibration(demo: pathlib.Path, w: dict[str, Any]) -> dict[str, Any]:
    """`trail.policies.calibration` of the demo's predictions on its served requests: the
    prompt-only prediction at arrival (capped at the generation cap, as the scheduler caps
    it) against the output length, and the probe's refreshed predictions (TRAIL's run)
    against the remaining length."""
    from trail.policies import calibration

    out: dict[str, Any] = {"arrival": calibration(
        np.minimum(np.asarray(w["prompt_pred"], float), float(w["max_new_tokens"])),
        np.asarray(w["output_tokens"], float))}
    path = demo / "requests" / "TRAIL.json"
    if path.exists():
        pred, true = [], []
        for r in json.loads(path.read_text())["requests"]:
            n = len(r["output_ids"])
            for g, v in zip(r.get("prediction_tokens", []), r.get("predictions", [])):
                pred.append(v)
                true.append(n - g)
        if pred:
            out["refreshed"] = calibration(pred, true)
    return out


def redraws(replay: Any, names: list[str], arrival: np.ndarray, draws: int, seed: int
            ) -> dict[str, Any]:
    """Each policy's mean and p99 latency / FCFS's over `draws` workloads re-drawn from the
    demo's: the same requests (prompt, true length, their predictions and scores) in a random
    order at fresh Poisson arrivals of the same rate. One engine run is one such draw; this
    says how much of a gap between two policies there is luck of the draw."""
    rng = np.random.default_rng(seed + 1)
    n = len(arrival)
    rate = (n - 1) / float(arrival.max() - arrival.min())
    ratios: dict[str, dict[str, list[float]]] = {k: {"mean": [], "p99": []} for k in names}
    for _ in range(draws):
        order = rng.permutation(n)
        gaps = rng.exponential(1.0 / rate, n)
        at = np.cumsum(gaps) - gaps[0]
        agg = {k: replay(k, order, at, seed, False).aggregates() for k in names}
        for k in names:
            ratios[k]["mean"].append(agg[k]["latency_s_mean"] / agg["FCFS"]["latency_s_mean"])
            ratios[k]["p99"].append(agg[k]["latency_s_p99"] / agg["FCFS"]["latency_s_p99"])
    out: dict[str, Any] = {"draws": draws, "rate_req_s": rate, "policies": {}}
    for k in names:
        m, p = np.asarray(ratios[k]["mean"]), np.asarray(ratios[k]["p99"])
        out["policies"][k] = {
            "mean_vs_fcfs": {"mean": float(m.mean()), "q10": float(np.quantile(m, 0.1)),
                             "q90": float(np.quantile(m, 0.9))},
            "p99_vs_fcfs": {"mean": float(p.mean()), "q10": float(np.quantile(p, 0.1)),
                            "q90": float(np.quantile(p, 0.9))},
            "below_sjf_share": float(np.mean(m < np.asarray(ratios["SJF"]["mean"])))
            if "SJF" in ratios else None}
    return out


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
    cal = result.get("calibration") or {}
    if cal:
        lines += ["", "Calibration of the demo's predictions on the served requests "
                  "(`trail.policies.calibration`: the slope of the true length on the "
                  "predicted, 1 for a calibrated posterior mean):", ""]
        for kind, c in cal.items():
            lines.append(f"- {kind}: slope {c['slope']:.2f}, mean predicted "
                         f"{c['mean_predicted']:.1f} against {c['mean_true']:.1f} true "
                         f"({c['n']} predictions)")
    rd = result.get("redraws")
    if rd:
        lines += ["", f"Over {rd['draws']} workloads re-drawn from this one (the same "
                  f"requests and predictions in a random order at fresh Poisson arrivals, "
                  f"{rd['rate_req_s']:.3f} req/s), simulated: each policy / FCFS, the mean "
                  "over draws with the 10th and 90th percentiles, and how often its mean "
                  "latency is below SJF's in the same draw.", "",
                  "| policy | mean latency / FCFS | [q10, q90] | p99 / FCFS | [q10, q90] | "
                  "below SJF |", "|---|---:|---|---:|---|---:|"]
        for name, r in rd["policies"].items():
            m, p, b = r["mean_vs_fcfs"], r["p99_vs_fcfs"], r["below_sjf_share"]
            lines.append(f"| {name} | {m['mean']:.3f} | [{m['q10']:.3f}, {m['q90']:.3f}] | "
                         f"{p['mean']:.2f} | [{p['q10']:.2f}, {p['q90']:.2f}] | "
                         f"{'' if b is None else f'{b:.0%}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo", type=pathlib.Path, help="a `trail demo` output directory")
    ap.add_argument("--label", default=None, help="file name suffix (default: the date)")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--draws", type=int, default=0,
                    help="also simulate every policy on this many re-drawn workloads")
    ap.add_argument("--trail-margins", default="",
                    help="comma-separated preemption margins: TRAIL with each, re-drawn too")
    args = ap.parse_args()
    margins = tuple(float(m) for m in args.trail_margins.split(",") if m.strip())
    result = compare(args.demo, progress=not args.quiet, draws=args.draws, margins=margins)
    label = args.label or dt.date.today().isoformat()
    result.update(commit=commit(), date=dt.date.today().isoformat(),
                  command=f"python bench/sim_vs_engine.py {args.demo}"
                  + (f" --draws {args.draws}" if args.draws else "")
                  + (f" --trail-margins {args.trail_margins}" if margins else ""))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"sim_vs_engine_{label}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result, label)
    (args.out / f"sim_vs_engine_{label}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
