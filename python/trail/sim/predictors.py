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
  A request's errors are correlated along its life (a real probe sees a request's similar
  hidden states step after step): a latent z ~ N(0, 1) per request follows an AR(1) process
  over its refreshes, z ← e^(−Δ/L)·z + √(1 − e^(−2Δ/L))·ε, Δ = tokens since its previous
  refresh, L = `corr_tokens` (0: independent draws at every refresh, the behaviour before
  this option existed, bit for bit). The lognormal mode's error is σ(age)·z; the profile
  mode reads its residual at u = Φ(z) from the cell's quantiles (a Gaussian copula), so its
  marginals stay exactly the profile's.
- `LTR`: a score per request whose rank correlation with the true length has Kendall τ ≈
  `tau` (the LTR paper reports 0.52–0.64); the LTR policy ranks by it.

What the scheduler is fed (`rank`, for `PromptOnly` and `EmbeddingProbe`): "mean" the point
prediction; "gittins" the Gittins rank (`trail.kernels.reference.gittins_rank_reference`) of
the predictor's belief about the remaining length, a distribution over `belief_bins`: log R ~
N(log prediction, σ²) with the σ the predictor draws its error with at that age (the prompt-
only σ at arrival), or, in profile mode, prediction − residual with the residual distributed
as that age bucket's residuals pooled over true bins (weighted by their counts). The cap is
max_new_tokens − generated. Both the arrival prediction and the refreshes use it, so waiting
and running requests are ranked the same way.

Interface (what `trail.sim.simulator.simulate` calls): `initial(output, rng,
max_new_tokens=None) -> (predictions or None, scores or None)` once per run (it resets any
per-run state); `refresh(ids, true_remaining, age, rng) -> predictions or None` for the due
requests (`ids`: their request ids, which key the correlated error; None treats every row as
a request never refreshed before). Every predictor is seeded by the `rng` it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

DEFAULT_PROMPT_MAE = 46.1   # TRAIL's official code: DistilBERT on the prompt, total length
DEFAULT_PROBE_MAE = 33.9    # TRAIL's official code: the embedding probe, remaining length
# Correlation length (tokens) of a request's probe error, measured on the demo model by
# bench/probe_error_correlation.py (bench/results/probe_error_correlation_2026-11-30.json,
# trail eval-probe's `error_correlation`): 10.0 tokens (demo model v2; 9.3 for v1) for the
# refined probe on the paper's 10 uniform bins over 0..512, the probe these defaults model;
# 3.1 (3.2) on geometric bins, which also keep a persistent per-request correlation of about
# 0.2 at lags of 16-256 tokens that an AR(1) cannot express. A tiny synthetic model: an
# estimate for the paper's Llama-3-8B probe, not a measurement of it.
DEFAULT_CORR_TOKENS = 10.0
RANKS = ("mean", "gittins")
# Belief bins for rank="gittins": geometric edges 0, 1, r, r², ... with r = 2^(1/8) (8 bins
# per doubling: a bin spans ±4.4% around its centre), up to the first edge at or past
# max_new_tokens, plus one bin beyond it that holds the tail (ranked at the cap).
BELIEF_RATIO = 2.0 ** 0.125


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


def belief_bins(max_new_tokens: float) -> np.ndarray:
    """Edges [K+1] of the bins a rank="gittins" belief lives on (see BELIEF_RATIO)."""
    from trail.probe.bins import Bins

    cap = max(float(max_new_tokens), 1.0)
    k = int(math.ceil(math.log(cap) / math.log(BELIEF_RATIO))) + 3
    return np.asarray(Bins.geometric(k, first=1.0, ratio=BELIEF_RATIO).edges, float)


