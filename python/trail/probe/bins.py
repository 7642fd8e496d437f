"""Remaining-length bins and the per-token transition between them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class Bins:
    """Bin edges e_0 = 0 < e_1 < … < e_K over remaining output tokens.

    Bin i holds remaining lengths in [e_i, e_{i+1}); lengths at or beyond e_K count in the
    last bin. `centers` are the bins' midpoints, the values a prediction averages over.
    """

    edges: tuple[float, ...]

    def __post_init__(self) -> None:
        e = self.edges
        if len(e) < 2:
            raise ValueError(f"bins need at least 2 edges, got {list(e)}")
        if e[0] != 0 or any(not math.isfinite(x) for x in e):
            raise ValueError(f"bin edges must start at 0 and be finite, got {list(e)}")
        if any(b <= a for a, b in zip(e, e[1:])):
            raise ValueError(f"bin edges must increase strictly, got {list(e)}")
        if e[1] < 1:
            raise ValueError(f"the first bin must be at least one token wide, got {list(e)}")

    @staticmethod
    def uniform(k: int = 10, max_len: float = 512.0) -> "Bins":
        """K equal bins over [0, max_len] (the paper: 10 bins over 0..512)."""
        if k < 1 or not max_len > 0:
            raise ValueError(f"uniform bins need k >= 1 and max_len > 0, got {k}, {max_len}")
        return Bins(tuple(max_len * i / k for i in range(k + 1)))

    @staticmethod
    def geometric(k: int = 10, first: float = 2.0, ratio: float = 2.0) -> "Bins":
        """Edges 0, first, first·ratio, first·ratio², …: fine bins for short remainders."""
        if k < 1 or not first >= 1 or not ratio > 1:
            raise ValueError(f"geometric bins need k >= 1, first >= 1, ratio > 1, "
                             f"got {k}, {first}, {ratio}")
        return Bins((0.0,) + tuple(first * ratio**i for i in range(k)))

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
        if tokens < 0:
            raise ValueError(f"tokens must be >= 0, got {tokens}")
        return _transition_power(self.edges, int(tokens)).clone()


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
