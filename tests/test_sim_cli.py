"""`trail simulate` and `trail theory` end to end (small inputs)."""

from __future__ import annotations

import json
from dataclasses import replace
import pathlib

import pytest

from trail.cli import main
from trail.policies import COMPARE
from trail.sim.compare import (AGING_FRACTION, TRAIL_DEFAULTS, SimSettings, describe,
                               setup)
from trail.sim.theory import sjf_mean_response_time, srpt_mean_response_time
from trail.sim.traces import load_trace

SUMMARY_KEYS = {"latency_s_mean", "latency_s_median", "latency_s_p99", "ttft_s_mean",
                "throughput_tok_s", "preemptions", "submitted", "finished"}


def test_simulate_compare_writes_the_summary(tmp_path: pathlib.Path,
                                             capsys: pytest.CaptureFixture) -> None:
    assert main(["simulate", "--trace", "azure-conv", "--compare", "--limit", "200",
                 "--load", "0.9", "--quiet", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["policies"]) == list(COMPARE) == [
        "FCFS", "SJF", "SJF-work", "TRAIL-paper", "TRAIL", "TRAIL+", "LTR", "MLFQ"]
    for row in summary["policies"].values():
        assert set(row) == SUMMARY_KEYS and row["finished"] == row["submitted"] == 200
    assert summary["load"] == 0.9 and summary["seed"] == 0
    assert list(summary["policy_settings"]) == list(COMPARE)
    out = capsys.readouterr().out
    for name in COMPARE:
        assert f"\n{name} " in out


def test_policy_settings_trail_defaults_and_overrides(tmp_path: pathlib.Path) -> None:
    """TRAIL (and SJF-work, TRAIL+) take TRAIL_DEFAULTS or the flags; SJF and TRAIL-paper keep
    the paper's rule whatever the flags say; summary.json records each one's settings."""
    from trail.sim.cost_model import CostModel

    from trail.policies import TRAIL_SETTINGS, resolve

    beta = CostModel.preset("llama3-8b-a100-80gb").prefill_weight(batch=48)
    assert TRAIL_DEFAULTS["prefill_weight"] == "auto"
    settings = SimSettings(cost=CostModel.preset("llama3-8b-a100-80gb"))
    trace = load_trace("azure-conv").head(300)
    trail = describe(setup("trail", settings, trace))
    want = resolve(TRAIL_SETTINGS, settings.server(trace))
    assert trail["prefill_weight"] == beta == want["prefill_weight"]
    assert (trail["aging_rate"], trail["boost_gamma"], trail["tail"]) == (
        want["aging_rate"], want["boost_gamma"], TRAIL_SETTINGS.tail)
    assert trail["rank"] == TRAIL_DEFAULTS["rank"] and trail["c"] == TRAIL_DEFAULTS["c"]
    assert trail["kv_aware"] is TRAIL_DEFAULTS["kv_aware"] is True
    alpha = AGING_FRACTION * CostModel.preset("llama3-8b-a100-80gb").decode_tokens_per_s(48)
    aging = describe(setup("trail", replace(settings, tail="aging"), trace))
    assert aging["aging_rate"] == alpha > 0 and aging["boost_gamma"] == 0.0

    assert main(["simulate", "--trace", "azure-conv", "--compare", "--limit", "60", "--quiet",
                 "--prefill-weight", "2", "--tail", "aging", "--aging-rate", "1",
                 "--preempt-margin", "7",
                 "--rank", "gittins", "--corr-tokens", "0", "--c", "0.5", "--max-preemptions",
                 "3", "--no-kv-aware", "--out", str(tmp_path)]) == 0
    ps = json.loads((tmp_path / "summary.json").read_text())["policy_settings"]
    for name in ("TRAIL", "TRAIL+"):
        assert {k: ps[name][k] for k in ("prefill_weight", "aging_rate", "preempt_margin", "c",
                                         "max_preemptions")} == {
            "prefill_weight": 2.0, "aging_rate": 1.0, "preempt_margin": 7.0, "c": 0.5,
            "max_preemptions": 3}
    assert ps["TRAIL"]["rank"] == "gittins" and ps["TRAIL"]["corr_tokens"] == 0
    assert ps["TRAIL+"]["predictor"] == "oracle" and ps["TRAIL"]["predictor"] == "probe"
    assert ps["SJF-work"] == {"scheduler": "SJF", "predictor": "prompt-only",
                              "prefill_weight": 2.0, "tail": "aging", "aging_rate": 1.0,
                              "boost_gamma": 0.0, "kv_aware": False,
                              "starvation_steps": 0, "rank": "gittins", "prediction_mae": 46.1}
    assert ps["SJF"] == {"scheduler": "SJF", "predictor": "prompt-only", "prefill_weight": 0.0,
                         "tail": "none", "aging_rate": 0.0, "boost_gamma": 0.0,
                         "kv_aware": False, "starvation_steps": 0,
                         "rank": "mean", "prediction_mae": 46.1}
    assert ps["TRAIL"]["kv_aware"] is False  # --no-kv-aware
    for name in ("LTR", "MLFQ"):  # TRAIL's margin is not the baselines'
        assert ps[name]["preempt_margin"] == 0.0, name
    paper = ps["TRAIL-paper"]
    assert (paper["prefill_weight"], paper["aging_rate"], paper["preempt_margin"], paper["c"],
            paper["rank"], paper["max_preemptions"]) == (0.0, 0.0, 0.0, 0.8, "mean", -1)
    assert paper["corr_tokens"] == 0  # the simulated probe is the same for every policy


def test_simulate_one_policy_on_a_csv(tmp_path: pathlib.Path) -> None:
    load_trace("azure-code").head(150).save_csv(tmp_path / "t.csv")
    assert main(["simulate", "--trace", str(tmp_path / "t.csv"), "--policy", "trail",
                 "--preset", "llama3-8b-h100", "--quiet", "--out", str(tmp_path / "o")]) == 0
    assert list(json.loads((tmp_path / "o" / "summary.json").read_text())["policies"]) == ["TRAIL"]


def test_theory_command_reduces_to_sjf_and_srpt(tmp_path: pathlib.Path) -> None:
    assert main(["theory", "--trace", "azure-code", "--load", "0.7", "--c", "0", "1",
                 "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "theory.json").read_text())
    sizes = load_trace("azure-code").output_tokens.astype(float)
    assert r["TRAIL"]["0.0"] == pytest.approx(sjf_mean_response_time(sizes, 0.7))
    assert r["TRAIL"]["1.0"] == pytest.approx(srpt_mean_response_time(sizes, 0.7))
    assert r["SRPT"] < r["SJF"] < r["FCFS"]


def test_bad_simulate_arguments(capsys: pytest.CaptureFixture) -> None:
    assert main(["simulate", "--policy", "fifo", "--limit", "10"]) == 1
    assert "unknown policy" in capsys.readouterr().err
    assert main(["simulate", "--limit", "10", "--corr-tokens", "-1"]) == 1
    assert "--corr-tokens -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: not a choice
        main(["simulate", "--limit", "10", "--rank", "median"])
    assert main(["simulate", "--trace", "no-such-trace", "--limit", "10"]) == 1
    assert main(["simulate", "--load", "3", "--limit", "10"]) == 1


def test_tune_c_recommends_a_swept_value(tmp_path: pathlib.Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["tune-c", "--trace", "azure-conv", "--limit", "150", "--c", "0", "0.5", "1",
                 "--quiet", "--out", str(tmp_path)]) == 0
    sweep = json.loads((tmp_path / "tune_c.json").read_text())
    assert [r["c"] for r in sweep["rows"]] == [0.0, 0.5, 1.0]
    assert sweep["recommended_c"] in (0.0, 0.5, 1.0)
    assert sweep["theory_best_c"] == 1.0  # exact predictions: full SRPT is optimal in M/G/1
    assert sweep["rows"][0]["preemptions"] == 0  # c = 0 never preempts
    assert (tmp_path / "latency_vs_c.png").stat().st_size > 1000
    assert "recommended c" in capsys.readouterr().out
    assert main(["tune-c", "--c", "1.5", "--limit", "20"]) == 1


def test_simulate_work_aware_keys(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    """--prefill-weight auto takes β from the cost model and reports it; bad values fail."""
    from trail.sim.cost_model import CostModel

    assert main(["simulate", "--trace", "azure-conv", "--policy", "trail", "--limit", "150",
                 "--prefill-weight", "auto", "--aging-rate", "2", "--preempt-margin", "5",
                 "--quiet", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    beta = CostModel.preset("llama3-8b-a100-80gb").prefill_weight(batch=48)
    assert summary["prefill_weight"] == beta and summary["aging_rate"] == 2.0
    assert summary["policies"]["TRAIL"]["finished"] == 150
    assert summary["policy_settings"]["TRAIL"]["preempt_margin"] == 5.0
    assert f"size + {beta:.4g} x pending prefill + 2 x arrival" in capsys.readouterr().out
    for flag, value in (("--prefill-weight", "heavy"), ("--prefill-weight", "-1"),
                        ("--aging-rate", "nan"), ("--aging-rate", "soon"),
                        ("--aging-rate", "-2")):
        assert main(["simulate", "--trace", "azure-conv", "--limit", "50", "--quiet",
                     flag, value]) == 1
        err = capsys.readouterr().err.replace("_", "-")
        assert flag.lstrip("-") in err, err
