"""The simulator drives the real scheduler; predictors behave as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest

import trail_ext as te
from trail.sim.cost_model import CostModel
from trail.sim.predictors import LTR, EmbeddingProbe, Oracle, PromptOnly, kendall_tau
from trail.sim.simulator import capacity, simulate
from trail.sim.traces import load_trace, poisson_trace

COST = CostModel.preset("llama3-8b-a100-80gb")


def workload(n: int = 600, load: float = 0.9, seed: int = 0):  # noqa: ANN201
    """Poisson arrivals over the Azure conversation trace's lengths, at `load` of capacity."""
    base = load_trace("azure-conv")
    cfg = te.SchedulerConfig(policy=te.Policy.FCFS, max_running=16,
                             kv_capacity_tokens=COST.kv_capacity_tokens(), block_size=16)
    cap = capacity(base.prompt_tokens, base.output_tokens, cfg, COST, n=400, seed=seed)
    return poisson_trace(base, n, load * cap, seed=seed)


@pytest.mark.parametrize("policy, predictor", [
    ("FCFS", Oracle()), ("SJF", PromptOnly()), ("SRPT", EmbeddingProbe(predict_every=4)),
    ("TRAIL", EmbeddingProbe(predict_every=8)), ("TRAIL", Oracle()), ("LTR", LTR()),
    ("MLFQ", Oracle())])
def test_every_request_finishes_with_sane_times(policy: str, predictor: object) -> None:
    tr = workload()
    cfg = te.SchedulerConfig(policy=getattr(te.Policy, policy), max_running=16,
                             kv_capacity_tokens=COST.kv_capacity_tokens(), block_size=16)
    r = simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, cfg, COST, predictor,
                 predict_every=getattr(predictor, "predict_every", 1), seed=1)
    a = r.aggregates()
    assert a["finished"] == a["submitted"] == len(tr)
    assert np.all(r.arrival <= r.first_token) and np.all(r.first_token <= r.finish)
    assert a["output_tokens"] == int(tr.output_tokens.sum())
    assert a["latency_s_p99"] >= a["latency_s_median"] > 0 and a["throughput_tok_s"] > 0
    if policy in ("FCFS", "SJF"):
        assert a["preemptions"] == 0  # ample memory: non-preemptive policies never preempt
    assert r.stats["live"] == 0


def test_size_based_scheduling_cuts_mean_latency_under_load() -> None:
    """With oracle lengths, SRPT beats FCFS on a heavy-tailed workload near capacity."""
    tr = workload(n=800, load=0.95, seed=3)

    def mean_latency(policy: te.Policy) -> float:
        cfg = te.SchedulerConfig(policy=policy, max_running=16,
                                 kv_capacity_tokens=COST.kv_capacity_tokens(), block_size=16)
        r = simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, cfg, COST, Oracle())
        return r.aggregates()["latency_s_mean"]

    assert mean_latency(te.Policy.SRPT) < mean_latency(te.Policy.FCFS)


def test_memory_pressure_swaps_and_costs_time() -> None:
    tr = workload(n=200, load=0.9, seed=2)
    runs = {}
    for mode in ("KEEP", "SWAP", "RECOMPUTE"):
        cfg = te.SchedulerConfig(policy=te.Policy.SRPT, max_running=32, block_size=16,
                                 kv_capacity_tokens=16 * 600, swap_capacity_tokens=16 * 400,
                                 preempt_mode=getattr(te.PreemptMode, mode))
        r = simulate(tr.arrival_s, tr.prompt_tokens, np.minimum(tr.output_tokens, 1000), cfg,
                     COST, Oracle())
        runs[mode] = r
        assert r.aggregates()["finished"] == len(tr)
        assert np.all(r.kv_used <= 600)
    assert runs["RECOMPUTE"].stats["recomputes"] > 0
    assert runs["SWAP"].stats["swap_outs"] > 0


def test_simulation_is_deterministic_for_a_seed() -> None:
    tr = workload(n=150)
    cfg = te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=8,
                             kv_capacity_tokens=COST.kv_capacity_tokens(), block_size=16)
    a = simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, cfg, COST,
                 EmbeddingProbe(predict_every=4), predict_every=4, seed=5)
    b = simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, cfg, COST,
                 EmbeddingProbe(predict_every=4), predict_every=4, seed=5)
    assert np.array_equal(a.finish, b.finish)


def test_bad_input_raises() -> None:
    cfg = te.SchedulerConfig()
    with pytest.raises(ValueError, match="one length"):
        simulate(np.zeros(2), np.ones(3, int), np.ones(2, int), cfg, COST, Oracle())
    with pytest.raises(ValueError, match=">= 1"):
        simulate(np.zeros(2), np.ones(2, int), np.array([1, 0]), cfg, COST, Oracle())
    with pytest.raises(ValueError, match="max_new_tokens"):
        simulate(np.zeros(2), np.ones(2, int), np.array([5, 9]), cfg, COST, Oracle(),
                 max_new_tokens=4)


