"""Named policy setups and side-by-side simulation runs (`trail simulate`).

Each name pairs a scheduler policy with what it is told about lengths:
FCFS (nothing), SJF (prompt-only prediction at arrival: "SJF-prompt"), SRPT and TRAIL (the
embedding probe, refreshed every `predict_every` tokens), TRAIL+ (TRAIL on true lengths, the
oracle bound), LTR (learned-to-rank scores), MLFQ (FastServe's multi-level feedback queue).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import trail_ext as te
from trail.sim.cost_model import CostModel
from trail.sim.predictors import LTR, EmbeddingProbe, Oracle, PromptOnly
from trail.sim.simulator import SimResult, capacity, simulate
from trail.sim.traces import Trace

POLICY_NAMES = ("FCFS", "SJF", "SRPT", "TRAIL", "TRAIL+", "LTR", "MLFQ")
COMPARE = ("FCFS", "SJF", "SRPT", "TRAIL", "TRAIL+", "LTR")


@dataclass
class SimSettings:
    """Everything a run needs besides the trace and the policy."""

    cost: CostModel
    load: float = 0.8
    c: float = 0.8
    max_running: int = 48
    block_size: int = 16
    kv_utilization: float = 0.9
    predict_every: int = 8
    seed: int = 0
    max_preemptions: int = -1     # per request, for preemptive policies (-1: unbounded)
    starvation_steps: int = 0     # aging guard for size-based policies (0: off)
    starvation_period: int = 10**9
    prefill_weight: float = 0.0   # work-aware key (SJF, SRPT, TRAIL): β × pending prefill
    aging_rate: float = 0.0       # ... + α × arrival, tokens per second
    preempt_margin: float = 0.0   # preemption for rank needs a key gap above this

    def scheduler(self, policy: te.Policy) -> te.SchedulerConfig:
        """The scheduler config for `policy` under these settings."""
        return te.SchedulerConfig(policy=policy, max_running=self.max_running,
                                  block_size=self.block_size, c=self.c,
                                  kv_capacity_tokens=self.cost.kv_capacity_tokens(
                                      self.kv_utilization),
                                  max_preemptions=self.max_preemptions,
                                  starvation_steps=self.starvation_steps,
                                  starvation_period=self.starvation_period,
                                  prefill_weight=self.prefill_weight,
                                  aging_rate=self.aging_rate,
                                  preempt_margin=self.preempt_margin)


def setup(name: str, predict_every: int) -> tuple[te.Policy, Any]:
    """(scheduler policy, predictor) for a policy name of POLICY_NAMES."""
    key = name.upper()
    table = {"FCFS": (te.Policy.FCFS, Oracle()), "SJF": (te.Policy.SJF, PromptOnly()),
             "SRPT": (te.Policy.SRPT, EmbeddingProbe(predict_every=predict_every)),
             "TRAIL": (te.Policy.TRAIL, EmbeddingProbe(predict_every=predict_every)),
             "TRAIL+": (te.Policy.TRAIL, Oracle()), "LTR": (te.Policy.LTR, LTR()),
             "MLFQ": (te.Policy.MLFQ, Oracle())}
    if key not in table:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
    return table[key]


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
    policy, predictor = setup(name, settings.predict_every)
    return simulate(trace.arrival_s, trace.prompt_tokens, trace.output_tokens,
                    settings.scheduler(policy), settings.cost, predictor,
                    predict_every=settings.predict_every, seed=settings.seed, progress=progress,
                    desc=desc or f"simulating {name}")


def summary_row(result: SimResult) -> dict[str, float]:
    """The per-policy entry of summary.json."""
    a = result.aggregates()
    return {"mean_latency_s": a.get("latency_s_mean", np.nan),
            "p50_latency_s": a.get("latency_s_median", np.nan),
            "p99_latency_s": a.get("latency_s_p99", np.nan),
            "mean_ttft_s": a.get("ttft_s_mean", np.nan),
            "throughput_tok_s": a["throughput_tok_s"], "preemptions": a["preemptions"],
            "submitted": a["submitted"], "finished": a["finished"]}


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
    best = min(rows, key=lambda r: (round(r["mean_latency_s"], 9), r["c"]))
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
