"""Boundary checks at every public entry point (issue 13, step 6).

Integers and floats that cross into C++ are range-checked (no overflow, no narrowing), and
wrong types or non-finite values raise TypeError/ValueError naming the argument. For the
scheduler both twins (trail_ext in C++, trail.sched_ref in Python) must agree: both accept
with equal results, or both refuse with the same exception type. The limits themselves are
documented in docs/scheduler.md ("Limits").
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from trail import sched_ref as ref
from trail.probe import Bins, Probe

import trail_ext as te
from trail_ext import _C

MAX_TOKENS = 2**40
MAX_RUNNING = 2**20
I64_MAX, I64_MIN = 2**63 - 1, -(2**63)

# Values no int64 argument can hold, and values of the wrong type for an integer argument
# (a bool would silently be 1, a float silently truncated).
UNREPRESENTABLE_INTS = [2**63, -(2**63) - 1, 2**64, 2**100]
NOT_INTS = ["1", b"1", 1.0, 2.5, None, True, np.bool_(False), [1], np.float64(3.0)]
NOT_REALS = ["1.5", b"1", None, True, np.bool_(True), [1.0], object()]
NON_FINITE = [math.nan, math.inf, -math.inf]


def outcome(fn: Callable[[], Any]) -> tuple[Any, str]:
    """("ok", repr of the result) or (exception type, message)."""
    try:
        return "ok", fn()
    except (TypeError, ValueError, KeyError) as exc:
        return type(exc), str(exc)


def both(fn: Callable[[Any], Any]) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Run `fn(impl)` against the C++ scheduler and the Python twin."""
    return outcome(lambda: fn(te)), outcome(lambda: fn(ref))


def assert_both_refuse(fn: Callable[[Any], Any], exc: type, name: str) -> None:
    """Both twins raise `exc`, and both messages name the argument `name`."""
    for (kind, msg), which in zip(both(fn), ("native", "ref")):
        assert kind is exc, f"{which}: expected {exc.__name__}, got {kind}: {msg}"
        assert re.search(rf"\b{re.escape(name)}\b", msg), f"{which}: {msg!r} does not name {name}"


def config(impl: Any, **kw: Any) -> Any:
    cfg = dict(policy=impl.Policy.SRPT, max_running=4, kv_capacity_tokens=256, block_size=4)
    cfg.update(kw)
    return impl.SchedulerConfig(**cfg)


def sched(impl: Any, **kw: Any) -> Any:
    return impl.Scheduler(config(impl, **kw))


def running_pair(impl: Any) -> Any:
    s = sched(impl)
    s.add(1, 0.0, 4, 8)
    s.add(2, 0.0, 4, 8)
    s.schedule(0.0)
    return s


def snapshot(s: Any) -> tuple:
    """What a caller can observe of a scheduler, comparable across the twins."""
    views = []
    for rid in (1, 2, 3, 4):
        if rid in s:
            v = s.get(rid)
            views.append((v.rid, v.state.name, v.kv.name, v.generated, v.prompt_len,
                          v.max_new_tokens, v.remaining, v.level, v.preemptions))
    return s.stats(), views


# ---------------------------------------------------------------- scheduler: scalar arguments

INT_ARGS = {  # entry point -> call with the integer argument `v`
    "rid": lambda s, v: s.add(v, 0.0, 4, 8),
    "prompt_len": lambda s, v: s.add(9, 0.0, v, 8),
    "max_new_tokens": lambda s, v: s.add(9, 0.0, 4, v),
}
REAL_ARGS = {
    "arrival": lambda s, v: s.add(9, v, 4, 8),
    "predicted_len": lambda s, v: s.add(9, 0.0, 4, 8, v),
    "score": lambda s, v: s.add(9, 0.0, 4, 8, 3.0, v),
    "now": lambda s, v: s.schedule(v),
    "prefill_weight": lambda s, v: s.set_prefill_weight(v),
    "preempt_margin": lambda s, v: s.set_preempt_margin(v),
}


@pytest.mark.parametrize("name", sorted(INT_ARGS))
@pytest.mark.parametrize("value", UNREPRESENTABLE_INTS + NOT_INTS, ids=repr)
def test_add_integer_arguments_reject_wrong_types(name: str, value: Any) -> None:
    assert_both_refuse(lambda impl: INT_ARGS[name](sched(impl), value), TypeError, name)


@pytest.mark.parametrize("name", ["abort", "get"])
@pytest.mark.parametrize("value", UNREPRESENTABLE_INTS + NOT_INTS, ids=repr)
def test_rid_lookups_reject_wrong_types(name: str, value: Any) -> None:
    assert_both_refuse(lambda impl: getattr(running_pair(impl), name)(value), TypeError, "rid")


@pytest.mark.parametrize("rid", [I64_MAX, I64_MIN, 2**31, 2**32, -1, 0, np.int64(I64_MIN)])
def test_any_int64_is_a_rid(rid: int) -> None:
    def run(impl: Any) -> tuple:
        s = sched(impl)
        s.add(rid, 0.0, 4, 8)
        d = s.schedule(0.0)
        s.on_step(0.0, np.array([rid], np.int64), [8], [False])
        return d.running.tolist(), rid in s, s.stats()["finished"]

    native, python = both(run)
    assert native == python == ("ok", ([int(rid)], False, 1))


