"""Record the policy comparison on real traces: load sweep, latency CDF, mean-vs-p99 frontier.

For each trace of `--traces` (default azure-conv, azure-code) and cost-model preset of
`--presets` (default the A100 and H100 Llama-3-8B presets), one results set
`bench/results/sim_compare_<trace>_<a100|h100>_<date>.{json,md}` with its plots:

- every policy of `trail simulate --compare` at `--loads` (default 0.5-1.1 of the saturated
  FCFS capacity; loads >= 1 overload the finite trace): mean / p50 / p99 latency, mean TTFT,
  preemptions, and the ratios TRAIL / FCFS, / SJF, / SJF-work, / TRAIL+ (the paper's
  Figure 6: `*_rate_sweep.png`). MLFQ, ~20× slower to simulate than the others, runs only
  at `--mlfq-loads` (default 0.8, 0.9: the issue's target loads);
- latency CDFs with p99 marked at `--cdf-load` (default: the frontier load), `*_latency_cdf.png`;
- the mean-vs-p99 frontier at `--frontier-load` (default 0.9), `*_frontier.png`: SJF-work,
  TRAIL and TRAIL+ over the aging rate α of the work-aware key (`--alphas`, with
  "default": SimSettings' own, a number or "auto", resolved in the tables); SJF and
  TRAIL-paper, the paper's rules, which take no α, over the aging guard `starvation_steps`
  (`--guards`; TRAIL-paper's `setup` forces its guard off, so the frontier passes it through
  bench/sim_runs.py's `paper_guard` override); FCFS as the reference point. Recorded: for
  every SJF, SJF-work and TRAIL-paper point, whether some TRAIL point has both a lower or
  equal mean and a lower or equal p99 (the frontier dominates where every point is covered);
- the issue's targets (issue 12, set for azure-conv / A100 at loads 0.9 and 0.8) checked
  against the measured values, for every set;
- for the first trace and preset only, TRAIL's latency versus c at the frontier load
  (Figure 5, with M/G/1 theory), `*_latency_vs_c.png`.

`bench/results/sim_compare_<date>.md` indexes the sets: one line per set with TRAIL / FCFS,
/ SJF, / SJF-work at load 0.9, the frontier verdicts and the targets met.

TRAIL is `SimSettings`' defaults (TRAIL_DEFAULTS in trail.sim.compare), whatever they are
when this runs; 48 slots, KV at 90% of the GPU's memory, probe refreshed every 8 tokens.

Run time (one core of a busy 2-core machine; the script prints its own estimate first, and
`--estimate` prints only that): a simulation of azure-conv's 19,366 requests takes ~3 s
(FCFS, SJF, SJF-work, TRAIL+, LTR), ~11 s (TRAIL, TRAIL-paper: the probe's refreshes) and
~60 s (MLFQ), about the same at loads above 1; azure-code's 8,819 short-answer requests
~5× less. The default grid is ~330 simulations (runs the grid asks for twice run once),
estimated at ~23 min (~11 for azure-conv on the A100, which adds the c sweep):

    python bench/sim_compare.py                                    # ~25 min; bench/results/
    python bench/sim_compare.py --traces azure-conv --presets llama3-8b-a100-80gb  # ~11 min
    python bench/sim_compare.py --skip-mlfq --skip-c               # ~17 min
    python bench/sim_compare.py --estimate                         # the estimate only
    python bench/sim_compare.py --smoke       # ~10 s; 400 requests, checks the script only
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import pathlib
import re
import sys
import time
from dataclasses import replace
from typing import Any

from trail.provenance import provenance
from trail.progress import progress_bar
from trail.policies import COMPARE, canonical_name
from trail.sim.compare import SimSettings, describe_short, sweep_c
from trail.sim.compare import describe as policy_settings
from trail.sim.cost_model import CostModel
from trail.sim.plots import plot_frontier, plot_latency_cdf, plot_rate_sweep, plot_sweep
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
DEFAULT = "default"  # in --alphas: SimSettings' own aging_rate (TRAIL_DEFAULTS')
# The frontier's tail knob per policy: α for the work-aware keys, the aging guard for the
# paper's rules (their key has α = 0 by definition).
FRONTIER_KNOB = {"SJF": "starvation_steps", "TRAIL-paper": "starvation_steps",
                 "SJF-work": "aging_rate", "TRAIL": "aging_rate", "TRAIL+": "aging_rate",
                 "SRPT": "aging_rate"}
FRONTIER_POLICIES = ("SJF", "SJF-work", "TRAIL-paper", "TRAIL", "TRAIL+")
# Points the frontier checks TRAIL against (SJF-work beside the two the issue names).
DOMINATED = ("SJF", "TRAIL-paper", "SJF-work")
RATIO_TO = ("FCFS", "SJF", "SJF-work", "TRAIL+")
TARGET_SET = ("azure-conv", "llama3-8b-a100-80gb")
# The targets: (load, label, metric, reference policy, bound, strict).
TARGETS = (
    (0.9, "TRAIL mean ≤ 0.80 × SJF", "latency_s_mean", "SJF", 0.80, False),
    (0.9, "TRAIL mean ≤ 0.60 × FCFS", "latency_s_mean", "FCFS", 0.60, False),
    (0.9, "TRAIL mean TTFT ≤ 0.45 × FCFS", "ttft_s_mean", "FCFS", 0.45, False),
    (0.9, "TRAIL p99 ≤ 1.5 × FCFS", "latency_s_p99", "FCFS", 1.5, False),
    (0.9, "TRAIL mean ≤ 1.05 × TRAIL+", "latency_s_mean", "TRAIL+", 1.05, False),
    (0.9, "TRAIL mean < SJF", "latency_s_mean", "SJF", 1.0, True),
    (0.9, "TRAIL mean < LTR", "latency_s_mean", "LTR", 1.0, True),
    (0.9, "TRAIL mean < MLFQ", "latency_s_mean", "MLFQ", 1.0, True),
    (0.8, "TRAIL mean ≤ 0.70 × FCFS", "latency_s_mean", "FCFS", 0.70, False),
    (0.8, "TRAIL p99 ≤ 1.0 × FCFS", "latency_s_p99", "FCFS", 1.0, False),
)
EVERY_CELL = ("every load: TRAIL mean ≤ 1.01 × SJF-work", 1.01)


def preset_short(preset: str) -> str:
    """The GPU part of a preset name, for file names: llama3-8b-a100-80gb → a100."""
    for part in pathlib.PurePath(preset).stem.split("-"):
        if re.fullmatch(r"[a-z]+\d{2,4}[a-z]*", part) and not part.startswith("llama"):
            return part
    return pathlib.PurePath(preset).stem


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


# ---------------------------------------------------------------------------- the grid


def plan(trace: Trace, settings: SimSettings, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of one set, in order: {section, policy, settings, overrides, knob, value}."""
    jobs = []
    for load in opts["loads"]:
        s = replace(settings, load=load)
        for name in opts["policies"]:
            if name == "MLFQ" and load not in opts["mlfq_loads"]:
                continue
            jobs.append({"section": "loads", "policy": name, "settings": s, "overrides": {},
                         "knob": None, "value": None})
    s = replace(settings, load=opts["frontier_load"])
    jobs.append({"section": "frontier", "policy": "FCFS", "settings": s, "overrides": {},
                 "knob": None, "value": None})
    for name in opts["frontier_policies"]:
        knob = FRONTIER_KNOB.get(name, "aging_rate")
        for v in (opts["guards"] if knob == "starvation_steps" else opts["alphas"]):
            if knob == "starvation_steps":
                job_s, over = replace(s, starvation_steps=int(v)), {"paper_guard": int(v)}
                label = f"{v}" if v else "off"
            elif v == DEFAULT:  # SimSettings' own aging_rate (a number or "auto")
                job_s, over = s, {}
            else:
                job_s, over = replace(s, aging_rate=float(v)), {}
            if knob == "aging_rate":
                v = alpha_of(name, job_s)
                label = f"{v:.3g}" if job_s is not s else f"default {v:.3g}"
            jobs.append({"section": "frontier", "policy": name, "settings": job_s,
                         "overrides": over, "knob": knob, "value": v, "label": label})
    return jobs


