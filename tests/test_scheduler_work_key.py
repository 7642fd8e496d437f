"""Work-aware keys (prefill_weight, aging_rate), the preemption margin and KV-aware filling,
in both twins."""

from __future__ import annotations

import math
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import trail_ext
from trail import sched_ref


def sched(impl: types.ModuleType, **kw: object) -> object:
    kw.setdefault("kv_capacity_tokens", 1 << 20)
    kw["policy"] = getattr(impl.Policy, str(kw.get("policy", "SRPT")))
    return impl.Scheduler(impl.SchedulerConfig(**kw))


def run_one_step(s: object, now: float, finish: set[int]) -> list[int]:
    d = s.schedule(now)
    running = d.running.tolist()
    s.on_step(now, running, [1] * len(running), [r in finish for r in running])
    return running


@pytest.mark.parametrize("policy", ["SJF", "SRPT", "TRAIL"])
def test_prefill_weight_ranks_by_remaining_work(impl: types.ModuleType, policy: str) -> None:
    """Output 10 + prompt 100 vs output 30 + prompt 5: output-only ranks the first ahead;
    with β = 0.5 its work (60) is larger than the second's (32.5)."""
    for beta, first in ((0.0, 1), (0.5, 2)):
        s = sched(impl, policy=policy, max_running=1, prefill_weight=beta)
        s.add(1, 0.0, 100, 64, 10.0)
        s.add(2, 0.0, 5, 64, 30.0)
        assert s.schedule(0.0).admitted.tolist() == [first], (policy, beta)


def test_a_dropped_request_carries_its_recompute(impl: types.ModuleType) -> None:
    """Preempted with RECOMPUTE, a request's key adds β × (prompt + generated); kept, it adds
    nothing. Checked through the order it resumes in against a fresh waiting request."""
    order = {}
    for mode in ("KEEP", "RECOMPUTE"):
        s = sched(impl, policy="SRPT", max_running=1, prefill_weight=1.0,
                  preempt_mode=getattr(impl.PreemptMode, mode))
        s.add(1, 0.0, 40, 64, 20.0)           # work 20 + 40 = 60 while waiting
        s.schedule(0.0)
        s.on_step(0.0, [1], [4], [False])     # 16 left; KV holds 44 tokens
        s.add(2, 1.0, 1, 64, 2.0)             # work 3: preempts request 1
        assert s.schedule(1.0).preempted.tolist() == [1]
        s.add(3, 1.0, 1, 64, 30.0)            # work 31: above 16 (kept), below 16 + 44
        s.on_step(1.0, [2], [2], [True])      # request 2 finishes
        order[mode] = s.schedule(2.0).running.tolist()
    assert order == {"KEEP": [1], "RECOMPUTE": [3]}


def test_zero_weights_keep_the_plain_keys(impl: types.ModuleType) -> None:
    """Defaults: the key is the size itself, bit for bit (prompts and arrivals play no part)."""
    s = sched(impl, policy="SRPT", max_running=1)
    s.add(1, 5.0, 1000, 64, 7.0)
    s.add(2, 0.0, 1, 64, 8.0)
    assert s.schedule(5.0).admitted.tolist() == [1]


@pytest.mark.parametrize("policy", ["SJF", "SRPT", "TRAIL"])
@settings(max_examples=25, deadline=None)
@given(alpha=st.floats(0.05, 20.0), size=st.integers(20, 400))
def test_aging_bounds_the_wait_of_a_long_request(policy: str, alpha: float, size: int) -> None:
    """One slot, a long request, and a short one arriving every second forever: without
    aging the long one starves; with α > 0 it runs by the time α × t exceeds its key (a new
    short's key is 1 + α t), whatever α and its size are. Both twins, same decisions."""
    for impl in (trail_ext, sched_ref):
        s = sched(impl, policy=policy, max_running=1, aging_rate=alpha, c=0.0)
        s.add(0, 0.0, 1, size + 1, float(size))
        bound = math.ceil((size - 1) / alpha) + 3   # seconds, one step per second
        started = None
        for t in range(bound + 1):
            s.add(t + 1, float(t), 1, 4, 1.0)
            running = run_one_step(s, float(t), finish=set(range(1, t + 2)))
            if 0 in running:
                started = t
                break
        assert started is not None and started <= bound, (impl.__name__, started, bound)


