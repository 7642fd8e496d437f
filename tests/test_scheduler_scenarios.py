"""Hand-worked scenarios for docs/scheduler.md, run against every implementation.

Each expected value below was derived from the spec by hand, not by running code. The
`impl` fixture (tests/conftest.py) yields a module-like object with `SchedulerConfig,
Scheduler, Policy, PreemptMode, RequestState, KvLocation`.
"""

import math

import pytest

STATS_KEYS = {
    "iterations", "added", "finished", "aborted", "live", "waiting", "running",
    "preempted", "kept", "swapped", "dropped", "preemptions", "swap_outs", "swap_ins",
    "drops", "recomputes", "kv_capacity_blocks", "kv_reserved_blocks",
    "swap_capacity_blocks", "swap_used_blocks",
}


def make(impl, policy="TRAIL", preempt_mode="KEEP", **fields):
    """A scheduler whose config differs from the defaults by `fields`."""
    cfg = impl.SchedulerConfig()
    cfg.policy = getattr(impl.Policy, policy)
    cfg.preempt_mode = getattr(impl.PreemptMode, preempt_mode)
    for name, value in fields.items():
        setattr(cfg, name, value)
    return impl.Scheduler(cfg)


def ids(arr):
    """A decision array as a list of Python ints."""
    return [int(x) for x in arr]


def view(s, rid):
    """The fields of get(rid) as a comparable tuple (NaN shown as a string)."""
    v = s.get(rid)
    fields = ("rid", "state", "kv", "arrival", "prompt_len", "max_new_tokens", "generated",
              "predicted_len", "remaining", "score", "preemptions", "level", "promoted")
    return tuple("nan" if isinstance(x, float) and math.isnan(x) else x
                 for x in (getattr(v, f) for f in fields))


def step(s, now, rows):
    """on_step with rows of (rid, new_tokens, finished)."""
    s.on_step(now, [r for r, _, _ in rows], [n for _, n, _ in rows],
              [f for _, _, f in rows])


# --------------------------------------------------------------------------- policies


def test_fcfs_fills_in_arrival_order_and_never_preempts(impl):
    s = make(impl, "FCFS", max_running=2)
    s.add(30, 0.0, 10, 10)
    s.add(10, 1.0, 10, 10)
    s.add(20, 2.0, 10, 10)
    d = s.schedule(5.0)
    assert d.iteration == 1
    assert ids(d.admitted) == [30, 10] and ids(d.running) == [30, 10]
    s.add(5, -1.0, 10, 10)  # ranks first, but FCFS never preempts
    d = s.schedule(6.0)
    assert ids(d.admitted) == [] and ids(d.preempted) == []
    step(s, 6.0, [(30, 1, True)])
    d = s.schedule(7.0)
    assert ids(d.admitted) == [5] and ids(d.running) == [10, 5]


def test_sjf_orders_by_first_predicted_len_without_preempting(impl):
    s = make(impl, "SJF", max_running=1, default_predicted_len=10.0)
    s.add(1, 0.0, 10, 100, predicted_len=50.0)
    s.add(2, 0.0, 10, 100)  # unknown: ranked as the default, 10
    s.add(3, 0.0, 10, 100, predicted_len=20.0)
    assert ids(s.schedule(0.0).admitted) == [2]
    s.add(4, 0.0, 10, 100, predicted_len=1.0)
    d = s.schedule(1.0)
    assert ids(d.admitted) == [] and ids(d.preempted) == []
    step(s, 1.0, [(2, 1, True)])
    assert ids(s.schedule(2.0).admitted) == [4]
    step(s, 2.0, [(4, 1, True)])
    s.update_predictions([1], [1.0])  # remaining drops, predicted_len stays 50
    assert s.get(1).predicted_len == 50.0
    assert ids(s.schedule(3.0).admitted) == [3]


