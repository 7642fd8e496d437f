"""`trail bench`: microbenchmarks a user runs on their own machine, medians of many calls.

- probe step: `torch.ops.trail.probe_step` (fused C++ on the CPU, Triton on CUDA) against the
  plain-torch reference, per batch size, at the paper's probe shape (D = 4096, H = 512,
  K = 10) or any other; per call and per token;
- scheduler: one iteration of a serving loop around `trail_ext.Scheduler` (`ServingLoop`:
  schedule, on_step for the running batch, update_predictions, add of replacements) with
  `running` requests in the batch and W more waiting, TRAIL policy, in steady state.
  bench/bench_scheduler.py times the same `ServingLoop` (and the Python schedulers it is
  compared with), so `trail bench` and the recorded results measure one thing.
The project's full benchmarks (pytest-benchmark, recorded results) are under bench/.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

import trail_ext as te


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 3,
                   sync: Callable[[], None] = lambda: None) -> float:
    """Median wall time of `fn()` over `repeats` calls after `warmup` untimed ones."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be >= 1")
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def probe_args(b: int, d: int, h: int, k: int, slots: int, device: str,
               dtype: torch.dtype = torch.float32, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs of probe_step for `b` rows (argument order of the op); hidden states and
    probe weights in `dtype`, the Bayesian state and bins in float32."""
    from trail.probe import Bins

    g = torch.Generator().manual_seed(seed)
    bins = Bins.uniform(k, 512.0)
    args = [torch.randn(b, d, generator=g).to(dtype),
            torch.randperm(slots, generator=g)[:b].int(), torch.rand(b, generator=g) < 0.1,
            (torch.randn(h, d, generator=g) / math.sqrt(d)).to(dtype),
            torch.zeros(h, dtype=dtype),
            (torch.randn(k, h, generator=g) / math.sqrt(h)).to(dtype),
            torch.zeros(k, dtype=dtype),
            bins.transition(1), bins.centers, torch.full((b,), 400.0),
            torch.full((slots, k), 1.0 / k)]
    return [a.to(device) for a in args]


def bench_probe(batches: list[int], d: int = 4096, h: int = 512, k: int = 10,
                device: str = "cpu", repeats: int = 50) -> list[dict[str, Any]]:
    """Median µs per probe_step call (op and reference) for each batch size, and of
    probe_step_rank (the same step with the Gittins rank as a second output)."""
    from trail.kernels.reference import probe_step_reference

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    for b in batches:
        if b < 1:
            raise ValueError(f"batch size {b} must be >= 1")
        args = probe_args(b, d, h, k, max(1024, b), device)
        edges = torch.linspace(0.0, 512.0, k + 1, device=device)  # probe_args' bins
        ranked = args[:9] + [edges] + args[9:]
        op = median_seconds(lambda: torch.ops.trail.probe_step(*args), repeats, sync=sync)
        rank = median_seconds(lambda: torch.ops.trail.probe_step_rank(*ranked), repeats,
                              sync=sync)
        ref = median_seconds(lambda: probe_step_reference(*args), repeats, sync=sync)
        rows.append({"batch": b, "op_us": op * 1e6, "reference_us": ref * 1e6,
                     "op_us_per_token": op * 1e6 / b, "speedup": ref / op,
                     "op_rank_us": rank * 1e6, "rank_overhead": rank / op - 1.0})
    return rows


# ------------------------------------------------------------------ scheduler

RUNNING = 256           # requests in the batch
MEAN_LEN = 200.0        # mean true output length (geometric)
NOISE = 0.3             # σ of the lognormal prediction error
C = 0.8                 # TRAIL's limited-preemption factor
# Iterations run before timing. A fresh backlog first goes through a transient of
# preemption churn (requests admitted on a low first prediction, re-predicted longer, and
# preempted while still early); at W = 100k it lasts ~7,500 iterations.
WARMUP = 10_000
SCENARIOS = ("steady", "drain")


def timed_iterations(waiting: int) -> int:
    """Iterations timed at W waiting (the median is reported); fewer for the slow setup of
    a 100k backlog."""
    return 3_000 if waiting <= 10_000 else 750


def scheduler_config(running: int = RUNNING) -> dict[str, Any]:
    """SchedulerConfig fields of the benchmark but the policy (the C++ scheduler and its
    Python reference take the same); memory never binds."""
    return dict(max_running=running, kv_capacity_tokens=1 << 40, block_size=16, c=C)


def native_scheduler(running: int = RUNNING) -> Callable[[], Any]:
    """A factory of the C++ TRAIL scheduler as the benchmark configures it."""
    cfg = scheduler_config(running)
    return lambda: te.Scheduler(te.SchedulerConfig(policy=te.Policy.TRAIL, **cfg))


class _Batch:
    def __init__(self, running: np.ndarray) -> None:
        self.running = running


class NullScheduler:
    """Does nothing: timing it measures the driver's own numpy work per iteration."""

    def __init__(self, running: int = RUNNING) -> None:
        self.running = np.arange(running, dtype=np.int64)
        self.next = running

    def add(self, rid: int, *args: Any) -> None:
        """Ignore the request."""

    def schedule(self, now: float) -> Any:
        """The same batch every time."""
        return _Batch(self.running)

    def on_step(self, now: float, rids: np.ndarray, new: np.ndarray, fin: np.ndarray) -> None:
        """Replace finished rows with fresh rids, as a real scheduler admits new requests."""
        k = int(fin.sum())
        if k:
            self.running[fin] = np.arange(self.next, self.next + k)
            self.next += k

    def update_predictions(self, rids: np.ndarray, remaining: np.ndarray) -> None:
        """Ignore the predictions."""


class ServingLoop:
    """Drives one scheduler through the iterations of a TRAIL serving loop.

    One iteration (`iterate`) is what a serving loop does with its scheduler every decode
    step: `schedule(now)`, `on_step` for the running batch (one token each), then
    `update_predictions` for the requests still running, then `add` as many new requests as
    finished, so the population stays at `running` + W waiting.

    Request r has a true output length T (geometric, mean 200), so each running request
    finishes with probability 1/200 per token. Every prediction, the first one (at arrival)
    and each per-step refinement, is (T − generated)·ε with ε drawn afresh from
    lognormal(σ=0.3): one predictor quality throughout, as when the probe also makes the
    first prediction at prefill. Predictions come from precomputed buffers, so the driver
    adds little to what is timed (`NullScheduler` measures how little).

    Scenarios for the W waiting requests at the start:
    - "steady": the backlog an overloaded SRPT system settles into: long jobs (T above the
      90th percentile, ~460 tokens); new arrivals, one per finished request, have the full
      length distribution. Events per iteration then do not depend on W.
    - "drain": a fresh backlog of W random requests. The larger W, the more short jobs it
      holds, so each iteration admits and preempts more: a stress test.
    """

    MASK = (1 << 18) - 1
    BUF = 1 << 16

    def __init__(self, make: Callable[[], Any], waiting: int, scenario: str = "steady",
                 seed: int = 0, warmup: int = 0, running: int = RUNNING) -> None:
        if running < 1 or waiting < 0 or running + waiting > self.MASK + 1:
            raise ValueError(f"running={running} must be >= 1 and waiting={waiting} >= 0, "
                             f"together at most {self.MASK + 1:,} (the loop's request slots)")
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")
        rng = np.random.default_rng(seed)
        self.sched, self.running = make(), running
        size = self.MASK + 1
        self.true = rng.geometric(1.0 / MEAN_LEN, size).astype(np.int64)
        if scenario == "steady":
            tail = np.arange(size) >= running
            tail[running + waiting:] = False
            p90 = int(MEAN_LEN * math.log(10))
            self.true[tail] = p90 + rng.geometric(1.0 / MEAN_LEN, int(tail.sum()))
        self.initial = self.true * rng.lognormal(0.0, NOISE, size)
        self.gen = np.zeros(size, dtype=np.int64)
        self.noise = rng.lognormal(0.0, NOISE, self.BUF)
        self.ones = np.ones(running, dtype=np.int64)
        self.next_rid, self.now, self.k = 0, 0.0, 0
        for _ in range(running + waiting):
            self.add()
        for _ in range(1 + warmup):  # the first iteration admits the batch
            self.iterate()

    def add(self) -> None:
        """Queue the next request with its first prediction."""
        slot = self.next_rid & self.MASK
        self.gen[slot] = 0
        self.sched.add(self.next_rid, self.now, 64, 1 << 20, float(self.initial[slot]))
        self.next_rid += 1

    def iterate(self) -> None:
        """One serving-loop iteration (what the benchmarks time)."""
        self.now += 0.01
        self.k = (self.k + 977) % (self.BUF - self.running)
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


def bench_scheduler(running: int = RUNNING, waiting: int = 10_000,
                    iterations: int | None = None, warmup: int = WARMUP,
                    scenario: str = "steady", seed: int = 0) -> dict[str, Any]:
    """Median µs of one `ServingLoop` iteration of the C++ TRAIL scheduler, after `warmup`
    untimed ones, and of the driver alone (`NullScheduler`, included in the first)."""
    iterations = timed_iterations(waiting) if iterations is None else iterations
    loop = ServingLoop(native_scheduler(running), waiting, scenario, seed, warmup, running)
    before = loop.sched.stats()
    t = median_seconds(loop.iterate, iterations)
    after = loop.sched.stats()
    its = after["iterations"] - before["iterations"]
    driver = ServingLoop(lambda: NullScheduler(running), waiting, scenario, seed, warmup,
                         running)
    t_driver = median_seconds(driver.iterate, iterations)
    return {"running": running, "waiting": waiting, "policy": "TRAIL", "c": C,
            "scenario": scenario, "warmup": warmup, "iterations": iterations,
            "iteration_us": t * 1e6, "driver_us": t_driver * 1e6,
            "preemptions_per_iter": (after["preemptions"] - before["preemptions"]) / its,
            "finished_per_iter": (after["finished"] - before["finished"]) / its}