def lognormal_belief(pred: np.ndarray, sigma: np.ndarray | float, edges: np.ndarray
                     ) -> np.ndarray:
    """q [B, K]: log R ~ N(log pred, σ²) over the bins of `edges`; mass past the last edge
    goes to the last bin (σ = 0: a point mass in the prediction's bin)."""
    import torch

    pred = np.maximum(np.asarray(pred, float), 1e-9)
    sigma = np.broadcast_to(np.maximum(np.asarray(sigma, float), 1e-12), pred.shape)
    with np.errstate(divide="ignore"):
        log_e = np.log(edges[1:-1])  # inner edges; the outer ones are 0 and "beyond"
    x = (log_e[None, :] - np.log(pred)[:, None]) / sigma[:, None]
    cdf = torch.special.ndtr(torch.from_numpy(x)).numpy()
    cdf = np.concatenate([np.zeros((len(pred), 1)), cdf, np.ones((len(pred), 1))], axis=1)
    return np.diff(cdf, axis=1)


def gittins_ranks(q: np.ndarray, edges: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """Gittins rank of each row of q over `edges`, capped at `cap` (float64, one call)."""
    import torch

    from trail.kernels.reference import gittins_rank_reference

    return gittins_rank_reference(torch.from_numpy(np.ascontiguousarray(q, float)),
                                  torch.from_numpy(np.asarray(edges, float)),
                                  torch.from_numpy(np.asarray(cap, float))).numpy()


def _check_rank(rank: str) -> None:
    if rank not in RANKS:
        raise ValueError(f"rank={rank!r} must be one of {', '.join(RANKS)}")


@dataclass
class Oracle:
    """The true output length at arrival."""

    name: str = "oracle"
    refreshes = False

    def initial(self, output: np.ndarray, rng: np.random.Generator,
                max_new_tokens: int | None = None) -> tuple[np.ndarray, None]:
        return output.astype(float), None

    def refresh(self, ids: np.ndarray | None, true_remaining: np.ndarray, age: np.ndarray,
                rng: np.random.Generator) -> None:
        return None


@dataclass
class Given:
    """Predictions made elsewhere, replayed: lengths at arrival (e.g. a real prompt-only
    predictor's) and/or LTR scores, one per request in the trace's order."""

    predictions: np.ndarray | None = None
    scores: np.ndarray | None = None
    rank: str = "mean"  # what the predictions are (an EmbeddingProbe's at_arrival checks it)
    name: str = "given"
    refreshes = False

    def initial(self, output: np.ndarray, rng: np.random.Generator,
                max_new_tokens: int | None = None) -> tuple[np.ndarray | None,
                                                            np.ndarray | None]:
        for what, v in (("predictions", self.predictions), ("scores", self.scores)):
            if v is not None and len(v) != len(output):
                raise ValueError(f"Given.{what}: {len(v)} values for {len(output)} requests")
        return (None if self.predictions is None else np.asarray(self.predictions, float),
                None if self.scores is None else np.asarray(self.scores, float))

    def refresh(self, ids: np.ndarray | None, true_remaining: np.ndarray, age: np.ndarray,
                rng: np.random.Generator) -> None:
        return None


@dataclass
class PromptOnly:
    """One prediction at arrival, lognormal error with MAE `mae` tokens on the trace; fed to
    the scheduler as that prediction (`rank="mean"`) or its belief's Gittins rank."""

    mae: float = DEFAULT_PROMPT_MAE
    name: str = "prompt-only"
    rank: str = "mean"
    refreshes = False

    def __post_init__(self) -> None:
        _check_rank(self.rank)

    def initial(self, output: np.ndarray, rng: np.random.Generator,
                max_new_tokens: int | None = None) -> tuple[np.ndarray, None]:
        sigma = _calibrate_sigma(output.astype(float), self.mae, rng)
        pred = output * np.exp(sigma * rng.standard_normal(len(output)))
        if self.rank == "gittins":
            cap = float(output.max() if max_new_tokens is None else max_new_tokens)
            edges = belief_bins(cap)
            pred = gittins_ranks(lognormal_belief(pred, sigma, edges), edges,
                                 np.full(len(pred), cap))
        return pred, None

    def refresh(self, ids: np.ndarray | None, true_remaining: np.ndarray, age: np.ndarray,
                rng: np.random.Generator) -> None:
        return None


@dataclass
class EmbeddingProbe:
    """Refined predictions of the remaining length; error shrinking with age, correlated
    along a request over `corr_tokens` tokens (see the module docstring)."""

    mae: float = DEFAULT_PROBE_MAE
    predict_every: int = 1
    profile: dict[str, Any] | None = None   # `error_profile` of a `trail eval-probe` report
    # Waiting requests have no hidden state yet; without a prompt-only estimate they would
    # all rank at the scheduler's default and preempt long running requests on arrival.
    # Its predictions are ranked with this probe's `rank` (whatever its own says).
    at_arrival: PromptOnly | None = field(default_factory=lambda: PromptOnly())
    name: str = "probe"
    corr_tokens: float = DEFAULT_CORR_TOKENS
    rank: str = "mean"
    refreshes = True
    _sigma0: float = math.nan
    _cap: float = math.nan
    _z: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _last_age: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _pooled: np.ndarray | None = field(default=None, repr=False)
    _edges: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_rank(self.rank)
        if not (math.isfinite(self.corr_tokens) and self.corr_tokens >= 0):
            raise ValueError(f"corr_tokens={self.corr_tokens!r} must be finite and >= 0")

    def initial(self, output: np.ndarray, rng: np.random.Generator,
                max_new_tokens: int | None = None) -> tuple[np.ndarray | None, None]:
        """The arrival predictions; resets the per-request error state for a new run."""
        self._cap = float(output.max() if max_new_tokens is None else max_new_tokens)
        self._z, self._last_age = np.zeros(0), np.zeros(0)
        self._edges = belief_bins(self._cap) if self.rank == "gittins" else None
        self._pooled = (_pooled_residuals(self.profile)
                        if self.profile is not None and self.rank == "gittins" else None)
        if self.profile is None:
            self._sigma0 = _calibrate_sigma(output.astype(float), self.mae, rng)
        if self.at_arrival is None:
            return None, None
        arrival = (self.at_arrival if self.at_arrival.rank == self.rank
                   else replace(self.at_arrival, rank=self.rank))
        return arrival.initial(output, rng, max_new_tokens)[0], None

    def refresh(self, ids: np.ndarray | None, true_remaining: np.ndarray, age: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """Predicted remaining tokens (or their Gittins rank) for requests `ids` of these
        ages (age 0: at prefill); each id at most once per call."""
        true_remaining = np.asarray(true_remaining, float)
        age = np.asarray(age, float)
        n = len(true_remaining)
        if self.profile is not None:
            if self.corr_tokens == 0 or ids is None:
                u = rng.random(n)
            else:
                import torch

                z = self._latent(ids, age, rng.standard_normal(n))
                u = torch.special.ndtr(torch.from_numpy(z)).numpy()
            pred = np.maximum(true_remaining + self._residuals(true_remaining, age, u), 0.0)
        else:
            sigma = self._sigma0 / np.sqrt(1.0 + age / 32.0)
            z = self._latent(ids, age, rng.standard_normal(n))
            pred = true_remaining * np.exp(sigma * z)
        if self.rank == "mean" or n == 0:
            return pred
        cap = np.maximum(self._cap - age, 0.0)
        if self.profile is None:
            q = lognormal_belief(pred, sigma, self._edges)
        else:
            q = self._profile_belief(pred, age)
        return gittins_ranks(q, self._edges, cap)

    def _latent(self, ids: np.ndarray | None, age: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """The AR(1) step of each request's latent error (eps itself when uncorrelated)."""
        if self.corr_tokens == 0 or ids is None:
            return eps
        ids = np.asarray(ids, np.int64)
        if len(ids) and ids.min() < 0:
            raise ValueError("request ids must be >= 0")
        if len(ids) and ids.max() >= len(self._z):
            grow = int(ids.max()) + 1 - len(self._z)
            self._z = np.concatenate([self._z, np.zeros(grow)])
            self._last_age = np.concatenate([self._last_age, np.full(grow, np.nan)])
        prev = self._last_age[ids]
        seen = np.isfinite(prev)
        a = np.exp(-np.maximum(age - np.where(seen, prev, age), 0.0) / self.corr_tokens)
        z = np.where(seen, a * self._z[ids] + np.sqrt(1.0 - a * a) * eps, eps)
        self._z[ids] = z
        self._last_age[ids] = age
        return z

    def _residuals(self, true_remaining: np.ndarray, age: np.ndarray,
                   u: np.ndarray) -> np.ndarray:
        prof = self.profile
        age_edges = np.asarray(prof["age_edges"], float)
        bin_edges = np.asarray(prof["bin_edges"], float)
        cells = {(c["age_bucket"], c["true_bin"]): np.asarray(c["residual_quantiles"])
                 for c in prof["cells"]}
        qs = np.asarray(prof["quantiles"], float)
        a = _age_bucket(age_edges, age)
        b = np.clip(np.searchsorted(bin_edges, true_remaining, side="right") - 1, 0,
                    len(bin_edges) - 2)
        out = np.zeros(len(true_remaining))
        for i, key in enumerate(zip(a.tolist(), b.tolist())):
            q = cells.get(key)
            if q is None:  # an empty cell: the nearest age bucket with data for this bin
                near = [k for k in cells if k[1] == key[1]]
                q = cells[min(near, key=lambda k: abs(k[0] - key[0]))] if near else None
            out[i] = 0.0 if q is None else np.interp(u[i], qs, q)
        return out

    def _profile_belief(self, pred: np.ndarray, age: np.ndarray) -> np.ndarray:
        """q [B, K]: R = max(prediction − residual, 0), residual ~ the age bucket's pooled
        residual quantiles (equal-weight points), histogrammed onto the belief bins."""
        edges = self._edges
        k = len(edges) - 1
        a = _age_bucket(np.asarray(self.profile["age_edges"], float), age)
        points = pred[:, None] - self._pooled[a]                  # [B, M]
        idx = np.clip(np.searchsorted(edges, points, side="right") - 1, 0, k - 1)
        flat = (np.arange(len(pred))[:, None] * k + idx).ravel()
        return np.bincount(flat, minlength=len(pred) * k).reshape(len(pred), k).astype(float)


def _age_bucket(age_edges: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Index of each age's bucket in an error profile (ages below 1 count as 1)."""
    return np.clip(np.searchsorted(age_edges, np.maximum(age, 1), side="right") - 1, 0,
                   len(age_edges) - 1)


def _pooled_residuals(profile: dict[str, Any], points: int = 64) -> np.ndarray:
    """[age buckets, points]: each age bucket's residual quantiles at levels (j + ½)/points,
    pooled over true bins weighted by their `count` (1 where absent); a bucket without cells
    borrows the nearest one that has some."""
    qs = np.asarray(profile["quantiles"], float)
    levels = (np.arange(points) + 0.5) / points
    buckets = len(profile["age_edges"])
    pooled: dict[int, np.ndarray] = {}
    for a in range(buckets):
        cells = [c for c in profile["cells"] if c["age_bucket"] == a]
        if not cells:
            continue
        values = np.concatenate([np.interp(levels, qs, c["residual_quantiles"]) for c in cells])
        weights = np.concatenate([np.full(points, float(c.get("count", 1))) for c in cells])
        order = np.argsort(values, kind="stable")
        cum = (np.cumsum(weights[order]) - weights[order] / 2) / weights.sum()
        pooled[a] = np.interp(levels, cum, values[order])
    if not pooled:
        raise ValueError("the error profile has no cells")
    return np.stack([pooled[min(pooled, key=lambda b: (abs(b - a), b))]
                     for a in range(buckets)])


@dataclass
class LTR:
    """Scores whose Kendall τ with the true length is about `tau` (lower runs first)."""

    tau: float = 0.6
    name: str = "ltr"
    refreshes = False

    def initial(self, output: np.ndarray, rng: np.random.Generator,
                max_new_tokens: int | None = None) -> tuple[None, np.ndarray]:
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

    def refresh(self, ids: np.ndarray | None, true_remaining: np.ndarray, age: np.ndarray,
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