def test_without_aging_the_long_request_starves(impl: types.ModuleType) -> None:
    s = sched(impl, policy="SRPT", max_running=1)
    s.add(0, 0.0, 1, 200, 100.0)
    for t in range(300):
        s.add(t + 1, float(t), 1, 4, 1.0)
        assert 0 not in run_one_step(s, float(t), finish=set(range(1, t + 2)))


def test_margin_stops_near_tie_preemption(impl: types.ModuleType) -> None:
    """A newcomer 3 tokens shorter preempts with margin 0 and 2.5, not with margin 3."""
    for margin, preempts in ((0.0, True), (2.5, True), (3.0, False)):
        s = sched(impl, policy="SRPT", max_running=1, preempt_margin=margin)
        s.add(1, 0.0, 1, 64, 10.0)
        s.schedule(0.0)
        s.add(2, 0.0, 1, 64, 7.0)
        assert bool(s.schedule(0.0).preempted.tolist()) is preempts, margin


@settings(max_examples=30, deadline=None)
@given(beta=st.floats(0.0, 3.0), seed=st.integers(0, 2**31 - 1))
def test_set_prefill_weight_equals_building_with_it(beta: float, seed: int) -> None:
    """Requests filed under β₀, then β switched: the next admissions are those of a scheduler
    built with β that saw the same history (the margin keeps preemption out of it, so the
    history does not depend on β); both twins agree."""
    import random

    rng = random.Random(seed)
    reqs = [(i, rng.uniform(0, 2), rng.randint(1, 300), float(rng.randint(1, 200)))
            for i in range(12)]
    decisions = []
    for impl in (trail_ext, sched_ref):
        for switch in (True, False):
            s = sched(impl, policy="TRAIL", max_running=3, preempt_margin=1e9,
                      prefill_weight=0.2 if switch else beta, aging_rate=0.5)
            for i, t, prompt, out in reqs[:3]:  # all run whatever β is
                s.add(i, t, prompt, 512, out)
            run_one_step(s, 2.0, set())
            for i, t, prompt, out in reqs[3:]:  # wait, filed with β₀'s keys
                s.add(i, t + 2.0, prompt, 512, out)
            assert s.schedule(4.0).admitted.tolist() == []
            if switch:
                s.set_prefill_weight(beta)
            admitted = []
            for step in range(9):  # one running request finishes per step
                d = s.schedule(5.0 + step)
                admitted += d.admitted.tolist()
                running = d.running.tolist()
                s.on_step(5.0 + step, running, [1] * len(running),
                          [r == running[0] for r in running])
            decisions.append(admitted)
    assert all(x == decisions[0] for x in decisions), decisions
    assert len(decisions[0]) >= 6


def test_set_prefill_weight_refuses_bad_values(impl: types.ModuleType) -> None:
    s = sched(impl, policy="SRPT")
    for value in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="prefill_weight"):
            s.set_prefill_weight(value)


