"""The engine: a continuous-batching decoding loop over a Hugging Face causal LM.

Each `step()` runs its phases in order, each a method:
1. `_schedule`: `trail_ext.Scheduler.schedule(now)` decides the batch (admissions,
   preemptions, resumes, KV moves);
2. `_apply`: the engine carries the decision out on its paged KV cache (free dropped
   requests' blocks, copy swapped ones out and in, allocate what the batch needs) and lays
   out the rows: prompts of admitted requests, prompt + generated tokens of recomputed ones,
   the last token of every other;
3. the forward (`ModelRunner.forward`, with the probe layer's hidden states when due);
4. `_sample`: one token per request (`sample_batch`), reported to the scheduler;
5. `_commit`: the tokens join their requests;
6. postprocess: the probe (if any) refines predicted remaining lengths for the scheduler,
   the observer sees the step, and finished requests retire.
The engine never decides policy; the scheduler never touches tensors.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

import trail_ext as te
from trail import policies
from trail.checks import is_finite_real, is_integer
from trail.engine.clock import StepCost, StepShape, VirtualClock, WallClock
from trail.engine.report import Report, aggregate_outputs
from trail.engine.prefill_weight import PrefillWeightEstimator
from trail.engine.request import Request, RequestOutput
from trail.engine.runner import ModelRunner, SeqInput
from trail.engine.sampling import Sampler, SamplingParams, sample_batch
from trail.probe.probe import Probe
from trail.progress import progress_bar

# (seconds from the start, prompt ids, params), optionally followed by the predicted total
# output length the scheduler gets at arrival (e.g. from a prompt-only predictor; NaN:
# none) and then the LTR score (e.g. from trail.training.ltr; lower runs first).
Arrival = (tuple[float, Sequence[int], SamplingParams]
           | tuple[float, Sequence[int], SamplingParams, float]
           | tuple[float, Sequence[int], SamplingParams, float, float])


PROBE_RANKS = ("mean", "gittins")  # what EngineConfig.probe_rank may feed the scheduler


@dataclass
class EngineConfig:
    """Engine settings: the scheduler's (which also size the KV cache) and the probe's."""

    scheduler: te.SchedulerConfig
    probe: Probe | None = None
    # The probe refines every running request on every `predict_every`-th engine step (all
    # rows on the same steps, so one call's cost is shared); a request's first prediction
    # comes on the first such step from its prefill on.
    predict_every: int = 1
    # What the scheduler ranks running requests by: the posterior "mean" remaining length,
    # or the "gittins" rank of the probe's distribution (Probe.step_rank). Either way the
    # request's recorded predictions are the mean.
    probe_rank: str = "mean"
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    capture_layers: tuple[int, ...] = ()  # hidden states handed to Engine.observer
    # None: timings on the wall clock. A StepCost: a virtual clock that advances by that
    # cost per step (trail.engine.clock), so timings do not depend on the machine's load.
    step_cost: StepCost | None = None
    record_steps: bool = False  # keep (StepShape, wall seconds) per step in Engine.step_log
    # β of the scheduler's work-aware key: None keeps SchedulerConfig.prefill_weight; a
    # number sets it; "auto" learns it from this engine's own steps and keeps it current
    # (trail.engine.prefill_weight; from the StepCost on a virtual clock). See
    # Engine.prefill_weight_log.
    prefill_weight: float | str | None = None
    # The scheduler's preempt_margin: None keeps SchedulerConfig.preempt_margin; a number
    # sets it; "auto" follows the winner's curse of the prediction errors measured on this
    # engine's finished requests (trail.policies.PredictionErrors), and until they are
    # measured the margin of predictions that may be off by a whole generation cap, so no
    # gap between two predictions preempts. See Engine.preempt_margin_log.
    preempt_margin: float | str | None = None


@dataclass
class _Batch:
    """One step's rows as `_apply` lays them out for the forward."""

    running: list[int]                 # rids, in the scheduler's order
    reqs: list[Request]
    seqs: list[SeqInput] = field(default_factory=list)
    first: list[bool] = field(default_factory=list)  # prefilled from the prompt this step
    prefill_tokens: int = 0
    context_tokens: int = 0