def estimate(trace: Trace, name: str, jobs: list[dict[str, Any]], cs: list[float]
             ) -> tuple[int, float]:
    """Distinct runs of a set's plan (its c sweep included) and their rough seconds."""
    seen: set[str] = set()
    seconds = 0.0
    for j in jobs:
        key = Runner.key(trace, j["policy"], j["settings"], **j["overrides"])
        if key in seen:
            continue
        seen.add(key)
        guard = j["knob"] == "starvation_steps" and bool(j["value"])
        seconds += estimate_s(j["policy"], name, len(trace), guard=guard)
    seconds += len(cs) * estimate_s("TRAIL", name, len(trace))
    # capacity: an FCFS run of <= 2,000 resampled requests per load
    seconds += len({j["settings"].load for j in jobs}) * 0.4
    return len(seen) + len(cs), seconds


def record_set(trace: Trace, trace_name: str, preset: str, opts: dict[str, Any],
               with_c: bool) -> dict[str, Any]:
    """Simulate one trace × preset: the load table, CDF, frontier, targets (and c sweep)."""
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    settings = SimSettings(cost=CostModel.preset(preset), load=opts["frontier_load"])
    jobs = plan(trace, settings, opts)
    cs = opts["cs"] if with_c else []
    runs, _ = estimate(trace, trace_name, jobs, cs)
    runner = Runner(keep_latency=True)
    bar = progress_bar(runs, f"simulating {trace_name} on {preset_short(preset)}", "run")
    load_rows, frontier = [], []
    for j in jobs:
        before = runner.runs
        row = runner.run(trace, j["policy"], j["settings"], **j["overrides"])
        bar.update(runner.runs - before)
        row = {"policy": j["policy"], **row}
        if j["section"] == "loads":
            load_rows.append(row)
        else:
            frontier.append({**row, "knob": j["knob"], "value": j["value"],
                             "label": j.get("label")})
    cdf_load = min(opts["loads"], key=lambda x: abs(x - opts["cdf_load"]))
    cdf = {}
    for name in opts["policies"]:
        lat = runner.latency(trace, name, replace(settings, load=cdf_load))
        if lat is not None:
            cdf[name] = lat
    csweep = None
    if cs:
        scaled, _ = runner.at_load(trace, settings)
        rows = []
        for c in cs:
            rows += sweep_c(scaled, settings, [c])["rows"]
            bar.update(1)
        best = min(rows, key=lambda r: (round(r["latency_s_mean"], 9), r["c"]))
        theory = min(rows, key=lambda r: (r["theory_mean_response_tokens"], r["c"]))
        csweep = {"rows": rows, "recommended_c": best["c"], "theory_best_c": theory["c"]}
    bar.close()
    names = list(dict.fromkeys(r["policy"] for r in load_rows))
    trail_settings = policy_settings(policy_setup("TRAIL", settings))
    return {
        "trace": trace_name, "preset": preset, "preset_short": preset_short(preset),
        "requests": len(trace), "started": started.isoformat(timespec="seconds"),
        "settings": plain_settings(settings), "trail": describe_short(trail_settings),
        "policy_settings": {n: policy_settings(policy_setup(n, settings)) for n in names},
        "loads": opts["loads"], "mlfq_loads": opts["mlfq_loads"], "cdf_load": cdf_load,
        "frontier_load": opts["frontier_load"], "alphas": opts["alphas"],
        "guards": opts["guards"], "load_sweep": load_rows, "frontier": frontier,
        "dominance": dominance(frontier), "targets": targets(load_rows), "c_sweep": csweep,
        "runs": runner.runs, "wall_s": time.perf_counter() - t0, "_cdf": cdf}


