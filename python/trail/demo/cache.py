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

from trail.demo import train as _train
from trail.fileio import set_ordinary_mode

REPORT_FILE = "training_report.json"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Where demo models are cached: `cache_dir`, else $TRAIL_CACHE, else ~/.cache/trail."""
    if cache_dir is not None:
        return pathlib.Path(cache_dir)
    env = os.environ.get("TRAIL_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "trail"


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


def load_saved(path: str | os.PathLike[str]
               ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase, dict[str, Any]]:
    """Model (float32, eval mode), tokenizer and training report from a saved folder."""
    path = pathlib.Path(path)
    model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    report = json.loads((path / REPORT_FILE).read_text())
    return model, tokenizer, report


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
    model, tokenizer, _ = load_saved(path)
    return model, tokenizer


def load_report(seed: int = 0, cache_dir: str | None = None) -> dict[str, Any]:
    """The training report of a cached demo model (training time, parameters, loss curve)."""
    return json.loads((demo_path(seed, cache_dir) / REPORT_FILE).read_text())