def test_srpt_preempts_longer_running_request_and_resumes_it(impl):
    s = make(impl, "SRPT", max_running=1)
    s.add(1, 0.0, 10, 100, predicted_len=100.0)
    assert ids(s.schedule(0.0).admitted) == [1]
    step(s, 0.0, [(1, 1, False)])  # remaining 99
    s.add(2, 0.0, 10, 100, predicted_len=5.0)
    d = s.schedule(1.0)
    assert ids(d.preempted) == [1] and ids(d.admitted) == [2] and ids(d.running) == [2]
    assert ids(d.swapped_out) == [] and ids(d.dropped) == []
    v = s.get(1)
    assert v.state == impl.RequestState.PREEMPTED and v.kv == impl.KvLocation.DEVICE
    assert v.preemptions == 1 and v.remaining == 99.0
    assert s.stats()["kept"] == 1 and s.stats()["preemptions"] == 1
    step(s, 1.0, [(2, 1, True)])
    d = s.schedule(2.0)
    assert ids(d.resumed) == [1] and ids(d.swapped_in) == [] and ids(d.recomputed) == []
    assert ids(d.admitted) == [] and ids(d.running) == [1]


def test_srpt_equal_primary_key_does_not_preempt(impl):
    s = make(impl, "SRPT", max_running=1)
    s.add(1, 0.0, 10, 100, predicted_len=10.0)
    s.schedule(0.0)
    s.add(2, -1.0, 10, 100, predicted_len=10.0)  # ranks ahead of 1 only by arrival
    d = s.schedule(1.0)
    assert ids(d.preempted) == [] and ids(d.admitted) == []


@pytest.mark.parametrize("c, generated, preempts", [
    (0.5, 5, True), (0.5, 6, False),    # c * L = 5
    (1.0, 10, True), (1.0, 11, False),  # c * L = 10
    (0.0, 0, False),                    # c = 0 never preempts
])
def test_trail_preempts_only_up_to_c_times_first_prediction(impl, c, generated, preempts):
    s = make(impl, "TRAIL", max_running=1, c=c)
    s.add(1, 0.0, 10, 100, predicted_len=10.0)
    s.schedule(0.0)
    step(s, 0.0, [(1, generated, False)])
    s.update_predictions([1], [50.0])  # a longer guess; L stays 10
    assert s.get(1).predicted_len == 10.0 and s.get(1).remaining == 50.0
    s.add(2, 0.0, 10, 100, predicted_len=5.0)
    d = s.schedule(1.0)
    assert ids(d.preempted) == ([1] if preempts else [])
    assert ids(d.admitted) == ([2] if preempts else [])


def test_max_preemptions_caps_rank_preemption(impl):
    s = make(impl, "SRPT", max_running=1, max_preemptions=1)
    s.add(1, 0.0, 10, 100, predicted_len=100.0)
    s.schedule(0.0)
    s.add(2, 0.0, 10, 100, predicted_len=5.0)
    assert ids(s.schedule(1.0).preempted) == [1]
    step(s, 1.0, [(2, 1, True)])
    assert ids(s.schedule(2.0).resumed) == [1]
    s.add(3, 0.0, 10, 100, predicted_len=5.0)
    d = s.schedule(3.0)
    assert ids(d.preempted) == [] and ids(d.admitted) == []
    assert s.get(1).preemptions == 1


def test_ltr_ranks_by_score_with_unscored_last(impl):
    s = make(impl, "LTR", max_running=1)
    s.add(1, 0.0, 10, 100)  # unscored: +inf
    s.add(2, 0.0, 10, 100, score=5.0)
    s.add(3, 0.0, 10, 100, score=2.0)
    assert ids(s.schedule(0.0).admitted) == [3]
    s.update_scores([1], [1.0])
    d = s.schedule(1.0)
    assert ids(d.preempted) == [3] and ids(d.admitted) == [1]


def test_ltr_starvation_promotes_for_a_period(impl):
    s = make(impl, "LTR", max_running=1, starvation_steps=2, starvation_period=2)
    s.add(1, 0.0, 10, 100, score=1.0)
    s.add(2, 0.0, 10, 100, score=5.0)
    assert ids(s.schedule(0.0).admitted) == [1]   # 2: left_out 1
    assert ids(s.schedule(1.0).admitted) == []    # 2: left_out 2
    assert not s.get(2).promoted
    d = s.schedule(2.0)                           # 2 promoted (-inf) and preempts 1
    assert ids(d.preempted) == [1] and ids(d.admitted) == [2]
    assert s.get(2).promoted                      # 1 promoted call left; 1: left_out 1
    d = s.schedule(3.0)                           # 1 cannot preempt a promoted request
    assert ids(d.preempted) == [] and ids(d.resumed) == []
    assert not s.get(2).promoted                  # period over; 1: left_out 2
    d = s.schedule(4.0)                           # now 1 is promoted and preempts 2
    assert ids(d.preempted) == [2] and ids(d.resumed) == [1]
    assert s.get(1).promoted


