"""Measure what the demo model writes: answer lengths, well-formedness, prompt predictability.

`measure_lengths` samples prompts, serves them through the project's `Engine` (FCFS,
continuous batching) and summarises the answers. The prompt-only explained-variance share
answers "how much of the length could a predictor that sees only the prompt know?":

    share = 1 - E[Var(L | prompt)] / Var(L)

estimated from the generations by grouping them on the prompt's length-determining
features (`Prompt.features()`: yes/no + truth, count-down start, list category + qualifier,
story qualifier; the rest of a prompt — which item, which name — does not change the
length distribution). With n generations in G groups, SS_within = sum over groups of squared
deviations from the group mean and SS_total the same around the grand mean:

    share = 1 - [SS_within / (n - G)] / [SS_total / (n - 1)]

(epsilon-squared: the degrees-of-freedom correction removes the plug-in estimate's
optimism with small groups). The plug-in value 1 - SS_within / SS_total is reported too, and
so is the language's own value (exact, from its conditional length distributions, over the
same prompts). The best prompt-only predictor under absolute error is the conditional
median: its MAE is reported with the language's exact medians (an oracle) and with the
groups' sample medians (in-sample, so slightly optimistic). For contrast, the share is also
estimated with N — the count the answer writes at its third token — added to the groups.

`bench/demo_model.py --out DIR [--label NAME]` writes these measurements as
`demo_model_NAME.json`, `.md` and `.png` (a histogram of lengths).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import trail_ext as te
from trail.models.demo.language import (
    KINDS,
    Prompt,
    check_answer,
    conditional_length_mean,
    conditional_length_median,
    conditional_length_var,
    make_rng,
    sample_answer,
)
from trail.models.demo.prompts import sample_prompts
from trail.models.demo.tokenizer import decode_answer, encode_prompt
from trail.engine import Engine, EngineConfig, RequestOutput, SamplingParams
from trail.progress import progress_bar


def generate_answers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                     prompts: Sequence[Prompt], seed: int = 0, temperature: float = 1.0,
                     max_new_tokens: int = 400, max_running: int = 64,
                     progress: bool = True) -> list[RequestOutput]:
    """Serve the prompts through the Engine (FCFS); outputs in prompt order."""
    rng = make_rng(f"demo-sampling-{seed}")  # request i's token stream: its own seed
    limit = int(model.config.max_position_embeddings)
    engine = Engine(model, EngineConfig(scheduler=te.SchedulerConfig(
        policy=te.Policy.FCFS, max_running=max_running,
        kv_capacity_tokens=max_running * limit, block_size=16)))
    try:
        rids = [engine.add_request(encode_prompt(tokenizer, p.text), SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=rng.getrandbits(63),
            stop_token_ids=(tokenizer.eos_token_id,))) for p in prompts]
        outputs: dict[int, RequestOutput] = {}
        bar = progress_bar(len(prompts), "generating demo answers", "answer", progress)
        while engine.has_unfinished():
            done = engine.step()
            outputs.update((o.rid, o) for o in done)
            bar.update(len(done))
        bar.close()
    finally:
        engine.close()  # give the caller the model back as it came (e.g. for generate)
    return [outputs[r] for r in rids]


def _stats(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"n": 0}
    return {"n": int(len(x)), "min": int(x.min()), "median": float(np.median(x)),
            "mean": round(float(x.mean()), 2), "p90": round(float(np.percentile(x, 90)), 1),
            "p99": round(float(np.percentile(x, 99)), 1), "max": int(x.max()),
            "std": round(float(x.std()), 2),
            "cv": round(float(x.std() / x.mean()), 3) if x.mean() > 0 else math.nan}


def prompt_only_share(lengths: Sequence[float], keys: Sequence[Any]) -> dict[str, float]:
    """Share of length variance explained by prompt groups (epsilon-squared and plug-in)."""
    x = np.asarray(lengths, dtype=float)
    groups: dict[Any, list[float]] = defaultdict(list)
    for k, v in zip(keys, x):
        groups[k].append(v)
    n, g = len(x), len(groups)
    ss_total = float(((x - x.mean()) ** 2).sum())
    ss_within = sum(float(((np.array(v) - np.mean(v)) ** 2).sum()) for v in groups.values())
    if ss_total == 0 or n <= g:
        return {"groups": g, "epsilon_squared": math.nan, "plug_in": math.nan}
    return {"groups": g,
            "epsilon_squared": round(1 - (ss_within / (n - g)) / (ss_total / (n - 1)), 4),
            "plug_in": round(1 - ss_within / ss_total, 4)}


def measure_lengths(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, n: int = 2000,
                    seed: int = 0, temperature: float = 1.0, max_new_tokens: int = 400,
                    max_running: int = 64, progress: bool = True) -> dict[str, Any]:
    """Generate answers to n sampled prompts and summarise lengths and their predictability.

    Lengths are in tokens, EOS included. The result's "samples" holds one record per
    generation (prompt, kind, length, checks); everything else is a summary.
    """
    prompts = sample_prompts(n, seed)  # the prompts prompts_file(path, n, seed) writes
    t0 = time.perf_counter()
    outs = generate_answers(model, tokenizer, prompts, seed, temperature, max_new_tokens,
                            max_running, progress)
    gen_time = time.perf_counter() - t0
    samples = []
    for p, o in zip(prompts, outs):
        c = check_answer(p, decode_answer(tokenizer, o.output_ids))
        stopped = o.finish_reason == "stop"
        samples.append({"prompt": p.text, "kind": p.kind, "length": len(o.output_ids),
                        "eos": stopped, "grammatical": stopped and c.grammatical,
                        "well_formed": stopped and c.well_formed, "n": c.n})
    lengths = np.array([s["length"] for s in samples])
    kinds = np.array([s["kind"] for s in samples])
    keys = [p.features() for p in prompts]

    # The best prompt-only predictors under absolute error: conditional medians.
    oracle_median = np.array([conditional_length_median(p) for p in prompts])
    by_group: dict[Any, list[int]] = defaultdict(list)
    for k, length in zip(keys, lengths):
        by_group[k].append(length)
    group_median = np.array([np.median(by_group[k]) for k in keys])
    cond_mean = np.array([conditional_length_mean(p) for p in prompts])
    cond_var = np.array([conditional_length_var(p) for p in prompts])
    lang_rng = make_rng(f"demo-language-{seed}")
    lang_lengths = np.array([len(sample_answer(p, lang_rng).split()) + 1 for p in prompts])

    frac = lambda key, sel=None: round(float(np.mean(  # noqa: E731
        [s[key] for s, k in zip(samples, kinds) if sel is None or k == sel])), 4)
    return {
        "n": n, "seed": seed, "temperature": temperature, "max_new_tokens": max_new_tokens,
        "max_running": max_running, "generation_time_s": round(gen_time, 2),
        "tokens_generated": int(lengths.sum()),
        "tokens_per_s": round(float(lengths.sum()) / gen_time, 1),
        "eos_fraction": frac("eos"), "grammatical_fraction": frac("grammatical"),
        "well_formed_fraction": frac("well_formed"),
        "well_formed_by_kind": {k: frac("well_formed", k) for k in KINDS if (kinds == k).any()},
        "length": _stats(lengths),
        "length_by_kind": {k: _stats(lengths[kinds == k]) for k in KINDS},
        "share_at_least_300": round(float((lengths >= 300).mean()), 4),
        "prompt_only": {
            **prompt_only_share(lengths, keys),
            # The same once the answer has written its count N (answer token 3): what a
            # predictor watching the generation can know early on.
            "with_written_count": prompt_only_share(
                lengths, [(k, s["n"]) for k, s in zip(keys, samples)])["epsilon_squared"],
            "language_exact": round(float(1 - cond_var.mean()
                                          / (cond_var.mean() + cond_mean.var())), 4),
            "mae_oracle_median": round(float(np.abs(lengths - oracle_median).mean()), 2),
            "mae_group_median_in_sample": round(float(np.abs(lengths - group_median).mean()), 2),
            "mae_global_median": round(float(np.abs(lengths - np.median(lengths)).mean()), 2),
        },
        "language_lengths": _stats(lang_lengths),
        "samples": samples,
    }


# --------------------------------------------------------------------------- output files
