"""`trail collect`, `trail train-probe`, `trail eval-probe`: the probe's training pipeline."""

from __future__ import annotations

import argparse
import json
from typing import Any

from trail.cli.args import (FINITE_NONNEG, FINITE_POSITIVE, NATURAL, POSITIVE, SEED, Conditional,
                            Rule, ints)
from trail.cli.models import (demo_prompt_count, has_chat_template, load_model, model_shape,
                              prompt_texts)


def cmd_collect(args: argparse.Namespace) -> int:
    from trail.training.collect import collect

    checked = args.checked
    model, tokenizer, model_id = load_model(args.model, args.demo_seed)
    prompts = checked["prompts"] or prompt_texts(args.prompts, args.seed)
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

    n_layers, hidden = model_shape(args.model, args.demo_seed)
    bad = [k for k in args.layers or () if k >= n_layers]
    if bad:
        raise ValueError(f"--layers {','.join(map(str, args.layers))}: the model has "
                         f"{n_layers} layers (0 to {n_layers - 1}), not {bad}")
    if args.chat_template and not has_chat_template(args.model):
        raise ValueError(f"--chat-template: the tokenizer of --model {args.model} has no chat "
                         f"template")
    n = demo_prompt_count(args.prompts)
    prompts = None if n is not None else prompt_texts(args.prompts, args.seed)
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


def add_commands(sub: Any) -> None:
    """The probe pipeline's subcommands."""
    p: argparse.ArgumentParser
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
    layers.add_argument("--layers", type=ints, help="comma-separated layer indices")
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
    p.add_argument("--layers", type=ints, default=None, help="default: all collected")
    p.add_argument("--baseline", choices=["auto", "on", "off"], default="auto",
                   help="the MiniLM prompt-only baseline (auto: if installed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_train_flags(p)
    p.set_defaults(func=cmd_eval_probe)



TRAIN_RULES: dict[str, Rule] = {
    "hidden_dim": POSITIVE, "epochs": POSITIVE, "batch_size": POSITIVE, "lr": FINITE_POSITIVE,
    "weight_decay": FINITE_NONNEG, "val_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
    "seed": SEED, "num_bins": POSITIVE, "max_len": FINITE_POSITIVE}
RULES: dict[str, dict[str, Rule]] = {
    "collect": {"demo_seed": SEED, "layers": NATURAL, "samples": POSITIVE,
                "max_new_tokens": POSITIVE, "temperature": FINITE_NONNEG,
                "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"), "seed": SEED,
                "max_running": POSITIVE, "limit": POSITIVE, "checkpoint_every": POSITIVE,
                "window": NATURAL},
    "train-probe": {"layer": NATURAL, **TRAIN_RULES},
    "eval-probe": {"layers": NATURAL, **TRAIN_RULES},
}
CHECKS = {"collect": _check_collect, "train-probe": _check_train_probe,
          "eval-probe": _check_eval_probe}
CONDITIONAL: tuple[Conditional, ...] = (
    ("collect", "demo_seed", 0, lambda a: a.model == "demo", "--model demo"),
    ("train-probe", "max_len", 512.0, lambda a: a.bins == "uniform", "--bins uniform"),
    ("eval-probe", "max_len", 512.0, lambda a: True, ""),
)