@pytest.mark.parametrize("name", ["prompt_len", "max_new_tokens"])
@pytest.mark.parametrize("value", [I64_MAX, 2**31, 2**32, MAX_TOKENS + 1, I64_MIN, 0, -1])
def test_token_counts_out_of_range_are_refused(name: str, value: int) -> None:
    assert_both_refuse(lambda impl: INT_ARGS[name](sched(impl), value), ValueError, name)


@pytest.mark.parametrize("name", sorted(REAL_ARGS))
@pytest.mark.parametrize("value", NOT_REALS + [2**1100, -(2**2000)], ids=repr)
def test_real_arguments_reject_wrong_types(name: str, value: Any) -> None:
    assert_both_refuse(lambda impl: REAL_ARGS[name](sched(impl), value), TypeError, name)


@pytest.mark.parametrize("name, value", [
    *[("arrival", v) for v in NON_FINITE], *[("now", v) for v in NON_FINITE],
    *[("prefill_weight", v) for v in NON_FINITE + [-1.0]],
    ("predicted_len", math.inf), ("predicted_len", -1.0), ("score", math.inf),
    ("score", -math.inf),
])
def test_non_finite_reals_are_refused(name: str, value: float) -> None:
    assert_both_refuse(lambda impl: REAL_ARGS[name](sched(impl), value), ValueError, name)


@pytest.mark.parametrize("value", [1e308, -1e308, 2**63, 2**1000, np.float32(3.5),
                                   np.int64(I64_MAX)], ids=repr)
def test_large_finite_arrivals_agree(value: Any) -> None:
    def run(impl: Any) -> tuple:
        s = sched(impl, policy=impl.Policy.TRAIL, aging_rate=1e300, prefill_weight=1e300)
        s.add(1, value, 4, 8)
        s.add(2, 0.0, 4, 8)
        s.schedule(max(float(value), 0.0))
        return snapshot(s)

    native, python = both(run)
    assert native[0] == "ok" and native == python


def test_nan_means_unknown_for_predictions_and_scores() -> None:
    def run(impl: Any) -> tuple:
        s = sched(impl)
        s.add(1, 0.0, 4, 8, math.nan, math.nan)
        v = s.get(1)
        return math.isnan(v.predicted_len), math.isnan(v.score)

    assert both(run) == (("ok", (True, True)), ("ok", (True, True)))


# ---------------------------------------------------------------- scheduler: array arguments

ARRAY_ARGS = {
    "rids": lambda s, a: s.on_step(0.0, a, [1, 1], [False, False]),
    "new_tokens": lambda s, a: s.on_step(0.0, [1, 2], a, [False, False]),
    "finished": lambda s, a: s.on_step(0.0, [1, 2], [1, 1], a),
    "remaining": lambda s, a: s.update_predictions([1, 2], a),
    "scores": lambda s, a: s.update_scores([1, 2], a),
}


@pytest.mark.parametrize("name, bad, exc", [
    ("rids", [2**63, 1], TypeError), ("rids", [2**64, 1], TypeError),
    ("rids", np.array([2**64 - 1, 1], np.uint64), TypeError), ("rids", [1.0, 2.0], TypeError),
    ("rids", [True, False], TypeError), ("rids", ["1", "2"], TypeError),
    ("rids", [None, None], TypeError), ("rids", [[1, 2]], ValueError),
    ("new_tokens", [2**63, 1], TypeError), ("new_tokens", [1.0, 1.0], TypeError),
    ("new_tokens", [True, True], TypeError), ("new_tokens", [I64_MAX, 1], ValueError),
    ("new_tokens", [I64_MIN, 1], ValueError), ("new_tokens", [2**32, 1], ValueError),
    ("finished", [0.0, 1.0], TypeError), ("finished", [2, 0], ValueError),
    ("finished", [-1, 0], ValueError), ("finished", ["a", "b"], TypeError),
    ("remaining", ["a", "b"], TypeError), ("remaining", [True, False], TypeError),
    ("remaining", [None, None], TypeError), ("remaining", [math.nan, 1.0], ValueError),
    ("remaining", [1.0, math.inf], ValueError), ("remaining", [-1.0, 1.0], ValueError),
    ("scores", [math.nan, 1.0], ValueError), ("scores", [-math.inf, 1.0], ValueError),
    ("scores", ["a", "b"], TypeError),
])
def test_array_arguments_are_checked_and_change_nothing(name: str, bad: Any,
                                                         exc: type) -> None:
    def run(impl: Any) -> tuple:
        s = running_pair(impl)
        before = snapshot(s)
        with pytest.raises(exc) as info:
            ARRAY_ARGS[name](s, bad)
        assert snapshot(s) == before
        return type(info.value)

    native, python = both(run)
    assert native == python == ("ok", exc)


@pytest.mark.parametrize("value", [I64_MAX, 2**63, 1e300, 2.0**70, np.uint64(2**64 - 1)])
def test_huge_predictions_are_capped_not_overflowed(value: Any) -> None:
    """A huge remaining (kv_aware sums ceil(remaining) tokens) is capped at max_new_tokens."""
    def run(impl: Any) -> tuple:
        s = sched(impl, kv_aware=True, policy=impl.Policy.TRAIL)
        s.add(1, 0.0, 4, 8)
        s.add(2, 0.0, 4, 8)
        s.update_predictions([1, 2], np.asarray([value, 3]))
        s.schedule(0.0)
        return snapshot(s)

    native, python = both(run)
    assert native[0] == "ok" and native == python
    assert native[1][0]["kv_reserved_blocks"] >= 0