def test_size_based_starvation_guard_runs_a_long_waiting_request(impl):
    # TRAIL/SRPT/SJF with the aging guard: the long request waits starvation_steps calls,
    # then runs first and is not preempted for rank while promoted.
    for policy in ("SJF", "SRPT", "TRAIL"):
        s = make(impl, policy, max_running=1, starvation_steps=2, starvation_period=3)
        s.add(1, 0.0, 10, 100, predicted_len=90.0)
        s.add(2, 0.0, 10, 100, predicted_len=5.0)
        assert ids(s.schedule(0.0).admitted) == [2], policy   # 1: left_out 1
        step(s, 0.0, [(2, 1, False)])
        assert ids(s.schedule(1.0).admitted) == [], policy    # 1: left_out 2
        step(s, 1.0, [(2, 1, False)])
        d = s.schedule(2.0)                                   # 1 promoted, runs first
        if policy == "SJF":  # not preemptive: 1 is promoted but waits for the slot
            assert s.get(1).promoted and ids(d.admitted) == [], policy
            continue
        assert ids(d.preempted) == [2] and ids(d.admitted) == [1], policy
        step(s, 2.0, [(1, 1, False)])
        s.add(3, 2.0, 10, 100, predicted_len=1.0)
        d = s.schedule(3.0)                                   # a shorter arrival waits
        assert ids(d.preempted) == [] and ids(d.admitted) == [], policy
        assert s.get(1).promoted, policy


def test_mlfq_initial_level_skip_join(impl):
    # quanta 2, 4, 8; prefill cost = prompt_len / 10
    s = make(impl, "MLFQ", mlfq_base_quantum=2, mlfq_levels=3, mlfq_prefill_ratio=10.0)
    expected = {20: 0, 21: 1, 40: 1, 41: 2, 80: 2, 81: 2}
    for prompt_len in expected:
        s.add(prompt_len, 0.0, prompt_len, 10)
    assert {p: s.get(p).level for p in expected} == expected


def test_mlfq_demotion_lets_a_new_request_preempt(impl):
    s = make(impl, "MLFQ", max_running=1, mlfq_base_quantum=2, mlfq_levels=3,
             mlfq_prefill_ratio=10.0)
    s.add(1, 0.0, 20, 100)
    s.schedule(0.0)
    step(s, 0.0, [(1, 1, False)])
    assert s.get(1).level == 0
    step(s, 0.0, [(1, 1, False)])  # 2 tokens used: quantum of level 0 reached
    assert s.get(1).level == 1
    s.add(2, 0.0, 10, 100)  # joins level 0
    d = s.schedule(1.0)
    assert ids(d.preempted) == [1] and ids(d.admitted) == [2]


def test_mlfq_counts_each_token_and_stops_at_last_level(impl):
    # Pins the per-token reading: overflow past a quantum counts at the next level.
    s = make(impl, "MLFQ", mlfq_base_quantum=2, mlfq_levels=3, mlfq_prefill_ratio=10.0)
    s.add(1, 0.0, 20, 1000)
    s.schedule(0.0)
    step(s, 0.0, [(1, 3, False)])  # 2 at level 0, 1 at level 1
    assert s.get(1).level == 1
    step(s, 0.0, [(1, 3, False)])  # 4 at level 1 -> level 2
    assert s.get(1).level == 2
    step(s, 0.0, [(1, 100, False)])
    assert s.get(1).level == 2


