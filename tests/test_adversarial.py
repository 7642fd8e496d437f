"""Thousands of bad inputs at every public entry point (tests/adversarial.py), each group in
a child process: a crash or a hang fails the test and names the case it happened in."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import trail_ext

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
# Each group takes seconds; a hang (not slowness) is what this bound is for.
HANG_GUARD_S = 600


@pytest.mark.parametrize("group", ["scheduler", "op", "probe", "engine"])
def test_every_bad_input_is_handled_cleanly(group: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ext = pathlib.Path(trail_ext.__file__).resolve().parent
    if ext != REPO / "trail_ext":  # not the editable install: hand the child the same build
        env["TRAIL_ADVERSARIAL_EXT"] = str(ext.parent)
    try:
        proc = subprocess.run([sys.executable, str(HERE / "adversarial.py"), group],
                              capture_output=True, text=True, timeout=HANG_GUARD_S, env=env,
                              cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout or b"").decode().splitlines() if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "").splitlines()
        pytest.fail(f"{group}: hung in {lines[-1] if lines else 'start-up'}")
    lines = proc.stdout.splitlines()
    last_case = next((l for l in reversed(lines) if l.startswith("case ")), "start-up")
    assert proc.returncode == 0 and lines and lines[-1].startswith("summary "), (
        f"{group}: the child died (status {proc.returncode}) in {last_case}\n"
        f"{proc.stderr[-3000:]}")
    summary = json.loads(lines[-1][len("summary "):])
    assert summary["ext"] == trail_ext._C.__file__  # the child tested the same build
    print(f"{group}: {summary['tried']} cases, {summary['clean']} clean, "
          f"{summary['refused']} refused calls")
    assert summary["tried"] > 300
    assert summary["unclean"] == [], "\n".join(summary["unclean"][:50])
    assert summary["clean"] == summary["tried"]
