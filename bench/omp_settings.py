"""Time the demo model's training steps under thread and OpenMP wait settings, quiet and busy.

Each setting runs in a fresh process (OpenMP reads its environment once, at load):
`steps` training steps of the demo model (the same recipe as `trail demo`), with torch
threads 1 or 2 and OMP_WAIT_POLICY / GOMP_SPINCOUNT as given. "Busy" starts N processes that
each spin one core for the whole measurement. Writes bench/results/omp_settings_<date>.{json,md}.

    python bench/omp_settings.py --steps 150 --busy 2       # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from demo_speed import busy  # noqa: E402
from trail.provenance import commit, describe  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SETTINGS = {  # name: (torch threads, environment)
    "1 thread": (1, {}),
    "2 threads, OpenMP default": (2, {}),
    "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, GOMP_SPINCOUNT=10000": (2, {"GOMP_SPINCOUNT": "10000"}),
}
# torch first: its OpenMP runtime then starts with exactly the environment given here
# (`import trail` would otherwise default OMP_WAIT_POLICY to PASSIVE).
CHILD = """
import sys, time
import torch
from trail.models.demo import train as t
steps, threads = int(sys.argv[1]), int(sys.argv[2])
start = time.perf_counter()
t.train_demo_model(seed=0, steps=steps, threads=threads, progress=False)
print(time.perf_counter() - start)
"""


def run(steps: int, threads: int, extra: dict[str, str]) -> float:
    """Seconds for `steps` training steps in a fresh process with this environment."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps), str(threads)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="training steps per measurement")
    ap.add_argument("--busy", type=int, default=2, help="spinning processes in the busy runs")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results",
                    help="folder for omp_settings_<date>.{json,md}")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    args = ap.parse_args()

    results: dict[str, dict[str, float]] = {}
    for name, (threads, extra) in SETTINGS.items():
        results[name] = {"quiet_s": run(args.steps, threads, extra)}
        with busy(args.busy):
            results[name]["busy_s"] = run(args.steps, threads, extra)
        print(f"{name}: quiet {results[name]['quiet_s']:.1f} s, busy "
              f"{results[name]['busy_s']:.1f} s", flush=True)
    label = args.label or dt.datetime.now(dt.timezone.utc).date().isoformat()
    record = {"machine": describe(), "date": label, "commit": commit(), "steps": args.steps,
              "busy_processes": args.busy, "results": results}
    stem = args.out / f"omp_settings_{label}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Demo-model training speed by thread setting ({label})", "",
             f"- machine: {record['machine']}; commit {record['commit']}",
             f"- {args.steps} training steps of the demo model per cell, a fresh process each; "
             f"busy: {args.busy} processes spinning one core each",
             f"- command: `python bench/omp_settings.py --steps {args.steps} --busy {args.busy}`",
             "", "| setting | quiet (s) | busy (s) | busy / quiet |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['quiet_s']:.1f} | {r['busy_s']:.1f} | "
              f"{r['busy_s'] / r['quiet_s']:.2f} |" for name, r in results.items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
