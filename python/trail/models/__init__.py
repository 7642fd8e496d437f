"""Models TRAIL can serve by name: `load_model("demo" | "smollm2-135m-instruct" | folder)`."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from trail.models import smollm2

NAMES = ("demo", smollm2.NAME)


def load_model(name_or_path: str | os.PathLike[str], dtype: Any = None, seed: int = 0,
               cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for "demo", "smollm2-135m-instruct" or a
    save_pretrained folder; float32 unless `dtype` says otherwise.

    "demo" is the project's own tiny model (trained once and cached, `seed` picks which);
    "smollm2-135m-instruct" is converted once from its GGUF (see trail.models.smollm2) into
    `$TRAIL_CACHE` and loaded from there afterwards.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"load_model: dtype must be a floating torch.dtype, got {dtype!r}")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load_model: expected a model name or folder, got {name_or_path!r}")
    spec = os.fspath(name_or_path)
    if spec == "demo":
        from trail.models.demo import load_demo

        model, tokenizer = load_demo(seed=seed, cache_dir=cache_dir)
        return model.to(dtype).eval(), tokenizer
    if spec == smollm2.NAME:
        path = smollm2.convert(cache_dir)
    else:
        path = pathlib.Path(spec)
        if not path.is_dir():
            raise FileNotFoundError(f"model {spec!r}: not one of {', '.join(NAMES)} and not a "
                                    f"save_pretrained folder")
    return load_folder(path, dtype)


def probe_path(name: str) -> pathlib.Path:
    """The trained probe that ships with the package for model `name` (a trail.Probe folder).

    FileNotFoundError if none ships yet (bench/real_probe_study.py trains and ships it).
    """
    if name != smollm2.NAME:
        raise ValueError(f"probe_path: probes ship for {smollm2.NAME!r} only, got {name!r}")
    path = pathlib.Path(__file__).resolve().parent / "checkpoints" / f"{name}-probe"
    if not (path / "probe.json").is_file():
        raise FileNotFoundError(f"no probe ships for {name!r} in this version "
                                f"(bench/real_probe_study.py trains one and ships it to {path})")
    return path


def load_folder(path: pathlib.Path, dtype: Any) -> tuple[Any, Any]:
    """A save_pretrained folder, refusing one whose weights lack some of the model's tensors
    (transformers would fill them with random values and carry on)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                       output_loading_info=True)
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise ValueError(f"model {path}: the weights lack {len(missing)} of the model's tensors "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer


def model_id(name_or_path: str | os.PathLike[str], seed: int = 0) -> str:
    """A stable id for a model spec (what probe checkpoints record as `model_id`)."""
    spec = os.fspath(name_or_path)
    if spec == "demo":
        return f"trail-demo-seed{seed}"
    if spec == smollm2.NAME:
        return f"HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, {smollm2.PACKAGE}=="\
               f"{smollm2.PACKAGE_VERSION})"
    return str(pathlib.Path(spec).resolve())


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer formats conversations (instruction-tuned models do)."""
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompt(tokenizer: Any, text: str, chat: bool) -> list[int]:
    """Token ids of a prompt: as one user turn followed by the assistant's turn opening when
    `chat` (the way an instruction-tuned model is served), else the plain text."""
    if not chat:
        return list(tokenizer(text)["input_ids"])
    return encode_chat(tokenizer, [{"role": "user", "content": text}])


def encode_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a conversation formatted by the tokenizer's chat template, followed by
    the assistant's turn opening."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # a BatchEncoding (transformers >= 5 returns a dict by default)
        ids = ids["input_ids"]
    return [int(t) for t in ids]


def stop_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every token that ends an answer: the tokenizer's EOS, the model config's and the
    generation config's EOS (an int or a list), and the end-of-turn token of chat models
    (e.g. ChatML's <|im_end|>), when the vocabulary has one."""
    found: list[Any] = [getattr(tokenizer, "eos_token_id", None),
                        getattr(model.config, "eos_token_id", None),
                        getattr(getattr(model, "generation_config", None), "eos_token_id", None)]
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        if marker in vocab:
            found.append(vocab[marker])
    out: list[int] = []
    for t in found:
        for x in (t if isinstance(t, (list, tuple)) else [t]):
            if isinstance(x, int) and not isinstance(x, bool) and x >= 0 and x not in out:
                out.append(x)
    return tuple(out)


__all__ = ["NAMES", "encode_chat", "encode_prompt", "has_chat_template", "load_folder", "load_model",
           "model_id", "stop_token_ids"]