def test_mlfq_starvation_moves_to_level_zero(impl):
    s = make(impl, "MLFQ", max_running=1, mlfq_base_quantum=2, mlfq_levels=3,
             mlfq_prefill_ratio=10.0, starvation_steps=1)
    s.add(1, 0.0, 20, 100)   # level 0
    s.add(2, 0.0, 100, 100)  # level 2
    assert ids(s.schedule(0.0).admitted) == [1]
    assert s.get(2).level == 2
    d = s.schedule(1.0)  # 2 moves to level 0: equal key, so no preemption
    assert s.get(2).level == 0 and ids(d.preempted) == []


# --------------------------------------------------------------------------- memory


@pytest.mark.parametrize("mode, swap_tokens, kv", [
    ("KEEP", 1024, "DEVICE"), ("SWAP", 32, "HOST"), ("SWAP", 16, "DROPPED"),
    ("RECOMPUTE", 1024, "DROPPED"),
])
def test_victim_kv_by_preempt_mode(impl, mode, swap_tokens, kv):
    s = make(impl, "SRPT", mode, max_running=1, swap_capacity_tokens=swap_tokens)
    s.add(1, 0.0, 20, 100, predicted_len=100.0)
    s.schedule(0.0)
    step(s, 0.0, [(1, 1, False)])  # 21 tokens = 2 blocks of 16
    s.add(2, 0.0, 10, 100, predicted_len=5.0)
    d = s.schedule(1.0)
    assert ids(d.preempted) == [1]
    assert ids(d.swapped_out) == ([1] if kv == "HOST" else [])
    assert ids(d.dropped) == ([1] if kv == "DROPPED" else [])
    assert s.get(1).kv == getattr(impl.KvLocation, kv)
    assert s.stats()["swap_used_blocks"] == (2 if kv == "HOST" else 0)
    step(s, 1.0, [(2, 1, True)])
    d = s.schedule(2.0)
    assert ids(d.resumed) == [1]
    assert ids(d.swapped_in) == ([1] if kv == "HOST" else [])
    assert ids(d.recomputed) == ([1] if kv == "DROPPED" else [])
    assert s.stats()["swap_used_blocks"] == 0


def test_memory_pressure_evicts_kept_before_preempting_running(impl):
    # 20 one-token blocks, no swap: every eviction drops.
    s = make(impl, "SRPT", max_running=2, block_size=1, kv_capacity_tokens=20)
    s.add(1, 0.0, 5, 15, predicted_len=10.0)
    s.add(2, 0.0, 5, 15, predicted_len=12.0)
    assert ids(s.schedule(0.0).admitted) == [1, 2]   # 6 + 6 blocks
    s.add(3, 0.0, 4, 16, predicted_len=1.0)
    d = s.schedule(1.0)                               # worst victim first: 2
    assert ids(d.preempted) == [2] and ids(d.admitted) == [3]
    assert ids(d.running) == [1, 3] and s.stats()["kv_reserved_blocks"] == 6 + 5 + 5
    step(s, 1.0, [(1, 5, False), (3, 1, False)])      # 11 + 6 + kept 5 = 22 > 20
    d = s.schedule(2.0)
    assert ids(d.dropped) == [2] and ids(d.preempted) == []
    assert ids(d.resumed) == [] and ids(d.running) == [1, 3]
    step(s, 2.0, [(1, 4, False)])                     # 15 + 6 = 21 > 20, nothing kept
    assert (s.get(1).remaining, s.get(3).remaining) == (1.0, 0.0)  # 1 ranks worst
    d = s.schedule(3.0)
    assert ids(d.preempted) == [1] and ids(d.dropped) == [1]
    assert ids(d.resumed) == [2] and ids(d.recomputed) == [2]
    assert ids(d.running) == [3, 2]
    st = s.stats()
    assert (st["preemptions"], st["drops"], st["recomputes"]) == (2, 2, 1)


