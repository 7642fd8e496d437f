"""Length predictors for the simulator: what each policy is told about requests.

- `Oracle`: the true output length at arrival (TRAIL+ and any "oracle" policy).
- `PromptOnly`: one prediction at arrival with multiplicative lognormal error, calibrated so
  its MAE on the trace equals `mae` tokens (default 46.1: the paper's DistilBERT baseline).
- `EmbeddingProbe`: before the prefill, what the serving loop knows from the prompt alone
  (`at_arrival`: a `PromptOnly` prediction by default, or None for nothing, which the
  scheduler ranks at its `default_predicted_len`); from the prefill on, a prediction of the
  remaining length every `predict_every` tokens whose error shrinks with age. Either sampled
  from an error profile exported by `trail eval-probe` (residual quantiles by age × true bin),
  or, by default, multiplicative lognormal error with σ(age) = σ₀ / √(1 + age / 32), σ₀
  calibrated so the MAE at prefill equals `mae` (default 33.9: the paper's probe).
- `LTR`: a score per request whose rank correlation with the true length has Kendall τ ≈
  `tau` (the LTR paper reports 0.52–0.64); the LTR policy ranks by it.
Every predictor is seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_PROMPT_MAE = 46.1   # TRAIL's official code: DistilBERT on the prompt, total length
DEFAULT_PROBE_MAE = 33.9    # TRAIL's official code: the embedding probe, remaining length


def _calibrate_sigma(lengths: np.ndarray, target_mae: float, rng: np.random.Generator) -> float:
    """σ such that E|L·exp(σZ) − L| over `lengths` is `target_mae` (bisection on a sample)."""
    if not target_mae > 0:
        return 0.0
    z = rng.standard_normal(min(len(lengths), 20_000))
    sample = rng.choice(lengths, size=len(z))
    lo, hi = 0.0, 5.0
    for _ in range(50):
        mid = (lo + hi) / 2
        mae = float(np.mean(np.abs(sample * np.expm1(mid * z))))
        lo, hi = (mid, hi) if mae < target_mae else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Oracle:
    """The true output length at arrival."""

    name: str = "oracle"
    refreshes = False

    def initial(self, output: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, None]:
        return output.astype(float), None

    def refresh(self, true_remaining: np.ndarray, age: np.ndarray,
                rng: np.random.Generator) -> None:
        return None


@dataclass
class PromptOnly:
    """One prediction at arrival, lognormal error with MAE `mae` tokens on the trace."""

    mae: float = DEFAULT_PROMPT_MAE
    name: str = "prompt-only"
    refreshes = False

    def initial(self, output: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, None]:
        sigma = _calibrate_sigma(output.astype(float), self.mae, rng)
        return output * np.exp(sigma * rng.standard_normal(len(output))), None

    def refresh(self, true_remaining: np.ndarray, age: np.ndarray,
                rng: np.random.Generator) -> None:
        return None


@dataclass
class EmbeddingProbe:
    """Refined predictions of the remaining length; error shrinking with age."""

    mae: float = DEFAULT_PROBE_MAE
    predict_every: int = 1
    profile: dict[str, Any] | None = None   # `error_profile` of a `trail eval-probe` report
    # Waiting requests have no hidden state yet; without a prompt-only estimate they would
    # all rank at the scheduler's default and preempt long running requests on arrival.
    at_arrival: PromptOnly | None = field(default_factory=lambda: PromptOnly())
    name: str = "probe"
    refreshes = True
    _sigma0: float = math.nan

    def initial(self, output: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray | None, None]:
        if self.profile is None:
            self._sigma0 = _calibrate_sigma(output.astype(float), self.mae, rng)
        return (None if self.at_arrival is None else self.at_arrival.initial(output, rng)[0],
                None)

    def refresh(self, true_remaining: np.ndarray, age: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """Predicted remaining tokens for requests of these ages (age 0: at prefill)."""
        true_remaining = np.asarray(true_remaining, float)
        if self.profile is not None:
            return np.maximum(true_remaining + self._residuals(true_remaining, age, rng), 0.0)
        sigma = self._sigma0 / np.sqrt(1.0 + np.asarray(age, float) / 32.0)
        return true_remaining * np.exp(sigma * rng.standard_normal(len(true_remaining)))

    def _residuals(self, true_remaining: np.ndarray, age: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
        prof = self.profile
        age_edges = np.asarray(prof["age_edges"], float)
        bin_edges = np.asarray(prof["bin_edges"], float)
        cells = {(c["age_bucket"], c["true_bin"]): np.asarray(c["residual_quantiles"])
                 for c in prof["cells"]}
        qs = np.asarray(prof["quantiles"], float)
        a = np.clip(np.searchsorted(age_edges, np.maximum(age, 1), side="right") - 1, 0,
                    len(age_edges) - 1)
        b = np.clip(np.searchsorted(bin_edges, true_remaining, side="right") - 1, 0,
                    len(bin_edges) - 2)
        u = rng.random(len(true_remaining))
        out = np.zeros(len(true_remaining))
        for i, key in enumerate(zip(a.tolist(), b.tolist())):
            q = cells.get(key)
            if q is None:  # an empty cell: the nearest age bucket with data for this bin
                near = [k for k in cells if k[1] == key[1]]
                q = cells[min(near, key=lambda k: abs(k[0] - key[0]))] if near else None
            out[i] = 0.0 if q is None else np.interp(u[i], qs, q)
        return out


@dataclass
class LTR:
    """Scores whose Kendall τ with the true length is about `tau` (lower runs first)."""

    tau: float = 0.6
    name: str = "ltr"
    refreshes = False

    def initial(self, output: np.ndarray, rng: np.random.Generator) -> tuple[None, np.ndarray]:
        if not -1 < self.tau <= 1:
            raise ValueError(f"LTR tau={self.tau!r} must be in (-1, 1]")
        logs = np.log(np.maximum(output, 1).astype(float))
        z = rng.standard_normal(len(output))
        lo, hi = 0.0, 50.0
        for _ in range(40):
            mid = (lo + hi) / 2
            t = kendall_tau(logs, logs + mid * z, rng)
            lo, hi = (mid, hi) if t > self.tau else (lo, mid)
        return None, logs + (lo + hi) / 2 * z

    def refresh(self, true_remaining: np.ndarray, age: np.ndarray,
                rng: np.random.Generator) -> None:
        return None


def kendall_tau(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                pairs: int = 200_000) -> float:
    """Kendall's τ estimated on random pairs (ties count as neither agreeing nor not)."""
    n = len(a)
    if n < 2:
        return 1.0
    i, j = rng.integers(0, n, pairs), rng.integers(0, n, pairs)
    s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(s[i != j].mean())
