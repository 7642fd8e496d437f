"""The demo model: a synthetic instruction language and a tiny Llama trained on it in ~3 CPU minutes.

The language is made up (see :mod:`trail.models.demo.language` and docs/demo_model.md). An
answer's length depends partly on the prompt and partly on a count the model samples while
writing it, which only becomes visible during generation: the situation TRAIL's probe is for.

- :func:`load_demo` — the trained model and tokenizer (cached; trains on first use)
- :func:`train_demo_model` — train from scratch (deterministic for a seed)
- :func:`sample_prompt`, :func:`sample_prompts`, :func:`prompts_file` — prompts
- :func:`encode_prompt` — the exact ids the model was trained on (`<bos> words <sep>`)
"""

from trail.models.demo.cache import demo_path, load_demo, load_report
from trail.models.demo.language import (
    Prompt,
    check_answer,
    conditional_length_mean,
    conditional_length_median,
    make_rng,
    parse_prompt,
    sample_answer,
    sample_prompt,
)
from trail.models.demo.prompts import prompts_file, sample_prompts
from trail.models.demo.tokenizer import build_tokenizer, decode_answer, encode_prompt
from trail.models.demo.train import train_demo_model

__all__ = ["Prompt", "build_tokenizer", "check_answer", "conditional_length_mean",
           "conditional_length_median", "decode_answer", "demo_path", "encode_prompt",
           "load_demo", "load_report", "make_rng", "parse_prompt", "prompts_file",
           "sample_answer", "sample_prompt", "sample_prompts", "train_demo_model"]
