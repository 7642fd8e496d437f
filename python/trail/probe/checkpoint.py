"""Opening a checkpoint directory (safetensors weights + a JSON config), checked."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from trail.probe.bins import Bins


def open_checkpoint(path: str | pathlib.Path, config_file: str, weights_file: str, fmt: str,
                    version: int, owner: str
                    ) -> tuple[dict[str, Any], pathlib.Path, pathlib.Path, Bins]:
    """(config, config path, weights path, bins) of a checkpoint, or a clear error.

    Both files must exist, the config must name `fmt` at `version`, and its `bin_edges` must
    make `num_bins` bins; `owner` prefixes the messages (e.g. "Probe.load").
    """
    d = pathlib.Path(path)
    cfg_path, w_path = d / config_file, d / weights_file
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{owner}: {p} does not exist")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != fmt or cfg.get("version") != version:
        raise ValueError(f"{owner}: {cfg_path} is not a {fmt} v{version} config "
                         f"(format={cfg.get('format')!r}, version={cfg.get('version')!r})")
    bins = Bins(tuple(float(e) for e in cfg["bin_edges"]))
    if bins.k != cfg.get("num_bins"):
        raise ValueError(f"{owner}: {len(cfg['bin_edges'])} bin edges in {cfg_path} do not "
                         f"make num_bins={cfg.get('num_bins')}")
    return cfg, cfg_path, w_path, bins
