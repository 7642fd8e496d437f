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

    def scheduler(self, policy: te.Policy) -> te.SchedulerConfig:
        """The scheduler config for `policy` under these settings."""
        return te.SchedulerConfig(policy=policy, max_running=self.max_running,
                                  block_size=self.block_size, c=self.c,
                                  kv_capacity_tokens=self.cost.kv_capacity_tokens(
                                      self.kv_utilization))


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


def run(trace: Trace, name: str, settings: SimSettings, progress: bool = False) -> SimResult:
    """Simulate `trace` (already at the wanted rate) under one named policy."""
    policy, predictor = setup(name, settings.predict_every)
    return simulate(trace.arrival_s, trace.prompt_tokens, trace.output_tokens,
                    settings.scheduler(policy), settings.cost, predictor,
                    predict_every=settings.predict_every, seed=settings.seed, progress=progress)


def summary_row(result: SimResult) -> dict[str, float]:
    """The per-policy entry of summary.json."""
    a = result.aggregates()
    return {"mean_latency_s": a.get("latency_s_mean", np.nan),
            "p50_latency_s": a.get("latency_s_median", np.nan),
            "p99_latency_s": a.get("latency_s_p99", np.nan),
            "mean_ttft_s": a.get("ttft_s_mean", np.nan),
            "throughput_tok_s": a["throughput_tok_s"], "preemptions": a["preemptions"],
            "submitted": a["submitted"], "finished": a["finished"]}
