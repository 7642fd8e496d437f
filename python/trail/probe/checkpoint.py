"""Opening a checkpoint directory (safetensors weights + a JSON config), checked."""

from __future__ import annotations

import pathlib
from typing import Any

from trail.fileio import json_field, read_json_object
from trail.probe.bins import Bins

# The config fields each format's loader reads, with their kinds (trail.fileio.json_field)
# and minimum: a config that lacks one or holds a bad value fails in open_checkpoint, with
# the file and the field named, instead of as a KeyError or TypeError inside the loader.
FIELDS: dict[str, dict[str, tuple[str, float | None]]] = {
    "trail-probe": {"layer": ("int", 0), "hidden_size": ("int", 1), "hidden_dim": ("int", 1),
                    "model_id": ("str", None)},
    "trail-prompt-baseline": {"hidden_dim": ("int", 1), "dropout": ("number", 0),
                              "encoder": ("dict", None), "train": ("dict", None)},
}
OPTIONAL = {"model_id", "dropout", "train"}


def open_checkpoint(path: str | pathlib.Path, config_file: str, weights_file: str, fmt: str,
                    version: int, owner: str
                    ) -> tuple[dict[str, Any], pathlib.Path, pathlib.Path, Bins]:
    """(config, config path, weights path, bins) of a checkpoint, or a clear error.

    Both files must exist, the config must be a JSON object that names `fmt` at `version`,
    its `bin_edges` must make `num_bins` bins, and the fields of `fmt` in FIELDS must have
    their kinds; `owner` prefixes the messages (e.g. "Probe.load"). Every problem with the
    config is a ValueError naming the file and the field.
    """
    d = pathlib.Path(path)
    cfg_path, w_path = d / config_file, d / weights_file
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{owner}: {p} does not exist")
    try:
        cfg = read_json_object(cfg_path, f"{fmt} config")
        if cfg.get("format") != fmt or cfg.get("version") != version:
            raise ValueError(f"{cfg_path} is not a {fmt} v{version} config "
                             f"(format={cfg.get('format')!r}, version={cfg.get('version')!r})")
        edges = json_field(cfg, "bin_edges", "numbers", cfg_path)
        num_bins = json_field(cfg, "num_bins", "int", cfg_path, minimum=1)
        for key, (kind, minimum) in FIELDS.get(fmt, {}).items():
            json_field(cfg, key, kind, cfg_path, minimum,
                       **({"default": None} if key in OPTIONAL else {}))
        try:
            bins = Bins(tuple(float(e) for e in edges))
        except ValueError as exc:
            raise ValueError(f"{cfg_path}: field 'bin_edges': {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{owner}: {exc}") from None
    if bins.k != num_bins:
        raise ValueError(f"{owner}: {len(edges)} bin edges in {cfg_path} do not "
                         f"make num_bins={num_bins}")
    return cfg, cfg_path, w_path, bins
