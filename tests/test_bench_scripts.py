"""The benchmark scripts run (their timings are not checked here)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

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
    ("gpu_calibrate.py", "fitted:"),   # a tiny model on the CPU: checks the script only
])
def test_benchmark_script_smoke_runs(script: str, expected: str) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "smoke run done" in out.stdout and expected in out.stdout
