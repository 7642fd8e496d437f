"""Where a result came from: the machine, the versions and the commit, for results files.

Every writer of results (the benchmarks under bench/, `trail demo`, the probe study) takes
these from here, so a result names its machine and code the same way everywhere.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import pathlib
import platform
import subprocess
from typing import Any

# The checkout this package runs from, when it runs from one (an editable install).
_CHECKOUT = pathlib.Path(__file__).resolve().parents[2]


def describe() -> str:
    """Processor model name (from /proc/cpuinfo on Linux), core count, OS and kernel."""
    name = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def commit() -> str:
    """Short commit of the checkout trail runs from, '+dirty' with changes; '?' if none."""
    if not (_CHECKOUT / ".git").exists() or not (_CHECKOUT / "python" / "trail").is_dir():
        return "?"  # an installed wheel: the enclosing folder's git history is not ours
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=_CHECKOUT,
                              capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
        # Results written by earlier benchmark runs are not a change to the code measured.
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".", ":!bench/results"],
                               cwd=_CHECKOUT, capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def version(package: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(*packages: str, **extra: Any) -> dict[str, Any]:
    """Date, machine, python, versions (torch, numpy, trail and `packages`, by name), torch
    threads and commit, then `extra`: the header every results file starts with."""
    import torch

    import trail

    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": describe(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": version("numpy"), "trail": trail.__version__,
            **{p: version(p) for p in packages}, "threads": torch.get_num_threads(),
            "commit": commit(), **extra}
