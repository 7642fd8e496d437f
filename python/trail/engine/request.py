"""A request as the engine tracks it, and the record it returns when the request ends."""

from __future__ import annotations

from dataclasses import dataclass, field

from trail.engine.sampling import Sampler, SamplingParams


@dataclass(frozen=True)
class RequestOutput:
    """A finished (or aborted) request: its tokens, timings (engine clock, s) and predictions."""

    rid: int
    prompt_ids: list[int]
    output_ids: list[int]
    arrival: float
    first_token_time: float | None
    finish_time: float
    preemptions: int
    predictions: list[float]     # predicted remaining tokens after each prediction
    finish_reason: str           # "stop", "length" or "aborted"
    prediction_tokens: list[int] = field(default_factory=list)  # generated at each prediction


@dataclass
class Request:
    """Engine-side state of a live request."""

    rid: int
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int          # params.max_new_tokens, capped by max_model_len
    arrival: float
    sampler: Sampler
    output_ids: list[int] = field(default_factory=list)
    first_token_time: float | None = None
    preemptions: int = 0
    predictions: list[float] = field(default_factory=list)
    probe_slot: int | None = None
    predicted_at: int = 0        # tokens generated when the probe last predicted
    prediction_tokens: list[int] = field(default_factory=list)
    computed: int = 0            # tokens whose K/V the engine's cache holds (vLLM's name)

    def finish(self, now: float, reason: str) -> RequestOutput:
        """The public record of this request."""
        return RequestOutput(self.rid, list(self.prompt_ids), list(self.output_ids), self.arrival,
                             self.first_token_time, now, self.preemptions, list(self.predictions),
                             reason, list(self.prediction_tokens))