def test_evicted_kept_requests_swap_while_room_then_drop(impl):
    s = make(impl, "SRPT", max_running=1, block_size=1, kv_capacity_tokens=20,
             swap_capacity_tokens=6)
    s.add(1, 0.0, 5, 15, predicted_len=14.0)
    s.schedule(0.0)
    s.add(2, 0.0, 5, 15, predicted_len=13.0)
    assert ids(s.schedule(1.0).preempted) == [1]      # 1 kept (5 blocks)
    s.add(3, 0.0, 5, 15, predicted_len=12.0)
    assert ids(s.schedule(2.0).preempted) == [2]      # 2 kept; 6 + 5 + 5 = 16
    s.add(4, 0.0, 9, 11, predicted_len=1.0)           # needs 10 blocks
    d = s.schedule(3.0)                               # 3 kept, then 25 > 20: evict 1
    assert ids(d.preempted) == [3] and ids(d.admitted) == [4]
    assert ids(d.swapped_out) == [1] and ids(d.dropped) == []
    step(s, 3.0, [(4, 1, False)])                     # 11 + 5 + 5 = 21 > 20
    d = s.schedule(4.0)                               # evict 2; swap has 1 block left
    assert ids(d.dropped) == [2] and ids(d.swapped_out) == []
    assert ids(d.resumed) == [] and ids(d.running) == [4]
    kv = impl.KvLocation
    assert [s.get(r).kv for r in (1, 2, 3)] == [kv.HOST, kv.DROPPED, kv.DEVICE]
    assert s.stats()["swap_used_blocks"] == 5


def test_strict_priority_stops_the_walk(impl):
    s = make(impl, "FCFS", max_running=4, block_size=1, kv_capacity_tokens=20)
    s.add(1, 0.0, 10, 5)
    s.add(2, 1.0, 15, 5)  # does not fit next to 1 ...
    s.add(3, 2.0, 2, 5)   # ... so 3 waits although it would fit
    d = s.schedule(3.0)
    assert ids(d.admitted) == [1]


def test_add_rejects_request_that_can_never_fit(impl):
    s = make(impl, block_size=16, kv_capacity_tokens=70)  # 4 blocks
    s.add(1, 0.0, 60, 4)                                  # 64 tokens: 4 blocks
    with pytest.raises(ValueError):
        s.add(2, 0.0, 60, 5)                              # 65 tokens: 5 blocks
    assert len(s) == 1 and 2 not in s
    st = s.stats()
    assert st["added"] == 1 and st["kv_capacity_blocks"] == 4


def test_requests_not_yet_arrived_are_ignored(impl):
    s = make(impl, "SRPT", max_running=1)
    s.add(1, 0.0, 10, 100, predicted_len=50.0)
    s.add(2, 10.0, 10, 100, predicted_len=1.0)
    d = s.schedule(5.0)
    assert ids(d.admitted) == [1] and ids(d.preempted) == []
    assert s.get(2).state == impl.RequestState.WAITING
    assert s.get(2).kv == impl.KvLocation.NONE
    d = s.schedule(10.0)
    assert ids(d.preempted) == [1] and ids(d.admitted) == [2]


# --------------------------------------------------------------------------- updates


def test_on_step_caps_remaining_and_auto_finishes(impl):
    s = make(impl, "SRPT")
    s.add(1, 0.0, 10, 3, predicted_len=100.0)
    s.add(2, 0.0, 10, 3)
    assert s.get(1).remaining == 3.0  # capped by max_new_tokens
    s.schedule(0.0)
    step(s, 0.0, [(1, 2, False), (2, 0, True)])
    assert s.get(1).generated == 2 and s.get(1).remaining == 1.0
    assert 2 not in s
    step(s, 1.0, [(1, 1, False)])  # reaches max_new_tokens
    assert 1 not in s and len(s) == 0
    st = s.stats()
    assert (st["finished"], st["live"], st["running"]) == (2, 0, 0)


def test_update_predictions_sets_predicted_len_once(impl):
    s = make(impl, "TRAIL", default_predicted_len=128.0)
    s.add(1, 0.0, 10, 50)
    v = s.get(1)
    assert math.isnan(v.predicted_len) and v.remaining == 50.0
    s.schedule(0.0)
    step(s, 0.0, [(1, 3, False)])
    assert s.get(1).remaining == 47.0
    s.update_predictions([1], [10.0])
    assert (s.get(1).predicted_len, s.get(1).remaining) == (13.0, 10.0)
    s.update_predictions([1], [4])
    assert (s.get(1).predicted_len, s.get(1).remaining) == (13.0, 4.0)
    s.update_predictions([1], [1000.0])
    assert s.get(1).remaining == 47.0


