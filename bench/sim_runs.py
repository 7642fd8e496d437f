"""Shared helpers of bench/sim_compare.py and bench/sim_regimes.py: one simulation run of a
named policy with the overrides these benchmarks need, cached, and a rough run-time estimate.

Overrides on top of `trail.sim.compare.setup` (which stays the single definition of each
named policy, TRAIL's settings coming from `SimSettings`' defaults, i.e. `TRAIL_DEFAULTS`):

- `paper_guard=k`: the aging guard `starvation_steps = k` for TRAIL-paper, whose `setup`
  forces it to 0 (the paper's rule has no guard). SJF takes `starvation_steps` from the
  settings as it is; the other policies ignore `paper_guard`.
- `probe_mae_scale=f`: the simulated embedding probe's MAE at prefill × f (TRAIL,
  TRAIL-paper, SRPT: the policies on `EmbeddingProbe`); the prompt-only prediction a probe
  policy ranks waiting requests by, and SJF's and SJF-work's, keep their MAE.

`simulate_setup` is `trail.sim.compare.run` on an already built `PolicySetup`.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from trail.policies import copy_config
from trail.sim.compare import PolicySetup, SimSettings, at_load, setup, summary_row
from trail.sim.predictors import EmbeddingProbe
from trail.sim.simulator import SimResult, simulate
from trail.sim.traces import Trace

# Rough seconds per 1,000 requests of one run on one core of a 2-core machine shared with
# other simulations (azure-conv, A100 preset, 48 slots, load 0.9; measured on 3,000-request
# heads and full runs): the simulator's fast-forward leaves the policies without a probe at
# ~3 s for the whole 19,366-request trace, the probe's refreshes every 8 tokens cost ~11 s
# and MLFQ (no fast-forward, level bookkeeping) ~60 s.
SECONDS_PER_1K = {"FCFS": 0.16, "SJF": 0.16, "SJF-work": 0.16, "TRAIL+": 0.16, "LTR": 0.16,
                  "TRAIL": 0.6, "TRAIL-paper": 0.6, "SRPT": 0.6, "MLFQ": 3.3}
# relative cost of a trace's request (its output tokens set the iterations; azure-code's
# 28-token answers make its whole 8,819-request trace ~1 s for TRAIL); unknown traces: 1
TRACE_COST = {"azure-conv": 1.0, "azure-code": 0.2, "alpaca-prompts": 1.0}
TRACE_REQUESTS = {"azure-conv": 19366, "azure-code": 8819, "alpaca-prompts": 19366}


def estimate_s(policy: str, trace: str, requests: int | None = None, slots: int = 48,
               guard: bool = False) -> float:
    """A rough wall time (s) of one run, for the estimate printed before a benchmark.

    Fewer slots mean more iterations for the same tokens (measured: ~(48 / slots)^0.7); a
    starvation guard turns off the simulator's fast-forward (~2× for the policies without a
    probe).
    """
    n = requests if requests is not None else TRACE_REQUESTS.get(trace, 19366)
    base = SECONDS_PER_1K.get(policy, 0.6) * n / 1000 * TRACE_COST.get(trace, 1.0)
    if guard and policy in ("SJF", "SJF-work", "TRAIL+", "FCFS", "LTR"):
        base *= 2.0
    return base * (48 / slots) ** 0.7


def policy_setup(name: str, settings: SimSettings, *, paper_guard: int | None = None,
                 probe_mae_scale: float = 1.0) -> PolicySetup:
    """`setup(name, settings)` with the overrides of the module docstring."""
    ps = setup(name, settings)
    if paper_guard is not None and ps.name == "TRAIL-paper":
        ps = replace(ps, settings=replace(ps.settings, starvation_steps=int(paper_guard)),
                     config=copy_config(ps.config, starvation_steps=int(paper_guard),
                                        starvation_period=ps.settings.starvation_period))
    if probe_mae_scale != 1.0 and isinstance(ps.predictor, EmbeddingProbe):
        if not (math.isfinite(probe_mae_scale) and probe_mae_scale > 0):
            raise ValueError(f"probe_mae_scale={probe_mae_scale!r} must be finite and > 0")
        ps = replace(ps, predictor=replace(ps.predictor,
                                           mae=ps.predictor.mae * probe_mae_scale))
    return ps


def simulate_setup(trace: Trace, ps: PolicySetup) -> SimResult:
    """Simulate `trace` (already at the wanted rate) under a built policy setup."""
    s = ps.settings
    return simulate(trace.arrival_s, trace.prompt_tokens, trace.output_tokens,
                    ps.config, s.cost, ps.predictor,
                    predict_every=s.predict_every, seed=s.seed)


def result_row(result: SimResult) -> dict[str, Any]:
    """summary.json's per-policy entry, plus p99 TTFT, KV evictions and the wall time."""
    st = result.stats
    return {**summary_row(result), "ttft_s_p99": result.aggregates().get("ttft_s_p99", np.nan),
            "kv_drops": int(st.get("drops", 0)), "kv_swap_outs": int(st.get("swap_outs", 0)),
            "wall_s": result.wall_s}


