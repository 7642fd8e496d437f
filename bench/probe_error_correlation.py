"""Measure how a request's probe error persists across its steps, from a `trail demo` run.

For each RUN directory (the output of `trail demo --out RUN`: probe_data/ and probe_eval/),
loads the probes `trail eval-probe` saved (no training), recomputes the refined predictions
on the same held-out requests and reports `trail.training.evaluate.error_correlation` for the
uniform and geometric bins: the lag correlations of the error's normal scores and the fitted
correlation length L, the simulator's `corr_tokens` (trail.sim.predictors.DEFAULT_CORR_TOKENS).
Newer `trail eval-probe` reports carry the same numbers as `error_correlation`.

    python bench/probe_error_correlation.py runs/demo [RUN ...] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
from typing import Any

import numpy as np
from trail.provenance import commit, describe
from trail.training.collect import load_samples, read_manifest
from trail.training.evaluate import error_correlation, refined_predictions
from trail.probe.probe import Probe
from trail.training.train import split_by_request



def measure(run: pathlib.Path) -> dict[str, Any]:
    """error_correlation of the run's refined probes (uniform and geometric bins)."""
    report = json.loads((run / "probe_eval" / "report.json").read_text())
    data = run / "probe_data"
    max_new = int(read_manifest(data)["config"]["max_new_tokens"])
    s = load_samples(data, report["best_layer"])
    cfg = report["train_config"]
    _, val = split_by_request(s.request, cfg["val_fraction"], cfg["seed"])
    rows = np.flatnonzero(val)
    true, age = s.remaining[rows].astype(float), s.age[rows]
    out: dict[str, Any] = {"run": run.name, "model_id": report.get("model_id", ""),
                           "layer": report["best_layer"], "val_requests":
                           int(len(np.unique(s.request[rows]))), "val_samples": int(len(rows))}
    for name, folder in (("uniform", "probe"), ("geometric", "probe_geometric")):
        probe = Probe.load(run / "probe_eval" / folder)
        pred = refined_predictions(probe, s, rows, max_new)
        out[name] = {"edges": list(probe.bins.edges), "mae": float(np.abs(pred - true).mean()),
                     **error_correlation(pred, true, age, s.request[rows], probe.bins)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=pathlib.Path, nargs="+", help="`trail demo --out` directories")
    ap.add_argument("--out", type=pathlib.Path, default=None,
                    help="write probe_error_correlation_<date>.json here")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    args = ap.parse_args()
    result = {"date": args.label or dt.datetime.now(dt.timezone.utc).date().isoformat(),
              "machine": describe(), "commit": commit(),
              "runs": [measure(r) for r in args.runs]}
    for r in result["runs"]:
        for name in ("uniform", "geometric"):
            m = r[name]
            lags = ", ".join(f"{x['lag_tokens'][0]}-{x['lag_tokens'][1]}: "
                             f"{x['correlation']:.2f}" for x in m["lags"])
            print(f"{r['run']} ({r['model_id']}, layer {r['layer']}), {name} bins: refined MAE "
                  f"{m['mae']:.1f}; lag correlations {lags}; L = {m['corr_tokens']:.1f} tokens")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"probe_error_correlation_{result['date']}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
