"""GPU benchmark of the probe step: fused Triton vs eager reference vs torch.compile(reference).

Run it whenever a GPU is available:

    python bench/gpu_probe.py --out bench/results

bf16 hidden states and bf16 probe weights (W1 is 4 MiB), D=4096, H=512, K=10,
B ∈ {1, 8, 64, 256, 1024}. Medians from `triton.testing.do_bench`. Measured in the same run:
- floor: bytes the step must move / measured device copy bandwidth (a large D2D copy);
- launch: an empty Triton kernel's time (launch overhead);
- graph: the fused step replayed from a CUDA graph.
Targets (H100): fused ≤ 2 × max(floor, launch) for B ≤ 256; fused ≥ 10× faster than the eager
reference for B ≤ 64. Writes gpu_probe_<label>.{md,json} into --out.

`--smoke` runs every code path except CUDA graphs on the CPU with tiny shapes under
TRITON_INTERPRET=1 (set automatically), so the script can be checked without a GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import pathlib
import platform
import sys
from typing import Any, Callable

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel module is imported

import torch  # noqa: E402
import trail  # noqa: E402
import triton  # noqa: E402
from trail.kernels.probe_triton import probe_step_triton
from trail.kernels.reference import probe_step_reference
from trail.microbench import median_seconds, probe_args


@triton.jit
def _empty_kernel(x_ptr):
    pass


def make_args(b: int, d: int, h: int, k: int, slots: int, device: str,
              seed: int = 0) -> list[torch.Tensor]:
    return probe_args(b, d, h, k, slots, device, dtype=torch.bfloat16, seed=seed)


def bytes_moved(args: list[torch.Tensor]) -> int:
    """What one step must read and write at least: inputs once, touched state rows twice."""
    hidden, slots, first, w1, b1, w2, b2, trans, centers, cap, state = args
    b, k = hidden.shape[0], state.shape[1]
    reads = sum(t.numel() * t.element_size()
                for t in (hidden, slots, first, w1, b1, w2, b2, trans, centers, cap))
    return reads + 2 * b * k * state.element_size() + b * 4


def timer(device: str) -> Callable[[Callable[[], Any]], float]:
    """Median seconds of one call: CUDA events via do_bench on a GPU, perf_counter on the CPU."""
    if device == "cuda":
        return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=200,
                                                  return_mode="median") * 1e-3

    return lambda fn: median_seconds(fn, 5, warmup=1)


def copy_bandwidth(device: str, nbytes: int, bench: Callable[[Callable[[], Any]], float]) -> float:
    """Device copy bandwidth in bytes/s (read + write) from one large copy."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / bench(lambda: dst.copy_(src))


def graph_time(fn: Callable[[], Any], bench: Callable[[Callable[[], Any]], float]) -> float:
    """Median time of replaying `fn` captured in a CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()  # warm up: compile and autotune outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench(graph.replay)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/results"))
    ap.add_argument("--label", default=None, help="file name suffix (default: today's date)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256, 1024])
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference)")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, interpreter, tiny shapes: checks the script, measures nothing")
    args = ap.parse_args()

    if args.smoke:
        device, (d, h, k, slots), batches = "cpu", (64, 32, 10, 64), [1, 8]
    elif torch.cuda.is_available():
        device, (d, h, k, slots), batches = "cuda", (4096, 512, 10, 2048), args.batches
    else:
        sys.exit("bench/gpu_probe.py needs a CUDA GPU and none is visible "
                 "(use --smoke to check the script on a CPU)")
    bench = timer(device)
    name = torch.cuda.get_device_name() if device == "cuda" else (platform.machine() or "cpu")
    print(f"probe step on {name}: D={d} H={h} K={k}, bf16 hidden and weights", flush=True)

    bandwidth = copy_bandwidth(device, 1 << (30 if device == "cuda" else 24), bench)
    empty = torch.empty(1, device=device)
    launch = bench(lambda: _empty_kernel[(1,)](empty))
    print(f"copy bandwidth {bandwidth / 1e9:.0f} GB/s, empty launch {launch * 1e6:.1f} µs",
          flush=True)
    compiled = None
    if not args.no_compile:
        compiled = torch.compile(probe_step_reference)

    rows = []
    for b in batches:
        a = make_args(b, d, h, k, slots, device)
        state = a[-1]
        fused = bench(lambda: probe_step_triton(*a[:-1], state))
        eager = bench(lambda: probe_step_reference(*a[:-1], state))
        comp = bench(lambda: compiled(*a[:-1], state)) if compiled is not None else math.nan
        graph = graph_time(lambda: probe_step_triton(*a[:-1], state), bench) \
            if device == "cuda" else math.nan
        floor = bytes_moved(a) / bandwidth
        # Correctness on this device, from the same starting state.
        s1, s2 = a[-1].clone(), a[-1].clone()
        got = probe_step_triton(*a[:-1], s1)
        want = probe_step_reference(*a[:-1], s2)
        err = float(((got - want).abs() / want.abs().clamp(min=1e-3)).max())
        row = {"batch": b, "fused_us": fused * 1e6, "eager_us": eager * 1e6,
               "compiled_us": comp * 1e6, "graph_us": graph * 1e6, "floor_us": floor * 1e6,
               "launch_us": launch * 1e6, "bytes": bytes_moved(a), "max_rel_err": err,
               "speedup_vs_eager": eager / fused}
        if b <= 256:
            row["target_floor_met"] = fused <= 2 * max(floor, launch)
        if b <= 64:
            row["target_eager_met"] = eager / fused >= 10
        rows.append(row)
        print(json.dumps(row), flush=True)

    if args.smoke:
        print("smoke run done (nothing written)")
        return
    label = args.label or dt.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(), "device": name,
            "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "trail": trail.__version__,
            "copy_bandwidth_GBps": bandwidth / 1e9, "empty_launch_us": launch * 1e6,
            "shape": {"D": d, "H": h, "K": k}, "dtype": "bf16 hidden and weights"}
    (args.out / f"gpu_probe_{label}.json").write_text(
        json.dumps({**meta, "results": rows}, indent=1) + "\n")
    lines = [f"# Probe step on {name} ({label})", "",
             f"torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}; "
             f"D={d} H={h} K={k}, bf16 hidden and weights; medians (do_bench). Copy bandwidth "
             f"{bandwidth / 1e9:.0f} GB/s, empty launch {launch * 1e6:.1f} µs.", "",
             "| B | fused (µs) | graph replay (µs) | eager (µs) | compiled (µs) | floor (µs) "
             "| ≤ 2×max(floor, launch) | ≥ 10× eager | max rel err |",
             "|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['fused_us']:.1f} | {r['graph_us']:.1f} | {r['eager_us']:.1f} "
            f"| {r['compiled_us']:.1f} | {r['floor_us']:.1f} "
            f"| {_met(r.get('target_floor_met'))} | {_met(r.get('target_eager_met'))} "
            f"| {r['max_rel_err']:.1e} |")
    (args.out / f"gpu_probe_{label}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _met(v: bool | None) -> str:
    return "–" if v is None else ("met" if v else "missed")


if __name__ == "__main__":
    main()
