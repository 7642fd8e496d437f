"""The `trail` command line: the demo, probes, simulation, theory and microbenchmarks.

    trail demo [--quick] --out runs/demo
    trail collect --model demo --prompts demo:2000 --out runs/collect --profile
    trail train-probe --data runs/collect --layer 2 --out runs/probe
    trail eval-probe --data runs/collect --out runs/eval
    trail demo-model --out runs/demo
    trail simulate --trace azure-conv --policy trail --c 0.8 --load 0.8 [--compare]
    trail tune-c --trace azure-conv --load 0.8
    trail theory --trace azure-conv --load 0.8
    trail bench [--device cuda] [--out DIR]

Every subcommand takes --help. Errors print one line and exit with status 1 (2 for bad
command-line usage).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
from typing import Any, Callable, Sequence


def _load_model(spec: str, seed: int) -> tuple[Any, Any, str]:
    """(model, tokenizer, model_id) for 'demo', 'smollm2-135m-instruct' or a save_pretrained
    folder (checked before by _model_shape)."""
    from trail.models import load_model, model_id

    model, tokenizer = load_model(spec, seed=seed)
    return model, tokenizer, model_id(spec, seed)


def _model_shape(spec: str, seed: int) -> tuple[int, int]:
    """(layers, hidden size) of --model, read from its config.json (checked) without loading
    or training it: 'demo' is the cached demo model of `seed`, or the one that would be
    trained."""
    from trail.models.demo.cache import REPORT_FILE, demo_path, read_model_config, read_report

    from trail.models import smollm2

    if spec == "demo":
        path = demo_path(seed)
        if not (path / REPORT_FILE).is_file():
            from trail.models.demo.train import HIDDEN_SIZE, NUM_LAYERS

            return NUM_LAYERS, HIDDEN_SIZE
        read_report(path)
    elif spec == smollm2.NAME:
        path = smollm2.converted_path()
        if not smollm2.is_converted(path):
            smollm2.require_gguf_support()  # fail now, not after other work
            return smollm2.NUM_LAYERS, smollm2.HIDDEN_SIZE
    else:
        path = pathlib.Path(spec)
        if not path.is_dir():
            raise FileNotFoundError(f"--model {spec}: not 'demo', not "
                                    f"'{smollm2.NAME}' and not a save_pretrained folder")
    cfg = read_model_config(path)
    return cfg["num_hidden_layers"], cfg["hidden_size"]


def _has_chat_template(spec: str) -> bool:
    """Whether --model's tokenizer has a chat template, from its files (nothing loaded)."""
    from trail.models import smollm2

    if spec == "demo":
        return False  # the demo language has no turns
    if spec == smollm2.NAME:
        return True
    folder = pathlib.Path(spec)
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get(
            "chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def _prompts(spec: str, seed: int) -> list[str]:
    """Prompts from a JSONL file, or `demo:N` for N prompts of the demo language."""
    from trail.training.collect import read_prompts

    n = _demo_prompt_count(spec)
    if n is not None:
        from trail.models.demo import sample_prompts

        return [p.text for p in sample_prompts(n, seed=seed)]
    path = pathlib.Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--prompts {spec}: no such file (or use demo:N)")
    if not path.is_file():
        raise ValueError(f"--prompts {spec}: not a file (a JSONL prompt file, or demo:N)")
    return read_prompts(path)


def _demo_prompt_count(spec: str) -> int | None:
    """N of --prompts demo:N (None for a file), checked to be an integer >= 1."""
    if not spec.startswith("demo:"):
        return None
    text = spec.split(":", 1)[1]
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--prompts {spec}: expected demo:N with N an integer") from None
    if n < 1:
        raise ValueError(f"--prompts {spec}: N must be >= 1")
    return n


def cmd_collect(args: argparse.Namespace) -> int:
    from trail.training.collect import collect

    checked = args.checked
    model, tokenizer, model_id = _load_model(args.model, args.demo_seed)
    prompts = checked["prompts"] or _prompts(args.prompts, args.seed)
    if args.limit is not None:
        prompts = prompts[: args.limit]
    manifest = collect(model, tokenizer, prompts, args.out, checked["cfg"], model_id=model_id,
                       progress=not args.quiet)
    print(f"collected {len(manifest['done'])} of {len(prompts)} requests "
          f"({len(manifest['skipped'])} skipped) for layers {manifest['layers']} in {args.out}")
    return 0


def _train_config(args: argparse.Namespace) -> Any:
    from trail.training.train import TrainConfig

    return TrainConfig(hidden_dim=args.hidden_dim, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       val_fraction=args.val_fraction, seed=args.seed)


def cmd_train_probe(args: argparse.Namespace) -> int:
    from trail.training.collect import load_samples, read_manifest
    from trail.training.train import train_probe

    bins = _bins(args, args.bins)
    manifest = read_manifest(args.data)
    samples = load_samples(args.data, args.layer)
    probe, report = train_probe(samples, args.layer, bins, _train_config(args),
                                manifest.get("model_id", ""), progress=not args.quiet)
    out = probe.save(args.out)
    (out / "training_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"probe for layer {args.layer}: validation MAE {report['val_mae']:.2f} tokens, "
          f"accuracy {report['val_accuracy']:.3f}; saved to {out}")
    return 0


def cmd_eval_probe(args: argparse.Namespace) -> int:
    from trail.training.evaluate import evaluate

    baseline = {"auto": None, "on": True, "off": False}[args.baseline]
    report = evaluate(args.data, args.out, layers=args.layers, cfg=_train_config(args),
                      num_bins=args.num_bins, max_len=args.max_len, baseline=baseline,
                      progress=not args.quiet)
    mae = report["mae"]
    print(f"best layer {report['best_layer']}; MAE (tokens): " +
          ", ".join(f"{k} {v:.2f}" for k, v in mae.items()) + f"; report in {args.out}")
    return 0


def cmd_demo_model(args: argparse.Namespace) -> int:
    from trail.demo import measure_lengths
    from trail.models.demo import load_demo

    model, tokenizer = load_demo(seed=args.seed, progress=not args.quiet)
    params = sum(p.numel() for p in model.parameters())
    print(f"demo model (seed {args.seed}): {params:,} parameters, "
          f"{model.config.num_hidden_layers} layers")
    if args.measure:
        stats = measure_lengths(model, tokenizer, n=args.measure, seed=args.seed)
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "demo_lengths.json").write_text(json.dumps(stats, indent=1, default=str) + "\n")
        print(json.dumps({k: v for k, v in stats.items() if not isinstance(v, (list, dict))},
                         indent=1, default=str))
    return 0


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


