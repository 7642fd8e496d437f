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
    trail serve --model smollm2-135m-instruct --policy TRAIL --port 8000

Every subcommand takes --help. Errors print one line and exit with status 1 (2 for bad
command-line usage).

Layout: `args.py` (list flags, the rule of every numeric flag, --out), `models.py` (--model
and --prompts), and one module per group of subcommands, each with its parsers, command
functions, checks and rules: `probe.py` (collect, train-probe, eval-probe), `demo.py`
(demo-model, demo), `sim.py` (simulate, tune-c, theory), `bench.py` (bench), `serve.py` (serve).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Sequence

from trail.cli import bench, demo, probe, serve, sim
from trail.cli.args import Conditional, Rule, check_conditional, check_out, check_rules

COMMAND_MODULES = (probe, demo, sim, bench, serve)
RULES: dict[str, dict[str, Rule]] = {k: v for m in COMMAND_MODULES for k, v in m.RULES.items()}
CHECKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    k: v for m in COMMAND_MODULES for k, v in m.CHECKS.items()}
CONDITIONAL: tuple[Conditional, ...] = tuple(c for m in COMMAND_MODULES for c in m.CONDITIONAL)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `trail` and its subcommands."""
    parser = argparse.ArgumentParser(prog="trail", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Checks every command can make before it starts working (ValueError naming the flag,
    or an error naming the file), so bad input fails in a second, not after minutes of
    simulation or training; what they load is kept in args.checked."""
    check_rules(args, RULES[args.command])
    check_conditional(args, CONDITIONAL)
    if args.command != "demo-model" or args.measure:  # demo-model writes only with --measure
        check_out(getattr(args, "out", None))
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
