"""Scheduler microbenchmark (pytest-benchmark): one serving-loop iteration per round.

The workload and its driver are `trail.microbench.ServingLoop` (also what `trail bench`
times): per iteration `schedule(now)`, `on_step` for the running batch (one token each),
`update_predictions` for the requests still running, then `add` as many new requests as
finished, so the population stays at 256 running + W waiting. TRAIL policy, c = 0.8.

Compared: the C++ scheduler (`trail_ext`), its plain-Python reference (`trail.sched_ref`)
and `SortEverything`, a Python scheduler that sorts the whole population every iteration
(as vllm-ltr does); `driver_only` times the driver with a no-op scheduler.

    python -m pytest bench/bench_scheduler.py --benchmark-json=out.json
    python bench/summarize_scheduler.py out.json bench/results   # table + plot
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from trail import sched_ref as ref
from trail.microbench import (
    C,
    RUNNING,
    WARMUP,
    NullScheduler,
    ServingLoop,
    native_scheduler,
    scheduler_config,
    timed_iterations,
)


class SortEverything:
    """Baseline: rank every live request by predicted remaining length each iteration."""

    def __init__(self, max_running: int, c: float) -> None:
        self.max_running, self.c = max_running, c
        self.req: dict[int, list[float]] = {}  # rid -> [remaining, generated, predicted_len]
        self.running: list[int] = []

    def add(self, rid: int, arrival: float, prompt_len: int, max_new_tokens: int,
            predicted_len: float = math.nan, score: float = math.nan) -> None:
        self.req[rid] = [predicted_len, 0.0, predicted_len]

    def schedule(self, now: float) -> Any:
        def pinned(rid: int) -> bool:
            r = self.req[rid]
            return r[1] > self.c * r[2]

        keep = [rid for rid in self.running if pinned(rid)]
        pinned_set = set(keep)
        order = sorted((r[0], rid) for rid, r in self.req.items() if rid not in pinned_set)
        self.running = keep + [rid for _, rid in order[: self.max_running - len(keep)]]
        return _Batch(np.asarray(self.running, dtype=np.int64))

    def on_step(self, now: float, rids: np.ndarray, new: np.ndarray, fin: np.ndarray) -> None:
        for rid, n, f in zip(rids.tolist(), new.tolist(), fin.tolist()):
            r = self.req[rid]
            r[1] += n
            r[0] = max(r[0] - n, 0.0)
            if f:
                del self.req[rid]
        self.running = [rid for rid in self.running if rid in self.req]

    def update_predictions(self, rids: np.ndarray, remaining: np.ndarray) -> None:
        for rid, v in zip(rids.tolist(), remaining.tolist()):
            self.req[rid][0] = v


class _Batch:
    def __init__(self, running: np.ndarray) -> None:
        self.running = running


def reference() -> Any:
    return ref.Scheduler(ref.SchedulerConfig(policy=ref.Policy.TRAIL, **scheduler_config()))


IMPLS = {
    "native": native_scheduler(),
    "reference": reference,
    "sort_everything": lambda: SortEverything(RUNNING, C),
    "driver_only": NullScheduler,
}
# The Python schedulers get fewer rounds so that a full run stays within minutes.
SLOW_ROUNDS = {"reference": 40, "sort_everything": 40}
# Iterations run before timing: the fast implementations are timed after the transient of
# a fresh backlog (see trail.microbench.WARMUP); the Python ones (1,000× slower) cannot be,
# and are timed from the start, which their sorting cost dominates anyway.
WARMUPS = {"native": WARMUP, "driver_only": WARMUP, "reference": 0, "sort_everything": 0}


@pytest.mark.parametrize("waiting", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("scenario", ["steady", "drain"])
def test_iteration(benchmark: Any, scenario: str, impl: str, waiting: int) -> None:
    loop = ServingLoop(IMPLS[impl], waiting, scenario, warmup=WARMUPS[impl])
    rounds = (timed_iterations(waiting) if impl not in SLOW_ROUNDS
              else SLOW_ROUNDS[impl] if waiting <= 10_000 else 10)
    benchmark.extra_info.update(impl=impl, waiting=waiting, running=RUNNING, policy="TRAIL",
                                scenario=scenario, warmup=WARMUPS[impl])
    before = loop.sched.stats() if hasattr(loop.sched, "stats") else None
    benchmark.pedantic(loop.iterate, rounds=rounds, iterations=1, warmup_rounds=3)
    if before is not None:  # event rates over the timed iterations only
        st = loop.sched.stats()
        its = st["iterations"] - before["iterations"]
        benchmark.extra_info.update(
            preemptions_per_iter=(st["preemptions"] - before["preemptions"]) / its,
            finished_per_iter=(st["finished"] - before["finished"]) / its)
    assert len(loop.sched.schedule(loop.now).running) == RUNNING