def test_abort_frees_the_slot_and_stats_keys(impl):
    s = make(impl, "FCFS", max_running=1)
    s.add(1, 0.0, 10, 10)
    s.add(2, 1.0, 10, 10)
    s.schedule(1.0)
    s.abort(1)
    assert 1 not in s
    d = s.schedule(2.0)
    assert ids(d.admitted) == [2] and ids(d.running) == [2]
    st = s.stats()
    assert set(st) == STATS_KEYS
    assert (st["aborted"], st["iterations"], st["added"], st["live"]) == (1, 2, 2, 1)


# --------------------------------------------------------------------------- errors


def test_unknown_rid_raises_key_error(impl):
    s = make(impl)
    s.add(1, 0.0, 10, 10)
    with pytest.raises(KeyError):
        s.get(7)
    with pytest.raises(KeyError):
        s.abort(7)
    with pytest.raises(KeyError):
        s.update_predictions([7], [1.0])
    with pytest.raises(KeyError):
        s.update_scores([7], [1.0])


def test_value_errors(impl):
    s = make(impl)
    s.add(1, 0.0, 10, 10)
    with pytest.raises(ValueError):
        s.add(1, 0.0, 10, 10)                  # duplicate live rid
    with pytest.raises(ValueError):
        s.add(2, 0.0, 0, 10)                   # non-positive length
    with pytest.raises(ValueError):
        s.add(2, math.inf, 10, 10)             # non-finite arrival
    with pytest.raises(ValueError):
        s.add(2, 0.0, 10, 10, predicted_len=-1.0)
    with pytest.raises(ValueError):
        step(s, 0.0, [(1, 1, False)])          # 1 is waiting, not running
    s.schedule(5.0)
    with pytest.raises(ValueError):
        s.on_step(5.0, [1], [1, 1], [False])   # lengths differ
    with pytest.raises(ValueError):
        s.update_predictions([1], [1.0, 2.0])
    with pytest.raises(ValueError):
        s.schedule(4.0)                        # now goes backwards
    with pytest.raises(ValueError):
        step(s, 4.0, [(1, 1, False)])
    with pytest.raises(ValueError):
        make(impl, max_running=0)


def test_type_errors(impl):
    s = make(impl)
    with pytest.raises(TypeError):
        s.add(1.0, 0.0, 10, 10)
    with pytest.raises(TypeError):
        s.add(True, 0.0, 10, 10)
    with pytest.raises(TypeError):
        s.add(1, 0.0, 10.0, 10)
    s.add(1, 0.0, 10, 10)
    s.schedule(0.0)
    with pytest.raises(TypeError):
        s.get(1.5)
    with pytest.raises(TypeError):
        s.on_step(0.0, [1.0], [1], [False])
    with pytest.raises(TypeError):
        s.on_step(0.0, [1], [True], [False])
    with pytest.raises(TypeError):
        s.update_scores([1], [True])
    assert s.get(1).generated == 0


def test_failed_calls_change_nothing(impl):
    s = make(impl, "SRPT", max_running=2)
    s.add(1, 0.0, 10, 10, predicted_len=5.0)
    s.add(2, 0.0, 10, 10, predicted_len=6.0)
    s.schedule(1.0)
    before = (s.stats(), view(s, 1), view(s, 2))
    with pytest.raises(ValueError):
        step(s, 2.0, [(1, 1, False), (2, 11, False)])  # row 2 out of range
    with pytest.raises(ValueError):
        step(s, 2.0, [(1, 1, False), (1, 1, False)])   # repeated row
    with pytest.raises(KeyError):
        s.update_predictions([1, 99], [1.0, 1.0])
    with pytest.raises(ValueError):
        s.update_predictions([1, 2], [1.0, -1.0])
    with pytest.raises(ValueError):
        s.update_scores([1, 2], [1.0, math.nan])
    with pytest.raises(ValueError):
        s.schedule(0.5)
    assert (s.stats(), view(s, 1), view(s, 2)) == before
    s.schedule(1.0)  # the failed calls did not advance the clock past 1.0
    assert s.stats()["iterations"] == 2
