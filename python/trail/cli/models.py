"""--model and --prompts: which model a command loads and which prompts it serves, read
from their files and checked without loading (or training) the model."""

from __future__ import annotations

import json
import pathlib
from typing import Any


def load_model(spec: str, seed: int) -> tuple[Any, Any, str]:
    """(model, tokenizer, model_id) for 'demo', 'smollm2-135m-instruct' or a save_pretrained
    folder (checked before by model_shape)."""
    from trail.models import load_model, model_id

    model, tokenizer = load_model(spec, seed=seed)
    return model, tokenizer, model_id(spec, seed)


def model_shape(spec: str, seed: int) -> tuple[int, int]:
    """(layers, hidden size) of --model, read from its config.json (checked) without loading
    or training it: 'demo' is the cached demo model of `seed`, or the one that would be
    trained."""
    from trail.models.demo.cache import REPORT_FILE, demo_path, read_model_config, read_report

    from trail.models import smollm2

    if spec == "demo":
        path = demo_path(seed)
        if not (path / REPORT_FILE).is_file():
            from trail.models.demo.train import HIDDEN_SIZE, NUM_LAYERS

            return NUM_LAYERS, HIDDEN_SIZE
        read_report(path)
    elif spec == smollm2.NAME:
        path = smollm2.converted_path()
        if not smollm2.is_converted(path):
            smollm2.require_gguf_support()  # fail now, not after other work
            return smollm2.NUM_LAYERS, smollm2.HIDDEN_SIZE
    else:
        path = pathlib.Path(spec)
        if not path.is_dir():
            raise FileNotFoundError(f"--model {spec}: not 'demo', not "
                                    f"'{smollm2.NAME}' and not a save_pretrained folder")
    cfg = read_model_config(path)
    return cfg["num_hidden_layers"], cfg["hidden_size"]


def has_chat_template(spec: str) -> bool:
    """Whether --model's tokenizer has a chat template, from its files (nothing loaded)."""
    from trail.models import smollm2

    if spec == "demo":
        return False  # the demo language has no turns
    if spec == smollm2.NAME:
        return True
    folder = pathlib.Path(spec)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get(
            "chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def prompt_texts(spec: str, seed: int) -> list[str]:
    """Prompts from a JSONL file, or `demo:N` for N prompts of the demo language."""
    from trail.training.collect import read_prompts

    n = demo_prompt_count(spec)
    if n is not None:
        from trail.models.demo import sample_prompts

        return [p.text for p in sample_prompts(n, seed=seed)]
    path = pathlib.Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--prompts {spec}: no such file (or use demo:N)")
    if not path.is_file():
        raise ValueError(f"--prompts {spec}: not a file (a JSONL prompt file, or demo:N)")
    return read_prompts(path)


def demo_prompt_count(spec: str) -> int | None:
    """N of --prompts demo:N (None for a file), checked to be an integer >= 1."""
    if not spec.startswith("demo:"):
        return None
    text = spec.split(":", 1)[1]
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--prompts {spec}: expected demo:N with N an integer") from None
    if n < 1:
        raise ValueError(f"--prompts {spec}: N must be >= 1")
    return n
