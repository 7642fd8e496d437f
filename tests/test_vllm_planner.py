"""The vLLM adapter's step plan (trail.integrations.vllm.planner), without vLLM installed.

The plan must agree with `trail_ext.Scheduler`'s own fill step: on random populations the
requests a plan lets in (free room or rank preemption) and the victims it picks are those
the scheduler picks, when both see the same batch limit and ample memory.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from trail.integrations.vllm.planner import plan_step

import trail_ext as te


def make(policy: str, **kw: object) -> tuple[te.Ranker, te.Scheduler]:
    """A ranker and a scheduler alike; the scheduler recomputes a preempted request, as
    vLLM does, so both charge a preemption's rebuild."""
    cfg = te.SchedulerConfig(policy=getattr(te.Policy, policy), kv_capacity_tokens=1 << 30,
                             preempt_mode=te.PreemptMode.RECOMPUTE, **kw)
    return te.Ranker(cfg), te.Scheduler(cfg)


def test_orders_follow_ranks_and_a_short_request_displaces_a_long_one() -> None:
    ranker, _ = make("TRAIL", c=1.0)
    for rid, pred in [(0, 500.0), (1, 400.0), (2, 5.0), (3, 50.0)]:
        ranker.add(rid, float(rid), 10, 1000, predicted_len=pred)
    ranker.set_running([0, 1])
    ids = {f"r{i}": i for i in range(4)}
    p = plan_step(ranker, ["r2", "r3"], ["r0", "r1"], ids, free_slots=0, free_blocks=100,
                  blocks_needed={"r2": 1, "r3": 1}, blocks_held={"r0": 3, "r1": 3})
    assert p.waiting == ["r2", "r3"] and p.preempt == ["r0", "r1"]
    assert p.displaced_by == {"r2": ["r0"], "r3": ["r1"]} and p.running == []


def test_no_preemption_past_c_or_for_a_worse_request() -> None:
    ranker, _ = make("TRAIL", c=0.5)
    ranker.add(0, 0.0, 10, 1000, predicted_len=100.0)
    ranker.add(1, 1.0, 10, 1000, predicted_len=10.0)
    ranker.add(2, 2.0, 10, 1000, predicted_len=1000.0)
    ranker.set_running([0])
    ranker.on_tokens([0], [60])  # 60 > c * 100: no longer preemptible
    ids = {i: i for i in range(3)}
    p = plan_step(ranker, [2, 1], [0], ids, 0, 10, {1: 1, 2: 1}, {0: 5})
    assert p.waiting == [1, 2] and p.preempt == [] and p.running == [0]


def test_memory_shortage_preempts_until_the_prompt_fits() -> None:
    ranker, _ = make("SRPT")
    for rid, pred in [(0, 90.0), (1, 80.0), (2, 1.0)]:
        ranker.add(rid, float(rid), 10, 100, predicted_len=pred)
    ranker.set_running([0, 1])
    ids = {i: i for i in range(3)}
    p = plan_step(ranker, [2], [0, 1], ids, free_slots=5, free_blocks=1,
                  blocks_needed={2: 6}, blocks_held={0: 3, 1: 3})
    assert p.preempt == [0, 1]
    p = plan_step(ranker, [2], [0, 1], ids, free_slots=5, free_blocks=1,
                  blocks_needed={2: 9}, blocks_held={0: 3, 1: 3})
    assert p.preempt == []  # even both would not make room: nobody is preempted


@pytest.mark.parametrize("policy", ["FCFS", "SJF", "SRPT", "TRAIL", "LTR"])
@pytest.mark.parametrize("seed", range(10))
def test_plan_matches_the_scheduler_fill_step(policy: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    max_running = int(rng.integers(1, 5))
    kw = dict(max_running=max_running, c=float(rng.choice([0.3, 1.0])),
              preempt_margin=float(rng.choice([0.0, 5.0])),
              prefill_weight=float(rng.choice([0.0, 0.05])),
              rebuild_cost=float(rng.choice([0.0, 1.0])))
    ranker, sched = make(policy, **kw)
    n = 12
    for rid in range(n):
        args = (rid, 0.0 if rid < 6 else 1.0, int(rng.integers(1, 50)), 400,
                float(rng.uniform(1, 300)), float(rng.normal()))
        ranker.add(*args)
        sched.add(*args)
    first = sched.schedule(0.5)  # the first six arrived: some run
    running = first.running.tolist()
    ranker.set_running(running)
    steps = rng.integers(0, 20, size=len(running)).tolist()
    sched.on_step(0.6, running, steps, [False] * len(running))
    ranker.on_tokens(running, steps)
    waiting = [r for r in range(n) if r not in running]
    d = sched.schedule(2.0)
    ids = {r: r for r in range(n)}
    p = plan_step(ranker, waiting, running, ids, max_running - len(running), 1 << 30,
                  {r: 1 for r in waiting}, {r: 1 for r in running},
                  preempt_margin=kw["preempt_margin"])
    assert sorted(p.preempt) == sorted(d.preempted.tolist())
    let_in = [w for w in p.waiting][: max_running - len(p.running)]
    assert sorted(let_in) == sorted(d.admitted.tolist() + d.recomputed.tolist()
                                    + d.resumed.tolist())
    assert not math.isnan(float(ranker.keys(p.waiting).sum()))


def test_a_recompute_too_costly_for_the_gain_is_not_planned() -> None:
    """One slot; victim key 400 (prompt 300, 10 generated), newcomer 5 + β × 10: with β
    0.1 and 3 requests present the recompute costs 1 × 0.1 × 310 × 3 / 1 = 93, so a
    newcomer of key ≤ 306 still displaces it; with 30 requests present (930) none does."""
    for waiting_more, want in ((0, ["v"]), (27, [])):
        ranker, _ = make("TRAIL", c=1.0, prefill_weight=0.1, rebuild_cost=1.0,
                         max_running=1)
        ranker.add(0, 0.0, 300, 1000, predicted_len=410.0)
        ranker.set_running([0])
        ranker.on_tokens([0], [10])
        ranker.add(1, 1.0, 10, 1000, predicted_len=5.0)
        ranker.add(2, 1.0, 10, 1000, predicted_len=900.0)
        for rid in range(3, 3 + waiting_more):
            ranker.add(rid, 2.0, 10, 1000, predicted_len=900.0)
        ids = {"v": 0, "w": 1, "x": 2}
        p = plan_step(ranker, ["w", "x"], ["v"], ids, 0, 100, {"w": 1, "x": 1}, {"v": 20})
        assert p.preempt == want, waiting_more
