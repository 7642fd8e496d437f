"""The benchmark scripts run (their timings are not checked here)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_gpu_probe_script_smoke_runs_on_cpu() -> None:
    """bench/gpu_probe.py can only measure on a GPU; --smoke checks every other code path."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_probe.py"), "--smoke",
                          "--no-compile"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "smoke run done" in out.stdout
    assert '"max_rel_err"' in out.stdout


def test_engine_benchmark_smoke_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_engine.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "smoke run done" in out.stdout and "engine step (no probe)" in out.stdout


def test_theory_check_smoke_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "theory_check.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def test_sim_compare_smoke_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "sim_compare.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "smoke run done" in out.stdout and "TRAIL/FCFS" in out.stdout


def test_gpu_calibrate_smoke_runs_on_the_cpu() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_calibrate.py"), "--smoke"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "smoke run done" in out.stdout and "fitted:" in out.stdout
