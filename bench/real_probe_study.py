"""The probe on a real LLM: SmolLM2-135M-Instruct answering Alpaca prompts.

Collects hidden states of every layer while the engine generates answers to 3,000 Alpaca
prompts (chat template, temperature 0.7, at most 512 new tokens), then runs `trail eval-probe`'s
evaluation on them (MAE by layer, refined / per-step / prefill-only / prompt-only by age,
uniform and geometric bins, the bin confusion matrix; split by request) and applies the
trained predictors unchanged to AlpacaEval's 805 instructions (out of distribution).

    python bench/real_probe_study.py --data DATA     # hours on 2 cores; rerun to resume
    python bench/real_probe_study.py --smoke         # a minute; checks the script only

DATA is the shared data folder (alpaca/, alpaca_eval/; or set $TRAIL_SHARED_DATA). Work goes
to --work (default runs/smollm2-study); every step skips what is already done and the
collections resume where they stopped, so the script can be killed and rerun at any time.
Results: bench/results/real_probe_smollm2_<date>.{md,json} with the evaluation's plots.

Why these settings. Sampling, not greedy: greedy answers would make the length a function of
the prompt alone, which flatters prompt-only predictors. Temperature 0.7, a common chat
setting (the paper's value is not stated in the sources we have): on the first 64 Alpaca
prompts this 135M model ran to the 512-token cap in 11 answers at 0.7 and in 18 at 1.0 (it
loops more when sampled hotter); capped answers keep their true remaining length to the cap
as the label, the same for every predictor. 512 new tokens is the paper's bin range (10 bins
over 0..512) and covers Alpaca's reference answers (p99 202 words, about 270 tokens). 3,000
requests at about 110 generated tokens/s (2 cores, 32 running) take about 1.7 h, AlpacaEval's
805 about 0.5 h; 8 sampled decode steps per request, each with its window of 8, keep
every-layer storage near 4 GB. The windowed input (the state together with the mean of the
last 8) is evaluated beside the last state alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import pathlib
import shutil
import sys
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import portable  # noqa: E402
from trail.provenance import provenance  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


SMOKE_VERBS = ("Describe", "List three facts about", "Write one sentence on", "Explain")
SMOKE_THINGS = ("the moon", "photosynthesis", "a good breakfast", "rivers", "chess")


def alpaca_prompts(data: pathlib.Path, limit: int) -> list[str]:
    """Alpaca instructions (with their input, as `trail collect` joins them)."""
    rows = json.loads((data / "alpaca" / "alpaca_data_subset5000.json").read_text())
    return [r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
            for r in rows[:limit]]


def alpaca_eval_prompts(data: pathlib.Path, limit: int) -> list[str]:
    """AlpacaEval's instructions (no separate input field)."""
    path = data / "alpaca_eval" / "alpaca_eval_instructions.jsonl"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["instruction"] for r in rows[:limit]]


