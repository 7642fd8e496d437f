"""Every demo policy, and TRAIL's settings swept, on one prepared demo workload.

`trail demo` serves one configuration per policy. This prepares the demo once (model,
probe, prompt-only predictor, arrivals: as `trail demo`) and serves the same arrivals under
FCFS, SJF, SJF-work, TRAIL-paper, TRAIL, TRAIL+ and MLFQ, plus SJF-work, TRAIL and TRAIL+
for every aging rate α of --alphas and every rank of --ranks (mean, Gittins), so the
settings TRAIL recommends come from one run that holds all of them. Virtual clock, as the
demo: the table does not depend on the machine's load.

Writes demo_policies_<date>.{json,md} and a mean-vs-p99 plot (one curve per policy as α
varies) into bench/results/.

    python bench/demo_policies.py                   # ~10 min on 2 cores (model cached)
    python bench/demo_policies.py --quick --alphas 0,100 --ranks mean   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import tempfile
import time
from dataclasses import asdict, replace
from typing import Any

from trail.demo.end_to_end import (DemoConfig, POLICIES, policy_settings, prepare,
                                   probe_mae, serve_policy)
from trail.metrics import summary_row
from trail.provenance import commit, describe


ROOT = pathlib.Path(__file__).resolve().parent.parent
SWEPT = ("SJF-work", "TRAIL", "TRAIL+")


def floats(text: str) -> list[float]:
    """Comma-separated numbers."""
    return [float(x) for x in text.split(",") if x.strip()]


def alphas(text: str) -> list[float | str]:
    """Comma-separated aging rates: numbers or 'auto'."""
    return [x.strip() if x.strip() == "auto" else float(x) for x in text.split(",")
            if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results",
                    help="where the results go")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    ap.add_argument("--quick", action="store_true", help="DemoConfig.quick(): a smoke run")
    ap.add_argument("--alphas", type=alphas, default=["auto", 0.0, 10.0, 30.0, 100.0, 300.0],
                    help="aging rates α (tokens/s, or auto) for SJF-work, TRAIL and TRAIL+")
    ap.add_argument("--ranks", default="mean,gittins",
                    help="TRAIL's ranks to try: mean, gittins or both")
    ap.add_argument("--margins", type=floats, default=[0.0],
                    help="preemption margins (tokens) for TRAIL and TRAIL+")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    ranks = [r for r in args.ranks.split(",") if r]
    base = DemoConfig.quick() if args.quick else DemoConfig()
    work = pathlib.Path(tempfile.mkdtemp(prefix="trail-demo-policies-"))
    t0 = time.perf_counter()
    w = prepare(base, work, progress=not args.quiet)
    rows: list[dict[str, Any]] = []

    def serve(name: str, cfg: DemoConfig, variant: str) -> None:
        t = time.perf_counter()
        report = serve_policy(w, name, cfg, progress=not args.quiet)
        row = {"policy": name, "variant": variant, **summary_row(report.aggregates),
               "settings": policy_settings(name, cfg, report),
               "wall_s": round(time.perf_counter() - t, 1)}
        rows.append(row)
        print(f"{name:11s} {variant:28s} mean {row['latency_s_mean']:.3f}  p99 "
              f"{row['latency_s_p99']:.3f}  TTFT {row['ttft_s_mean']:.3f}  preempt "
              f"{row['preemptions']}", flush=True)

    for name in POLICIES:  # the demo's own table, DemoConfig's defaults
        serve(name, base, "default")
    for rank in ranks:
        for alpha in args.alphas:
            for margin in args.margins:
                cfg = replace(base, rank=rank, aging_rate=alpha, preempt_margin=margin)
                for name in SWEPT:
                    if name == "SJF-work" and margin != args.margins[0]:
                        continue  # SJF does not preempt: the margin changes nothing
                    serve(name, cfg, f"rank={rank} α={alpha} margin={margin:g}")

    label = args.label or dt.datetime.now(dt.timezone.utc).date().isoformat()
    stem = f"demo_policies{'_quick' if args.quick else ''}_{label}"
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": describe(), "commit": commit(), "date": label,
              "config": asdict(base), "probe_mae": probe_mae(w.probe_report),
              "prompt_only_mae": w.probe_report["mae"]["prompt_only"],
              "workload": {"requests": len(w.ids), "load": base.load,
                           "capacity_req_s": w.capacity,
                           "mean_output_tokens": float(w.true_len.mean())},
              "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    fcfs = next(r for r in rows if r["policy"] == "FCFS")
    lines = [f"# Demo policies and TRAIL's settings ({label})", "",
             f"- machine: {result['machine']}; commit {result['commit']}; "
             f"{result['seconds']:.0f} s",
             f"- workload: {len(w.ids)} requests at load {base.load} of the saturated FCFS "
             f"throughput ({w.capacity:.1f} req/s), max_running {base.max_running}, virtual "
             f"clock; probe MAE {result['probe_mae']:.1f} vs prompt-only "
             f"{result['prompt_only_mae']:.1f} tokens", "",
             "| policy | variant | mean s | p99 s | mean TTFT s | mean/FCFS | p99/FCFS | "
             "TTFT/FCFS | preemptions | β used |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        beta = r["settings"]["prefill_weight_used"]
        lines.append(f"| {r['policy']} | {r['variant']} | {r['latency_s_mean']:.3f} | "
                     f"{r['latency_s_p99']:.3f} | {r['ttft_s_mean']:.3f} | "
                     f"{r['latency_s_mean'] / fcfs['latency_s_mean']:.3f} | "
                     f"{r['latency_s_p99'] / fcfs['latency_s_p99']:.3f} | "
                     f"{r['ttft_s_mean'] / fcfs['ttft_s_mean']:.3f} | {r['preemptions']} | "
                     f"{'' if beta is None else f'{beta:.3f}'} |")
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out / f"{stem}_frontier.png", ranks)
    print(f"wrote {args.out / stem}.{{json,md}} and _frontier.png")


def plot(rows: list[dict[str, Any]], path: pathlib.Path, ranks: list[str]) -> None:
    """Mean against p99 latency as α varies, one curve per (policy, rank); defaults as dots."""
    from trail.sim.plots import finish, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    for k, (name, rank) in enumerate((n, r) for n in SWEPT for r in ranks):
        pts = [(r["latency_s_p99"], r["latency_s_mean"], r["settings"]["aging_rate"])
               for r in rows if r["policy"] == name and r["variant"] != "default"
               and r["settings"]["rank"] == rank and r["settings"]["preempt_margin"] == 0]
        if not pts:
            continue
        pts.sort(key=lambda p: p[2])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{k}",
                label=f"{name} ({rank}) as α grows")
        for x, y, a in pts:
            ax.annotate(f"{a:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for r in rows:
        if r["variant"] == "default" and r["policy"] in ("FCFS", "SJF", "TRAIL-paper", "MLFQ"):
            ax.plot(r["latency_s_p99"], r["latency_s_mean"], marker="s", color="k")
            ax.annotate(r["policy"], (r["latency_s_p99"], r["latency_s_mean"]), fontsize=8,
                        xytext=(4, -10), textcoords="offset points")
    ax.set(xlabel="p99 latency (s)", ylabel="mean latency (s)")
    finish(fig, ax, str(path), "demo: mean vs p99 latency as the aging rate α varies",
           footnote="lower left is better; squares: the fixed policies; labels: α (tokens/s)")


if __name__ == "__main__":
    main()
