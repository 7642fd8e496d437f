"""`trail serve`: an OpenAI-compatible server on TRAIL's engine."""

from __future__ import annotations

import argparse
from typing import Any

from trail.cli.args import (FINITE_NONNEG, NATURAL, POSITIVE, SEED, Conditional, Rule)

PORT: Rule = (lambda v: 0 <= v < 65536, "a port in [0, 65536)")


def cmd_serve(args: argparse.Namespace) -> int:
    from trail.serve import run

    cfg = args.checked["cfg"]
    print(f"trail serve: {cfg.model} with policy {cfg.policy} on http://{cfg.host}:{cfg.port} "
          f"(OpenAI API: /v1/completions, /v1/chat/completions; /metrics; /health)",
          flush=True)
    return run(cfg)


def _check_serve(args: argparse.Namespace) -> dict[str, Any]:
    from trail.cli.models import model_shape
    from trail.serve import ServeConfig

    cfg = ServeConfig(model=args.model, policy=args.policy, probe=args.probe,
                      prompt_predictor=args.prompt_predictor,
                      served_model_name=args.served_model_name, max_running=args.max_running,
                      max_model_len=args.max_model_len, kv_tokens=args.kv_tokens,
                      max_waiting=args.max_waiting, host=args.host, port=args.port,
                      shutdown_timeout=args.shutdown_timeout, threads=args.threads or None,
                      seed=args.seed)
    model_shape(args.model, args.seed)  # a bad --model fails now, before anything loads
    return {"cfg": cfg}


def add_commands(sub: Any) -> None:
    """The server subcommand."""
    p: argparse.ArgumentParser
    p = sub.add_parser("serve", help="serve a model over the OpenAI API (completions, chat)")
    p.add_argument("--model", default="demo",
                   help="'demo' (default), 'smollm2-135m-instruct' or a save_pretrained folder")
    p.add_argument("--policy", default="TRAIL",
                   help="a named set-up of trail.policies: FCFS, SJF, SJF-work, TRAIL, "
                        "TRAIL-paper, TRAIL+, MLFQ (default TRAIL)")
    p.add_argument("--probe", default=None,
                   help="a trained probe folder (default: the one that ships for the model)")
    p.add_argument("--prompt-predictor", default=None,
                   help="a prompt-only predictor folder: the length SJF ranks by, and TRAIL "
                        "until the probe's first prediction")
    p.add_argument("--served-model-name", default=None,
                   help="the model name clients send (default: --model)")
    p.add_argument("--max-running", type=int, default=8, help="batch slots (default 8)")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="longest prompt + answer, in tokens (default: the model's, at most "
                        "2048)")
    p.add_argument("--kv-tokens", type=int, default=None,
                   help="KV cache size in tokens (default: every slot at --max-model-len)")
    p.add_argument("--max-waiting", type=int, default=256,
                   help="requests waiting to start before new ones get 503 (default 256)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                                                        "127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds in-flight requests get to finish after SIGTERM (default 30)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default 0: leave torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="which demo model (default 0)")
    p.set_defaults(func=cmd_serve)


RULES: dict[str, dict[str, Rule]] = {
    "serve": {"max_running": POSITIVE, "max_model_len": POSITIVE, "kv_tokens": POSITIVE,
              "max_waiting": POSITIVE, "port": PORT, "shutdown_timeout": FINITE_NONNEG,
              "threads": NATURAL, "seed": SEED},
}
CHECKS = {"serve": _check_serve}
CONDITIONAL: tuple[Conditional, ...] = ()