def step(name: str) -> None:
    print(f"\n== {name} ({dt.datetime.now():%H:%M:%S})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=pathlib.Path,
                    default=os.environ.get("TRAIL_SHARED_DATA"),
                    help="the shared data folder (default $TRAIL_SHARED_DATA)")
    ap.add_argument("--work", type=pathlib.Path, default=ROOT / "runs" / "smollm2-study")
    ap.add_argument("--prompts", type=int, default=3000, help="Alpaca prompts (max 5000)")
    ap.add_argument("--eval-prompts", type=int, default=805, help="AlpacaEval prompts")
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--samples", type=int, default=8, help="decode steps kept per request")
    ap.add_argument("--max-running", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=8,
                    help="also store the mean of the last W decode states (windowed input)")
    ap.add_argument("--smoke", action="store_true",
                    help="16 + 8 prompts, 2 layers, 32 tokens, 1 epoch; writes no results")
    args = ap.parse_args()
    if not args.smoke and (args.data is None or not (args.data / "alpaca").is_dir()):
        ap.error("--data: the shared data folder with alpaca/ and alpaca_eval/ is needed")

    import torch
    from trail.models import load_model, model_id, smollm2
    from trail.training.collect import CollectConfig, collect
    from trail.training.evaluate import evaluate, evaluate_transfer
    from trail.training.train import TrainConfig

    torch.set_num_threads(args.threads)
    work = args.work / ("smoke" if args.smoke else "full")
    if args.smoke:
        shutil.rmtree(work, ignore_errors=True)  # a smoke run always starts afresh
    work.mkdir(parents=True, exist_ok=True)
    n, n_eval = (16, 8) if args.smoke else (args.prompts, args.eval_prompts)
    layers = [5, 15] if args.smoke else None  # None: every layer
    cfg = CollectConfig(layers=layers, samples_per_request=args.samples,
                        max_new_tokens=32 if args.smoke else args.max_new_tokens,
                        temperature=args.temperature, seed=0, max_running=args.max_running,
                        chat_template=True, checkpoint_every=16 if args.smoke else 64,
                        window=args.window)
    train = TrainConfig(epochs=1) if args.smoke else TrainConfig()

    step("model")
    model, tokenizer = load_model(smollm2.NAME)
    mid = model_id(smollm2.NAME)
    timings: dict[str, float] = {}
    if args.data is not None and (args.data / "alpaca").is_dir():
        sets = (("alpaca", alpaca_prompts(args.data, n)),
                ("alpaca_eval", alpaca_eval_prompts(args.data, n_eval)))
    else:  # --smoke without the data: a few prompts of each kind, enough to run every step
        sets = (("alpaca", [f"{verb} {thing}." for verb in SMOKE_VERBS for thing in
                            SMOKE_THINGS][:n]),
                ("alpaca_eval", [f"Please {verb.lower()} {thing}." for verb in SMOKE_VERBS
                                 for thing in SMOKE_THINGS][-n_eval:]))
    for name, prompts in sets:
        step(f"collect {name}: {len(prompts)} prompts, layers {layers or 'all'}")
        t = time.perf_counter()
        collect(model, tokenizer, prompts, work / f"collect_{name}", cfg, model_id=mid)
        timings[f"collect_{name}_s"] = time.perf_counter() - t
    evald = work / "eval_alpaca"
    if not (evald / "report.json").is_file():
        step("evaluate on Alpaca (every layer, split by request)")
        t = time.perf_counter()
        evaluate(work / "collect_alpaca", evald, cfg=train, baseline=None)
        timings["evaluate_s"] = time.perf_counter() - t
    step("transfer to AlpacaEval")
    transfer = evaluate_transfer(evald, work / "collect_alpaca_eval", work / "transfer.json")
    report = json.loads((evald / "report.json").read_text())
    step("learning to rank (ListMLE on MiniLM) against the other predictors' orders")
    report["ranking"] = ranking(work, evald, train, epochs=2 if args.smoke else 30,
                                list_size=4 if args.smoke else 32)
    if args.smoke:
        print("smoke run done")
        return
    write_results(report, transfer, evald, cfg, timings)


def ranking(work: pathlib.Path, evald: pathlib.Path, train: Any, epochs: int,
            list_size: int) -> dict[str, Any]:
    """Kendall τ and top-8-of-32 precision of each predictor's order of whole requests by
    output length, on held-out Alpaca (the evaluation's split) and on AlpacaEval: the LTR
    score (trained here on the Alpaca training split, saved beside the probes), the prompt-only
    classifier's expected length, and the probe's prediction at prefill."""
    import numpy as np
    import torch
    from trail import Probe
    from trail.training.prompt_only import PromptOnlyPredictor
    from trail.training.collect import load_samples, read_collected_prompts
    from trail.training.ltr import PromptRankPredictor, kendall_tau, top_k_precision
    from trail.training.train import expected_remaining, split_by_request

    report = json.loads((evald / "report.json").read_text())
    layer = int(report["best_layer"])
    probe = Probe.load(evald / "probe")

    def requests(collection: pathlib.Path) -> tuple[list[int], list[str], Any, Any]:
        s = load_samples(collection, layer)
        prompts = read_collected_prompts(collection)
        first = s.prefill
        ids = s.request[first].tolist()
        with torch.no_grad():
            at_prefill = expected_remaining(probe(torch.from_numpy(s.x[first])),
                                            probe.bins).numpy()
        return ids, [prompts[i] for i in ids], s.total[first].astype(float), (s, at_prefill)

    ids, prompts, totals, (s, probe_pred) = requests(work / "collect_alpaca")
    _, val = split_by_request(s.request, train.val_fraction, train.seed)
    held = {int(r) for r in s.request[val]}
    is_val = np.array([i in held for i in ids])
    ltr = PromptRankPredictor()
    fit = ltr.fit([p for p, v in zip(prompts, is_val) if not v], totals[~is_val],
                  epochs=epochs, list_size=list_size)
    ltr.save(evald / "ltr")  # beside the probes: `trail demo --predictors` takes the folder
    base = (PromptOnlyPredictor.load(report["prompt_only"]["checkpoint"])
            if "checkpoint" in report.get("prompt_only", {}) else None)
    out: dict[str, Any] = {"ltr_fit": {k: v for k, v in fit.items() if k != "loss_per_epoch"}}
    eval_ids, eval_prompts, eval_totals, (_, eval_probe) = requests(work / "collect_alpaca_eval")
    for name, (ps, ts, probe_scores) in {
            "alpaca_held_out": ([p for p, v in zip(prompts, is_val) if v], totals[is_val],
                                probe_pred[is_val]),
            "alpaca_eval": (eval_prompts, eval_totals, eval_probe)}.items():
        scores = {"ltr": ltr.score(ps), "probe_at_prefill": probe_scores}
        if base is not None:
            scores["prompt_only"] = base.predict(ps)
        out[name] = {"requests": len(ps), **{
            k: {"kendall_tau": kendall_tau(v, ts),
                "top8_of_32": top_k_precision(v, ts) if len(ps) >= 32 else None}
            for k, v in scores.items()}}
    return out


