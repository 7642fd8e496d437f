"""The HTTP side: an OpenAI-compatible ASGI app (FastAPI) over one `EngineLoop`.

Routes: POST /v1/completions, POST /v1/chat/completions (both streamed as server-sent events
ending with `data: [DONE]`, or not), GET /v1/models, GET /health, GET /metrics (Prometheus).
Every client error is a 400 (404 for an unknown model) with an OpenAI-style body naming the
field; a full queue is a 503 with Retry-After; a client that disconnects has its request
aborted at the engine's next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from trail.engine import SamplingParams
from trail.models import encode_chat, has_chat_template
from trail.serve.loop import Delta, EngineLoop, QueueFull, ShuttingDown, Stream
from trail.serve.protocol import (ChatCompletionRequest, CompletionRequest, SamplingFields, error_body,
                                  validation_param)

# How often a non-streaming request checks that its client is still there (seconds).
DISCONNECT_POLL_S = 0.5


@dataclass
class Served:
    """What the app serves: the model's name and tokenizer, and the engine loop."""

    name: str
    tokenizer: Any
    loop: EngineLoop
    max_model_len: int
    stop_ids: tuple[int, ...] = ()                    # the tokens that end an answer
    predict: Callable[[str], float] | None = None     # a prompt-only length prediction
    shutdown_timeout: float = 10.0
    retry_after_s: int = 1                            # advice on a 503


class ClientError(Exception):
    """A request the server refuses: `status`, the field at fault and why."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.param, self.status, self.kind = param, status, kind


def build_app(served: Served) -> FastAPI:
    """The ASGI app serving `served` (its engine loop starts and stops with the app)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        served.loop.start(asyncio.get_running_loop())
        yield
        await served.loop.shutdown(served.shutdown_timeout)

    app = FastAPI(title="trail serve", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = validation_param(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            param, msg = None, f"the body is not valid JSON: {first.get('msg', '')}"
        else:
            msg = f"{param}: {first.get('msg', 'invalid')}" if param else first.get("msg", "")
        return JSONResponse(error_body(msg, param, code=400), status_code=400)

    @app.exception_handler(ClientError)
    async def _refused(_: Request, exc: ClientError) -> JSONResponse:
        headers = {"Retry-After": str(served.retry_after_s)} if exc.status == 503 else None
        return JSONResponse(error_body(str(exc), exc.param, exc.kind, exc.status),
                            status_code=exc.status, headers=headers)

    @app.get("/health")
    async def health() -> Response:
        if not served.loop.alive:
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        m = served.loop.metrics
        return Response(m.render(), media_type=m.content_type)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": served.name, "object": "model",
                                            "created": 0, "owned_by": "trail",
                                            "max_model_len": served.max_model_len}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        _check_common(served, body)
        if isinstance(body.prompt, str):
            prompt = [int(t) for t in served.tokenizer(body.prompt)["input_ids"]]
            text = body.prompt
        else:
            prompt, text = list(body.prompt), None
        if not prompt:
            raise ClientError("prompt: empty (a request needs at least one token)", "prompt")
        return await _serve(served, request, body, prompt, text, body.max_tokens, "prompt",
                            chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        _check_common(served, body)
        if not has_chat_template(served.tokenizer):
            raise ClientError(f"model {served.name} has no chat template: use /v1/completions",
                              "messages")
        try:
            turns = [{"role": m.role, "content": m.text()} for m in body.messages]
        except ValueError as exc:
            raise ClientError(f"messages: {exc}", "messages") from None
        prompt = encode_chat(served.tokenizer, turns)
        text = "\n".join(t["content"] for t in turns if t["role"] == "user")
        return await _serve(served, request, body, prompt, text, body.token_budget(),
                            "messages", chat=True)

    return app


def _check_common(served: Served, body: SamplingFields) -> None:
    if body.model is not None and body.model != served.name:
        raise ClientError(f"model {body.model!r} is not served here (this server serves "
                          f"{served.name!r})", "model", 404, "not_found_error")
    bad = body.unsupported()
    if bad is not None:
        raise ClientError(f"{bad[0]}: {bad[1]}", bad[0])


async def _serve(served: Served, request: Request, body: SamplingFields, prompt: list[int],
                 text: str | None, max_tokens: int | None, prompt_field: str, chat: bool
                 ) -> Response:
    """Queue the request and answer it, streamed or whole."""
    room = served.max_model_len - len(prompt)
    if room < 1:
        raise ClientError(f"{prompt_field}: {len(prompt)} tokens leave no room to generate "
                          f"within the model's context of {served.max_model_len} tokens",
                          prompt_field)
    if max_tokens is not None and max_tokens > room:
        raise ClientError(f"max_tokens: {max_tokens} new tokens after a prompt of "
                          f"{len(prompt)} exceed the model's context of "
                          f"{served.max_model_len} tokens (at most {room})", "max_tokens")
    stops = tuple(body.stop_token_ids or ()) + (() if body.ignore_eos else served.stop_ids)
    params = SamplingParams(max_new_tokens=max_tokens or room, temperature=body.temperature,
                            top_p=body.top_p, seed=body.seed,
                            stop_token_ids=tuple(dict.fromkeys(stops)))
    predicted = body.predicted_len()
    if predicted is None and served.predict is not None and text is not None:
        predicted = await asyncio.get_running_loop().run_in_executor(None, served.predict, text)
    try:
        stream = await served.loop.submit(prompt, params, body.stop_strings(),
                                          math.nan if predicted is None else predicted)
    except QueueFull as exc:
        raise ClientError(f"the server is at capacity: {exc}", None, 503,
                          "server_overloaded") from None
    except ShuttingDown as exc:
        raise ClientError(str(exc), None, 503, "server_unavailable") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise ClientError(f"{prompt_field}: {exc}", prompt_field) from None
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_sse(served, stream, rid, created, chat, include_usage),
                                 media_type="text/event-stream")
    return await _whole(served, request, stream, rid, created, chat)


def _usage(stream: Stream, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": stream.prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": stream.prompt_tokens + completion_tokens}


async def _whole(served: Served, request: Request, stream: Stream, rid: str, created: int,
                 chat: bool) -> Response:
    """Wait for the whole answer (aborting it if the client goes away)."""
    pieces: list[str] = []
    try:
        while True:
            try:
                delta = await stream.next(DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    served.loop.abort(stream)
                    return Response(status_code=499)
                continue
            if delta.error is not None:
                return JSONResponse(error_body(delta.error, None, "internal_error", 500),
                                    status_code=500)
            pieces.append(delta.text)
            if delta.finish_reason is not None:
                break
    finally:
        if not stream.done:
            served.loop.abort(stream)
    answer = "".join(pieces)
    choice: dict[str, Any] = ({"index": 0, "message": {"role": "assistant", "content": answer},
                               "logprobs": None, "finish_reason": delta.finish_reason}
                              if chat else
                              {"index": 0, "text": answer, "logprobs": None,
                               "finish_reason": delta.finish_reason})
    return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                         "created": created, "model": served.name, "choices": [choice],
                         "usage": _usage(stream, delta.completion_tokens)})


