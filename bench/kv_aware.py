"""KV-aware filling on and off, with binding and with ample KV memory (simulation).

`SchedulerConfig.kv_aware` takes a request only while the batch's *predicted* KV (tokens +
predicted remaining of every running request, the kept KV, the newcomer's predicted total)
fits, so predicted growth never forces an eviction (docs/scheduler.md). This runs the Azure
conversation trace at load 0.9 on the A100 preset, 48 slots, with kv_utilization 0.28
(binding: memory, not slots, caps the batch; bench/sim_regimes.py) and 0.9 (ample), for
FCFS, SJF-work, TRAIL and TRAIL+ with kv_aware off and on, and records mean / p99 latency,
TTFT, preemptions and KV drops.

    python bench/kv_aware.py            # ~2 min on one core
    python bench/kv_aware.py --smoke    # seconds; checks the script only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
from dataclasses import replace
from typing import Any

from trail.policies import copy_config
from trail.provenance import provenance
from trail.progress import progress_bar
from trail.sim.compare import SimSettings, at_load, setup, summary_row
from trail.sim.cost_model import CostModel
from trail.sim.simulator import simulate
from trail.sim.traces import load_trace


ROOT = pathlib.Path(__file__).resolve().parent.parent
POLICIES = ("FCFS", "SJF-work", "TRAIL", "TRAIL+")


def run_grid(trace: Any, preset: str, load: float, utilizations: list[float],
             progress: bool = True) -> list[dict[str, Any]]:
    """Every (utilization, policy, kv_aware) cell; FCFS only without kv_aware."""
    cells = [(u, p, kv) for u in utilizations for p in POLICIES for kv in (False, True)
             if not (p == "FCFS" and kv)]
    bar = progress_bar(len(cells), "simulating kv_aware on/off", "run", progress)
    rows = []
    scaled_at: dict[float, Any] = {}
    for u, name, kv in cells:
        base = SimSettings(cost=CostModel.preset(preset), load=load, kv_utilization=u)
        if u not in scaled_at:
            scaled_at[u] = at_load(trace, base)
        scaled, cap = scaled_at[u]
        ps = setup(name, replace(base, kv_aware=kv))
        cfg = copy_config(ps.config, kv_aware=kv)  # FCFS's set-up has it off; stated here
        r = simulate(scaled.arrival_s, scaled.prompt_tokens, scaled.output_tokens, cfg,
                     base.cost, ps.predictor, predict_every=base.predict_every, seed=base.seed)
        rows.append({"kv_utilization": u, "kv_tokens": base.cost.kv_capacity_tokens(u),
                     "capacity_req_s": cap, "policy": name, "kv_aware": kv,
                     **summary_row(r), "drops": int(r.stats.get("drops", 0))})
        bar.update(1)
    bar.close()
    return rows


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The recorded table."""
    lines = [f"# KV-aware filling on and off ({meta['date']})", "",
             f"`python bench/kv_aware.py`: {meta['trace']} ({meta['requests']} requests) at "
             f"load {meta['load']} of each setting's FCFS capacity, {meta['preset']}, 48 slots, "
             "TRAIL_DEFAULTS otherwise. kv_aware off is the scheduler before KV-aware filling "
             "(KEEP mode: kept KV is dropped and recomputed under memory pressure).", "",
             f"- machine: {meta['machine']}",
             f"- python {meta['python']}, numpy {meta['numpy']}, commit {meta['commit']}", "",
             "| KV | policy | kv_aware | mean s | p99 s | mean TTFT s | preemptions | KV drops "
             "| mean: on / off |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    at = {(r["kv_utilization"], r["policy"], r["kv_aware"]): r for r in rows}
    for r in rows:
        off = at.get((r["kv_utilization"], r["policy"], False))
        ratio = (f"{r['latency_s_mean'] / off['latency_s_mean']:.3f}"
                 if r["kv_aware"] and off else "")
        lines.append(f"| {r['kv_utilization']:g} ({r['kv_tokens']:,} tokens) | {r['policy']} | "
                     f"{'on' if r['kv_aware'] else 'off'} | {r['latency_s_mean']:.2f} | "
                     f"{r['latency_s_p99']:.1f} | {r['ttft_s_mean']:.2f} | {r['preemptions']} "
                     f"| {r['drops']} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", default="azure-conv", help="trace name or CSV")
    ap.add_argument("--preset", default="llama3-8b-a100-80gb", help="cost-model preset")
    ap.add_argument("--load", type=float, default=0.9, help="load of the FCFS capacity")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results",
                    help="where the results go")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    ap.add_argument("--smoke", action="store_true", help="tiny run; checks the script only")
    args = ap.parse_args()
    trace = load_trace(args.trace)
    if args.smoke:
        trace = trace.head(400)
    rows = run_grid(trace, args.preset, args.load, [0.28, 0.9], progress=not args.smoke)
    meta = provenance(date=args.label or dt.datetime.now(dt.timezone.utc).date().isoformat(),
                      trace=args.trace, requests=len(trace), preset=args.preset,
                      load=args.load)
    md = markdown(meta, rows)
    print(md)
    if args.smoke:
        print("smoke run done (nothing written)")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kv_aware_{meta['date']}"
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    stem.with_suffix(".md").write_text(md)
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
