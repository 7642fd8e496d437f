"""β for the work-aware key, learned from the engine's own steps.

The scheduler's work-aware key (docs/scheduler.md) weighs a waiting request's prompt by β,
the server time of one prefill token in decode tokens. β depends on the model, the hardware
and the batch, so the engine measures it: it keeps its recent steps (shape and seconds),
fits a `StepCost` to them (non-negative least squares, `fit_step_cost`) every `every` steps,
and evaluates `StepCost.prefill_weight` at the batch it is actually serving (median decode
rows, mean context per row, mean prompt of the prefills it ran). On a virtual clock the cost
is known and only the typical batch is measured.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from trail.engine.clock import StepCost, StepShape, fit_step_cost


class PrefillWeightEstimator:
    """Online β from (StepShape, seconds) samples; `update()` returns a new β or None."""

    def __init__(self, known: StepCost | None = None, window: int = 4096, every: int = 64,
                 min_each: int = 8) -> None:
        for name, value in (("window", window), ("every", every), ("min_each", min_each)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PrefillWeightEstimator: {name}={value!r} must be a "
                                 f"positive int")
        self.known = known
        self.every = every
        self.min_each = min_each
        self._steps: deque[tuple[StepShape, float]] = deque(maxlen=window)
        self._since = 0
        self.beta: float | None = None
        self.batch = self.context = 0  # decode rows and context per row β was evaluated at
        self.cost: StepCost | None = known

    def add(self, shape: StepShape, seconds: float) -> None:
        """Record one step (seconds as measured on the wall clock; ignored if `known`)."""
        if math.isfinite(seconds) and seconds > 0:
            self._steps.append((shape, seconds))
            self._since += 1

    def update(self) -> float | None:
        """A fresh β when one is due and the window allows a fit, else None."""
        if self._since < self.every:
            return None
        steps = list(self._steps)
        decode = [s for s, _ in steps if s.prefill_tokens == 0 and s.rows > 0]
        prefill = [s for s, _ in steps if s.prefill_tokens > 0]
        if len(decode) < self.min_each or len(prefill) < self.min_each:
            return None
        self._since = 0
        cost = self.known
        if cost is None:
            try:
                cost, _ = fit_step_cost([s for s, _ in steps], [t for _, t in steps],
                                        name="online")
            except (ValueError, np.linalg.LinAlgError):
                return None
        batch = max(1, int(np.median([s.rows for s in decode])))
        context = max(1, round(sum(s.context_tokens for s in decode)
                               / max(1, sum(s.rows for s in decode))))
        prompt = max(1, round(float(np.mean([s.prefill_tokens for s in prefill]))))
        beta = cost.prefill_weight(batch, context, prompt)
        if not (math.isfinite(beta) and beta >= 0):
            return None
        self.cost, self.beta = cost, beta
        self.batch, self.context = batch, context  # the serving point β was evaluated at
        return beta