# ---------------------------------------------------------------------------- verdicts


def alpha_of(name: str, settings: SimSettings) -> float:
    """The aging rate α (tokens/s) `name` runs with under `settings` ("auto" resolved)."""
    return float(policy_setup(name, settings).config.aging_rate)


def dominance(frontier: list[dict[str, Any]]) -> dict[str, Any]:
    """For each SJF / TRAIL-paper / SJF-work point: the TRAIL points at or below it in both
    mean and p99; per policy, whether every point is so covered."""
    trail = [r for r in frontier if r["policy"] == "TRAIL"]
    points = []
    for r in frontier:
        if r["policy"] not in DOMINATED:
            continue
        by = [t["label"] for t in trail if t["latency_s_mean"] <= r["latency_s_mean"]
              and t["latency_s_p99"] <= r["latency_s_p99"]]
        points.append({"policy": r["policy"], "knob": r["knob"], "value": r["value"],
                       "label": r["label"],
                       "latency_s_mean": r["latency_s_mean"],
                       "latency_s_p99": r["latency_s_p99"], "dominated_by_trail_alphas": by})
    verdict = {}
    for name in DOMINATED:
        mine = [p for p in points if p["policy"] == name]
        if mine and trail:
            verdict[name] = {"points": len(mine),
                             "covered": sum(bool(p["dominated_by_trail_alphas"]) for p in mine),
                             "dominates": all(p["dominated_by_trail_alphas"] for p in mine)}
    return {"points": points, "verdict": verdict}


