"""The preemption margin learned by the engine (EngineConfig.preempt_margin "auto"): the
winner's curse of the prediction errors measured on its finished requests, as the vLLM
adapter learns it; until measured, the margin of predictions off by a whole cap."""

from __future__ import annotations

import math

import pytest
from trail import Probe, policies
from trail.engine import Engine, EngineConfig

import trail_ext as te
from test_engine_clock import COST, model, workload


def engine(margin: object, probe: bool = True) -> Engine:
    return Engine(model(), EngineConfig(
        scheduler=te.SchedulerConfig(policy=te.Policy.TRAIL, max_running=3,
                                     kv_capacity_tokens=512, block_size=8, c=0.8),
        probe=Probe(hidden_size=32, layer=1) if probe else None, predict_every=2,
        step_cost=COST, preempt_margin=margin))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "wide", True])
def test_a_bad_margin_is_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(ValueError, match="preempt_margin"):
        engine(bad, probe=False)


def test_a_number_sets_the_margin_and_none_keeps_the_configs() -> None:
    e = engine(12.5, probe=False)
    assert e.scheduler.config.preempt_margin == 12.5 and e.preempt_margin_log == [(0, 12.5)]
    e = engine(None, probe=False)
    assert e.scheduler.config.preempt_margin == 0.0 and e.preempt_margin_log == []


def test_auto_learns_the_winners_curse_of_the_errors_it_measured() -> None:
    e = engine("auto")
    arrivals = workload(40, gap=0.002)
    report = e.run(arrivals, progress=False)
    outs = sorted(report.outputs, key=lambda o: o.rid)
    assert len(outs) == 40 and not e.faults
    log = e.preempt_margin_log
    # before 20 requests are scored: predictions that may be off by the longest cap
    caps = [min(a[2].max_new_tokens, e.max_model_len - len(a[1])) for a in arrivals]
    assert log[0][1] == pytest.approx(policies.winners_curse_margin(policies.Server(
        batch=3, arrival_mae=float(caps[0]), probe_mae=float(caps[0]))))
    assert max(m for _, m in log) == pytest.approx(policies.winners_curse_margin(
        policies.Server(batch=3, arrival_mae=float(max(caps)), probe_mae=float(max(caps)))))
    # at the end: the same errors, scored again from what the engine reported
    errors = policies.PredictionErrors()
    for a, o in zip(arrivals, outs):  # rids follow the arrivals' order
        errors.arrival(o.rid, min(a[3], caps[o.rid]))
        for g, p in zip(o.prediction_tokens, o.predictions):
            errors.refreshed(o.rid, g, p)
        errors.finished(o.rid, len(o.output_ids))
    assert log[-1][1] == pytest.approx(errors.margin(3))
    assert e.scheduler.config.preempt_margin == pytest.approx(log[-1][1])
    assert log[-1][1] < log[0][1]  # measured errors are smaller than a whole cap


def test_engine_config_learns_the_margin_where_trail_preempts_on_unmeasured_errors() -> None:
    from trail.engine.setups import engine_config

    probe = object.__new__(Probe)
    trail = engine_config("TRAIL", max_running=4, kv_capacity_tokens=1024, probe=probe)
    assert trail.preempt_margin == "auto"
    measured = policies.Server(batch=4, arrival_mae=10.0, probe_mae=5.0)
    fixed = engine_config("TRAIL", max_running=4, kv_capacity_tokens=1024, probe=probe,
                          server=measured)
    assert fixed.preempt_margin is None  # the measured MAEs' margin, in the config
    assert fixed.scheduler.preempt_margin == pytest.approx(
        policies.winners_curse_margin(measured))
    for name in ("TRAIL+", "SJF", "SJF-work", "FCFS", "TRAIL-paper"):
        assert engine_config(name, max_running=4, kv_capacity_tokens=1024,
                             probe=probe).preempt_margin is None, name
