"""Where the probe pays: a regime map of TRAIL against SJF-work on the simulator.

SJF-work is TRAIL's rule (work-aware key, α, rank) without the probe: one prompt-only
prediction at arrival, no preemption. TRAIL / SJF-work is therefore what the refreshed probe
predictions (and the preemption they allow) add. TRAIL+ (true lengths: the most a perfect
probe could add) and TRAIL-paper (the paper's rule on the same probe) are run beside them.
TRAIL is `SimSettings`' defaults (TRAIL_DEFAULTS in trail.sim.compare), whatever they are
when this runs.

Base point: azure-conv, the A100 preset, 48 slots (`max_running`), ample KV, load 0.9, the
default simulated probe (MAE 33.9 tokens at prefill). Around it, one axis at a time, every
policy of `--policies`:

- slots: 16, 48, 128 (`--slots`);
- KV: ample (SimSettings' default `kv_utilization` 0.9) or binding (`--kv-binding` 0.28);
- trace: azure-conv, azure-code, alpaca-prompts (`--traces`; below);
- load: 0.9, 1.05 (`--loads`; 1.05 overloads the finite trace: the queue grows for the
  trace's duration and drains after it);
- prediction quality: the probe's MAE × 1 and × 1.5 (`--probe-mae-scales`; bench/sim_runs.py's
  `probe_mae_scale` override: the embedding probe's MAE at prefill, hence its error at every
  age, × f; the prompt-only predictions of SJF-work and of waiting requests keep theirs).

And the full product trace × slots × load (ample KV, default probe) for TRAIL and SJF-work
(`--product-policies`), drawn as a heat map of TRAIL / SJF-work mean latency per trace.

KV "binding". `CostModel.kv_capacity_tokens(u)` = (GPU memory × u − params × dtype bytes) /
KV bytes per token; Llama-3-8B in bf16 holds 131,072 B of KV per token, so on an 80 GB GPU
u = 0.9 gives 426,788 tokens, ~6× what 48 running azure-conv requests hold (1,155 prompt +
211 output tokens on average: ~66k): memory never binds, the slots do. u = 0.28 gives 48,370
tokens, ~35 average requests: memory, not the 48 slots, caps the batch. Measured with this
repository's simulator (A100 preset, 48 slots, load 0.9): on azure-conv's first 400 requests
(the --smoke size) FCFS preempts and drops-then-recomputes 91 requests' KV at u = 0.28 (none
at 0.9), SJF-work 90, TRAIL 105, and the saturated FCFS capacity falls from 5.47 to 4.73
req/s; on the first 3,000, FCFS drops 328 and capacity falls from 5.06 to 4.16 req/s. u = 0.30
(60,577 tokens) binds only mildly (no FCFS drop on the first 400 requests, 179 on 3,000), so
0.28 is the binding value. The tables record every run's KV drops. Preemption mode: the
simulator leaves the scheduler's default (`PreemptMode.KEEP`, no swap space; SimSettings has
no mode): a preempted request keeps its KV on the GPU until memory runs short, then it is
dropped and recomputed (a prefill of its prompt and generated tokens). Load is relative to
the FCFS capacity at the same KV, so a binding cell is as loaded as an ample one.

alpaca-prompts: the short-prompt mix. azure-conv's arrivals and output lengths, row for row,
with each prompt length drawn (seed 0, with replacement) from the 5,000 Alpaca prompts in
`--data` (alpaca/alpaca_data_subset5000.json: instruction, plus a newline and the input when
there is one, as bench/prompt_only_real.py builds them) at `--tokens-per-word` 1.3 tokens
per whitespace word (no tokenizer is available offline; ~1.3 is English text under Llama-3's
tokenizer), at least 1: median ~14 tokens instead of azure-conv's 1,020. Without that file it
falls back to a lognormal with median 60 tokens and σ 0.8 (the results say which was used).

The verdicts ("where the probe pays") classify every cell that has both TRAIL and SJF-work:
pays (TRAIL ≤ 0.90 × SJF-work's mean latency), helps a little (0.90-0.99), adds nothing
(within 1%), worse (by more than 1%), on the mean over `--seeds` (default 0, 1, 2: the
predictors' error draws and the capacity's resample) of each policy's mean latency; the
tables give each cell's range over the seeds too.

Run time (one core of a busy 2-core machine; printed first; `--estimate` prints only that):
azure-conv at 48 slots takes ~3 s for SJF-work or TRAIL+ and ~11 s for TRAIL or TRAIL-paper,
~2.2× that at 16 slots and ~0.5× at 128; azure-code ~5× less. The default grid is 54
distinct simulations per seed, 162 for the 3 seeds, estimated at ~19 min:

    python bench/sim_regimes.py                # ~19 min; writes bench/results/sim_regimes_*
    python bench/sim_regimes.py --seeds 0      # ~6 min, one seed
    python bench/sim_regimes.py --estimate     # the estimate only
    python bench/sim_regimes.py --smoke        # ~20 s; 400 requests, 2 seeds, checks the script
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import pathlib
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from trail.provenance import provenance
from trail.progress import progress_bar
from trail.policies import canonical_name
from trail.sim.compare import SimSettings, describe_short
from trail.sim.compare import describe as policy_settings
from trail.sim.cost_model import CostModel
from trail.sim.plots import plot_ratio_map, plot_regime_axes
from trail.sim.traces import Trace, load_trace

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from sim_runs import (  # noqa: E402
    Runner,
    estimate_s,
    fmt,
    plain_settings,
    policy_setup,
    ratio,
    write_json,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALPACA = "alpaca-prompts"
ALPACA_FILE = "alpaca/alpaca_data_subset5000.json"
# The data set folder (its README names the files): --data, or $TRAIL_SHARED_DATA.
DEFAULT_DATA = os.environ.get("TRAIL_SHARED_DATA", "")
REFERENCE = "SJF-work"
PAYS, NOTHING = 0.90, 0.01  # TRAIL ≤ 0.90 × SJF-work: pays; |ratio − 1| ≤ 1%: adds nothing
AXES = ("slots", "kv", "trace", "load", "probe")


@dataclass(frozen=True)
class Cell:
    """One point of the map: everything a run needs besides the policy."""

    trace: str
    slots: int
    kv: str        # "ample" or "binding"
    load: float
    mae_scale: float

    def differs(self, base: "Cell") -> str:
        """The coordinates that are not the base point's, in words."""
        parts = []
        if self.trace != base.trace:
            parts.append(self.trace)
        if self.slots != base.slots:
            parts.append(f"{self.slots} slots")
        if self.kv != base.kv:
            parts.append(f"{self.kv} KV")
        if self.load != base.load:
            parts.append(f"load {self.load:g}")
        if self.mae_scale != base.mae_scale:
            parts.append(f"probe MAE × {self.mae_scale:g}")
        return ", ".join(parts) or "the base point"