def test_predictors_are_calibrated() -> None:
    rng = np.random.default_rng(0)
    out = load_trace("azure-conv").output_tokens
    pred, _ = PromptOnly(mae=46.1).initial(out, rng)
    assert abs(np.abs(pred - out).mean() - 46.1) < 3.0
    probe = EmbeddingProbe(mae=33.9)
    probe.initial(out, rng)
    young = probe.refresh(out.astype(float), np.zeros(len(out)), rng)
    old = probe.refresh(out.astype(float), np.full(len(out), 200), rng)
    assert abs(np.abs(young - out).mean() - 33.9) < 3.0
    assert np.abs(old - out).mean() < 0.7 * np.abs(young - out).mean()  # error shrinks with age
    _, scores = LTR(tau=0.6).initial(out, rng)
    assert abs(kendall_tau(np.log(out.astype(float)), scores, rng) - 0.6) < 0.03


def test_probe_predictor_samples_an_error_profile() -> None:
    profile = {"age_edges": [1, 10], "bin_edges": [0.0, 50.0, 1000.0],
               "quantiles": [0.0, 0.5, 1.0],
               "cells": [{"age_bucket": 0, "true_bin": 0, "residual_quantiles": [-2, 0, 2]},
                         {"age_bucket": 1, "true_bin": 1, "residual_quantiles": [5, 5, 5]}]}
    probe = EmbeddingProbe(profile=profile)
    rng = np.random.default_rng(0)
    probe.initial(np.array([10]), rng)
    young_short = probe.refresh(np.full(1000, 20.0), np.ones(1000), rng)
    assert np.all(np.abs(young_short - 20) <= 2) and young_short.std() > 0.5
    old_long = probe.refresh(np.full(10, 100.0), np.full(10, 50), rng)
    assert np.allclose(old_long, 105.0)
    # a cell with no data borrows the nearest age bucket of the same bin
    assert np.allclose(probe.refresh(np.full(5, 100.0), np.ones(5), rng), 105.0)
    assert math.isfinite(float(young_short.mean()))


@pytest.mark.parametrize("policy, predictor, memory, extra", [
    ("FCFS", Oracle(), 1.0, {}), ("SJF", PromptOnly(), 1.0, {}),
    ("SRPT", EmbeddingProbe(predict_every=4), 1.0, {}),
    ("TRAIL", EmbeddingProbe(predict_every=8), 1.0, {}),
    ("TRAIL", Oracle(), 0.02, {}),                       # tight KV: memory preemptions
    ("TRAIL", Oracle(), 0.02, {"preempt_mode": te.PreemptMode.SWAP,
                               "swap_capacity_tokens": 20_000}),
    ("TRAIL", Oracle(), 1.0, {"starvation_steps": 50, "starvation_period": 10**6}),
    ("LTR", LTR(), 1.0, {}), ("MLFQ", Oracle(), 1.0, {}),
    ("SJF", PromptOnly(), 0.02, {"preempt_mode": te.PreemptMode.RECOMPUTE})])
def test_fast_forward_changes_nothing_but_speed(policy: str, predictor: object, memory: float,
                                                extra: dict) -> None:
    """Runs of quiet iterations taken as one step give bit-identical per-request results."""
    tr = workload(n=300, load=0.95, seed=4)
    cfg = te.SchedulerConfig(policy=getattr(te.Policy, policy), max_running=16,
                             kv_capacity_tokens=int(COST.kv_capacity_tokens() * memory),
                             block_size=16, **extra)
    runs = [simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, cfg, COST, predictor,
                     predict_every=getattr(predictor, "predict_every", 1), seed=2,
                     fast_forward=ff) for ff in (False, True)]
    slow, fast = runs
    assert np.array_equal(slow.finish, fast.finish)
    assert np.array_equal(slow.first_token, fast.first_token)
    assert np.array_equal(slow.preemptions, fast.preemptions)
    assert slow.iterations == fast.iterations
    assert {k: v for k, v in slow.stats.items() if k != "iterations"} == \
        {k: v for k, v in fast.stats.items() if k != "iterations"}
    if memory < 1.0 and policy == "TRAIL":
        assert slow.stats["preemptions"] > 0  # the tight-memory cases do exercise pressure


def test_probe_predictor_ranks_waiting_requests_by_the_prompt() -> None:
    out = load_trace("azure-conv").output_tokens[:2000]
    rng = np.random.default_rng(1)
    at_arrival, _ = EmbeddingProbe().initial(out, rng)
    assert at_arrival is not None and len(at_arrival) == len(out)
    assert abs(np.abs(at_arrival - out).mean() - 46.1) < 4.0  # the prompt-only MAE
    nothing, _ = EmbeddingProbe(at_arrival=None).initial(out, rng)
    assert nothing is None  # ranked at the scheduler's default until prefilled
