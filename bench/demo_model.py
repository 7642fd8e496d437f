"""Measure the demo model's answer lengths and write them as results (JSON, table, histogram).

    python bench/demo_model.py --out bench/results [--label NAME]

loads (or trains) the demo model, serves prompts through the engine (`trail.demo.measure`)
and writes `demo_model_NAME.json`, `.md` and `.png`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np
import torch

from trail.demo.measure import measure_lengths
from trail.models.demo.language import KINDS
from trail.provenance import provenance


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
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"demo_model_{label}"
    summary = {k: v for k, v in result.items() if k != "samples"}
    doc = provenance("transformers", training=training, measure=summary)
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    paths[0].write_text(json.dumps(doc, indent=1) + "\n")
    paths[1].write_text(_markdown(doc, paths[2].name))
    plot_lengths(result, paths[2])
    return paths


def _markdown(doc: dict[str, Any], png: str) -> str:
    m, t, st, po = doc["measure"], doc["training"] or {}, doc["measure"]["length"], \
        doc["measure"]["prompt_only"]
    lines = [f"# Demo model: training and answer lengths ({doc['date'][:10]})", "",
             "Written by `bench/demo_model.py` (docs/demo_model.md).", "",
             f"Machine: {doc['machine']}; {doc['threads']} torch threads; python "
             f"{doc['python']}, torch {doc['torch']}, transformers {doc['transformers']}, "
             f"commit {doc.get('commit', '?')}.", ""]
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
              "Prompt-only predictability (see `python/trail/demo/measure.py` for the estimators):", "",
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
