"""β learned from vLLM's own steps, as TRAIL's engine learns it (`trail.engine.prefill_weight`).

A rank preemption in vLLM recomputes the victim (prompt and generated tokens), so what it
costs depends on β, the server time of one prefill token in decode tokens. The adapter
measures it: each step's shape (rows, prefill tokens, attended context) from vLLM's
`SchedulerOutput`, and its seconds until `update_from_output()` receives its output. No vLLM
import: the shape is read from plain numbers, so this is tested without vLLM.
"""

from __future__ import annotations

import math
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


class StepComposition:
    """Step time by batch composition: decode-only steps and steps that prefill (a prompt,
    a chunk of one or a recompute), each with its count, seconds, rows and prefill tokens,
    so a benchmark can say whether a policy's steps got slower or only more crowded."""

    KINDS = ("decode", "prefill")

    def __init__(self) -> None:
        self._sums = {k: [0, 0.0, 0, 0] for k in self.KINDS}  # steps, s, rows, prefill

    def add(self, shape: StepShape, seconds: float) -> None:
        """One timed step."""
        s = self._sums["prefill" if shape.prefill_tokens else "decode"]
        s[0] += 1
        s[1] += seconds
        s[2] += shape.rows
        s[3] += shape.prefill_tokens

    def stats(self) -> dict[str, float]:
        """Per kind: steps, mean ms a step, mean rows a step (and prefill tokens a step)."""
        out: dict[str, float] = {}
        for kind, (n, sec, rows, pre) in self._sums.items():
            out[f"{kind}_steps"] = n
            out[f"{kind}_step_ms"] = 1e3 * sec / n if n else 0.0
            out[f"{kind}_rows_per_step"] = rows / n if n else 0.0
            if kind == "prefill":
                out["prefill_tokens_per_step"] = pre / n if n else 0.0
        return out


class OnlineBeta:
    """Times vLLM's steps (by composition, `composition`) and, with `fit`, refits β;
    `finished()` returns a new β when one is due.

    A step's forward starts when it is scheduled or when the previous step's output came
    back, whichever is later (with async scheduling vLLM plans step N + 1 while step N
    runs), and ends when its output comes back."""

    def __init__(self, every: int = 64, pending: int = 8, fit: bool = True) -> None:
        self.estimator = PrefillWeightEstimator(every=every)
        self.composition = StepComposition()
        self.fit = fit
        self._pending: dict[int, tuple[StepShape, float]] = {}
        self._max_pending = pending
        self._last_done = -math.inf

    def scheduled(self, key: int, shape: StepShape) -> None:
        """Step `key` (the id of vLLM's SchedulerOutput) was planned with this shape."""
        if shape.rows:
            if len(self._pending) >= self._max_pending:  # outputs that never came back
                self._pending.pop(next(iter(self._pending)))
            self._pending[key] = (shape, time.perf_counter())

    def finished(self, key: int) -> float | None:
        """Step `key`'s output arrived: record its seconds; a fresh β or None."""
        now, previous = time.perf_counter(), self._last_done
        self._last_done = now
        entry = self._pending.pop(key, None)
        if entry is None:
            return None
        shape, planned = entry
        seconds = now - max(planned, previous)
        self.composition.add(shape, seconds)
        if not self.fit:
            return None
        self.estimator.add(shape, seconds)
        return self.estimator.update()
