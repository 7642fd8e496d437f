"""Several runs of bench/vllm_serving.py on one workload, side by side: each policy's mean
latency and TTFT against FCFS of the same run, then the median ratio over runs.

One run of a loaded CPU benchmark is not enough: FCFS alone varies between runs as much as
the policies differ. Runs whose records hold per-request output lengths (`tokens`) also get
the mean latency of each quartile of output length and the decode seconds per token.

    python bench/vllm_serving_runs.py RUN1.json RUN2.json ... --out bench/results/NAME
"""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

import numpy as np


def run_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    """Per policy of one run: mean latency/TTFT, ratios to the run's FCFS, quartiles."""
    raw = {r["policy"]: r for r in json.loads(path.read_text())["raw"]}
    base = raw["fcfs"]
    rows = []
    for name, r in raw.items():
        lat, ttft = np.asarray(r["latency"]), np.asarray(r["ttft"])
        row = {"run": path.name, "policy": name, "order": list(raw).index(name) + 1,
               "latency_s_mean": float(lat.mean()), "ttft_s_mean": float(ttft.mean()),
               "latency_vs_fcfs": float(lat.mean() / np.mean(base["latency"])),
               "ttft_vs_fcfs": float(ttft.mean() / np.mean(base["ttft"])),
               "tokens_per_step": r["output_tokens"] / r["steps"],
               "rank_preemptions": int(r.get("trail_stats", {}).get("rank_preemptions", 0))}
        if "tokens" in r and len(ttft) == len(lat):
            tok = np.asarray(r["tokens"])
            if r["tokens"] != base.get("tokens"):
                raise ValueError(f"{path}: {name}'s outputs differ from fcfs's")
            q = np.digitize(tok, np.quantile(tok, [0.25, 0.5, 0.75]))
            row["latency_s_by_length_quartile"] = [float(lat[q == k].mean()) for k in range(4)]
            row["decode_s_per_token"] = float(np.mean((lat - ttft) / np.maximum(tok - 1, 1)))
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=pathlib.Path, help="vllm_serving result JSONs")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="output stem")
    ap.add_argument("--note", default="", help="a line for the record (how the runs differ)")
    args = ap.parse_args()
    rows = [row for path in args.runs for row in run_rows(path)]
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    median = {p: {k: float(np.median([r[k] for r in rows if r["policy"] == p]))
                  for k in ("latency_vs_fcfs", "ttft_vs_fcfs", "latency_s_mean")}
              for p in policies}
    first = json.loads(args.runs[0].read_text())["meta"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"meta": {k: first[k] for k in ("machine", "vllm", "torch", "commit", "workload")},
         "runs": [p.name for p in args.runs], "rows": rows, "median": median,
         "note": args.note}, indent=1))
    lines = [f"# vLLM serving, {len(args.runs)} runs of one workload", "",
             f"- machine: {first['machine']}; vllm {first['vllm']}, torch {first['torch']}",
             f"- workload: {json.dumps(first['workload'])}", "",
             "| run | policy | served | mean latency (s) | vs FCFS | mean TTFT (s) | vs FCFS "
             "| latency by output quartile (s) | decode s/token | tokens/step | rank preemptions |",
             "|" + "---|" * 11]
    for r in rows:
        quart = " / ".join(f"{v:.2f}" for v in r.get("latency_s_by_length_quartile", []))
        lines.append(f"| {r['run']} | {r['policy']} | {r['order']} | {r['latency_s_mean']:.2f} | "
                     f"{r['latency_vs_fcfs']:.2f}× | {r['ttft_s_mean']:.2f} | "
                     f"{r['ttft_vs_fcfs']:.2f}× | {quart or '—'} | "
                     f"{r.get('decode_s_per_token', float('nan')):.4f} | "
                     f"{r['tokens_per_step']:.2f} | {r['rank_preemptions']} |")
    lines += ["", "Median over runs: " + "; ".join(
        f"{p} {m['latency_vs_fcfs']:.2f}× FCFS latency, {m['ttft_vs_fcfs']:.2f}× TTFT"
        for p, m in median.items())] + (["", args.note] if args.note else [])
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, p in enumerate(policies):
        ys = [r["latency_vs_fcfs"] for r in rows if r["policy"] == p]
        ax.scatter([i] * len(ys), ys, label=p)
        ax.hlines(median[p]["latency_vs_fcfs"], i - 0.2, i + 0.2)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xticks(range(len(policies)), policies)
    ax.set_ylabel("mean latency / FCFS of the same run")
    ax.set_title(f"vLLM on CPU, {len(args.runs)} runs (bar: median)")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
