"""The simulator drives the real scheduler; predictors behave as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest

import trail_ext as te
from trail.sim.cost_model import CostModel
from trail.sim.predictors import (
    BELIEF_RATIO,
    LTR,
    EmbeddingProbe,
    Oracle,
    PromptOnly,
    belief_bins,
    gittins_ranks,
    kendall_tau,
    lognormal_belief,
)
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
    ids = np.arange(len(out))
    young = probe.refresh(ids, out.astype(float), np.zeros(len(out)), rng)
    old = probe.refresh(ids, out.astype(float), np.full(len(out), 200), rng)
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
    young_short = probe.refresh(np.arange(1000), np.full(1000, 20.0), np.ones(1000), rng)
    assert np.all(np.abs(young_short - 20) <= 2) and young_short.std() > 0.5
    old_long = probe.refresh(np.arange(10), np.full(10, 100.0), np.full(10, 50), rng)
    assert np.allclose(old_long, 105.0)
    # a cell with no data borrows the nearest age bucket of the same bin
    assert np.allclose(probe.refresh(None, np.full(5, 100.0), np.ones(5), rng), 105.0)
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


# ---------------------------------------------------------------- correlated probe error

class IndependentProbe(EmbeddingProbe):
    """The probe as it was before correlated errors and ranks: a fresh draw every refresh."""

    def refresh(self, ids, true_remaining, age, rng):  # noqa: ANN001, ANN201
        true_remaining = np.asarray(true_remaining, float)
        if self.profile is not None:
            u = rng.random(len(true_remaining))
            return np.maximum(true_remaining + self._residuals(true_remaining, age, u), 0.0)
        sigma = self._sigma0 / np.sqrt(1.0 + np.asarray(age, float) / 32.0)
        return true_remaining * np.exp(sigma * rng.standard_normal(len(true_remaining)))


def latent(probe: EmbeddingProbe, ids: np.ndarray, true: np.ndarray, age: np.ndarray,
           rng: np.random.Generator) -> np.ndarray:
    """The standard-normal error z of a lognormal-mode refresh."""
    pred = probe.refresh(ids, true, age, rng)
    return np.log(pred / true) / (probe._sigma0 / np.sqrt(1.0 + age / 32.0))


@pytest.mark.parametrize("corr_tokens, lag", [(10.0, 8), (64.0, 8), (64.0, 100), (5.0, 1)])
def test_probe_error_is_ar1_across_refreshes(corr_tokens: float, lag: int) -> None:
    """Corr(z at age a, z at age a + Δ) = e^(−Δ/L), within sampling error; z stays N(0, 1)."""
    n = 40_000
    probe = EmbeddingProbe(corr_tokens=corr_tokens)
    rng = np.random.default_rng(7)
    probe.initial(np.full(100, 300), rng)
    ids = np.arange(n)
    true = np.full(n, 300.0)
    z0 = latent(probe, ids, true, np.full(n, 3.0), rng)
    z1 = latent(probe, ids, true - lag, np.full(n, 3.0 + lag), rng)
    want = math.exp(-lag / corr_tokens)
    se = (1 - want**2) / math.sqrt(n)  # Pearson r's standard error
    assert abs(np.corrcoef(z0, z1)[0, 1] - want) < 5 * se + 1e-3
    assert abs(z1.std() - 1) < 0.02 and abs(z1.mean()) < 0.03
    # another request's refresh in between does not touch these requests' state
    probe.refresh(np.array([n + 5]), np.array([50.0]), np.array([1.0]), rng)
    z2 = latent(probe, ids, true - 2 * lag, np.full(n, 3.0 + 2 * lag), rng)
    assert abs(np.corrcoef(z0, z2)[0, 1] - want**2) < 5 * (1 - want**4) / math.sqrt(n) + 1e-3


def test_corr_tokens_zero_draws_independent_errors_as_before() -> None:
    n = 40_000
    ids, true = np.arange(n), np.full(n, 300.0)
    probe = EmbeddingProbe(corr_tokens=0)
    old = IndependentProbe(corr_tokens=0)
    rng, rng_old = np.random.default_rng(3), np.random.default_rng(3)
    probe.initial(np.full(50, 300), rng)
    old.initial(np.full(50, 300), rng_old)
    for age in (0.0, 1.0, 9.0):
        new_pred = probe.refresh(ids, true - age, np.full(n, age), rng)
        assert np.array_equal(new_pred, old.refresh(ids, true - age, np.full(n, age), rng_old))
    z0 = latent(probe, ids, true, np.full(n, 10.0), rng)
    z1 = latent(probe, ids, true - 1, np.full(n, 11.0), rng)
    assert abs(np.corrcoef(z0, z1)[0, 1]) < 4 / math.sqrt(n)
    with pytest.raises(ValueError, match="corr_tokens"):
        EmbeddingProbe(corr_tokens=-1.0)


PROFILE = {"age_edges": [1, 10], "bin_edges": [0.0, 50.0, 1000.0],
           "quantiles": [0.0, 0.25, 0.5, 0.75, 1.0],
           "cells": [{"age_bucket": 0, "true_bin": 1, "count": 30,
                      "residual_quantiles": [-40, -10, 0, 5, 60]},
                     {"age_bucket": 1, "true_bin": 1, "count": 10,
                      "residual_quantiles": [-8, -2, 0, 1, 9]}]}


def test_profile_mode_keeps_its_marginal_quantiles_when_correlated() -> None:
    """The Gaussian copula: each refresh's residuals have exactly the cell's quantiles, and
    a request's residuals are positively correlated across refreshes."""
    n = 40_000
    probe = EmbeddingProbe(profile=PROFILE, corr_tokens=32.0)
    rng = np.random.default_rng(11)
    probe.initial(np.full(10, 500), rng)
    ids, true = np.arange(n), np.full(n, 400.0)
    r = [probe.refresh(ids, true - a, np.full(n, 2.0 + a), rng) - (true - a) for a in (0, 4)]
    for res in r:  # the age-bucket-0 cell's quantiles, within sampling error
        assert np.allclose(np.quantile(res, [0.25, 0.5, 0.75]), [-10, 0, 5], atol=0.6)
        assert res.min() >= -40 and res.max() <= 60
    assert np.corrcoef(r[0], r[1])[0, 1] > 0.7  # e^(−4/32) = 0.88 in the latent


