"""Differential and invariant tests: trail_ext.Scheduler (C++) vs trail.sched_ref (Python).

Hypothesis generates configurations and event sequences (adds, schedules, steps,
prediction and score updates, aborts, and some invalid calls). Both implementations get
every event; after each one their decisions, exceptions, request views and statistics
must be identical and the invariants of docs/scheduler.md must hold. Each run ends by
draining the system: every added request must finish or have been aborted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from trail import sched_ref as ref

import trail_ext as te

POLICIES = ["FCFS", "SJF", "SRPT", "TRAIL", "LTR", "MLFQ"]
MODES = ["KEEP", "SWAP", "RECOMPUTE"]
RID_POOL = 14
DECISION_FIELDS = ("admitted", "resumed", "swapped_in", "recomputed", "preempted",
                   "swapped_out", "dropped", "running")
VIEW_FIELDS = ("rid", "arrival", "prompt_len", "max_new_tokens", "generated", "predicted_len",
               "remaining", "score", "preemptions", "level", "promoted")


def draw_config(pick: "Picker", ample_memory: bool = False) -> dict[str, Any]:
    """A configuration; small, so that memory pressure and full batches happen often."""
    bs = pick.int(1, 4)
    blocks = 10_000 if ample_memory else pick.int(3, 24)
    return dict(
        policy=pick.choice(POLICIES),
        max_running=pick.int(1, 6),
        kv_capacity_tokens=bs * blocks + pick.int(0, bs - 1),
        block_size=bs,
        c=pick.choice([0.0, 0.25, 0.5, 0.8, 1.0, 2.0]),
        preempt_mode=pick.choice(MODES),
        swap_capacity_tokens=pick.choice([0, 4, 12, 40, 1000]),
        max_preemptions=pick.choice([-1, -1, 0, 1, 2]),
        starvation_steps=pick.choice([0, 0, 1, 2, 4]),
        starvation_period=pick.int(0, 3),
        default_predicted_len=pick.choice([1.0, 6.0, 128.0]),
        mlfq_levels=pick.int(1, 4),
        mlfq_base_quantum=pick.int(1, 4),
        mlfq_prefill_ratio=pick.choice([1.0, 4.0, 16.0]),
        prefill_weight=pick.choice([0.0, 0.0, 0.25, 1.0]),
        aging_rate=pick.choice([0.0, 0.0, 0.5, 4.0]),
        preempt_margin=pick.choice([0.0, 0.0, 1.0, 3.5]),
        kv_aware=pick.choice([False, False, True]),
        boost_gamma=pick.choice([0.0, 0.0, 0.05, 1.0, 1e-300]),
        rebuild_cost=pick.choice([0.0, 0.0, 0.02, 0.5, 1.0]),
    )


def make(mod: Any, cfg: dict[str, Any]) -> Any:
    """Build a scheduler of module `mod` (trail_ext or sched_ref) from a plain dict."""
    kw = dict(cfg)
    kw["policy"] = getattr(mod.Policy, cfg["policy"])
    kw["preempt_mode"] = getattr(mod.PreemptMode, cfg["preempt_mode"])
    return mod.Scheduler(mod.SchedulerConfig(**kw))


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@dataclass
class Pair:
    """Both schedulers, driven in lockstep and compared after every call."""

    cfg: dict[str, Any]
    native: Any = None
    reference: Any = None
    now: float = 0.0
    added: int = 0
    trace: list[str] = field(default_factory=list)
    known: set[int] = field(default_factory=lambda: set(range(RID_POOL)))

    def __post_init__(self) -> None:
        self.native = make(te, self.cfg)
        self.reference = make(ref, self.cfg)

    def call(self, name: str, *args: Any) -> tuple[Any, Any]:
        """Call `name` on both; exceptions must match in type; returns both results."""
        self.trace.append(f"{name}{args!r}")
        if name == "add":
            self.known.add(args[0])
        out = []
        for sched in (self.native, self.reference):
            try:
                out.append(("ok", getattr(sched, name)(*args)))
            except (ValueError, KeyError, TypeError) as exc:
                out.append(("err", type(exc)))
        (kn, vn), (kr, vr) = out
        assert (kn, vn if kn == "err" else None) == (kr, vr if kr == "err" else None), (
            f"{name}{args!r}: native {kn} {vn!r} vs reference {kr} {vr!r}\n" + self.where())
        self.compare_state()
        return (None, None) if kn == "err" else (vn, vr)

    def where(self) -> str:
        return f"config={self.cfg}\ntrace:\n  " + "\n  ".join(self.trace[-40:])

    def compare_state(self) -> None:
        n, r = self.native, self.reference
        assert len(n) == len(r), self.where()
        assert n.stats() == r.stats(), f"{n.stats()}\n{r.stats()}\n{self.where()}"
        for rid in sorted(self.known):
            assert (rid in n) == (rid in r), self.where()
            if rid in n:
                vn, vr = n.get(rid), r.get(rid)
                assert vn.state.name == vr.state.name and vn.kv.name == vr.kv.name, self.where()
                for f in VIEW_FIELDS:
                    a, b = getattr(vn, f), getattr(vr, f)
                    ok = same_float(a, b) if isinstance(a, float) else a == b
                    assert ok, f"rid {rid} field {f}: native {a!r} vs ref {b!r}\n{self.where()}"

    def schedule(self, now: float) -> Any:
        before = {rid: self.native.get(rid) for rid in self.running()}
        dn, dr = self.call("schedule", now)
        if dn is None:
            return None
        self.now = now
        assert dn.iteration == dr.iteration
        for f in DECISION_FIELDS:
            a, b = getattr(dn, f), getattr(dr, f)
            assert a.dtype == np.int64 and b.dtype == np.int64
            assert a.tolist() == b.tolist(), f"{f}: {a.tolist()} vs {b.tolist()}\n{self.where()}"
        check_invariants(self.native, self.cfg, dn, before, self.known)
        return dn

    def running(self) -> list[int]:
        return [rid for rid in sorted(self.known)
                if rid in self.native and self.native.get(rid).state.name == "RUNNING"]


def check_invariants(s: Any, cfg: dict[str, Any], d: Any, before: dict[int, Any],
                     known: set[int]) -> None:
    """The guarantees of schedule(): capacity, batch size, disjoint states, preemption rules."""
    st_ = s.stats()
    assert s.kv_reserved_blocks() == st_["kv_reserved_blocks"] <= st_["kv_capacity_blocks"]
    assert st_["swap_used_blocks"] <= st_["swap_capacity_blocks"]
    running = d.running.tolist()
    assert len(running) <= cfg["max_running"]
    assert len(set(running)) == len(running)
    states = {rid: s.get(rid).state.name for rid in known if rid in s}
    assert {r for r, v in states.items() if v == "RUNNING"} == set(running)
    assert st_["waiting"] + st_["running"] + st_["preempted"] == st_["live"] == len(s)
    assert set(d.admitted.tolist()) | set(d.resumed.tolist()) <= set(running)
    assert not set(d.preempted.tolist()) & set(running)
    assert set(d.preempted.tolist()) <= set(before)
    # Every kept preempted request's memory is accounted: reserved = running next + kept.
    reserved = 0
    bs = cfg["block_size"]
    for rid, state in states.items():
        v = s.get(rid)
        tokens = v.prompt_len + v.generated
        if state == "RUNNING":
            reserved += -(-(tokens + 1) // bs)
        elif v.kv.name == "DEVICE":
            reserved += -(-tokens // bs)
    assert reserved == st_["kv_reserved_blocks"]


class Picker:
    """Where random choices come from: hypothesis (shrinkable) or a seeded numpy RNG."""

    def __init__(self, data: st.DataObject | None = None, rng: np.random.Generator | None = None):
        self.data, self.rng = data, rng

    def int(self, lo: int, hi: int) -> int:
        if self.data is not None:
            return self.data.draw(st.integers(lo, hi))
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options: list[Any]) -> Any:
        if self.data is not None:
            return self.data.draw(st.sampled_from(options))
        return options[int(self.rng.integers(len(options)))]

    def shuffle(self, items: list[int]) -> list[int]:
        if self.data is not None:
            return self.data.draw(st.permutations(items))
        return [items[i] for i in self.rng.permutation(len(items))]


def step_running(pair: Pair, pick: Picker) -> None:
    """Report tokens for (some of) the running batch; sometimes with invalid rows."""
    rids = pair.running()
    if pick.int(0, 1):
        rids = pick.shuffle(rids)
    if rids and pick.int(0, 3) == 0:
        rids = rids[: pick.int(0, len(rids))]
    new, fin = [], []
    for rid in rids:
        v = pair.native.get(rid)
        left = v.max_new_tokens - v.generated
        new.append(pick.int(0, min(2, left)) if pick.int(0, 3) else min(1, left))
        fin.append(pick.int(0, 7) == 0)
    fault = pick.int(0, 15)
    if fault == 0:
        rids = rids + [pick.int(0, RID_POOL - 1)]  # maybe repeated, maybe not running
        new, fin = new + [1], fin + [False]
    elif fault == 1 and rids:
        new[0] = pick.choice([-1, 10_000])
    elif fault == 2:
        fin = fin + [True]  # length mismatch
    now = pair.now + pick.choice([0.0, 0.0, 0.25])
    pair.call("on_step", now, np.asarray(rids, dtype=np.int64), np.asarray(new, dtype=np.int64),
              np.asarray(fin, dtype=bool))
    if fault > 2:
        pair.now = now


def random_event(pair: Pair, pick: Picker) -> None:
    kind = pick.choice(["add", "add", "add", "add", "schedule", "schedule", "schedule",
                        "schedule", "step", "step", "step", "step", "predict", "predict",
                        "score", "abort", "margin"])
    rid = pick.int(0, RID_POOL - 1)
    if kind == "add":
        arrival = pair.now + pick.choice([-1.0, 0.0, 0.0, 0.5, 2.0])
        prompt = pick.choice([pick.int(1, 8), pick.int(1, 8), pick.int(1, 30), 0, 400])
        max_new = pick.choice([pick.int(1, 10), pick.int(1, 10), pick.int(1, 10), 0])
        pred = pick.choice([math.nan, math.nan, 0.0, 1.0, 2.5, 7.0, 20.0, -1.0])
        score = pick.choice([math.nan, -2.0, 0.0, 0.5, 3.0, math.inf])
        pair.call("add", rid, arrival, prompt, max_new, pred, score)
    elif kind == "schedule":
        pair.schedule(pair.now + pick.choice([0.0, 0.5, 1.0, 1.0, 1.0, -0.5]))
    elif kind == "step":
        step_running(pair, pick)
    elif kind == "predict":
        rids = [pick.int(0, RID_POOL - 1) for _ in range(pick.int(0, 4))]
        vals = [pick.choice([0.0, 1.0, 3.5, 9.0, 40.0, -1.0, math.nan]) for _ in rids]
        pair.call("update_predictions", np.asarray(rids, dtype=np.int64),
                  np.asarray(vals, dtype=np.float64))
    elif kind == "score":
        rids = [pick.int(0, RID_POOL - 1) for _ in range(pick.int(0, 3))]
        vals = [pick.choice([-1.0, 0.0, 2.0, 5.0]) for _ in rids]
        pair.call("update_scores", rids, vals)
    elif kind == "margin":  # a live margin, as the engine sets it once errors are measured
        pair.call("set_preempt_margin", pick.choice([0.0, 1.0, 3.5, 1e9, -1.0]))
    else:
        pair.call("abort", rid)


def drain(pair: Pair) -> None:
    """Run to empty: each running request gets one token per iteration; nothing may be lost."""
    bound = 10 + sum(pair.native.get(r).max_new_tokens + 1
                     for r in pair.known if r in pair.native)
    now = pair.now + 10.0  # after every arrival, which is at most 2 s after the `now` of its add
    for _ in range(bound * 2):
        if len(pair.native) == 0:
            break
        d = pair.schedule(now)
        assert d is not None
        assert len(d.running) > 0, "live requests but an empty batch: " + pair.where()
        rids = d.running
        pair.call("on_step", now, rids, np.ones(len(rids), dtype=np.int64),
                  np.zeros(len(rids), dtype=bool))
        now += 1.0
    assert len(pair.native) == 0, "requests left after draining:\n" + pair.where()
    s = pair.native.stats()
    assert s["finished"] + s["aborted"] == s["added"]


DIFF_SETTINGS = settings(max_examples=250, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@DIFF_SETTINGS
@given(data=st.data())
def test_native_matches_reference(data: st.DataObject) -> None:
    pick = Picker(data=data)
    pair = Pair(draw_config(pick))
    for _ in range(data.draw(st.integers(10, 100))):
        random_event(pair, pick)
    s = pair.native.stats()
    for counter in ("preemptions", "swap_outs", "swap_ins", "drops", "recomputes"):
        if s[counter]:
            event(f"before drain: {counter} > 0")  # shown by --hypothesis-show-statistics
    drain(pair)
    s = pair.native.stats()
    for counter in ("preemptions", "swap_outs", "swap_ins", "drops", "recomputes", "aborted"):
        if s[counter]:
            event(f"whole run: {counter} > 0")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_preemption_rules_with_ample_memory(data: st.DataObject) -> None:
    """With ample memory: FCFS/SJF never preempt; TRAIL preempts only within c·L."""
    cfg = draw_config(Picker(data=data), ample_memory=True)
    pair = Pair(cfg)
    for _ in range(data.draw(st.integers(5, 60))):
        before = {rid: pair.native.get(rid) for rid in pair.running()}
        kind = data.draw(st.sampled_from(["add", "schedule", "step", "predict"]))
        if kind == "schedule":
            d = pair.schedule(pair.now + 1.0)
            preempted = d.preempted.tolist()
            assert not d.swapped_out.tolist() or cfg["preempt_mode"] != "KEEP"
            if cfg["policy"] in ("FCFS", "SJF"):
                assert preempted == []
            if cfg["policy"] == "TRAIL":
                for rid in preempted:
                    v = before[rid]
                    length = (cfg["default_predicted_len"] if math.isnan(v.predicted_len)
                              else v.predicted_len)
                    assert cfg["c"] > 0 and v.generated <= cfg["c"] * length
        else:
            random_event_of(kind, pair, data)
    drain(pair)


def test_seeded_fuzz_matches_reference() -> None:
    """Uniform random sequences (no shrinking bias towards simple cases) over many seeds."""
    totals = dict.fromkeys(("preemptions", "swap_outs", "swap_ins", "drops", "recomputes",
                            "aborted", "finished"), 0)
    for seed in range(150):
        pick = Picker(rng=np.random.default_rng(seed))
        pair = Pair(draw_config(pick))
        for _ in range(150):
            random_event(pair, pick)
        drain(pair)
        for k in totals:
            totals[k] += pair.native.stats()[k] > 0
    # The fuzz must exercise every mechanism, or it proves little.
    assert all(v >= 5 for v in totals.values()), totals


def random_event_of(kind: str, pair: Pair, data: st.DataObject) -> None:
    """One event of a given kind (valid arguments only)."""
    if kind == "add":
        rid = data.draw(st.integers(0, RID_POOL - 1))
        if rid in pair.native:
            return
        pair.call("add", rid, pair.now, data.draw(st.integers(1, 30)),
                  data.draw(st.integers(1, 14)),
                  data.draw(st.sampled_from([math.nan, 1.0, 5.0, 12.0])), math.nan)
    elif kind == "step":
        rids = pair.running()
        new = [min(1, pair.native.get(r).max_new_tokens - pair.native.get(r).generated)
               for r in rids]
        pair.call("on_step", pair.now, rids, new, [False] * len(rids))
    else:
        live = [r for r in range(RID_POOL) if r in pair.native]
        if live:
            rids = data.draw(st.lists(st.sampled_from(live), max_size=3))
            vals = [float(data.draw(st.integers(0, 20))) for _ in rids]
            pair.call("update_predictions", rids, vals)


@pytest.mark.parametrize("work", [False, True, "kv", "boost"],
                         ids=["plain", "work-aware", "kv-aware", "boost"])
def test_large_population_agrees(work: bool | str) -> None:
    """A longer seeded run with hundreds of requests: same decisions at every iteration."""
    rng = np.random.default_rng(7)
    for policy in POLICIES:
        cfg = dict(policy=policy, max_running=8, kv_capacity_tokens=16 * 40, block_size=16,
                   c=0.8, preempt_mode="SWAP" if work else "KEEP",
                   swap_capacity_tokens=16 * 10, max_preemptions=3, starvation_steps=5,
                   starvation_period=20, default_predicted_len=30.0, mlfq_levels=4,
                   mlfq_base_quantum=4, mlfq_prefill_ratio=16.0,
                   prefill_weight=0.3 if work else 0.0, aging_rate=2.0 if work else 0.0,
                   preempt_margin=1.5 if work else 0.0, kv_aware=work == "kv",
                   boost_gamma=0.02 if work == "boost" else 0.0)
        if work == "kv":
            cfg["preempt_mode"] = "KEEP"
        pair = Pair(cfg)
        true_len: dict[int, int] = {}
        rid = 0
        for it in range(400):
            for _ in range(rng.poisson(0.6)):
                n = int(rng.integers(1, 60))
                true_len[rid] = n
                pair.call("add", rid, pair.now, int(rng.integers(1, 200)), 64,
                          float(n + rng.normal(0, 5)) if rng.random() < 0.5 else math.nan,
                          float(rng.normal()))
                rid += 1
            d = pair.schedule(pair.now + 0.1)
            rids = d.running.tolist()
            gen = [pair.native.get(r).generated for r in rids]
            fin = [g + 1 >= min(true_len[r], 64) for r, g in zip(rids, gen)]
            pair.call("on_step", pair.now, rids, [1] * len(rids), fin)
            alive = [r for r in rids if r in pair.native]
            pair.call("update_predictions", alive,
                      [max(0.0, true_len[r] - pair.native.get(r).generated + rng.normal(0, 3))
                       for r in alive])
        # Every policy makes progress (kv_aware holds memory back for predicted growth, so
        # fewer requests run at once in this memory-starved setup).
        assert pair.native.stats()["finished"] > (25 if work == "kv" else 40), policy



@pytest.mark.parametrize("seed", range(6))
def test_bursts_of_mass_preemption_agree(seed: int) -> None:
    """Wide batches hit by bursts: many rank preemptions in one fill walk (the victim heap is
    consumed across candidates), many memory preemptions and kept evictions in one call (the
    worst-running heap and the ordered kept set), with identical decisions every call."""
    rng = np.random.default_rng(seed)
    pick = Picker(rng=rng)
    cfg = draw_config(pick)
    bs = cfg["block_size"]
    cfg.update(max_running=int(rng.integers(20, 60)), kv_capacity_tokens=bs * int(
        rng.integers(60, 160)), swap_capacity_tokens=bs * int(rng.integers(0, 80)),
        policy=["SRPT", "TRAIL", "LTR", "MLFQ"][seed % 4], c=2.0, max_preemptions=-1,
        preempt_mode=MODES[seed % 3])
    pair = Pair(cfg)
    rid = 0
    for _ in range(60):
        burst = int(rng.choice([0, 0, 1, 3, 30]))
        for _ in range(burst):
            pair.call("add", rid, pair.now, int(rng.integers(1, 3 * bs)), int(rng.integers(4, 40)),
                      float(rng.uniform(0, 40)), float(rng.normal()))
            rid += 1
        if pair.schedule(pair.now + 0.5) is None:
            continue
        rids = pair.running()
        if rids:
            left = [pair.native.get(r).max_new_tokens - pair.native.get(r).generated
                    for r in rids]
            # several tokens at once: many requests cross a block boundary together
            new = [int(min(x, rng.integers(1, 2 * bs + 1))) for x in left]
            pair.call("on_step", pair.now, rids, new, [bool(rng.random() < 0.05) for _ in rids])
            alive = [r for r in rids if r in pair.native]
            pair.call("update_predictions", alive, rng.uniform(0, 40, len(alive)).tolist())
    assert pair.native.stats()["preemptions"] > 0
    drain(pair)


@pytest.mark.parametrize("scenario", ["rank", "pressure", "kept"])
@pytest.mark.parametrize("policy", ["TRAIL", "SRPT"])
def test_one_call_moving_hundreds_agrees(scenario: str, policy: str) -> None:
    """bench/scheduler_scaling.py's worst cases at n = 200: one schedule() preempts every
    running request for rank, half of them for memory, or evicts every kept request."""
    n = 200
    mode = {"rank": "SWAP", "pressure": "RECOMPUTE", "kept": "KEEP"}[scenario]
    cfg = dict(policy=policy, max_running=n, block_size=4, c=1e9, preempt_mode=mode,
               kv_capacity_tokens=4 * (n if scenario == "pressure" else 2 * n),
               swap_capacity_tokens=16 * n, max_preemptions=-1)
    pair = Pair(cfg)
    for rid in range(n):
        pair.call("add", rid, 0.0, 3, 100, 50.0, math.nan)
    assert len(pair.schedule(0.0).admitted) == n
    if scenario == "pressure":
        pair.call("on_step", 0.0, list(range(n)), [1] * n, [False] * n)
        assert len(pair.schedule(1.0).preempted) == n // 2
        return
    for rid in range(n, 2 * n):
        pair.call("add", rid, 0.5, 3, 100, 1.0, math.nan)
    assert len(pair.schedule(1.0).preempted) == n
    if scenario == "kept":
        pair.call("on_step", 1.0, list(range(n, 2 * n)), [1] * n, [False] * n)
        d = pair.schedule(2.0)
        assert len(d.swapped_out) + len(d.dropped) == n and len(d.preempted) == 0