# ---------------------------------------------------------------- scheduler: configuration

INT_FIELDS = {  # field -> (lowest, highest) accepted; extra config to make the extremes valid
    "max_running": (1, MAX_RUNNING, {}),
    "kv_capacity_tokens": (4, MAX_TOKENS, {}),
    "block_size": (1, MAX_TOKENS, {"kv_capacity_tokens": MAX_TOKENS}),
    "swap_capacity_tokens": (0, MAX_TOKENS, {}),
    "max_preemptions": (-1, I64_MAX, {}),
    "starvation_steps": (0, I64_MAX, {}),
    "starvation_period": (0, I64_MAX, {}),
    "mlfq_levels": (1, 64, {}),
    "mlfq_base_quantum": (1, MAX_TOKENS, {}),
}
REAL_FIELDS = {  # field -> smallest accepted value (None: it must be > 0)
    "c": 0.0, "default_predicted_len": None, "mlfq_prefill_ratio": None,
    "prefill_weight": 0.0, "aging_rate": 0.0, "preempt_margin": 0.0, "boost_gamma": 0.0,
    "rebuild_cost": 0.0,
}


@pytest.mark.parametrize("field", sorted(INT_FIELDS))
@pytest.mark.parametrize("value", UNREPRESENTABLE_INTS + NOT_INTS, ids=repr)
def test_integer_fields_reject_wrong_types(field: str, value: Any) -> None:
    assert_both_refuse(lambda impl: impl.Scheduler(config(impl, **{field: value})), TypeError,
                       field)


@pytest.mark.parametrize("field", sorted(INT_FIELDS))
def test_integer_fields_accept_their_limits_and_refuse_beyond(field: str) -> None:
    lo, hi, extra = INT_FIELDS[field]
    for value in (lo, hi):
        def build(impl: Any, value: int = value) -> dict:
            s = impl.Scheduler(config(impl, **{**extra, field: value}))
            s.add(1, 0.0, 1, 1)
            s.schedule(0.0)
            return s.stats()

        native, python = both(build)
        assert native[0] == "ok" and native == python, (field, value, native, python)
        assert native[1]["kv_reserved_blocks"] >= 1
    for value in (lo - 1, hi + 1, I64_MIN, I64_MAX, 2**31, 2**32):
        if lo <= value <= hi or not I64_MIN <= value <= I64_MAX:
            continue  # accepted, or a TypeError (test_integer_fields_reject_wrong_types)
        assert_both_refuse(lambda impl: impl.Scheduler(config(impl, **{**extra, field: value})),
                           ValueError, field)


@pytest.mark.parametrize("field", sorted(REAL_FIELDS))
@pytest.mark.parametrize("value", NOT_REALS + [2**1100], ids=repr)
def test_real_fields_reject_wrong_types(field: str, value: Any) -> None:
    assert_both_refuse(lambda impl: impl.Scheduler(config(impl, **{field: value})), TypeError,
                       field)


@pytest.mark.parametrize("field", sorted(REAL_FIELDS))
@pytest.mark.parametrize("value", NON_FINITE + [-1.0, -5e-324])
def test_real_fields_refuse_non_finite_and_negative(field: str, value: float) -> None:
    assert_both_refuse(lambda impl: impl.Scheduler(config(impl, **{field: value})), ValueError,
                       field)


@pytest.mark.parametrize("field", sorted(REAL_FIELDS))
def test_real_fields_accept_extremes(field: str) -> None:
    lo = REAL_FIELDS[field]
    for value in ([lo] if lo is not None else [5e-324]) + [1e308, 2**1000]:
        def run(impl: Any, value: float = value) -> tuple:
            s = impl.Scheduler(config(impl, policy=impl.Policy.TRAIL, **{field: value}))
            for rid in (1, 2, 3):
                s.add(rid, float(rid), 4 * rid, 8)
            s.schedule(3.0)
            s.on_step(3.0, s.schedule(3.0).running, [1, 1, 1], [False] * 3)
            return snapshot(s)

        native, python = both(run)
        assert native[0] == "ok" and native == python, (field, value)


@pytest.mark.parametrize("field, value", [
    ("kv_aware", 1), ("kv_aware", 0), ("kv_aware", "yes"), ("kv_aware", None),
    ("policy", 3), ("policy", "TRAIL"), ("policy", None),
    ("preempt_mode", 0), ("preempt_mode", "KEEP"),
])
def test_flag_and_enum_fields_reject_wrong_types(field: str, value: Any) -> None:
    assert_both_refuse(lambda impl: impl.Scheduler(config(impl, **{field: value})), TypeError,
                       field)


def test_numpy_bools_and_ints_are_fine_in_a_config() -> None:
    def run(impl: Any) -> tuple:
        cfg = config(impl, kv_aware=np.bool_(True), max_running=np.int16(3),
                     c=np.float32(0.5), kv_capacity_tokens=np.uint32(64))
        c = impl.Scheduler(cfg).config
        return c.kv_aware, c.max_running, c.c, c.kv_capacity_tokens

    assert both(run) == (("ok", (True, 3, 0.5, 64)),) * 2


