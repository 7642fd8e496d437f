"""Side-by-side simulation runs of the named policy set-ups (`trail simulate`).

The set-ups themselves (which scheduler, what it knows of lengths, which key) are the table
in `trail.policies`; this module gives them the simulator's settings and predictors.
`SimSettings` holds TRAIL's recommended settings (`TRAIL_DEFAULTS`); the paper's rule
(`PAPER_RULE`) serves the set-ups that do not use TRAIL's work-aware key.

`setup(name, settings)` returns a policy's effective settings; `describe` turns them into the
dict that `trail simulate` prints and writes to summary.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


import trail_ext as te
from trail import metrics
from trail.sim.cost_model import CostModel
from trail.sim.predictors import (
    DEFAULT_CORR_TOKENS,
    LTR,
    RANKS,
    EmbeddingProbe,
    Oracle,
    PromptOnly,
)
from trail.engine.prefill_weight import AGING_FRACTION
from trail.policies import spec
from trail.sim.simulator import SimResult, capacity, simulate
from trail.sim.traces import Trace


# TRAIL's recommended settings: the one place they live. SimSettings' defaults, hence those of
# `trail simulate`, `trail tune-c` and bench/sim_compare.py, come from here. They are chosen
# by bench/sim_compare.py measurements (the engineer who runs them updates these values).
# prefill_weight "auto": β from the cost model, CostModel.prefill_weight(batch=max_running).
# aging_rate "auto": AGING_FRACTION of one request's decode speed at a full batch
# (CostModel.decode_tokens_per_s(batch=max_running)): aging in the units of the server's
# own speed, so one setting means the same on a slow or a fast GPU.
# preempt_margin 256 tokens: with the simulated probe's errors a preemption for rank pays
# only when the victim's key is far above the newcomer's: on azure-conv at load 0.9 margin 0
# gives 24.40 s against 23.27 s at 256 (A100; H100: 7.05 against 6.65 s), where SJF-work,
# which never preempts, gives 23.41 s (`trail simulate --policy TRAIL --preempt-margin 0`).
# rank "mean": the Gittins rank measured no better (23.37 s) and costs more.
# kv_aware: fill only while the batch's predicted KV fits (docs/scheduler.md); with binding
# KV it cut TRAIL's mean latency 24% (no evictions); with ample KV it changes nothing.
TRAIL_DEFAULTS: dict[str, Any] = {"prefill_weight": "auto", "aging_rate": "auto",
                                  "preempt_margin": 256.0, "rank": "mean", "c": 0.8,
                                  "kv_aware": True}
# The paper's rule (SJF's and TRAIL-paper's keys): output tokens only, no margin.
PAPER_RULE: dict[str, Any] = {"prefill_weight": 0.0, "aging_rate": 0.0, "preempt_margin": 0.0,
                              "rank": "mean", "c": 0.8, "kv_aware": False}


def _auto_or_number(value: float | str, name: str, auto: Any) -> float:
    """A setting as a finite number >= 0: `value` itself, or `auto()` for "auto"."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return float(auto())
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{name}={value!r}: expected a number or 'auto'") from None
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r} must be finite and >= 0")
    return value


def resolve_aging_rate(value: float | str, cost: Any, batch: int) -> float:
    """α in tokens per second: `value` itself, or for "auto" AGING_FRACTION × the decode
    speed of one request at a batch of `batch` (0 for a cost model without one)."""
    method = getattr(cost, "decode_tokens_per_s", None)
    return _auto_or_number(value, "aging_rate", lambda: AGING_FRACTION * method(batch=batch)
                           if method is not None else 0.0)


def resolve_prefill_weight(value: float | str, cost: Any, batch: int) -> float:
    """β as a number: `value` itself, or for "auto" the cost model's
    `prefill_weight(batch=batch)` (0 for a cost model without one, e.g. UniformCost, whose
    iterations cost the same whatever they prefill)."""
    method = getattr(cost, "prefill_weight", None)
    return _auto_or_number(value, "prefill_weight",
                           lambda: method(batch=batch) if method is not None else 0.0)