def words(text: str) -> int:
    return len(text.split())


def alpaca_prompts_trace(base: Trace, data: pathlib.Path, tokens_per_word: float,
                         seed: int = 0) -> tuple[Trace, str]:
    """`base`'s arrivals and outputs with short prompt lengths (see the module docstring)."""
    rng = np.random.default_rng(seed)
    path = data / ALPACA_FILE
    if path.is_file():
        rows = json.loads(path.read_text())
        texts = [r["instruction"] + ("\n" + r["input"] if r.get("input") else "") for r in rows]
        pool = np.maximum(1, np.round(tokens_per_word * np.array([words(t) for t in texts])))
        prompts = rng.choice(pool.astype(np.int64), size=len(base))
        how = (f"{base.name}'s arrivals and output lengths with prompt lengths drawn from the "
               f"{len(rows)} Alpaca prompts of {ALPACA_FILE} at {tokens_per_word:g} tokens per "
               f"word")
    else:
        prompts = np.maximum(1, np.round(60 * np.exp(0.8 * rng.standard_normal(len(base)))))
        how = (f"{base.name}'s arrivals and output lengths with lognormal prompt lengths "
               f"(median 60 tokens, σ 0.8; {ALPACA_FILE} was not found under --data)")
    trace = Trace(base.arrival_s, prompts.astype(np.int64), base.output_tokens, name=ALPACA)
    return trace, how + f" (median prompt {float(np.median(trace.prompt_tokens)):g} tokens)"


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# ---------------------------------------------------------------------------- the grid


