"""Cost-aware rank preemption (rebuild_cost), in both twins: a running request is a victim
only if its key less what rebuilding its KV costs every present request still exceeds the
waiting request's key + preempt_margin (docs/scheduler.md, "Cost-aware preemption")."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trail_ext
from trail import sched_ref


def sched(impl: types.ModuleType, mode: str = "RECOMPUTE", **kw: object) -> object:
    kw.setdefault("kv_capacity_tokens", 1 << 20)
    kw["policy"] = getattr(impl.Policy, str(kw.get("policy", "TRAIL")))
    kw["preempt_mode"] = getattr(impl.PreemptMode, mode)
    kw.setdefault("c", 10.0)
    return impl.Scheduler(impl.SchedulerConfig(**kw))


def victim_then_newcomer(s: object, newcomer_len: float) -> list[int]:
    """Request 1 (prompt 40, 100 predicted) runs 10 tokens; request 2 (prompt 10) arrives:
    the rids preempted for it."""
    s.add(1, 0.0, 40, 200, 100.0)
    s.schedule(0.0)
    s.on_step(0.0, [1], [10], [False])   # 90 left; its KV holds 50 tokens
    s.add(2, 1.0, 10, 200, newcomer_len)
    return s.schedule(1.0).preempted.tolist()


# β = 0.1, rebuild_cost 1, one slot: the victim's key is 90 (running: nothing to prefill),
# its preemption costs 1 × 0.1 × 50 tokens × 2 present / 1 slot = 10; the newcomer's key is
# its length + 0.1 × 10. Preempt iff 90 - 10 > length + 1 + margin.
@pytest.mark.parametrize("length,margin,preempts", [
    (78.5, 0.0, True), (79.0, 0.0, False), (70.5, 8.0, True), (71.0, 8.0, False)])
def test_the_cost_moves_the_boundary(impl: types.ModuleType, length: float, margin: float,
                                     preempts: bool) -> None:
    s = sched(impl, max_running=1, prefill_weight=0.1, rebuild_cost=1.0, preempt_margin=margin)
    assert victim_then_newcomer(s, length) == ([1] if preempts else [])


def test_without_a_cost_the_rule_is_the_key_gap(impl: types.ModuleType) -> None:
    """rebuild_cost 0 (the default): the same newcomer preempts on the key gap alone."""
    s = sched(impl, max_running=1, prefill_weight=0.1)
    assert victim_then_newcomer(s, 88.5) == [1]


def test_a_live_margin_change_moves_the_boundary(impl: types.ModuleType) -> None:
    """set_preempt_margin applies from the next schedule(): the same gap (90 - 10 - 1 = 79
    over the newcomer of 70 tokens, key 71) preempts under margin 8.5, not under 9."""
    s = sched(impl, max_running=1, prefill_weight=0.1, rebuild_cost=1.0, preempt_margin=1e6)
    s.add(1, 0.0, 40, 200, 100.0)
    s.schedule(0.0)
    s.on_step(0.0, [1], [10], [False])
    s.add(2, 1.0, 10, 200, 70.0)
    assert s.schedule(1.0).preempted.tolist() == []
    s.set_preempt_margin(9.0)
    assert s.schedule(2.0).preempted.tolist() == []
    s.set_preempt_margin(8.5)
    assert s.schedule(3.0).preempted.tolist() == [1]
    assert s.config.preempt_margin == 8.5


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_a_bad_live_margin_is_refused_and_changes_nothing(impl: types.ModuleType,
                                                           value: float) -> None:
    s = sched(impl, preempt_margin=3.0)
    with pytest.raises(ValueError, match="preempt_margin"):
        s.set_preempt_margin(value)
    assert s.config.preempt_margin == 3.0


def test_keep_mode_charges_nothing(impl: types.ModuleType) -> None:
    """KEEP: a rank-preempted request keeps its KV on the device, nothing to rebuild."""
    s = sched(impl, "KEEP", max_running=1, prefill_weight=0.1, rebuild_cost=1.0)
    assert victim_then_newcomer(s, 88.5) == [1]


def test_swap_mode_charges_the_copy(impl: types.ModuleType) -> None:
    s = sched(impl, "SWAP", max_running=1, prefill_weight=0.1, rebuild_cost=0.5,
              swap_capacity_tokens=1 << 16)
    assert victim_then_newcomer(s, 83.5) == [1]   # cost 5: 85 > 84.5
    s = sched(impl, "SWAP", max_running=1, prefill_weight=0.1, rebuild_cost=0.5,
              swap_capacity_tokens=1 << 16)
    assert victim_then_newcomer(s, 84.0) == []


def test_every_present_request_counts(impl: types.ModuleType) -> None:
    """Two more requests waiting (present, too long to jump ahead) double the cost: 0.1 ×
    50 × 4 / 1 = 20, so a newcomer preempts iff 90 - 20 > its length + 1."""
    for length, preempts in ((68.5, True), (69.0, False)):
        s = sched(impl, max_running=1, prefill_weight=0.1, rebuild_cost=1.0)
        s.add(1, 0.0, 40, 200, 100.0)
        s.schedule(0.0)
        s.on_step(0.0, [1], [10], [False])
        s.add(3, 0.5, 10, 200, 150.0)
        s.add(4, 0.5, 10, 200, 150.0)
        s.add(2, 1.0, 10, 200, length)
        assert s.schedule(1.0).preempted.tolist() == ([1] if preempts else []), length


def test_the_cheapest_victim_goes_first(impl: types.ModuleType) -> None:
    """Two victims with the same key: the one with less KV to rebuild is preempted (net
    keys 90 - 0.1 × 410 × 3 / 2 = 28.5 and 90 - 0.1 × 20 × 3 / 2 = 87)."""
    s = sched(impl, max_running=2, prefill_weight=0.1, rebuild_cost=1.0)
    s.add(1, 0.0, 400, 300, 100.0)   # long prompt: costly to rebuild
    s.add(2, 0.0, 10, 300, 100.0)
    s.schedule(0.0)
    s.on_step(0.0, [1, 2], [10, 10], [False, False])
    s.add(3, 1.0, 10, 300, 5.0)
    assert s.schedule(1.0).preempted.tolist() == [2]


def ranker(impl: types.ModuleType, **kw: object) -> object:
    kw["policy"] = getattr(impl.Policy, str(kw.pop("policy", "TRAIL")))
    return impl.Ranker(impl.SchedulerConfig(**kw))


def test_ranker_preempt_keys_subtract_the_cost(impl: types.ModuleType) -> None:
    r = ranker(impl, prefill_weight=0.25, rebuild_cost=2.0, max_running=2)
    r.add(1, 0.0, 30, 100, 50.0)
    r.add(2, 0.5, 8, 100, 20.0)
    r.add(3, 0.7, 8, 100, 20.0)
    r.set_running([1])
    r.on_tokens([1], [6])
    keys, net = r.keys([1]), r.preempt_keys([1])
    # every live request is present: 2 × 0.25 × (30 + 6) × 3 / 2 = 27
    assert keys.tolist() == [44.0] and net.tolist() == [44.0 - 27.0]
    r.set_prefill_weight(0.0)   # β 0: no cost (the paper's rule)
    assert r.preempt_keys([1]).tolist() == r.keys([1]).tolist()


def test_a_negative_or_nan_cost_is_refused(impl: types.ModuleType) -> None:
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="rebuild_cost"):
            sched(impl, rebuild_cost=bad)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), rebuild=st.sampled_from([0.01, 0.1, 1.0]),
       policy=st.sampled_from(["SRPT", "TRAIL"]))
def test_a_cost_never_adds_preemptions(seed: int, rebuild: float, policy: str) -> None:
    """Same state, same newcomers, ample memory: charging the rebuild never preempts more
    in one step (each victim's net key is at most its key, and the walk takes the i-th best
    victim for the i-th candidate with a rising threshold)."""
    rng = np.random.default_rng(seed)
    counts = []
    for cost in (0.0, rebuild):
        s = sched(trail_ext, policy=policy, max_running=4, prefill_weight=0.2,
                  rebuild_cost=cost, c=float(rng.choice([0.5, 10.0])))
        r2 = np.random.default_rng(seed + 1)
        for rid in range(6):
            s.add(rid, 0.0, int(r2.integers(1, 300)), 500, float(r2.integers(5, 400)))
        d = s.schedule(0.0)
        run = d.running.tolist()
        s.on_step(0.0, run, [int(r2.integers(0, 40)) for _ in run], [False] * len(run))
        for rid in range(6, 12):
            s.add(rid, 1.0, int(r2.integers(1, 300)), 500, float(r2.integers(1, 200)))
        counts.append(len(s.schedule(1.0).preempted))
    assert counts[1] <= counts[0]


def test_reference_twin_agrees_on_the_property_cases() -> None:
    """The same scenario through sched_ref gives the same decision (differential tests
    cover random configurations; this pins the cost path with many requests present)."""
    out = []
    for impl in (trail_ext, sched_ref):
        s = sched(impl, max_running=3, prefill_weight=0.05, rebuild_cost=1.0)
        for rid in range(5):
            s.add(rid, 0.0, 20 + 30 * rid, 400, 50.0 + 60 * rid)
        s.schedule(0.0)
        s.on_step(0.0, [0, 1, 2], [3, 3, 3], [False] * 3)
        for rid in range(5, 9):
            s.add(rid, 1.0, 10, 400, 4.0 * rid)
        d = s.schedule(1.0)
        out.append((d.preempted.tolist(), d.running.tolist()))
    assert out[0] == out[1]