@dataclass
class SimSettings:
    """Everything a run needs besides the trace and the policy; TRAIL's rule by default is
    TRAIL_DEFAULTS."""

    cost: CostModel
    load: float = 0.8
    c: float = TRAIL_DEFAULTS["c"]
    max_running: int = 48
    block_size: int = 16
    kv_utilization: float = 0.9
    predict_every: int = 8
    seed: int = 0
    max_preemptions: int = -1     # per request, for preemptive policies (-1: unbounded)
    starvation_steps: int = 0     # aging guard for size-based policies (0: off)
    starvation_period: int = 10**9
    # TRAIL's work-aware key (also SJF-work's and SRPT's): size + β × pending prefill
    # + α × arrival (α in tokens per second); β a number or "auto" (from the cost model)
    prefill_weight: float | str = TRAIL_DEFAULTS["prefill_weight"]
    aging_rate: float | str = TRAIL_DEFAULTS["aging_rate"]  # tokens/s, or "auto"
    preempt_margin: float = TRAIL_DEFAULTS["preempt_margin"]  # key gap preemption needs
    rank: str = TRAIL_DEFAULTS["rank"]  # "mean" or "gittins" (trail.sim.predictors)
    kv_aware: bool = TRAIL_DEFAULTS["kv_aware"]  # fill only while predicted KV fits
    corr_tokens: float = DEFAULT_CORR_TOKENS  # the simulated probe error's correlation length

    def __post_init__(self) -> None:
        if self.rank not in RANKS:
            raise ValueError(f"rank={self.rank!r} must be one of {', '.join(RANKS)}")
        if not (isinstance(self.corr_tokens, (int, float)) and math.isfinite(self.corr_tokens)
                and self.corr_tokens >= 0):
            raise ValueError(f"corr_tokens={self.corr_tokens!r} must be finite and >= 0")
        _ = self.beta, self.alpha  # a bad β or α fails here, naming itself

    @property
    def beta(self) -> float:
        """prefill_weight as a number ("auto" resolved from the cost model)."""
        return resolve_prefill_weight(self.prefill_weight, self.cost, self.max_running)

    @property
    def alpha(self) -> float:
        """aging_rate in tokens per second ("auto" resolved from the cost model)."""
        return resolve_aging_rate(self.aging_rate, self.cost, self.max_running)

    def scheduler(self, policy: te.Policy) -> te.SchedulerConfig:
        """The scheduler config for `policy` under these settings."""
        return te.SchedulerConfig(policy=policy, max_running=self.max_running,
                                  block_size=self.block_size, c=self.c,
                                  kv_capacity_tokens=self.cost.kv_capacity_tokens(
                                      self.kv_utilization),
                                  max_preemptions=self.max_preemptions,
                                  starvation_steps=self.starvation_steps,
                                  starvation_period=self.starvation_period,
                                  prefill_weight=self.beta,
                                  aging_rate=self.alpha,
                                  preempt_margin=self.preempt_margin,
                                  kv_aware=self.kv_aware)


@dataclass(frozen=True)
class PolicySetup:
    """A named policy: its scheduler policy, predictor and effective settings."""

    name: str
    policy: te.Policy
    predictor: Any
    settings: SimSettings


def setup(name: str, settings: SimSettings) -> PolicySetup:
    """The scheduler policy, predictor and effective settings of a name of POLICY_NAMES."""
    sp = spec(name)
    if sp.work:
        s = settings
    elif sp.lengths in ("prompt-only", "probe"):  # the paper's rule
        s = replace(settings, **PAPER_RULE)
        if not sp.guards:
            s = replace(s, max_preemptions=-1, starvation_steps=0)
    else:
        # FCFS, LTR and MLFQ are the baselines as their authors run them: TRAIL's margin and
        # KV-aware filling are TRAIL's (a 256-token margin would stop LTR's and MLFQ's
        # preemptions altogether: their keys are scores and queue levels, not tokens).
        s = replace(settings, preempt_margin=0.0, kv_aware=False)
    if sp.scores:
        predictor: Any = LTR()
    elif sp.lengths == "prompt-only":
        predictor = PromptOnly(rank=s.rank)
    elif sp.lengths == "probe":
        predictor = EmbeddingProbe(predict_every=s.predict_every, corr_tokens=s.corr_tokens,
                                   rank=s.rank)
    else:  # FCFS and MLFQ ignore lengths; TRAIL+ is told the true ones
        predictor = Oracle()
    return PolicySetup(sp.name, sp.policy, predictor, s)


def describe(ps: PolicySetup) -> dict[str, Any]:
    """The settings that act on a policy (summary.json's `policy_settings` entry)."""
    s, p = ps.settings, ps.policy
    out: dict[str, Any] = {"scheduler": p.name, "predictor": ps.predictor.name}
    if p in (te.Policy.SJF, te.Policy.SRPT, te.Policy.TRAIL):
        out.update(prefill_weight=s.beta, aging_rate=s.alpha, kv_aware=s.kv_aware)
    if p in (te.Policy.SRPT, te.Policy.TRAIL, te.Policy.LTR, te.Policy.MLFQ):
        out.update(preempt_margin=s.preempt_margin, max_preemptions=s.max_preemptions)
    if p == te.Policy.TRAIL:
        out["c"] = s.c
    if p != te.Policy.FCFS:
        out["starvation_steps"] = s.starvation_steps
    if isinstance(ps.predictor, (PromptOnly, EmbeddingProbe)):
        out.update(rank=ps.predictor.rank, prediction_mae=ps.predictor.mae)
    if isinstance(ps.predictor, EmbeddingProbe):
        out.update(predict_every=ps.predictor.predict_every,
                   corr_tokens=ps.predictor.corr_tokens)
    if isinstance(ps.predictor, LTR):
        out["kendall_tau"] = ps.predictor.tau
    return out