def at(rows: list[dict[str, Any]], load: float, policy: str) -> dict[str, Any] | None:
    for r in rows:
        if r["policy"] == policy and math.isclose(r["load"], load):
            return r
    return None


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets against a set's load table: measured ratio, bound, met."""
    out = []
    for load, label, key, ref, bound, strict in TARGETS:
        value = ratio(at(rows, load, "TRAIL"), at(rows, load, ref), key)
        met = None if not math.isfinite(value) else (value < bound if strict else value <= bound)
        out.append({"target": f"load {load:g}: {label}", "measured": value, "bound": bound,
                    "met": met})
    cells = [(r["load"], ratio(r, at(rows, r["load"], "SJF-work"), "latency_s_mean"))
             for r in rows if r["policy"] == "TRAIL"]
    cells = [(load, v) for load, v in cells if math.isfinite(v)]
    label, bound = EVERY_CELL
    if cells:
        load, worst = max(cells, key=lambda c: c[1])
        out.append({"target": label, "measured": worst, "bound": bound, "met": worst <= bound,
                    "worst_load": load})
    else:
        out.append({"target": label, "measured": math.nan, "bound": bound, "met": None})
    return out


def met_text(met: bool | None) -> str:
    return "not measured" if met is None else ("yes" if met else "no")


# ---------------------------------------------------------------------------- markdown


