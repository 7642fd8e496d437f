"""`TrailScheduler`: vLLM's v1 scheduler with TRAIL's ranks and limited preemption.

vLLM keeps its memory, chunked prefill and batching; before each of its steps this class
orders vLLM's queues with `trail_ext.Ranker` (the C++ rank rule of the TRAIL scheduler) and
preempts running requests that a better-ranked waiting request should displace
(`planner.plan_step`). Predictions arrive from `TrailWorkerExtension` on the model-runner
output (`trail_predictions`), or per request from the client
(`SamplingParams(extra_args={"trail_predicted_len": ..., "trail_score": ...})`), or from a
prompt-only predictor at arrival. With β "auto" (TRAIL's) the ranker's β is learned from
vLLM's own steps (`step_cost.OnlineBeta`), so a rank preemption is charged what its
recompute costs on this server. Supported: vLLM 0.32 (its scheduler interface is not
public), FCFS scheduling policy; synchronous scheduling (`TrailScheduler`) or vLLM's
async scheduling (`TrailAsyncScheduler`: vLLM plans step N + 1 while step N runs, so the
probe's predictions and the token counts of step N reach the ranks one step later).
"""

from __future__ import annotations

import collections
import json
import logging
import pathlib
import math
import time
from typing import Any, Callable

import trail_ext as te
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from trail import policies
from trail.integrations.vllm.config import TrailVllmConfig
from trail.integrations.vllm.planner import plan_step
from trail.integrations.vllm.step_cost import OnlineBeta, step_shape

PREDICTIONS_ATTR = "trail_predictions"  # {req_id: remaining tokens} on ModelRunnerOutput
logger = logging.getLogger(__name__)