def describe_short(d: dict[str, Any]) -> str:
    """One line of `describe`'s dict, for tables: predictor/rank, β, α, margin, c."""
    parts = [d["predictor"] + (f"/{d['rank']}" if "rank" in d else "")]
    if "prefill_weight" in d:
        parts.append(f"β {d['prefill_weight']:.3g} α {d['aging_rate']:.3g}")
    if "preempt_margin" in d and d["scheduler"] in ("SRPT", "TRAIL"):
        parts.append(f"margin {d['preempt_margin']:.3g}")
    if "c" in d:
        parts.append(f"c {d['c']:.3g}")
    return ", ".join(parts)


def at_load(trace: Trace, settings: SimSettings) -> tuple[Trace, float]:
    """The trace rescaled in time to `settings.load` of capacity, and that capacity (req/s)."""
    if not 0 < settings.load < 1.5:
        raise ValueError(f"load={settings.load!r} must be in (0, 1.5)")
    cap = capacity(trace.prompt_tokens, trace.output_tokens,
                   settings.scheduler(te.Policy.FCFS), settings.cost,
                   n=min(2000, max(200, len(trace))), seed=settings.seed)
    return trace.scaled_to_rate(settings.load * cap), cap


def run(trace: Trace, name: str, settings: SimSettings, progress: bool = False,
        desc: str | None = None) -> SimResult:
    """Simulate `trace` (already at the wanted rate) under one named policy; `desc` labels
    the progress bar (default: the policy's name)."""
    ps = setup(name, settings)
    s = ps.settings
    return simulate(trace.arrival_s, trace.prompt_tokens, trace.output_tokens,
                    s.scheduler(ps.policy), s.cost, ps.predictor,
                    predict_every=s.predict_every, seed=s.seed, progress=progress,
                    desc=desc or f"simulating {ps.name}")


def summary_row(result: SimResult) -> dict[str, float]:
    """The per-policy entry of summary.json."""
    return metrics.summary_row(result.aggregates())


def sweep_c(trace: Trace, settings: SimSettings, cs: list[float],
            progress: bool = False) -> dict[str, Any]:
    """Mean latency of TRAIL for each c, by simulation and by M/G/1 theory; the best c.

    `trace` must already be at the wanted rate (see `at_load`). The recommendation is the c
    with the lowest simulated mean latency; ties go to the smaller c (fewer preemptions).
    """
    from dataclasses import replace

    from trail.sim.theory import mean_response_time

    if not cs or any(not 0 <= c <= 1 for c in cs):
        raise ValueError(f"c values must be in [0, 1], got {cs}")
    rows = []
    for c in sorted(set(cs)):
        result = run(trace, "TRAIL", replace(settings, c=c), progress=progress,
                     desc=f"simulating TRAIL, c={c:g}")
        row = summary_row(result)
        row["c"] = c
        row["theory_mean_response_tokens"] = mean_response_time(
            trace.output_tokens.astype(float), min(settings.load, 0.99), c)
        rows.append(row)
    best = min(rows, key=lambda r: (round(r["latency_s_mean"], 9), r["c"]))
    theory_best = min(rows, key=lambda r: (r["theory_mean_response_tokens"], r["c"]))
    return {"rows": rows, "recommended_c": best["c"], "theory_best_c": theory_best["c"]}


def sweep_loads(trace: Trace, names: list[str], settings: SimSettings, loads: list[float],
                progress: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every named policy at every load (the paper's Figure 6), and the runs themselves.

    Returns (rows of {load, rate_req_s, policy, **summary_row}, {(load, name): SimResult}).
    """
    from dataclasses import replace

    rows, results = [], {}
    for load in loads:
        scaled, cap = at_load(trace, replace(settings, load=load))
        for name in names:
            result = run(scaled, name, settings, progress=progress,
                         desc=f"simulating {name} at load {load:g}")
            results[(load, name)] = result
            rows.append({"load": load, "rate_req_s": scaled.rate, "policy": name,
                         **summary_row(result)})
    return rows, results
