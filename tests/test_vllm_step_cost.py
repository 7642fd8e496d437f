"""The vLLM adapter's online β (trail.integrations.vllm.step_cost), without vLLM installed:
step shapes read from vLLM's per-request counts, and β recovered from timed steps."""

from __future__ import annotations

import time

import pytest
from trail.engine.clock import StepCost, StepShape
from trail.integrations.vllm.step_cost import OnlineBeta, StepComposition, step_shape


def test_rows_that_decode_and_rows_that_prefill() -> None:
    shape = step_shape([
        (1, 120, 100),   # decodes: one token past its prompt, attends to 120
        (1, 40, 40),     # decodes its first output token
        (64, 0, 300),    # a chunk of a prompt
        (36, 64, 100),   # the prompt's last chunk
        (150, 0, 90),    # a preempted request recomputing prompt + output
        (1, 10, 50),     # a one-token prefill chunk: still prefill
        (0, 5, 5),       # not scheduled: ignored
    ])
    assert shape == StepShape(rows=6, prefill_tokens=64 + 36 + 150 + 1,
                              context_tokens=160, probe_rows=0)


def test_an_empty_step_is_not_timed() -> None:
    beta = OnlineBeta(every=1)
    beta.scheduled(1, step_shape([]))
    assert beta.finished(1) is None
    assert beta.finished(2) is None  # no step planned


def test_beta_is_recovered_from_timed_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps timed on a known linear cost give back that cost, and β from it."""
    true = StepCost(constant=0.02, rows=0.004, prefill_tokens=0.0009, context_tokens=1e-6)
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    beta, got = OnlineBeta(every=16), None
    for i in range(200):
        rows = [(1, 100 + i, 50)] * (2 + i % 5)
        if i % 3 == 0:
            rows.append((20 + 7 * (i % 11), 0, 400))
        shape = step_shape(rows)
        beta.scheduled(i, shape)
        clock[0] += true.seconds(shape)
        got = beta.finished(i) or got
    fitted = beta.estimator.cost
    for name in ("constant", "rows", "prefill_tokens", "context_tokens"):
        assert getattr(fitted, name) == pytest.approx(getattr(true, name), rel=1e-4, abs=1e-9)
    # β at a batch of 4 decoding rows of ~200 context, prompts of ~55: 0.0009 s a token
    # against (0.02 + 4 × 0.004 + 800e-6) / 4 s a decode token
    assert got == pytest.approx(beta.estimator.beta) and 0.08 < got < 0.12


def test_async_steps_are_timed_from_the_previous_output(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """With async scheduling step i + 1 is planned before step i's output returns: its
    forward starts when that output is back, not when it was planned."""
    true = StepCost(constant=0.02, rows=0.004, prefill_tokens=0.0009, context_tokens=1e-6)
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    beta = OnlineBeta(every=16)
    shapes = []
    for i in range(200):
        rows = [(1, 100 + i, 50)] * (2 + i % 5)
        if i % 3 == 0:
            rows.append((20 + 7 * (i % 11), 0, 400))
        shapes.append(step_shape(rows))
    beta.scheduled(0, shapes[0])
    for i in range(200):
        if i + 1 < 200:
            beta.scheduled(i + 1, shapes[i + 1])   # planned while step i runs
        clock[0] += true.seconds(shapes[i])
        beta.finished(i)
    assert beta.estimator.cost.prefill_tokens == pytest.approx(true.prefill_tokens, rel=1e-4)
    assert beta.estimator.cost.rows == pytest.approx(true.rows, rel=1e-4)


def test_outputs_that_never_return_are_dropped() -> None:
    beta = OnlineBeta(pending=2)
    for i in range(5):
        beta.scheduled(i, step_shape([(1, 10, 5)]))
    assert len(beta._pending) == 2 and beta.finished(0) is None


def test_step_time_by_composition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every timed step counts toward its kind, fitted or not: decode-only steps and steps
    that prefill, with their mean time, rows and prefill tokens."""
    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    timer = OnlineBeta(fit=False)
    steps = [([(1, 100, 50)] * 4, 0.2), ([(1, 100, 50)] * 2, 0.1),
             ([(1, 100, 50), (30, 0, 30)], 0.5)]
    for i, (rows, seconds) in enumerate(steps):
        timer.scheduled(i, step_shape(rows))
        clock[0] += seconds
        assert timer.finished(i) is None  # not fitting β
    got = timer.composition.stats()
    assert got == pytest.approx({"decode_steps": 2, "decode_step_ms": 150.0,
                                 "decode_rows_per_step": 3.0, "prefill_steps": 1,
                                 "prefill_step_ms": 500.0, "prefill_rows_per_step": 2.0,
                                 "prefill_tokens_per_step": 30.0})
    assert len(timer.estimator._steps) == 0
    empty = StepComposition().stats()
    assert empty["decode_steps"] == 0 and empty["decode_step_ms"] == 0.0