@pytest.mark.parametrize("field, value, exc", [
    ("max_running", "4", TypeError), ("max_running", 2**64, TypeError),
    ("block_size", 2.5, TypeError), ("c", None, TypeError), ("kv_aware", 1, TypeError),
    ("policy", 0, TypeError), ("kv_capacity_tokens", I64_MAX, ValueError),
    ("mlfq_levels", 65, ValueError), ("aging_rate", math.nan, ValueError),
])
def test_assigned_fields_are_refused_by_the_scheduler_at_the_latest(field: str, value: Any,
                                                                     exc: type) -> None:
    """The C++ config refuses a wrong type on assignment, the Python dataclass when the
    scheduler is built; a bad value both when the scheduler is built."""
    def run(impl: Any) -> Any:
        cfg = config(impl)
        setattr(cfg, field, value)
        return impl.Scheduler(cfg)

    assert_both_refuse(run, exc, field)


def test_native_config_setters_name_the_field() -> None:
    cfg = te.SchedulerConfig()
    with pytest.raises(TypeError, match=r"SchedulerConfig\.block_size"):
        cfg.block_size = 2.5
    with pytest.raises(TypeError, match=r"SchedulerConfig\.max_running.*does not fit"):
        cfg.max_running = 2**64
    with pytest.raises(TypeError, match=r"SchedulerConfig\.policy"):
        te.SchedulerConfig(policy=ref.Policy.TRAIL)  # the other twin's enum
    assert cfg.block_size == 16 and cfg.max_running == 48  # unchanged


@pytest.mark.parametrize("value", [None, "cfg", {}, 3])
def test_scheduler_wants_a_config(value: Any) -> None:
    assert_both_refuse(lambda impl: impl.Scheduler(value), TypeError, "config")


# ---------------------------------------------------------------- scheduler: at the limits

def test_capacities_near_int64_are_refused_not_wrapped() -> None:
    """kv_capacity_tokens = 2**63 - 1 once let a request reserve a negative block count."""
    for field in ("kv_capacity_tokens", "swap_capacity_tokens"):
        for value in (I64_MAX, I64_MAX - 15, 2**62):
            assert_both_refuse(lambda impl: impl.Scheduler(config(impl, **{field: value})),
                               ValueError, field)