@dataclass
class StepRecord:
    """What an observer sees after each step (e.g. `trail collect` storing embeddings)."""

    rids: list[int]                    # the batch
    generated: list[int]               # tokens generated after this step, per row
    first: list[bool]                  # the row was prefilled from its prompt this step
    finished: list[bool]               # the row finished this step
    hidden: dict[int, torch.Tensor]    # layer -> [n, D]: prompt mean (first rows) or last token


class Engine:
    """Serves requests on `model` with TRAIL's scheduler and (optionally) its probe."""

    def __init__(self, model: nn.Module, config: EngineConfig) -> None:
        if config.probe_rank not in PROBE_RANKS:
            raise ValueError(f"EngineConfig.probe_rank must be 'mean' or 'gittins', "
                             f"got {config.probe_rank!r}")
        if not is_integer(config.predict_every) or config.predict_every < 1:
            raise ValueError(f"EngineConfig.predict_every must be a positive int, "
                             f"got {config.predict_every!r}")
        if config.max_model_len is not None and not is_integer(config.max_model_len):
            raise TypeError(f"EngineConfig.max_model_len must be an int or None, "
                            f"got {config.max_model_len!r}")
        if not isinstance(config.capture_layers, (tuple, list)) or not all(
                is_integer(x) for x in config.capture_layers):
            raise TypeError(f"EngineConfig.capture_layers must be a tuple of ints, "
                            f"got {config.capture_layers!r:.80}")
        if not isinstance(config.scheduler, te.SchedulerConfig):
            raise TypeError(f"EngineConfig.scheduler must be a trail_ext.SchedulerConfig, "
                            f"got {type(config.scheduler).__name__}")
        if config.probe is not None and not isinstance(config.probe, Probe):
            raise TypeError(f"EngineConfig.probe must be a trail.Probe or None, "
                            f"got {type(config.probe).__name__}")
        limit = getattr(model.config, "max_position_embeddings", None)
        max_len = config.max_model_len if config.max_model_len is not None else limit
        if max_len is None:
            raise ValueError("EngineConfig.max_model_len is needed: the model's config has no "
                             "max_position_embeddings")
        if max_len < 2 or (limit is not None and max_len > limit):
            raise ValueError(f"EngineConfig.max_model_len={max_len} must be in [2, {limit}] "
                             "(the model's max_position_embeddings)")
        if config.step_cost is not None and not isinstance(config.step_cost, StepCost):
            raise TypeError(f"EngineConfig.step_cost must be a StepCost or None, "
                            f"got {type(config.step_cost).__name__}")
        for name in ("prefill_weight", "preempt_margin"):
            v = getattr(config, name)
            if not (v is None or (isinstance(v, str) and v == "auto")
                    or (is_finite_real(v) and float(v) >= 0)):
                raise ValueError(f"EngineConfig.{name} must be a number >= 0, 'auto' "
                                 f"or None, got {v!r}")
        self.max_model_len = int(max_len)
        self.config = config
        sc = config.scheduler
        self.scheduler = te.Scheduler(sc)
        self.probe = config.probe
        hidden = int(model.config.hidden_size)
        if self.probe is not None and self.probe.hidden_size != hidden:
            raise ValueError(f"the probe reads hidden size {self.probe.hidden_size}, "
                             f"the model has {hidden}")
        layers = tuple(config.capture_layers) + (() if self.probe is None else (self.probe.layer,))
        self.runner = ModelRunner(model, sc.block_size, sc.kv_capacity_tokens // sc.block_size,
                                  hook_layers=layers)
        self.observer: Callable[[StepRecord], None] | None = None
        if self.probe is not None:
            self.probe.to(self.runner.device)
        self.kv = self.runner.kv
        self._reqs: dict[int, Request] = {}
        self._next_rid = 0
        self._kv_moves: deque[tuple[str, int]] = deque()  # decided, not yet carried out
        self.clock = WallClock() if config.step_cost is None else VirtualClock(config.step_cost)
        self._beta: PrefillWeightEstimator | None = None
        self.prefill_weight_log: list[tuple[int, float]] = []  # (step, β) when β changed
        pw = config.prefill_weight
        if isinstance(pw, str):
            self._beta = PrefillWeightEstimator(known=config.step_cost)
        elif pw is not None:
            self.scheduler.set_prefill_weight(float(pw))
            self.prefill_weight_log.append((0, float(pw)))
        # the predictions' errors and calibration on finished requests (margin "auto")
        self.prediction_errors: policies.PredictionErrors | None = None
        self._longest_cap = 0  # the largest max_new_tokens served: the worst error possible
        self.preempt_margin_log: list[tuple[int, float]] = []  # (step, margin) when it changed
        pm = config.preempt_margin
        if isinstance(pm, str):
            self.prediction_errors = policies.PredictionErrors()
        elif pm is not None:
            self.scheduler.set_preempt_margin(float(pm))
            self.preempt_margin_log.append((0, float(pm)))
        self.step_log: list[tuple[StepShape, float]] = []
        # (step, phase, error) of probe/observer failures the engine served through
        self.faults: list[tuple[int, str, str]] = []
        # Seconds spent per phase of step(), summed over steps (see phase_times()).
        self._phase = dict.fromkeys(("schedule", "kv", "forward", "sample", "probe",
                                     "scheduler_update"), 0.0)
        self._steps = 0
        self._step_no = 0  # forward steps since construction (phase_times resets _steps)

    def close(self) -> None:
        """Give the model back: remove the engine's hooks and restore the model's own
        attention (idempotent). The engine cannot serve afterwards."""
        self.runner.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def phase_times(self, reset: bool = False) -> dict[str, float]:
        """Mean seconds per step spent in each phase (schedule, kv, forward, sample, probe...)."""
        steps = max(self._steps, 1)
        out = {k: v / steps for k, v in self._phase.items()}
        if reset:
            self._phase = dict.fromkeys(self._phase, 0.0)
            self._steps = 0
        return out

    # ------------------------------------------------------------------ requests

    def now(self) -> float:
        """Seconds since the engine started on its clock (wall or virtual)."""
        return self.clock.now()

    def add_request(self, prompt_ids: Sequence[int], params: SamplingParams | None = None,
                    arrival: float | None = None, predicted_len: float = math.nan,
                    score: float = math.nan) -> int:
        """Queue a request; returns its id. Bad input raises ValueError and queues nothing."""
        params = params if params is not None else SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        prompt = _token_ids(prompt_ids)
        if not prompt:
            raise ValueError("empty prompt: a request needs at least one token")
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"prompt of {len(prompt)} tokens leaves no room to generate within "
                             f"max_model_len={self.max_model_len}")
        bad = [t for t in prompt if not 0 <= t < self.runner.vocab_size]
        if bad:
            raise ValueError(f"token ids outside the vocabulary [0, {self.runner.vocab_size}): "
                             f"{bad[:8]}")
        max_new = min(params.max_new_tokens, self.max_model_len - len(prompt))
        rid = self._next_rid
        if arrival is None:
            arrival = self.now()
        elif not is_finite_real(arrival):
            raise ValueError(f"arrival must be a finite number of seconds, got {arrival!r}")
        elif float(arrival) > self.now():
            # A request is added when it arrives; Engine.run replays future arrivals itself.
            raise ValueError(f"arrival={arrival!r} is in the future (the engine's clock is at "
                             f"{self.now():.6f} s)")
        # Everything that can fail comes before the scheduler hears of the request, so a bad
        # request leaves no trace (the scheduler validates its own arguments before adding).
        request = Request(rid, prompt, params, max_new, float(arrival), Sampler(params))
        self.scheduler.add(rid, float(arrival), len(prompt), max_new, predicted_len, score)
        self._next_rid += 1
        self._reqs[rid] = request
        if self.prediction_errors is not None:  # the request is queued: never raise now
            self._guarded("preempt_margin", lambda: self._note_arrival(rid, max_new))
        return rid

    def _note_arrival(self, rid: int, max_new: int) -> None:
        # what it is ranked by at arrival (the default length when nothing predicts)
        self.prediction_errors.arrival(rid, self.scheduler.get(rid).remaining)
        if max_new > self._longest_cap:
            self._longest_cap = max_new
            self._learn_margin()

    def abort(self, rid: int, reason: str = "aborted") -> RequestOutput:
        """End a live request now; returns its record. `reason` is its finish_reason:
        "aborted" (a client gone: its length says nothing), or "stop" when the caller ended
        it at a stop condition of its own (e.g. a stop string), so it counts as finished."""
        if reason not in ("aborted", "stop"):
            raise ValueError(f"abort: reason must be 'aborted' or 'stop', got {reason!r}")
        if rid not in self._reqs:
            raise KeyError(f"unknown request id {rid}")
        self.scheduler.abort(rid)
        return self._retire(self._reqs[rid], self.now(), reason)

    def output_ids(self, rid: int, start: int = 0) -> list[int]:
        """The tokens live request `rid` has generated so far, from index `start` on (what a
        streaming server sends after each step)."""
        if rid not in self._reqs:
            raise KeyError(f"unknown or finished request id {rid}")
        return self._reqs[rid].output_ids[start:]

    def has_unfinished(self) -> bool:
        """Whether any request is still waiting, running or preempted."""
        return bool(self._reqs)

    # ------------------------------------------------------------------ the loop

    def step(self) -> list[RequestOutput]:
        """One iteration: schedule → apply → forward → sample → commit → postprocess;
        returns the requests that finished.

        A step that raises before its tokens are committed (KV moves, forward, sampling, the
        scheduler's update) leaves every request's tokens, random streams and the scheduler's
        token counts as they were. The scheduling decision it acted on stands; the next step
        finishes its KV moves and recomputes whatever KV the failed forward did not write, so
        the tokens served are those of a run without the fault. After the commit, a failing
        probe, observer or β update is recorded in `Engine.faults` and the step completes.
        """
        t0 = time.perf_counter()
        running = self._schedule()
        t1 = time.perf_counter()
        if not running:
            self._apply_kv_moves()  # a batch may be empty when its KV moves are not
            self._phase["schedule"] += t1 - t0
            return []
        batch = self._apply(running)
        t2 = time.perf_counter()
        predict = self.probe is not None and self._step_no % self.config.predict_every == 0
        logits, hidden = self.runner.forward(batch.seqs, want_hidden=predict
                                             or self.observer is not None)
        t3 = time.perf_counter()
        shape = StepShape(len(batch.seqs), batch.prefill_tokens, batch.context_tokens,
                          len(batch.seqs) if predict else 0)
        tokens, reasons, now, t4 = self._sample(batch, logits, shape)
        t5 = time.perf_counter()
        done = self._commit(batch, tokens, reasons, shape, now)
        finished = [reason is not None for reason in reasons]
        # From here on a failure degrades the step (no new predictions, no observation;
        # recorded in Engine.faults) but never loses a request.
        if predict:
            self._guarded("probe", lambda: self._predict(running, hidden[self.probe.layer],
                                                         finished))
        t6 = time.perf_counter()
        if self.observer is not None:
            record = StepRecord(running, [len(r.output_ids) for r in batch.reqs], batch.first,
                                finished, hidden)
            self._guarded("observer", lambda: self.observer(record))
        for phase, dt in (("schedule", t1 - t0), ("kv", t2 - t1), ("forward", t3 - t2),
                          ("sample", t4 - t3), ("scheduler_update", t5 - t4), ("probe", t6 - t5)):
            self._phase[phase] += dt
        if self.config.record_steps:
            self.step_log.append((shape, time.perf_counter() - t0))
        if self._beta is not None:
            self._guarded("prefill_weight", lambda: self._update_beta(shape, t3 - t2))
        self._steps += 1
        self._step_no += 1
        return [self._retire(r, now, reason) for r, reason in done]

    def _schedule(self) -> list[int]:
        """Ask the scheduler for this step's batch and record its decision: preemptions, and
        the KV moves `_apply` carries out. Returns the running rids."""
        self._apply_kv_moves()  # what a failed step left undone comes first
        d = self.scheduler.schedule(self.now())
        dropped, swapped_out = d.dropped.tolist(), d.swapped_out.tolist()
        for rid in dropped:
            self._reqs[rid].computed = 0
        preempted = d.preempted.tolist()
        moved = set(dropped) | set(swapped_out) if preempted else set()
        for rid in preempted:
            r = self._reqs[rid]
            r.preemptions += 1
            if rid not in moved:
                # Kept on the device, it holds (to the scheduler) the blocks of its tokens; a
                # step that failed after allocating its next token's block left one more.
                self.kv.trim(rid, len(r.prompt_ids) + len(r.output_ids))
        self._kv_moves.extend([("free", rid) for rid in dropped]
                              + [("out", rid) for rid in swapped_out]
                              + [("in", rid) for rid in d.swapped_in.tolist()])
        return d.running.tolist()

    def _apply(self, running: list[int]) -> _Batch:
        """Carry the decision out on the KV pool (its moves, retried first thing next step
        if one fails here; blocks for every row) and lay out the forward's rows."""
        self._apply_kv_moves()
        batch = _Batch(running, [self._reqs[rid] for rid in running])
        for r in batch.reqs:
            length = len(r.prompt_ids) + len(r.output_ids)
            self.kv.ensure(r.rid, length + 1)
            # What the forward feeds follows what this engine's KV holds (r.computed), not
            # the decision's labels: a request admitted or resumed by a step whose forward
            # failed is simply prefilled again.
            if r.computed == 0:  # prefill: the prompt (admitted) or the whole prefix (recompute)
                batch.first.append(not r.output_ids)
                batch.seqs.append(SeqInput(r.rid, r.prompt_ids + r.output_ids, 0, prefill=True,
                                           mean_hidden=batch.first[-1]))
                batch.prefill_tokens += length
                if self.probe is not None and r.probe_slot is None:
                    r.probe_slot = self.probe.acquire_slot()
            elif r.computed == length - 1:  # decode: the last token
                batch.first.append(False)
                batch.seqs.append(SeqInput(r.rid, r.output_ids[-1:], length - 1, prefill=False,
                                           mean_hidden=False))
                batch.context_tokens += length
            else:
                raise AssertionError(f"request {r.rid}: {r.computed} of {length} tokens in KV")
        # One KV truth: the pool only follows the scheduler's decisions; that they agree is
        # checked every step (O(batch)), so a divergence stops the step before the forward.
        reserved = self.scheduler.kv_reserved_blocks()
        if reserved != self.kv.used_blocks:
            raise RuntimeError(f"KV accounting: the scheduler reserves {reserved} blocks, the "
                               f"pool holds {self.kv.used_blocks}")
        return batch

    def _sample(self, batch: _Batch, logits: torch.Tensor, shape: StepShape
                ) -> tuple[list[int], list[str | None], float, float]:
        """One token per row and why a row finished (or None), reported to the scheduler;
        also the step's time and when sampling ended. Nothing is committed: on a failure
        the random streams are put back, so a retried step draws exactly the same."""
        streams = self._save_streams(batch.reqs)
        try:
            tokens = sample_batch([r.sampler for r in batch.reqs], logits)
            t_sampled = time.perf_counter()
            reasons = [("stop" if token in r.params.stop_token_ids
                        else "length" if len(r.output_ids) + 1 >= r.max_new_tokens else None)
                       for r, token in zip(batch.reqs, tokens)]
            # The whole step's cost (the probe call included) is charged before its tokens
            # appear, so a virtual clock's token times do not depend on when the probe runs.
            now = self.clock.peek(shape)
            self.scheduler.on_step(now, batch.running, [1] * len(batch.running),
                                   [reason is not None for reason in reasons])
        except BaseException:
            for generator, state in streams:
                generator.set_state(state)
            raise
        return tokens, reasons, now, t_sampled

    def _commit(self, batch: _Batch, tokens: list[int], reasons: list[str | None],
                shape: StepShape, now: float) -> list[tuple[Request, str]]:
        """Append the step's tokens (plain bookkeeping that cannot fail); the finished rows."""
        self.clock.advance(shape)
        done = []
        for r, token, reason in zip(batch.reqs, tokens, reasons):
            r.computed = len(r.prompt_ids) + len(r.output_ids)
            r.output_ids.append(token)
            if r.first_token_time is None:
                r.first_token_time = now
            if reason is not None:
                done.append((r, reason))
        return done

    def _apply_kv_moves(self) -> None:
        """Carry out the scheduler's KV moves in order; a move is forgotten only once done."""
        while self._kv_moves:
            kind, rid = self._kv_moves[0]
            if rid in self._reqs:  # an aborted request's KV is already gone
                {"free": self.kv.free, "out": self.kv.swap_out, "in": self.kv.swap_in}[kind](rid)
            self._kv_moves.popleft()

    def _update_beta(self, shape: StepShape, forward_s: float) -> None:
        self._beta.add(shape, forward_s)
        beta = self._beta.update()
        if beta is not None:
            self.scheduler.set_prefill_weight(beta)
            self.prefill_weight_log.append((self._step_no, beta))

    @staticmethod
    def _save_streams(reqs: list[Request]) -> list[tuple[torch.Generator, torch.Tensor]]:
        """The random streams sampling may advance (greedy rows draw nothing; a few KB each)."""
        return [(r.sampler.generator, r.sampler.generator.get_state()) for r in reqs
                if r.params.temperature > 0]

    def _guarded(self, phase: str, fn: Callable[[], None]) -> None:
        """Run a phase after the tokens are committed; a failure is recorded, not raised."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one failing probe must not stop serving
            self.faults.append((self._step_no, phase, f"{type(exc).__name__}: {exc}"))

    def _predict(self, running: list[int], hidden: torch.Tensor, finished: list[bool]) -> None:
        """Refine the predictions of every unfinished running row; tell the scheduler.

        Runs on every `predict_every`-th step; a request's first prediction starts its
        distribution afresh (from the prompt's mean state if it was prefilled this step).
        """
        rows = [i for i, done in enumerate(finished) if not done]
        if not rows:
            return
        reqs = [self._reqs[running[i]] for i in rows]
        first = [not r.predictions for r in reqs]
        since = [len(r.output_ids) - r.predicted_at for r in reqs]
        args = (hidden[rows], [r.probe_slot for r in reqs], first,
                [len(r.output_ids) for r in reqs], [r.max_new_tokens for r in reqs], since)
        if self.config.probe_rank == "gittins":
            pred, key = (t.cpu() for t in self.probe.step_rank(*args))
        else:
            pred = key = self.probe.step(*args).cpu()
        self.scheduler.update_predictions([r.rid for r in reqs], key.double().numpy())
        for r, p in zip(reqs, pred.tolist()):  # only once the whole call has succeeded
            r.predicted_at = len(r.output_ids)
            r.predictions.append(p)
            r.prediction_tokens.append(len(r.output_ids))
            if self.prediction_errors is not None:
                self.prediction_errors.refreshed(r.rid, len(r.output_ids), p)

    def _retire(self, r: Request, now: float, reason: str) -> RequestOutput:
        self.kv.free(r.rid)
        if r.probe_slot is not None:
            self.probe.release_slot(r.probe_slot)
        del self._reqs[r.rid]
        if self.prediction_errors is not None:
            self._guarded("preempt_margin", lambda: self._score(r, reason))
        return r.finish(now, reason)

    def _score(self, r: Request, reason: str) -> None:
        """A retired request's predictions against its length, and the margin they give."""
        if reason == "aborted":  # its length says nothing of the predictions
            self.prediction_errors.forget(r.rid)
        else:
            self.prediction_errors.finished(r.rid, len(r.output_ids))
        self._learn_margin()

    def _learn_margin(self) -> None:
        # not measured yet: predictions may be off by a whole cap
        margin = self.prediction_errors.margin(self.config.scheduler.max_running,
                                               worst_error=self._longest_cap)
        if not self.preempt_margin_log or self.preempt_margin_log[-1][1] != margin:
            self.scheduler.set_preempt_margin(margin)
            self.preempt_margin_log.append((self._step_no, margin))

    # ------------------------------------------------------------------ workloads

    def run(self, workload: Iterable[Arrival], progress: bool = True,
            desc: str = "serving") -> Report:
        """Replay arrivals (seconds from now, prompt ids, params[, predicted length[, LTR
        score]]) on the engine's clock to the end; request ids follow the arrivals' time
        order.

        On a virtual clock an idle engine jumps to the next arrival instead of sleeping.
        `desc` labels the progress bar.
        """
        arrivals, rejected = [], []
        for k, a in enumerate(workload):
            problem = _arrival_problem(a)
            if problem:
                rejected.append((k, problem))  # one bad arrival never stops the others
            else:
                arrivals.append((float(a[0]), k, a))
        arrivals.sort(key=lambda x: (x[0], x[1]))
        start = self.now()
        outputs: list[RequestOutput] = []
        bar = progress_bar(len(arrivals), desc, "req", progress)
        i = 0
        while i < len(arrivals) or self.has_unfinished():
            t = self.now() - start
            while i < len(arrivals) and arrivals[i][0] <= t:
                at, k, (_, prompt, params, *extra) = arrivals[i]
                try:
                    self.add_request(prompt, params, arrival=start + at,
                                     predicted_len=extra[0] if extra else math.nan,
                                     score=extra[1] if len(extra) > 1 else math.nan)
                except (ValueError, TypeError, OverflowError, KeyError) as exc:
                    rejected.append((k, str(exc)))
                    bar.update(1)
                i += 1
            if self.has_unfinished():
                finished = self.step()
                outputs.extend(finished)
                bar.update(len(finished))
            elif i < len(arrivals):
                self.clock.wait_until(start + arrivals[i][0])
        bar.close()
        return Report(outputs, aggregate_outputs(outputs, self.now() - start), sorted(rejected))


def _token_ids(prompt_ids: Sequence[int] | torch.Tensor) -> list[int]:
    """Prompt token ids as ints; floats, bools and other types are refused, not truncated."""
    if torch.is_tensor(prompt_ids):
        if prompt_ids.dtype.is_floating_point or prompt_ids.dtype == torch.bool \
                or prompt_ids.dim() != 1:
            raise TypeError(f"prompt ids must be a 1-D integer tensor, got "
                            f"{prompt_ids.dtype} of shape {tuple(prompt_ids.shape)}")
        return [int(t) for t in prompt_ids.tolist()]
    if isinstance(prompt_ids, (str, bytes)):
        raise TypeError(f"prompt ids must be a sequence of ints, got {type(prompt_ids).__name__}")
    out = []
    for t in prompt_ids:
        if not is_integer(t):
            raise TypeError(f"prompt ids must be ints, got {t!r}")
        out.append(int(t))
    return out


def _arrival_problem(a: object) -> str:
    """Why an Engine.run arrival is malformed ('' if it is well formed)."""
    if not isinstance(a, (tuple, list)) or len(a) not in (3, 4, 5):
        return (f"an arrival is (seconds, prompt ids, params[, predicted length[, score]]), "
                f"got {a!r:.80}")
    if not (is_finite_real(a[0]) and float(a[0]) >= 0):
        return f"arrival time must be finite seconds >= 0, got {a[0]!r}"
    return ""
