"""Argument conversion and error reporting at the API boundary (both implementations)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest


def small(impl: Any, **kw: Any) -> Any:
    cfg = dict(policy=impl.Policy.SRPT, max_running=4, kv_capacity_tokens=256, block_size=4)
    cfg.update(kw)
    return impl.Scheduler(impl.SchedulerConfig(**cfg))


def running_pair(impl: Any) -> Any:
    s = small(impl)
    s.add(1, 0.0, 4, 8)
    s.add(2, 0.0, 4, 8)
    s.schedule(0.0)
    return s


@pytest.mark.parametrize("rids", [[1, 2], (1, 2), np.array([1, 2]), np.array([1, 2], np.int32),
                                  np.array([1, 2], np.uint16)])
def test_integer_sequences_of_any_kind_are_accepted(impl: Any, rids: Any) -> None:
    s = running_pair(impl)
    s.on_step(0.0, rids, [1, 1], np.array([False, True]))
    assert s.get(1).generated == 1 and 2 not in s


@pytest.mark.parametrize("bad, exc", [
    ([1.0, 2.0], TypeError),                       # float rids
    (np.array([True, False]), TypeError),          # bool rids
    (["1", "2"], TypeError),                       # strings
    (np.array([[1, 2]]), ValueError),              # two-dimensional
    ([2**63, 1], TypeError),                       # does not fit int64
    (np.array([2**64 - 1, 1], np.uint64), TypeError),
])
def test_bad_rid_arrays_raise_and_change_nothing(impl: Any, bad: Any, exc: type) -> None:
    s = running_pair(impl)
    before = s.stats()
    with pytest.raises(exc):
        s.on_step(0.0, bad, [1, 1], [False, False])
    assert s.stats() == before and s.get(1).generated == 0


def test_finished_flags_accept_bools_and_0_1_only(impl: Any) -> None:
    s = running_pair(impl)
    with pytest.raises(ValueError, match="finished"):
        s.on_step(0.0, [1, 2], [1, 1], [0, 2])
    with pytest.raises(TypeError):
        s.on_step(0.0, [1, 2], [1, 1], [0.0, 1.0])
    s.on_step(0.0, [1, 2], [1, 1], [0, 1])
    assert 2 not in s


def test_empty_batches_are_fine(impl: Any) -> None:
    s = running_pair(impl)
    s.on_step(0.0, [], [], [])
    s.update_predictions([], [])
    s.update_scores(np.array([], np.int64), np.array([]))
    assert s.get(1).generated == 0


def test_real_scalars_reject_strings_and_accept_numpy(impl: Any) -> None:
    s = small(impl)
    with pytest.raises(TypeError):
        s.add(1, "soon", 4, 8)
    s.add(np.int64(1), np.float32(0.5), np.int32(4), 8)  # numpy scalars are numbers too
    assert s.get(1).arrival == 0.5 and len(s) == 1


@pytest.mark.parametrize("field, value", [
    ("max_running", 0), ("block_size", 0), ("kv_capacity_tokens", 3), ("c", -0.1),
    ("c", math.nan), ("swap_capacity_tokens", -1), ("max_preemptions", -2),
    ("starvation_steps", -1), ("starvation_period", -1), ("default_predicted_len", 0.0),
    ("mlfq_levels", 0), ("mlfq_base_quantum", 0), ("mlfq_prefill_ratio", math.inf),
])
def test_bad_config_names_the_field(impl: Any, field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        small(impl, **{field: value})


def test_error_messages_name_the_value(impl: Any) -> None:
    s = small(impl)
    s.add(7, 0.0, 4, 8)
    with pytest.raises(ValueError, match="7"):
        s.add(7, 0.0, 4, 8)
    with pytest.raises(ValueError, match="nan"):
        s.add(8, math.nan, 4, 8)
    with pytest.raises(ValueError, match="1000"):
        s.add(9, 0.0, 1000, 8)
    with pytest.raises(KeyError, match="12345"):
        s.get(12345)
    with pytest.raises(ValueError, match="-1"):
        s.update_predictions([7], [-1.0])


def test_views_and_stats_shapes(impl: Any) -> None:
    s = running_pair(impl)
    v = s.get(1)
    assert v.state.name == "RUNNING" and v.kv.name == "DEVICE"
    assert math.isnan(v.predicted_len) and v.remaining == 8.0  # default 128 capped at max_new
    st = s.stats()
    assert st["running"] == 2 and st["kv_reserved_blocks"] == 4  # 2 × ceil(5/4)
    d = s.schedule(1.0)
    assert d.iteration == 2 and d.running.dtype == np.int64 and d.running.tolist() == [1, 2]


def test_config_is_a_copy_that_cannot_change_the_scheduler(impl: Any) -> None:
    """Writing to `Scheduler.config` (or to the config it was built from) changes nothing:
    the scheduler keeps the values it validated (a zero block size once crashed the process)."""
    cfg = impl.SchedulerConfig(policy=impl.Policy.SJF, max_running=2, kv_capacity_tokens=64,
                               block_size=16)
    s = impl.Scheduler(cfg)
    cfg.block_size = 0
    view = s.config
    view.block_size = 0
    view.max_running = 0
    view.c = float("nan")
    assert s.config.block_size == 16 and s.config.max_running == 2 and s.config.c == 0.8
    s.add(1, 0.0, 5, 8, 3.0)
    s.add(2, 0.0, 5, 8, 4.0)
    s.add(3, 0.0, 5, 8, 5.0)
    assert s.schedule(0.0).running.tolist() == [1, 2]  # still two slots of 16-token blocks


def test_reference_defaults_equal_the_cores() -> None:
    """The C++ struct (scheduler/types.h) is where defaults live; the Python twin must match."""
    import dataclasses

    import trail_ext as te
    from trail import sched_ref as ref

    native, twin = te.SchedulerConfig(), ref.SchedulerConfig()
    for f in dataclasses.fields(ref.SchedulerConfig):
        a, b = getattr(native, f.name), getattr(twin, f.name)
        if f.name in ("policy", "preempt_mode"):
            a, b = a.name, b.name
        assert a == b and type(a) is type(b), (f.name, a, b)
    assert {f.name for f in dataclasses.fields(ref.SchedulerConfig)} == {
        n for n in dir(native) if not n.startswith("_")}
