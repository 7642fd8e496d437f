"""Remaining-length bins and the per-token transition between them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from trail.checks import as_integer

# The GPU kernel holds one distribution in registers (trail.kernels.probe_triton), and the
# transition is K x K: more bins than this would not run there and buy nothing.
MAX_BINS = 1024


@dataclass(frozen=True)
class Bins:
    """Bin edges e_0 = 0 < e_1 < … < e_K over remaining output tokens.

    Bin i holds remaining lengths in [e_i, e_{i+1}); lengths at or beyond e_K count in the
    last bin. `centers` are the bins' midpoints, the values a prediction averages over.
    """

    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        if isinstance(self.edges, (str, bytes)) or not hasattr(self.edges, "__len__"):
            raise TypeError(f"Bins: edges must be a sequence of numbers, got {self.edges!r:.80}")
        if len(self.edges) > MAX_BINS + 1:
            raise ValueError(f"Bins: {len(self.edges) - 1} bins, at most {MAX_BINS} are allowed")
        e = tuple(_real(x, f"edges[{i}]") for i, x in enumerate(self.edges))
        object.__setattr__(self, "edges", e)  # a tuple of floats: hashable, cached by value
        if len(e) < 2:
            raise ValueError(f"bins need at least 2 edges, got {list(e)}")
        if e[0] != 0 or any(not math.isfinite(x) for x in e):
            raise ValueError(f"bin edges must start at 0 and be finite, got {list(e)}")
        if any(b <= a for a, b in zip(e, e[1:])):
            raise ValueError(f"bin edges must increase strictly, got {list(e)}")
        if e[1] < 1:
            raise ValueError(f"the first bin must be at least one token wide, got {list(e)}")
        # The probe kernels hold edges and centers in float32: they must stay finite and
        # strictly increasing there, or a Probe would fail (or rank wrongly) at serving time.
        with np.errstate(over="ignore"):
            e32 = [float(x) for x in np.asarray(e, np.float64).astype(np.float32)]
        if not math.isfinite(e32[-1]) or any(b <= a for a, b in zip(e32, e32[1:])):
            raise ValueError(f"bin edges must stay finite and strictly increasing in float32 "
                             f"(the probe kernels' precision), got {list(e)}")

    @staticmethod
    def uniform(k: int = 10, max_len: float = 512.0) -> "Bins":
        """K equal bins over [0, max_len] (the paper: 10 bins over 0..512)."""
        k = _count(k, "k")
        max_len = _real(max_len, "max_len")
        if not 1 <= k <= MAX_BINS or not (max_len > 0 and math.isfinite(max_len)):
            raise ValueError(f"uniform bins need k in [1, {MAX_BINS}] and a finite max_len > 0, "
                             f"got k={k}, max_len={max_len}")
        return Bins(tuple(max_len * i / k for i in range(k + 1)))

    @staticmethod
    def geometric(k: int = 10, first: float = 2.0, ratio: float = 2.0) -> "Bins":
        """Edges 0, first, first·ratio, first·ratio², …: fine bins for short remainders."""
        k = _count(k, "k")
        first, ratio = _real(first, "first"), _real(ratio, "ratio")
        if not 1 <= k <= MAX_BINS or not (first >= 1 and math.isfinite(first)) or not (
                ratio > 1 and math.isfinite(ratio)):
            raise ValueError(f"geometric bins need k in [1, {MAX_BINS}], finite first >= 1 and "
                             f"ratio > 1, "
                             f"got k={k}, first={first}, ratio={ratio}")
        try:
            edges = tuple(first * ratio**i for i in range(k))
        except OverflowError:
            raise ValueError(f"geometric bins: the last edge first * ratio**(k - 1) = "
                             f"{first} * {ratio}**{k - 1} overflows") from None
        return Bins((0.0,) + edges)

    @property
    def k(self) -> int:
        """Number of bins."""
        return len(self.edges) - 1

    @property
    def widths(self) -> torch.Tensor:
        """Bin widths in tokens (float64)."""
        e = torch.tensor(self.edges, dtype=torch.float64)
        return e[1:] - e[:-1]

    @property
    def centers(self) -> torch.Tensor:
        """Bin midpoints in tokens (float32)."""
        e = torch.tensor(self.edges, dtype=torch.float64)
        return ((e[1:] + e[:-1]) / 2).float()

    def index(self, remaining: torch.Tensor) -> torch.Tensor:
        """Bin index of each remaining length (lengths past the last edge go to the last bin)."""
        e = torch.tensor(self.edges[1:-1], dtype=torch.float64)
        return torch.bucketize(remaining.to(torch.float64), e, right=True)

    def transition(self, tokens: int = 1) -> torch.Tensor:
        """Tᵏ for k = `tokens`: one token moves bin i down one bin with probability 1/width_i.

        Bin 0 absorbs. Rows sum to 1; float32 [K, K].
        """
        tokens = _count(tokens, "tokens")
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        return _transition_power(self.edges, tokens).clone()


def _real(value: object, name: str) -> float:
    """A real number (not a bool or a string); TypeError naming `name` otherwise."""
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"Bins: {name} must be a real number, got {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        text = str(value)
        text = text if len(text) <= 40 else f"{text[:20]}...{text[-10:]}"
        raise ValueError(f"Bins: {name}={text} is out of the range of a float") from None
    except (TypeError, ValueError):
        raise TypeError(f"Bins: {name} must be a real number, got {value!r}") from None


def _count(value: object, name: str) -> int:
    """An integer (not a bool, not a float: 2.5 tokens is not silently 2); TypeError otherwise."""
    return as_integer(value, f"Bins: {name}")


@lru_cache(maxsize=256)
def _transition_power(edges: tuple[float, ...], tokens: int) -> torch.Tensor:
    e = torch.tensor(edges, dtype=torch.float64)
    w = e[1:] - e[:-1]
    k = len(w)
    t = torch.zeros(k, k, dtype=torch.float64)
    down = torch.clamp(1.0 / w, max=1.0)
    for i in range(k):
        if i == 0:
            t[0, 0] = 1.0
        else:
            t[i, i] = 1.0 - down[i]
            t[i, i - 1] = down[i]
    return torch.linalg.matrix_power(t, tokens).float()
