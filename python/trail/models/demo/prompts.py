"""Prompt sets: n prompts of the evaluation mix, in memory or as a JSONL file."""

from __future__ import annotations

import json
import os
import pathlib

from trail.models.demo.language import Prompt, make_rng, sample_prompt


def sample_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """n prompts from the evaluation mix; the same seed gives the same prompts."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = make_rng(seed)
    return [sample_prompt(rng) for _ in range(n)]


def prompts_file(path: str | os.PathLike[str], n: int, seed: int = 0) -> pathlib.Path:
    """Write n sampled prompts as JSONL lines {"prompt": "..."}; returns the path.

    The texts are plain prompts: the demo tokenizer adds the `<bos> ... <sep>` framing itself
    (`tokenizer(text)["input_ids"] == encode_prompt(tokenizer, text)`).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for p in sample_prompts(n, seed):
            f.write(json.dumps({"prompt": p.text}) + "\n")
    return path
