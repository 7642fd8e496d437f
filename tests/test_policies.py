"""One definition of every named set-up: the simulator, the demo, the engine helper and the
vLLM adapter build identical scheduler settings from `trail.policies`; the rules behind the
"auto" settings."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import trail_ext as te
from trail import Probe, policies
from trail.policies import (AGING_FRACTION, POLICY_NAMES, SCHEDULER_FIELDS, SPECS,
                            TRAIL_SETTINGS, Server, Settings, boost_gamma, resolve,
                            settings_of)


def fields_of(cfg: te.SchedulerConfig) -> dict:
    return {"policy": cfg.policy, **{k: getattr(cfg, k) for k in SCHEDULER_FIELDS}}


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_surface_builds_the_same_scheduler_settings(name: str) -> None:
    """Given the same measurements of the server, each surface's configuration of a named
    set-up holds the same policy and settings, "auto" resolved alike."""
    from trail.demo.end_to_end import DemoConfig, policy_scheduler
    from trail.engine.setups import engine_config
    from trail.integrations.vllm.config import TrailVllmConfig
    from trail.sim.compare import SimSettings, setup
    from trail.sim.cost_model import CostModel
    from trail.sim.traces import load_trace

    trace = load_trace("azure-conv").head(400).scaled_to_rate(4.0)
    sim = SimSettings(cost=CostModel.preset("llama3-8b-a100-80gb"), max_running=48)
    server = sim.server(trace)
    assert server.boost_gamma is not None and server.work_rate > 0
    assert server.arrival_mae > 0 and server.probe_mae > 0  # so the margin rule acts
    surfaces = {
        "simulator": setup(name, sim, trace).config,
        "demo": policy_scheduler(name, DemoConfig(), 4096, server),
        "vllm": TrailVllmConfig(policy=name, server=dataclasses.asdict(server)
                                ).scheduler_config(),
        "definition": policies.scheduler_config(name, server),
    }
    probe = object.__new__(Probe)  # only handed to the EngineConfig, never run
    surfaces["engine"] = engine_config(name, max_running=48, kv_capacity_tokens=4096,
                                       server=server, probe=probe).scheduler
    want = fields_of(surfaces["definition"])
    for surface, cfg in surfaces.items():
        assert fields_of(cfg) == want, (name, surface)
    assert want["policy"] == SPECS[name].policy


def test_trail_means_the_recommended_settings_and_the_paper_its_rule() -> None:
    assert SPECS["TRAIL"].settings is TRAIL_SETTINGS
    for name in ("SJF-work", "SRPT", "TRAIL+"):
        assert SPECS[name].settings is TRAIL_SETTINGS, name
    paper = resolve(SPECS["TRAIL-paper"].settings, Server(prefill_weight=0.3,
                                                         decode_tokens_per_s=50.0,
                                                         work_rate=2400.0, boost_gamma=1e-3))
    assert paper == {"c": 0.8, "prefill_weight": 0.0, "aging_rate": 0.0, "boost_gamma": 0.0,
                     "preempt_margin": 0.0, "rebuild_cost": 0.0, "kv_aware": False,
                     "max_preemptions": -1,
                     "starvation_steps": 0, "starvation_period": 0}


def test_overrides_change_only_the_setups_that_take_trails_settings() -> None:
    assert settings_of("TRAIL", preempt_margin=64.0).preempt_margin == 64.0
    assert settings_of("SJF-work", tail="none").tail == "none"
    for name in ("FCFS", "SJF", "TRAIL-paper", "LTR", "MLFQ"):
        assert settings_of(name, preempt_margin=64.0, tail="aging") == SPECS[name].settings
    with pytest.raises(ValueError, match="unknown setting"):
        settings_of("TRAIL", margin=3)


def test_vllm_refuses_overrides_of_a_baseline_and_bad_measurements() -> None:
    from trail.integrations.vllm.config import TrailVllmConfig

    with pytest.raises(ValueError, match="runs as its authors describe it"):
        TrailVllmConfig.from_additional({"trail": {"policy": "SJF", "preempt_margin": 3.0}})
    with pytest.raises(ValueError, match="unknown field"):
        TrailVllmConfig.from_additional({"trail": {"server": {"speed": 1.0}}})
    with pytest.raises(ValueError, match="server.work_rate"):
        TrailVllmConfig.from_additional({"trail": {"server": {"work_rate": -1.0}}})
    cfg = TrailVllmConfig.from_additional({"trail": {"policy": "trail-paper"}})
    assert cfg.policy == "TRAIL-paper"
    auto = TrailVllmConfig().resolved_auto()
    assert auto["prefill_weight"] == {"value": 0.0, "measured": False}


@pytest.mark.parametrize("bad, field", [({"tail": "log"}, "tail"), ({"rank": "median"}, "rank"),
                                        ({"aging_rate": -1.0}, "aging_rate"),
                                        ({"boost_gamma": "soon"}, "boost_gamma"),
                                        ({"preempt_margin": "wide"}, "preempt_margin"),
                                        ({"c": math.nan}, "c"),
                                        ({"max_preemptions": -2}, "max_preemptions")])
def test_settings_are_checked_naming_the_field(bad: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**bad)


def test_resolve_follows_each_tail_rule() -> None:
    srv = Server(prefill_weight=0.25, decode_tokens_per_s=40.0, work_rate=1920.0,
                 boost_gamma=2e-3)
    none = resolve(Settings(tail="none", prefill_weight="auto"), srv)
    assert (none["prefill_weight"], none["aging_rate"], none["boost_gamma"]) == (0.25, 0.0, 0.0)
    aging = resolve(Settings(tail="aging", aging_rate="auto"), srv)
    assert aging["aging_rate"] == AGING_FRACTION * 40.0 and aging["boost_gamma"] == 0.0
    boost = resolve(Settings(tail="boost", aging_rate="auto", boost_gamma="auto"), srv)
    assert (boost["aging_rate"], boost["boost_gamma"]) == (1920.0, 2e-3)
    # not measured: the rule without the term (γ 0 is shortest work first: no arrival term)
    assert resolve(Settings(tail="boost", aging_rate="auto", boost_gamma="auto"), Server()
                   )["aging_rate"] == 0.0
    assert resolve(Settings(tail="boost", aging_rate=5.0, boost_gamma=0.0), srv
                   )["aging_rate"] == 0.0


def test_boost_gamma_is_fcfs_tail_decay_rate() -> None:
    """Exponential work of mean m at load ρ: λ(E[e^(γW)] − 1) = γR has the root (1 − ρ)/m
    (M/M/1's FCFS response-time decay rate μ − λ, in tokens)."""
    rng = np.random.default_rng(0)
    m, rate_tok = 200.0, 1000.0
    works = rng.exponential(m, 400_000)
    for rho in (0.5, 0.8, 0.95):
        lam = rho * rate_tok / m
        got = boost_gamma(lam, works, rate_tok)
        rho_hat = lam * works.mean() / rate_tok
        assert got == pytest.approx((1 - rho_hat) / works.mean(), rel=0.03), rho
    assert boost_gamma(6.0, works, rate_tok) == 0.0          # overloaded: no FCFS tail
    with pytest.raises(ValueError, match="works"):
        boost_gamma(1.0, [], rate_tok)
    with pytest.raises(ValueError, match="work_rate"):
        boost_gamma(1.0, works, 0.0)


def test_a_lighter_load_or_tail_gives_a_larger_gamma() -> None:
    """Monotone: less load, or lighter-tailed work, means FCFS's tail decays faster."""
    rng = np.random.default_rng(1)
    light = rng.exponential(100.0, 20_000)
    heavy = np.minimum(100.0 * 0.3 * (rng.pareto(1.3, 20_000) + 1), 1e5)
    heavy *= light.mean() / heavy.mean()
    g = [boost_gamma(r, light, 100.0) for r in (0.2, 0.5, 0.8)]
    assert g[0] > g[1] > g[2] > 0
    assert boost_gamma(0.5, heavy, 100.0) < boost_gamma(0.5, light, 100.0)


def test_engine_config_learns_beta_and_needs_a_probe_where_the_setup_ranks_by_it() -> None:
    from trail import Probe
    from trail.engine.setups import engine_config

    with pytest.raises(ValueError, match="probe"):
        engine_config("TRAIL", max_running=4, kv_capacity_tokens=1024)
    fcfs = engine_config("FCFS", max_running=4, kv_capacity_tokens=1024)
    assert fcfs.probe is None and fcfs.prefill_weight is None
    probe = object.__new__(Probe)
    trail = engine_config("TRAIL", max_running=4, kv_capacity_tokens=1024, probe=probe)
    assert trail.probe is probe and trail.prefill_weight == "auto"  # learned online
    plus = engine_config("TRAIL+", max_running=4, kv_capacity_tokens=1024, probe=probe)
    assert plus.probe is None  # told the true lengths


def test_copy_config_copies_every_field() -> None:
    cfg = policies.scheduler_config("TRAIL", Server(prefill_weight=0.3), max_running=7,
                                    kv_capacity_tokens=4096, swap_capacity_tokens=512)
    fields = {a for a in dir(te.SchedulerConfig) if not a.startswith("_")}
    assert set(policies.CONFIG_FIELDS) == fields  # a new field must be copied too
    twin = policies.copy_config(cfg, kv_aware=False)
    assert twin.kv_aware is False and cfg.kv_aware is True
    assert {f: getattr(twin, f) for f in policies.CONFIG_FIELDS if f != "kv_aware"} == {
        f: getattr(cfg, f) for f in policies.CONFIG_FIELDS if f != "kv_aware"}


def test_the_margin_is_the_winners_curse_of_the_predictions_it_acts_on() -> None:
    """√(2 ln N) √(π/2) (arrival MAE + probe MAE); 0 for the oracle, whose predictions are
    exact; the arrival MAE twice for a set-up that never refreshes its prediction."""
    from trail.policies import server_for, winners_curse_margin

    srv = Server(batch=48, arrival_mae=46.1, probe_mae=33.9)
    k = math.sqrt(2 * math.log(48)) * math.sqrt(math.pi / 2)
    assert winners_curse_margin(srv) == pytest.approx(k * 80.0)
    assert policies.scheduler_config("TRAIL", srv).preempt_margin == pytest.approx(k * 80.0)
    assert policies.scheduler_config("TRAIL+", srv).preempt_margin == 0.0
    assert winners_curse_margin(server_for("SJF-work", srv)) == pytest.approx(k * 92.2)
    assert winners_curse_margin(Server(batch=48)) is None  # not measured: margin 0
    assert policies.scheduler_config("TRAIL", Server(batch=48)).preempt_margin == 0.0


def test_prediction_errors_give_the_margin_once_measured() -> None:
    """Online MAEs from finished requests: arrival |predicted total - total|, refreshed the
    mean |predicted remaining - true remaining| per request; then the winner's curse."""
    errs = policies.PredictionErrors(every=4)
    for rid in range(25):
        errs.arrival(rid, 100.0)                    # every request is 60 tokens: error 40
        for g in range(0, 60, 2):                   # kept at g = 0, 4, 8, ...: error 10
            errs.refreshed(rid, g, 60.0 - g + 10.0)
        assert (errs.margin(8) is None) == (rid < 20)   # rid requests scored so far
        errs.finished(rid, 60)
    assert errs.maes() == (40.0, 10.0)
    want = policies.winners_curse_margin(Server(batch=8, arrival_mae=40.0, probe_mae=10.0))
    assert errs.margin(8) == pytest.approx(want)
    errs.arrival(99, 5.0)
    errs.forget(99)                                 # aborted: not scored
    assert errs.maes() == (40.0, 10.0) and errs.finished_count == 25


def test_prediction_errors_without_refreshes_use_the_arrival_error() -> None:
    errs = policies.PredictionErrors()
    for rid in range(20):
        errs.arrival(rid, 128.0)
        errs.finished(rid, 28)
    assert errs.maes() == (100.0, 100.0)
    assert errs.maes(min_requests=21) == (None, None)
    with pytest.raises(ValueError, match="window"):
        policies.PredictionErrors(window=0)


def test_calibration_is_the_slope_of_the_truth_on_the_prediction() -> None:
    """A posterior mean moves one for one with the truth (slope 1); truth + noise overstates
    differences (slope var(truth) / var(prediction)); a constant says nothing (nan)."""
    rng = np.random.default_rng(0)
    truth = rng.normal(100.0, 20.0, 20_000)
    noisy = truth + rng.normal(0.0, 20.0, truth.size)        # slope 400 / 800
    assert policies.calibration(noisy, truth)["slope"] == pytest.approx(0.5, abs=0.02)
    signal = rng.normal(0.0, 15.0, truth.size)
    posterior = 100.0 + signal                                # E[truth | prediction]
    outcome = posterior + rng.normal(0.0, 25.0, truth.size)
    c = policies.calibration(posterior, outcome)
    assert c["slope"] == pytest.approx(1.0, abs=0.03) and c["n"] == truth.size
    assert c["mean_predicted"] == pytest.approx(100.0, abs=0.5)
    assert math.isnan(policies.calibration([5.0, 5.0], [1.0, 9.0])["slope"])
    with pytest.raises(ValueError, match="calibration"):
        policies.calibration([1.0, 2.0], [1.0])


def test_prediction_errors_measure_calibration_once_enough_finished() -> None:
    errs = policies.PredictionErrors(every=1)
    for rid in range(30):
        total = 20 + 4 * rid
        errs.arrival(rid, 2.0 * total)              # twice the truth: slope 1/2
        for g in range(0, total, 5):
            errs.refreshed(rid, g, float(total - g))   # exact: slope 1
        assert (errs.calibration()["arrival"] is None) == (rid < 20)
        errs.finished(rid, total)
    cal = errs.calibration()
    assert cal["arrival"]["slope"] == pytest.approx(0.5)
    assert cal["refreshed"]["slope"] == pytest.approx(1.0)
    assert cal["arrival"]["n"] == 30


def test_an_unmeasured_margin_takes_the_worst_error_when_given() -> None:
    errs = policies.PredictionErrors()
    assert errs.margin(3) is None
    want = policies.winners_curse_margin(Server(batch=3, arrival_mae=256.0, probe_mae=256.0))
    assert errs.margin(3, worst_error=256) == pytest.approx(want)
