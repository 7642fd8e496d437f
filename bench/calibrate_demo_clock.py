"""Fit the demo model's engine step cost (the virtual clock of `trail demo`) and freeze it.

Serves demo-language prompts through the engine on the wall clock with one torch thread,
logging every step's shape (rows, prefill tokens, context tokens, probe rows) and its
seconds, in three passes that cover what the demo does: FCFS with everything arriving at
t = 0 (full batches), TRAIL with a probe predicting every 8 steps under the same load, and
TRAIL at half the slots (smaller batches). Fits `trail.engine.clock.StepCost` by
non-negative least squares over all steps, then checks it: for each pass, the virtual
clock's total time against the measured one.

Writes python/trail/demo/step_cost.json (the frozen cost `trail demo` uses) and
bench/results/demo_clock_<date>.{json,md,png}. Run it on a quiet machine:

    OMP_WAIT_POLICY=PASSIVE python bench/calibrate_demo_clock.py      # ~3 min + model training
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
from dataclasses import asdict

import numpy as np
import torch

import trail
import trail_ext as te
from trail.cpu import threads
from trail.models.demo import encode_prompt, load_demo, sample_prompts
from trail.engine import Engine, EngineConfig, SamplingParams, StepCost, fit_step_cost
from trail.provenance import commit, describe


ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE_FILE = ROOT / "python" / "trail" / "demo" / "step_cost.json"


def serve(model: torch.nn.Module, tokenizer: object, n: int, seed: int, policy: te.Policy,
          max_running: int, probe: trail.Probe | None, desc: str) -> list:
    """One pass at t = 0, wall clock, steps logged; returns [(shape, seconds)]."""
    ids = [encode_prompt(tokenizer, p.text) for p in sample_prompts(n, seed=seed)]
    stop = (int(tokenizer.eos_token_id),)
    kv = 16 * (2 * max_running * (max(map(len, ids)) + 400 + 16) // 16 + 1)
    engine = Engine(model, EngineConfig(
        scheduler=te.SchedulerConfig(policy=policy, max_running=max_running, block_size=16,
                                     kv_capacity_tokens=kv, c=0.8),
        probe=probe, predict_every=8, record_steps=True))
    arrivals = [(0.0, x, SamplingParams(max_new_tokens=400, temperature=1.0,
                                        seed=seed * 7919 + i, stop_token_ids=stop), 50.0)
                for i, x in enumerate(ids)]
    with threads(1):
        engine.run(arrivals, progress=True, desc=desc)
    return engine.step_log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="requests per pass")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results",
                    help="folder for demo_clock_<date>.{json,md,png}")
    ap.add_argument("--package-file", type=pathlib.Path, default=PACKAGE_FILE,
                    help="where the frozen cost goes (the file trail demo reads)")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    args = ap.parse_args()

    model, tokenizer = load_demo(seed=0)
    hidden = int(model.config.hidden_size)
    layers = int(model.config.num_hidden_layers)
    # The probe's cost depends on its shape only: an untrained one of the demo's shape.
    probe = trail.Probe(hidden_size=hidden, bins=trail.Bins.geometric(10), layer=layers // 2)
    passes = {
        "FCFS, 8 slots": serve(model, tokenizer, args.requests, 1, te.Policy.FCFS, 8, None,
                               "calibrating: FCFS, 8 slots"),
        "TRAIL + probe, 8 slots": serve(model, tokenizer, args.requests, 2, te.Policy.TRAIL, 8,
                                        probe, "calibrating: TRAIL + probe, 8 slots"),
        "TRAIL + probe, 4 slots": serve(model, tokenizer, args.requests // 2, 3,
                                        te.Policy.TRAIL, 4, probe,
                                        "calibrating: TRAIL + probe, 4 slots"),
    }
    shapes = [s for log in passes.values() for s, _ in log]
    seconds = [t for log in passes.values() for _, t in log]
    cost, stats = fit_step_cost(shapes, seconds, name="demo model, 1 thread")
    check = {name: {"steps": len(log), "measured_s": float(sum(t for _, t in log)),
                    "virtual_s": float(sum(cost.seconds(s) for s, _ in log))}
             for name, log in passes.items()}
    for c in check.values():
        c["virtual_over_measured"] = c["virtual_s"] / c["measured_s"]

    label = args.label or dt.datetime.now(dt.timezone.utc).date().isoformat()
    provenance = {"machine": describe(), "date": label, "commit": commit(),
                  "torch": torch.__version__, "threads": 1,
                  "fitted_by": "bench/calibrate_demo_clock.py", "fit": stats}
    cost.to_json(args.package_file, provenance=provenance)
    stem = args.out / f"demo_clock_{label}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(
        {"step_cost": asdict(cost), **provenance, "passes": check}, indent=1) + "\n")
    us = {k: v * 1e6 for k, v in asdict(cost).items() if k != "name"}
    lines = [f"# The demo model's engine step cost ({label})", "",
             f"- machine: {provenance['machine']}; torch {provenance['torch']}; 1 thread; "
             f"commit {provenance['commit']}",
             f"- command: `OMP_WAIT_POLICY=PASSIVE python bench/calibrate_demo_clock.py "
             f"--requests {args.requests}`",
             f"- fit over {stats['samples']} steps: R² {stats['r2']:.3f}",
             "", "Seconds per step = Σ coefficient × feature (µs):", "",
             "| constant | per row | per prefill token | per context token | per probe call "
             "| per probe row |", "|---:|---:|---:|---:|---:|---:|",
             "| " + " | ".join(f"{us[k]:.2f}" for k in ("constant", "rows", "prefill_tokens",
                                                       "context_tokens", "probe_call",
                                                       "probe_rows")) + " |",
             "", "Virtual clock vs wall clock, per pass (all arrivals at t = 0):", "",
             "| pass | steps | measured s | virtual s | virtual / measured |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {c['steps']} | {c['measured_s']:.2f} | {c['virtual_s']:.2f} | "
              f"{c['virtual_over_measured']:.3f} |" for name, c in check.items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(passes, cost, stem.with_suffix(".png"))
    print("\n".join(lines))
    print(f"wrote {args.package_file} and {stem}.{{json,md,png}}")


def _plot(passes: dict[str, list], cost: StepCost, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    top = 0.0
    for (name, log), marker in zip(passes.items(), ("o", "s", "^")):
        measured = np.array([t for _, t in log]) * 1e3
        model = np.array([cost.seconds(s) for s, _ in log]) * 1e3
        ax.scatter(model, measured, s=6, alpha=0.4, marker=marker, label=name)
        top = max(top, float(np.percentile(measured, 99.5)), float(model.max()))
    ax.plot([0, top], [0, top], color="black", linewidth=0.8, label="measured = virtual")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="virtual clock: fitted step cost (ms)",
           ylabel="measured step time (ms)",
           title="Demo model engine steps, 1 thread: fitted cost vs measured")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