class TrailScheduler(Scheduler):
    """vLLM's scheduler, its queues ordered and its running batch preempted by TRAIL's ranks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trail_config = TrailVllmConfig.from_additional(self.vllm_config.additional_config)
        if self.policy != SchedulingPolicy.FCFS:
            raise ValueError("TrailScheduler orders vLLM's FCFS queue itself: use "
                             f"scheduling_policy='fcfs' (got {self.policy.value!r})")
        if self.scheduler_config.async_scheduling and not isinstance(self, AsyncScheduler):
            raise ValueError("with async scheduling use TrailAsyncScheduler (vllm_kwargs("
                             "async_scheduling=True), or --scheduler-cls "
                             "trail.integrations.vllm.scheduler.TrailAsyncScheduler); "
                             "TrailScheduler needs async_scheduling=False")
        self.ranker_config = self.trail_config.scheduler_config(self.max_num_running_reqs)
        self.ranker = te.Ranker(self.ranker_config)
        self._rid: dict[str, int] = {}
        self._generated: dict[str, int] = {}
        self._next_rid = 0
        self._t0 = time.time()
        self._prompt = _PromptPredictor.load(self.trail_config, self.vllm_config)
        # β "auto" not given as a measurement: learned from this server's steps
        learn = (self.trail_config.settings().prefill_weight == policies.AUTO
                 and self.trail_config.server_measured().prefill_weight is None)
        # every step is timed (step time by batch composition); β is fitted when learned
        self._beta = OnlineBeta(fit=learn)
        # margin "auto" without measured MAEs: the winner's curse of the errors measured on
        # this server's finished requests; until 20 have finished the errors are unknown,
        # and so is how far a gap between predictions can be trusted: no rank preemption
        settings, measured = self.trail_config.settings(), self.trail_config.server_measured()
        learn = (settings.preempt_margin == policies.AUTO
                 and None in (measured.arrival_mae, measured.probe_mae))
        self._errors = policies.PredictionErrors() if learn else None
        self.preempt_margin = math.inf if learn else self.ranker_config.preempt_margin
        # aging's α "auto" without a measured decode speed: from the step cost β is fitted to
        self._learn_alpha = (self._beta.fit and settings.tail == "aging"
                             and settings.aging_rate == policies.AUTO
                             and measured.decode_tokens_per_s is None)
        # Counters a benchmark reads: steps, rank preemptions, predictions, seconds in TRAIL.
        self.trail_stats: dict[str, float] = {"steps": 0, "rank_preemptions": 0,
                                              "predictions": 0, "overhead_s": 0.0,
                                              "bad_hints": 0,
                                              "prefill_weight": self.ranker_config.prefill_weight,
                                              "prefill_weight_updates": 0,
                                              "preempt_margin": self.preempt_margin,
                                              "aging_rate": self.ranker_config.aging_rate,
                                              "finished_scored": 0,
                                              # every preemption (rank and memory) and the
                                              # KV tokens vLLM drops, to recompute, with them
                                              "preemptions": 0, "recompute_tokens": 0,
                                              # step time by composition (decode-only
                                              # steps, steps that prefill): step_cost
                                              **self._beta.composition.stats()}
        # TRAIL's own failures, (step, phase, error): vLLM's step then goes on without TRAIL's
        # part, so one fault never stops serving (the newest 100 are kept).
        self.trail_faults: collections.deque[tuple[int, str, str]] = collections.deque(
            maxlen=100)
        # Request ids in the order first scheduled (the newest 4096: a server runs for days).
        self.trail_admission_log: collections.deque[str] = collections.deque(maxlen=4096)

    # ------------------------------------------------------------------ requests

    def add_request(self, request: Request) -> None:
        """vLLM's add_request, then track the request's rank (hints from extra_args)."""
        super().add_request(request)
        rid_str = request.request_id
        if rid_str in self._rid or rid_str not in self.requests:
            return  # a streaming update of a request already tracked
        self._guard("add_request", lambda: self._track(request))

    def _track(self, request: Request) -> None:
        t = time.perf_counter()
        extra = (request.sampling_params.extra_args if request.sampling_params else None) or {}
        predicted = self._hint(request, extra, "trail_predicted_len")
        score = self._hint(request, extra, "trail_score")
        ltr = self.trail_config.policy == "LTR"
        if self._prompt is not None and math.isnan(score if ltr else predicted):
            got: list[float] = []  # stays empty if the predictor fails: ranked as unknown
            self._guard("prompt_predictor",
                        lambda: got.append(self._prompt.predict(request.prompt_token_ids or [])))
            if got and ltr:
                score = got[0]
            elif got:
                predicted = max(0.0, got[0])
        rid = self._next_rid
        self.ranker.add(rid, request.arrival_time - self._t0, max(1, request.num_prompt_tokens),
                        max(1, int(request.max_tokens)), predicted, score)
        if self._errors is not None:  # ranked by the default length when nothing predicts
            self._errors.arrival(rid, min(self.ranker.get(rid).remaining,
                                          float(request.max_tokens)))
        self._next_rid += 1
        self._rid[request.request_id] = rid
        self._generated[request.request_id] = 0
        self.trail_stats["overhead_s"] += time.perf_counter() - t

    def _hint(self, request: Request, extra: dict[str, Any], key: str) -> float:
        """A client's hint from SamplingParams.extra_args, NaN when absent.

        A bad hint must not fail the request (nor, in vLLM's engine process, the engine): it
        is ignored with a warning naming it, and counted in trail_stats["bad_hints"].
        """
        if key not in extra:
            return math.nan
        v = extra[key]
        ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
              and (key == "trail_score" or v >= 0))
        if ok:
            return float(v)
        self.trail_stats["bad_hints"] += 1
        logger.warning("request %s: ignoring extra_args[%r]=%r (must be a finite number%s)",
                       request.request_id, key, v, "" if key == "trail_score" else " >= 0")
        return math.nan

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        """vLLM frees every finished or aborted request here: forget it too."""
        rid = self._rid.pop(request.request_id, None)
        if rid is not None:
            self._generated.pop(request.request_id, None)
            self._guard("free", lambda: self.ranker.remove(rid))
            if self._errors is not None:
                self._guard("prediction_errors", lambda: self._score(request, rid))
        return super()._free_request(request, *args, **kwargs)

    def _preempt_request(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Every preemption (TRAIL's for rank, vLLM's for memory) reaches the ranker, and
        the tokens it will recompute are counted."""
        self.trail_stats["preemptions"] += 1
        self.trail_stats["recompute_tokens"] += int(request.num_computed_tokens)
        super()._preempt_request(request, *args, **kwargs)
        rid = self._rid.get(request.request_id)

        def note() -> None:
            if rid is not None and self.ranker.get(rid).state == te.RequestState.RUNNING:
                self.ranker.set_preempted(rid)
        self._guard("preempt", note)

    # ------------------------------------------------------------------ one step

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        """Order the queues by rank, preempt for rank, then run vLLM's own step."""
        t = time.perf_counter()
        self._guard("plan", self._before_step)
        self.trail_stats["overhead_s"] += time.perf_counter() - t
        out = super().schedule(*args, **kwargs)
        t = time.perf_counter()
        self._guard("after_step", lambda: self._after_step(out))
        self.trail_stats["steps"] += 1
        self.trail_stats["overhead_s"] += time.perf_counter() - t
        if self.trail_config.stats_path and self.trail_stats["steps"] % 50 == 0:
            self._guard("stats", self.write_trail_stats)
        return out

    def shutdown(self) -> None:
        """vLLM's shutdown; the last counters are written first (stats_path)."""
        if self.trail_config.stats_path:
            self._guard("stats", self.write_trail_stats)
        super().shutdown()

    def write_trail_stats(self) -> None:
        """Write the counters, live requests and recent faults to stats_path (atomically)."""
        path = pathlib.Path(self.trail_config.stats_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"stats": self.trail_stats, "live": len(self.ranker),
                                   "faults": list(self.trail_faults),
                                   "config": self.trail_config.__dict__}, indent=1))
        tmp.replace(path)

    def _before_step(self) -> None:
        self.ranker.begin_step()
        self._sync_running()
        self._plan()

    def _after_step(self, out: Any) -> None:
        rows = []
        for req_id, n in out.num_scheduled_tokens.items():
            req = self.requests.get(req_id)
            if req is not None:  # vLLM has counted this step's tokens as computed
                rows.append((n, req.num_computed_tokens - n, req.num_prompt_tokens))
        self._beta.scheduled(id(out), step_shape(rows))
        self._sync_running()
        for req in out.scheduled_new_reqs:
            self.trail_admission_log.append(req.req_id)
        self.ranker.end_step()

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        """vLLM's bookkeeping, then new token counts and the probe's predictions."""
        preds = getattr(model_runner_output, PREDICTIONS_ATTR, None)
        self._guard("prefill_weight", lambda: self._learn_beta(id(scheduler_output)))
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        t = time.perf_counter()
        self._guard("update", lambda: self._count(scheduler_output, preds))
        self.trail_stats["overhead_s"] += time.perf_counter() - t
        return outputs

    def _score(self, request: Request, rid: int) -> None:
        """A freed request's predictions against its length, and the margin they give."""
        if request.status == RequestStatus.FINISHED_ABORTED:
            self._errors.forget(rid)
            return
        self._errors.finished(rid, request.num_output_tokens)
        self.trail_stats["finished_scored"] += 1
        margin = self._errors.margin(self.max_num_running_reqs)
        if margin is not None:
            self.preempt_margin = margin
            self.trail_stats["preempt_margin"] = margin
            for kind, cal in self._errors.calibration().items():  # 1: calibrated
                if cal is not None:
                    self.trail_stats[f"{kind}_slope"] = cal["slope"]

    def _learn_beta(self, key: int) -> None:
        beta = self._beta.finished(key)
        self.trail_stats.update(self._beta.composition.stats())  # a few µs a step
        if beta is not None:
            self.ranker.set_prefill_weight(beta)
            self.trail_stats["prefill_weight"] = beta
            self.trail_stats["prefill_weight_updates"] += 1
            if self._learn_alpha:  # trail.policies' rule, at this server's decode speed
                est = self._beta.estimator
                speed = est.cost.decode_tokens_per_s(self.max_num_running_reqs, est.context)
                alpha = policies.resolve(self.trail_config.settings(), policies.Server(
                    prefill_weight=beta, decode_tokens_per_s=speed))["aging_rate"]
                self.ranker.set_aging_rate(alpha)
                self.trail_stats["aging_rate"] = alpha

    def _count(self, scheduler_output: Any, preds: dict[str, float] | None) -> None:
        rids, steps = [], []
        for req_id in scheduler_output.num_scheduled_tokens:
            req = self.requests.get(req_id)
            if req is None or req_id not in self._rid:
                continue  # finished this step: already forgotten
            n = req.num_output_tokens - self._generated[req_id]
            if n > 0:
                rids.append(self._rid[req_id])
                steps.append(n)
                self._generated[req_id] = req.num_output_tokens
        if rids:
            self.ranker.on_tokens(rids, steps)
        if preds:
            live = [(k, float(v)) for k, v in preds.items()
                    if k in self._rid and math.isfinite(v) and v >= 0]
            if live:
                self.ranker.update_predictions([self._rid[k] for k, _ in live],
                                               [v for _, v in live])
                self.trail_stats["predictions"] += len(live)
                if self._errors is not None:  # the counts the ranker was just given
                    for k, v in live:
                        self._errors.refreshed(self._rid[k], self._generated[k], v)

    def _guard(self, phase: str, fn: Callable[[], None]) -> None:
        """Run TRAIL's part of a step; a failure is recorded and logged, never raised."""
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - vLLM must keep serving without TRAIL's step
            self.trail_faults.append((int(self.trail_stats["steps"]), phase,
                                      f"{type(exc).__name__}: {exc}"))
            logger.warning("TRAIL %s failed (vLLM's own step goes on): %s", phase, exc)

    def _sync_running(self) -> None:
        ids = [self._rid[r.request_id] for r in self.running if r.request_id in self._rid]
        if ids:
            self.ranker.set_running(ids)

    def _plan(self) -> None:
        waiting = [r for r in self.waiting if r.request_id in self._rid]
        if not waiting:
            return
        running = [r for r in self.running if r.request_id in self._rid]
        bs = self.block_size
        free_slots = max(0, self.max_num_active_reqs - len(self.running))
        free_blocks = self.kv_cache_manager.block_pool.get_num_free_blocks()
        by_id = {r.request_id: r for r in waiting + running}
        plan = plan_step(
            self.ranker, [r.request_id for r in waiting],
            [r.request_id for r in running] if self.trail_config.rank_preemption else [],
            self._rid, free_slots, free_blocks,
            {r.request_id: -(-(r.num_tokens + 1) // bs) for r in waiting},
            {r.request_id: -(-r.num_computed_tokens // bs) for r in running},
            self.preempt_margin)
        now = time.monotonic()
        for req_id in plan.preempt:
            req = by_id[req_id]
            self.running.remove(req)
            self._preempt_request(req, now)
            # As vLLM's reset_prefix_cache does: it may resume in this very step.
            self.prev_step_scheduled_req_ids.discard(req_id)
            self.trail_stats["rank_preemptions"] += 1
        # vLLM takes waiting requests from the front and preempts running ones from the back.
        order = {req_id: i for i, req_id in enumerate(plan.waiting)}
        if plan.preempt:  # the preempted are waiting again: rank them with the rest
            waiting = [r for r in self.waiting if r.request_id in self._rid]
            ids = [r.request_id for r in waiting]
            ranked = self.ranker.order([self._rid[i] for i in ids]).tolist()
            back = {rid: i for i, rid in enumerate(ranked)}
            order = {i: back[self._rid[i]] for i in ids}
        items = list(self.waiting)
        items.sort(key=lambda r: order.get(r.request_id, len(order)))  # untracked: last
        self.waiting.clear()
        self.waiting.extend(items)
        if self.trail_config.rank_preemption and running:
            pos = {req_id: i for i, req_id in enumerate(plan.running)}
            self.running.sort(key=lambda r: pos.get(r.request_id, -1))


class TrailAsyncScheduler(TrailScheduler, AsyncScheduler):
    """`TrailScheduler` over vLLM's `AsyncScheduler` (vLLM's default scheduling): the same
    ranks and preemptions; vLLM's placeholders for in-flight tokens are its own."""


class _PromptPredictor:
    """The rank at arrival from the prompt text (a prompt-only or LTR checkpoint)."""

    def __init__(self, predictor: Any, tokenizer: Any, ltr: bool) -> None:
        self.predictor, self.tokenizer, self.ltr = predictor, tokenizer, ltr

    @classmethod
    def load(cls, cfg: TrailVllmConfig, vllm_config: Any) -> "_PromptPredictor | None":
        if cfg.prompt_predictor is None:
            return None
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(vllm_config.model_config.tokenizer)
        if cfg.policy == "LTR":
            from trail.training.ltr import PromptRankPredictor
            return cls(PromptRankPredictor.load(cfg.prompt_predictor), tok, True)
        from trail.training.prompt_only import PromptOnlyPredictor
        return cls(PromptOnlyPredictor.load(cfg.prompt_predictor), tok, False)

    def predict(self, token_ids: list[int]) -> float:
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if self.ltr:
            return float(self.predictor.score([text])[0])
        return float(self.predictor.predict([text])[0])
