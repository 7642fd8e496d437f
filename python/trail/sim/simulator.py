"""Iteration-level simulator that drives the real scheduler (`trail_ext.Scheduler`).

Each iteration: the scheduler decides the batch at the simulated time; the cost model prices
it (prefill tokens of admitted and recomputed requests, one decode token for every other
running request over its context, KV swapped out and in over the host link); time advances
by that; every running request gets one token; requests finish at their true length; the
predictor's refreshed predictions (keyed by request id, so a request's simulated error can
persist across its refreshes) go back to the scheduler. So the verdicts are about the
scheduler code the engine runs, not about a re-implementation.

Records per request: arrival, first-token and finish times, preemptions; aggregates as the
engine reports them (trail.engine.report), plus KV use over time.
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import trail_ext as te
from trail.metrics import aggregate
from trail.progress import progress_bar
from trail.sim.cost_model import CostModel


@dataclass
class SimResult:
    """Per-request times (seconds) and aggregates of one simulated run."""

    arrival: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray
    kv_time: np.ndarray          # simulated times at which KV use was sampled
    kv_used: np.ndarray          # reserved KV blocks at those times
    iterations: int
    wall_s: float
    stats: dict[str, int] = field(default_factory=dict)

    def aggregates(self) -> dict[str, float]:
        """`trail.metrics.aggregate` of the simulated requests, with the iteration count."""
        return aggregate(self.arrival, self.first_token, self.finish, self.output_tokens,
                         self.preemptions) | {"iterations": self.iterations}


def simulate(arrival: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
             scheduler: te.SchedulerConfig, cost: CostModel, predictor: Any,
             predict_every: int = 1, max_new_tokens: int | None = None, seed: int = 0,
             progress: bool = False, fast_forward: bool = True,
             desc: str = "simulating") -> SimResult:
    """Replay requests (arrival seconds, prompt and true output lengths) through the scheduler.

    `max_new_tokens` is every request's generation cap (default: the trace's longest output),
    the bound a real server sets without knowing true lengths. `fast_forward` runs stretches
    of iterations in which the scheduler's decision provably cannot change as one step (see
    `_quiet_steps`); the results are the same as without it, only faster. `desc` labels the
    progress bar.
    """
    if not isinstance(scheduler, te.SchedulerConfig):
        raise TypeError(f"scheduler must be a trail_ext.SchedulerConfig, got {scheduler!r}")
    arrival = _column(arrival, "arrival", "iuf")
    if not np.all(np.isfinite(arrival)):
        i = int(np.flatnonzero(~np.isfinite(arrival))[0])
        raise ValueError(f"arrival[{i}]={arrival[i]} must be finite")
    arrival = arrival.astype(float)
    prompt = _token_counts(prompt_tokens, "prompt_tokens")
    output = _token_counts(output_tokens, "output_tokens")
    n = len(arrival)
    if not (len(prompt) == len(output) == n) or n == 0:
        raise ValueError(f"arrival, prompt_tokens and output_tokens must be non-empty and of one "
                         f"length, got {len(arrival)}, {len(prompt)}, {len(output)}")
    predict_every = _whole(predict_every, "predict_every")
    if predict_every < 1:
        raise ValueError(f"predict_every={predict_every!r} must be >= 1")
    order = np.argsort(arrival, kind="stable")
    cap = int(output.max()) if max_new_tokens is None else _whole(max_new_tokens,
                                                                   "max_new_tokens")
    if not 1 <= cap <= MAX_TOKENS:
        raise ValueError(f"max_new_tokens={cap} must be in [1, 2**40]")
    if cap < output.max():
        raise ValueError(f"max_new_tokens={cap} is below the longest output ({output.max()})")
    rng = np.random.default_rng(seed)
    initial, scores = predictor.initial(output, rng, max_new_tokens=cap)
    refreshes = bool(getattr(predictor, "refreshes", False))

    s = te.Scheduler(scheduler)
    # A decision with no events is a fixed point until an arrival, a finish, a refresh or
    # memory growth, for policies whose ranks only improve while running (not with
    # starvation counters, not MLFQ's levels).
    can_skip = (fast_forward and scheduler.policy != te.Policy.MLFQ
                and (scheduler.starvation_steps == 0 or scheduler.policy == te.Policy.FCFS))
    capacity_blocks = s.stats()["kv_capacity_blocks"]
    generated = np.zeros(n, np.int64)
    since = np.zeros(n, np.int64)
    first = np.full(n, math.nan)
    finish = np.full(n, math.nan)
    preempt = np.zeros(n, np.int64)
    kv_t, kv_u = [], []
    # The clock starts at the first arrival (which may be negative or far from 0), so no
    # request is served before it arrives and none waits for a clock that started at 0.
    now, nxt, done, iterations, next_kv_sample = float(arrival.min()), 0, 0, 0, 0
    swap = cost.swap_time(1.0)
    bar = progress_bar(n, desc, "req", progress)
    wall = time.perf_counter()
    while done < n:
        if len(s) == 0:  # idle: jump to the next arrival
            now = max(now, float(arrival[order[nxt]]))
        while nxt < n and arrival[order[nxt]] <= now:
            i = int(order[nxt])
            s.add(i, float(arrival[i]), int(prompt[i]), cap,
                  math.nan if initial is None else float(initial[i]),
                  math.nan if scores is None else float(scores[i]))
            nxt += 1
        d = s.schedule(now)
        if iterations >= next_kv_sample:  # KV use as decided, every 64 iterations or so
            next_kv_sample = iterations + 64
            kv_t.append(now)
            kv_u.append(s.kv_reserved_blocks())
        running = d.running
        if len(running) == 0:  # nothing can run before the next arrival
            now = float(arrival[order[nxt]])
            continue
        if can_skip and not _has_events(d):
            steps = _quiet_steps(running, prompt, generated, output, since, predict_every,
                                 refreshes, s, capacity_blocks, scheduler.block_size, now,
                                 float(arrival[order[nxt]]) if nxt < n else math.inf, cost)
            if steps is not None:
                times, m = steps
                now = float(times[-1])
                iterations += m
                since[running] += m
                fin = _advance(s, now, running, m, generated, output, finish, bar)
                done += int(fin.sum())
                if refreshes:
                    _refresh(s, predictor, running[~fin], since, predict_every, output,
                             generated, rng, np.empty(0, np.int64))
                continue
        admitted, recomputed = d.admitted, d.recomputed
        pre_ids = np.concatenate([admitted, recomputed])  # rows prefilled this iteration
        pre = np.concatenate([prompt[admitted], prompt[recomputed] + generated[recomputed]])
        decode_rows = running[~np.isin(running, pre_ids)] if len(pre_ids) else running
        moved = np.concatenate([d.swapped_out, d.swapped_in])
        dt = cost.iteration_time(float(pre.sum()), len(decode_rows),
                                 float((prompt[decode_rows] + generated[decode_rows]).sum()),
                                 float((pre.astype(float) ** 2).sum()))
        if len(moved):
            dt += swap * float((prompt[moved] + generated[moved]).sum())
        now += dt
        iterations += 1
        if len(d.preempted):
            np.add.at(preempt, d.preempted, 1)
        fresh = np.isnan(first[running])
        first[running[fresh]] = now
        fin = _advance(s, now, running, 1, generated, output, finish, bar)
        done += int(fin.sum())
        if refreshes:
            live = running[~fin]
            since[live] += 1
            _refresh(s, predictor, live, since, predict_every, output, generated, rng, pre_ids)
    bar.close()
    return SimResult(arrival, first, finish, output, preempt, np.asarray(kv_t),
                     np.asarray(kv_u), iterations, time.perf_counter() - wall, s.stats())


# Token counts the scheduler accepts (docs/scheduler.md, "Limits").
MAX_TOKENS = 2**40


def _column(values: Any, name: str, kinds: str) -> np.ndarray:
    """A one-dimensional numeric array whose dtype kind is in `kinds` (TypeError otherwise)."""
    try:
        arr = np.asarray(values)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{name} must be a one-dimensional array of numbers: {exc}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in kinds:  # bools, strings, objects (huge ints)
        raise TypeError(f"{name} must hold {'real numbers' if 'f' in kinds else 'integers'}, "
                        f"got dtype {arr.dtype}")
    return arr


def _token_counts(values: Any, name: str) -> np.ndarray:
    """Token counts as int64: integers (or whole floats), each in [1, 2**40]."""
    arr = _column(values, name, "iuf")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite")
        if np.any(arr != np.round(arr)):  # 2.7 tokens would silently become 2
            raise TypeError(f"{name} must hold whole numbers")
    bad = (arr < 1) | (arr > MAX_TOKENS)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}]={arr[i]}: token counts must be >= 1 and <= 2**40")
    return arr.astype(np.int64)


def _whole(value: Any, name: str) -> int:
    """An integer scalar (not a bool, not a float); TypeError naming `name` otherwise."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _advance(s: te.Scheduler, now: float, running: np.ndarray, tokens: int,
             generated: np.ndarray, output: np.ndarray, finish: np.ndarray, bar: Any
             ) -> np.ndarray:
    """Give every running request `tokens` tokens; finish those at their true length."""
    generated[running] += tokens
    fin = generated[running] >= output[running]
    s.on_step(now, running, np.full(len(running), tokens, np.int64), fin)
    if fin.any():
        finish[running[fin]] = now
        bar.update(int(fin.sum()))
    return fin