@pytest.mark.parametrize("block_size", [1, 16, 4096, MAX_TOKENS // 4, MAX_TOKENS])
@pytest.mark.parametrize("mode", ["KEEP", "SWAP", "RECOMPUTE"])
def test_requests_at_the_token_limit_reserve_sane_blocks(block_size: int, mode: str) -> None:
    """Requests as long as the device, grown to their end: every count stays non-negative
    and within capacity, and both twins agree step by step."""
    def run(impl: Any) -> list:
        s = impl.Scheduler(impl.SchedulerConfig(
            policy=impl.Policy.SRPT, max_running=MAX_RUNNING, kv_capacity_tokens=MAX_TOKENS,
            swap_capacity_tokens=MAX_TOKENS, block_size=block_size,
            preempt_mode=getattr(impl.PreemptMode, mode), kv_aware=True))
        half = MAX_TOKENS // 2
        s.add(1, 0.0, half - 1, half, float(half))
        s.add(2, 0.0, 1, MAX_TOKENS - 1, 1e300)
        s.add(3, 1.0, 1, 1, 0.0)
        trace = []
        now = 0.0
        for step in range(6):
            d = s.schedule(now)
            st_ = s.stats()
            trace.append((d.running.tolist(), d.preempted.tolist(), d.dropped.tolist(),
                          d.swapped_out.tolist(), snapshot(s)))
            assert 0 <= st_["kv_reserved_blocks"] <= st_["kv_capacity_blocks"]
            assert 0 <= st_["swap_used_blocks"] <= st_["swap_capacity_blocks"]
            rows = d.running.tolist()
            grow = [min(s.get(r).max_new_tokens - s.get(r).generated, half // 3 + step)
                    for r in rows]
            now += 1.0
            s.on_step(now, rows, grow, [False] * len(rows))
            live = [r for r in rows if r in s]
            s.update_predictions(live, [1e300] * len(live))
        return trace

    native, python = both(run)
    assert native[0] == "ok", native
    assert native == python


def test_mlfq_at_its_limits_agrees() -> None:
    """64 levels of a 2**40-token base quantum (quanta up to 2**103, exact as doubles), and a
    prefill ratio so small that the prefill cost overflows to inf."""
    def run(impl: Any, base: int, ratio: float) -> tuple:
        s = impl.Scheduler(impl.SchedulerConfig(
            policy=impl.Policy.MLFQ, max_running=2, kv_capacity_tokens=MAX_TOKENS,
            block_size=1, mlfq_levels=64, mlfq_base_quantum=base, mlfq_prefill_ratio=ratio))
        s.add(1, 0.0, MAX_TOKENS // 2, MAX_TOKENS // 4)
        s.add(2, 0.0, 3, MAX_TOKENS // 4)  # both outlive 4 steps of 2**36 tokens
        levels = [(s.get(1).level, s.get(2).level)]
        for step in range(4):
            rows = s.schedule(float(step)).running.tolist()
            s.on_step(float(step), rows, [2**35] * len(rows), [False] * len(rows))
            levels.append(tuple(s.get(r).level for r in (1, 2)))
        return levels, snapshot(s)

    for base, ratio in ((1, 5e-324), (MAX_TOKENS, 1.0), (1, 1.0), (3, 1e-300)):
        native, python = both(lambda impl: run(impl, base, ratio))
        assert native[0] == "ok" and native == python, (base, ratio)


def test_the_live_request_limit_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    """2**32 - 1 live requests (uint32 slots in C++); the Python twin checks the same
    constant, lowered here so that the check can be reached."""
    monkeypatch.setattr(ref, "MAX_LIVE", 2)
    s = sched(ref)
    s.add(1, 0.0, 4, 8)
    s.add(2, 0.0, 4, 8)
    with pytest.raises(ValueError, match="too many live requests"):
        s.add(3, 0.0, 4, 8)
    s.abort(1)
    s.add(3, 0.0, 4, 8)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_large_values_agree(data: st.DataObject) -> None:
    """Hypothesis: configurations and requests drawn across the whole accepted range (and a
    little past it): both twins make the same decisions or raise the same errors, and no
    block count is ever negative."""
    big = st.one_of(st.integers(-3, 40), st.integers(2**31 - 2, 2**32 + 2),
                    st.integers(MAX_TOKENS - 3, MAX_TOKENS + 3),
                    st.integers(I64_MAX - 3, I64_MAX), st.integers(I64_MIN, I64_MIN + 3))
    real = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0.0, 1.0, 1e300, 5e-324]))
    cfg = dict(
        policy=data.draw(st.sampled_from(["FCFS", "SJF", "SRPT", "TRAIL", "LTR", "MLFQ"])),
        preempt_mode=data.draw(st.sampled_from(["KEEP", "SWAP", "RECOMPUTE"])),
        max_running=data.draw(st.one_of(st.integers(1, 4), big)),
        kv_capacity_tokens=data.draw(st.one_of(st.integers(64, 4096), big)),
        block_size=data.draw(st.one_of(st.integers(1, 64), big)),
        swap_capacity_tokens=data.draw(st.one_of(st.integers(0, 4096), big)),
        mlfq_levels=data.draw(st.one_of(st.integers(1, 6), st.integers(60, 70))),
        mlfq_base_quantum=data.draw(st.one_of(st.integers(1, 8), big)),
        prefill_weight=data.draw(st.one_of(st.just(0.0), real)),
        kv_aware=data.draw(st.booleans()),
    )
    requests = data.draw(st.lists(st.tuples(big, st.one_of(st.integers(1, 64), big),
                                            st.one_of(st.integers(1, 64), big), real),
                                  min_size=1, max_size=5))
    grows = data.draw(st.lists(st.one_of(st.integers(0, 64), big), min_size=4, max_size=4))

    def run(impl: Any) -> list:
        kw = dict(cfg, policy=getattr(impl.Policy, cfg["policy"]),
                  preempt_mode=getattr(impl.PreemptMode, cfg["preempt_mode"]))
        s = impl.Scheduler(impl.SchedulerConfig(**kw))
        log: list = []
        for rid, prompt, new, pred in requests:
            log.append(outcome(lambda: s.add(rid, 0.0, prompt, new, pred)))
        for step, grow in enumerate(grows):
            d = s.schedule(float(step))
            stats = s.stats()
            assert stats["kv_reserved_blocks"] >= 0 and stats["swap_used_blocks"] >= 0
            rows = d.running.tolist()
            log.append((rows, d.preempted.tolist(), stats))
            log.append(outcome(lambda: s.on_step(float(step), rows, [grow] * len(rows),
                                                 [False] * len(rows))))
        return log

    native, python = both(run)
    if native[0] != "ok" or python[0] != "ok":
        assert native[0] == python[0], (native, python)
        return
    assert len(native[1]) == len(python[1])
    for a, b in zip(native[1], python[1]):
        assert (a[0] if isinstance(a[0], type) else a) == (
            b[0] if isinstance(b[0], type) else b)


# ---------------------------------------------------------------- torch ops

def op_args(b: int = 2, s: int = 4, slot_dtype: torch.dtype = torch.int64) -> list[Any]:
    g = torch.Generator().manual_seed(0)
    d, h, k = 8, 4, 3
    return [torch.randn(b, d, generator=g), torch.arange(b, dtype=slot_dtype),
            torch.ones(b, dtype=torch.bool), torch.randn(h, d, generator=g),
            torch.randn(h, generator=g), torch.randn(k, h, generator=g),
            torch.randn(k, generator=g), torch.eye(k), torch.arange(k).float(),
            torch.full((b,), 100.0), torch.full((s, k), 1.0 / k)]


@pytest.mark.parametrize("slot", [2**32, 2**32 + 1, 2**31, -(2**32) + 1, I64_MAX, I64_MIN])
@pytest.mark.parametrize("rank", [False, True])
def test_int64_slots_are_not_narrowed_to_int32(slot: int, rank: bool) -> None:
    """2**32 + 1 used to become slot 1 on the way to the int32 kernel, updating that row."""
    args = op_args()
    args[1][0] = slot
    before = args[-1].clone()
    with pytest.raises(ValueError, match="slots"):
        if rank:
            edges = torch.tensor([0.0, 1.0, 2.0, 3.0])
            torch.ops.trail.probe_step_rank(*args[:9], edges, *args[9:])
        else:
            torch.ops.trail.probe_step(*args)
    assert torch.equal(args[-1], before)


def test_int64_and_int32_slots_compute_alike() -> None:
    a64, a32 = op_args(slot_dtype=torch.int64), op_args(slot_dtype=torch.int32)
    torch.testing.assert_close(torch.ops.trail.probe_step(*a64),
                               torch.ops.trail.probe_step(*a32))
    assert torch.equal(a64[-1], a32[-1])


def triton_module() -> Any:
    pytest.importorskip("triton")
    from trail.kernels import probe_triton

    return probe_triton


def test_triton_kernel_skips_out_of_range_int64_slots() -> None:
    """The CUDA path does not check on the host (a synchronisation): a slot outside the
    state skips its row (NaN) instead of wrapping onto another row. Run by Triton's
    interpreter on CPU tensors (TRITON_INTERPRET=1, tests/conftest.py)."""
    probe_triton = triton_module()
    args = op_args()
    args[1][0] = 2**32 + 1
    before = args[-1].clone()
    pred = probe_triton.probe_step_triton(*args)
    assert math.isnan(float(pred[0])) and math.isfinite(float(pred[1]))
    assert torch.equal(args[-1][0], before[0]) and not torch.equal(args[-1][1], before[1])
    assert torch.equal(args[-1][2:], before[2:])


def test_triton_kernel_refuses_more_bins_than_it_holds() -> None:
    probe_triton = triton_module()
    k = probe_triton.MAX_BINS + 1
    args = op_args()
    args[5], args[6] = torch.zeros(k, 4), torch.zeros(k)
    args[7], args[8], args[10] = torch.eye(k), torch.zeros(k), torch.zeros(4, k)
    with pytest.raises(ValueError, match="bins"):
        probe_triton.probe_step_triton(*args)


def test_binding_names_its_scalar_arguments() -> None:
    n = [a.numpy() for a in op_args(slot_dtype=torch.int32)]
    with pytest.raises(TypeError, match="hidden_dtype"):
        _C.probe_step(n[0], 32, *n[1:], np.zeros(2, np.float32))
    with pytest.raises(TypeError, match="hidden_dtype"):
        _C.probe_step(n[0], None, *n[1:], np.zeros(2, np.float32))


def attention_args(**kw: Any) -> dict[str, Any]:
    q = np.zeros((1, 2, 4), np.float32)
    cache = np.zeros((2, 1, 4, 4), np.float32)
    a = dict(q=q, k_cache=cache, v_cache=cache.copy(), block_tables=np.zeros((1, 1), np.int32),
             context_lens=np.ones(1, np.int32), block_size=4, scale=0.5,
             out=np.zeros_like(q), threads=1)
    a.update(kw)
    return a


@pytest.mark.parametrize("name, value, exc", [
    ("scale", math.nan, ValueError), ("scale", math.inf, ValueError),
    ("scale", 1e39, ValueError), ("scale", "0.5", TypeError), ("scale", None, TypeError),
    ("scale", True, TypeError), ("block_size", "4", TypeError), ("block_size", 4.0, TypeError),
    ("block_size", 2**64, TypeError), ("block_size", True, TypeError),
    ("threads", 2**64, TypeError), ("threads", 1.5, TypeError), ("threads", None, TypeError),
])
def test_paged_attention_scalars_are_checked_by_name(name: str, value: Any, exc: type) -> None:
    with pytest.raises(exc, match=name):
        _C.paged_attention_decode(**attention_args(**{name: value}))


@pytest.mark.parametrize("threads", [2**40, I64_MAX, 0, -5, I64_MIN])
def test_paged_attention_thread_counts_are_clamped_not_narrowed(threads: int) -> None:
    a = attention_args(threads=threads)
    a["v_cache"][:] = 1.0
    _C.paged_attention_decode(**a)
    assert np.allclose(a["out"], 1.0)


# ---------------------------------------------------------------- Probe and Bins

@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(hidden_size=True), TypeError, "hidden_size"),
    (dict(hidden_size=8.0), TypeError, "hidden_size"),
    (dict(hidden_size="8"), TypeError, "hidden_size"),
    (dict(hidden_size=0), ValueError, "hidden_size"),
    (dict(hidden_size=2**31), ValueError, "hidden_size"),
    (dict(hidden_size=2**64), ValueError, "hidden_size"),
    (dict(hidden_dim=None), TypeError, "hidden_dim"),
    (dict(hidden_dim=2**63), ValueError, "hidden_dim"),
    (dict(num_slots=np.bool_(True)), TypeError, "num_slots"),
    (dict(num_slots=2**31), ValueError, "num_slots"),
    (dict(num_slots=-1), ValueError, "num_slots"),
    (dict(layer=-1), ValueError, "layer"),
    (dict(layer=1.5), TypeError, "layer"),
    (dict(bins=(0.0, 1.0, 2.0)), TypeError, "bins"),
    (dict(model_id=7), TypeError, "model_id"),
])
def test_probe_constructor_checks_by_name(kwargs: dict, exc: type, name: str) -> None:
    args = dict(hidden_size=8, hidden_dim=4, num_slots=2)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        Probe(**args)


