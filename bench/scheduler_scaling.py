"""How one `schedule()` call scales with the batch: the worst cases a user can make large.

Three scenarios, each ending in one schedule() call that must move `n` requests at once, so
a per-request cost that grows with n (an O(n) search per preemption) shows as a time per
request that grows with n; a flat time per request means the call is O(n log n) or better:

- rank:     n running TRAIL requests, then n better-ranked arrivals: every one preempts a
            victim (the fill walk's victim search);
- pressure: n running requests all cross a block boundary, so half must be preempted for
            memory (the worst-running search);
- kept:     n kept (KEEP-mode) preempted requests, then the running batch grows and every
            kept one is evicted (the worst-kept search).

    python bench/scheduler_scaling.py                 # ~1 min; writes bench/results/
    python bench/scheduler_scaling.py --smoke         # seconds; checks the script only
    python bench/scheduler_scaling.py --before OLD.json   # adds an earlier run's column
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import statistics
import time
from typing import Callable

import numpy as np
from trail.provenance import provenance

import trail_ext as te


ROOT = pathlib.Path(__file__).resolve().parent.parent
NAN = float("nan")


def _running(n: int, mode: str, capacity_blocks: int, max_running: int) -> te.Scheduler:
    """n requests (prompt 3 tokens, block size 4, predicted 50) admitted."""
    s = te.Scheduler(te.SchedulerConfig(
        policy=te.Policy.TRAIL, max_running=max_running, kv_capacity_tokens=4 * capacity_blocks,
        block_size=4, c=1e9, preempt_mode=getattr(te.PreemptMode, mode),
        swap_capacity_tokens=4 * 4 * n))
    for i in range(n):
        s.add(i, 0.0, 3, 100, 50.0, NAN)
    d = s.schedule(0.0)
    assert len(d.admitted) == n
    return s


def rank(n: int) -> tuple[te.Scheduler, float, int]:
    """n running fill the batch (max_running n): every better-ranked arrival preempts one."""
    s = _running(n, "SWAP", 2 * n, n)
    for i in range(n):
        s.add(n + i, 0.5, 3, 100, 1.0, NAN)
    return s, 1.0, n


def pressure(n: int) -> tuple[te.Scheduler, float, int]:
    """n running at 1 block each in a pool of n blocks; one more token makes each need 2."""
    s = _running(n, "RECOMPUTE", n, n)
    s.on_step(0.0, np.arange(n), np.ones(n, np.int64), np.zeros(n, bool))
    return s, 1.0, n // 2


def kept(n: int) -> tuple[te.Scheduler, float, int]:
    """n kept requests (preempted by n better ones in KEEP mode), then every newcomer grows
    past its block: the pool evicts every kept request."""
    s = _running(n, "KEEP", 2 * n, n)
    for i in range(n):
        s.add(n + i, 0.5, 3, 100, 1.0, NAN)
    d = s.schedule(1.0)
    assert len(d.preempted) == n and s.stats()["kept"] == n
    new = np.arange(n, 2 * n)
    s.on_step(1.0, new, np.ones(n, np.int64), np.zeros(n, bool))
    return s, 2.0, n


SCENARIOS: dict[str, Callable[[int], tuple[te.Scheduler, float, int]]] = {
    "rank": rank, "pressure": pressure, "kept": kept}


def measure(name: str, n: int, repeats: int) -> dict[str, float]:
    """Median seconds of the scenario's final schedule() call over fresh set-ups."""
    times, moved = [], 0
    for _ in range(repeats):
        s, now, expect = SCENARIOS[name](n)
        t = time.perf_counter()
        d = s.schedule(now)
        times.append(time.perf_counter() - t)
        # rank, pressure: preemptions; kept: evictions of kept KV (no preemption)
        moved = len(d.dropped) + len(d.swapped_out) if name == "kept" else len(d.preempted)
        assert moved >= expect, (name, n, moved, expect)
    med = statistics.median(times)
    return {"scenario": name, "n": n, "moved": moved, "schedule_ms": 1e3 * med,
            "us_per_moved": 1e6 * med / max(moved, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,4000,16000,64000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; writes nothing")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    ap.add_argument("--before", type=pathlib.Path, default=None,
                    help="JSON of an earlier run (e.g. another build) to show beside this one")
    args = ap.parse_args()
    sizes = [100, 400] if args.smoke else [int(x) for x in args.sizes.split(",")]
    rows = []
    for name in SCENARIOS:
        for n in sizes:
            rows.append(measure(name, n, 1 if args.smoke else args.repeats))
            r = rows[-1]
            print(f"{name:9s} n={n:6d}  moved {r['moved']:6d}  schedule {r['schedule_ms']:9.2f} ms"
                  f"  {r['us_per_moved']:7.3f} us per moved request", flush=True)
    if args.smoke:
        print("smoke run done")
        return
    day = dt.date.today().isoformat()
    meta = provenance(date=day, command="python bench/scheduler_scaling.py "
                      f"--sizes {args.sizes} --repeats {args.repeats}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"scheduler_scaling_{day}.json").write_text(
        json.dumps({**meta, "results": rows}, indent=1) + "\n")
    before = json.loads(args.before.read_text()) if args.before else None
    old = {(r["scenario"], r["n"]): r for r in before["results"]} if before else {}
    lines = [f"# One schedule() call that moves n requests ({day})", "",
             f"- machine: {meta['machine']}", f"- python {meta['python']}, commit "
             f"{meta['commit']}", f"- command: `{meta['command']}`", "",
             "Median of fresh set-ups. A flat time per moved request means the call is "
             "O(n log n) or better in the batch.", ""]
    if before:
        lines += [f"'before': {before.get('note', '')} (commit {before['commit']}, "
                  f"`{before['command']}`).", ""]
    lines += ["| scenario | n | moved | schedule() ms | µs per moved request |"
              + (" before: schedule() ms |" if before else ""),
              "|---|---:|---:|---:|---:|" + ("---:|" if before else "")]
    for r in rows:
        b = old.get((r["scenario"], r["n"]))
        lines.append(f"| {r['scenario']} | {r['n']} | {r['moved']} | {r['schedule_ms']:.2f} | "
                     f"{r['us_per_moved']:.3f} |"
                     + ((f" {b['schedule_ms']:.2f} |" if b else " – |") if before else ""))
    (args.out / f"scheduler_scaling_{day}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}/scheduler_scaling_{day}.{{json,md}}")


if __name__ == "__main__":
    main()
