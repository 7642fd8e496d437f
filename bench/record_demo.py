"""Run the full `trail demo` and record its table in bench/results/.

Writes demo_end_to_end_<date>.{json,md} and the two plots beside them (the demo's own
output folder, with hidden states and per-request records, stays in --work).

    python bench/record_demo.py                      # ~5 min on 2 cores with a fresh cache
    TRAIL_CACHE=$(mktemp -d) python bench/record_demo.py   # include training the model
    python bench/record_demo.py --from-run runs/demo-smollm2 --name demo_smollm2
                                                     # record a `trail demo` run made before
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import shutil
import tempfile

from trail.demo.end_to_end import DemoConfig, run_demo, table

from trail.provenance import commit

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    ap.add_argument("--work", type=pathlib.Path, default=None, help="the demo's --out")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--from-run", type=pathlib.Path, default=None,
                    help="a finished `trail demo --out` folder to record instead of running")
    ap.add_argument("--name", default=None, help="file name stem before the date")
    ap.add_argument("--command", default=None, help="with --from-run: the command that made it")
    args = ap.parse_args()
    if args.from_run is not None:
        work = args.from_run
        summary = json.loads((work / "summary.json").read_text())
        cfg = DemoConfig(**summary["config"])
        if args.command:
            summary["command"] = args.command
    else:
        work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="trail-demo-"))
        cfg = DemoConfig.quick() if args.quick else DemoConfig()
        summary = run_demo(cfg, work)
    label = args.label or dt.datetime.now(dt.timezone.utc).date().isoformat()
    name = args.name or f"demo_end_to_end{'_quick' if args.quick else ''}"
    stem = f"{name}_{label}"
    args.out.mkdir(parents=True, exist_ok=True)
    summary["commit"] = commit()
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=1) + "\n")
    for png in ("latency_cdf", "predictions"):
        shutil.copy(work / f"{png}.png", args.out / f"{stem}_{png}.png")
    s, w = summary["seconds"], summary["workload"]
    r = summary["ratios_to_fcfs"]["TRAIL"]
    lines = [f"# `trail demo{' --quick' if args.quick else ''}` ({label})", "",
             f"- command: `{summary.get('command', 'bench/record_demo.py')}`",
             f"- machine: {summary['machine']}; torch {summary['torch']}; commit "
             f"{summary['commit']}",
             f"- {s['total_s']:.0f} s in all (model {s['model_s']:.0f} s, probe "
             f"{s['probe_s']:.0f} s, workload {s['workload_s']:.0f} s, serving "
             f"{sum(v for k, v in s.items() if k.startswith('serve_')):.0f} s)",
             f"- probe: layer {summary['probe']['layer']}, {summary['probe']['bins']} bins; MAE "
             f"of the remaining length {summary['probe_mae']:.1f} tokens vs prompt-only "
             f"{summary['prompt_only_mae']:.1f}",
             f"- workload: {w['requests']} requests, Poisson at {w['rate_req_s']:.1f} req/s = "
             f"load {w['load']} of the saturated FCFS throughput ({w['capacity_req_s']:.1f} "
             f"req/s); mean output {w['mean_output_tokens']:.1f} tokens, p99 "
             f"{w['p99_output_tokens']:.0f}; max_running {cfg.max_running}, c {cfg.c}, "
             f"predict_every {cfg.predict_every}", "",
             ("Latencies in seconds on the wall clock of the engine serving the model:"
              if summary["clock"]["kind"] != "virtual" else
              "Latencies in seconds on the virtual clock (the engine serves for real; time "
              "advances by the demo model's frozen step cost, python/trail/demo/step_cost.json):"
              if cfg.model == "demo" else
              "Latencies in seconds on a virtual clock (the engine serves for real; time "
              "advances by the step cost fitted to the first, wall-clock pass, R² "
              f"{summary['clock'].get('r2', float('nan')):.3f}):"),
             "",
             "```", table(summary), "```", "",
             f"TRAIL / FCFS: mean latency {r['latency_s_mean']:.3f}, mean TTFT "
             f"{r['ttft_s_mean']:.3f}, p99 latency {r['latency_s_p99']:.3f}.", "",
             f"Plots: `{stem}_latency_cdf.png`, `{stem}_predictions.png`."]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