def _has_events(d: Any) -> bool:
    """Whether a decision changed anything beyond continuing the same batch."""
    return bool(len(d.admitted) or len(d.resumed) or len(d.preempted) or len(d.swapped_out)
                or len(d.dropped) or len(d.swapped_in) or len(d.recomputed))


def _refresh(s: te.Scheduler, predictor: Any, live: np.ndarray, since: np.ndarray,
             predict_every: int, output: np.ndarray, generated: np.ndarray,
             rng: np.random.Generator, prefilled: np.ndarray) -> None:
    """New predictions for live requests that are due (every `predict_every`, or prefilled)."""
    due = live[(since[live] >= predict_every) | np.isin(live, prefilled)]
    if len(due):
        since[due] = 0
        pred = predictor.refresh(due, output[due] - generated[due], generated[due], rng)
        s.update_predictions(due, np.maximum(pred, 0.0))


def _quiet_steps(running: np.ndarray, prompt: np.ndarray, generated: np.ndarray,
                 output: np.ndarray, since: np.ndarray, predict_every: int, refreshes: bool,
                 s: te.Scheduler, capacity_blocks: int, block_size: int, now: float,
                 next_arrival: float, cost: CostModel) -> tuple[np.ndarray, int] | None:
    """End times of the steps the current batch runs unchanged, and their count (>= 2).

    After a decision without events, with no arrival, no finish and no refresh between, the
    next decision is the same: waiting and preempted requests keep their ranks, running ones
    only get shorter (SRPT/TRAIL) or lose preemptibility (TRAIL), and free memory only
    shrinks, so nothing that could not run can run now. Such a stretch ends at the first
    step that finishes a request or makes a refresh due (inclusive), before the first step
    that would start at or after the next arrival, and before the batch outgrows its KV.
    """
    left = output[running] - generated[running]
    m = int(left.min())
    if refreshes:
        m = min(m, int((predict_every - since[running]).min()))
    if m < 2:
        return None
    tokens = prompt[running] + generated[running]
    kept = s.kv_reserved_blocks() - int(((tokens + block_size) // block_size).sum())

    def fits(k: int) -> bool:  # the reservation the scheduler checks before step k (1-based)
        return kept + int(((tokens + k + block_size - 1) // block_size).sum()) <= capacity_blocks

    if not fits(m):
        lo, hi = 1, m  # fits(1) holds: it is the reservation just decided
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        m = lo
    if m < 2:
        return None
    k = np.arange(m, dtype=float)
    dt = cost.iteration_times(np.zeros(m), np.full(m, float(len(running))),
                              float(tokens.sum()) + k * len(running))
    ends = np.cumsum(np.concatenate([[now], dt]))  # sequential sums, as the step loop adds
    starts_ok = int(np.searchsorted(ends[:-1], next_arrival, side="left"))
    m = min(m, starts_ok)
    if m < 2:
        return None
    return ends[1:m + 1], m


def capacity(prompt_tokens: np.ndarray, output_tokens: np.ndarray,
             scheduler: te.SchedulerConfig, cost: CostModel, n: int = 2000,
             seed: int = 0) -> float:
    """Requests per second the system sustains when saturated (what load is relative to).

    A batching server's capacity is many times one request's isolated service rate, so load
    ρ means arrivals at ρ × this rate: `n` requests resampled from the lengths, all arriving
    at t = 0, served FCFS; capacity = n / makespan.
    """
    from trail.sim.predictors import Oracle

    n = _whole(n, "n")
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(output_tokens), n)
    fcfs = te.SchedulerConfig(policy=te.Policy.FCFS, max_running=scheduler.max_running,
                              kv_capacity_tokens=scheduler.kv_capacity_tokens,
                              block_size=scheduler.block_size)
    result = simulate(np.zeros(n), np.asarray(prompt_tokens)[pick],
                      np.asarray(output_tokens)[pick], fcfs, cost, Oracle(),
                      max_new_tokens=int(np.max(output_tokens)), seed=seed)
    return n / float(np.nanmax(result.finish))