def markdown(meta: dict[str, Any], res: dict[str, Any]) -> str:
    """The recorded tables of one set."""
    rows = res["load_sweep"]
    names = list(dict.fromkeys(r["policy"] for r in rows))
    loads = sorted({r["load"] for r in rows})
    s = res["settings"]
    refs = [n for n in RATIO_TO if n in names and "TRAIL" in names]
    lines = [
        f"# Policies on {res['trace']} with {res['preset']} ({meta['date']})", "",
        f"`python bench/sim_compare.py` simulates the {res['requests']} requests of the "
        f"trace, rescaled in time to each load (load = arrival rate / the saturated FCFS "
        f"throughput of {s['max_running']} slots, KV at {s['kv_utilization']:g} of the GPU's "
        f"memory), through the C++ scheduler on the roofline cost model. TRAIL: probe "
        f"predictions refreshed every {s['predict_every']} tokens (simulated error, MAE 33.9 "
        f"at prefill, correlated over {s['corr_tokens']:g} tokens), a prompt-only prediction "
        f"(MAE 46.1) while waiting, {res['trail']} (SimSettings' defaults, TRAIL_DEFAULTS); "
        f"TRAIL+: the same rule with true lengths; TRAIL-paper: the paper's rule (c = 0.8, "
        f"output tokens only, no guard); SJF: prompt-only, output tokens only; SJF-work: "
        f"prompt-only with TRAIL's key; LTR: ranking scores; MLFQ: FastServe's queue "
        f"(trail.sim.compare).", "",
        ("Loads ≥ 1 are overload on the finite trace: arrivals outpace the FCFS capacity, so "
         "the queue grows for the whole trace and drains after it; their latencies grow with "
         "the trace's length and are not steady-state values (every policy sees the same "
         "arrivals, so the ratios still compare them).") if loads and max(loads) >= 1 else "",
        "",
        f"- machine: {meta['machine']}",
        f"- python {meta['python']}, numpy {meta['numpy']}, commit {meta['commit']}",
        f"- run: {res['started']}, {res['wall_s']:.0f} s, {res['runs']} simulations", ""]
    if "MLFQ" in names and set(res["mlfq_loads"]) != set(loads):
        lines += [f"MLFQ runs only at loads {', '.join(f'{x:g}' for x in res['mlfq_loads'])} "
                  f"(`--mlfq-loads`; it is ~20× slower to simulate).", ""]
    heads = " | ".join(f"TRAIL/{n}" for n in refs)
    for key, title, spec in (("latency_s_mean", "Mean latency (s)", ".2f"),
                             ("latency_s_median", "Median latency (s)", ".2f"),
                             ("latency_s_p99", "p99 latency (s)", ".1f"),
                             ("ttft_s_mean", "Mean TTFT (s)", ".2f")):
        lines += [f"## {title}", "",
                  "| load | req/s | " + " | ".join(names) + (" | " + heads if refs else "")
                  + " |", "|---|---:|" + "---:|" * (len(names) + len(refs))]
        for load in loads:
            t = at(rows, load, "TRAIL")
            any_row = next(r for r in rows if math.isclose(r["load"], load))
            lines.append(
                f"| {load:g} | {any_row['rate_req_s']:.2f} | "
                + " | ".join(fmt(at(rows, load, n)[key] if at(rows, load, n) else math.nan,
                                 spec) for n in names)
                + "".join(f" | {fmt(ratio(t, at(rows, load, n), key), '.3f')}" for n in refs)
                + " |")
        lines.append("")
    lines += ["## Preemptions", "", "| load | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    for load in loads:
        lines.append(f"| {load:g} | " + " | ".join(
            str(at(rows, load, n)["preemptions"]) if at(rows, load, n) else "–"
            for n in names) + " |")
    lines += ["", *frontier_markdown(res), *targets_markdown(res["targets"], res)]
    if res["c_sweep"]:
        cs = res["c_sweep"]
        lines += [f"## TRAIL's c at load {res['frontier_load']:g} (Figure 5)", "",
                  "| c | mean latency | p99 | mean TTFT | preemptions | M/G/1 theory (tokens) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in cs["rows"]:
            lines.append(f"| {r['c']:g} | {r['latency_s_mean']:.2f} | {r['latency_s_p99']:.1f} "
                         f"| {r['ttft_s_mean']:.2f} | {r['preemptions']} | "
                         f"{r['theory_mean_response_tokens']:.1f} |")
        lines += ["", f"Lowest simulated mean at c = {cs['recommended_c']:g}; M/G/1 theory "
                  f"prefers c = {cs['theory_best_c']:g}.", ""]
    plots = ["`*_rate_sweep.png` (Figure 6)", f"`*_latency_cdf.png` (load {res['cdf_load']:g})",
             "`*_frontier.png`"] + (["`*_latency_vs_c.png` (Figure 5)"] if res["c_sweep"] else [])
    lines += ["Plots: " + ", ".join(plots) + "."]
    return "\n".join(lines) + "\n"


def frontier_markdown(res: dict[str, Any]) -> list[str]:
    rows, dom = res["frontier"], res["dominance"]
    lines = [f"## Mean versus p99 at load {res['frontier_load']:g}: the tail knobs", "",
             "α (`aging_rate`, tokens per second of waiting) for the work-aware keys "
             "(SJF-work, TRAIL, TRAIL+); the aging guard `starvation_steps = k` (a request left "
             "out of the batch for k iterations runs first; 0 = off) for the paper's rules, "
             "which have no α (SJF; TRAIL-paper through bench/sim_runs.py's `paper_guard`, as "
             "its `setup` turns the guard off). FCFS for reference.", "",
             "| policy | knob | mean latency | p50 | p99 | mean TTFT | preemptions |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        knob = ("–" if r["knob"] is None else
                f"α = {r['label']}" if r["knob"] == "aging_rate" else f"guard {r['label']}")
        lines.append(f"| {r['policy']} | {knob} | {r['latency_s_mean']:.2f} | "
                     f"{r['latency_s_median']:.2f} | {r['latency_s_p99']:.1f} | "
                     f"{r['ttft_s_mean']:.2f} | {r['preemptions']} |")
    lines += ["", "Does TRAIL's frontier dominate? For each point: the TRAIL α values with "
              "both a lower-or-equal mean and a lower-or-equal p99.", "",
              "| point | mean | p99 | dominated by TRAIL at α = |", "|---|---:|---:|---|"]
    for p in dom["points"]:
        knob = f"α = {p['label']}" if p["knob"] == "aging_rate" else f"guard {p['label']}"
        by = ", ".join(p["dominated_by_trail_alphas"]) or "**none**"
        lines.append(f"| {p['policy']}, {knob} | {p['latency_s_mean']:.2f} | "
                     f"{p['latency_s_p99']:.1f} | {by} |")
    lines.append("")
    for name, v in dom["verdict"].items():
        lines.append(f"- TRAIL's frontier {'dominates' if v['dominates'] else 'does not dominate'}"
                     f" {name}'s: {v['covered']} of {v['points']} points covered.")
    return lines + [""]


def targets_markdown(rows: list[dict[str, Any]], res: dict[str, Any]) -> list[str]:
    here = (res["trace"], res["preset"]) == TARGET_SET
    lines = ["## The issue's targets", "",
             ("Issue 12's targets, set for azure-conv / A100; this is that set." if here else
              f"Issue 12's targets are set for azure-conv / A100; shown for {res['trace']} / "
              f"{res['preset_short']} too."), "",
             "| target | measured (TRAIL / reference) | met |", "|---|---:|---|"]
    for t in rows:
        where = f" (worst at load {t['worst_load']:g})" if "worst_load" in t else ""
        lines.append(f"| {t['target']} | {fmt(t['measured'], '.3f')}{where} | "
                     f"{met_text(t['met'])} |")
    return lines + [""]


def index_markdown(meta: dict[str, Any], sets: list[dict[str, Any]], stems: list[str]) -> str:
    """One line per set, the target set's targets, the every-cell check over all sets."""
    lines = [f"# Policy comparison on the simulator: every trace and preset ({meta['date']})",
             "", "`python bench/sim_compare.py`; one results set per trace × preset (linked). "
             "TRAIL is SimSettings' defaults (TRAIL_DEFAULTS): " + sets[0]["trail"] + ".", "",
             f"- machine: {meta['machine']}",
             f"- python {meta['python']}, numpy {meta['numpy']}, commit {meta['commit']}",
             f"- run: {meta['started']}, {meta['wall_s']:.0f} s in all", ""]
    summary_load = meta["summary_load"]
    lines += [f"TRAIL's mean latency over each policy's at load {summary_load:g}; whether "
              f"TRAIL's mean-vs-p99 frontier at load {sets[0]['frontier_load']:g} dominates "
              f"(points covered); the issue's targets met of those measured.", "",
              "| set | TRAIL/FCFS | TRAIL/SJF | TRAIL/SJF-work | TRAIL/TRAIL+ | frontier "
              "dominates SJF / TRAIL-paper / SJF-work | targets met |",
              "|---|---:|---:|---:|---:|---|---:|"]
    for res, stem in zip(sets, stems):
        rows = res["load_sweep"]
        t = at(rows, summary_load, "TRAIL")
        cells = [fmt(ratio(t, at(rows, summary_load, n), "latency_s_mean"), ".3f")
                 for n in ("FCFS", "SJF", "SJF-work", "TRAIL+")]
        verdict = res["dominance"]["verdict"]
        dom = " / ".join(
            (f"{'yes' if verdict[n]['dominates'] else 'no'} ({verdict[n]['covered']}/"
             f"{verdict[n]['points']})") if n in verdict else "–" for n in DOMINATED)
        met = [t["met"] for t in res["targets"] if t["met"] is not None]
        lines.append(f"| [{res['trace']} / {res['preset_short']}]({stem}.md) | "
                     + " | ".join(cells) + f" | {dom} | {sum(met)}/{len(met)} |")
    target = [r for r in sets if (r["trace"], r["preset"]) == TARGET_SET]
    if target:
        lines += ["", "## The issue's targets (azure-conv / A100)", "",
                  "| target | measured (TRAIL / reference) | met |", "|---|---:|---|"]
        for t in target[0]["targets"]:
            where = f" (worst at load {t['worst_load']:g})" if "worst_load" in t else ""
            lines.append(f"| {t['target']} | {fmt(t['measured'], '.3f')}{where} | "
                         f"{met_text(t['met'])} |")
    worst = []
    for res in sets:
        for r in res["load_sweep"]:
            if r["policy"] == "TRAIL":
                v = ratio(r, at(res["load_sweep"], r["load"], "SJF-work"), "latency_s_mean")
                if math.isfinite(v):
                    worst.append((v, res["trace"], res["preset_short"], r["load"]))
    if worst:
        bad = [w for w in worst if w[0] > EVERY_CELL[1]]
        v, trace, short, load = max(worst)
        lines += ["", f"Every cell (trace × preset × load), TRAIL mean ≤ 1.01 × SJF-work: "
                  f"{'yes' if not bad else 'no'}; {len(bad)} of {len(worst)} cells above; the "
                  f"worst is {v:.3f} ({trace} / {short}, load {load:g})."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", default="azure-conv,azure-code",
                    help="comma-separated built-in trace names or CSV paths")
    ap.add_argument("--presets", default=None,
                    help="comma-separated cost-model presets (default: "
                         "llama3-8b-a100-80gb,llama3-8b-h100; --smoke: the first only)")
    ap.add_argument("--loads", default="0.5,0.7,0.8,0.9,0.95,1.0,1.05,1.1")
    ap.add_argument("--policies", default=",".join(COMPARE),
                    help="policies of the load table (names of trail.sim.compare)")
    ap.add_argument("--mlfq-loads", default="0.8,0.9",
                    help="loads at which MLFQ runs (it is ~20× slower): numbers or 'all'")
    ap.add_argument("--skip-mlfq", action="store_true", help="no MLFQ at all")
    ap.add_argument("--cdf-load", type=float, default=None,
                    help="load of the latency CDF (default: --frontier-load)")
    ap.add_argument("--frontier-load", type=float, default=0.9)
    ap.add_argument("--frontier-policies", default=",".join(FRONTIER_POLICIES))
    ap.add_argument("--alphas", default=f"{DEFAULT},0,0.5,1,2,3,5",
                    help="aging rates α (tokens/s) of SJF-work, TRAIL and TRAIL+ on the "
                         f"frontier; '{DEFAULT}': SimSettings' own (TRAIL_DEFAULTS)")
    ap.add_argument("--guards", default="0,8000,4000,2000,1000",
                    help="starvation_steps of SJF and TRAIL-paper on the frontier (0: off)")
    ap.add_argument("--cs", default="0,0.1,0.2,0.4,0.6,0.8,1.0",
                    help="TRAIL's c values at the frontier load (first trace × preset only)")
    ap.add_argument("--skip-c", action="store_true", help="no c sweep")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    ap.add_argument("--smoke", action="store_true",
                    help="400 requests per trace, small grids, first preset; writes nothing")
    ap.add_argument("--estimate", action="store_true",
                    help="print the number of simulations and the estimated time, then stop")
    args = ap.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    presets = (args.presets.split(",") if args.presets else
               ["llama3-8b-a100-80gb"] + ([] if args.smoke else ["llama3-8b-h100"]))
    policies = [canonical_name(n) for n in args.policies.split(",") if n.strip()]
    if args.skip_mlfq:
        policies = [n for n in policies if n != "MLFQ"]
    loads = floats(args.loads)
    opts = {"loads": loads, "policies": policies, "frontier_load": args.frontier_load,
            "frontier_policies": [canonical_name(n) for n in args.frontier_policies.split(",")
                                  if n.strip()],
            "alphas": [DEFAULT if a.strip() == DEFAULT else float(a)
                       for a in args.alphas.split(",") if a.strip()],
            "guards": ints(args.guards),
            "cs": [] if args.skip_c else floats(args.cs)}
    if args.smoke:
        opts.update(loads=[0.5, 0.8, 0.9, 1.05], alphas=[DEFAULT, 0.0, 3.0], guards=[0, 200],
                    cs=[] if args.skip_c else [0.0, 0.8])
    opts["mlfq_loads"] = (opts["loads"] if args.mlfq_loads.strip() == "all"
                          else floats(args.mlfq_loads))
    opts["cdf_load"] = args.cdf_load if args.cdf_load is not None else args.frontier_load
    traces = {}
    for name in args.traces.split(","):
        trace = load_trace(name)
        traces[name] = trace.head(400) if args.smoke else trace
    # the estimate first
    total_runs, total_s = 0, 0.0
    for k, (name, trace) in enumerate(traces.items()):
        for j, preset in enumerate(presets):
            settings = SimSettings(cost=CostModel.preset(preset), load=args.frontier_load)
            n, sec = estimate(trace, name, plan(trace, settings, opts),
                              opts["cs"] if k == j == 0 else [])
            total_runs += n
            total_s += sec
    print(f"{len(traces)} trace(s) × {len(presets)} preset(s): ~{total_runs} simulations, "
          f"estimated ~{total_s / 60:.0f} min on one core", flush=True)
    if args.estimate:
        return
    meta = provenance(date=args.label or started.date().isoformat(),
                      started=started.isoformat(timespec="seconds"))
    meta |= {"summary_load": 0.9 if any(math.isclose(x, 0.9) for x in opts["loads"])
            else args.frontier_load}
    sets, stems = [], []
    for k, (name, trace) in enumerate(traces.items()):
        for j, preset in enumerate(presets):
            res = record_set(trace, name, preset, opts, with_c=(k == j == 0))
            stem = f"sim_compare_{pathlib.PurePath(name).stem}_{res['preset_short']}_{meta['date']}"
            md = markdown(meta, res)
            cdf = res.pop("_cdf")
            sets.append(res)
            stems.append(stem)
            if args.smoke:
                print(md)
                continue
            args.out.mkdir(parents=True, exist_ok=True)
            path = str(args.out / stem)
            write_json(pathlib.Path(path + ".json"), {**meta, **res})
            pathlib.Path(path + ".md").write_text(md)
            facts = {"trace": name, "preset": preset}
            plot_rate_sweep(res["load_sweep"], path + "_rate_sweep.png", **facts)
            plot_latency_cdf(cdf, path + "_latency_cdf.png", **facts, load=res["cdf_load"])
            plot_frontier(res["frontier"], path + "_frontier.png", **facts,
                          load=args.frontier_load)
            if res["c_sweep"]:
                plot_sweep(res["c_sweep"], path + "_latency_vs_c.png", **facts,
                           load=args.frontier_load)
            print(md)
            print(f"wrote {path}.json, .md and plots", flush=True)
    meta["wall_s"] = time.perf_counter() - t0
    index = index_markdown(meta, sets, stems)
    print(index)
    if args.smoke:
        print("smoke run done (nothing written)")
        return
    path = args.out / f"sim_compare_{meta['date']}.md"
    path.write_text(index)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
