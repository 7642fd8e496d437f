"""`trail simulate`, `trail tune-c`, `trail theory`: policies on traces, by simulation and by
queueing theory."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

from trail.cli.args import (AUTO, FINITE_NONNEG, LOAD, NATURAL, POSITIVE, SEED, UNIT_C,
                            Conditional, Rule, add_trail_key_flags, floats, write_csv)


def _sim_inputs(args: argparse.Namespace) -> tuple[Any, Any]:
    """The cost model (--preset: a name or a JSON file) and the trace (--trace, --limit)."""
    from trail.sim.cost_model import PRESETS, CostModel
    from trail.sim.traces import load_trace

    path = pathlib.Path(args.preset)
    if args.preset in PRESETS:
        cost = CostModel.preset(args.preset)
    elif path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"--preset {args.preset}: no such file (presets: "
                                    f"{', '.join(PRESETS)})" if not path.exists() else
                                    f"--preset {args.preset}: not a file")
        cost = CostModel.from_json(path)
    else:
        raise ValueError(f"--preset {args.preset}: not a preset ({', '.join(PRESETS)}) nor a "
                         f"preset JSON file")
    trace = load_trace(args.trace)
    limit = getattr(args, "limit", None)
    return cost, (trace.head(limit) if limit is not None else trace)


def _sim_settings(args: argparse.Namespace, cost: Any) -> Any:
    """SimSettings from the flags; TRAIL's settings not given stay at TRAIL_SETTINGS."""
    from trail.sim.compare import SimSettings

    trail = {k: v for k, v in (("c", args.c), ("prefill_weight", args.prefill_weight),
                               ("tail", args.tail), ("aging_rate", args.aging_rate),
                               ("boost_gamma", args.boost_gamma),
                               ("preempt_margin", args.preempt_margin), ("rank", args.rank),
                               ("kv_aware", args.kv_aware),
                               ("corr_tokens", args.corr_tokens)) if v is not None}
    return SimSettings(cost=cost, load=args.load, max_running=args.max_running,
                       block_size=args.block_size, predict_every=args.predict_every,
                       seed=args.seed, max_preemptions=args.max_preemptions,
                       starvation_steps=args.starvation_steps, **trail)


