"""Scheduler microbenchmark (pytest-benchmark): one serving-loop iteration per round.

An iteration is what a serving loop does with its scheduler every decode step:
`schedule(now)`, then `on_step` for the running batch (one token each), then
`update_predictions` for the requests still running, then `add` as many new requests as
finished, so the population stays at 256 running + W waiting. TRAIL policy, c = 0.8.

Compared: the C++ scheduler (`trail_ext`), its plain-Python reference (`trail.sched_ref`)
and `SortEverything`, a Python scheduler that sorts the whole population every iteration
(as vllm-ltr does). Request lengths are memoryless (each running request finishes with
probability 1/200 per token) and predictions come from precomputed buffers, so the driver
adds little to what is timed.

    python -m pytest bench/bench_scheduler.py --benchmark-json=out.json
    python bench/summarize_scheduler.py out.json bench/results   # table + plot
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from trail import sched_ref as ref

import trail_ext as te

RUNNING = 256
BUF = 1 << 16
MEAN_LEN = 200.0
NOISE = 0.3  # σ of the lognormal prediction error


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


class NullScheduler:
    """Does nothing: timing it measures the driver's own numpy work per iteration."""

    def __init__(self) -> None:
        self.running = np.arange(RUNNING, dtype=np.int64)
        self.next = RUNNING

    def add(self, rid: int, *args: Any) -> None:
        pass

    def schedule(self, now: float) -> Any:
        return _Batch(self.running)

    def on_step(self, now: float, rids: np.ndarray, new: np.ndarray, fin: np.ndarray) -> None:
        # Replace finished rows with fresh rids, as a real scheduler would admit new requests.
        k = int(fin.sum())
        if k:
            self.running[fin] = np.arange(self.next, self.next + k)
            self.next += k

    def update_predictions(self, rids: np.ndarray, remaining: np.ndarray) -> None:
        pass


class Loop:
    """Drives one scheduler through steady-state iterations of a TRAIL serving loop.

    Request r has a true output length T (geometric, mean 200). Every prediction, the first
    one (at arrival) and each per-step refinement, is (T − generated)·ε with ε drawn
    afresh from lognormal(σ=0.3): one predictor quality throughout, as when the probe also
    makes the first prediction at prefill.

    Scenarios for the W waiting requests at the start:
    - "steady": the backlog an overloaded SRPT system settles into: long jobs (T above the
      90th percentile, ~460 tokens); new arrivals, one per finished request, have the full
      length distribution. Events per iteration then do not depend on W.
    - "drain": a fresh backlog of W random requests. The larger W, the more short jobs it
      holds, so each iteration admits and preempts more: a stress test.
    """

    MASK = (1 << 18) - 1

    def __init__(self, make: Any, waiting: int, scenario: str = "steady", seed: int = 0,
                 warmup: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.sched = make()
        size = self.MASK + 1
        self.true = rng.geometric(1.0 / MEAN_LEN, size).astype(np.int64)
        if scenario == "steady":
            tail = np.arange(size) >= RUNNING
            tail[RUNNING + waiting:] = False
            p90 = int(MEAN_LEN * math.log(10))
            self.true[tail] = p90 + rng.geometric(1.0 / MEAN_LEN, int(tail.sum()))
        elif scenario != "drain":
            raise ValueError(f"unknown scenario {scenario!r}")
        self.initial = self.true * rng.lognormal(0.0, NOISE, size)
        self.gen = np.zeros(size, dtype=np.int64)
        self.noise = rng.lognormal(0.0, NOISE, BUF)
        self.ones = np.ones(RUNNING, dtype=np.int64)
        self.next_rid, self.now, self.k = 0, 0.0, 0
        for _ in range(RUNNING + waiting):
            self.add()
        for _ in range(1 + warmup):  # the first iteration admits the batch
            self.iterate()

    def add(self) -> None:
        slot = self.next_rid & self.MASK
        self.gen[slot] = 0
        self.sched.add(self.next_rid, self.now, 64, 1 << 20, float(self.initial[slot]))
        self.next_rid += 1

    def iterate(self) -> None:
        self.now += 0.01
        self.k = (self.k + 977) % (BUF - RUNNING)
        rids = self.sched.schedule(self.now).running
        n = len(rids)
        slot = rids & self.MASK
        gen = self.gen[slot] + 1
        self.gen[slot] = gen
        fin = gen >= self.true[slot]
        self.sched.on_step(self.now, rids, self.ones[:n], fin)
        live = ~fin
        remaining = (self.true[slot] - gen) * self.noise[self.k:self.k + n]
        self.sched.update_predictions(rids[live], remaining[live])
        for _ in range(int(fin.sum())):
            self.add()


def native(cfg_kw: dict[str, Any]) -> Any:
    return lambda: te.Scheduler(te.SchedulerConfig(policy=te.Policy.TRAIL, **cfg_kw))


def reference(cfg_kw: dict[str, Any]) -> Any:
    return lambda: ref.Scheduler(ref.SchedulerConfig(policy=ref.Policy.TRAIL, **cfg_kw))


CFG = dict(max_running=RUNNING, kv_capacity_tokens=1 << 40, block_size=16, c=0.8)
IMPLS = {
    "native": native(CFG),
    "reference": reference(CFG),
    "sort_everything": lambda: SortEverything(RUNNING, 0.8),
    "driver_only": NullScheduler,
}
# Slow implementations get fewer rounds so that a full run stays within minutes.
ROUNDS = {"native": 3000, "reference": 40, "sort_everything": 40, "driver_only": 3000}
# Iterations run before timing. A fresh backlog first goes through a transient of
# preemption churn (requests admitted on a low first prediction, re-predicted longer, and
# preempted while still early); at W = 100k it lasts ~7,500 iterations. The fast
# implementations are timed after it; the Python ones (1,000× slower) cannot be, and are
# timed from the start, which their sorting cost dominates anyway.
WARMUP = {"native": 10_000, "driver_only": 10_000, "reference": 0, "sort_everything": 0}


@pytest.mark.parametrize("waiting", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("scenario", ["steady", "drain"])
def test_iteration(benchmark: Any, scenario: str, impl: str, waiting: int) -> None:
    loop = Loop(IMPLS[impl], waiting, scenario, warmup=WARMUP[impl])
    rounds = ROUNDS[impl] if waiting <= 10_000 else max(5, ROUNDS[impl] // 4)
    benchmark.extra_info.update(impl=impl, waiting=waiting, running=RUNNING, policy="TRAIL",
                                scenario=scenario, warmup=WARMUP[impl])
    before = loop.sched.stats() if hasattr(loop.sched, "stats") else None
    benchmark.pedantic(loop.iterate, rounds=rounds, iterations=1, warmup_rounds=3)
    if before is not None:  # event rates over the timed iterations only
        st = loop.sched.stats()
        its = st["iterations"] - before["iterations"]
        benchmark.extra_info.update(
            preemptions_per_iter=(st["preemptions"] - before["preemptions"]) / its,
            finished_per_iter=(st["finished"] - before["finished"]) / its)
    assert len(loop.sched.schedule(loop.now).running) == RUNNING
