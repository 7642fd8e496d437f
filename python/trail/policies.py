"""The named policy set-ups, with every setting each one fixes: the one definition that the
simulator (`trail.sim.compare`), the demo, `trail.engine.engine_config` and the vLLM adapter
all build their scheduler configuration from.

A set-up pairs a scheduler policy with what it is told about lengths, which key it ranks by,
and its full settings (`Settings`):

- `FCFS`: arrival order (vLLM's default).
- `SJF`: the paper's baseline: SJF on a prompt-only prediction at arrival, ranked by the
  output length alone (the paper's rule: β = 0, no tail term, margin 0, rank "mean").
- `SJF-work`: SJF on the same prompt-only predictions with TRAIL's settings (work-aware key,
  tail term, KV-aware fill).
- `SRPT`: TRAIL's settings and probe, preempting with no c limit (simulator only).
- `TRAIL-paper`: the paper's exact rule on the embedding probe (c = 0.8, output length
  only), with no cap on preemptions and no starvation guard.
- `TRAIL`: the recommended settings (`TRAIL_SETTINGS`) on the probe.
- `TRAIL+`: TRAIL's settings fed true lengths (the oracle bound).
- `LTR`: vllm-ltr's policy on learned-to-rank scores at arrival; `MLFQ`: FastServe's
  skip-join multi-level feedback queue.

Settings written "auto" follow from what a surface measures of its server (`Server`): β
from its step costs; the tail's α from its decode speed (aging) or work rate (Boost); the
Boost key's γ from its arrival rate and work sizes (`boost_gamma`); the preemption margin
from its predictors' errors and its batch (`winners_curse_margin`); a rank preemption's
rebuild cost from how the server rebuilds a preempted request's KV (a recompute unless it
says it swaps). A quantity not (yet) measured resolves to 0, the rule without that term:
the engine starts so and learns β online; `describe_auto` says which were measured.
The reasoning and measurements behind each default are in docs/decisions.md.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

import trail_ext as te

LENGTHS = (None, "prompt-only", "probe", "true")
AUTO = "auto"
# What bounds how long a long request can wait behind shorter ones: nothing, linear aging
# (key + α × arrival: earliest deadline on deadlines that grow with size), or γ-Boost.
TAILS = ("none", "aging", "boost")
RANKS = ("mean", "gittins")
# tail "aging" with aging_rate "auto": α = AGING_FRACTION × one request's decode speed at a
# full batch, i.e. deadlines at 1 / AGING_FRACTION times a request's service time alone
# (docs/decisions.md, "Tail").
AGING_FRACTION = 0.02


def _number_or_auto(value: Any, name: str, auto: bool = True) -> None:
    if auto and value == AUTO:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}={value!r} must be a finite number >= 0"
                         + (" or 'auto'" if auto else ""))


def _auto(value: float | str, measured: float | None) -> float:
    if value == AUTO:
        return 0.0 if measured is None else float(measured)
    return float(value)


@dataclass(frozen=True)
class Settings:
    """Every scheduler setting a named set-up fixes; "auto" values come from `Server`."""

    c: float = 0.8                       # limited preemption (TRAIL): generated <= c × predicted
    prefill_weight: float | str = 0.0    # β: prefill-token cost in decode tokens, or "auto"
    tail: str = "none"                   # one of TAILS
    aging_rate: float | str = 0.0        # α, tokens/s: "aging"'s slope, "boost"'s work rate
    boost_gamma: float | str = 0.0       # γ per token of work (tail "boost"), or "auto"
    preempt_margin: float | str = 0.0    # key gap (tokens) a preemption for rank needs, or
    #                                      "auto": the winner's curse (`winners_curse_margin`)
    # a rank preemption's KV rebuild per token / a prefill token's (1: recompute), or "auto":
    # the server's (`Server.rebuild_cost`; a recompute when it does not say)
    rebuild_cost: float | str = 0.0
    kv_aware: bool = False               # fill only while the batch's predicted KV fits
    rank: str = "mean"                   # what predictions feed: the "mean" or its "gittins" rank
    max_preemptions: int = -1            # per request (-1: unbounded)
    starvation_steps: int = 0            # the aging guard (0: off)
    starvation_period: int = 0           # steps a starved request stays promoted

    def __post_init__(self) -> None:
        if self.tail not in TAILS:
            raise ValueError(f"tail={self.tail!r} must be one of {', '.join(TAILS)}")
        if self.rank not in RANKS:
            raise ValueError(f"rank={self.rank!r} must be one of {', '.join(RANKS)}")
        for name in ("prefill_weight", "aging_rate", "boost_gamma", "preempt_margin",
                     "rebuild_cost"):
            _number_or_auto(getattr(self, name), name)
        _number_or_auto(self.c, "c", auto=False)
        if not isinstance(self.kv_aware, bool):
            raise TypeError(f"kv_aware={self.kv_aware!r} must be a bool")
        for name in ("max_preemptions", "starvation_steps", "starvation_period"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (-1 if name ==
                                                                      "max_preemptions" else 0):
                raise ValueError(f"{name}={v!r} must be an int >= "
                                 f"{-1 if name == 'max_preemptions' else 0}")

    def with_(self, **overrides: Any) -> "Settings":
        """These settings with some fields replaced (None values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Server:
    """What a surface measured of its server, for the "auto" settings (None: not measured)."""

    prefill_weight: float | None = None      # β (trail.sim.cost_model / trail.engine.clock)
    decode_tokens_per_s: float | None = None  # one request's decode speed at a full batch
    work_rate: float | None = None           # tokens of work per second the server completes
    boost_gamma: float | None = None         # γ per token of work (`boost_gamma`)
    batch: int | None = None                 # the full batch the speeds above refer to
    # MAE (tokens) of the length prediction a waiting request is ranked by (prompt-only) and
    # of the refreshed one a running request is ranked by (the probe's); 0 for true lengths
    arrival_mae: float | None = None
    probe_mae: float | None = None
    # What rebuilding a rank-preempted request's KV costs per token, as a fraction of a
    # prefill token's: 1 when it recomputes (vLLM), the copy's share when it swaps
    rebuild_cost: float | None = None


# The recommended settings (TRAIL, SJF-work, SRPT, TRAIL+): the measurements behind each
# choice and the commands that made them are in docs/decisions.md.
TRAIL_SETTINGS = Settings(c=0.8, prefill_weight=AUTO, tail="aging", aging_rate=AUTO,
                          boost_gamma=AUTO, preempt_margin=AUTO, rebuild_cost=AUTO,
                          kv_aware=True, rank="mean")
# The paper's rule (SJF's and TRAIL-paper's): output tokens only, no margin, no tail term.
PAPER_SETTINGS = Settings(c=0.8)


@dataclass(frozen=True)
class PolicySpec:
    """One named set-up: scheduler policy, what it knows of lengths, its key and settings."""

    name: str
    scheduler: str            # a trail_ext.Policy name
    lengths: str | None       # None, "prompt-only", "probe" (prompt-only until the probe's
    #                           first prediction) or "true"
    settings: Settings = PAPER_SETTINGS
    scores: bool = False      # learned-to-rank scores at arrival
    work: bool = False        # takes TRAIL's settings, and a surface's overrides of them
    guards: bool = True       # a surface's preemption cap and starvation guard apply

    @property
    def policy(self) -> te.Policy:
        """The scheduler policy as trail_ext's enum."""
        return getattr(te.Policy, self.scheduler)


SPECS: dict[str, PolicySpec] = {s.name: s for s in (
    PolicySpec("FCFS", "FCFS", None),
    PolicySpec("SJF", "SJF", "prompt-only"),
    PolicySpec("SJF-work", "SJF", "prompt-only", TRAIL_SETTINGS, work=True),
    PolicySpec("SRPT", "SRPT", "probe", TRAIL_SETTINGS, work=True),
    PolicySpec("TRAIL-paper", "TRAIL", "probe", guards=False),
    PolicySpec("TRAIL", "TRAIL", "probe", TRAIL_SETTINGS, work=True),
    PolicySpec("TRAIL+", "TRAIL", "true", TRAIL_SETTINGS, work=True),
    PolicySpec("LTR", "LTR", None, scores=True),
    PolicySpec("MLFQ", "MLFQ", None),
)}
POLICY_NAMES = tuple(SPECS)
# What a side-by-side comparison serves (SRPT is TRAIL with c = 1: a knob, not a rival).
COMPARE = tuple(n for n in POLICY_NAMES if n != "SRPT")

def canonical_name(name: str) -> str:
    """The POLICY_NAMES spelling of `name` (case-insensitive); ValueError if unknown."""
    names = {n.upper(): n for n in POLICY_NAMES}
    if not isinstance(name, str) or name.upper() not in names:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
    return names[name.upper()]


def spec(name: str) -> PolicySpec:
    """The set-up of a name of POLICY_NAMES (case-insensitive); ValueError if unknown."""
    return SPECS[canonical_name(name)]


def settings_of(name: str, **overrides: Any) -> Settings:
    """A set-up's settings; `overrides` (None values ignored) apply only to the set-ups that
    take TRAIL's settings, so the baselines always run as their authors describe them."""
    sp = spec(name)
    return sp.settings.with_(**overrides) if sp.work else sp.settings


def resolve(s: Settings, server: Server = Server()) -> dict[str, Any]:
    """The SchedulerConfig fields of `s` (SCHEDULER_FIELDS), "auto" taken from `server`."""
    beta = _auto(s.prefill_weight, server.prefill_weight)
    alpha = gamma = 0.0
    if s.tail == "aging":
        speed = server.decode_tokens_per_s
        alpha = _auto(s.aging_rate, None if speed is None else AGING_FRACTION * speed)
    elif s.tail == "boost":
        gamma = _auto(s.boost_gamma, server.boost_gamma)
        # γ = 0 is the limit of shortest work first, where arrival plays no part
        alpha = _auto(s.aging_rate, server.work_rate) if gamma > 0 else 0.0
    return {"c": float(s.c), "prefill_weight": beta, "aging_rate": alpha, "boost_gamma": gamma,
            "preempt_margin": _auto(s.preempt_margin, winners_curse_margin(server)),
            "rebuild_cost": _auto(s.rebuild_cost, rebuild_cost(server)),
            "kv_aware": s.kv_aware,
            "max_preemptions": s.max_preemptions, "starvation_steps": s.starvation_steps,
            "starvation_period": s.starvation_period}


def server_for(name: str, server: Server) -> Server:
    """`server` as a named set-up sees it: its predictions' MAEs are 0 when told the true
    lengths, and the arrival prediction's throughout when it never refreshes them."""
    lengths = spec(name).lengths
    if lengths == "true":
        return replace(server, arrival_mae=0.0, probe_mae=0.0)
    if lengths == "prompt-only":
        return replace(server, probe_mae=server.arrival_mae)
    return server


def scheduler_config(name: str, server: Server = Server(), settings: Settings | None = None,
                     **memory: Any) -> te.SchedulerConfig:
    """The scheduler configuration of a named set-up: its policy, `settings` (default: the
    set-up's own) resolved against `server` (as `server_for` the set-up), and `memory`
    (max_running, kv_capacity_tokens, block_size, preempt_mode, swap_capacity_tokens,
    default_predicted_len)."""
    sp = spec(name)
    s = sp.settings if settings is None else settings
    bad = sorted(set(memory) & set(SCHEDULER_FIELDS) | ({"policy"} & set(memory)))
    if bad:
        raise ValueError(f"scheduler_config: {bad} belong to the set-up's settings")
    return te.SchedulerConfig(policy=sp.policy, **resolve(s, server_for(sp.name, server)),
                              **memory)


def describe_auto(s: Settings, server: Server) -> dict[str, Any]:
    """Each "auto" setting of `s` with the value it resolved to and whether it was measured."""
    out = {}
    resolved = resolve(s, server)
    for name, measured in (("prefill_weight", server.prefill_weight),
                           ("boost_gamma", server.boost_gamma),
                           ("preempt_margin", winners_curse_margin(server)),
                           ("rebuild_cost", server.rebuild_cost),
                           ("aging_rate", server.work_rate if s.tail == "boost"
                            else server.decode_tokens_per_s)):
        if getattr(s, name) == AUTO:
            out[name] = {"value": resolved[name], "measured": measured is not None}
    return out


def rebuild_cost(server: Server) -> float:
    """"auto" rebuild_cost: the server's, else 1 (a recompute: every engine can rebuild a
    preempted request's KV so; a scheduler in KEEP mode charges nothing whatever it is)."""
    return 1.0 if server.rebuild_cost is None else float(server.rebuild_cost)


def winners_curse_margin(server: Server) -> float | None:
    """The key gap a preemption for rank needs ("auto" preempt_margin), in tokens: the
    winner's curse of acting on the extremes of noisy predictions. The scheduler preempts
    the running request predicted longest for the waiting one predicted shortest; among N
    noisy predictions the extreme one overshoots the truth by about √(2 ln N) standard
    deviations (the expected maximum of N normals), and a prediction error of MAE m has a
    standard deviation of about m √(π/2). A swap pays only when the predicted gap exceeds
    both overshoots: √(2 ln N) √(π/2) (arrival MAE + probe MAE). None if not measured."""
    if server.batch is None or server.arrival_mae is None or server.probe_mae is None:
        return None
    n = max(int(server.batch), 2)
    return math.sqrt(2.0 * math.log(n)) * math.sqrt(math.pi / 2.0) * (
        server.arrival_mae + server.probe_mae)


class PredictionErrors:
    """The MAEs `winners_curse_margin` needs, measured online on finished requests: the
    error of the total length a request was ranked by at arrival, and of the remaining
    lengths it was ranked by while it ran (one sample every `every` tokens), over the last
    `window` finished requests. A server that cannot know its predictors' errors in advance
    (the vLLM adapter) learns its margin so."""

    def __init__(self, window: int = 512, every: int = 8) -> None:
        for name, v in (("window", window), ("every", every)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"PredictionErrors: {name}={v!r} must be a positive int")
        self.every = every
        self._arrival: dict[Any, float] = {}
        self._refreshed: dict[Any, list[tuple[int, float]]] = {}
        self._arrival_errors: deque[float] = deque(maxlen=window)
        self._refresh_errors: deque[float] = deque(maxlen=window)  # per request: its mean
        # (predicted, true) pairs for `calibration`: one per request at arrival, one per
        # sample while running (the newest 8 × window)
        self._arrival_pairs: deque[tuple[float, float]] = deque(maxlen=window)
        self._refresh_pairs: deque[tuple[float, float]] = deque(maxlen=8 * window)
        self.finished_count = 0

    def arrival(self, rid: Any, predicted_total: float) -> None:
        """The total length `rid` is ranked by on arrival."""
        if math.isfinite(predicted_total):
            self._arrival[rid] = float(predicted_total)

    def refreshed(self, rid: Any, generated: int, predicted_remaining: float) -> None:
        """A new remaining-length prediction for `rid` after `generated` tokens (kept once
        every `every` tokens)."""
        samples = self._refreshed.setdefault(rid, [])
        if math.isfinite(predicted_remaining) and (
                not samples or generated // self.every != samples[-1][0] // self.every):
            samples.append((int(generated), float(predicted_remaining)))

    def finished(self, rid: Any, total: int) -> None:
        """`rid` ended after `total` tokens: score its predictions."""
        pred = self._arrival.pop(rid, None)
        if pred is not None:
            self._arrival_errors.append(abs(pred - total))
            self._arrival_pairs.append((pred, float(total)))
        samples = self._refreshed.pop(rid, [])
        if samples:
            self._refresh_errors.append(float(np.mean([abs(r - (total - g))
                                                       for g, r in samples])))
            self._refresh_pairs.extend((r, float(total - g)) for g, r in samples)
        self.finished_count += 1

    def forget(self, rid: Any) -> None:
        """`rid` was aborted: its length says nothing of the predictions."""
        self._arrival.pop(rid, None)
        self._refreshed.pop(rid, None)

    def maes(self, min_requests: int = 20) -> tuple[float | None, float | None]:
        """(arrival MAE, refreshed MAE), each None until `min_requests` requests scored it;
        a server that never refreshes ranks running requests by the arrival prediction."""
        arrival = (float(np.mean(self._arrival_errors))
                   if len(self._arrival_errors) >= min_requests else None)
        refreshed = (float(np.mean(self._refresh_errors))
                     if len(self._refresh_errors) >= min_requests else None)
        if refreshed is None and not self._refresh_errors:
            refreshed = arrival
        return arrival, refreshed

    def calibration(self, min_requests: int = 20) -> dict[str, dict[str, float] | None]:
        """`calibration` of the arrival and the refreshed predictions (None until
        `min_requests` requests scored them)."""
        return {"arrival": calibration(*zip(*self._arrival_pairs))
                if len(self._arrival_errors) >= min_requests else None,
                "refreshed": calibration(*zip(*self._refresh_pairs))
                if len(self._refresh_errors) >= min_requests else None}

    def margin(self, batch: int, min_requests: int = 20,
               worst_error: float | None = None) -> float | None:
        """`winners_curse_margin` for a batch of `batch` with the measured MAEs; until they
        are measured, with both errors at `worst_error` (e.g. the largest generation cap:
        no prediction of a length in [0, cap] errs by more), or None without it."""
        arrival, refreshed = self.maes(min_requests)
        if worst_error is not None and (arrival is None or refreshed is None):
            arrival = refreshed = float(worst_error)
        return winners_curse_margin(Server(batch=batch, arrival_mae=arrival,
                                           probe_mae=refreshed))


def calibration(predicted: Any, true: Any) -> dict[str, float]:
    """How predictions relate to what happened: the least-squares slope of the true lengths
    on the predicted ones (1: the truth moves one for one with the prediction, as for a
    posterior mean; below 1: predictions overstate differences, so the extreme ones
    overshoot; nan when the predictions do not vary), both means, and the count."""
    p, t = np.asarray(predicted, float), np.asarray(true, float)
    if p.shape != t.shape or p.ndim != 1 or p.size == 0:
        raise ValueError("calibration: predicted and true must be non-empty 1-D arrays of "
                         "one length")
    var = float(p.var())
    slope = float(np.mean((p - p.mean()) * (t - t.mean())) / var) if var > 0 else math.nan
    return {"slope": slope, "mean_predicted": float(p.mean()), "mean_true": float(t.mean()),
            "n": int(p.size)}


def boost_gamma(arrival_rate: float, works: Any, work_rate: float) -> float:
    """γ-Boost's γ per token of work: the decay rate of FCFS's response-time tail, the root
    γ > 0 of λ (E[e^(γW)] − 1) = γ R (Cramér–Lundberg; Yu & Scully 2024), for arrivals at
    `arrival_rate` (λ, req/s) whose work `works` (tokens, a sample) a server completes at
    `work_rate` (R, tokens/s). 0 when the load λ E[W] / R is >= 1 (no light-tailed FCFS: the
    order becomes shortest work first)."""
    w = np.asarray(works, float)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("boost_gamma: works must be a non-empty 1-D array of finite "
                         "token counts >= 0")
    for nm, v in (("arrival_rate", arrival_rate), ("work_rate", work_rate)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"boost_gamma: {nm}={v!r} must be finite and > 0")
    mean = float(w.mean())
    rho = arrival_rate * mean / work_rate
    if rho >= 1.0 or mean == 0.0:
        return 0.0
    x = w / mean  # dimensionless: ρ (E[e^(θx)] − 1) = θ, θ = γ × mean work
    top = float(x.max())

    def excess(theta: float) -> float:
        # log-sum-exp keeps e^(θx) finite for long samples
        m = theta * top
        if m > 700.0:  # e^m overflows: far past the root
            return math.inf
        return rho * (math.exp(m) * float(np.mean(np.exp(theta * x - m))) - 1.0) - theta

    lo, hi = 0.0, 1.0
    while excess(hi) < 0.0:
        lo, hi = hi, hi * 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) < 0.0 else (lo, mid)
    return lo / mean


# The fields of trail_ext.SchedulerConfig a set-up fixes (the rest size memory and batch):
# those `resolve` gives.
SCHEDULER_FIELDS = tuple(resolve(PAPER_SETTINGS))
# Every field of trail_ext.SchedulerConfig (to copy one).
CONFIG_FIELDS = ("policy", "max_running", "kv_capacity_tokens", "block_size", "preempt_mode",
                 "swap_capacity_tokens", "default_predicted_len", "mlfq_levels",
                 "mlfq_base_quantum", "mlfq_prefill_ratio", *SCHEDULER_FIELDS)


def copy_config(cfg: te.SchedulerConfig, **changes: Any) -> te.SchedulerConfig:
    """A new SchedulerConfig equal to `cfg` but for `changes`."""
    return te.SchedulerConfig(**{f: getattr(cfg, f) for f in CONFIG_FIELDS} | changes)
