"""The OpenAI API's request bodies as the server accepts them, and its error format.

Fields follow OpenAI's completions and chat completions, with vLLM's extensions that its
benchmark client sends (`ignore_eos`, `stop_token_ids`) and its per-request hints
(`vllm_xargs`: here `trail_predicted_len`, the output length the scheduler ranks the request
by at arrival, as vLLM's TRAIL plug-in takes it). Known fields are type-checked strictly;
unknown fields are ignored, as vLLM does. A field the server cannot honour (n > 1, logprobs,
echo, best_of) is refused with 400 naming it, never silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

TokenId = Annotated[int, Field(strict=True, ge=0)]


class StreamOptions(BaseModel):
    """What a streamed response adds: a last chunk with the usage counts."""

    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class TrailHints(BaseModel):
    """Per-request hints for the scheduler (vLLM's `vllm_xargs`)."""

    model_config = ConfigDict(extra="forbid")
    trail_predicted_len: float | None = Field(None, ge=0, allow_inf_nan=False)


class SamplingFields(BaseModel):
    """What completions and chat completions share."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    max_tokens: StrictInt | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0, le=100, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    seed: StrictInt | None = Field(None, ge=0, lt=2**64)
    stop: StrictStr | list[StrictStr] | None = None
    stop_token_ids: list[TokenId] | None = None
    ignore_eos: StrictBool = False
    n: StrictInt = Field(1, ge=1)
    # sampling controls the engine does not have: accepted at their neutral values only
    # (vllm bench serve sends repetition_penalty = 1)
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    top_k: StrictInt | None = None
    min_p: float = 0.0
    best_of: StrictInt | None = None
    logprobs: Any = None
    echo: StrictBool = False
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    vllm_xargs: TrailHints | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(field, why) for a field set to something this server does not do."""
        if self.n != 1:
            return "n", "only n = 1 is supported"
        if self.best_of not in (None, 1):
            return "best_of", "only best_of = 1 is supported"
        if self.logprobs not in (None, False, 0):
            return "logprobs", "log probabilities are not supported"
        if self.echo:
            return "echo", "echo is not supported"
        for name, neutral in (("repetition_penalty", 1.0), ("frequency_penalty", 0.0),
                              ("presence_penalty", 0.0), ("min_p", 0.0)):
            if getattr(self, name) != neutral:
                return name, f"only {neutral:g} is supported"
        if self.top_k not in (None, 0, -1):
            return "top_k", "only top_k = -1 (off) is supported"
        return None

    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings, as a tuple (empty strings dropped)."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stop if s)

    def predicted_len(self) -> float | None:
        """The client's hint of the output length, if it gave one."""
        return None if self.vllm_xargs is None else self.vllm_xargs.trail_predicted_len


class CompletionRequest(SamplingFields):
    """POST /v1/completions: one prompt, as text or token ids."""

    prompt: StrictStr | list[TokenId]
    max_tokens: StrictInt | None = Field(16, gt=0)  # OpenAI's default for completions


class ChatMessage(BaseModel):
    """One turn of a conversation; content as text or as a list of text parts."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The turn's text (the text parts joined)."""
        if isinstance(self.content, str) or self.content is None:
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions: a conversation, formatted by the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, gt=0)

    def token_budget(self) -> int | None:
        """max_completion_tokens (OpenAI's newer name) or max_tokens."""
        return self.max_completion_tokens if self.max_completion_tokens is not None \
            else self.max_tokens


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error",
               code: int | None = None) -> dict[str, Any]:
    """An error in OpenAI's format."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def validation_param(loc: tuple[Any, ...]) -> str | None:
    """The field an error location names ('body', 'max_tokens', 'vllm_xargs.trail_predicted_len';
    None for the body as a whole)."""
    parts = [str(p) for p in loc if p != "body"]
    # pydantic names the member of a union it tried (e.g. 'str', 'list[int]'): not a field
    parts = [p for p in parts if not (p in ("str", "int") or p.startswith(("list[", "function")))]
    return ".".join(parts) or None
