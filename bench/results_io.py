"""Shared helpers for the benchmark scripts: pytest-benchmark summaries and portable paths.

The machine, versions and commit of a result come from `trail.provenance`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
from typing import Any


def machine_lines(raw: dict[str, Any]) -> list[str]:
    """Markdown bullet lines naming the machine, versions and time of a pytest-benchmark run."""
    import numpy
    import torch
    import trail

    mi = raw["machine_info"]
    cpu = mi.get("cpu", {})
    return [f"- machine: {cpu.get('brand_raw', platform.processor())}, "
            f"{cpu.get('count', '?')} cores, {mi['system']} {mi['release']}",
            f"- python {mi['python_version']}, torch {torch.__version__}, numpy "
            f"{numpy.__version__}, trail {trail.__version__}, commit "
            f"{raw.get('commit_info', {}).get('id', '?')[:10]}",
            f"- run: {raw['datetime']}"]


def summary_args(doc: str) -> argparse.Namespace:
    """Command line of a summarizer: RUN.json OUT_DIR [--label NAME]."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("run_json", type=pathlib.Path)
    ap.add_argument("out_dir", type=pathlib.Path)
    ap.add_argument("--label", default=None, help="file name suffix (default: the run's date)")
    return ap.parse_args()


def write_json(path: pathlib.Path, raw: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Write medians with the machine they were measured on."""
    mi = raw["machine_info"]
    path.write_text(json.dumps(
        {"date": raw["datetime"], "machine": mi.get("cpu", {}).get("brand_raw"),
         "cores": mi.get("cpu", {}).get("count"), "python": mi["python_version"],
         "results": results}, indent=1) + "\n")


def portable(obj: Any) -> Any:
    """`obj` with this machine's absolute paths rewritten so results name no local folder.

    The checkout's root becomes a relative path, $TRAIL_SHARED_DATA and $TRAIL_CACHE become
    those variables' names, and any other absolute path keeps only its last two parts.
    """
    import os
    import re

    root = str(pathlib.Path(__file__).resolve().parent.parent)
    subs = [(root + "/", "")]
    for var in ("TRAIL_SHARED_DATA", "TRAIL_CACHE"):
        val = os.environ.get(var, "").rstrip("/")
        if val:
            subs.append((str(pathlib.Path(val).resolve()) + "/", f"${var}/"))
            subs.append((val + "/", f"${var}/"))

    def fix(s: str) -> str:
        for old, new in subs:
            s = s.replace(old, new)
        # Whatever absolute path is left names this machine's layout: keep its tail only.
        return re.sub(r"(?<![\w$.:/])/(?:[^\s/`'\"]+/)+([^\s/`'\"]+/[^\s/`'\"]+)",
                      r".../\1", s)

    if isinstance(obj, str):
        return fix(obj)
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v) for v in obj]
    return obj


def results_dir(out: str | None, smoke: bool) -> pathlib.Path:
    """--out, else bench/results, else (a smoke run) a temporary folder; created."""
    import tempfile

    root = pathlib.Path(__file__).resolve().parent / "results"
    path = pathlib.Path(out) if out else (pathlib.Path(tempfile.mkdtemp()) if smoke else root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_header(script: str, argv: list[str] | None, **facts: Any) -> dict[str, Any]:
    """A results file's header: provenance, the command that made it (`script` with `argv`,
    or this process's arguments), then `facts`."""
    import sys

    from trail.provenance import provenance

    args = argv if argv is not None else sys.argv[1:]
    return {"provenance": provenance(), "command": " ".join(["python", f"bench/{script}",
                                                             *args]), **facts}