def test_probe_accepts_numpy_integers() -> None:
    p = Probe(np.int64(8), hidden_dim=np.int32(4), num_slots=np.uint8(3), layer=np.int16(2))
    assert (p.hidden_size, p.hidden_dim, p.num_slots, p.layer) == (8, 4, 3, 2)


def small_probe() -> Probe:
    torch.manual_seed(0)
    return Probe(8, Bins.uniform(4, 64.0), hidden_dim=4, num_slots=4)


@pytest.mark.parametrize("name, value, exc", [
    ("slots", [0, 2**32], ValueError), ("slots", [0, 2**32 + 1], ValueError),
    ("slots", torch.tensor([0, 2**32 + 1]), ValueError), ("slots", [0, 2**64], TypeError),
    ("slots", [0.0, 1.5], TypeError), ("slots", ["a", "b"], TypeError),
    ("generated", 2**64, TypeError), ("generated", 2**60, ValueError),
    ("generated", "3", TypeError), ("generated", True, TypeError),
    ("generated", math.nan, ValueError), ("generated", [0, math.inf], ValueError),
    ("max_new_tokens", -math.inf, ValueError), ("max_new_tokens", None, TypeError),
    ("max_new_tokens", [I64_MAX, 1], ValueError), ("max_new_tokens", 1j, TypeError),
    ("tokens_since_last", 2.5, TypeError), ("tokens_since_last", math.inf, ValueError),
    ("tokens_since_last", 2**64, TypeError), ("tokens_since_last", -1, ValueError),
    ("tokens_since_last", I64_MAX, ValueError), ("tokens_since_last", True, TypeError),
    ("first", [2, 0], ValueError), ("first", [1.0, 0.0], TypeError),
    ("first", "yes", TypeError),
])
@pytest.mark.parametrize("rank", [False, True])
def test_probe_step_checks_by_name(name: str, value: Any, exc: type, rank: bool) -> None:
    p = small_probe()
    args = dict(hidden=torch.randn(2, 8), slots=[0, 1], first=True, generated=0,
                max_new_tokens=100)
    args[name] = value
    before = p.state.clone()
    with pytest.raises(exc, match=name):
        (p.step_rank if rank else p.step)(**args)
    assert torch.equal(p.state, before)


