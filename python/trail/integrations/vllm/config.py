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
from trail import policies

# Every named set-up of trail.policies (TRAIL+ needs the true lengths as client hints,
# extra_args["trail_predicted_len"]).
POLICIES = policies.POLICY_NAMES
# The settings a user may override, for the set-ups that take TRAIL's settings.
TRAIL_FIELDS = ("c", "prefill_weight", "tail", "aging_rate", "boost_gamma", "preempt_margin",
                "rebuild_cost")
GUARD_FIELDS = ("max_preemptions", "starvation_steps", "starvation_period")


@dataclass
class TrailVllmConfig:
    """The adapter's options (see README, "TRAIL inside vLLM"): a named set-up of
    `trail.policies`, built exactly as the simulator, the demo and the engine build it."""

    policy: str = "TRAIL"
    # Overrides of TRAIL's settings (None: the set-up's own); refused for the baselines,
    # which run as their authors describe them.
    c: float | None = None
    prefill_weight: float | str | None = None
    tail: str | None = None
    aging_rate: float | str | None = None
    boost_gamma: float | str | None = None
    preempt_margin: float | None = None
    # A rank preemption's KV rebuild per token / a prefill token's; "auto" (TRAIL's): 1,
    # since vLLM recomputes a preempted request
    rebuild_cost: float | str | None = None
    # The guards (every set-up but TRAIL-paper); None: the set-up's own.
    max_preemptions: int | None = None
    starvation_steps: int | None = None
    starvation_period: int | None = None
    default_predicted_len: float = 128.0
    # What was measured of this server for the "auto" settings (trail.policies.Server's
    # fields: prefill_weight, decode_tokens_per_s, work_rate, boost_gamma). The adapter does
    # not yet measure them itself: an "auto" setting not given here resolves to 0 (the rule
    # without that term) and `resolved_auto()` says so.
    server: dict[str, float] | None = None
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
        try:
            self.policy = policies.canonical_name(self.policy)
        except ValueError as exc:
            raise ValueError(f"trail policy: {exc}") from None
        if not isinstance(self.rank_preemption, bool):
            raise ValueError(f"trail rank_preemption must be a bool, got {self.rank_preemption!r}")
        for name in ("prompt_predictor", "stats_path"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"trail {name} must be a path, got {v!r}")
        v = self.default_predicted_len
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"trail default_predicted_len must be a finite number, got {v!r}")
        if self.server is not None and not isinstance(self.server, dict):
            raise ValueError(f"trail server must be a dict, got {self.server!r}")
        self.scheduler_config()  # the set-up's and the ranker's checks (naming the field)

    def settings(self) -> policies.Settings:
        """The set-up's settings with this config's overrides."""
        sp = policies.spec(self.policy)
        given = {k: getattr(self, k) for k in TRAIL_FIELDS if getattr(self, k) is not None}
        if given and not sp.work:
            raise ValueError(f"trail {sorted(given)}: {sp.name} runs as its authors describe "
                             f"it; only set-ups that take TRAIL's settings "
                             f"({', '.join(n for n, x in policies.SPECS.items() if x.work)}) "
                             f"accept them")
        s = policies.settings_of(sp.name, **given)
        guards = {k: getattr(self, k) for k in GUARD_FIELDS if getattr(self, k) is not None}
        if guards and not sp.guards:
            raise ValueError(f"trail {sorted(guards)}: {sp.name} has no guards")
        return s.with_(**guards)

    def server_measured(self) -> policies.Server:
        """`server` as trail.policies.Server (ValueError naming an unknown or bad field)."""
        known = {f.name for f in dataclasses.fields(policies.Server)}
        raw = self.server or {}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"trail server: unknown field(s) {unknown}; known: {sorted(known)}")
        raw = {k: v for k, v in raw.items() if v is not None}  # None: not measured
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (
                    math.isfinite(v) and v >= 0):
                raise ValueError(f"trail server.{k} must be a finite number >= 0, got {v!r}")
        return policies.Server(**{k: float(v) for k, v in raw.items()})

    def resolved_auto(self) -> dict[str, Any]:
        """Each "auto" setting, the value it resolved to, and whether it was measured."""
        return policies.describe_auto(self.settings(),
                                      policies.server_for(self.policy, self.server_measured()))

    def scheduler_config(self, max_running: int | None = None) -> te.SchedulerConfig:
        """The ranker's configuration; `max_running`: vLLM's max_num_seqs (the batch a
        preemption's recompute is shared by); the memory fields are unused (vLLM keeps the
        memory)."""
        memory = {} if max_running is None else {"max_running": int(max_running)}
        try:
            cfg = policies.scheduler_config(
                self.policy, self.server_measured(), self.settings(),
                default_predicted_len=float(self.default_predicted_len), **memory)
            te.Ranker(cfg)  # validates
        except TypeError as exc:
            raise ValueError(f"additional_config['trail']: {exc}") from None
        return cfg
