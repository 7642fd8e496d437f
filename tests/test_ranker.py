"""trail_ext.Ranker (C++) against trail.sched_ref.Ranker (Python), and against the scheduler.

The Ranker is the scheduler's rank rule for engines that keep their own memory (vLLM):
hypothesis drives both twins with the same random events (valid and invalid) and requires
the same keys, orders, preemptibility, views and exceptions after each one; a second test
checks that the Ranker's best request is the one `trail_ext.Scheduler` admits first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trail import sched_ref as ref

import trail_ext as te

POLICIES = ["FCFS", "SJF", "SRPT", "TRAIL", "LTR", "MLFQ"]
VIEW_FIELDS = ("rid", "arrival", "prompt_len", "max_new_tokens", "generated", "predicted_len",
               "remaining", "score", "preemptions", "level", "promoted")
RIDS = list(range(10))


def config(mod: Any, policy: str, **kw: Any) -> Any:
    return mod.SchedulerConfig(policy=getattr(mod.Policy, policy), **kw)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


class Twins:
    """Both rankers, called in lockstep; results and exception types must agree."""

    def __init__(self, policy: str, **kw: Any) -> None:
        self.native = te.Ranker(config(te, policy, **kw))
        self.reference = ref.Ranker(config(ref, policy, **kw))
        self.trace: list[str] = []

    def call(self, name: str, *args: Any) -> Any:
        self.trace.append(f"{name}{args!r}")
        out = []
        for r in (self.native, self.reference):
            try:
                out.append(("ok", getattr(r, name)(*args)))
            except (ValueError, KeyError, TypeError) as exc:
                out.append(("err", type(exc)))
        (kn, vn), (kr, vr) = out
        where = "\n  ".join(self.trace[-30:])
        assert kn == kr, f"{name}{args!r}: native {kn} {vn!r}, reference {kr} {vr!r}\n  {where}"
        if kn == "err":
            assert vn == vr, f"{name}{args!r}: {vn} vs {vr}\n  {where}"
            return None
        if isinstance(vn, np.ndarray):
            assert vn.dtype == vr.dtype and vn.tolist() == vr.tolist(), \
                f"{name}{args!r}: {vn!r} vs {vr!r}\n  {where}"
        self.compare()
        return vn

    def compare(self) -> None:
        assert len(self.native) == len(self.reference)
        for rid in RIDS:
            assert (rid in self.native) == (rid in self.reference)
            if rid in self.native:
                a, b = self.native.get(rid), self.reference.get(rid)
                assert a.state.name == b.state.name and a.kv.name == b.kv.name
                for f in VIEW_FIELDS:
                    assert same(getattr(a, f), getattr(b, f)), (rid, f, getattr(a, f),
                                                                getattr(b, f), self.trace[-30:])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_native_ranker_matches_reference(data: st.DataObject) -> None:
    draw = data.draw
    policy = draw(st.sampled_from(POLICIES))
    kw = dict(c=draw(st.sampled_from([0.0, 0.25, 0.8, 2.0])),
              max_preemptions=draw(st.sampled_from([-1, 0, 1, 2])),
              starvation_steps=draw(st.sampled_from([0, 0, 1, 3])),
              starvation_period=draw(st.integers(0, 3)),
              default_predicted_len=draw(st.sampled_from([1.0, 16.0, 128.0])),
              mlfq_levels=draw(st.integers(1, 4)), mlfq_base_quantum=draw(st.integers(1, 4)),
              mlfq_prefill_ratio=draw(st.sampled_from([1.0, 8.0])),
              prefill_weight=draw(st.sampled_from([0.0, 0.0, 0.5, 2.0])),
              aging_rate=draw(st.sampled_from([0.0, 0.0, 1.0])),
              boost_gamma=draw(st.sampled_from([0.0, 0.0, 0.1])),
              rebuild_cost=draw(st.sampled_from([0.0, 0.0, 0.05, 1.0])))
    t = Twins(policy, **kw)
    rid = st.integers(-1, len(RIDS) - 1)  # -1 is never live: KeyError paths
    some = st.lists(rid, max_size=5)
    for _ in range(draw(st.integers(5, 60))):
        kind = draw(st.sampled_from(["add", "add", "remove", "run", "preempt", "tokens",
                                     "predict", "score", "begin", "end", "beta", "query"]))
        if kind == "add":
            t.call("add", draw(rid), draw(st.floats(-5, 50)), draw(st.integers(0, 40)),
                   draw(st.integers(0, 30)),
                   draw(st.sampled_from([math.nan, 0.0, 3.0, 12.5, 100.0, -1.0])),
                   draw(st.sampled_from([math.nan, -2.0, 0.5, 7.0, math.inf])))
        elif kind == "remove":
            t.call("remove", draw(rid))
        elif kind == "run":
            t.call("set_running", draw(some))
        elif kind == "preempt":
            t.call("set_preempted", draw(rid))
        elif kind == "tokens":
            rows = draw(some)
            t.call("on_tokens", rows, [draw(st.integers(-1, 6)) for _ in rows])
        elif kind == "predict":
            rows = draw(some)
            t.call("update_predictions", rows,
                   [draw(st.sampled_from([0.0, 2.0, 9.5, 300.0, -1.0, math.nan])) for _ in rows])
        elif kind == "score":
            rows = draw(some)
            t.call("update_scores", rows, [draw(st.sampled_from([0.0, -3.0, 4.5, math.inf]))
                                           for _ in rows])
        elif kind == "begin":
            t.call("begin_step")
        elif kind == "end":
            t.call("end_step")
        elif kind == "beta":
            t.call("set_prefill_weight", draw(st.sampled_from([0.0, 0.75, -1.0, math.nan])))
            t.call("set_aging_rate", draw(st.sampled_from([0.0, 2.5, -1.0, math.inf])))
        live = [r for r in RIDS if r in t.native]
        rows = draw(st.permutations(live))
        t.call("keys", rows)
        t.call("preempt_keys", rows)
        t.call("preemptible", rows)
        t.call("order", rows)


def test_bad_arguments_are_refused_alike() -> None:
    t = Twins("TRAIL")
    t.call("add", 1, 0.0, 4, 8)
    for name, args in [("add", (1.5, 0.0, 4, 8)), ("add", (2, math.inf, 4, 8)),
                       ("add", (2, 0.0, 2**40, 1)), ("add", (2, 0.0, True, 8)),
                       ("on_tokens", ([1], [1, 2])), ("on_tokens", ([1.0], [1])),
                       ("set_running", ([[1]],)), ("keys", ([7],)), ("preempt_keys", ([7],)),
                       ("set_preempted", (1,)),
                       ("update_predictions", ([1], ["x"]))]:
        assert t.call(name, *args) is None
    with pytest.raises(TypeError):
        te.Ranker("TRAIL")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="c"):
        te.Ranker(te.SchedulerConfig(c=-1.0))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("seed", range(8))
def test_best_ranked_is_what_the_scheduler_admits_first(policy: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    kw = dict(max_running=1, kv_capacity_tokens=1 << 20,
              prefill_weight=float(rng.choice([0.0, 0.5])),
              aging_rate=float(rng.choice([0.0, 2.0])),
              boost_gamma=float(rng.choice([0.0, 0.05])))
    sched, ranker = te.Scheduler(config(te, policy, **kw)), te.Ranker(config(te, policy, **kw))
    rids = list(range(20))
    for rid in rids:
        args = (rid, float(rng.integers(0, 5)), int(rng.integers(1, 300)),
                int(rng.integers(1, 400)), float(rng.choice([math.nan, rng.uniform(0, 400)])),
                float(rng.choice([math.nan, rng.normal()])))
        sched.add(*args)
        ranker.add(*args)
    d = sched.schedule(10.0)
    assert d.admitted.tolist() == [int(ranker.order(rids)[0])]
    keys = ranker.keys(rids)
    assert keys[ranker.order(rids)[0]] == keys.min()