def test_correlated_probe_simulation_is_reproducible() -> None:
    tr = workload(n=150)
    cfg = te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=8,
                             kv_capacity_tokens=COST.kv_capacity_tokens(), block_size=16)
    runs = [simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, cfg, COST,
                     EmbeddingProbe(predict_every=4, corr_tokens=16.0), predict_every=4,
                     seed=seed) for seed in (5, 5, 6)]
    assert np.array_equal(runs[0].finish, runs[1].finish)
    assert not np.array_equal(runs[0].finish, runs[2].finish)


# ---------------------------------------------------------------- Gittins rank

def test_rank_mean_is_bit_identical_to_the_independent_probe() -> None:
    """rank="mean" with corr_tokens=0 is the simulator's behaviour before both options."""
    tr = workload(n=300, load=0.95, seed=4)
    cfg = te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=16,
                             kv_capacity_tokens=COST.kv_capacity_tokens(), block_size=16)
    runs = [simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, cfg, COST, p,
                     predict_every=8, seed=2)
            for p in (EmbeddingProbe(predict_every=8, corr_tokens=0, rank="mean"),
                      IndependentProbe(predict_every=8, corr_tokens=0))]
    assert np.array_equal(runs[0].finish, runs[1].finish)
    assert np.array_equal(runs[0].preemptions, runs[1].preemptions)
    sjf = te.SchedulerConfig(policy=te.Policy.SJF, max_running=16,
                             kv_capacity_tokens=COST.kv_capacity_tokens(), block_size=16)
    a, b = (simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, sjf, COST, p, seed=2)
            for p in (PromptOnly(rank="mean"), PromptOnly()))
    assert np.array_equal(a.finish, b.finish)


