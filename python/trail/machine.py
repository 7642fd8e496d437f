"""A one-line description of this machine, for results files."""

from __future__ import annotations

import os
import pathlib
import platform


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
