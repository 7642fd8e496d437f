"""`trail demo --quick`: the whole system end to end, as CI runs it on a fresh machine."""

from __future__ import annotations

import json
import math
import pathlib

import pytest

from trail.cli import main
from trail.demo.end_to_end import POLICIES, SUMMARY_KEYS, DemoConfig


def test_demo_quick_runs_end_to_end(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRAIL_CACHE", str(tmp_path / "cache"))  # a fresh machine: no model yet
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    for name in POLICIES:
        assert f"\n{name} " in printed
    assert "lat/FCFS" in printed and "TTFT/FCFS" in printed

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == set(POLICIES)
    requests = DemoConfig.quick().workload
    for name, row in summary["policies"].items():
        assert set(row) == set(SUMMARY_KEYS), name
        assert row["submitted"] == row["finished"] == requests, name
        assert 0 < row["latency_s_median"] <= row["latency_s_p99"], name
        assert 0 < row["ttft_s_mean"] <= row["latency_s_mean"], name
        assert row["throughput_tok_s"] > 0, name
    assert summary["policies"]["FCFS"]["preemptions"] == 0
    assert summary["policies"]["SJF"]["preemptions"] == 0
    assert summary["policies"]["SJF-work"]["preemptions"] == 0
    settings = summary["settings"]
    assert settings["SJF"]["prefill_weight_used"] == 0.0 == settings["TRAIL-paper"]["aging_rate"]
    assert settings["TRAIL"]["prefill_weight"] == "auto"
    assert settings["TRAIL"]["prefill_weight_used"] > 0  # learned from the step cost
    assert settings["TRAIL+"]["lengths"] == "true" and settings["MLFQ"]["lengths"] is None
    assert math.isfinite(summary["probe_mae"]) and math.isfinite(summary["prompt_only_mae"])
    assert summary["seed"] == 0 and summary["machine"]
    assert summary["ratios_to_fcfs"]["FCFS"]["latency_s_mean"] == 1.0
    # Sampling is seeded per request, so the schedule does not change the answers.
    for name, same in summary["workload"]["same_length_as_first_pass"].items():
        assert same == requests, name
    for f in ("results.csv", "latency_cdf.png", "predictions.png", "requests/TRAIL.json",
              "requests/TRAIL_plus_requests.csv", "probe_eval/report.json"):
        assert (out / f).is_file(), f
    assert summary["clock"]["kind"] == "virtual" and summary["clock"]["step_cost"]

    # The virtual clock makes the table a function of the seed alone: a second run, with
    # another thread count (and whatever else the machine is doing), gives the same numbers.
    again = tmp_path / "demo-again"
    assert main(["demo", "--quick", "--out", str(again), "--quiet", "--threads", "2"]) == 0
    capsys.readouterr()
    assert json.loads((again / "summary.json").read_text())["policies"] == summary["policies"]


def test_demo_rejects_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="load"):
        DemoConfig(load=0.0)
    with pytest.raises(ValueError, match="workload"):
        DemoConfig.quick(workload=0)
    assert main(["demo", "--quick", "--load", "2", "--out", "unused"]) == 1
    assert "load" in capsys.readouterr().err
    assert DemoConfig(aging_rate="auto").aging_rate == "auto"
    for bad, field in (({"rank": "median"}, "rank"), ({"aging_rate": -1.0}, "aging_rate"),
                       ({"aging_rate": "soon"}, "aging_rate"),
                       ({"prefill_weight": "often"}, "prefill_weight"),
                       ({"preempt_margin": math.nan}, "preempt_margin")):
        with pytest.raises(ValueError, match=field):
            DemoConfig(**bad)
