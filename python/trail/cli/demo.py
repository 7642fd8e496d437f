"""`trail demo-model` and `trail demo`: the demo model, and the whole system end to end."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

from trail.cli.args import (AUTO, LOAD, NATURAL, POSITIVE, SEED, UNIT_C, Conditional, Rule,
                            add_trail_key_flags)
from trail.cli.models import model_shape, prompt_texts


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


def _demo_config(args: argparse.Namespace) -> Any:
    """DemoConfig from the flags given (the rest: DemoConfig's or quick()'s defaults)."""
    from trail.demo.end_to_end import DemoConfig

    fields = {k: v for k, v in (("model", args.model), ("prompts", args.prompts),
                                ("profile_prompts", args.profile_prompts),
                                ("predictors", args.predictors),
                                ("seed", args.seed), ("load", args.load),
                                ("workload", args.requests), ("c", args.c),
                                ("max_running", args.max_running),
                                ("max_new_tokens", args.max_new_tokens), ("clock", args.clock),
                                ("threads", args.threads), ("aging_rate", args.aging_rate),
                                ("tail", args.tail), ("boost_gamma", args.boost_gamma),
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


def _check_demo(args: argparse.Namespace) -> dict[str, Any]:
    cfg = _demo_config(args)
    if cfg.predictors is not None:
        d = pathlib.Path(cfg.predictors)
        for need in ("report.json", "ltr/ltr.json", "prompt_only"):
            if not (d / need).exists():
                raise FileNotFoundError(f"--predictors {d}: lacks {need} (a `trail "
                                        f"eval-probe` folder with an ltr/ predictor)")
    if cfg.model != "demo":
        model_shape(cfg.model, cfg.seed)  # the model exists (or can be converted)
        n = len(prompt_texts(cfg.prompts, cfg.seed))
        if n < cfg.profile_prompts + cfg.workload:
            raise ValueError(f"--prompts {cfg.prompts}: {n} prompts, the demo needs "
                             f"{cfg.profile_prompts} to train its predictors (--profile-prompts) "
                             f"+ {cfg.workload} to serve (--requests)")
    return {"cfg": cfg}


def add_commands(sub: Any) -> None:
    """The demo's subcommands."""
    p: argparse.ArgumentParser
    p = sub.add_parser("demo-model", help="train (or load from cache) the demo model")
    p.add_argument("--seed", type=int, default=0,
                   help="which demo model: its training seed (default 0)")
    p.add_argument("--measure", type=int, default=0,
                   help="also generate N answers at temperature 1 and report their lengths")
    p.add_argument("--out", default=None,
                   help="where --measure writes demo_lengths.json (default runs/demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo_model)

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
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="generation cap per request (default 400)")
    p.add_argument("--clock", choices=("virtual", "wall"), default=None,
                   help="virtual (default): time advances by the demo model's frozen step "
                        "cost, so the table does not depend on the machine's load; wall: "
                        "real time")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for collection and serving; probes train with one "
                        "(default 1)")
    p.add_argument("--prefill-weight", default=None, metavar="BETA",
                   help="TRAIL's β: a number, or 'auto' (default: learned by the engine from "
                        "its step costs)")
    add_trail_key_flags(p)
    p.add_argument("--rank", choices=("mean", "gittins"), default=None,
                   help="TRAIL ranks by the mean predicted remaining length or the Gittins "
                        "rank of the predicted distribution (default: DemoConfig's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage lines")
    p.set_defaults(func=cmd_demo)



RULES: dict[str, dict[str, Rule]] = {
    "demo-model": {"seed": SEED, "measure": NATURAL},
    "demo": {"seed": SEED, "load": LOAD, "requests": POSITIVE, "c": UNIT_C,
             "profile_prompts": (lambda v: v >= 20, "an integer >= 20"),
             "max_running": POSITIVE, "max_new_tokens": POSITIVE, "threads": POSITIVE, "prefill_weight": AUTO,
             "aging_rate": AUTO, "boost_gamma": AUTO, "preempt_margin": AUTO},
}
CHECKS = {"demo-model": lambda args: {}, "demo": _check_demo}
CONDITIONAL: tuple[Conditional, ...] = (
    ("demo-model", "out", "runs/demo", lambda a: a.measure > 0, "--measure N"),
)
