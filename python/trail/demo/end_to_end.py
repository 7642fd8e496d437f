"""`trail demo`: the whole system on one machine — model, probe, workload, the policies.

1. **Model**: the demo model (trained on first use, then cached; `--quick` trains a shorter
   one, cached apart), or any model `trail.models.load_model` takes (`--model
   smollm2-135m-instruct`, a folder) with prompts from a JSONL file (`--prompts`): the
   first `profile_prompts` of the file train the predictors, the next `workload` are
   served; prompts go through the tokenizer's chat template when it has one.
2. **Probe**: `collect` answers with hidden states of every layer, then `evaluate` trains a
   probe per layer, keeps the best layer (profiling), picks uniform or geometric bins, and
   fits the prompt-only baseline (frozen MiniLM + head) on the same split, and the
   learning-to-rank predictor (`trail.training.ltr`: ListMLE over the same MiniLM embedding,
   vllm-ltr's idea) on the collection's (prompt, length) pairs. Reported: the probe's MAE
   of the remaining length (Bayesian-refined) against the prompt-only one, and Kendall's τ
   of the LTR and prompt-only orders on the served workload.
3. **Workload**: one seeded set of prompts from the demo language, sampled at temperature 1
   with a seed per request, so every policy gets the same answers. A first pass serves them
   all at t = 0 under FCFS: it gives every request's true length (for TRAIL+) and the
   engine's saturated throughput; arrivals are then Poisson at `load` × that throughput, so
   requests queue.
4. **Serving**, the same arrivals through the real engine under the set-ups of
   `trail.policies` (its COMPARE table, shared with `trail simulate`):
   - FCFS;
   - SJF on the prompt-only prediction made at arrival (output rank: the paper's baseline);
   - SJF-work: the same predictions with TRAIL's work-aware key and aging (no probe): what
     the key alone buys;
   - TRAIL-paper: the paper's rule: the prompt-only prediction at arrival ranks waiting
     requests; once running, the probe refines the remaining length every `predict_every`
     engine steps; limited preemption with c = 0.8 (the KV of a preempted request is kept);
     output rank, no aging;
   - TRAIL: the recommended configuration: TRAIL-paper's machinery with the work-aware key
     (β learned by the engine from its step costs), aging `aging_rate`, the preemption
     margin and the rank (`mean` or `gittins`) of DemoConfig;
   - TRAIL+: TRAIL's rule and settings on the true lengths from the first pass (the
     oracle bound);
   - LTR: vllm-ltr's policy on the learned scores of the prompts (starvation promotion as
     the scheduler's LTR has it);
   - MLFQ: FastServe's multi-level feedback queue (no predictions).
5. **Output**: a table (mean / p50 / p99 latency, mean TTFT, throughput, preemptions, ratios
   to FCFS), `summary.json`, `results.csv`, per-policy request records, and plots: latency
   CDF per policy, predicted vs true remaining length along a few generations.

The prompt-only predictions are made for all prompts before serving (the encoder's time is
not charged to the served requests, for SJF and TRAIL alike).

**Clock.** By default every serving pass (the first one included) runs on a virtual clock:
the engine serves for real, but times advance by the demo model's frozen step cost
(`step_cost.json` beside this file, fitted by `bench/calibrate_demo_clock.py` to the engine's
measured step times on a quiet machine), so the table is the same on a busy or a quiet
machine. Another model has no frozen cost: its first pass runs on the wall clock, recording
every step, and the step cost fitted to those steps (`fit_step_cost`) is the virtual clock of
the policies' passes (in summary.json). `clock="wall"` measures every pass on the wall clock
instead (the machine's load shows).
Collection and serving run with `threads` torch threads; the probes and the demo model train
with one (on some CPUs two threads sum small matmuls in another order), so results do not
depend on the thread count.
"""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import time
from dataclasses import asdict, dataclass, replace
from importlib import resources
from typing import Any

import numpy as np
import torch

import trail_ext as te
from trail.cpu import threads
from trail.engine import Engine, EngineConfig, Report, SamplingParams, StepCost
from trail.metrics import SUMMARY_KEYS, summary_row
from trail.engine.setups import step_cost_server
from trail.policies import (COMPARE, TRAIL_SETTINGS, Server, Settings, boost_gamma,
                            describe_auto, resolve, scheduler_config, server_for, spec)
