"""`trail bench`: microbenchmarks a user runs on their own machine, medians of many calls.

- probe step: `torch.ops.trail.probe_step` (fused C++ on the CPU, Triton on CUDA) against the
  plain-torch reference, per batch size, at the paper's probe shape (D = 4096, H = 512,
  K = 10) or any other; per call and per token;
- scheduler: one serving iteration of `trail_ext.Scheduler` (schedule, on_step for every
  running request, update_predictions) with `running` requests in the batch and `waiting`
  more queued, TRAIL policy.
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
    """Median µs per probe_step call (op and reference) for each batch size."""
    from trail.kernels.reference import probe_step_reference

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    for b in batches:
        if b < 1:
            raise ValueError(f"batch size {b} must be >= 1")
        args = probe_args(b, d, h, k, max(1024, b), device)
        op = median_seconds(lambda: torch.ops.trail.probe_step(*args), repeats, sync=sync)
        ref = median_seconds(lambda: probe_step_reference(*args), repeats, sync=sync)
        rows.append({"batch": b, "op_us": op * 1e6, "reference_us": ref * 1e6,
                     "op_us_per_token": op * 1e6 / b, "speedup": ref / op})
    return rows


def bench_scheduler(running: int, waiting: int, iterations: int = 200,
                    seed: int = 0) -> dict[str, Any]:
    """Median µs of one serving iteration of the C++ scheduler at this population."""
    if running < 1 or waiting < 0:
        raise ValueError(f"running={running} must be >= 1 and waiting={waiting} >= 0")
    rng = np.random.default_rng(seed)
    s = te.Scheduler(te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=running,
                                        kv_capacity_tokens=1 << 30, c=0.8))
    n = running + waiting
    lengths = rng.integers(50, 2000, n)
    for rid in range(n):
        s.add(rid, 0.0, 100, 4096, float(lengths[rid]))
    s.schedule(0.0)
    now = [0.0]

    def iteration() -> None:
        now[0] += 0.01
        d = s.schedule(now[0])
        r = d.running
        s.on_step(now[0], r, np.ones(len(r), np.int64), np.zeros(len(r), bool))
        s.update_predictions(r, rng.uniform(10, 2000, len(r)))

    t = median_seconds(iteration, iterations)
    return {"running": running, "waiting": waiting, "iteration_us": t * 1e6}
