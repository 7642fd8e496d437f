"""One engine, many clients: the engine steps in a thread of its own; requests join and leave
between steps through an inbox; each step's new text goes to its client's queue.

The engine is not thread-safe, so only the loop's thread touches it: clients submit and
abort through the inbox (a thread-safe queue), and read their request's deltas from an
asyncio queue that the loop fills with `call_soon_threadsafe`. A request whose client
disconnects is aborted at the next step, freeing its KV blocks and probe slot.

What one bad request may do to the others is bounded:
- bad input fails its own `submit` (ValueError from `Engine.add_request`) and queues nothing;
- a step that raises is retried (the engine leaves every request consistent); one that fails
  `max_step_failures` times in a row ends the requests of that batch with an error and the
  loop serves on;
- a failure in one request's text (detokenization) ends that request only.
The number of requests waiting for their first token is bounded (`max_waiting`): past it
`submit` raises `QueueFull`, and the server answers 503 instead of queueing without limit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import trail_ext as te
from trail.engine import Engine, RequestOutput, SamplingParams
from trail.serve.metrics import ServerMetrics
from trail.serve.text import TextStream


class QueueFull(Exception):
    """The server holds `max_waiting` requests that have not started: try again later."""


class ShuttingDown(Exception):
    """The server is stopping and admits no new request."""


@dataclass
class Delta:
    """What a request produced since its last delta: new text, and how it ended (if it did)."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None   # "stop" or "length"; None while it runs
    error: str | None = None           # the request failed: why


@dataclass
class Stream:
    """A submitted request as its client sees it: deltas arrive on `queue`."""

    prompt_tokens: int
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    rid: int | None = None
    done: bool = False                 # the last delta was delivered to the queue
    submitted: float = field(default_factory=time.perf_counter)

    async def next(self, timeout: float | None = None) -> Delta:
        """The next delta; asyncio.TimeoutError after `timeout` seconds without one."""
        delta = await asyncio.wait_for(self.queue.get(), timeout)
        if delta.finish_reason is not None or delta.error is not None:
            self.done = True
        return delta


@dataclass
class _Live:
    """The loop's side of a running request."""

    stream: Stream
    text: TextStream
    stop_ids: tuple[int, ...]
    sent_tokens: int = 0
    first_token: float | None = None