from trail.provenance import describe

POLICIES = COMPARE  # the set-ups of trail.policies a side-by-side comparison serves
CLOCKS = ("virtual", "wall")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and settings of one demo run (`quick()` gives the reduced one)."""

    seed: int = 0
    model: str = "demo"                 # or a name or folder trail.models.load_model takes
    prompts: str | None = None          # JSONL prompts (needed for a model other than demo)
    # A `trail eval-probe` directory (report.json, probes, prompt_only/, and ltr/ with a
    # trail.training.ltr checkpoint) trained on this model: used instead of collecting and
    # training here; the first `profile_prompts` of the prompts file are then skipped.
    predictors: str | None = None
    train_steps: int | None = None      # demo-model training steps (None: the default)
    profile_prompts: int = 1000         # requests collected to train and pick the probe
    probe_epochs: int = 30              # the paper's recipe
    workload: int = 800                 # requests served under each policy
    load: float = 0.9                   # arrival rate / saturated FCFS throughput
    max_running: int = 8
    max_new_tokens: int = 400
    temperature: float = 1.0
    # TRAIL's settings (also SJF-work's and TRAIL+'s; the baselines run as their authors
    # describe them): trail.policies.TRAIL_SETTINGS unless changed here; β "auto" is learned
    # by the engine from its step costs, the tail's "auto" from the step cost and workload.
    c: float = TRAIL_SETTINGS.c
    prefill_weight: float | str = TRAIL_SETTINGS.prefill_weight
    tail: str = TRAIL_SETTINGS.tail
    aging_rate: float | str = TRAIL_SETTINGS.aging_rate
    boost_gamma: float | str = TRAIL_SETTINGS.boost_gamma
    preempt_margin: float | str = TRAIL_SETTINGS.preempt_margin
    rank: str = TRAIL_SETTINGS.rank
    kv_aware: bool = TRAIL_SETTINGS.kv_aware
    # Every 8 engine steps (and the requests prefilled then): on this tiny CPU model one
    # probe call costs ~10% of a step, every 8th step ~2%; the prompt-only prediction
    # ranks a request until its first probe prediction.
    predict_every: int = 8
    threads: int = 1                    # torch threads: collection and serving (probes: one)
    clock: str = "virtual"              # "virtual" (frozen step cost) or "wall"

    def __post_init__(self) -> None:
        for name in ("profile_prompts", "probe_epochs", "workload", "max_running",
                     "max_new_tokens", "predict_every", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DemoConfig.{name}={value!r} must be a positive int")
        if self.profile_prompts < 20:
            raise ValueError(f"DemoConfig.profile_prompts={self.profile_prompts} must be >= 20 "
                             "(the probe needs held-out requests)")
        if not 0 < self.load < 1.5:
            raise ValueError(f"DemoConfig.load={self.load!r} must be in (0, 1.5)")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"DemoConfig.temperature={self.temperature!r} must be >= 0")
        try:
            self.trail_settings()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"DemoConfig.{exc}") from None
        if self.clock not in CLOCKS:
            raise ValueError(f"DemoConfig.clock={self.clock!r} must be one of {CLOCKS}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"DemoConfig.model={self.model!r} must be a model name or folder")
        if (self.model == "demo") != (self.prompts is None):
            raise ValueError("DemoConfig: the demo model serves its own language (no prompts "
                             "file); any other model needs prompts, a JSONL file "
                             f"(model={self.model!r}, prompts={self.prompts!r})")

    def trail_settings(self) -> Settings:
        """TRAIL's settings as this config holds them ("auto" kept)."""
        return TRAIL_SETTINGS.with_(c=self.c, prefill_weight=self.prefill_weight,
                                    tail=self.tail, aging_rate=self.aging_rate,
                                    boost_gamma=self.boost_gamma,
                                    preempt_margin=self.preempt_margin, rank=self.rank,
                                    kv_aware=self.kv_aware)

    def settings(self, name: str) -> Settings:
        """The settings the named set-up serves with (TRAIL's for TRAIL, SJF-work, TRAIL+)."""
        return self.trail_settings() if spec(name).work else spec(name).settings

    @classmethod
    def quick(cls, **overrides: Any) -> "DemoConfig":
        """The reduced run (`trail demo --quick`): a shorter model, fewer requests."""
        return replace(cls(train_steps=600, profile_prompts=250, probe_epochs=10,
                           workload=150), **overrides)


