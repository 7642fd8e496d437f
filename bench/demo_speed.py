"""Time the README's two commands on a quiet machine and beside busy background processes.

For each condition the first command's `trail demo` runs from an empty model cache (so it
trains the demo model, as on a fresh clone), and optionally the second command
(`python -m pytest -q`) runs too. "Busy" starts N processes that each keep one core fully
occupied (a pure-Python loop) for the whole run: the case of a shared machine. The demo's
table (virtual clock) must be the same in every condition; the script says whether it is.

    python bench/demo_speed.py --busy 2 --tests     # ~30 min on 2 cores

Writes bench/results/demo_speed_<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

from trail.provenance import commit, describe

ROOT = pathlib.Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def busy(n: int) -> Iterator[None]:
    """n background processes spinning one core each, stopped when the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def timed(cmd: list[str], env: dict[str, str], log: pathlib.Path) -> float:
    """Run cmd from the repository root, output to log; seconds, or raise on failure."""
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; see {log}")
    return time.perf_counter() - start


def condition(name: str, n_busy: int, quick: bool, tests: bool, work: pathlib.Path
              ) -> dict[str, Any]:
    """One condition: the demo from an empty cache (and the tests), under n_busy spinners."""
    env = dict(os.environ)
    # Let trail choose its own thread settings, as a user's shell would.
    for key in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS"):
        env.pop(key, None)
    env["TRAIL_CACHE"] = tempfile.mkdtemp(prefix="trail-cache-", dir=work)
    out = work / f"demo-{name}"
    result: dict[str, Any] = {"busy_processes": n_busy}
    print(f"[{name}] trail demo{' --quick' if quick else ''} from an empty cache ...",
          flush=True)
    with busy(n_busy):
        result["demo_s"] = timed([sys.executable, "-m", "trail.cli", "demo", "--out", str(out),
                                  "--quiet", *(["--quick"] if quick else [])], env,
                                 work / f"demo-{name}.log")
        if tests:
            print(f"[{name}] python -m pytest -q ...", flush=True)
            result["tests_s"] = timed([sys.executable, "-m", "pytest", "-q", "-p",
                                       "no:cacheprovider"], env, work / f"tests-{name}.log")
    summary = json.loads((out / "summary.json").read_text())
    result["policies"] = summary["policies"]
    result["demo_seconds"] = summary["seconds"]
    print(f"[{name}] demo {result['demo_s']:.0f} s"
          + (f", tests {result['tests_s']:.0f} s" if tests else ""), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=2, help="background processes in the busy run")
    ap.add_argument("--quick", action="store_true", help="time `trail demo --quick` instead")
    ap.add_argument("--tests", action="store_true", help="also time `python -m pytest -q`")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results",
                    help="folder for demo_speed_<date>.{json,md}")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    args = ap.parse_args()
    if args.busy < 1:
        ap.error(f"--busy must be >= 1, got {args.busy}")

    work = pathlib.Path(tempfile.mkdtemp(prefix="trail-speed-"))
    runs = {"quiet": condition("quiet", 0, args.quick, args.tests, work),
            "busy": condition("busy", args.busy, args.quick, args.tests, work)}
    same = runs["quiet"]["policies"] == runs["busy"]["policies"]
    label = args.label or dt.datetime.now(dt.timezone.utc).date().isoformat()
    import torch

    record = {"machine": describe(), "date": label, "commit": commit(),
              "torch": torch.__version__, "quick": args.quick, "runs": runs,
              "tables_identical": same}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"demo_speed{'_quick' if args.quick else ''}_{label}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    q, b = runs["quiet"], runs["busy"]
    lines = [f"# `trail demo` speed, quiet and busy ({label})", "",
             f"- machine: {record['machine']}; torch {record['torch']}; commit {record['commit']}",
             f"- command: `python bench/demo_speed.py --busy {args.busy}"
             f"{' --quick' if args.quick else ''}{' --tests' if args.tests else ''}`",
             f"- busy: {args.busy} background processes each spinning one core for the whole "
             "run; the demo starts from an empty model cache in both runs",
             "", "| | quiet | busy | busy / quiet |", "|---|---:|---:|---:|",
             f"| `trail demo{' --quick' if args.quick else ''}` (s) | {q['demo_s']:.0f} | "
             f"{b['demo_s']:.0f} | {b['demo_s'] / q['demo_s']:.2f} |"]
    for part in ("model_s", "probe_s", "workload_s"):
        lines.append(f"| of which {part[:-2]} (s) | {q['demo_seconds'][part]:.0f} | "
                     f"{b['demo_seconds'][part]:.0f} | "
                     f"{b['demo_seconds'][part] / q['demo_seconds'][part]:.2f} |")
    if args.tests:
        lines.append(f"| `python -m pytest -q` (s) | {q['tests_s']:.0f} | {b['tests_s']:.0f} | "
                     f"{b['tests_s'] / q['tests_s']:.2f} |")
    lines += ["", f"Demo tables identical in both runs: **{'yes' if same else 'NO'}**.", ""]
    for name, r in runs.items():
        lines += [f"{name}:", "", "| policy | mean latency (s) | p99 (s) | mean TTFT (s) |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {p} | {row['latency_s_mean']:.6f} | {row['latency_s_p99']:.6f} | "
                  f"{row['ttft_s_mean']:.6f} |" for p, row in r["policies"].items()]
        lines.append("")
    stem.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {stem}.{{json,md}}")


if __name__ == "__main__":
    main()
