"""β learned by the engine: StepCost.prefill_weight, the online estimator, EngineConfig."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from trail.engine import Engine, EngineConfig, StepCost, StepShape
from trail.engine.prefill_weight import PrefillWeightEstimator

import trail_ext as te
from test_engine_clock import COST, model, workload


def test_step_cost_prefill_weight_by_hand() -> None:
    c = StepCost(constant=1e-3, rows=1e-4, prefill_tokens=2e-5, context_tokens=1e-7)
    step = 1e-3 + 8 * 1e-4 + 8 * 100 * 1e-7
    extra = 1e-4 + 50 * 2e-5
    assert c.prefill_weight(8, 100, 50) == pytest.approx((extra / 50) / (step / 8))
    with pytest.raises(ValueError, match="batch"):
        c.prefill_weight(0, 100, 50)


def synthetic(cost: StepCost, n: int, rng: np.random.Generator, noise: float = 0.02
              ) -> list[tuple[StepShape, float]]:
    out = []
    for i in range(n):
        rows = int(rng.integers(1, 16))
        pre = int(rng.integers(20, 400)) if i % 3 == 0 else 0
        shape = StepShape(rows, pre, rows * int(rng.integers(10, 500)), 0)
        out.append((shape, cost.seconds(shape) * (1 + noise * rng.standard_normal())))
    return out


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), pre=st.floats(1e-6, 1e-4))
def test_estimator_recovers_beta_of_a_known_cost(seed: int, pre: float) -> None:
    true = StepCost(constant=2e-3, rows=3e-4, prefill_tokens=pre, context_tokens=2e-7)
    rng = np.random.default_rng(seed)
    est = PrefillWeightEstimator(every=64)
    betas = []
    for shape, t in synthetic(true, 512, rng):
        est.add(shape, t)
        b = est.update()
        if b is not None:
            betas.append(b)
    assert len(betas) >= 6  # refitted every 64 steps once it had both kinds of step
    decode = [s for s, _ in est._steps if s.prefill_tokens == 0]
    batch = int(np.median([s.rows for s in decode]))
    context = round(sum(s.context_tokens for s in decode) / sum(s.rows for s in decode))
    prompt = round(float(np.mean([s.prefill_tokens for s, _ in est._steps
                                  if s.prefill_tokens])))
    assert betas[-1] == pytest.approx(true.prefill_weight(batch, context, prompt), rel=0.15)


def test_estimator_waits_for_both_kinds_of_step() -> None:
    est = PrefillWeightEstimator(every=4, min_each=4)
    for _ in range(40):  # decode only: nothing to compare a prefill token with
        est.add(StepShape(4, 0, 400, 0), 1e-3)
        assert est.update() is None
    est.add(StepShape(4, 0, 400, 0), math.nan)  # ignored, not fitted
    assert len(est._steps) == 40
    with pytest.raises(ValueError, match="every"):
        PrefillWeightEstimator(every=0)


def serve(prefill_weight: object, cost: StepCost | None = COST) -> Engine:
    engine = Engine(model(), EngineConfig(
        scheduler=te.SchedulerConfig(policy=te.Policy.SJF, max_running=3,
                                     kv_capacity_tokens=512, block_size=8),
        step_cost=cost, prefill_weight=prefill_weight))
    engine.run(workload(40, gap=0.002), progress=False)
    return engine


def test_engine_learns_beta_on_a_virtual_clock() -> None:
    engine = serve("auto")
    assert engine.prefill_weight_log, "no β was set"
    step, beta = engine.prefill_weight_log[-1]
    assert engine.scheduler.config.prefill_weight == beta > 0
    assert beta == pytest.approx(engine._beta.cost.prefill_weight(
        *_typical(engine)), rel=1e-12)


def _typical(engine: Engine) -> tuple[int, int, int]:
    steps = list(engine._beta._steps)
    decode = [s for s, _ in steps if s.prefill_tokens == 0 and s.rows > 0]
    prefill = [s for s, _ in steps if s.prefill_tokens > 0]
    return (max(1, int(np.median([s.rows for s in decode]))),
            max(1, round(sum(s.context_tokens for s in decode) / sum(s.rows for s in decode))),
            max(1, round(float(np.mean([s.prefill_tokens for s in prefill])))))


def test_engine_learns_beta_on_the_wall_clock() -> None:
    engine = serve("auto", cost=None)
    assert all(b >= 0 and math.isfinite(b) for _, b in engine.prefill_weight_log)
    if engine.prefill_weight_log:
        assert engine.scheduler.config.prefill_weight == engine.prefill_weight_log[-1][1]


def test_explicit_and_bad_values() -> None:
    engine = serve(0.25)
    assert engine.scheduler.config.prefill_weight == 0.25
    assert engine.prefill_weight_log == [(0, 0.25)]
    for bad in (-1.0, math.nan, "often", True):
        with pytest.raises(ValueError, match="prefill_weight"):
            Engine(model(), EngineConfig(scheduler=te.SchedulerConfig(), prefill_weight=bad))
