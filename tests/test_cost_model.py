"""The roofline cost model: regimes, monotonicity, presets, JSON."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trail.sim.cost_model import PRESETS, CostModel


@pytest.fixture(params=PRESETS)
def model(request: pytest.FixtureRequest) -> CostModel:
    return CostModel.preset(request.param)


def test_decode_at_batch_one_is_bound_by_reading_the_weights(model: CostModel) -> None:
    t = model.iteration_time(0, 1, 100)
    weights = model.params * model.dtype_bytes / (model.mem_bandwidth * model.bandwidth_efficiency)
    assert weights < t < weights * 1.05 + model.overhead_s
    # Llama-3-8B in bf16: ~16 GB of weights per step -> some milliseconds on these GPUs
    assert 0.004 < t < 0.02


def test_long_prefill_is_compute_bound(model: CostModel) -> None:
    t = model.iteration_time(4096, 0, 0)
    compute = 2 * model.params * 4096 / (model.peak_flops * model.compute_efficiency)
    assert t >= compute + model.overhead_s and t < 2 * compute + model.overhead_s


def test_decode_batching_is_nearly_free_until_compute_bound(model: CostModel) -> None:
    one, many = model.iteration_time(0, 1, 0), model.iteration_time(0, 32, 0)
    assert many < 1.2 * one  # memory-bound: 32 rows cost about as much as one
    assert model.iteration_time(0, 4096, 0) > 2 * one  # eventually compute-bound


@settings(max_examples=60, deadline=None)
@given(p=st.integers(0, 8000), b=st.integers(0, 512), ctx=st.integers(0, 10**6),
       dp=st.integers(1, 500), db=st.integers(1, 64), dc=st.integers(1, 10**5))
def test_monotone_in_every_argument(p: int, b: int, ctx: int, dp: int, db: int, dc: int) -> None:
    m = CostModel.preset("llama3-8b-a100-80gb")
    t = m.iteration_time(p, b, ctx)
    assert m.iteration_time(p + dp, b, ctx) >= t
    assert m.iteration_time(p, b + db, ctx) >= t
    assert m.iteration_time(p, b, ctx + dc) >= t
    assert m.iteration_time(0, 0, 0) == 0.0


def test_vectorised_matches_scalar(model: CostModel) -> None:
    rng = np.random.default_rng(0)
    p, b, c = rng.integers(0, 3000, 50), rng.integers(0, 64, 50), rng.integers(0, 10**5, 50)
    vec = model.iteration_times(p, b, c)
    assert np.allclose(vec, [model.iteration_time(*x) for x in zip(p, b, c)])


def test_swap_recompute_and_service_time(model: CostModel) -> None:
    # 1,000 tokens of Llama-3-8B KV: 128 KiB each -> ~131 MB over the host link
    assert model.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert model.swap_time(1000) == pytest.approx(1000 * 131072 / model.host_bandwidth)
    assert model.prefill_time(0) == 0.0 and model.prefill_time(500) > model.prefill_time(100)
    s = model.service_time(np.array([100, 100, 2000]), np.array([1, 200, 200]))
    assert s[0] == pytest.approx(model.prefill_time(100))
    assert s[1] > s[0] and s[2] > s[1]
    assert s[1] == pytest.approx(model.prefill_time(100) + 199 * model.iteration_time(0, 1, 0),
                                 rel=0.05)


def test_json_round_trip_and_errors(tmp_path: pathlib.Path) -> None:
    m = CostModel.preset("llama3-8b-h100")
    m.to_json(tmp_path / "p.json")
    assert CostModel.from_json(tmp_path / "p.json") == m
    with pytest.raises(ValueError, match="preset"):
        CostModel.preset("llama3-70b-tpu")
    with pytest.raises(ValueError, match="compute_efficiency"):
        CostModel(**{**m.__dict__, "compute_efficiency": 1.5})
    with pytest.raises(ValueError, match="peak_flops"):
        CostModel(**{**m.__dict__, "peak_flops": 0.0})
    with pytest.raises(ValueError, match="expected keys"):
        CostModel.from_dict({"name": "x"})
    with pytest.raises(ValueError, match=">= 0"):
        m.iteration_time(-1, 0, 0)


def test_fit_calibration_recovers_known_constants() -> None:
    from dataclasses import replace

    from trail.sim.cost_model import fit_calibration

    base = CostModel.preset("llama3-8b-h100")
    truth = replace(base, overhead_s=0.004, compute_efficiency=0.55, bandwidth_efficiency=0.7)
    rng = np.random.default_rng(0)
    batch = np.array([1, 8, 32, 64, 128, 1, 8, 32, 0, 0, 0, 0], float)
    ctx = batch * np.array([512, 512, 1024, 2048, 2048, 4096, 4096, 256, 0, 0, 0, 0])
    pre = np.array([0, 0, 0, 0, 0, 0, 0, 0, 128, 1024, 4096, 8192], float)
    t = truth.iteration_times(pre, batch, ctx, pre ** 2) * np.exp(rng.normal(0, 0.01, 12))
    fit = fit_calibration(base, pre, batch, ctx, pre ** 2, t, name="fitted")
    assert fit.name == "fitted"
    assert abs(fit.compute_efficiency - 0.55) / 0.55 < 0.08
    assert abs(fit.bandwidth_efficiency - 0.7) / 0.7 < 0.08
    assert abs(fit.overhead_s - 0.004) < 0.0015
    pred = fit.iteration_times(pre, batch, ctx, pre ** 2)
    assert np.max(np.abs(np.log(pred / t))) < 0.05
    with pytest.raises(ValueError, match="seconds"):
        fit_calibration(base, pre, batch, ctx, pre ** 2, -t)


def test_prefill_weight_is_prefill_over_decode_token_cost() -> None:
    """β from the roofline: a prefill token's marginal time over a decode token's share of a
    step; on the A100 and H100 presets a prefill token is cheaper than a decode token (the
    decode step is bound by reading the weights, prefill by compute)."""
    for name in PRESETS:
        cost = CostModel.preset(name)
        beta = cost.prefill_weight(batch=48)
        step = cost.iteration_time(0, 48, 48 * 1024)
        mixed = cost.iteration_time(512, 48, 48 * 1024, 512.0 ** 2)
        assert beta == pytest.approx(((mixed - step) / 512) / (step / 48))
        assert 0.01 < beta < 1.0, (name, beta)
        # Larger batches share a step among more tokens: a decode token gets cheaper.
        assert cost.prefill_weight(batch=128) > cost.prefill_weight(batch=8)
    with pytest.raises(ValueError, match="batch"):
        CostModel.preset(PRESETS[0]).prefill_weight(batch=0)


def test_engine_step_cost_in_the_simulator_charges_the_engines_step() -> None:
    from trail.engine import StepCost, StepShape
    from trail.sim.cost_model import EngineStepCost

    step = StepCost(constant=1e-3, rows=2e-4, prefill_tokens=3e-5, context_tokens=4e-7,
                    probe_call=5e-4, probe_rows=6e-5)
    cost = EngineStepCost(step)
    # a decode step of 8 rows over 800 context tokens, and one with a 100-token prefill
    assert cost.iteration_time(0, 8, 800) == pytest.approx(step.seconds(StepShape(8, 0, 800, 0)))
    assert cost.iteration_time(100, 8, 800) == pytest.approx(
        step.seconds(StepShape(9, 100, 800, 0)))
    assert cost.iteration_time(0, 0, 0) == 0.0 and cost.swap_time(1e6) == 0.0
    every4 = EngineStepCost(step, probe_every=4)
    assert every4.iteration_time(0, 8, 800) == pytest.approx(
        cost.iteration_time(0, 8, 800) + (5e-4 + 6e-5 * 8) / 4)
    with pytest.raises(TypeError, match="StepCost"):
        EngineStepCost(1.0)
    with pytest.raises(ValueError, match="probe_every"):
        EngineStepCost(step, probe_every=0)