def cmd_simulate(args: argparse.Namespace) -> int:
    from trail.policies import COMPARE, canonical_name
    from trail.sim.compare import (
        at_load,
        describe,
        describe_short,
        run,
        setup,
        summary_row,
        sweep_loads,
    )
    from trail.sim.plots import plot_latency_cdf, plot_rate_sweep

    cost, trace, settings = (args.checked[k] for k in ("cost", "trace", "settings"))
    names = list(COMPARE) if args.compare else [canonical_name(args.policy)]
    scaled, cap = at_load(trace, settings)
    effective = {name: describe(setup(name, settings, scaled)) for name in names}
    tc = setup("TRAIL", settings, scaled).config  # TRAIL's settings, "auto" resolved
    summary: dict[str, Any] = {"policies": {}, "load": args.load, "seed": args.seed,
                               "trace": args.trace, "requests": len(trace), "preset": cost.name,
                               "capacity_req_s": cap, "rate_req_s": scaled.rate,
                               "max_running": args.max_running,
                               "max_preemptions": args.max_preemptions,
                               "starvation_steps": args.starvation_steps,
                               "predict_every": settings.predict_every,
                               "corr_tokens": settings.corr_tokens,
                               # TRAIL's settings; every policy's are under policy_settings
                               "c": tc.c, "prefill_weight": tc.prefill_weight,
                               "tail": settings.tail, "aging_rate": tc.aging_rate,
                               "boost_gamma": tc.boost_gamma,
                               "preempt_margin": tc.preempt_margin,
                               "rank": settings.rank, "kv_aware": tc.kv_aware,
                               "policy_settings": effective}
    print(f"{args.trace}: {len(trace)} requests at load {args.load} "
          f"({scaled.rate:.2f} req/s of a {cap:.2f} req/s capacity), {cost.name}")
    tail = {"aging": f" + {tc.aging_rate:.4g} x arrival",
            "boost": f", Boost γ {tc.boost_gamma:.4g} at {tc.aging_rate:.4g} tokens/s"
            }.get(settings.tail, "")
    print(f"TRAIL's key: size + {tc.prefill_weight:.4g} x pending prefill{tail}; preemption "
          f"margin {tc.preempt_margin:.4g}; rank {settings.rank}; c {tc.c:.4g}; probe error "
          f"correlation {settings.corr_tokens:.4g} tokens")
    print(f"{'policy':12s} {'mean lat':>9s} {'p50':>8s} {'p99':>9s} {'mean TTFT':>10s} "
          f"{'tok/s':>8s} {'preempt':>8s}  settings")
    latencies = {}
    for name in names:
        result = run(scaled, name, settings, progress=not args.quiet)
        latencies[name] = result.finish - result.arrival
        row = summary_row(result)
        summary["policies"][name] = row
        print(f"{name:12s} {row['latency_s_mean']:9.2f} {row['latency_s_median']:8.2f} "
              f"{row['latency_s_p99']:9.2f} {row['ttft_s_mean']:10.3f} "
              f"{row['throughput_tok_s']:8.0f} {row['preemptions']:8d}  "
              f"{describe_short(effective[name])}")
    out = pathlib.Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        plot_latency_cdf(latencies, str(out / "latency_cdf.png"), trace=args.trace,
                         preset=cost.name, load=args.load)
        print(f"wrote {out / 'summary.json'} and {out / 'latency_cdf.png'}")
    if args.loads:
        rows, _ = sweep_loads(trace, names, settings, args.loads, progress=not args.quiet)
        print(f"{'load':>5s} {'req/s':>6s} {'policy':12s} {'mean lat':>9s} {'p99':>9s} "
              f"{'mean TTFT':>10s}")
        for r in rows:
            print(f"{r['load']:5.2f} {r['rate_req_s']:6.2f} {r['policy']:12s} "
                  f"{r['latency_s_mean']:9.2f} {r['latency_s_p99']:9.2f} {r['ttft_s_mean']:10.3f}")
        if out:
            (out / "rate_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
            write_csv(out / "rate_sweep.csv", rows)
            plot_rate_sweep(rows, str(out / "rate_sweep.png"), trace=args.trace,
                            preset=cost.name)
            print(f"wrote {out / 'rate_sweep.json'}, .csv and .png")
    return 0


def cmd_tune_c(args: argparse.Namespace) -> int:
    from trail.sim.compare import at_load, sweep_c
    from trail.sim.plots import plot_sweep

    cost, trace, settings = (args.checked[k] for k in ("cost", "trace", "settings"))
    scaled, cap = at_load(trace, settings)
    sweep = sweep_c(scaled, settings, args.c, progress=not args.quiet)
    print(f"TRAIL on {args.trace} ({len(trace)} requests) at load {args.load}, {cost.name}:")
    print(f"{'c':>5s} {'mean lat':>9s} {'p99':>9s} {'mean TTFT':>10s} {'preempt':>8s} "
          f"{'M/G/1 (tokens)':>15s}")
    for r in sweep["rows"]:
        print(f"{r['c']:5.2f} {r['latency_s_mean']:9.2f} {r['latency_s_p99']:9.2f} "
              f"{r['ttft_s_mean']:10.3f} {r['preemptions']:8d} "
              f"{r['theory_mean_response_tokens']:15.1f}")
    print(f"recommended c = {sweep['recommended_c']} (simulation); "
          f"M/G/1 theory prefers c = {sweep['theory_best_c']}")
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        sweep.update(trace=args.trace, load=args.load, preset=cost.name, capacity_req_s=cap)
        (out / "tune_c.json").write_text(json.dumps(sweep, indent=1) + "\n")
        plot_sweep(sweep, str(out / "latency_vs_c.png"), trace=args.trace, preset=cost.name,
                   load=args.load)
        print(f"wrote {out / 'tune_c.json'} and {out / 'latency_vs_c.png'}")
    return 0


def cmd_theory(args: argparse.Namespace) -> int:
    import numpy as np

    from trail.sim.predictors import PromptOnly
    from trail.sim.theory import (fcfs_mean_response_time, mean_response_time,
                                  sjf_mean_response_time, srpt_mean_response_time)

    sizes = args.checked["trace"].output_tokens.astype(float)
    predicted = None
    if args.prediction_mae > 0:
        predicted, _ = PromptOnly(mae=args.prediction_mae).initial(
            sizes, np.random.default_rng(args.seed))
        predicted = np.maximum(predicted, 1e-9)
    result: dict[str, Any] = {
        "trace": args.trace, "load": args.load, "unit": "tokens of service (M/G/1)",
        "prediction_mae": args.prediction_mae,
        "FCFS": fcfs_mean_response_time(sizes, args.load),
        "SJF": sjf_mean_response_time(sizes, args.load),
        "SRPT": srpt_mean_response_time(sizes, args.load),
        "TRAIL": {str(c): mean_response_time(sizes, args.load, c, predicted) for c in args.c}}
    print(f"M/G/1 mean response time on {args.trace} output lengths at load {args.load} "
          f"(tokens of service; predictions: "
          f"{'exact' if predicted is None else f'MAE {args.prediction_mae}'}):")
    for name in ("FCFS", "SJF", "SRPT"):
        print(f"  {name:6s} {result[name]:10.1f}")
    for c, v in result["TRAIL"].items():
        print(f"  TRAIL c={c:<5s} {v:10.1f}")
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "theory.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _check_sim(args: argparse.Namespace) -> dict[str, Any]:
    """simulate and tune-c: the cost model, the trace and the settings, as the run uses them."""
    import trail_ext as te
    from trail.policies import canonical_name
    from trail.sim.compare import SimSettings, setup

    cost, trace = _sim_inputs(args)
    where = f"--trace {args.trace}" + (f" --limit {args.limit}" if args.limit else "")
    if len(trace) < 2 or trace.duration_s <= 0:
        raise ValueError(f"{where}: {len(trace)} request(s) over {trace.duration_s:g} s; "
                         f"a load needs at least 2 requests that do not all arrive at once")
    if args.command == "simulate":
        if not args.compare:
            try:
                canonical_name(args.policy)
            except ValueError as exc:
                raise ValueError(f"--policy {args.policy}: {exc}") from None
        settings = _sim_settings(args, cost)
    else:
        settings = SimSettings(cost=cost, load=args.load, max_running=args.max_running,
                               predict_every=args.predict_every, seed=args.seed)
    kv = cost.kv_capacity_tokens(settings.kv_utilization)
    if settings.block_size > kv:
        raise ValueError(f"--block-size {settings.block_size}: larger than the KV cache of "
                         f"{cost.name} ({kv} tokens)")
    longest = int(trace.prompt_tokens.max()) + int(trace.output_tokens.max())
    if -(-longest // settings.block_size) > kv // settings.block_size:
        raise ValueError(f"{where}: the longest prompt plus the longest output ({longest} "
                         f"tokens) do not fit in the KV cache of {cost.name} ({kv} tokens)")
    try:
        te.Scheduler(setup("TRAIL", settings).config)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the scheduler refuses these settings: {exc}") from None
    return {"cost": cost, "trace": trace, "settings": settings}


def _check_theory(args: argparse.Namespace) -> dict[str, Any]:
    from trail.sim.traces import load_trace

    return {"trace": load_trace(args.trace)}


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags of a simulated run that simulate and tune-c share: trace, load, cost model,
    batch, probe refresh, seed."""
    p.add_argument("--trace", default="azure-conv",
                   help="azure-conv, azure-code, or a CSV arrival_s,prompt_tokens,output_tokens")
    p.add_argument("--load", type=float, default=0.8,
                   help="arrival rate as a fraction of the saturated capacity")
    p.add_argument("--preset", default="llama3-8b-a100-80gb",
                   help="cost-model preset name or a preset JSON file")
    p.add_argument("--max-running", type=int, default=48,
                   help="batch slots: requests decoded together (default 48)")
    p.add_argument("--predict-every", type=int, default=8,
                   help="tokens between probe refreshes of a running request (default 8)")
    p.add_argument("--limit", type=int, default=None, help="use the first N requests")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the simulated prediction errors (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_commands(sub: Any) -> None:
    """The simulation and theory subcommands."""
    p: argparse.ArgumentParser
    p = sub.add_parser("simulate", help="replay a trace through the scheduler on a cost model")
    _add_run_flags(p)
    p.add_argument("--policy", default=None,
                   help="FCFS, SJF (the paper's prompt-only baseline), SJF-work (SJF with "
                        "TRAIL's key), SRPT, TRAIL-paper (the paper's rule), TRAIL (the "
                        "recommended settings), TRAIL+ (TRAIL on true lengths), LTR or MLFQ; "
                        "any case (default TRAIL)")
    p.add_argument("--compare", action="store_true",
                   help="run FCFS, SJF, SJF-work, TRAIL-paper, TRAIL, TRAIL+, LTR and MLFQ "
                        "side by side")
    p.add_argument("--c", type=float, default=None,
                   help="TRAIL's limited-preemption factor, in [0, 1] (default: TRAIL's "
                        "recommended setting, trail.policies.TRAIL_SETTINGS)")
    p.add_argument("--block-size", type=int, default=16,
                   help="KV-cache block size in tokens (default 16)")
    p.add_argument("--max-preemptions", type=int, default=None,
                   help="preemptions a request may suffer (-1: unbounded; default: each "
                        "set-up's own, unbounded; TRAIL-paper: always unbounded)")
    p.add_argument("--starvation-steps", type=int, default=None,
                   help="aging guard: run a request first once it has waited this many "
                        "iterations (every set-up but TRAIL-paper; 0: off; default: each "
                        "set-up's own: off, MLFQ's FastServe's 3 s)")
    p.add_argument("--prefill-weight", default=None, metavar="BETA",
                   help="TRAIL's work-aware key (also SJF-work's, SRPT's): add BETA x prompt "
                        "tokens still to prefill; 'auto' derives it from the cost model "
                        "(default: TRAIL_SETTINGS, auto)")
    add_trail_key_flags(p)
    p.add_argument("--kv-aware", action=argparse.BooleanOptionalAction, default=None,
                   help="fill only while the batch's predicted KV (tokens + predicted "
                        "remaining) fits, so growth never forces an eviction (default: "
                        "TRAIL_SETTINGS, on)")
    p.add_argument("--rank", choices=("mean", "gittins"), default=None,
                   help="what TRAIL (and SJF-work, SRPT) feed the scheduler: the predicted "
                        "length (mean) or the Gittins rank of the predictor's belief "
                        "(default: TRAIL_SETTINGS)")
    p.add_argument("--corr-tokens", type=float, default=None, metavar="L",
                   help="correlation length in tokens of a request's simulated probe error "
                        "(AR(1) across refreshes; 0: independent; default "
                        "trail.sim.predictors.DEFAULT_CORR_TOKENS, measured on the demo model)")
    p.add_argument("--loads", type=floats, default=None,
                   help="also sweep these loads, e.g. 0.5,0.7,0.9 (Figure 6: rate_sweep.*)")
    p.add_argument("--out", default=None,
                   help="write DIR/summary.json, latency_cdf.png (and rate_sweep.* with --loads)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("tune-c", help="sweep TRAIL's c by simulation and theory; recommend one")
    _add_run_flags(p)
    p.add_argument("--c", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                   help="the values of c to try, each in [0, 1]")
    p.add_argument("--out", default=None, help="write DIR/tune_c.json and DIR/latency_vs_c.png")
    p.set_defaults(func=cmd_tune_c)

    p = sub.add_parser("theory", help="M/G/1 mean response time of TRAIL vs c (SOAP)")
    p.add_argument("--trace", default="azure-conv", help="whose output lengths are the sizes")
    p.add_argument("--load", type=float, default=0.8, help="server utilisation ρ, below 1")
    p.add_argument("--c", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.8, 1.0],
                   help="the values of TRAIL's c to evaluate, each in [0, 1]")
    p.add_argument("--prediction-mae", type=float, default=0.0,
                   help="noisy predictions with this MAE in tokens (0: exact)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the noisy predictions (default 0)")
    p.add_argument("--out", default=None, help="write DIR/theory.json")
    p.set_defaults(func=cmd_theory)


RULES: dict[str, dict[str, Rule]] = {
    "simulate": {"c": UNIT_C, "load": LOAD, "max_running": POSITIVE, "block_size": POSITIVE,
                 "predict_every": POSITIVE, "limit": POSITIVE, "seed": SEED,
                 "max_preemptions": (lambda v: v >= -1, "an integer >= -1 (-1: unbounded)"),
                 "starvation_steps": NATURAL, "prefill_weight": AUTO, "aging_rate": AUTO,
                 "boost_gamma": AUTO, "preempt_margin": AUTO, "corr_tokens": FINITE_NONNEG,
                 "loads": LOAD},
    "tune-c": {"load": LOAD, "c": UNIT_C, "max_running": POSITIVE, "predict_every": POSITIVE,
               "limit": POSITIVE, "seed": SEED},
    "theory": {"load": (lambda v: 0 < v < 1, "in (0, 1) (the M/G/1 queue is unstable at 1)"),
               "c": UNIT_C, "prediction_mae": FINITE_NONNEG, "seed": SEED},
}
CHECKS = {"simulate": _check_sim, "tune-c": _check_sim, "theory": _check_theory}
CONDITIONAL: tuple[Conditional, ...] = (
    ("simulate", "policy", "TRAIL", lambda a: not a.compare, "no --compare"),
)