def test_probe_cap_is_not_rounded_through_float32() -> None:
    """generated = 2**24 and max_new_tokens = 2**24 + 1 leave one token: float32 rounded
    2**24 + 1 down to 2**24 and capped the prediction at 0."""
    p = small_probe()
    x = torch.randn(2, 8)
    pred, rank = p.step_rank(x, [0, 1], True, [2**24, 2**40], [2**24 + 1, 2**40 + 3])
    assert pred.tolist() == [1.0, 3.0]
    assert 0.9 < rank[0] <= 1.0 and 2.5 < rank[1] <= 3.0  # E[min(R, cap)] / P(R <= a) <= cap


def test_probe_large_token_gaps_work() -> None:
    p = small_probe()
    x = torch.randn(2, 8)
    p.step(x, [0, 1], True, 0, 100)
    pred = p.step(x, [0, 1], False, 0, 100, tokens_since_last=[2**40, 2**53])
    assert torch.isfinite(pred).all()


@pytest.mark.parametrize("call, exc, name", [
    (lambda p: p.distribution([1.7]), TypeError, "slots"),
    (lambda p: p.distribution([True]), TypeError, "slots"),
    (lambda p: p.distribution([2**32 + 1]), ValueError, "slots"),
    (lambda p: p.reset(["a"]), TypeError, "slots"),
    (lambda p: p.reset(np.array([0.5])), TypeError, "slots"),
    (lambda p: p.transition(2.5), TypeError, "tokens"),
    (lambda p: p.transition(True), TypeError, "tokens"),
    (lambda p: p.transition(-1), ValueError, "tokens"),
    (lambda p: p.resize_slots(True), TypeError, "num_slots"),
    (lambda p: p.resize_slots(2**31), ValueError, "num_slots"),
    (lambda p: p.resize_slots(2.0), TypeError, "num_slots"),
    (lambda p: p.grow_slots(2**31), ValueError, "num_slots"),
    (lambda p: p.grow_slots("9"), TypeError, "num_slots"),
])
def test_probe_slot_helpers_check_by_name(call: Callable[[Probe], Any], exc: type,
                                          name: str) -> None:
    p = small_probe()
    before = p.state.clone()
    with pytest.raises(exc, match=name):
        call(p)
    assert torch.equal(p.state, before)


@pytest.mark.parametrize("edges, exc, name", [
    ((0.0, "1"), TypeError, "edges"),
    ((0.0, None), TypeError, "edges"),
    ((False, True, 2.0), TypeError, "edges"),
    ((0.0, 2**2000), ValueError, "edges"),
    ((0.0, 1.0, math.nan), ValueError, "edges"),
    ((0.0, 1.0, 1e39), ValueError, "float32"),
    ((0.0, 1.0, 1.0 + 1e-9), ValueError, "float32"),
    (5, TypeError, "edges"),
    ("012", TypeError, "edges"),
])
def test_bins_check_edges(edges: Any, exc: type, name: str) -> None:
    with pytest.raises(exc, match=name):
        Bins(edges)