def grid(base: Cell, opts: dict[str, Any]) -> tuple[dict[str, list[Cell]], list[Cell]]:
    """The cells of each axis (base point included, in axis order) and of the product."""
    axes = {"slots": [replace(base, slots=s) for s in opts["slots"]],
            "kv": [replace(base, kv=k) for k in ("ample", "binding")],
            "trace": [replace(base, trace=t) for t in opts["traces"]],
            "load": [replace(base, load=x) for x in opts["loads"]],
            "probe": [replace(base, mae_scale=f) for f in opts["mae_scales"]]}
    product = [replace(base, trace=t, slots=s, load=x) for t in opts["traces"]
               for s in opts["slots"] for x in opts["loads"]]
    return axes, product


def jobs(axes: dict[str, list[Cell]], product: list[Cell], opts: dict[str, Any]
         ) -> list[tuple[Cell, str]]:
    """Distinct (cell, policy) runs: every axis cell × --policies, every product cell ×
    --product-policies."""
    out: dict[tuple[Cell, str], None] = {}
    for cells in axes.values():
        for c in cells:
            for p in opts["policies"]:
                out[(c, p)] = None
    for c in product:
        for p in opts["product_policies"]:
            out[(c, p)] = None
    return list(out)


def settings_of(cell: Cell, opts: dict[str, Any], seed: int = 0) -> SimSettings:
    """SimSettings of a cell: TRAIL's rule from SimSettings' defaults."""
    s = SimSettings(cost=opts["cost"], load=cell.load, max_running=cell.slots, seed=seed)
    return s if cell.kv == "ample" else replace(s, kv_utilization=opts["kv_binding"])


def estimate(todo: list[tuple[Cell, str]], traces: dict[str, Trace], opts: dict[str, Any]
             ) -> tuple[int, float]:
    """Distinct simulations (a run two cells share runs once: SJF-work does not see the
    probe's MAE) and their rough seconds, capacity runs included."""
    distinct = {Runner.key(traces[c.trace], p, settings_of(c, opts, seed),
                           probe_mae_scale=c.mae_scale): (c, p)
                for c, p in todo for seed in opts["seeds"]}
    seconds = sum(estimate_s(p, c.trace, len(traces[c.trace]), c.slots)
                  for c, p in distinct.values())
    capacities = {(c.trace, c.slots, c.kv, c.load, seed) for c, _ in todo
                  for seed in opts["seeds"]}
    return len(distinct), seconds + 0.4 * len(capacities)


# ---------------------------------------------------------------------------- verdicts


def classify(r: float) -> str:
    if not math.isfinite(r):
        return "not measured"
    if r <= PAYS:
        return "pays"
    if abs(r - 1.0) <= NOTHING:
        return "adds nothing"
    if r > 1.0 + NOTHING:
        return "worse"
    return "helps a little"


def cell_ratios(results: dict[tuple[Cell, str], dict[str, Any]], cell: Cell
                ) -> dict[str, Any]:
    ref = results.get((cell, REFERENCE))
    t = results.get((cell, "TRAIL"))
    out = {"mean": ratio(t, ref, "latency_s_mean"), "p99": ratio(t, ref, "latency_s_p99"),
           "ttft": ratio(t, ref, "ttft_s_mean")}
    for name in ("TRAIL+", "TRAIL-paper"):
        out[name] = ratio(results.get((cell, name)), ref, "latency_s_mean")
    out["class"] = classify(out["mean"])
    seeds = [ratio(a, b, "latency_s_mean") for a, b in
             zip((t or {}).get("seeds", []), (ref or {}).get("seeds", []))]
    out["mean_by_seed"] = [r for r in seeds if math.isfinite(r)]
    return out