def write_results(report: dict[str, Any], transfer: dict[str, Any], evald: pathlib.Path,
                  cfg: Any, timings: dict[str, float]) -> None:
    """bench/results/real_probe_smollm2_<date>.{md,json} and the evaluation's plots."""

    day = dt.date.today().isoformat()
    out = ROOT / "bench" / "results"
    stem = f"real_probe_smollm2_{day}"
    meta = provenance("transformers", date=day,
                      command="python bench/real_probe_study.py --data DATA",
                      collect_config=dict(vars(cfg)), timings=timings)
    (out / f"{stem}.json").write_text(json.dumps(
        portable({**meta, "alpaca": report, "alpaca_eval": transfer}), indent=1) + "\n")
    for png in ("mae_by_layer.png", "mae_by_age.png", "confusion.png"):
        if (evald / png).is_file():
            shutil.copy(evald / png, out / f"{stem}_{png}")
    m, t = report["mae"], transfer["mae"]
    lines = [f"# The probe on SmolLM2-135M-Instruct ({day})", "",
             f"- machine: {meta['machine']}; python {meta['python']}, torch {meta['torch']}, "
             f"transformers {meta['transformers']}, commit {meta['commit']}",
             f"- command: `{meta['command']}`", "",
             "| predictor | Alpaca (held out) MAE | AlpacaEval (OOD) MAE |", "|---|---:|---:|"]
    for name in ("refined", "refined_geometric", "refined_window", "refined_window_geometric",
                 "per_step", "per_step_geometric", "per_step_window", "prefill_only",
                 "prompt_only"):
        if name in m:
            lines.append(f"| {name} | {m[name]:.1f} | "
                         f"{t[name]:.1f} |" if name in t else f"| {name} | {m[name]:.1f} | – |")
    lines += ["", f"Best layer {report['best_layer']} of 30 (by per-step validation MAE); "
              f"MAE by layer in `{stem}_mae_by_layer.png`."]
    rk = report.get("ranking", {})
    if rk:
        lines += ["", "Ranking whole requests by output length (Kendall τ; top-8-of-32 "
                  "precision):", "", "| predictor | Alpaca held out | AlpacaEval |",
                  "|---|---|---|"]
        for k in ("ltr", "prompt_only", "probe_at_prefill"):
            cells = []
            for part in ("alpaca_held_out", "alpaca_eval"):
                m = rk.get(part, {}).get(k)
                cells.append("–" if not m else f"{m['kendall_tau']:.3f}; "
                             f"{m['top8_of_32'] if m['top8_of_32'] is None else round(m['top8_of_32'], 3)}")
            lines.append(f"| {k} | {cells[0]} | {cells[1]} |")
    shipped = ship_probe(report, evald)
    lines += ["", f"Shipped: the {shipped} probe (`python/trail/models/checkpoints/"
              f"{SHIPPED.name}`), the servable one with the lower refined MAE on held-out "
              "Alpaca."]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/{stem}.{{md,json}}")


# Where the trained SmolLM2 probe ships inside the package (safetensors + JSON, ~1.2 MB).
SHIPPED = ROOT / "python" / "trail" / "models" / "checkpoints" / "smollm2-135m-instruct-probe"
# (trail.models.probe_path("smollm2-135m-instruct") is where users find it)


def ship_probe(report: dict[str, Any], evald: pathlib.Path) -> str:
    """Copy the better of the uniform and geometric probes (by refined MAE on held-out Alpaca)
    into the package; the windowed probes are not servable by the engine yet. Returns which."""
    m = report["mae"]
    kind = "geometric" if m["refined_geometric"] < m["refined"] else "uniform"
    src = pathlib.Path(report["probe_checkpoints"][kind])
    shutil.rmtree(SHIPPED, ignore_errors=True)
    shutil.copytree(src, SHIPPED)
    return kind


if __name__ == "__main__":
    main()