@dataclass
class Runner:
    """Runs keyed by (trace, load, effective settings, predictor): a run the grid asks for
    twice (e.g. TRAIL at α = its default in the load table and on the frontier) runs once.
    `at_load` results are cached too (capacity costs an FCFS simulation)."""

    keep_latency: bool = False
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies: dict[str, np.ndarray] = field(default_factory=dict)
    scaled: dict[tuple[Any, ...], tuple[Trace, float]] = field(default_factory=dict)
    runs: int = 0
    cached: int = 0

    def at_load(self, trace: Trace, settings: SimSettings) -> tuple[Trace, float]:
        """`trail.sim.compare.at_load`, cached by trace and the settings capacity reads."""
        key = (id(trace), settings.load, settings.max_running, settings.kv_utilization,
               settings.block_size, settings.cost.name, settings.seed)
        if key not in self.scaled:
            self.scaled[key] = at_load(trace, settings)
        return self.scaled[key]

    @staticmethod
    def key(trace: Trace, name: str, settings: SimSettings, **overrides: Any) -> str:
        """What identifies a run: the trace, the load, the policy's effective settings and
        its predictor (a fresh one: its repr holds every parameter)."""
        ps = policy_setup(name, settings, **overrides)
        return json.dumps([id(trace), settings.load, ps.name, repr(ps.settings),
                           repr(ps.predictor)])

    def run(self, trace: Trace, name: str, settings: SimSettings, **overrides: Any
            ) -> dict[str, Any]:
        """The result row of `name` on `trace` rescaled to `settings.load` (a copy)."""
        scaled, cap = self.at_load(trace, settings)
        ps = policy_setup(name, settings, **overrides)
        key = self.key(trace, name, settings, **overrides)
        if key in self.rows:
            self.cached += 1
        else:
            result = simulate_setup(scaled, ps)
            self.runs += 1
            self.rows[key] = {"load": settings.load, "rate_req_s": scaled.rate,
                              "capacity_req_s": cap, **result_row(result)}
            if self.keep_latency:
                self.latencies[key] = result.finish - result.arrival
        return dict(self.rows[key])

    def latency(self, trace: Trace, name: str, settings: SimSettings, **overrides: Any
                ) -> np.ndarray | None:
        """The per-request latencies of a run made with keep_latency=True (None if not)."""
        return self.latencies.get(self.key(trace, name, settings, **overrides))


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float:
    """a[key] / b[key], NaN when either row is missing or the denominator is not > 0."""
    if a is None or b is None:
        return math.nan
    x, y = a.get(key, math.nan), b.get(key, math.nan)
    return float(x) / float(y) if y and y > 0 and math.isfinite(y) else math.nan


def fmt(x: float, spec: str = ".2f") -> str:
    """A table cell: the number, or – when it was not measured."""
    return "–" if x is None or not math.isfinite(x) else format(x, spec)


def plain_settings(s: SimSettings) -> dict[str, Any]:
    """SimSettings as JSON-able fields (the cost model by name)."""
    out = {k: v for k, v in vars(s).items() if k != "cost"}
    out["cost"] = s.cost.name
    return out


def write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    """JSON with NaN written as null (strict JSON)."""
    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x
    path.write_text(json.dumps(clean(data), indent=1) + "\n")