def _floats(text: str) -> list[float]:
    """Comma-separated numbers, for flags like --loads 0.5,0.7,0.9 (no empty items)."""
    try:
        return [float(v) for v in _items(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def _ints(text: str) -> list[int]:
    """Comma-separated integers, for flags like --batches 1,8,64 (no empty items)."""
    try:
        return [int(v) for v in _items(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _items(text: str) -> list[str]:
    """The items of a comma-separated list; ValueError for an empty list or an empty item."""
    items = [v.strip() for v in text.split(",")]
    if not all(items):
        raise ValueError(text)
    return items


def _sim_settings(args: argparse.Namespace, cost: Any) -> Any:
    """SimSettings from the flags; TRAIL's settings not given stay at TRAIL_DEFAULTS."""
    from trail.sim.compare import SimSettings

    trail = {k: v for k, v in (("c", args.c), ("prefill_weight", args.prefill_weight),
                               ("aging_rate", args.aging_rate),
                               ("preempt_margin", args.preempt_margin), ("rank", args.rank),
                               ("kv_aware", args.kv_aware),
                               ("corr_tokens", args.corr_tokens)) if v is not None}
    return SimSettings(cost=cost, load=args.load, max_running=args.max_running,
                       block_size=args.block_size, predict_every=args.predict_every,
                       seed=args.seed, max_preemptions=args.max_preemptions,
                       starvation_steps=args.starvation_steps, **trail)


def cmd_simulate(args: argparse.Namespace) -> int:
    from trail.sim.compare import (
        COMPARE,
        at_load,
        canonical_name,
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
    effective = {name: describe(setup(name, settings)) for name in names}
    scaled, cap = at_load(trace, settings)
    beta = settings.beta
    summary: dict[str, Any] = {"policies": {}, "load": args.load, "seed": args.seed,
                               "trace": args.trace, "requests": len(trace), "preset": cost.name,
                               "capacity_req_s": cap, "rate_req_s": scaled.rate,
                               "max_running": args.max_running,
                               "max_preemptions": args.max_preemptions,
                               "starvation_steps": args.starvation_steps,
                               "predict_every": settings.predict_every,
                               "corr_tokens": settings.corr_tokens,
                               # TRAIL's settings; every policy's are under policy_settings
                               "c": settings.c, "prefill_weight": beta,
                               "aging_rate": settings.alpha,
                               "preempt_margin": settings.preempt_margin,
                               "rank": settings.rank, "kv_aware": settings.kv_aware,
                               "policy_settings": effective}
    print(f"{args.trace}: {len(trace)} requests at load {args.load} "
          f"({scaled.rate:.2f} req/s of a {cap:.2f} req/s capacity), {cost.name}")
    print(f"TRAIL's key: size + {beta:.4g} x pending prefill + {settings.alpha:.4g} x "
          f"arrival; preemption margin {settings.preempt_margin:.4g}; rank {settings.rank}; "
          f"c {settings.c:.4g}; probe error correlation {settings.corr_tokens:.4g} tokens")
    print(f"{'policy':12s} {'mean lat':>9s} {'p50':>8s} {'p99':>9s} {'mean TTFT':>10s} "
          f"{'tok/s':>8s} {'preempt':>8s}  settings")
    latencies = {}
    for name in names:
        result = run(scaled, name, settings, progress=not args.quiet)
        latencies[name] = result.finish - result.arrival
        row = summary_row(result)
        summary["policies"][name] = row
        print(f"{name:12s} {row['mean_latency_s']:9.2f} {row['p50_latency_s']:8.2f} "
              f"{row['p99_latency_s']:9.2f} {row['mean_ttft_s']:10.3f} "
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
                  f"{r['mean_latency_s']:9.2f} {r['p99_latency_s']:9.2f} {r['mean_ttft_s']:10.3f}")
        if out:
            (out / "rate_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
            _write_csv(out / "rate_sweep.csv", rows)
            plot_rate_sweep(rows, str(out / "rate_sweep.png"), trace=args.trace,
                            preset=cost.name)
            print(f"wrote {out / 'rate_sweep.json'}, .csv and .png")
    return 0


def _write_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    """Rows of one shape as CSV with a header."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _demo_config(args: argparse.Namespace) -> Any:
    """DemoConfig from the flags given (the rest: DemoConfig's or quick()'s defaults)."""
    from trail.demo.end_to_end import DemoConfig

    fields = {k: v for k, v in (("model", args.model), ("prompts", args.prompts),
                                ("profile_prompts", args.profile_prompts),
                                ("predictors", args.predictors),
                                ("seed", args.seed), ("load", args.load),
                                ("workload", args.requests), ("c", args.c),
                                ("max_running", args.max_running), ("clock", args.clock),
                                ("threads", args.threads), ("aging_rate", args.aging_rate),
                                ("preempt_margin", args.preempt_margin), ("rank", args.rank),
                                ("prefill_weight", args.prefill_weight)) if v is not None}
    return DemoConfig.quick(**fields) if args.quick else DemoConfig(**fields)


def cmd_demo(args: argparse.Namespace) -> int:
    from trail.demo.end_to_end import run_demo, table

    cfg = args.checked["cfg"]
    summary = run_demo(cfg, args.out, progress=not args.quiet)
    print()
    print(table(summary))
    print(f"\nprobe MAE {summary['probe_mae']:.1f} tokens vs prompt-only "
          f"{summary['prompt_only_mae']:.1f}; {summary['seconds']['total_s']:.0f} s on "
          f"{summary['machine']}")
    if cfg.clock == "virtual" and cfg.model == "demo":
        print("latencies on the virtual clock (the demo model's frozen step cost): the same "
              "on a busy or a quiet machine; --clock wall times the machine instead")
    elif cfg.clock == "virtual":
        print(f"latencies on a virtual clock fitted to this machine's first pass (R² "
              f"{summary['clock']['r2']:.3f}); --clock wall times every pass instead")
    print(f"wrote {args.out}/summary.json, results.csv, latency_cdf.png, predictions.png")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from trail.microbench import C, WARMUP, bench_probe, bench_scheduler

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = args.device
    result: dict[str, Any] = {"device": device}
    print(f"probe_step (D={args.hidden}, H=512, K=10) on {device}: median of {args.repeats}")
    print(f"{'batch':>6s} {'op us':>10s} {'reference us':>13s} {'us/token':>9s} {'speedup':>8s} "
          f"{'+gittins us':>12s}")
    result["probe"] = bench_probe(args.batches, d=args.hidden, device=device,
                                  repeats=args.repeats)
    for r in result["probe"]:
        print(f"{r['batch']:6d} {r['op_us']:10.1f} {r['reference_us']:13.1f} "
              f"{r['op_us_per_token']:9.2f} {r['speedup']:7.2f}x {r['op_rank_us']:12.1f}")
    # The measure of the project's bench/bench_scheduler.py and the README's table.
    print(f"\nscheduler: one serving-loop iteration of trail_ext.Scheduler = schedule + "
          f"on_step + update_predictions\nfor {args.running} running requests, then add of "
          f"as many new ones as finished; W more waiting;\nTRAIL, c = {C}, {args.scenario} "
          f"state (timed after {WARMUP:,} untimed iterations), median of 3,000 (750 above "
          f"W = 10,000).\n'iteration' includes the driver's own numpy work, timed alone with a "
          f"no-op scheduler as 'driver'.")
    print(f"{'W waiting':>10s} {'iteration us':>13s} {'driver us':>10s} {'scheduler us':>13s} "
          f"{'preempt/it':>11s} {'finished/it':>12s}")
    result["scheduler"] = []
    for w in args.waiting:
        r = bench_scheduler(args.running, w, scenario=args.scenario)
        result["scheduler"].append(r)
        print(f"{w:10,d} {r['iteration_us']:13.1f} {r['driver_us']:10.1f} "
              f"{r['iteration_us'] - r['driver_us']:13.1f} {r['preemptions_per_iter']:11.2f} "
              f"{r['finished_per_iter']:12.2f}", flush=True)
    if args.out:
        from trail.provenance import describe

        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result["machine"] = describe()
        (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out / 'bench.json'}")
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
        print(f"{r['c']:5.2f} {r['mean_latency_s']:9.2f} {r['p99_latency_s']:9.2f} "
              f"{r['mean_ttft_s']:10.3f} {r['preemptions']:8d} "
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


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (the paper's recipe by default)")
    g.add_argument("--hidden-dim", type=int, default=512,
                   help="width of the probe's hidden layer (default 512)")
    g.add_argument("--epochs", type=int, default=30, help="passes over the training samples")
    g.add_argument("--batch-size", type=int, default=32, help="samples per optimizer step")
    g.add_argument("--lr", type=float, default=0.01, help="peak learning rate (cosine to 0)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of requests held out (split by request)")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds the train/validation split, initialisation and batch order")
    g.add_argument("--num-bins", type=int, default=10,
                   help="length bins K: the probe's classes (default 10)")
    g.add_argument("--max-len", type=float, default=None,
                   help="uniform bins over 0..max-len (default 512)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `trail` and its subcommands."""
    parser = argparse.ArgumentParser(prog="trail", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("collect", help="store hidden states with true remaining lengths")
    p.add_argument("--model", default="demo",
                   help="'demo', 'smollm2-135m-instruct' or a save_pretrained folder")
    p.add_argument("--demo-seed", type=int, default=None,
                   help="which demo model (with --model demo; default 0)")
    p.add_argument("--prompts", default="demo:2000",
                   help="JSONL (or a JSON array) with 'prompt' (or Alpaca "
                        "'instruction'/'input'), or demo:N")
    p.add_argument("--out", required=True,
                   help="collection directory; rerun into it to resume after an interrupt")
    layers = p.add_mutually_exclusive_group()
    layers.add_argument("--layers", type=_ints, help="comma-separated layer indices")
    layers.add_argument("--profile", action="store_true", help="every layer")
    p.add_argument("--samples", type=int, default=16, help="decode steps kept per request")
    p.add_argument("--max-new-tokens", type=int, default=512,
                   help="longest answer generated, in tokens (default 512)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="nucleus sampling: smallest token set of this probability (1.0: off)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds sampling, the decode steps kept and demo:N prompts (default 0)")
    p.add_argument("--max-running", type=int, default=32,
                   help="requests generated together in one batch (default 32)")
    p.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    p.add_argument("--window", type=int, default=0, metavar="W",
                   help="also store the mean of each request's last W decode states with "
                        "every sample (the windowed probe input; default 0: off)")
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                   help="format each prompt as a user turn with the tokenizer's chat "
                        "template (default: when the tokenizer has one)")
    p.add_argument("--checkpoint-every", type=int, default=64, metavar="N",
                   help="write a shard every N finished requests, so a kill loses fewer "
                        "(default 64; Ctrl-C keeps every finished one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("train-probe", help="train a probe on a collection for one layer")
    p.add_argument("--data", required=True, help="a `trail collect` directory")
    p.add_argument("--layer", type=int, required=True,
                   help="the layer whose hidden states the probe reads (one of the collected)")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--bins", choices=["uniform", "geometric"], default="uniform",
                   help="length bins: uniform over 0..--max-len (default), or geometric "
                        "(edges 0, 2, 4, 8, ...)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_train_flags(p)
    p.set_defaults(func=cmd_train_probe)

    p = sub.add_parser("eval-probe", help="MAE per layer, refinement, baseline, error profile")
    p.add_argument("--data", required=True, help="a `trail collect` directory")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--layers", type=_ints, default=None, help="default: all collected")
    p.add_argument("--baseline", choices=["auto", "on", "off"], default="auto",
                   help="the MiniLM prompt-only baseline (auto: if installed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_train_flags(p)
    p.set_defaults(func=cmd_eval_probe)

    p = sub.add_parser("demo-model", help="train (or load from cache) the demo model")
    p.add_argument("--seed", type=int, default=0,
                   help="which demo model: its training seed (default 0)")
    p.add_argument("--measure", type=int, default=0,
                   help="also generate N answers at temperature 1 and report their lengths")
    p.add_argument("--out", default=None,
                   help="where --measure writes demo_lengths.json (default runs/demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo_model)

    p = sub.add_parser("simulate", help="replay a trace through the scheduler on a cost model")
    p.add_argument("--trace", default="azure-conv",
                   help="azure-conv, azure-code, or a CSV arrival_s,prompt_tokens,output_tokens")
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
                        "recommended setting, trail.sim.compare.TRAIL_DEFAULTS)")
    p.add_argument("--load", type=float, default=0.8,
                   help="arrival rate as a fraction of the saturated capacity")
    p.add_argument("--preset", default="llama3-8b-a100-80gb",
                   help="cost-model preset name or a preset JSON file")
    p.add_argument("--max-running", type=int, default=48,
                   help="batch slots: requests decoded together (default 48)")
    p.add_argument("--block-size", type=int, default=16,
                   help="KV-cache block size in tokens (default 16)")
    p.add_argument("--predict-every", type=int, default=8,
                   help="tokens between probe refreshes of a running request (default 8)")
    p.add_argument("--limit", type=int, default=None, help="use the first N requests")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the simulated prediction errors (default 0)")
    p.add_argument("--max-preemptions", type=int, default=-1,
                   help="preemptions a request may suffer (-1: unbounded; TRAIL-paper: "
                        "always unbounded)")
    p.add_argument("--starvation-steps", type=int, default=0,
                   help="aging guard: run a request first once it has waited this many "
                        "iterations (size-based policies but TRAIL-paper; 0: off)")
    p.add_argument("--prefill-weight", default=None, metavar="BETA",
                   help="TRAIL's work-aware key (also SJF-work's, SRPT's): add BETA x prompt "
                        "tokens still to prefill; 'auto' derives it from the cost model "
                        "(default: TRAIL_DEFAULTS, auto)")
    p.add_argument("--aging-rate", default=None, metavar="ALPHA",
                   help="add ALPHA x arrival (tokens per second) to those keys; 'auto': 2%% "
                        "of one request's decode speed at a full batch (default: "
                        "TRAIL_DEFAULTS, auto)")
    p.add_argument("--preempt-margin", type=float, default=None,
                   help="preempt for rank only past this key gap, in tokens (default: "
                        "TRAIL_DEFAULTS)")
    p.add_argument("--kv-aware", action=argparse.BooleanOptionalAction, default=None,
                   help="fill only while the batch's predicted KV (tokens + predicted "
                        "remaining) fits, so growth never forces an eviction (default: "
                        "TRAIL_DEFAULTS, on)")
    p.add_argument("--rank", choices=("mean", "gittins"), default=None,
                   help="what TRAIL (and SJF-work, SRPT) feed the scheduler: the predicted "
                        "length (mean) or the Gittins rank of the predictor's belief "
                        "(default: TRAIL_DEFAULTS)")
    p.add_argument("--corr-tokens", type=float, default=None, metavar="L",
                   help="correlation length in tokens of a request's simulated probe error "
                        "(AR(1) across refreshes; 0: independent; default "
                        "trail.sim.predictors.DEFAULT_CORR_TOKENS, measured on the demo model)")
    p.add_argument("--loads", type=_floats, default=None,
                   help="also sweep these loads, e.g. 0.5,0.7,0.9 (Figure 6: rate_sweep.*)")
    p.add_argument("--out", default=None,
                   help="write DIR/summary.json, latency_cdf.png (and rate_sweep.* with --loads)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("tune-c", help="sweep TRAIL's c by simulation and theory; recommend one")
    p.add_argument("--trace", default="azure-conv",
                   help="azure-conv, azure-code, or a CSV arrival_s,prompt_tokens,output_tokens")
    p.add_argument("--load", type=float, default=0.8,
                   help="arrival rate as a fraction of the saturated capacity")
    p.add_argument("--c", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
                   help="the values of c to try, each in [0, 1]")
    p.add_argument("--preset", default="llama3-8b-a100-80gb",
                   help="cost-model preset name or a preset JSON file")
    p.add_argument("--max-running", type=int, default=48,
                   help="batch slots: requests decoded together (default 48)")
    p.add_argument("--predict-every", type=int, default=8,
                   help="tokens between probe refreshes of a running request (default 8)")
    p.add_argument("--limit", type=int, default=None, help="use the first N requests")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the simulated prediction errors (default 0)")
    p.add_argument("--out", default=None, help="write DIR/tune_c.json and DIR/latency_vs_c.png")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_tune_c)

    p = sub.add_parser("demo", help="the whole system end to end: FCFS, SJF, SJF-work, LTR, "
                                    "TRAIL-paper, TRAIL, TRAIL+, MLFQ through the engine on "
                                    "the demo model (or --model)")
    p.add_argument("--quick", action="store_true", help="reduced run (~1.5 min, for smoke tests)")
    p.add_argument("--model", default=None,
                   help="'demo' (default), 'smollm2-135m-instruct' or a save_pretrained "
                        "folder (then --prompts is needed)")
    p.add_argument("--prompts", default=None,
                   help="JSONL prompts for a model other than demo: the first ones train the "
                        "predictors, the next --requests are served")
    p.add_argument("--profile-prompts", type=int, default=None, metavar="N",
                   help="answers collected to train the probe and the prompt-only and LTR "
                        "predictors (default 1000, --quick 250; at least 20)")
    p.add_argument("--predictors", default=None, metavar="DIR",
                   help="a `trail eval-probe` folder (with ltr/, as bench/real_probe_study.py "
                        "writes) trained on this model: used instead of training here; the "
                        "first --profile-prompts prompts are skipped")
    p.add_argument("--out", default="runs/demo", help="results directory")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds the demo model, the prompts and sampling (default 0)")
    p.add_argument("--load", type=float, default=None,
                   help="arrival rate / saturated FCFS throughput (default 0.9)")
    p.add_argument("--requests", type=int, default=None,
                   help="requests served per policy (default 800, --quick 150)")
    p.add_argument("--c", type=float, default=None,
                   help="TRAIL's c, in [0, 1] (default 0.8)")
    p.add_argument("--max-running", type=int, default=None, help="batch slots (default 8)")
    p.add_argument("--clock", choices=("virtual", "wall"), default=None,
                   help="virtual (default): time advances by the demo model's frozen step "
                        "cost, so the table does not depend on the machine's load; wall: "
                        "real time")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for collection, probe training and serving (default 1)")
    p.add_argument("--prefill-weight", default=None, metavar="BETA",
                   help="TRAIL's β: a number, or 'auto' (default: learned by the engine from "
                        "its step costs)")
    p.add_argument("--aging-rate", default=None, metavar="ALPHA",
                   help="TRAIL's aging, tokens per second, or 'auto': 2%% of one request's "
                        "decode speed (default: auto)")
    p.add_argument("--preempt-margin", type=float, default=None,
                   help="TRAIL's preemption margin in tokens (default: DemoConfig's)")
    p.add_argument("--rank", choices=("mean", "gittins"), default=None,
                   help="TRAIL ranks by the mean predicted remaining length or the Gittins "
                        "rank of the predicted distribution (default: DemoConfig's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="microbenchmarks: the probe op and the scheduler")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batches", type=_ints, default=[1, 8, 64, 256],
                   help="probe batch sizes, comma-separated (default 1,8,64,256)")
    p.add_argument("--hidden", type=int, default=4096, help="the model's hidden size D")
    p.add_argument("--repeats", type=int, default=50,
                   help="timed probe calls per batch size; the median is shown (default 50)")
    p.add_argument("--running", type=int, default=256,
                   help="requests in the scheduler's running batch (default 256)")
    p.add_argument("--waiting", type=_ints, default=[1000, 10000],
                   help="waiting requests W, comma-separated (default 1000,10000)")
    p.add_argument("--scenario", choices=["steady", "drain"], default="steady",
                   help="steady: the backlog of long jobs an overloaded server settles into "
                        "(default, the README's table); drain: W random requests, a stress test")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    p.add_argument("--out", default=None, help="write DIR/bench.json")
    p.set_defaults(func=cmd_bench)

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
    return parser


# ------------------------------------------------------------------ checks before any work
#
# main() runs _check_args before a command's function: every flag is checked against its rule
# and every file it names is opened and parsed, so bad input fails in a second with one line
# naming the flag and the value, never after minutes of training or simulation. What the
# checks load (prompts, trace, cost model, settings) is kept in args.checked for the command.

Rule = tuple[Callable[[Any], bool], str]
SEED_LIMIT = 2**32
POSITIVE: Rule = (lambda v: v >= 1, "an integer >= 1")
NATURAL: Rule = (lambda v: v >= 0, "an integer >= 0")
SEED: Rule = (lambda v: 0 <= v < SEED_LIMIT, "an integer in [0, 2**32)")
FINITE_NONNEG: Rule = (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
FINITE_POSITIVE: Rule = (lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
UNIT_C: Rule = (lambda v: 0 <= v <= 1, "in [0, 1]")
LOAD: Rule = (lambda v: 0 < v < 1.5, "in (0, 1.5)")
AUTO: Rule = (lambda v: True, "'auto' or a finite number >= 0")  # parsed by _auto_or_number
TRAIN_RULES: dict[str, Rule] = {
    "hidden_dim": POSITIVE, "epochs": POSITIVE, "batch_size": POSITIVE, "lr": FINITE_POSITIVE,
    "weight_decay": FINITE_NONNEG, "val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "seed": SEED, "num_bins": POSITIVE, "max_len": FINITE_POSITIVE}
# The rule of every flag that takes a number, per command (tests/test_cli_errors.py checks
# that none is missing). A list flag's rule holds for each of its values.
RULES: dict[str, dict[str, Rule]] = {
    "collect": {"demo_seed": SEED, "layers": NATURAL, "samples": POSITIVE,
                "max_new_tokens": POSITIVE, "temperature": FINITE_NONNEG,
                "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"), "seed": SEED,
                "max_running": POSITIVE, "limit": POSITIVE, "checkpoint_every": POSITIVE,
                "window": NATURAL},
    "train-probe": {"layer": NATURAL, **TRAIN_RULES},
    "eval-probe": {"layers": NATURAL, **TRAIN_RULES},
    "demo-model": {"seed": SEED, "measure": NATURAL},
    "simulate": {"c": UNIT_C, "load": LOAD, "max_running": POSITIVE, "block_size": POSITIVE,
                 "predict_every": POSITIVE, "limit": POSITIVE, "seed": SEED,
                 "max_preemptions": (lambda v: v >= -1, "an integer >= -1 (-1: unbounded)"),
                 "starvation_steps": NATURAL, "prefill_weight": AUTO, "aging_rate": AUTO,
                 "preempt_margin": FINITE_NONNEG, "corr_tokens": FINITE_NONNEG,
                 "loads": LOAD},
    "tune-c": {"load": LOAD, "c": UNIT_C, "max_running": POSITIVE, "predict_every": POSITIVE,
               "limit": POSITIVE, "seed": SEED},
    "demo": {"seed": SEED, "load": LOAD, "requests": POSITIVE, "c": UNIT_C,
             "profile_prompts": (lambda v: v >= 20, "an integer >= 20"),
             "max_running": POSITIVE, "threads": POSITIVE, "prefill_weight": AUTO,
             "aging_rate": AUTO, "preempt_margin": FINITE_NONNEG},
    "bench": {"batches": POSITIVE, "hidden": POSITIVE, "repeats": POSITIVE,
              "running": POSITIVE, "waiting": NATURAL, "threads": NATURAL},
    "theory": {"load": (lambda v: 0 < v < 1, "in (0, 1) (the M/G/1 queue is unstable at 1)"),
               "c": UNIT_C, "prediction_mae": FINITE_NONNEG, "seed": SEED},
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _auto_or_number(text: str, flag: str) -> float | str:
    """A flag that takes 'auto' or a finite number >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{flag} {text}: must be {AUTO[1]}")
    return value


def _check_rules(args: argparse.Namespace) -> None:
    """Every numeric flag against its rule in RULES ('auto' flags parsed in place)."""
    for dest, (ok, rule) in RULES[args.command].items():
        value = getattr(args, dest)
        if value is None:
            continue
        if RULES[args.command][dest] is AUTO:
            setattr(args, dest, _auto_or_number(value, _flag(dest)))
            continue
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if not ok(v)]  # NaN fails every rule
        if bad and isinstance(value, list):
            raise ValueError(f"{_flag(dest)} {','.join(map(_show, values))}: each value must "
                             f"be {rule}, got {','.join(map(_show, bad))}")
        if bad:
            raise ValueError(f"{_flag(dest)} {_show(value)}: must be {rule}")


def _show(v: float) -> str:
    """A flag's number as typed: 2, not 2.0; integers in full."""
    return str(v) if isinstance(v, int) else f"{v:.15g}"


def _check_out(out: str | None) -> None:
    """--out must be a directory, or creatable: its nearest existing ancestor a writable
    directory."""
    if out is None:
        return
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable")


def _bins(args: argparse.Namespace, kind: str) -> Any:
    """The probe's bins of `kind` from --num-bins and --max-len (ValueError naming them)."""
    from trail.probe import Bins

    k, max_len = args.num_bins, args.max_len
    if kind == "uniform" and max_len / k < 1:
        raise ValueError(f"--num-bins {k} --max-len {max_len:g}: uniform bins would be "
                         f"{max_len / k:.3g} tokens wide; a bin needs at least 1 token")
    try:
        return Bins.uniform(k, max_len) if kind == "uniform" else Bins.geometric(k)
    except (ValueError, OverflowError) as exc:
        flags = (f"--num-bins {k} --max-len {max_len:g}" if kind == "uniform"
                 else f"--num-bins {k} (geometric bins, edges 0, 2, 4, 8, ...)")
        raise ValueError(f"{flags}: {str(exc)[:120]}") from None


def _check_collect(args: argparse.Namespace) -> dict[str, Any]:
    from trail.training.collect import CollectConfig, check_resume

    n_layers, hidden = _model_shape(args.model, args.demo_seed)
    bad = [k for k in args.layers or () if k >= n_layers]
    if bad:
        raise ValueError(f"--layers {','.join(map(str, args.layers))}: the model has "
                         f"{n_layers} layers (0 to {n_layers - 1}), not {bad}")
    if args.chat_template and not _has_chat_template(args.model):
        raise ValueError(f"--chat-template: the tokenizer of --model {args.model} has no chat "
                         f"template")
    n = _demo_prompt_count(args.prompts)
    prompts = None if n is not None else _prompts(args.prompts, args.seed)
    count = n if prompts is None else len(prompts)
    if args.limit is not None:
        count = min(count, args.limit)
    layers = None if args.profile else (args.layers or [n_layers // 3])
    cfg = CollectConfig(layers=layers, samples_per_request=args.samples,
                        max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        top_p=args.top_p, seed=args.seed, max_running=args.max_running,
                        checkpoint_every=args.checkpoint_every, chat_template=args.chat_template,
                        window=args.window)
    check_resume(args.out, list(range(n_layers)) if layers is None else layers, hidden, cfg,
                 count)
    return {"prompts": prompts, "cfg": cfg}


def _check_collection(args: argparse.Namespace, layers: list[int] | None,
                      prompts: bool) -> dict[str, Any]:
    """--data: a collection holding `layers` (every one if None) of at least 2 requests."""
    from trail.training.collect import check_collection, read_manifest

    manifest = read_manifest(args.data)
    flag = "--layer" if args.command == "train-probe" else "--layers"
    bad = [k for k in layers or () if k not in manifest["layers"]]
    if bad:
        raise ValueError(f"{flag} {','.join(map(str, layers or ()))}: {args.data} holds "
                         f"layers {manifest['layers']}, not {bad}")
    check_collection(args.data, layers, prompts=prompts)
    if len(manifest["done"]) < 2:
        raise ValueError(f"--data {args.data}: {len(manifest['done'])} collected requests; "
                         f"training and validation need at least 2")
    return manifest


def _check_train_probe(args: argparse.Namespace) -> dict[str, Any]:
    _bins(args, args.bins)
    _check_collection(args, [args.layer], prompts=False)
    return {}


def _check_eval_probe(args: argparse.Namespace) -> dict[str, Any]:
    _bins(args, "uniform")
    _bins(args, "geometric")
    encoder = False
    if args.baseline != "off":
        from trail.training.prompt_only import encoder_dir

        try:
            encoder_dir()
            encoder = True
        except ImportError as exc:
            if args.baseline == "on":
                raise ImportError(f"--baseline on: {exc}") from None
    _check_collection(args, args.layers, prompts=encoder)
    return {}


def _check_sim(args: argparse.Namespace) -> dict[str, Any]:
    """simulate and tune-c: the cost model, the trace and the settings, as the run uses them."""
    import trail_ext as te
    from trail.sim.compare import SimSettings, canonical_name

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
        te.Scheduler(settings.scheduler(te.Policy.TRAIL))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the scheduler refuses these settings: {exc}") from None
    return {"cost": cost, "trace": trace, "settings": settings}


def _check_theory(args: argparse.Namespace) -> dict[str, Any]:
    from trail.sim.traces import load_trace

    return {"trace": load_trace(args.trace)}


def _check_demo(args: argparse.Namespace) -> dict[str, Any]:
    cfg = _demo_config(args)
    if cfg.predictors is not None:
        d = pathlib.Path(cfg.predictors)
        for need in ("report.json", "ltr/ltr.json", "prompt_only"):
            if not (d / need).exists():
                raise FileNotFoundError(f"--predictors {d}: lacks {need} (a `trail "
                                        f"eval-probe` folder with an ltr/ predictor)")
    if cfg.model != "demo":
        _model_shape(cfg.model, cfg.seed)  # the model exists (or can be converted)
        n = len(_prompts(cfg.prompts, cfg.seed))
        if n < cfg.profile_prompts + cfg.workload:
            raise ValueError(f"--prompts {cfg.prompts}: {n} prompts, the demo needs "
                             f"{cfg.profile_prompts} to train its predictors (--profile-prompts) "
                             f"+ {cfg.workload} to serve (--requests)")
    return {"cfg": cfg}


def _check_bench(args: argparse.Namespace) -> dict[str, Any]:
    device = args.device
    if device == "cpu":
        return {}
    kind, colon, index = device.partition(":")
    if kind != "cuda" or (colon and not index.isdigit()):
        raise ValueError(f"--device {device}: expected cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available here")
    if index and int(index) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: there are {torch.cuda.device_count()} CUDA "
                         f"devices (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return {}


CHECKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "collect": _check_collect, "train-probe": _check_train_probe,
    "eval-probe": _check_eval_probe, "demo-model": lambda args: {},
    "simulate": _check_sim, "tune-c": _check_sim, "demo": _check_demo,
    "bench": _check_bench, "theory": _check_theory}


# Flags that only act with another one: (command, flag's dest, default, whether it acts,
# what it needs). Their parser default is None, so a flag given where it does nothing is
# refused instead of ignored; otherwise it gets its default here.
CONDITIONAL: tuple[tuple[str, str, Any, Callable[[argparse.Namespace], bool], str], ...] = (
    ("collect", "demo_seed", 0, lambda a: a.model == "demo", "--model demo"),
    ("train-probe", "max_len", 512.0, lambda a: a.bins == "uniform", "--bins uniform"),
    ("eval-probe", "max_len", 512.0, lambda a: True, ""),
    ("simulate", "policy", "TRAIL", lambda a: not a.compare, "no --compare"),
    ("demo-model", "out", "runs/demo", lambda a: a.measure > 0, "--measure N"),
)


def _check_conditional(args: argparse.Namespace) -> None:
    for command, dest, default, acts, needs in CONDITIONAL:
        if command != args.command:
            continue
        value = getattr(args, dest)
        if value is not None and not acts(args):
            shown = value if isinstance(value, str) else _show(value)
            raise ValueError(f"{_flag(dest)} {shown}: has no effect without {needs}")
        if value is None:
            setattr(args, dest, default)


def _check_args(args: argparse.Namespace) -> None:
    """Checks every command can make before it starts working (ValueError naming the flag,
    or an error naming the file), so bad input fails in a second, not after minutes of
    simulation or training; what they load is kept in args.checked."""
    _check_rules(args)
    _check_conditional(args)
    if args.command != "demo-model" or args.measure:  # demo-model writes only with --measure
        _check_out(getattr(args, "out", None))
    args.checked = CHECKS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `trail` command. Bad input gets one line on stderr and exit status 1
    (TRAIL_DEBUG=1 shows the traceback instead)."""
    args = build_parser().parse_args(argv)
    errors: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, OSError,
                                                ImportError, RuntimeError)
    try:
        from safetensors import SafetensorError  # a truncated or corrupt checkpoint file

        errors += (SafetensorError,)
    except ImportError:
        pass
    try:
        _check_args(args)
        return int(args.func(args) or 0)
    except errors as exc:
        if os.environ.get("TRAIL_DEBUG") == "1":
            raise
        message = " ".join(str(exc).splitlines()) or type(exc).__name__
        print(f"trail {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if os.environ.get("TRAIL_DEBUG") == "1":
            raise
        print(f"trail {args.command}: interrupted", file=sys.stderr)
        return 130  # the shell's code for SIGINT


if __name__ == "__main__":
    sys.exit(main())
