"""The engine's clock: the wall clock, or a virtual clock that advances by a fixed cost per step.

Timing policies on the wall clock of a shared machine measures the machine as much as the
policy: the same seed gave TRAIL/FCFS mean latency 0.55 on a quiet 2-core machine and 1.14
on a busy one. With a `VirtualClock` the engine still serves for real (real forwards, sampled
tokens, probe predictions, preemptions), but arrivals, token times and latencies are read
from a clock that advances by `StepCost.seconds(shape)` after each step: a deterministic
function of what the step computed, fitted once to this engine's measured step times
(`fit_step_cost`) and then frozen. The same seed then gives the same numbers on any machine
whose floating-point results are the same, busy or quiet.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class StepShape:
    """What one engine step computed: the features its cost depends on."""

    rows: int             # sequences in the forward (prefills and decodes)
    prefill_tokens: int   # tokens fed by prefilling and recomputing rows
    context_tokens: int   # KV tokens the decode rows attend to, summed
    probe_rows: int       # rows the probe refined this step (0: no probe call)


FEATURES = ("constant", "rows", "prefill_tokens", "context_tokens", "probe_call", "probe_rows")


def features(shape: StepShape) -> tuple[float, ...]:
    """The regressors of the step-cost model, in the order of FEATURES."""
    return (1.0, float(shape.rows), float(shape.prefill_tokens), float(shape.context_tokens),
            1.0 if shape.probe_rows else 0.0, float(shape.probe_rows))


@dataclass(frozen=True)
class StepCost:
    """Seconds per engine step, linear in the step's shape (coefficients in seconds)."""

    constant: float = 0.0
    rows: float = 0.0
    prefill_tokens: float = 0.0
    context_tokens: float = 0.0
    probe_call: float = 0.0
    probe_rows: float = 0.0
    name: str = "custom"

    def __post_init__(self) -> None:
        for f in FEATURES:
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ValueError(f"StepCost.{f}={value!r} must be a finite number >= 0")
        if self.seconds(StepShape(1, 0, 0, 0)) <= 0:
            raise ValueError("StepCost: a one-row step must take time (constant + rows > 0)")

    def seconds(self, shape: StepShape) -> float:
        """Cost of one step of this shape."""
        return math.fsum(getattr(self, f) * x for f, x in zip(FEATURES, features(shape)))

    def prefill_weight(self, batch: int = 32, context: int = 1024, prompt: int = 256) -> float:
        """β: seconds of one prefill token over one decode token, at a decode step of `batch`
        rows attending to `context` tokens each (as CostModel.prefill_weight): a decode token
        costs the step / batch; a prefill token, the time a `prompt`-token prefill row adds
        to that step, per token. inf if decode costs nothing."""
        for name, value in (("batch", batch), ("context", context), ("prompt", prompt)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StepCost.prefill_weight: {name}={value!r} must be a "
                                 f"positive int")
        step = self.seconds(StepShape(batch, 0, batch * context, 0))
        mixed = self.seconds(StepShape(batch + 1, prompt, batch * context, 0))
        per_decode = step / batch
        return (mixed - step) / prompt / per_decode if per_decode > 0 else math.inf

    def decode_tokens_per_s(self, batch: int = 32, context: int = 1024) -> float:
        """Tokens per second one request decodes at in a step of `batch` rows attending to
        `context` tokens each (no probe call)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"StepCost.decode_tokens_per_s: batch={batch!r} must be a "
                             f"positive int")
        return 1.0 / self.seconds(StepShape(batch, 0, batch * context, 0))

    @classmethod
    def from_json(cls, path: str | pathlib.Path) -> "StepCost":
        """Load a cost written by to_json (extra keys such as provenance are ignored)."""
        return cls.from_text(pathlib.Path(path).read_text(), str(path))

    @classmethod
    def from_text(cls, text: str, source: str = "step cost") -> "StepCost":
        """Parse to_json's format (extra keys ignored); ValueError naming `source` if bad."""
        try:
            d = json.loads(text)
            return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{source}: not a step-cost file ({exc})") from None

    def to_json(self, path: str | pathlib.Path, **extra: Any) -> None:
        """Write the coefficients (and any provenance given as keywords) as JSON."""
        pathlib.Path(path).write_text(json.dumps({**asdict(self), **extra}, indent=1) + "\n")


def fit_step_cost(shapes: Sequence[StepShape], seconds: Sequence[float],
                  name: str = "fitted") -> tuple[StepCost, dict[str, float]]:
    """Least-squares StepCost with non-negative coefficients; returns it and fit statistics.

    Features whose coefficient comes out negative are dropped and the rest refitted (a
    small active-set NNLS), so every coefficient keeps its meaning as a cost. Statistics:
    samples, R², and the relative error of the predicted total time.
    """
    x = np.array([features(s) for s in shapes], dtype=float)
    t = np.asarray(seconds, dtype=float)
    if x.shape[0] != t.shape[0] or t.size < len(FEATURES):
        raise ValueError(f"fit_step_cost needs >= {len(FEATURES)} samples, one time per shape")
    if not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise ValueError("measured step times must be finite and > 0")
    active = [j for j in range(len(FEATURES)) if np.any(x[:, j] != 0)]
    while True:
        coef = np.zeros(len(FEATURES))
        coef[active] = np.linalg.lstsq(x[:, active], t, rcond=None)[0]
        negative = [j for j in active if coef[j] < 0]
        if not negative:
            break
        active.remove(min(negative, key=lambda j: coef[j]))
    pred = x @ coef
    ss_res, ss_tot = float(np.sum((t - pred) ** 2)), float(np.sum((t - t.mean()) ** 2))
    cost = StepCost(**dict(zip(FEATURES, map(float, coef))), name=name)
    return cost, {"samples": int(t.size), "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0,
                  "total_rel_err": float(pred.sum() / t.sum() - 1.0)}


class Clock(Protocol):
    """What the engine reads time from."""

    virtual: bool

    def now(self) -> float:
        """Seconds since the clock started."""

    def peek(self, shape: StepShape) -> float:
        """What now() will be once a step of this shape is charged (advance)."""

    def advance(self, shape: StepShape) -> None:
        """Called once per engine step, after its forward, with what the step computed."""

    def wait_until(self, t: float) -> None:
        """Idle until time t (nothing to serve before it)."""


class WallClock:
    """Real time: timings include everything the machine does, other processes too."""

    virtual = False

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    def now(self) -> float:
        """Seconds since construction."""
        return time.perf_counter() - self._t0

    def peek(self, shape: StepShape) -> float:
        """Real time: now."""
        return self.now()

    def advance(self, shape: StepShape) -> None:
        """Real time advances by itself."""

    def wait_until(self, t: float) -> None:
        """Sleep until t."""
        time.sleep(max(0.0, t - self.now()))


class VirtualClock:
    """Time that advances only by `cost.seconds(shape)` per step and jumps over idle gaps."""

    virtual = True

    def __init__(self, cost: StepCost) -> None:
        if not isinstance(cost, StepCost):
            raise TypeError(f"VirtualClock needs a StepCost, got {type(cost).__name__}")
        self.cost = cost
        self._t = 0.0

    def now(self) -> float:
        """The virtual time."""
        return self._t

    def peek(self, shape: StepShape) -> float:
        """The virtual time plus the step's cost."""
        return self._t + self.cost.seconds(shape)

    def advance(self, shape: StepShape) -> None:
        """Add the step's cost."""
        self._t += self.cost.seconds(shape)

    def wait_until(self, t: float) -> None:
        """Jump to t (never backwards)."""
        self._t = max(self._t, float(t))
