"""TRAIL's options inside vLLM, read from `additional_config={"trail": {...}}`.

No vLLM import here: the options are plain JSON (what `vllm serve --additional-config`
takes), validated into a `trail_ext.SchedulerConfig` for the ranker.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import trail_ext as te

# Policies the adapter offers: MLFQ needs the engine's quantum accounting per token, which
# it has, but vLLM's own FCFS is the natural baseline, so every policy is offered.
POLICIES = ("FCFS", "SJF", "SRPT", "TRAIL", "LTR", "MLFQ")


@dataclass
class TrailVllmConfig:
    """The adapter's options (see README, "TRAIL inside vLLM")."""

    policy: str = "TRAIL"
    c: float = 0.8
    preempt_margin: float = 0.0
    prefill_weight: float = 0.0
    aging_rate: float = 0.0
    max_preemptions: int = -1
    starvation_steps: int = 0
    starvation_period: int = 0
    default_predicted_len: float = 128.0
    # Plan rank preemptions (a better request displaces a worse running one). Off: only the
    # queue order changes and vLLM preempts for memory only.
    rank_preemption: bool = True
    # A PromptOnlyPredictor (SJF/TRAIL) or PromptRankPredictor (LTR) checkpoint folder: the
    # request's rank at arrival, from its prompt text.
    prompt_predictor: str | None = None
    # Where the scheduler writes its counters and faults as JSON (every 50 steps and at
    # vLLM's scheduler shutdown): how to watch TRAIL inside `vllm serve`, whose engine runs
    # in a process of its own.
    stats_path: str | None = None

    @classmethod
    def from_additional(cls, additional: dict[str, Any] | None) -> "TrailVllmConfig":
        """Parse `additional_config["trail"]` (missing: defaults); ValueError naming a bad key."""
        raw = (additional or {}).get("trail", {})
        if not isinstance(raw, dict):
            raise ValueError(f"additional_config['trail'] must be a dict, got {raw!r}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ValueError(f"additional_config['trail']: unknown option(s) {unknown}; "
                             f"known: {sorted(names)}")
        cfg = cls(**raw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """ValueError naming the first bad option (ranges as trail_ext.SchedulerConfig's)."""
        if self.policy not in POLICIES:
            raise ValueError(f"trail policy {self.policy!r} is not one of {POLICIES}")
        if not isinstance(self.rank_preemption, bool):
            raise ValueError(f"trail rank_preemption must be a bool, got {self.rank_preemption!r}")
        for name in ("prompt_predictor", "stats_path"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"trail {name} must be a path, got {v!r}")
        for name in ("c", "preempt_margin", "prefill_weight", "aging_rate",
                     "default_predicted_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"trail {name} must be a finite number, got {v!r}")
        self.scheduler_config()  # the ranker's own checks (TypeError/ValueError naming a field)

    def scheduler_config(self) -> te.SchedulerConfig:
        """The ranker's configuration (memory fields are unused: vLLM keeps the memory)."""
        try:
            cfg = te.SchedulerConfig(
                policy=getattr(te.Policy, self.policy), c=float(self.c),
                preempt_margin=float(self.preempt_margin),
                prefill_weight=float(self.prefill_weight), aging_rate=float(self.aging_rate),
                max_preemptions=self.max_preemptions, starvation_steps=self.starvation_steps,
                starvation_period=self.starvation_period,
                default_predicted_len=float(self.default_predicted_len))
            te.Ranker(cfg)  # validates
        except TypeError as exc:
            raise ValueError(f"additional_config['trail']: {exc}") from None
        return cfg