async def _sse(served: Served, stream: Stream, rid: str, created: int, chat: bool,
               include_usage: bool) -> AsyncIterator[str]:
    """The answer as server-sent events; the request is aborted if the client goes away
    (Starlette cancels this generator then)."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {"id": rid, "object": kind, "created": created, "model": served.name,
                "choices": choices, **extra}
        return f"data: {json.dumps(body)}\n\n"

    def choice(delta: Delta, first: bool) -> dict[str, Any]:
        if chat:
            content: dict[str, Any] = {"role": "assistant"} if first else {}
            if delta.text or first:
                content["content"] = delta.text
            return {"index": 0, "delta": content, "logprobs": None,
                    "finish_reason": delta.finish_reason}
        return {"index": 0, "text": delta.text, "logprobs": None,
                "finish_reason": delta.finish_reason}

    try:
        first = True
        while True:
            delta = await stream.next()
            if delta.error is not None:
                yield f"data: {json.dumps(error_body(delta.error, None, 'internal_error', 500))}\n\n"
                break
            if delta.text or delta.finish_reason is not None or first:
                yield chunk([choice(delta, first)])
                first = False
            if delta.finish_reason is not None:
                if include_usage:
                    yield chunk([], usage=_usage(stream, delta.completion_tokens))
                break
        yield "data: [DONE]\n\n"
    finally:
        if not stream.done:
            served.loop.abort(stream)
