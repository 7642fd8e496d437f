"""The trained demo model on disk: trained once per seed, then loaded from a local cache.

Layout: `$TRAIL_CACHE` (default `~/.cache/trail`) / `demo-v{FORMAT_VERSION}-seed{seed}/` with
the model (`save_pretrained`: config.json + model.safetensors), the tokenizer
(`tokenizer.json`, `tokenizer_config.json`) and `training_report.json`. The folder is
written under a temporary name and renamed into place, so an interrupted run never leaves
a half-written cache that a later run would trust.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerBase

from trail.models.demo import train as _train
from trail.fileio import cache_root, json_field, read_json_object, set_ordinary_mode

REPORT_FILE = "training_report.json"
CONFIG_FILE = "config.json"


def demo_path(seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
              steps: int | None = None) -> pathlib.Path:
    """The folder that holds (or will hold) the demo model of `seed` (and `steps`, when not
    the default number of training steps)."""
    name = f"demo-v{_train.FORMAT_VERSION}-seed{seed}"
    if steps is not None and steps != _train.DEFAULT_STEPS:
        name += f"-steps{steps}"
    return cache_root(cache_dir) / name


def save_demo(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase,
              report: dict[str, Any], path: str | os.PathLike[str]) -> pathlib.Path:
    """Write model, tokenizer and report to `path` atomically (temp folder, then rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.save_pretrained(tmp)  # safetensors; never pickle
        tokenizer.save_pretrained(tmp)
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=1) + "\n")
        # mkdtemp's 0700 and safetensors' 0600 would outlive the rename
        set_ordinary_mode(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / REPORT_FILE).is_file():
                raise
            # Another process finished the same folder first; its copy is as good as ours.
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_model_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The config.json of a save_pretrained folder, checked for the fields trail reads
    (model_type, num_hidden_layers, hidden_size, vocab_size): ValueError naming the file and
    the field, where transformers would fail with a TypeError or, for a missing
    num_hidden_layers, silently build a model of its default depth around the weights."""
    cfg_path = pathlib.Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} does not exist (not a save_pretrained folder)")
    cfg = read_json_object(cfg_path, "model config")
    json_field(cfg, "model_type", "str", cfg_path)
    for key in ("num_hidden_layers", "hidden_size", "vocab_size"):
        json_field(cfg, key, "int", cfg_path, minimum=1)
    return cfg


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The training report of a saved demo model, checked to be one (ValueError naming the
    file and the field otherwise)."""
    report_path = pathlib.Path(path) / REPORT_FILE
    report = read_json_object(report_path, "demo model training report")
    json_field(report, "format_version", "int", report_path)
    json_field(report, "seed", "int", report_path)
    return report


def load_saved(path: str | os.PathLike[str]
               ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase, dict[str, Any]]:
    """Model (float32, eval mode), tokenizer and training report from a saved folder.

    The JSON files are checked first (read_model_config, read_report), and weights missing
    from model.safetensors are an error, not freshly initialised parameters."""
    path = pathlib.Path(path)
    report = read_report(path)
    read_model_config(path)
    try:
        model, info = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                       output_loading_info=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: the model cannot be loaded ({exc}); delete the folder "
                         f"to retrain it") from None
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ValueError(f"{path}: the weights lack {len(missing)} of the model's tensors "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                         f"delete the folder to retrain it")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (ValueError, TypeError) as exc:  # a truncated or edited tokenizer.json
        raise ValueError(f"{path}: the tokenizer files cannot be read ({exc}); delete the "
                         f"folder to retrain it") from None
    return model.eval(), tokenizer, report


def load_demo(seed: int = 0, cache_dir: str | None = None, train_if_missing: bool = True,
              progress: bool = True, steps: int | None = None
              ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """The demo model and tokenizer of `seed`: from the cache, else trained (~2 min) and cached.

    `steps` trains a shorter (weaker) model, cached apart; None is the default schedule.
    """
    path = demo_path(seed, cache_dir, steps)
    if not (path / REPORT_FILE).is_file():  # folders appear whole (rename), so this = complete
        if not train_if_missing:
            raise FileNotFoundError(f"no cached demo model at {path} (train_if_missing=False)")
        model, tokenizer, report = _train.train_demo_model(seed=seed, steps=steps,
                                                           progress=progress)
        save_demo(model, tokenizer, report, path)
    model, tokenizer, report = load_saved(path)
    if report["seed"] != seed or report["format_version"] != _train.FORMAT_VERSION:
        raise ValueError(f"{path / REPORT_FILE}: holds a demo model of seed {report['seed']}, "
                         f"format {report['format_version']}; expected seed {seed}, format "
                         f"{_train.FORMAT_VERSION} (delete the folder to retrain it)")
    return model, tokenizer


def load_report(seed: int = 0, cache_dir: str | None = None) -> dict[str, Any]:
    """The training report of a cached demo model (training time, parameters, loss curve)."""
    return read_report(demo_path(seed, cache_dir))