class EngineLoop:
    """Runs `engine` in its own thread for concurrent clients (see the module's doc)."""

    def __init__(self, engine: Engine, tokenizer: Any, metrics: ServerMetrics | None = None,
                 max_waiting: int = 256, max_step_failures: int = 3) -> None:
        for name, v in (("max_waiting", max_waiting), ("max_step_failures", max_step_failures)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"EngineLoop: {name}={v!r} must be a positive int")
        self.engine, self.tokenizer = engine, tokenizer
        self.metrics = metrics if metrics is not None else ServerMetrics()
        self.max_waiting, self.max_step_failures = max_waiting, max_step_failures
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._live: dict[int, _Live] = {}      # only the loop's thread touches it
        self._lock = threading.Lock()
        self._not_started = 0                   # submitted, no first token yet (under _lock)
        self._closing = False
        self._failures = 0
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what stopped the loop's thread, if anything

    # ------------------------------------------------------------------ the clients' side

    def start(self, aloop: asyncio.AbstractEventLoop) -> None:
        """Start stepping; deltas are delivered on the event loop `aloop`."""
        if self._thread is not None:
            raise RuntimeError("EngineLoop.start: already started")
        self._aloop = aloop
        self._thread = threading.Thread(target=self._run, name="trail-engine", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the loop's thread is serving."""
        return self._thread is not None and self._thread.is_alive() and not self._closing

    async def submit(self, prompt_ids: Sequence[int], params: SamplingParams,
                     stop: Sequence[str] = (), predicted_len: float = math.nan) -> Stream:
        """Queue a request; its deltas arrive on the returned stream. Raises QueueFull,
        ShuttingDown, or the engine's ValueError / TypeError for bad input."""
        stream = Stream(prompt_tokens=len(prompt_ids))
        added: concurrent.futures.Future[int] = concurrent.futures.Future()
        # under the lock, so no request is queued after the loop has taken its last one
        with self._lock:
            if not self.alive:
                raise ShuttingDown("the server is shutting down")
            if self._not_started >= self.max_waiting:
                self.metrics.rejected.labels("queue_full").inc()
                raise QueueFull(f"{self._not_started} requests are waiting to start "
                                f"(--max-waiting {self.max_waiting})")
            self._not_started += 1
            self._inbox.put(("add", stream, list(prompt_ids), params, tuple(stop),
                             float(predicted_len), added))
        try:
            await asyncio.wrap_future(added)  # the loop sets stream.rid, or the error
        except asyncio.CancelledError:
            self.abort(stream)  # the client left before its request was queued: the abort
            raise               # follows the add through the inbox, so it finds the request
        return stream

    def abort(self, stream: Stream) -> None:
        """End `stream`'s request at the next step (its client is gone); no more deltas."""
        if not stream.done:
            self._inbox.put(("abort", stream))

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop admitting; end what still runs (each gets an error delta) and stop the
        thread, waiting at most `timeout` seconds for the step in progress."""
        with self._lock:
            self._closing = True
        self._inbox.put(("stop",))
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, timeout)

    # ------------------------------------------------------------------ the loop's thread

    def _run(self) -> None:
        try:
            while self._drain(block=not self.engine.has_unfinished()):
                if not self.engine.has_unfinished():
                    self._observe()  # requests may have left (aborted) without a step
                    continue
                try:
                    finished = self.engine.step()
                except Exception as exc:  # noqa: BLE001 - one bad step must not stop serving
                    self._step_failed(exc)
                    continue
                self._failures = 0
                self._publish(finished)
                self._observe()
        except BaseException as exc:  # the loop itself broke: no client may hang on it
            self.error = exc
            with self._lock:
                self._closing = True
            self._end_all(f"the engine loop stopped: {type(exc).__name__}: {exc}")
            self._refuse_pending()
            raise
        self._end_all("the server is shutting down")
        self._refuse_pending()

    def _refuse_pending(self) -> None:
        """Requests still in the inbox once the loop has stopped: refused, never left
        waiting."""
        while True:
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return
            if cmd[0] == "add":
                self._started()
                cmd[-1].set_exception(ShuttingDown("the server is shutting down"))

    def _drain(self, block: bool) -> bool:
        """Carry out the inbox's commands; False once asked to stop. Blocks for the first
        command when the engine is idle (no spinning)."""
        while True:
            try:
                cmd = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            except queue.Empty:
                if block and not self._closing:
                    continue
                return not self._closing
            block = False
            kind = cmd[0]
            if kind == "stop":
                return False
            if kind == "add":
                self._add(*cmd[1:])
            elif kind == "abort":
                self._abort(cmd[1])

    def _add(self, stream: Stream, prompt: list[int], params: SamplingParams,
             stop: tuple[str, ...], predicted_len: float,
             added: concurrent.futures.Future[int]) -> None:
        try:
            rid = self.engine.add_request(prompt, params, predicted_len=predicted_len)
        except Exception as exc:  # noqa: BLE001 - the client gets its own error
            self._started()
            added.set_exception(exc)
            return
        self._live[rid] = _Live(stream, TextStream(self.tokenizer, stop),
                                params.stop_token_ids)
        stream.rid = rid
        self.metrics.prompt_tokens.inc(len(prompt))
        added.set_result(rid)

    def _abort(self, stream: Stream) -> None:
        live = self._live.pop(stream.rid, None) if stream.rid is not None else None
        if live is None:
            return  # finished meanwhile
        if live.first_token is None:
            self._started()
        self.engine.abort(stream.rid)
        self.metrics.finished.labels("abort").inc()

    def _publish(self, finished: list[RequestOutput]) -> None:
        """Each live request's new text (and its end) to its client."""
        done = {o.rid: o for o in finished}
        now = time.perf_counter()
        new_tokens = 0
        for rid, live in list(self._live.items()):
            out = done.get(rid)
            try:
                ids = (out.output_ids[live.sent_tokens:] if out is not None
                       else self.engine.output_ids(rid, live.sent_tokens))
                if not ids:
                    continue
                new_tokens += len(ids)
                live.sent_tokens += len(ids)
                reason = out.finish_reason if out is not None else None
                if reason == "stop" and ids[-1] in live.stop_ids:
                    ids = ids[:-1]  # a stop token's own text is not part of the answer
                live.text.push(ids)
                if live.text.stopped and out is None:  # a stop string: end it here
                    out = self.engine.abort(rid, reason="stop")
                    reason = "stop"
                piece = live.text.release(final=reason is not None)
            except Exception as exc:  # noqa: BLE001 - this request's fault, not the others'
                self._fail(rid, f"{type(exc).__name__}: {exc}")
                continue
            if live.first_token is None:
                live.first_token = now
                self._started()
                self.metrics.ttft.observe(now - live.stream.submitted)
            self._deliver(live.stream, Delta(piece, live.sent_tokens, reason))
            if reason is not None:
                del self._live[rid]
                self.metrics.request_done(out, reason, now - live.stream.submitted,
                                          now - live.first_token)
        self.metrics.generation_tokens.inc(new_tokens)

    def _observe(self) -> None:
        probe = self.engine.probe
        self.metrics.step(self.engine.scheduler.stats(), len(self.engine.faults),
                          self.engine.kv.used_blocks, 0 if probe is None else probe.slots_in_use)

    def _step_failed(self, exc: Exception) -> None:
        """A step raised: retry it; after `max_step_failures` in a row, end its batch."""
        self._failures += 1
        self.metrics.step_failures.inc()
        if self._failures < self.max_step_failures:
            return
        self._failures = 0
        batch = [rid for rid in self._live
                 if self.engine.scheduler.get(rid).state == te.RequestState.RUNNING]
        for rid in batch or list(self._live):
            self._fail(rid, f"the engine failed {self.max_step_failures} times serving this "
                            f"request's batch: {type(exc).__name__}: {exc}")

    def _fail(self, rid: int, message: str) -> None:
        """End one request with an error (its client is told)."""
        live = self._live.pop(rid, None)
        if live is None:
            return
        if live.first_token is None:
            self._started()
        try:
            self.engine.abort(rid)
        except KeyError:
            pass  # the engine had already retired it
        self.metrics.finished.labels("error").inc()
        self._deliver(live.stream, Delta("", live.sent_tokens, None, error=message))

    def _end_all(self, message: str) -> None:
        for rid in list(self._live):
            self._fail(rid, message)

    def _deliver(self, stream: Stream, delta: Delta) -> None:
        assert self._aloop is not None
        try:
            self._aloop.call_soon_threadsafe(stream.queue.put_nowait, delta)
        except RuntimeError:
            pass  # the event loop is closed: nobody is listening any more

    def _started(self) -> None:
        with self._lock:
            self._not_started -= 1
