"""`trail bench`: microbenchmarks of the probe op and the scheduler."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

from trail.cli.args import NATURAL, POSITIVE, Conditional, Rule, ints


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


def add_commands(sub: Any) -> None:
    """The microbenchmark subcommand."""
    p: argparse.ArgumentParser
    p = sub.add_parser("bench", help="microbenchmarks: the probe op and the scheduler")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--batches", type=ints, default=[1, 8, 64, 256],
                   help="probe batch sizes, comma-separated (default 1,8,64,256)")
    p.add_argument("--hidden", type=int, default=4096, help="the model's hidden size D")
    p.add_argument("--repeats", type=int, default=50,
                   help="timed probe calls per batch size; the median is shown (default 50)")
    p.add_argument("--running", type=int, default=256,
                   help="requests in the scheduler's running batch (default 256)")
    p.add_argument("--waiting", type=ints, default=[1000, 10000],
                   help="waiting requests W, comma-separated (default 1000,10000)")
    p.add_argument("--scenario", choices=["steady", "drain"], default="steady",
                   help="steady: the backlog of long jobs an overloaded server settles into "
                        "(default, the README's table); drain: W random requests, a stress test")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    p.add_argument("--out", default=None, help="write DIR/bench.json")
    p.set_defaults(func=cmd_bench)



RULES: dict[str, dict[str, Rule]] = {
    "bench": {"batches": POSITIVE, "hidden": POSITIVE, "repeats": POSITIVE,
              "running": POSITIVE, "waiting": NATURAL, "threads": NATURAL},
}
CHECKS = {"bench": _check_bench}
CONDITIONAL: tuple[Conditional, ...] = ()