@pytest.mark.parametrize("field", ["prefill_weight", "aging_rate", "preempt_margin"])
@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf])
def test_bad_values_are_refused(impl: types.ModuleType, field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        sched(impl, **{field: value})


def test_kv_aware_admits_only_what_predicted_growth_leaves_room_for(
        impl: types.ModuleType) -> None:
    """Capacity 8 blocks of 16 tokens. A running request at 16 tokens predicted to grow by
    80 will need 6 blocks; a newcomer of 16 prompt tokens predicted to need 32 more needs 3.
    Without kv_aware both run now (room for their next tokens) and memory runs out later;
    with it the newcomer waits until a refined prediction shrinks the first one's growth."""
    for aware in (False, True):
        s = sched(impl, policy="SJF", max_running=4, kv_capacity_tokens=128, block_size=16,
                  kv_aware=aware)
        s.add(1, 0.0, 16, 100, 80.0)
        s.schedule(0.0)
        s.add(2, 0.0, 16, 100, 32.0)
        assert s.schedule(1.0).admitted.tolist() == ([] if aware else [2]), aware
    s.update_predictions([1], [20.0])  # the probe now says 20 more tokens: 3 blocks
    assert s.schedule(2.0).admitted.tolist() == [2]


def test_kv_aware_rank_preemption_frees_predicted_growth(impl: types.ModuleType) -> None:
    """A long-predicted running request (TRAIL, early in its life) is preempted for a short
    newcomer when the newcomer's predicted KV does not fit beside its predicted growth."""
    s = sched(impl, policy="TRAIL", max_running=4, kv_capacity_tokens=128, block_size=16,
              kv_aware=True, preempt_mode=impl.PreemptMode.KEEP)
    s.add(1, 0.0, 16, 100, 90.0)
    s.schedule(0.0)
    s.add(2, 0.0, 16, 100, 10.0)
    d = s.schedule(1.0)
    assert d.preempted.tolist() == [1] and d.admitted.tolist() == [2]


def test_kv_aware_never_stalls_an_empty_batch(impl: types.ModuleType) -> None:
    s = sched(impl, policy="SJF", max_running=4, kv_capacity_tokens=128, block_size=16,
              kv_aware=True)
    s.add(1, 0.0, 16, 100, 500.0)  # predicted far beyond capacity (the cap is 100 tokens)
    assert s.schedule(0.0).admitted.tolist() == [1]


def boost_head(gamma: float, work: float) -> float:
    return -math.log(-math.expm1(-gamma * max(work, 1.0))) / gamma


@pytest.mark.parametrize("policy", ["SJF", "SRPT", "TRAIL"])
def test_boost_key_ranks_by_boosted_arrival(impl: types.ModuleType, policy: str) -> None:
    """Boost: key = α × arrival − B(work). A short request arriving Δ seconds after a long one
    runs first exactly when its head start over the long one exceeds α × Δ."""
    gamma, alpha = 0.01, 100.0  # B(10) ≈ 230 tokens, B(300) ≈ 5 tokens
    gap = (boost_head(gamma, 10.0) - boost_head(gamma, 300.0)) / alpha
    for delta, first in ((0.9 * gap, 2), (1.1 * gap, 1)):
        s = sched(impl, policy=policy, max_running=1, boost_gamma=gamma, aging_rate=alpha)
        s.add(1, 0.0, 1, 400, 300.0)
        s.add(2, delta, 1, 400, 10.0)
        assert s.schedule(delta).admitted.tolist() == [first], (policy, delta)


def test_boost_head_start_saturates_and_counts_prefill(impl: types.ModuleType) -> None:
    """Among long requests Boost is nearly FCFS (head starts vanish); the prefill weight adds
    the pending prompt to the work a head start is computed on."""
    s = sched(impl, policy="SRPT", max_running=1, boost_gamma=0.05, aging_rate=1.0)
    s.add(1, 0.0, 1, 4000, 3000.0)
    s.add(2, 1.0, 1, 4000, 200.0)   # far shorter, but both heads are ~0: arrival decides
    assert s.schedule(1.0).admitted.tolist() == [1]
    s = sched(impl, policy="SRPT", max_running=1, boost_gamma=0.05, aging_rate=1.0,
              prefill_weight=1.0)
    s.add(1, 0.0, 200, 400, 5.0)    # work 205: head ~0
    s.add(2, 10.0, 1, 400, 6.0)     # work 7: head ~21 tokens > 10 s × α
    assert s.schedule(10.0).admitted.tolist() == [2]


def test_boost_gamma_is_checked(impl: types.ModuleType) -> None:
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="boost_gamma"):
            sched(impl, boost_gamma=bad)
