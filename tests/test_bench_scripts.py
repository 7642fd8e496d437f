"""The benchmark scripts run (their timings are not checked here)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest
from trail import microbench
from trail.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_gpu_probe_script_smoke_runs_on_cpu() -> None:
    """bench/gpu_probe.py can only measure on a GPU; --smoke checks every other code path."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_probe.py"), "--smoke",
                          "--no-compile"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "smoke run done" in out.stdout
    assert '"max_rel_err"' in out.stdout


@pytest.mark.parametrize("script, expected", [
    ("bench_engine.py", "engine step (no probe)"),
    ("theory_check.py", "smoke run done"),
    ("sim_compare.py", "TRAIL/FCFS"),
    ("sim_regimes.py", "TRAIL/SJF-work"),
    ("kv_aware.py", "KV drops"),
    ("sim_grid.py", "cells meeting the targets"),
    ("tail_frontier.py", "wrote"),
    ("baselines.py", "wrote"),
    ("scheduler_scaling.py", "us per moved request"),
    ("real_probe_study.py", "transfer to AlpacaEval"),  # the real model, a few prompts
    ("gpu_calibrate.py", "fitted:"),   # a tiny model on the CPU: checks the script only
    ("serve_checks.py", "passed: True"),  # trail serve: overhead and load, tiny model
])
def test_benchmark_script_smoke_runs(script: str, expected: str) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "smoke run done" in out.stdout and expected in out.stdout


def test_trail_bench_times_the_workload_of_bench_scheduler(capsys: pytest.CaptureFixture
                                                          ) -> None:
    """`trail bench` and bench/bench_scheduler.py (the README's table) drive one ServingLoop
    with one scheduler config and warm-up, so the same iterations see the same events."""
    spec = importlib.util.spec_from_file_location("bench_scheduler",
                                                  ROOT / "bench" / "bench_scheduler.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.ServingLoop is microbench.ServingLoop
    assert bench.WARMUPS["native"] == microbench.WARMUP and bench.RUNNING == 256
    loop = bench.ServingLoop(bench.IMPLS["native"], 1000, "steady",
                             warmup=bench.WARMUPS["native"])
    before = loop.sched.stats()
    for _ in range(3 + 200):  # pytest-benchmark's warm-up rounds, then the timed ones
        loop.iterate()
    after = loop.sched.stats()
    ours = microbench.bench_scheduler(256, 1000, iterations=200)
    assert ours["preemptions_per_iter"] == (after["preemptions"] - before["preemptions"]) / 203
    assert ours["finished_per_iter"] == (after["finished"] - before["finished"]) / 203

    assert main(["bench", "--batches", "1", "--hidden", "64", "--repeats", "2",
                 "--waiting", "1000"]) == 0
    out = capsys.readouterr().out
    for words in ("serving-loop iteration", "256 running", "W more waiting", "TRAIL, c = 0.8",
                  "steady state", "median of 3,000", "driver"):
        assert words in out, words
    assert "     1,000 " in out  # the row of W = 1,000


def test_results_name_no_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recorded commands and paths are rewritten so results name no machine's folders."""
    sys.path.insert(0, str(ROOT / "bench"))
    from results_io import portable

    monkeypatch.setenv("TRAIL_SHARED_DATA", "/data/set/")
    monkeypatch.setenv("TRAIL_CACHE", "/var/cache/trail")
    rec = {"command": f"x.py --prompts /data/set/alpaca/a.json --out {ROOT}/runs/r",
           "dirs": [f"{ROOT}/bench/results", "/var/cache/trail/models/m", "/home/u/p/q.json"],
           "n": 3, "rel": "runs/a/b", "url": "https://download.pytorch.org/whl/cpu"}
    assert portable(rec) == {
        "command": "x.py --prompts $TRAIL_SHARED_DATA/alpaca/a.json --out runs/r",
        "dirs": ["bench/results", "$TRAIL_CACHE/models/m", ".../p/q.json"],
        "n": 3, "rel": "runs/a/b", "url": "https://download.pytorch.org/whl/cpu"}