def continuous_gittins(median: float, sigma: float, cap: float) -> float:
    """min over a of E[min(R, a)] / P(R <= a) for R = min(lognormal, cap), by quadrature."""
    x = np.linspace(0.0, cap, 200_001)
    with np.errstate(divide="ignore"):
        z = (np.log(x) - math.log(median)) / sigma
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in z[::100]])
    cdf = np.interp(x, x[::100], cdf)
    cdf[-1] = 1.0  # the cap
    work = np.concatenate([[0.0], np.cumsum((1 - cdf[1:] + 1 - cdf[:-1]) / 2 * np.diff(x))])
    ok = cdf > 1e-12
    return float((work[ok] / cdf[ok]).min())


@pytest.mark.parametrize("median, sigma, cap", [(100.0, 0.3, 2000.0), (100.0, 1.5, 2000.0),
                                                (40.0, 1.0, 60.0)])
def test_gittins_rank_of_a_lognormal_belief(median: float, sigma: float, cap: float) -> None:
    """The discretised belief's rank matches the continuous Gittins rank within the bins'
    resolution, and is at most the belief's mean and the cap."""
    edges = belief_bins(cap)
    q = lognormal_belief(np.array([median]), sigma, edges)
    assert q.sum() == pytest.approx(1.0) and q.min() >= 0
    g = float(gittins_ranks(q, edges, np.array([cap]))[0])
    assert g == pytest.approx(continuous_gittins(median, sigma, cap), rel=0.05)
    mids = (edges[1:] + edges[:-1]) / 2
    mean = float((q[0] * np.minimum(mids, cap)).sum())
    assert g <= min(mean + 1e-9, cap)
    if sigma > 1:  # a wide belief: the chance of finishing soon ranks it well below its mean
        assert g < 0.6 * mean


def test_gittins_rank_with_a_certain_belief_is_the_prediction() -> None:
    """No error (MAE 0): the belief is a point mass and the rank its bin's centre."""
    out = load_trace("azure-conv").output_tokens[:500]
    pred, _ = PromptOnly(mae=0.0, rank="gittins").initial(out, np.random.default_rng(0))
    assert np.allclose(pred, out, rtol=BELIEF_RATIO - 1)
    probe = EmbeddingProbe(mae=0.0, rank="gittins", corr_tokens=0)
    probe.initial(out, np.random.default_rng(0), max_new_tokens=2000)
    got = probe.refresh(np.arange(3), np.array([3.0, 50.0, 700.0]), np.array([0.0, 5, 900]),
                        np.random.default_rng(0))
    assert np.allclose(got, [3.0, 50.0, 700.0], rtol=BELIEF_RATIO - 1)
    capped = probe.refresh(np.array([7]), np.array([700.0]), np.array([1500.0]),
                           np.random.default_rng(0))
    assert capped[0] == pytest.approx(500.0)  # max_new_tokens - generated


