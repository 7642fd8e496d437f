"""Sampling parameters and the per-request sampler."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trail.checks import is_finite_real, is_integer, is_real


@dataclass(frozen=True)
class SamplingParams:
    """How to generate for one request: greedy when temperature == 0."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) \
                or self.max_new_tokens <= 0:
            raise ValueError(f"SamplingParams: max_new_tokens must be a positive int, "
                             f"got {self.max_new_tokens!r}")
        if not (is_finite_real(self.temperature) and self.temperature >= 0):
            raise ValueError(f"SamplingParams: temperature must be finite and >= 0, "
                             f"got {self.temperature!r}")
        if not (is_real(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"SamplingParams: top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**64):
            raise ValueError(f"SamplingParams: seed must be an int in [0, 2**64) or None, "
                             f"got {self.seed!r}")
        stops = self.stop_token_ids
        if isinstance(stops, (str, bytes)) or not hasattr(stops, "__iter__") or any(
                not is_integer(t) or t < 0 for t in stops):
            raise ValueError(f"SamplingParams: stop_token_ids must be non-negative ints, "
                             f"got {stops!r:.80}")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in stops))


class Sampler:
    """Draws one request's tokens from its own generator.

    Each request owns its random stream and draws from it only when it samples a token, so
    batching, preemption and recomputation never change which tokens it gets.
    """

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator = torch.Generator()
        seed = params.seed if params.seed is not None else int(torch.seed() % (2**63))
        self.generator.manual_seed(seed)

    def sample(self, logits: torch.Tensor) -> int:
        """Next token from one row of logits [vocab]."""
        p = self.params
        if p.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.double() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < p.top_p  # always keeps the top one
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs.cpu(), 1, generator=self.generator))


def sample_batch(samplers: list[Sampler], logits: torch.Tensor) -> list[int]:
    """Next token of every row of logits [n, vocab], row i drawn by samplers[i].

    Greedy rows take one batched argmax; the others come to the host in one copy and draw
    from their own streams there, so a step waits on the device twice at most, not per row.
    """
    tokens = [0] * len(samplers)
    greedy = [i for i, s in enumerate(samplers) if s.params.temperature == 0]
    drawn = [i for i, s in enumerate(samplers) if s.params.temperature != 0]
    # All rows of a kind (the usual case) read the logits in place: no gathering copy.
    if greedy:
        rows = logits if len(greedy) == len(samplers) else logits[greedy]
        for i, t in zip(greedy, torch.argmax(rows, dim=-1).tolist()):
            tokens[i] = int(t)
    if drawn:
        host = (logits if len(drawn) == len(samplers) else logits[drawn]).cpu()
        for j, i in enumerate(drawn):
            tokens[i] = samplers[i].sample(host[j])
    return tokens
