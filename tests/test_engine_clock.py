"""The engine's virtual clock: deterministic timings from a step-cost model; the fit behind it."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from trail import Probe
from trail.cpu import threads
from trail.engine import (Engine, EngineConfig, SamplingParams, StepCost, StepShape,
                          VirtualClock, fit_step_cost)

import trail_ext as te

COST = StepCost(constant=1e-3, rows=2e-4, prefill_tokens=1e-5, context_tokens=1e-6,
                probe_call=5e-4, probe_rows=1e-5)


def model() -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=128,
                                   initializer_range=0.3)
    return transformers.LlamaForCausalLM(cfg).eval()


def workload(n: int = 12, gap: float = 0.004) -> list[tuple]:
    rng = np.random.default_rng(1)
    return [(i * gap, rng.integers(1, 64, rng.integers(2, 9)).tolist(),
             SamplingParams(max_new_tokens=int(rng.integers(3, 20)), temperature=1.0, seed=i),
             float(rng.integers(3, 20)))
            for i in range(n)]


def serve(cost: StepCost | None, probe: bool = False, policy: te.Policy = te.Policy.TRAIL,
          arrivals: list[tuple] | None = None) -> tuple[Engine, list]:
    engine = Engine(model(), EngineConfig(
        scheduler=te.SchedulerConfig(policy=policy, max_running=3, kv_capacity_tokens=512,
                                     block_size=8, c=0.8),
        probe=Probe(hidden_size=32, layer=1) if probe else None, predict_every=2,
        step_cost=cost, record_steps=True))
    report = engine.run(arrivals if arrivals is not None else workload(), progress=False)
    return engine, sorted(report.outputs, key=lambda o: o.rid)


@pytest.mark.parametrize("probe", [False, True])
def test_virtual_timings_are_the_sum_of_step_costs_and_repeat_exactly(probe: bool) -> None:
    engine, outs = serve(COST, probe)
    again, outs2 = serve(COST, probe)
    assert [(o.arrival, o.first_token_time, o.finish_time, o.output_ids) for o in outs] == \
        [(o.arrival, o.first_token_time, o.finish_time, o.output_ids) for o in outs2]
    # Busy stretches advance by exactly the step costs; idle ones jump to the next arrival.
    assert engine.now() >= math.fsum(COST.seconds(s) for s, _ in engine.step_log) - 1e-12
    assert engine.now() == pytest.approx(max(o.finish_time for o in outs))
    assert all(o.arrival <= o.first_token_time <= o.finish_time for o in outs)
    if probe:
        assert any(s.probe_rows for s, _ in engine.step_log)
        assert any(o.predictions for o in outs)


def test_virtual_clock_serves_the_same_tokens_as_the_wall_clock() -> None:
    """The clock changes timings only: with all arrivals at t = 0 the schedule is the same."""
    at_zero = [(0.0, *a[1:]) for a in workload()]
    _, virtual = serve(COST, arrivals=at_zero)
    _, wall = serve(None, arrivals=at_zero)
    assert [o.output_ids for o in virtual] == [o.output_ids for o in wall]


def test_thread_count_changes_nothing_on_the_virtual_clock() -> None:
    with threads(1):
        _, one = serve(COST, probe=True)
    with threads(2):
        _, two = serve(COST, probe=True)
    assert [(o.finish_time, o.output_ids, o.predictions) for o in one] == \
        [(o.finish_time, o.output_ids, o.predictions) for o in two]


def test_idle_engine_jumps_to_the_next_arrival_instead_of_sleeping() -> None:
    arrivals = [(0.0, [1, 2, 3], SamplingParams(max_new_tokens=3)),
                (3600.0, [4, 5], SamplingParams(max_new_tokens=3))]
    start = time.perf_counter()
    _, outs = serve(COST, arrivals=arrivals)
    assert time.perf_counter() - start < 60
    assert outs[1].arrival == 3600.0
    # Prefill of 2 tokens, then two decode steps of one row each.
    first = COST.seconds(StepShape(1, 2, 0, 0))
    assert outs[1].first_token_time == pytest.approx(3600.0 + first, abs=1e-9)


def test_wall_clock_is_the_default() -> None:
    engine, outs = serve(None)
    assert not engine.clock.virtual
    assert all(t > 0 for _, t in engine.step_log)


@settings(max_examples=30, deadline=None)
@given(coef=st.lists(st.floats(0.0, 1e-3), min_size=6, max_size=6),
       seed=st.integers(0, 2**16))
def test_fit_recovers_known_coefficients(coef: list[float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    coef[0] += 1e-4  # a one-row step must cost something
    truth = StepCost(*coef)
    shapes = [StepShape(int(r), int(p), int(c), int(r) * int(k))
              for r, p, c, k in zip(rng.integers(1, 9, 200), rng.integers(0, 300, 200),
                                    rng.integers(0, 4000, 200), rng.integers(0, 2, 200))]
    seconds = [truth.seconds(s) for s in shapes]
    fitted, stats = fit_step_cost(shapes, seconds)
    assert stats["r2"] > 0.999999 or np.ptp(seconds) == 0
    for s in shapes[:20]:
        assert fitted.seconds(s) == pytest.approx(truth.seconds(s), rel=1e-6, abs=1e-12)


def test_fit_keeps_coefficients_non_negative() -> None:
    rng = np.random.default_rng(0)
    shapes = [StepShape(int(r), 0, int(c), 0) for r, c in zip(rng.integers(1, 9, 100),
                                                              rng.integers(0, 1000, 100))]
    # Time falls with context: a least-squares fit would give a negative context cost.
    seconds = [1e-3 + 1e-4 * s.rows - 1e-7 * s.context_tokens + 2e-4 for s in shapes]
    fitted, _ = fit_step_cost(shapes, seconds)
    assert min(getattr(fitted, f) for f in ("constant", "rows", "prefill_tokens",
                                            "context_tokens", "probe_call", "probe_rows")) >= 0
    assert fitted.context_tokens == 0


@pytest.mark.parametrize("bad", [{"rows": -1e-3}, {"constant": math.nan}, {"rows": True},
                                 {"constant": 0.0, "rows": 0.0}, {"probe_rows": math.inf}])
def test_bad_step_costs_are_refused(bad: dict) -> None:
    fields = {"constant": 1e-3, **bad}
    with pytest.raises(ValueError, match="StepCost"):
        StepCost(**fields)


def test_bad_clock_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(TypeError, match="step_cost"):
        Engine(model(), EngineConfig(scheduler=te.SchedulerConfig(), step_cost=0.01))
    with pytest.raises(TypeError, match="StepCost"):
        VirtualClock(0.01)
    with pytest.raises(ValueError, match="samples"):
        fit_step_cost([StepShape(1, 0, 0, 0)], [0.1])
    with pytest.raises(ValueError, match="finite"):
        fit_step_cost([StepShape(1, 0, 0, 0)] * 6, [0.1] * 5 + [math.nan])
    path = tmp_path / "cost.json"
    COST.to_json(path, provenance={"machine": "test"})
    assert StepCost.from_json(path) == COST
    path.write_text('{"constant": "fast"}')
    with pytest.raises(ValueError):
        StepCost.from_json(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a step-cost file"):
        StepCost.from_json(path)