def test_gittins_rank_refreshes_and_profile_beliefs() -> None:
    rng = np.random.default_rng(0)
    out = load_trace("azure-conv").output_tokens
    mean, gitt = EmbeddingProbe(rank="mean"), EmbeddingProbe(rank="gittins")
    a_mean, _ = mean.initial(out, np.random.default_rng(1), max_new_tokens=1000)
    a_gitt, _ = gitt.initial(out, np.random.default_rng(1), max_new_tokens=1000)
    # the arrival predictions use the probe's rank too: same draws, ranked by the belief
    assert not np.array_equal(a_mean, a_gitt)
    assert np.corrcoef(np.log(a_mean), np.log(a_gitt))[0, 1] > 0.999
    ids, true = np.arange(2000), np.full(2000, 300.0)
    g = gitt.refresh(ids, true, np.full(2000, 4.0), np.random.default_rng(2))
    m = mean.refresh(ids, true, np.full(2000, 4.0), np.random.default_rng(2))
    sigma = gitt._sigma0 / math.sqrt(1 + 4 / 32)
    assert np.all(g <= m * math.exp(sigma**2 / 2) * BELIEF_RATIO)  # ≤ the belief's mean
    assert np.all(g <= 1000 - 4)
    prof = EmbeddingProbe(profile=PROFILE, rank="gittins")
    prof.initial(np.full(10, 500), rng, max_new_tokens=600)
    r = prof.refresh(np.arange(500), np.full(500, 400.0), np.full(500, 2.0), rng)
    p = EmbeddingProbe(profile=PROFILE, rank="mean")
    p.initial(np.full(10, 500), np.random.default_rng(0), max_new_tokens=600)
    assert np.all(np.isfinite(r)) and np.all((r >= 0) & (r <= 598))
    # the belief around prediction x spans x + 40 .. x - 60: its rank sits near x (mean −1.25)
    x = p.refresh(np.arange(500), np.full(500, 400.0), np.full(500, 2.0),
                  np.random.default_rng(0))
    assert abs(np.median(r) - np.median(x)) < 15
    with pytest.raises(ValueError, match="rank"):
        EmbeddingProbe(rank="median")
    with pytest.raises(ValueError, match="rank"):
        PromptOnly(rank="p50")


def test_gittins_probe_simulation_finishes_everything() -> None:
    tr = workload(n=200, load=0.9, seed=1)
    cfg = te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=16,
                             kv_capacity_tokens=COST.kv_capacity_tokens(), block_size=16)
    r = simulate(tr.arrival_s, tr.prompt_tokens, tr.output_tokens, cfg, COST,
                 EmbeddingProbe(predict_every=8, rank="gittins"), predict_every=8, seed=1)
    assert r.aggregates()["finished"] == len(tr)


@pytest.mark.parametrize("shift", [-50.0, 0.0, 1e6])
def test_the_clock_starts_at_the_first_arrival(shift: float) -> None:
    """Shifting every arrival by a constant (negative, or far from 0) changes no latency."""
    rng = np.random.default_rng(0)
    arrival = np.sort(rng.uniform(0, 2, 20))
    prompt, output = rng.integers(1, 30, 20), rng.integers(1, 40, 20)
    cfg = te.SchedulerConfig(policy=te.Policy.FCFS, max_running=4, kv_capacity_tokens=4096,
                             block_size=16)
    base = simulate(arrival, prompt, output, cfg, CostModel.preset("llama3-8b-a100-80gb"), Oracle(),
                    progress=False)
    moved = simulate(arrival + shift, prompt, output, cfg, CostModel.preset("llama3-8b-a100-80gb"),
                     Oracle(), progress=False)
    np.testing.assert_allclose(moved.finish - moved.arrival, base.finish - base.arrival,
                               rtol=1e-9, atol=1e-6)


def test_given_predictions_replay_like_the_oracle_and_check_their_length() -> None:
    from trail.sim.predictors import Given

    rng = np.random.default_rng(1)
    arrival = np.sort(rng.uniform(0, 2, 30))
    prompt, output = rng.integers(1, 30, 30), rng.integers(1, 40, 30)
    cfg = te.SchedulerConfig(policy=te.Policy.SJF, max_running=4, kv_capacity_tokens=4096,
                             block_size=16)
    cost = CostModel.preset("llama3-8b-a100-80gb")
    a = simulate(arrival, prompt, output, cfg, cost, Oracle())
    b = simulate(arrival, prompt, output, cfg, cost, Given(output.astype(float)))
    np.testing.assert_array_equal(a.finish, b.finish)
    with pytest.raises(ValueError, match="Given.predictions: 3 values for 30"):
        simulate(arrival, prompt, output, cfg, cost, Given(np.ones(3)))