@pytest.mark.parametrize("call, exc, name", [
    (lambda: Bins.uniform(2.5), TypeError, "k"),
    (lambda: Bins.uniform(True), TypeError, "k"),
    (lambda: Bins.uniform("3"), TypeError, "k"),
    (lambda: Bins.uniform(4, math.nan), ValueError, "max_len"),
    (lambda: Bins.uniform(4, math.inf), ValueError, "max_len"),
    (lambda: Bins.uniform(4, "8"), TypeError, "max_len"),
    (lambda: Bins.geometric(1000, ratio=10.0), ValueError, "overflows"),
    (lambda: Bins.geometric(1025), ValueError, "1024"),
    (lambda: Bins.uniform(2**31), ValueError, "1024"),
    (lambda: Bins(tuple(range(1026))), ValueError, "1024"),
    (lambda: Bins.geometric(4, first=math.inf), ValueError, "first"),
    (lambda: Bins.geometric(4, ratio=math.nan), ValueError, "ratio"),
    (lambda: Bins.geometric(4, ratio=None), TypeError, "ratio"),
    (lambda: Bins.uniform().transition(2.5), TypeError, "tokens"),
    (lambda: Bins.uniform().transition(None), TypeError, "tokens"),
])
def test_bins_constructors_check_by_name(call: Callable[[], Any], exc: type, name: str) -> None:
    with pytest.raises(exc, match=name):
        call()


def test_bins_normalise_edges_to_a_hashable_tuple_of_floats() -> None:
    b = Bins([0, 1, np.float32(2.5), np.int64(4)])
    assert b.edges == (0.0, 1.0, 2.5, 4.0) and all(type(e) is float for e in b.edges)
    assert b == Bins((0.0, 1.0, 2.5, 4.0))
    assert b.transition(2**40).shape == (3, 3)  # cached by edges: needs a hashable tuple


# ---------------------------------------------------------------- simulator

def simulate_call(**kw: Any) -> Any:
    from trail.sim.cost_model import CostModel
    from trail.sim.predictors import Oracle
    from trail.sim.simulator import simulate

    args = dict(arrival=np.zeros(2), prompt_tokens=np.array([4, 5]),
                output_tokens=np.array([2, 3]),
                scheduler=te.SchedulerConfig(max_running=4, kv_capacity_tokens=256),
                cost=CostModel.preset("llama3-8b-a100-80gb"), predictor=Oracle())
    args.update(kw)
    return simulate(**args)


@pytest.mark.parametrize("name, value, exc", [
    ("arrival", np.array([0.0, math.nan]), ValueError),
    ("arrival", np.array([0.0, math.inf]), ValueError),
    ("arrival", np.array([True, False]), TypeError),
    ("arrival", ["0", "1"], TypeError),
    ("prompt_tokens", np.array([4.0, 2.5]), TypeError),
    ("prompt_tokens", np.array([True, True]), TypeError),
    ("prompt_tokens", [4, 2**41], ValueError),
    ("prompt_tokens", [4, 2**70], TypeError),
    ("prompt_tokens", np.array([4, 2**64 - 1], np.uint64), ValueError),
    ("prompt_tokens", [4, math.nan], ValueError),
    ("output_tokens", [2, 0], ValueError),
    ("output_tokens", [2, -(2**63)], ValueError),
    ("output_tokens", [[2, 3]], ValueError),
    ("predict_every", True, TypeError),
    ("predict_every", 2.5, TypeError),
    ("predict_every", 0, ValueError),
    ("max_new_tokens", 2.5, TypeError),
    ("max_new_tokens", True, TypeError),
    ("max_new_tokens", 2**41, ValueError),
    ("max_new_tokens", 2**64, ValueError),
    ("scheduler", ref.SchedulerConfig(), TypeError),
])
def test_simulate_checks_by_name(name: str, value: Any, exc: type) -> None:
    with pytest.raises(exc, match=name):
        simulate_call(**{name: value})


def test_simulate_accepts_whole_floats_and_numpy_ints() -> None:
    a = simulate_call(prompt_tokens=np.array([4.0, 5.0]), max_new_tokens=np.int64(3),
                      predict_every=np.int32(1))
    b = simulate_call(max_new_tokens=3)
    assert np.array_equal(a.finish, b.finish)


@pytest.mark.parametrize("n, exc", [(2.5, TypeError), (True, TypeError), (0, ValueError)])
def test_capacity_checks_its_sample_size(n: Any, exc: type) -> None:
    from trail.sim.cost_model import CostModel
    from trail.sim.simulator import capacity

    with pytest.raises(exc, match=r"^n\b"):
        capacity(np.array([4, 5]), np.array([2, 3]), te.SchedulerConfig(),
                 CostModel.preset("llama3-8b-a100-80gb"), n=n)



@pytest.mark.parametrize("kwargs, words", [
    (dict(hidden_size=2**15, hidden_dim=2**14), "hidden_size \\* hidden_dim"),
    (dict(hidden_size=8, num_slots=2**26, bins=Bins.uniform(10)), "num_slots \\* bins"),
])
def test_probe_sizes_that_would_exhaust_memory_are_refused(kwargs: dict[str, Any],
                                                          words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Probe(**kwargs)
    p = Probe(8, Bins.uniform(10), hidden_dim=4, num_slots=2)
    with pytest.raises(ValueError, match="num_slots \\* bins"):
        p.grow_slots(2**26)
    assert p.num_slots == 2
