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

Command line: `python -m trail.demo.measure --out DIR [--label NAME]` writes
`demo_model_NAME.json`, `.md` and `.png` (a histogram of lengths).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import pathlib
import platform
import time
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch
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
from trail.machine import describe
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


def plot_lengths(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Histogram of answer lengths (stacked by task kind) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    top = max(s["length"] for s in samples)
    bins = np.arange(0, top + 10, 9)  # story lengths are 9 + 9N: one per bin, no comb
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.hist([[s["length"] for s in samples if s["kind"] == k] for k in KINDS], bins=bins,
            stacked=True, label=list(KINDS))
    st = result["length"]
    for q, style in (("median", "-"), ("p90", "--"), ("p99", ":")):
        ax.axvline(st[q], color="k", linestyle=style, linewidth=0.8, label=f"{q} {st[q]:g}")
    ax.set_yscale("log")
    ax.set_xlabel("answer length (tokens, EOS included)")
    ax.set_ylabel("answers")
    ax.set_title(f"Demo model, {result['n']} answers at temperature {result['temperature']:g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(result: dict[str, Any], out_dir: str | os.PathLike[str], label: str,
                  training: dict[str, Any] | None = None) -> list[pathlib.Path]:
    """Write demo_model_LABEL.json (summary), .md (a table) and .png (length histogram)."""
    import transformers

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"demo_model_{label}"
    summary = {k: v for k, v in result.items() if k != "samples"}
    meta = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": describe(), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}
    doc = {**meta, "training": training, "measure": summary}
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    paths[0].write_text(json.dumps(doc, indent=1) + "\n")
    paths[1].write_text(_markdown(doc, paths[2].name))
    plot_lengths(result, paths[2])
    return paths


def _markdown(doc: dict[str, Any], png: str) -> str:
    m, t, st, po = doc["measure"], doc["training"] or {}, doc["measure"]["length"], \
        doc["measure"]["prompt_only"]
    lines = [f"# Demo model: training and answer lengths ({doc['date'][:10]})", "",
             "Written by `python -m trail.demo.measure` (docs/demo_model.md).", "",
             f"Machine: {doc['machine']}; {doc['threads']} torch threads; python "
             f"{doc['python']}, torch {doc['torch']}, transformers {doc['transformers']}.", ""]
    if t:
        lines += [f"Training (seed {t['seed']}): {t['params']:,} parameters, {t['steps']} steps, "
                  f"{t['padded_tokens']:,} padded tokens ({t['answer_tokens']:,} answer tokens "
                  f"with loss), **{t['train_time_s']:.0f} s** with {t['threads']} threads, "
                  f"final loss {t['final_loss']:.3f}.", ""]
    lines += [f"Generation: {m['n']} prompts (seed {m['seed']}) through the engine (FCFS, "
              f"max_running {m['max_running']}), temperature {m['temperature']:g}, "
              f"max_new_tokens {m['max_new_tokens']}: {m['generation_time_s']:.0f} s, "
              f"{m['tokens_per_s']:.0f} tokens/s.", "",
              "| answers | well-formed | grammatical | ended with EOS |", "|---|---:|---:|---:|",
              f"| all | {m['well_formed_fraction']:.1%} | {m['grammatical_fraction']:.1%} | "
              f"{m['eos_fraction']:.1%} |"]
    lines += [f"| {k} | {v:.1%} | | |" for k, v in m["well_formed_by_kind"].items()]
    lines += ["", "Lengths in tokens, EOS included:", "",
              "| | n | min | median | mean | p90 | p99 | max |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [("model, all", st), ("language's own answers, same prompts", m["language_lengths"])]
    rows += [(f"model, {k}", v) for k, v in m["length_by_kind"].items() if v.get("n")]
    for name, s in rows:
        lines.append(f"| {name} | {s['n']} | {s['min']} | {s['median']:g} | {s['mean']:.1f} | "
                     f"{s['p90']:g} | {s['p99']:g} | {s['max']} |")
    lines += ["", f"Share of answers with ≥ 300 tokens: {m['share_at_least_300']:.1%}.", "",
              "Prompt-only predictability (see `trail/demo/measure.py` for the estimators):", "",
              f"- share of length variance a prompt-only predictor can explain: "
              f"**{po['epsilon_squared']:.3f}** (epsilon-squared over {po['groups']} groups of "
              f"length-determining prompt features; plug-in {po['plug_in']:.3f}; the language "
              f"itself, exact: {po['language_exact']:.3f})",
              f"- the same share once the answer has written its count N (answer token 3; "
              f"grouping also on N): {po['with_written_count']:.3f}",
              f"- MAE of the best prompt-only predictor (conditional median): "
              f"{po['mae_oracle_median']:.1f} tokens with the language's exact medians, "
              f"{po['mae_group_median_in_sample']:.1f} with in-sample group medians; "
              f"a constant (global median): {po['mae_global_median']:.1f}", "",
              f"![length histogram]({png})", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: load (or train) the demo model, measure it, write results files."""
    ap = argparse.ArgumentParser(description="Measure the demo model's answer lengths.")
    ap.add_argument("--out", required=True, type=pathlib.Path, help="output folder")
    ap.add_argument("--label", default=_dt.date.today().isoformat(),
                    help="file name suffix (default: today's date)")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0, help="model seed and prompt seed")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from trail.models.demo.cache import load_demo, load_report

    torch.set_num_threads(args.threads)
    model, tokenizer = load_demo(args.seed, args.cache_dir, progress=not args.no_progress)
    result = measure_lengths(model, tokenizer, n=args.n, seed=args.seed,
                             temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                             progress=not args.no_progress)
    for p in write_results(result, args.out, args.label, load_report(args.seed, args.cache_dir)):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
