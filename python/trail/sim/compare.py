"""Side-by-side simulation runs of the named policy set-ups (`trail simulate`).

The set-ups themselves (which scheduler, what it knows of lengths, every setting) are the
table in `trail.policies`; this module measures the simulated server for their "auto"
settings (`server`: β and the decode speed from the cost model, the Boost key's γ and work
rate from the trace's arrival rate and work sizes) and gives them the simulator's
predictors. `SimSettings` holds the run's sizes and TRAIL's settings, by default
`trail.policies.TRAIL_SETTINGS`; a surface's overrides of them apply to the set-ups that take
TRAIL's settings, the baselines run as their authors describe them.

`setup(name, settings, trace)` returns a policy's effective settings; `describe` turns them
into the dict that `trail simulate` prints and writes to summary.json.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, replace
from typing import Any


import trail_ext as te
from trail import metrics
from trail import policies
from trail.policies import (AGING_FRACTION, TRAIL_SETTINGS, Server, Settings, boost_gamma,
                            spec)
from trail.sim.cost_model import CostModel
from trail.sim.predictors import (
    DEFAULT_CORR_TOKENS,
    DEFAULT_PROBE_MAE,
    DEFAULT_PROMPT_MAE,
    LTR,
    RANKS,
    EmbeddingProbe,
    Oracle,
    PromptOnly,
)
from trail.sim.simulator import SimResult, capacity, simulate
from trail.sim.traces import Trace

__all__ = ["AGING_FRACTION", "TRAIL_DEFAULTS", "SimSettings", "setup", "describe", "run"]

# TRAIL's recommended settings as a dict (trail.policies.TRAIL_SETTINGS is the definition).
TRAIL_DEFAULTS: dict[str, Any] = dataclasses.asdict(TRAIL_SETTINGS)


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


def resolve_prefill_weight(value: float | str, cost: Any, batch: int) -> float:
    """β as a number: `value` itself, or for "auto" the cost model's
    `prefill_weight(batch=batch)` (0 for a cost model without one, e.g. UniformCost, whose
    iterations cost the same whatever they prefill)."""
    method = getattr(cost, "prefill_weight", None)
    return _auto_or_number(value, "prefill_weight",
                           lambda: method(batch=batch) if method is not None else 0.0)


def server(cost: Any, max_running: int, prefill_weight: float | str = "auto",
           trace: Trace | None = None, load: float | None = None) -> Server:
    """What the simulated server measures for the "auto" settings: β (`prefill_weight`, or
    the cost model's at a full batch) and one request's decode speed at a full batch from the
    cost model; the work rate R (tokens of work per second, work in decode tokens as β counts
    it) = `max_running` × that speed, or with `trace` (at its served rate) and the `load` it
    was rescaled to, its work arrival rate / load (what the server sustains when saturated,
    which load is relative to); with `trace`, Boost's γ from its arrival rate and works
    (output + β × prompt); the MAEs of the simulated predictors (prompt-only at arrival, the
    probe once running)."""
    beta = resolve_prefill_weight(prefill_weight, cost, max_running)
    method = getattr(cost, "decode_tokens_per_s", None)
    speed = None if method is None else float(method(batch=max_running))
    rate = None if speed is None else max_running * speed
    gamma = None
    if trace is not None and len(trace) > 1 and trace.duration_s > 0:
        works = trace.output_tokens + beta * trace.prompt_tokens
        if load is not None:
            rate = trace.rate * float(works.mean()) / load
        if rate is not None:
            gamma = boost_gamma(trace.rate, works, rate)
    return Server(prefill_weight=beta, decode_tokens_per_s=speed, work_rate=rate,
                  boost_gamma=gamma, batch=max_running, arrival_mae=DEFAULT_PROMPT_MAE,
                  probe_mae=DEFAULT_PROBE_MAE)


@dataclass
class SimSettings:
    """Everything a run needs besides the trace and the policy; TRAIL's settings by default
    are trail.policies.TRAIL_SETTINGS."""

    cost: CostModel
    load: float = 0.8
    c: float = TRAIL_SETTINGS.c
    max_running: int = 48
    block_size: int = 16
    kv_utilization: float = 0.9
    # Host memory for swapped-out KV, GiB (an eviction swaps while it fits, then drops and
    # recomputes): vLLM's swap_space; vllm-ltr's benchmarks give 16-40, FastServe's 56.
    swap_gib: float = 16.0
    # What a preemption does with the victim's KV (trail_ext.PreemptMode's names): KEEP holds
    # it on the device (rank preemptions only; memory pressure swaps or drops), SWAP copies
    # it to the host while there is room, RECOMPUTE drops it (vLLM V1's only mode).
    preempt_mode: str = "KEEP"
    predict_every: int = 8
    seed: int = 0
    # The run's guards, overriding every set-up's but TRAIL-paper's (None: the set-up's own):
    # preemptions per request (-1: unbounded), the aging guard (0: off) and its period.
    max_preemptions: int | None = None
    starvation_steps: int | None = None
    starvation_period: int = 10**9
    # TRAIL's key (also SJF-work's, SRPT's and TRAIL+'s): size + β × pending prefill, and a
    # tail term: none, linear aging (+ α × arrival, α tokens/s) or Boost (α × arrival −
    # B(work), γ per token); numbers or "auto" (trail.policies.resolve)
    prefill_weight: float | str = TRAIL_SETTINGS.prefill_weight
    tail: str = TRAIL_SETTINGS.tail
    aging_rate: float | str = TRAIL_SETTINGS.aging_rate
    boost_gamma: float | str = TRAIL_SETTINGS.boost_gamma
    preempt_margin: float | str = TRAIL_SETTINGS.preempt_margin  # key gap preemption needs
    # a preemption's KV rebuild per token / a prefill token's ("auto": the preempt mode's)
    rebuild_cost: float | str = TRAIL_SETTINGS.rebuild_cost
    rank: str = TRAIL_SETTINGS.rank  # "mean" or "gittins" (trail.sim.predictors)
    kv_aware: bool = TRAIL_SETTINGS.kv_aware  # fill only while predicted KV fits
    corr_tokens: float = DEFAULT_CORR_TOKENS  # the simulated probe error's correlation length

    def __post_init__(self) -> None:
        if self.rank not in RANKS:
            raise ValueError(f"rank={self.rank!r} must be one of {', '.join(RANKS)}")
        if self.preempt_mode not in te.PreemptMode.__members__:
            raise ValueError(f"preempt_mode={self.preempt_mode!r} must be one of "
                             f"{', '.join(te.PreemptMode.__members__)}")
        for name in ("corr_tokens", "swap_gib"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}={v!r} must be finite and >= 0")
        _ = self.beta            # a bad β fails here, naming itself
        self.trail_settings()    # so do the other settings

    def trail_settings(self) -> Settings:
        """TRAIL's settings as these SimSettings hold them ("auto" kept)."""
        pw = self.prefill_weight
        pw = pw if pw == "auto" else _auto_or_number(pw, "prefill_weight", lambda: 0.0)
        return TRAIL_SETTINGS.with_(
            c=self.c, prefill_weight=pw, tail=self.tail, aging_rate=self.aging_rate,
            boost_gamma=self.boost_gamma, preempt_margin=self.preempt_margin,
            rebuild_cost=self.rebuild_cost, kv_aware=self.kv_aware, rank=self.rank,
            **self.guards())

    def guards(self) -> dict[str, int]:
        """The run's overrides of the preemption cap and the starvation guard (its period
        with it, when it is on)."""
        out: dict[str, int] = {}
        if self.max_preemptions is not None:
            out["max_preemptions"] = self.max_preemptions
        if self.starvation_steps is not None:
            out["starvation_steps"] = self.starvation_steps
            out["starvation_period"] = self.starvation_period if self.starvation_steps else 0
        return out

    def server(self, trace: Trace | None = None) -> Server:
        """`trail.sim.compare.server` for these settings (see there); in SWAP mode a
        preemption's rebuild is the KV's copy out and back, as a share of its prefill."""
        srv = server(self.cost, self.max_running, self.prefill_weight, trace, self.load)
        swap, speed = getattr(self.cost, "swap_time", None), srv.decode_tokens_per_s
        if self.preempt_mode == "SWAP" and swap is not None and speed and srv.prefill_weight:
            # a decode token's server time is a step / the batch; a prefill token's, β of it
            prefill_s = srv.prefill_weight / (speed * self.max_running)
            srv = dataclasses.replace(srv, rebuild_cost=2.0 * swap(1.0) / prefill_s)
        return srv

    @property
    def beta(self) -> float:
        """prefill_weight as a number ("auto" resolved from the cost model)."""
        return resolve_prefill_weight(self.prefill_weight, self.cost, self.max_running)

    def memory(self) -> dict[str, Any]:
        """The SchedulerConfig fields that size the batch, the KV cache and the swap space."""
        per_token = getattr(self.cost, "kv_bytes_per_token", None)
        swap = 0 if not per_token else int(self.swap_gib * 2**30 // per_token)
        return {"max_running": self.max_running, "block_size": self.block_size,
                "kv_capacity_tokens": self.cost.kv_capacity_tokens(self.kv_utilization),
                "swap_capacity_tokens": swap,
                "preempt_mode": getattr(te.PreemptMode, self.preempt_mode)}


@dataclass(frozen=True)
class PolicySetup:
    """A named policy: its scheduler policy, predictor, effective settings (every "auto"
    resolved to a number) and the scheduler configuration they make."""

    name: str
    policy: te.Policy
    predictor: Any
    settings: SimSettings
    config: te.SchedulerConfig


def setup(name: str, settings: SimSettings, trace: Trace | None = None) -> PolicySetup:
    """The scheduler policy, predictor and effective settings of a name of POLICY_NAMES, its
    "auto" settings resolved against the simulated server serving `trace` (at its rate;
    without one, Boost's γ is not measured and resolves to 0)."""
    sp = spec(name)
    if sp.work:
        chosen = settings.trail_settings()
    elif sp.guards:  # the run's guards (cap, aging guard) apply; the rest is the set-up's
        chosen = sp.settings.with_(**settings.guards())
    else:
        chosen = sp.settings
    srv = settings.server(trace)
    resolved = policies.resolve(chosen, policies.server_for(sp.name, srv))
    own = {f.name for f in dataclasses.fields(SimSettings)}
    s = replace(settings, **{k: v for k, v in resolved.items() if k in own}, tail=chosen.tail,
                rank=chosen.rank)
    config = policies.scheduler_config(sp.name, srv, chosen, **settings.memory())
    if sp.scores:
        predictor: Any = LTR()
    elif sp.lengths == "prompt-only":
        predictor = PromptOnly(rank=s.rank)
    elif sp.lengths == "probe":
        predictor = EmbeddingProbe(predict_every=s.predict_every, corr_tokens=s.corr_tokens,
                                   rank=s.rank)
    else:  # FCFS and MLFQ ignore lengths; TRAIL+ is told the true ones
        predictor = Oracle()
    return PolicySetup(sp.name, sp.policy, predictor, s, config)


def describe(ps: PolicySetup) -> dict[str, Any]:
    """The settings that act on a policy (summary.json's `policy_settings` entry)."""
    s, p, cfg = ps.settings, ps.policy, ps.config
    out: dict[str, Any] = {"scheduler": p.name, "predictor": ps.predictor.name}
    if p in (te.Policy.SJF, te.Policy.SRPT, te.Policy.TRAIL):
        out.update(prefill_weight=cfg.prefill_weight, tail=s.tail, aging_rate=cfg.aging_rate,
                   boost_gamma=cfg.boost_gamma, kv_aware=cfg.kv_aware)
    if p in (te.Policy.SRPT, te.Policy.TRAIL, te.Policy.LTR, te.Policy.MLFQ):
        out.update(preempt_margin=cfg.preempt_margin, max_preemptions=cfg.max_preemptions)
    if p == te.Policy.TRAIL:
        out["c"] = cfg.c
    if p != te.Policy.FCFS:
        out["starvation_steps"] = cfg.starvation_steps
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
        tail = {"aging": f" α {d['aging_rate']:.3g}",
                "boost": f" boost γ {d['boost_gamma']:.3g} α {d['aging_rate']:.3g}"}
        parts.append(f"β {d['prefill_weight']:.3g}" + tail.get(d.get("tail", "none"), ""))
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
                   policies.scheduler_config("FCFS", **settings.memory()), settings.cost,
                   n=min(2000, max(200, len(trace))), seed=settings.seed)
    return trace.scaled_to_rate(settings.load * cap), cap


def run(trace: Trace, name: str, settings: SimSettings, progress: bool = False,
        desc: str | None = None) -> SimResult:
    """Simulate `trace` (already at the wanted rate) under one named policy; `desc` labels
    the progress bar (default: the policy's name)."""
    ps = setup(name, settings, trace)
    s = ps.settings
    return simulate(trace.arrival_s, trace.prompt_tokens, trace.output_tokens,
                    ps.config, s.cost, ps.predictor,
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