def demo_step_cost() -> StepCost:
    """The demo model's frozen engine step cost (the virtual clock's), shipped with trail."""
    return StepCost.from_text(
        resources.files("trail.demo").joinpath("step_cost.json").read_text(), "step_cost.json")


def demo_server(cfg: DemoConfig, cost: StepCost | None = None,
                arrival: np.ndarray | None = None, prompt_tokens: np.ndarray | None = None,
                output_tokens: np.ndarray | None = None, arrival_mae: float | None = None,
                probe_mae: float | None = None) -> Server:
    """What the demo knows of its server for the "auto" settings: the step cost (`cost`,
    default the demo model's frozen one) at a full batch with a context of half the
    generation cap; its predictors' measured MAEs (prompt-only, probe); with the workload
    (arrivals, prompt and true output lengths), the work rate it sustains saturated (its work
    arrival rate / `cfg.load`) and Boost's γ."""
    cost = cost or demo_step_cost()
    srv = replace(step_cost_server(cost, cfg.max_running, max(1, cfg.max_new_tokens // 2)),
                  arrival_mae=arrival_mae, probe_mae=probe_mae)
    if arrival is None or len(arrival) < 2 or float(np.ptp(arrival)) <= 0:
        return srv
    works = np.asarray(output_tokens, float) + srv.prefill_weight * np.asarray(prompt_tokens)
    rate = (len(arrival) - 1) / float(np.ptp(arrival))
    work_rate = rate * float(works.mean()) / cfg.load  # load is relative to saturation
    return replace(srv, work_rate=work_rate, boost_gamma=boost_gamma(rate, works, work_rate))


def _progress(progress: bool, text: str) -> None:
    if progress:
        print(text, flush=True)


@dataclass
class Workload:
    """Everything the policies are served with: the model, the probe and the arrivals."""

    model: Any
    probe_checkpoint: str
    probe_report: dict[str, Any]
    prompts: list[str]
    ids: list[list[int]]
    params: list[SamplingParams]
    arrival: np.ndarray          # seconds from the start, sorted
    prompt_pred: np.ndarray      # prompt-only predicted total length, at arrival
    prompt_gittins: np.ndarray   # the Gittins rank of the prompt-only distribution
    true_len: np.ndarray         # output lengths from the first pass
    capacity: float              # saturated FCFS throughput, requests per second
    kv_tokens: int
    timings: dict[str, float]
    ltr_score: np.ndarray        # the LTR predictor's score per prompt (lower runs first)
    step_cost: StepCost | None   # the virtual clock of the policies' passes (None: wall)
    cost: StepCost               # the model's step cost (frozen, or fitted to the first pass)


def prepare(cfg: DemoConfig, out: pathlib.Path, progress: bool = True,
            cache_dir: str | None = None) -> Workload:
    """Steps 1-3: the model, the probe (profiled) and the prompt-only and LTR predictors, the
    arrivals."""
    from trail.training.prompt_only import PromptOnlyPredictor
    from trail.training.collect import CollectConfig, collect
    from trail.training.evaluate import evaluate
    from trail.training.train import TrainConfig

    timings: dict[str, float] = {}
    _progress(progress, f"[1/4] model: {cfg.model}")
    t = time.perf_counter()
    model, tokenizer, profile, prompts, encode, stop = _model_and_prompts(cfg, cache_dir,
                                                                           progress)
    timings["model_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if cfg.predictors is not None:
        _progress(progress, f"[2/4] predictors: trained before, from {cfg.predictors}")
        report, ltr = _load_predictors(pathlib.Path(cfg.predictors))
    else:
        _progress(progress, f"[2/4] probe: collect {cfg.profile_prompts} answers, train a "
                            "probe per layer, pick the best, fit the prompt-only and LTR "
                            "predictors")
        data = out / "probe_data"
        shutil.rmtree(data, ignore_errors=True)  # a fresh collection: its config is this run's
        with threads(cfg.threads):
            collect(model, tokenizer, profile, data,
                    CollectConfig(layers=None, max_new_tokens=cfg.max_new_tokens,
                                  temperature=cfg.temperature, seed=cfg.seed, max_running=32),
                    model_id=f"demo-seed{cfg.seed}" if cfg.model == "demo" else cfg.model,
                    progress=progress)
        # One thread for training whatever `threads` says: on some CPUs (measured on an AMD
        # EPYC) two threads sum the probes' small matmuls in another order, and the table
        # must not depend on the thread count. The probes train in seconds either way.
        with threads(1):
            report = evaluate(data, out / "probe_eval",
                              cfg=TrainConfig(epochs=cfg.probe_epochs, seed=cfg.seed),
                              baseline=True, progress=progress)
            report["dir"] = str(out / "probe_eval")
            ltr = _fit_ltr(data, report, cfg, out / "probe_eval" / "ltr", progress)
    timings["probe_s"] = time.perf_counter() - t
    _progress(progress, f"      probe (layer {report['best_layer']}, {report['better_bins']} "
                        f"bins): MAE {probe_mae(report):.1f} tokens; prompt-only: "
                        f"{report['mae']['prompt_only']:.1f}")

    _progress(progress, f"[3/4] workload: {cfg.workload} requests; a first pass at t = 0 "
                        "finds their lengths and the engine's throughput")
    t = time.perf_counter()
    ids = [encode(text) for text in prompts]
    params = [SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                             seed=cfg.seed * 1_000_003 + i, stop_token_ids=stop)
              for i in range(cfg.workload)]
    kv_tokens = 2 * cfg.max_running * (max(map(len, ids)) + cfg.max_new_tokens + 16)
    # The demo model has a frozen step cost; another model's first pass runs on the wall
    # clock, and the cost fitted to its recorded steps is the model's (the virtual clock of
    # the policies' passes, and what α "auto" is a fraction of).
    fitted = cfg.model != "demo"
    first_pass = [(0.0, ids[i], params[i]) for i in range(cfg.workload)]
    first, steps = _serve(model, policy_scheduler("FCFS", cfg, kv_tokens, Server()), None, cfg,
                          first_pass, progress, "first pass (FCFS, all at t = 0)",
                          cost=None if fitted else _frozen_cost(cfg), record=fitted)
    cost, clock = demo_step_cost(), _frozen_cost(cfg)
    if fitted:
        from trail.engine import fit_step_cost

        cost, fit = fit_step_cost([shape for shape, _ in steps], [sec for _, sec in steps],
                                  name=f"{cfg.model} (first pass, {describe()})")
        timings["step_cost_r2"] = fit["r2"]
        if cfg.clock == "virtual":  # the first pass again on that clock: one clock for all
            clock = cost
            fcfs = policy_scheduler("FCFS", cfg, kv_tokens, Server())
            first, _ = _serve(model, fcfs, None, cfg, first_pass, progress,
                              "first pass again, on the fitted clock", cost=clock)
    true_len = np.array([len(o.output_ids) for o in first.outputs])
    capacity = saturated_throughput(first)
    rate = cfg.load * capacity
    rng = np.random.default_rng(cfg.seed + 3)
    arrival = np.cumsum(rng.exponential(1.0 / rate, cfg.workload))
    arrival -= arrival[0]
    predictor = PromptOnlyPredictor.load(report["prompt_only"]["checkpoint"])
    prompt_pred = np.maximum(predictor.predict(prompts), 1.0)
    prompt_gittins = np.maximum(predictor.predict_gittins(prompts, cfg.max_new_tokens), 1.0)
    ltr_score = ltr.score(prompts)
    timings["workload_s"] = time.perf_counter() - t
    _progress(progress, f"      saturated throughput {capacity:.1f} req/s; arrivals at "
                        f"{rate:.1f} req/s (load {cfg.load}) over {arrival[-1]:.1f} s")
    return Workload(model, report["probe_checkpoints"][report["better_bins"]], report, prompts,
                    ids, params, arrival, prompt_pred, prompt_gittins, true_len, capacity,
                    kv_tokens, timings, ltr_score, clock, cost)


def _model_and_prompts(cfg: DemoConfig, cache_dir: str | None, progress: bool
                       ) -> tuple[Any, Any, list[str], list[str], Any, tuple[int, ...]]:
    """(model, tokenizer, profile prompts, workload prompts, text -> ids, stop tokens)."""
    if cfg.model == "demo":
        from trail.models.demo import encode_prompt, load_demo, sample_prompts

        model, tokenizer = load_demo(seed=cfg.seed, cache_dir=cache_dir, progress=progress,
                                     steps=cfg.train_steps)
        profile = [p.text for p in sample_prompts(cfg.profile_prompts, seed=cfg.seed + 1)]
        prompts = [p.text for p in sample_prompts(cfg.workload, seed=cfg.seed + 2)]
        return (model, tokenizer, profile, prompts,
                lambda text: encode_prompt(tokenizer, text), (int(tokenizer.eos_token_id),))
    from trail.models import encode_prompt as encode_chat
    from trail.models import has_chat_template, load_model, stop_token_ids
    from trail.training.collect import read_prompts

    texts = read_prompts(cfg.prompts)
    need = cfg.profile_prompts + cfg.workload
    if len(texts) < need:
        raise ValueError(f"{cfg.prompts}: {len(texts)} prompts, the demo needs "
                         f"profile_prompts + workload = {need}")
    model, tokenizer = load_model(cfg.model, seed=cfg.seed, cache_dir=cache_dir)
    chat = has_chat_template(tokenizer)
    return (model, tokenizer, texts[:cfg.profile_prompts], texts[cfg.profile_prompts:need],
            lambda text: encode_chat(tokenizer, text, chat), stop_token_ids(model, tokenizer))


def _load_predictors(d: pathlib.Path) -> tuple[dict[str, Any], Any]:
    """(the evaluation report, the LTR predictor) of a predictors directory; checkpoint paths
    in the report are taken relative to it (the report may have been written elsewhere)."""
    from trail.training.ltr import PromptRankPredictor

    path = d / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"predictors {d}: no report.json (a `trail eval-probe` "
                                f"output directory is expected)")
    report = json.loads(path.read_text())
    report["dir"] = str(d)
    report["probe_checkpoints"] = {k: str(d / pathlib.Path(v).name)
                                   for k, v in report["probe_checkpoints"].items()}
    if "checkpoint" not in report.get("prompt_only", {}):
        raise ValueError(f"predictors {d}: the evaluation ran without the prompt-only "
                         f"baseline, which SJF and TRAIL rank waiting requests by")
    report["prompt_only"]["checkpoint"] = str(d / "prompt_only")
    return report, PromptRankPredictor.load(d / "ltr")


def _fit_ltr(data: pathlib.Path, report: dict[str, Any], cfg: DemoConfig,
             out: pathlib.Path, progress: bool) -> Any:
    """The LTR predictor on the profile collection's (prompt, length) pairs, training split."""
    from trail.training.collect import load_samples, read_collected_prompts
    from trail.training.ltr import PromptRankPredictor
    from trail.training.train import TrainConfig, split_by_request

    s = load_samples(data, int(report["best_layer"]))
    prompts = read_collected_prompts(data)
    train = TrainConfig(seed=cfg.seed)
    _, val = split_by_request(s.request, train.val_fraction, train.seed)
    held = {int(r) for r in s.request[val]}
    first = s.prefill
    pairs = [(prompts[int(r)], float(n)) for r, n in zip(s.request[first], s.total[first])
             if int(r) not in held]
    ltr = PromptRankPredictor()
    ltr.fit([p for p, _ in pairs], [n for _, n in pairs], seed=cfg.seed,
            list_size=min(32, len(pairs)), progress=progress)
    ltr.save(out)
    return ltr


def _frozen_cost(cfg: DemoConfig) -> StepCost | None:
    """The demo model's frozen step cost on the virtual clock; None on the wall clock."""
    return demo_step_cost() if cfg.clock == "virtual" and cfg.model == "demo" else None


def probe_mae(report: dict[str, Any]) -> float:
    """MAE of the refined probe with the bins the evaluation preferred."""
    return report["mae"]["refined_geometric" if report["better_bins"] == "geometric"
                         else "refined"]


def serve_policy(w: Workload, name: str, cfg: DemoConfig, progress: bool = True,
                 **scheduler_fields: Any) -> Report:
    """Step 4 for one policy of POLICIES: the workload's arrivals through a fresh engine."""
    from trail.probe import Probe

    if name not in POLICIES:
        raise ValueError(f"unknown demo policy {name!r}; choose from {POLICIES}")
    sp = spec(name)
    settings = cfg.settings(name)
    at_arrival = w.prompt_gittins if settings.rank == "gittins" else w.prompt_pred
    pred = (None if sp.lengths is None else w.true_len.astype(float) if sp.lengths == "true"
            else at_arrival)
    sched = policy_scheduler(name, cfg, w.kv_tokens, workload_server(cfg, w))
    for field, value in scheduler_fields.items():
        setattr(sched, field, value)
    if sp.scores:
        arrivals = [(float(w.arrival[i]), w.ids[i], w.params[i], math.nan,
                     float(w.ltr_score[i])) for i in range(len(w.ids))]
    else:
        arrivals = [(float(w.arrival[i]), w.ids[i], w.params[i]) if pred is None
                    else (float(w.arrival[i]), w.ids[i], w.params[i], float(pred[i]))
                    for i in range(len(w.ids))]
    probe = Probe.load(w.probe_checkpoint) if sp.lengths == "probe" else None
    return _serve(w.model, sched, probe, cfg, arrivals, progress, f"serving {name}",
                  prefill_weight="auto" if settings.prefill_weight == "auto" else None,
                  probe_rank=settings.rank, cost=w.step_cost)[0]


def run_demo(cfg: DemoConfig, out: str | pathlib.Path, progress: bool = True,
             cache_dir: str | None = None) -> dict[str, Any]:
    """Run the whole demo; writes everything into `out` and returns summary.json's content."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    w = prepare(cfg, out, progress, cache_dir)
    timings = dict(w.timings)
    _progress(progress, "[4/4] serving the same arrivals under " + ", ".join(POLICIES))
    reports: dict[str, Report] = {}
    for name in POLICIES:
        t = time.perf_counter()
        reports[name] = serve_policy(w, name, cfg, progress)
        reports[name].save(out / "requests", name.replace("+", "_plus"))
        timings[f"serve_{name}_s"] = time.perf_counter() - t
    summary = _summary(cfg, reports, w)
    (out / "workload.json").write_text(json.dumps({  # what a simulator replays
        "arrival_s": w.arrival.tolist(), "prompt_tokens": [len(i) for i in w.ids],
        "output_tokens": w.true_len.tolist(), "prompt_pred": w.prompt_pred.tolist(),
        "prompt_gittins": w.prompt_gittins.tolist(), "ltr_score": w.ltr_score.tolist(),
        "kv_tokens": w.kv_tokens, "max_new_tokens": cfg.max_new_tokens}) + "\n")
    summary["seconds"] = {**{k: round(v, 2) for k, v in timings.items()},
                          "total_s": round(time.perf_counter() - t_start, 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _write_csv(out / "results.csv", summary)
    _plots(reports, w.true_len, w.prompt_pred, out, cfg)
    return summary


def saturated_throughput(report: Report) -> float:
    """Requests per second finished while the queue was non-empty (all arrived at t = 0).

    Up to the last admission every slot is busy; after it the batch drains with fewer and
    fewer (long) requests, which would understate what the engine sustains.
    """
    start = min(o.arrival for o in report.outputs)
    last_admit = max(o.first_token_time for o in report.outputs)
    done = sum(o.finish_time <= last_admit for o in report.outputs)
    if done < 10 or last_admit <= start:  # too few to tell: fall back to the whole run
        return len(report.outputs) / report.aggregates["makespan_s"]
    return done / (last_admit - start)


def _serve(model: Any, sched: te.SchedulerConfig, probe: Any, cfg: DemoConfig,
           arrivals: list[tuple], progress: bool, desc: str,
           prefill_weight: float | str | None = None, probe_rank: str = "mean",
           cost: StepCost | None = None, record: bool = False
           ) -> tuple[Report, list[tuple[Any, float]]]:
    """One pass of the arrivals through a fresh engine (on the virtual clock of `cost`, or
    the wall clock); every request must finish. Also returns the step log if `record`."""
    with Engine(model, EngineConfig(scheduler=sched, probe=probe, step_cost=cost,
                                    predict_every=cfg.predict_every,
                                    prefill_weight=prefill_weight, record_steps=record,
                                    probe_rank=probe_rank)) as engine, threads(cfg.threads):
        report = engine.run(arrivals, progress=progress, desc=desc)
    if report.aggregates["finished"] != len(arrivals):
        raise RuntimeError(f"{report.aggregates['finished']} of {len(arrivals)} requests "
                           f"finished under {sched.policy}")
    report.outputs.sort(key=lambda o: o.rid)  # rid = index in time order = workload index
    report.aggregates["prefill_weight"] = engine.scheduler.config.prefill_weight  # as learned
    return report, engine.step_log


def workload_server(cfg: DemoConfig, w: Workload) -> Server:
    """`demo_server` for a prepared workload: the model's step cost, its arrivals, the first
    pass's true lengths and its predictors' measured MAEs."""
    return demo_server(cfg, w.cost, w.arrival, np.asarray([len(i) for i in w.ids]), w.true_len,
                       float(w.probe_report["mae"]["prompt_only"]),
                       float(probe_mae(w.probe_report)))


def policy_scheduler(name: str, cfg: DemoConfig, kv_tokens: int, server: Server
                     ) -> te.SchedulerConfig:
    """The scheduler configuration a demo policy serves with: `trail.policies`' set-up with
    the demo's settings, "auto" resolved against `server` (β "auto" is then learned by the
    engine while it serves)."""
    return scheduler_config(name, server, cfg.settings(name), max_running=cfg.max_running,
                            block_size=16, kv_capacity_tokens=16 * (kv_tokens // 16 + 1))


def policy_settings(name: str, cfg: DemoConfig, report: Report | None = None,
                    server: Server | None = None) -> dict[str, Any]:
    """What a demo policy ranks by and with which key (summary.json's `settings`)."""
    sp = spec(name)
    settings = cfg.settings(name)
    srv = server_for(sp.name, server if server is not None else demo_server(cfg))
    sched = resolve(settings, srv)
    lengths = {"probe": "prompt-only, then probe"}.get(sp.lengths, sp.lengths)
    return {"scheduler": sp.scheduler, "lengths": lengths,
            "scores": "LTR (ListMLE on MiniLM) at arrival" if sp.scores else None,
            "c": sched["c"] if sp.scheduler == "TRAIL" else None,
            "prefill_weight": settings.prefill_weight,
            "prefill_weight_used": (report.aggregates.get("prefill_weight")
                                    if report is not None else None),
            "tail": settings.tail, "aging_rate": sched["aging_rate"],
            "boost_gamma": sched["boost_gamma"], "preempt_margin": sched["preempt_margin"],
            "kv_aware": sched["kv_aware"], "auto": describe_auto(settings, srv),
            "rank": settings.rank if lengths else None}


def _summary(cfg: DemoConfig, reports: dict[str, Report], w: Workload) -> dict[str, Any]:
    true_len, report = w.true_len, w.probe_report
    policies = {name: summary_row(r.aggregates) for name, r in reports.items()}
    fcfs = policies["FCFS"]
    ratios = {name: {k: (row[k] / fcfs[k] if fcfs[k] else math.nan)
                     for k in ("latency_s_mean", "latency_s_median", "latency_s_p99", "ttft_s_mean",
                               "throughput_tok_s")}
              for name, row in policies.items()}
    same = {name: int(sum(len(o.output_ids) == n for o, n in zip(r.outputs, true_len)))
            for name, r in reports.items()}
    return {"policies": policies, "ratios_to_fcfs": ratios,
            "settings": {name: policy_settings(name, cfg, r, workload_server(cfg, w))
                         for name, r in reports.items()},
            "probe_mae": probe_mae(report),
            "prompt_only_mae": report["mae"]["prompt_only"], "seed": cfg.seed,
            "machine": describe(),
            "probe": {"layer": report["best_layer"], "bins": report["better_bins"],
                      "layers": report["layers"]},
            "workload": {"requests": cfg.workload, "load": cfg.load,
                         "capacity_req_s": w.capacity, "rate_req_s": cfg.load * w.capacity,
                         "mean_output_tokens": float(true_len.mean()),
                         "p99_output_tokens": float(np.percentile(true_len, 99)),
                         "same_length_as_first_pass": same},
            "model": cfg.model,
            "predictors": report.get("dir"),
            "ranking_on_workload": _ranking(w),
            "clock": {"kind": cfg.clock,
                      "step_cost": asdict(w.step_cost) if w.step_cost is not None else None,
                      "model_step_cost": asdict(w.cost),
                      "fitted_on_first_pass": cfg.model != "demo",
                      "r2": w.timings.get("step_cost_r2")},
            "config": asdict(cfg), "torch": torch.__version__}


def _ranking(w: Workload) -> dict[str, float]:
    """Kendall's τ of each predictor's order of the served requests against their true
    lengths (from the first pass)."""
    from trail.training.ltr import kendall_tau

    return {"ltr": kendall_tau(w.ltr_score, w.true_len),
            "prompt_only": kendall_tau(w.prompt_pred, w.true_len)}


def _write_csv(path: pathlib.Path, summary: dict[str, Any]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        keys = list(SUMMARY_KEYS)
        w.writerow(["policy", *keys, "latency_ratio_to_fcfs", "ttft_ratio_to_fcfs"])
        for name, row in summary["policies"].items():
            r = summary["ratios_to_fcfs"][name]
            w.writerow([name, *(row[k] for k in keys), r["latency_s_mean"], r["ttft_s_mean"]])


def table(summary: dict[str, Any]) -> str:
    """The demo's results as a fixed-width text table."""
    head = (f"{'policy':11s} {'mean lat':>9s} {'p50':>7s} {'p99':>7s} {'mean TTFT':>10s} "
            f"{'tok/s':>7s} {'preempt':>8s} {'lat/FCFS':>9s} {'p99/FCFS':>9s} {'TTFT/FCFS':>10s}")
    lines = [head, "-" * len(head)]
    for name, row in summary["policies"].items():
        r = summary["ratios_to_fcfs"][name]
        lines.append(f"{name:11s} {row['latency_s_mean']:9.3f} {row['latency_s_median']:7.3f} "
                     f"{row['latency_s_p99']:7.3f} {row['ttft_s_mean']:10.3f} "
                     f"{row['throughput_tok_s']:7.0f} {row['preemptions']:8d} "
                     f"{r['latency_s_mean']:9.3f} {r['latency_s_p99']:9.3f} "
                     f"{r['ttft_s_mean']:10.3f}")
    return "\n".join(lines)


def _plots(reports: dict[str, Report], true_len: np.ndarray, prompt_pred: np.ndarray,
           out: pathlib.Path, cfg: DemoConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trail.sim.plots import plot_latency_cdf

    plot_latency_cdf({name: np.array([o.finish_time - o.arrival for o in r.outputs])
                      for name, r in reports.items()}, str(out / "latency_cdf.png"),
                     f"demo: {cfg.workload} requests at load {cfg.load} ({cfg.clock} clock)")
    # A few TRAIL requests across the range of lengths: the probe's prediction of the
    # remaining length after each token against the truth, and the prompt-only guess.
    outputs = reports["TRAIL"].outputs
    order = np.argsort(true_len)
    picks = [int(order[int(q * (len(order) - 1))]) for q in (0.5, 0.75, 0.9, 0.97, 1.0)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, i in enumerate(picks):
        o, n = outputs[i], int(true_len[i])
        if not o.predictions:
            continue
        x = o.prediction_tokens
        color = f"C{k}"
        ax.plot(x, o.predictions, color=color, label=f"request {i}: {n} tokens")
        ax.plot([0, n], [n, 0], color=color, linestyle="--", linewidth=0.8)
        ax.plot([0], [prompt_pred[i]], marker="o", color=color)
    ax.set(xlabel="tokens generated", ylabel="remaining tokens",
           title="TRAIL's probe (solid) vs truth (dashed); dots: prompt-only at arrival")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "predictions.png", dpi=120)
    plt.close(fig)