def seed_mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The seeds' runs of one cell and policy: every number averaged, the runs kept under
    "seeds" (ratios are of these averages; `cell_ratios` also gives them per seed)."""
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and k != "seed"]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    out["seeds"] = rows
    return out


def spread(r: dict[str, Any]) -> str:
    """The per-seed TRAIL / SJF-work mean ratios as a range (one seed: –)."""
    s = r["mean_by_seed"]
    return f"{min(s):.3f}-{max(s):.3f}" if len(s) > 1 else "–"


def verdict_lines(results: dict[tuple[Cell, str], dict[str, Any]], cells: list[Cell],
                  base: Cell, axes: dict[str, list[Cell]]) -> list[str]:
    """The plain-language section, from the numbers."""
    rated = [(c, cell_ratios(results, c)) for c in cells]
    rated = [(c, r) for c, r in rated if math.isfinite(r["mean"])]
    if not rated:
        return ["No cell has both TRAIL and SJF-work."]

    def listing(items: list[tuple[Cell, dict[str, Any]]]) -> str:
        items = sorted(items, key=lambda cr: cr[1]["mean"])
        return "; ".join(f"{c.differs(base)} ({r['mean']:.3f}×, p99 {r['p99']:.2f}×)"
                         for c, r in items)

    groups = {k: [(c, r) for c, r in rated if r["class"] == k]
              for k in ("pays", "helps a little", "adds nothing", "worse")}
    n = len(rated)
    best = min(rated, key=lambda cr: cr[1]["mean"])
    lines = [f"Over the {n} cells with both TRAIL and SJF-work (TRAIL's mean latency over "
             f"SJF-work's; p99 likewise):", ""]
    if groups["pays"]:
        lines.append(f"- **The probe pays** (≤ {PAYS:.2f}×) in {len(groups['pays'])} of {n}: "
                     + listing(groups["pays"]) + ".")
    else:
        lines.append(f"- **The probe pays** (≤ {PAYS:.2f}×) in none of the {n} cells; the best "
                     f"is {best[0].differs(base)} at {best[1]['mean']:.3f}×.")
    if groups["helps a little"]:
        lines.append(f"- It helps a little ({PAYS:.2f}-{1 - NOTHING:.2f}×) in "
                     f"{len(groups['helps a little'])}: " + listing(groups["helps a little"])
                     + ".")
    lines.append(f"- **It adds nothing** (within {NOTHING:.0%}) in {len(groups['adds nothing'])}"
                 + (": " + listing(groups["adds nothing"]) if groups["adds nothing"] else "")
                 + ".")
    lines.append(f"- **TRAIL is worse** than SJF-work by more than {NOTHING:.0%} in "
                 f"{len(groups['worse'])}"
                 + (": " + listing(groups["worse"]) if groups["worse"] else "") + ".")
    lines += ["", "Along each axis (the others at the base point), TRAIL / SJF-work mean "
              "latency, and TRAIL+ / SJF-work (what true lengths would give):", ""]
    for axis, cells_ in axes.items():
        parts = []
        for c in cells_:
            r = cell_ratios(results, c)
            parts.append(f"{axis_label(axis, c)}: {fmt(r['mean'], '.3f')} "
                         f"(TRAIL+ {fmt(r['TRAIL+'], '.3f')})")
        lines.append(f"- {axis}: " + "; ".join(parts) + ".")
    return lines


def axis_label(axis: str, c: Cell) -> str:
    return {"slots": f"{c.slots} slots", "kv": f"{c.kv} KV", "trace": c.trace,
            "load": f"load {c.load:g}", "probe": f"MAE × {c.mae_scale:g}"}[axis]


# ---------------------------------------------------------------------------- markdown


def markdown(meta: dict[str, Any], results: dict[tuple[Cell, str], dict[str, Any]],
             axes: dict[str, list[Cell]], product: list[Cell], base: Cell,
             policies: list[str]) -> str:
    kv = meta["kv"]
    lines = [f"# Where the probe pays: TRAIL against SJF-work ({meta['date']})", "",
             "`python bench/sim_regimes.py`. SJF-work is TRAIL's rule without the probe (one "
             "prompt-only prediction at arrival, no preemption); TRAIL / SJF-work is what the "
             f"probe's refreshed predictions add. TRAIL: {meta['trail']} (SimSettings' "
             f"defaults, TRAIL_DEFAULTS). Preset {meta['preset']}. Base point: "
             f"{base.trace}, {base.slots} slots, ample KV, load {base.load:g}, probe MAE × "
             f"{base.mae_scale:g} (33.9 tokens at prefill).", "",
             f"- KV: ample = kv_utilization {kv['ample']['kv_utilization']:g} "
             f"({kv['ample']['kv_tokens']:,} tokens); binding = {kv['binding']['kv_utilization']:g}"
             f" ({kv['binding']['kv_tokens']:,} tokens: memory, not 48 slots, caps the batch "
             f"on azure-conv; see the drops below). Preemption mode: the scheduler's default "
             f"(KEEP, no swap: KV dropped and recomputed under memory pressure).",
             f"- {ALPACA}: {meta['traces'].get(ALPACA, 'not run')}.",
             "- Load 1.05 is overload on the finite trace: the queue grows for the trace's "
             "duration and drains after it (not a steady state).",
             f"- Seeds {', '.join(str(s) for s in meta['seeds'])} per cell (the predictors' "
             f"errors, the capacity's resample): each number is the mean over seeds, the "
             f"ratios are of those means, and 'per seed' gives the range of TRAIL / SJF-work "
             f"over the seeds.", "",
             f"- machine: {meta['machine']}",
             f"- python {meta['python']}, numpy {meta['numpy']}, commit {meta['commit']}",
             f"- run: {meta['started']}, {meta['wall_s']:.0f} s, {meta['runs']} simulations",
             "", "## Where the probe pays, and where it adds nothing", "",
             *verdict_lines(results, list(dict.fromkeys(
                 [c for cs in axes.values() for c in cs] + product)), base, axes), ""]
    others = [p for p in policies if p not in ("TRAIL", REFERENCE)]
    for axis, cells in axes.items():
        lines += [f"## Axis: {axis} (the others at the base point)", "",
                  f"| {axis} | capacity req/s | SJF-work mean | TRAIL mean | TRAIL/SJF-work mean "
                  f"| per seed | TRAIL/SJF-work p99 | TRAIL/SJF-work TTFT | "
                  + "".join(f"{p}/SJF-work mean | " for p in others)
                  + "KV drops SJF-work / TRAIL | verdict |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(others)
                  + "---:|---|"]
        for c in cells:
            ref, t = results.get((c, REFERENCE)), results.get((c, "TRAIL"))
            r = cell_ratios(results, c)
            cap = (ref or t or {}).get("capacity_req_s", math.nan)
            drops = " / ".join(f"{x['kv_drops']:.0f}" if x else "–" for x in (ref, t))
            lines.append(
                f"| {axis_label(axis, c)} | {fmt(cap)} | "
                f"{fmt(ref['latency_s_mean'] if ref else math.nan)} | "
                f"{fmt(t['latency_s_mean'] if t else math.nan)} | {fmt(r['mean'], '.3f')} | "
                f"{spread(r)} | {fmt(r['p99'], '.3f')} | {fmt(r['ttft'], '.3f')} | "
                + "".join(f"{fmt(ratio(results.get((c, p)), ref, 'latency_s_mean'), '.3f')} | "
                          for p in others)
                + f"{drops} | {r['class']} |")
        lines.append("")
    lines += ["## Product: trace × slots × load (ample KV, default probe)", "",
              "| trace | slots | load | SJF-work mean | TRAIL mean | TRAIL/SJF-work mean | "
              "per seed | TRAIL/SJF-work p99 | verdict |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in product:
        ref, t = results.get((c, REFERENCE)), results.get((c, "TRAIL"))
        r = cell_ratios(results, c)
        lines.append(f"| {c.trace} | {c.slots} | {c.load:g} | "
                     f"{fmt(ref['latency_s_mean'] if ref else math.nan)} | "
                     f"{fmt(t['latency_s_mean'] if t else math.nan)} | {fmt(r['mean'], '.3f')} | "
                     f"{spread(r)} | {fmt(r['p99'], '.3f')} | {r['class']} |")
    lines += ["", "Plots: `*_map.png` (TRAIL / SJF-work mean latency, slots × load per trace), "
              "`*_axes.png` (each policy / SJF-work along each axis)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="llama3-8b-a100-80gb")
    ap.add_argument("--traces", default=f"azure-conv,azure-code,{ALPACA}",
                    help=f"built-in traces, CSV paths or '{ALPACA}'; the first is the base")
    ap.add_argument("--slots", default="16,48,128", help="max_running values")
    ap.add_argument("--base-slots", type=int, default=48)
    ap.add_argument("--loads", default="0.9,1.05", help="loads; the first is the base")
    ap.add_argument("--kv-binding", type=float, default=0.28,
                    help="kv_utilization of the binding-KV cells (ample: SimSettings' default)")
    ap.add_argument("--probe-mae-scales", default="1,1.5",
                    help="the probe's MAE × these; the first is the base")
    ap.add_argument("--seeds", default="0,1,2",
                    help="seeds per cell (predictor errors and the capacity's resample); "
                         "results average over them")
    ap.add_argument("--policies", default="SJF-work,TRAIL,TRAIL+,TRAIL-paper",
                    help="policies of the one-axis cells (SJF-work and TRAIL needed)")
    ap.add_argument("--product-policies", default="SJF-work,TRAIL",
                    help="policies of the trace × slots × load product")
    ap.add_argument("--data", type=pathlib.Path, default=pathlib.Path(DEFAULT_DATA or "."),
                    help=f"data folder holding {ALPACA_FILE} (for {ALPACA}; default "
                         f"$TRAIL_SHARED_DATA)")
    ap.add_argument("--tokens-per-word", type=float, default=1.3,
                    help=f"prompt tokens per Alpaca word in {ALPACA}")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    ap.add_argument("--smoke", action="store_true",
                    help="400 requests per trace, slots 16 and 48; writes nothing")
    ap.add_argument("--estimate", action="store_true",
                    help="print the number of simulations and the estimated time, then stop")
    args = ap.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    slots = ints(args.slots)
    if args.smoke:
        slots = [s for s in slots if s <= args.base_slots][-2:] or [args.base_slots]
        args.seeds = ",".join(args.seeds.split(",")[:2])
    if args.base_slots not in slots:
        ap.error(f"--base-slots {args.base_slots} must be one of --slots")
    trace_names = [t for t in args.traces.split(",") if t.strip()]
    opts = {"cost": CostModel.preset(args.preset), "kv_binding": args.kv_binding,
            "slots": slots, "loads": floats(args.loads), "traces": trace_names,
            "mae_scales": floats(args.probe_mae_scales), "seeds": ints(args.seeds),
            "policies": [canonical_name(p) for p in args.policies.split(",") if p.strip()],
            "product_policies": [canonical_name(p) for p in args.product_policies.split(",")
                                 if p.strip()]}
    for need in ("TRAIL", REFERENCE):
        if need not in opts["policies"]:
            ap.error(f"--policies must include {need}")
    traces: dict[str, Trace] = {}
    described: dict[str, str] = {}
    for name in trace_names:
        if name == ALPACA:
            conv = load_trace("azure-conv")
            traces[name], described[name] = alpaca_prompts_trace(conv, args.data,
                                                                 args.tokens_per_word)
        else:
            traces[name] = load_trace(name)
            described[name] = f"{len(traces[name])} requests"
        if args.smoke:
            traces[name] = traces[name].head(400)
    base = Cell(trace_names[0], args.base_slots, "ample", opts["loads"][0],
                opts["mae_scales"][0])
    axes, product = grid(base, opts)
    todo = jobs(axes, product, opts)
    runs, seconds = estimate(todo, traces, opts)
    print(f"{runs} simulations, estimated ~{seconds / 60:.0f} min on one core", flush=True)
    if args.estimate:
        return
    runner = Runner()
    per_seed: dict[tuple[Cell, str], list[dict[str, Any]]] = {}
    bar = progress_bar(len(todo) * len(opts["seeds"]), "simulating the regime map", "run")
    for cell, policy in todo:
        for seed in opts["seeds"]:
            bar.set_postfix_str(f"{policy}: {cell.differs(base)}, seed {seed}", refresh=False)
            per_seed.setdefault((cell, policy), []).append(
                {"seed": seed, **runner.run(traces[cell.trace], policy,
                                            settings_of(cell, opts, seed),
                                            probe_mae_scale=cell.mae_scale)})
            bar.update(1)
    bar.close()
    results = {k: seed_mean(rows) for k, rows in per_seed.items()}
    ample = SimSettings(cost=opts["cost"])
    kv = {"ample": {"kv_utilization": ample.kv_utilization,
                    "kv_tokens": opts["cost"].kv_capacity_tokens(ample.kv_utilization)},
          "binding": {"kv_utilization": args.kv_binding,
                      "kv_tokens": opts["cost"].kv_capacity_tokens(args.kv_binding)}}
    base_settings = settings_of(base, opts)
    meta = provenance(date=args.label or started.date().isoformat(),
                      started=started.isoformat(timespec="seconds"))
    meta |= {"preset": args.preset, "kv": kv, "traces": described,
            "requests": {n: len(t) for n, t in traces.items()},
            "trail": describe_short(policy_settings(policy_setup("TRAIL", base_settings))),
            "policy_settings": {p: policy_settings(policy_setup(p, base_settings))
                                for p in opts["policies"]},
            "base": asdict(base), "base_settings": plain_settings(base_settings),
            "axes": {a: [asdict(c) for c in cs] for a, cs in axes.items()},
            "seeds": opts["seeds"], "pays_at": PAYS, "nothing_within": NOTHING,
            "runs": runner.runs, "wall_s": time.perf_counter() - t0}
    md = markdown(meta, results, axes, product, base, opts["policies"])
    print(md)
    if args.smoke:
        print("smoke run done (nothing written)")
        return
    rows = [{**asdict(c), "policy": p, **s} for (c, p), runs in per_seed.items() for s in runs]
    cells = list(dict.fromkeys([c for cs in axes.values() for c in cs] + product))
    verdicts = [{**asdict(c), **cell_ratios(results, c)} for c in cells]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"sim_regimes_{meta['date']}"
    write_json(pathlib.Path(f"{stem}.json"), {**meta, "runs_rows": rows, "cells": verdicts})
    pathlib.Path(f"{stem}.md").write_text(md)
    map_cells = [{"trace": c.trace, "slots": c.slots, "load": c.load,
                  "ratio": cell_ratios(results, c)["mean"]} for c in product]
    plot_ratio_map(map_cells, f"{stem}_map.png",
                   f"TRAIL / SJF-work mean latency ({args.preset}, ample KV; blue: TRAIL "
                   f"better)")
    axis_rows = {axis: [{"label": axis_label(axis, c),
                         "ratios": {p: ratio(results.get((c, p)), results.get((c, REFERENCE)),
                                             "latency_s_mean")
                                    for p in opts["policies"] if p != REFERENCE}}
                        for c in cs] for axis, cs in axes.items()}
    plot_regime_axes(axis_rows, f"{stem}_axes.png",
                     f"Mean latency over SJF-work's, one axis at a time around {base.trace}, "
                     f"{base.slots} slots, ample KV, load {base.load:g} ({args.preset})")
    print(f"wrote {stem}.json, .md, _map.png and _axes.png")


if __name__ == "__main__":
    main()
