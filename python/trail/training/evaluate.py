"""`trail eval-probe`: which layer, how good, and how it compares with a prompt-only predictor.

On a collection (see collect.py), split by request with the training seed:
1. trains a probe per collected layer and picks the layer with the lowest validation MAE of
   per-step predictions (the expected remaining length of one state alone);
2. at that layer compares, on held-out requests: the prefill-only prediction (made once from
   the prompt's mean state, then counted down as tokens are generated), per-step predictions,
   and Bayesian-refined predictions (the op's update across the request's sampled steps, with
   Tᵏ for the k tokens between them — what the engine does with `predict_every` = k);
   overall and by age (tokens generated so far); plus a bin confusion matrix;
3. repeats 2 with geometric bins;
4. trains and scores the prompt-only baseline (MiniLM, `trail.training.prompt_only`) on the same
   split when it is installed;
5. exports the refined predictions' error profile (residual quantiles by age and true bin),
   which the simulator samples from, and how that error is correlated along a request
   (`error_correlation`: the lag correlation of its normal scores and the fitted correlation
   length, the simulator's `corr_tokens`);
and writes report.json, PNG plots and the chosen layer's probe checkpoint into the output.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import asdict
from typing import Any, Sequence

import numpy as np
import torch

from trail.probe.bins import Bins
from trail.training.collect import (
    Samples,
    load_samples,
    read_collected_prompts,
    read_manifest,
)
from trail.probe.probe import Probe
from trail.training.train import (
    TrainConfig,
    expected_remaining,
    split_by_request,
    train_probe,
)

AGE_EDGES = (1, 2, 5, 10, 20, 50, 100, 200, 500)
# What each predictor is, for tables and legends (the report's keys are code names).
LABELS = {"per_step": "probe, per step (uniform bins)",
          "refined": "probe, refined (uniform bins)",
          "per_step_geometric": "probe, per step (geometric bins)",
          "refined_geometric": "probe, refined (geometric bins)",
          "prefill_only": "probe at prefill, counted down",
          "prompt_only": "prompt-only (MiniLM)"}
# Colour says which predictor, line style and filling which bins (uniform: solid, filled;
# geometric: dashed, hollow), and every series has its own marker.
STYLES = {"per_step": {"color": "C0", "linestyle": "-", "marker": "o"},
          "per_step_geometric": {"color": "C0", "linestyle": (0, (4, 2)), "marker": "s",
                                 "hollow": True},
          "refined": {"color": "C3", "linestyle": "-", "marker": "D"},
          "refined_geometric": {"color": "C3", "linestyle": (0, (4, 2)), "marker": "^",
                                "hollow": True},
          "prefill_only": {"color": "C1", "linestyle": (0, (1, 1.2)), "marker": "v"},
          "prompt_only": {"color": "C2", "linestyle": (0, (6, 2, 1, 2)), "marker": "P"}}
QUANTILES = tuple(np.linspace(0.0, 1.0, 21).round(2))


def _mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.abs(pred - true).mean()) if len(true) else math.nan


def mae_by_age(pred: np.ndarray, true: np.ndarray, age: np.ndarray) -> dict[str, float]:
    """MAE per age bucket ("1", "2-4", …, "500+")."""
    out = {}
    edges = list(AGE_EDGES) + [math.inf]
    for lo, hi in zip(edges, edges[1:]):
        m = (age >= lo) & (age < hi)
        if m.any():
            label = f"{lo}" if hi == lo + 1 else (f"{lo}+" if hi == math.inf else f"{lo}-{hi - 1}")
            out[label] = _mae(pred[m], true[m])
    return out


@torch.no_grad()
def refined_predictions(probe: Probe, s: Samples, rows: np.ndarray, max_new_tokens: int
                        ) -> np.ndarray:
    """Bayesian-refined prediction at each sample in `rows` (a request's samples in age order).

    Each request's prefill sample starts its distribution; every later sample updates it with
    Tᵏ, k = tokens since the previous sample, exactly as the engine's probe step does.
    """
    order = rows[np.lexsort((s.age[rows], s.request[rows]))]
    requests = np.unique(s.request[order])
    slot_of = {int(r): i for i, r in enumerate(requests)}
    probe.resize_slots(max(1, len(requests)))
    per_request = [order[s.request[order] == r] for r in requests]
    pred = np.full(len(s.age), np.nan)
    depth = max(len(p) for p in per_request)
    for j in range(depth):
        idx = np.array([p[j] for p in per_request if len(p) > j])
        prev = np.array([p[j - 1] if j else p[0] for p in per_request if len(p) > j])
        since = np.maximum(s.age[idx] - s.age[prev], 0) if j else np.ones(len(idx), np.int64)
        out = probe.step(torch.from_numpy(s.x[idx]), [slot_of[int(r)] for r in s.request[idx]],
                         j == 0, torch.from_numpy(s.age[idx]), max_new_tokens,
                         torch.from_numpy(since))
        pred[idx] = out.numpy()
    return pred[rows]


def prefill_only_predictions(probe: Probe, s: Samples, rows: np.ndarray) -> np.ndarray:
    """The prefill sample's prediction, counted down by the tokens generated since."""
    with torch.no_grad():
        pre = expected_remaining(probe(torch.from_numpy(s.x[s.prefill])), probe.bins).numpy()
    at_prefill = dict(zip(s.request[s.prefill].tolist(), pre.tolist()))
    base = np.array([at_prefill.get(int(r), math.nan) for r in s.request[rows]])
    return np.maximum(base - (s.age[rows] - 1), 0.0)


def error_profile(pred: np.ndarray, true: np.ndarray, age: np.ndarray, bins: Bins
                  ) -> dict[str, Any]:
    """Residual quantiles (pred − true) by age bucket × true bin, for the simulator to sample."""
    edges = list(AGE_EDGES) + [math.inf]
    tb = bins.index(torch.from_numpy(true)).numpy()
    table = []
    for a, (lo, hi) in enumerate(zip(edges, edges[1:])):
        for b in range(bins.k):
            m = (age >= lo) & (age < hi) & (tb == b)
            if m.sum() >= 5:
                table.append({"age_bucket": a, "true_bin": b, "count": int(m.sum()),
                              "residual_quantiles": np.quantile(pred[m] - true[m],
                                                                QUANTILES).tolist()})
    return {"age_edges": list(AGE_EDGES), "bin_edges": list(bins.edges),
            "quantiles": list(QUANTILES), "cells": table,
            "note": "residual = predicted - true remaining tokens (Bayesian-refined probe); "
                    "sample a cell's residual by interpolating its quantiles at u ~ U(0,1)"}


LAG_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def error_correlation(pred: np.ndarray, true: np.ndarray, age: np.ndarray,
                      request: np.ndarray, bins: Bins, min_pairs: int = 30) -> dict[str, Any]:
    """How a request's prediction error persists across its steps: lag correlations and L.

    The latent error of a sample is the normal score of its residual (pred − true) within its
    cell of `error_profile` (age bucket × true bin): z = Φ⁻¹(u), u = the residual's mid-rank
    in the cell / its size — the Gaussian copula the simulator's profile mode samples through.
    For every pair of samples of one request, Δ = their age difference; per lag bucket
    [LAG_EDGES[i], LAG_EDGES[i+1]) the Pearson correlation of the pairs' z (buckets with at
    least `min_pairs` pairs). `corr_tokens` L is the least-squares fit (weighted by pairs) of
    ρ(Δ) = exp(−Δ / L) to them over a log grid of L in [0.5, 10⁵] tokens: the AR(1) model of
    `trail.sim.predictors.EmbeddingProbe`. NaN when no bucket has enough pairs.
    """
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    age, request = np.asarray(age), np.asarray(request)
    ab = np.clip(np.searchsorted(np.asarray(AGE_EDGES), np.maximum(age, 1), side="right") - 1,
                 0, len(AGE_EDGES) - 1)
    tb = bins.index(torch.from_numpy(true)).numpy()
    z = np.full(len(pred), np.nan)
    resid = pred - true
    for cell in np.unique(ab * bins.k + tb):
        m = np.flatnonzero(ab * bins.k + tb == cell)
        if len(m) < 5:
            continue
        r = np.sort(resid[m])  # ties share their mid-rank
        lo = np.searchsorted(r, resid[m], side="left")
        hi = np.searchsorted(r, resid[m], side="right")
        u = ((lo + hi) / 2.0) / len(m)  # (mid-rank + 0.5) / n, in (0, 1)
        z[m] = torch.special.ndtri(torch.from_numpy(u)).numpy()
    ok = np.flatnonzero(np.isfinite(z))
    first, second = [], []
    for r in np.unique(request[ok]):
        idx = ok[request[ok] == r]
        if len(idx) > 1:
            i, j = np.triu_indices(len(idx), k=1)
            first.append(idx[i])
            second.append(idx[j])
    lags = []
    if first:
        i, j = np.concatenate(first), np.concatenate(second)
        delta = np.abs(age[j].astype(float) - age[i].astype(float))
        for lo_, hi_ in zip(LAG_EDGES, LAG_EDGES[1:]):
            m = (delta >= lo_) & (delta < hi_)
            if m.sum() >= min_pairs and np.std(z[i][m]) > 0 and np.std(z[j][m]) > 0:
                lags.append({"lag_tokens": [lo_, hi_ - 1], "mean_lag": float(delta[m].mean()),
                             "pairs": int(m.sum()),
                             "correlation": float(np.corrcoef(z[i][m], z[j][m])[0, 1])})
    corr_tokens = math.nan
    if lags:
        d = np.array([x["mean_lag"] for x in lags])
        rho = np.array([x["correlation"] for x in lags])
        w = np.array([x["pairs"] for x in lags], float)
        grid = np.geomspace(0.5, 1e5, 4000)
        err = ((rho[None, :] - np.exp(-d[None, :] / grid[:, None])) ** 2 * w).sum(axis=1)
        corr_tokens = float(grid[int(np.argmin(err))])
    return {"lags": lags, "corr_tokens": corr_tokens,
            "note": "z = normal score of the residual within its error_profile cell; "
                    "correlation of z between two samples of one request, by their age "
                    "difference; corr_tokens L fits exp(-lag / L) (trail simulate "
                    "--corr-tokens)"}


def evaluate(collection: str | pathlib.Path, out_dir: str | pathlib.Path,
             layers: Sequence[int] | None = None, cfg: TrainConfig | None = None,
             num_bins: int = 10, max_len: float = 512.0, baseline: bool | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run the whole evaluation; writes report.json, plots and probe/ into `out_dir`."""
    cfg = cfg or TrainConfig()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(collection)
    layers = list(layers) if layers is not None else list(manifest["layers"])
    uniform, geometric = Bins.uniform(num_bins, max_len), Bins.geometric(num_bins)
    max_new = int(manifest["config"]["max_new_tokens"])

    per_layer, probes = {}, {}
    for layer in layers:
        s = load_samples(collection, layer)
        probe, rep = train_probe(s, layer, uniform, cfg, manifest.get("model_id", ""), progress)
        per_layer[layer] = {"val_mae_per_step": rep["val_mae"],
                            "val_accuracy": rep["val_accuracy"], "train_seconds": rep["seconds"]}
        probes[layer] = (probe, rep)
    best = min(per_layer, key=lambda layer: per_layer[layer]["val_mae_per_step"])
    probe, train_report = probes[best]
    s = load_samples(collection, best)
    _, val = split_by_request(s.request, cfg.val_fraction, cfg.seed)
    rows = np.flatnonzero(val)
    true, age = s.remaining[rows].astype(float), s.age[rows]

    with torch.no_grad():
        logits = probe(torch.from_numpy(s.x[rows]))
    geo_probe, _ = train_probe(s, best, geometric, cfg, manifest.get("model_id", ""), progress)
    with torch.no_grad():
        geo_step = expected_remaining(geo_probe(torch.from_numpy(s.x[rows])), geometric).numpy()
    preds = {"per_step": expected_remaining(logits, uniform).numpy(),
             "prefill_only": prefill_only_predictions(probe, s, rows),
             "refined": refined_predictions(probe, s, rows, max_new),
             "per_step_geometric": geo_step,
             "refined_geometric": refined_predictions(geo_probe, s, rows, max_new)}
    window_probes = {}
    if s.xw is not None:  # the windowed input: [last state, mean of the last few states]
        sw = s.windowed()
        for name, bins in (("", uniform), ("_geometric", geometric)):
            wprobe, _ = train_probe(sw, best, bins, cfg, manifest.get("model_id", ""), progress)
            window_probes[name] = wprobe
            with torch.no_grad():
                step = expected_remaining(wprobe(torch.from_numpy(sw.x[rows])), bins).numpy()
            preds["per_step_window" + name] = step
            preds["refined_window" + name] = refined_predictions(wprobe, sw, rows, max_new)

    report: dict[str, Any] = {
        "collection": str(collection), "model_id": manifest.get("model_id", ""),
        "layers": {str(k): v for k, v in per_layer.items()}, "best_layer": best,
        "train_config": asdict(cfg), "val_requests": int(len(np.unique(s.request[rows]))),
        "val_samples": int(len(rows)),
        "mae": {name: _mae(p, true) for name, p in preds.items()},
        "mae_by_age": {name: mae_by_age(p, true, age) for name, p in preds.items()},
        "geometric_bins": {"edges": list(geometric.edges)},
        "mean_predictor_mae": _mae(np.full(len(true), s.remaining[~val].mean()), true),
        "error_profile": error_profile(preds["refined"], true, age, uniform),
        "error_profile_geometric": error_profile(preds["refined_geometric"], true, age,
                                                 geometric),
        "error_correlation": error_correlation(preds["refined"], true, age, s.request[rows],
                                               uniform),
        "error_correlation_geometric": error_correlation(preds["refined_geometric"], true, age,
                                                         s.request[rows], geometric),
    }
    base = _prompt_only(collection, s, val, rows, uniform, cfg.seed, baseline, progress,
                        out / "prompt_only")
    report["prompt_only"] = base
    if "predictions" in base:
        p = np.asarray(base.pop("predictions"))
        report["mae"]["prompt_only"] = _mae(p, true)
        report["mae_by_age"]["prompt_only"] = mae_by_age(p, true, age)
    confusion = _confusion(logits, s.remaining[rows], uniform)
    report["confusion"] = confusion.tolist()
    probe.save(out / "probe")
    geo_probe.save(out / "probe_geometric")
    report["probe_checkpoints"] = {"uniform": str(out / "probe"),
                                   "geometric": str(out / "probe_geometric")}
    for name, wprobe in window_probes.items():
        key = "window" + name
        wprobe.save(out / f"probe_{key}")
        report["probe_checkpoints"][key] = str(out / f"probe_{key}")
    if window_probes:
        report["window"] = int(manifest["config"]["window"])
    report["better_bins"] = ("geometric" if report["mae"]["refined_geometric"]
                             < report["mae"]["refined"] else "uniform")
    report["training"] = {k: v for k, v in train_report.items() if k != "history"}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text(summary_markdown(report))
    _plots(report, confusion, out)
    return report


def evaluate_transfer(report_dir: str | pathlib.Path, collection: str | pathlib.Path,
                      out_path: str | pathlib.Path | None = None) -> dict[str, Any]:
    """The predictors an `evaluate` run trained (its probes at the best layer and its
    prompt-only predictor) applied unchanged to every request of another collection of the
    same model (e.g. out-of-distribution prompts): MAE overall and by age."""
    rdir = pathlib.Path(report_dir)
    report = json.loads((rdir / "report.json").read_text())
    layer = int(report["best_layer"])
    manifest = read_manifest(collection)
    if layer not in manifest["layers"]:
        raise ValueError(f"{collection}: holds layers {manifest['layers']}, not the best layer "
                         f"{layer} of {rdir}")
    s = load_samples(collection, layer)
    rows = np.arange(len(s.age))
    true, age = s.remaining.astype(float), s.age
    max_new = int(manifest["config"]["max_new_tokens"])
    preds: dict[str, np.ndarray] = {}
    sets = [("", "probe", s), ("_geometric", "probe_geometric", s)]
    if "window" in report.get("probe_checkpoints", {}):
        sw = s.windowed()  # ValueError if this collection stored no window
        sets += [("_window", "probe_window", sw),
                 ("_window_geometric", "probe_window_geometric", sw)]
    for name, folder, samples in sets:
        probe = Probe.load(rdir / folder)
        with torch.no_grad():
            logits = probe(torch.from_numpy(samples.x))
        preds["per_step" + name] = expected_remaining(logits, probe.bins).numpy()
        preds["refined" + name] = refined_predictions(probe, samples, rows, max_new)
        if not name:
            preds["prefill_only"] = prefill_only_predictions(probe, samples, rows)
    out: dict[str, Any] = {"collection": str(collection), "trained_in": str(rdir),
                           "layer": layer, "requests": int(len(np.unique(s.request))),
                           "samples": int(len(rows))}
    checkpoint = (report.get("prompt_only") or {}).get("checkpoint")
    if checkpoint:
        from trail.training.prompt_only import PromptOnlyPredictor

        predictor = PromptOnlyPredictor.load(checkpoint)
        prompts = read_collected_prompts(collection)
        ids = sorted({int(r) for r in s.request})
        total = dict(zip(ids, predictor.predict([prompts[i] for i in ids])))
        preds["prompt_only"] = np.array([max(total[int(r)] - a, 0.0)
                                         for r, a in zip(s.request, s.age)])
    else:
        out["prompt_only"] = {"skipped": "the evaluation ran without the prompt-only baseline"}
    out["mae"] = {name: _mae(pr, true) for name, pr in preds.items()}
    out["mae_by_age"] = {name: mae_by_age(pr, true, age) for name, pr in preds.items()}
    if out_path is not None:
        pathlib.Path(out_path).write_text(json.dumps(out, indent=1) + "\n")
    return out


def summary_markdown(report: dict[str, Any]) -> str:
    """The report's headline numbers as a short markdown page."""
    lines = [f"# Probe evaluation: {report.get('model_id') or report['collection']}", "",
             f"Best layer: **{report['best_layer']}** (lowest per-step validation MAE); "
             f"{report['val_requests']} held-out requests, {report['val_samples']} samples.", "",
             "| layer | per-step MAE | bin accuracy |", "|---:|---:|---:|"]
    for layer, row in sorted(report["layers"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {layer} | {row['val_mae_per_step']:.2f} | {row['val_accuracy']:.3f} |")
    lines += ["", "MAE of the remaining length (tokens) at the best layer, over all held-out "
              "decode samples:", "", "| predictor | MAE |", "|---|---:|"]
    for key, value in report["mae"].items():
        lines.append(f"| {LABELS.get(key, key)} | {value:.2f} |")
    lines.append(f"| mean of training labels | {report['mean_predictor_mae']:.2f} |")
    lines += ["", f"Uniform bins: {len(report['error_profile']['bin_edges']) - 1} over 0.."
              f"{report['error_profile']['bin_edges'][-1]:g} tokens; geometric bins: edges "
              f"{', '.join(f'{e:g}' for e in report['geometric_bins']['edges'])}. Better for the "
              f"refined probe here: **{report['better_bins']}**."]
    corr = report.get("error_correlation")
    if corr and corr["lags"]:
        lags = ", ".join(f"{x['lag_tokens'][0]}-{x['lag_tokens'][1]}: {x['correlation']:.2f}"
                         for x in corr["lags"])
        geo = report.get("error_correlation_geometric", {}).get("corr_tokens", math.nan)
        lines += ["", f"Error correlation along a request (refined probe, normal scores of the "
                  f"residual by age difference in tokens): {lags}; fitted correlation length "
                  f"{corr['corr_tokens']:.1f} tokens (geometric bins: {geo:.1f}), the "
                  f"simulator's `--corr-tokens`."]
    if "skipped" in report["prompt_only"]:
        lines += ["", f"Prompt-only baseline skipped: {report['prompt_only']['skipped']}."]
    lines += ["", "MAE by age (tokens generated so far):", "",
              "| predictor | " + " | ".join(next(iter(report["mae_by_age"].values()))) + " |",
              "|---|" + "---:|" * len(next(iter(report["mae_by_age"].values())))]
    for key, series in report["mae_by_age"].items():
        lines.append(f"| {LABELS.get(key, key)} | " +
                     " | ".join(f"{v:.1f}" for v in series.values()) + " |")
    return "\n".join(lines) + "\n"


def _prompt_only(collection: str | pathlib.Path, s: Samples, val: np.ndarray, rows: np.ndarray,
                 bins: Bins, seed: int, wanted: bool | None, progress: bool,
                 save_to: pathlib.Path) -> dict[str, Any]:
    """The MiniLM prompt-only baseline on the same split (skipped, with the reason, if absent);
    the fitted predictor is saved to `save_to` (what a serving loop uses at arrival)."""
    if wanted is False:
        return {"skipped": "disabled"}
    try:
        from trail.training.prompt_only import PromptOnlyPredictor
        predictor = PromptOnlyPredictor()
    except ImportError as exc:
        if wanted:
            raise
        return {"skipped": f"not installed ({exc})"}
    prompts = read_collected_prompts(collection)
    totals = {int(r): int(t) for r, t in zip(s.request, s.total)}
    train_ids = sorted({int(r) for r in s.request[~val]})
    val_ids = sorted({int(r) for r in s.request[val]})
    fit = predictor.fit([prompts[i] for i in train_ids], [totals[i] for i in train_ids], bins,
                        seed=seed, progress=progress)
    predicted_total = dict(zip(val_ids, predictor.predict([prompts[i] for i in val_ids])))
    pred = np.array([max(predicted_total[int(r)] - a, 0.0)
                     for r, a in zip(s.request[rows], s.age[rows])])
    total_mae = _mae(np.array([predicted_total[i] for i in val_ids]),
                     np.array([totals[i] for i in val_ids], float))
    predictor.save(save_to)
    return {"encoder": "all-MiniLM-L6-v2 (frozen) + classifier over total-length bins",
            "val_mae_total_length": total_mae, "fit": fit, "predictions": pred.tolist(),
            "checkpoint": str(save_to)}


def _confusion(logits: torch.Tensor, remaining: np.ndarray, bins: Bins) -> np.ndarray:
    """Row-normalised [true bin, predicted bin] counts of per-step argmax predictions."""
    true = bins.index(torch.from_numpy(remaining)).numpy()
    guess = logits.argmax(dim=1).numpy()
    m = np.zeros((bins.k, bins.k))
    np.add.at(m, (true, guess), 1)
    return m / np.maximum(m.sum(axis=1, keepdims=True), 1)


def _plots(report: dict[str, Any], confusion: np.ndarray, out: pathlib.Path) -> None:
    """mae_by_layer.png, mae_by_age.png and confusion.png from a report."""
    from matplotlib.ticker import MaxNLocator

    from trail.sim.plots import finish, pyplot, series_style

    plt = pyplot()
    model = report.get("model_id") or pathlib.Path(report["collection"]).name
    best = report["best_layer"]

    layers = sorted(report["layers"], key=int)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot([int(k) for k in layers], [report["layers"][k]["val_mae_per_step"] for k in layers],
            label="probe, per step (uniform bins)", **series_style("per_step", 0, STYLES))
    ax.plot([int(best)], [report["layers"][str(best)]["val_mae_per_step"]], linestyle="none",
            marker="*", markersize=16, color="C3", label=f"best: layer {best} (chosen)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="decoder layer", ylabel="validation MAE (tokens)")
    finish(fig, ax, str(out / "mae_by_layer.png"), f"Probe MAE by layer — {model}")

    fig, ax = plt.subplots(figsize=(9, 4.2))
    for k, (name, series) in enumerate(report["mae_by_age"].items()):
        ax.plot(list(series), list(series.values()),
                label=f"{LABELS.get(name, name)}: {report['mae'][name]:.1f} overall",
                **series_style(name, k, STYLES))
    ax.set(xlabel="tokens generated so far", ylabel="MAE of remaining length (tokens)",
           ylim=(0, None))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0,
              title=f"predictor (layer {best}): MAE", title_fontsize=8)
    finish(fig, ax, str(out / "mae_by_age.png"),
           f"Remaining-length error by age — {model}, {report['val_requests']} held-out "
           f"requests", legend=False)

    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(confusion, cmap="viridis", vmin=0, vmax=1)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="predicted bin", ylabel="true bin")
    fig.colorbar(im, ax=ax, label="fraction of the true bin's samples")
    finish(fig, ax, str(out / "confusion.png"),
           f"Bin confusion, layer {best}, uniform bins (row-normalised)", legend=False,
           grid=False)
