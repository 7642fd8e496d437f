"""β learned from vLLM's own steps, as TRAIL's engine learns it (`trail.engine.prefill_weight`).

A rank preemption in vLLM recomputes the victim (prompt and generated tokens), so what it
costs depends on β, the server time of one prefill token in decode tokens. The adapter
measures it: each step's shape (rows, prefill tokens, attended context) from vLLM's
`SchedulerOutput`, and its seconds from the end of `schedule()` to the start of
`update_from_output()` (with synchronous scheduling, the model's forward). No vLLM import:
the shape is read from plain numbers, so this is tested without vLLM.
"""

from __future__ import annotations

import time
from typing import Iterable

from trail.engine.clock import StepShape
from trail.engine.prefill_weight import PrefillWeightEstimator


def step_shape(rows: Iterable[tuple[int, int, int]]) -> StepShape:
    """A vLLM step's shape from (scheduled tokens, tokens computed before the step, prompt
    tokens) per scheduled request: a row of one token past its prompt decodes (attending to
    what was computed); any other row prefills (a prompt, a chunk of one, or a recompute)."""
    n_rows = prefill = context = 0
    for scheduled, before, prompt in rows:
        if scheduled <= 0:
            continue
        n_rows += 1
        if scheduled == 1 and before >= prompt:
            context += before
        else:
            prefill += scheduled
    return StepShape(rows=n_rows, prefill_tokens=prefill, context_tokens=context, probe_rows=0)


class OnlineBeta:
    """Times vLLM's steps and refits β; `finish()` returns a new β when one is due."""

    def __init__(self, every: int = 64) -> None:
        self.estimator = PrefillWeightEstimator(every=every)
        self._shape: StepShape | None = None
        self._t = 0.0

    def scheduled(self, shape: StepShape) -> None:
        """A step was planned with this shape; its forward starts now."""
        self._shape, self._t = (shape if shape.rows else None), time.perf_counter()

    def finish(self) -> float | None:
        """The planned step's output arrived: record its seconds; a fresh β or None."""
        if self._shape is None:
            return None
        self.estimator.add(self._shape, time.perf_counter() - self._t)
        self._shape = None
        return self.estimator.update()
