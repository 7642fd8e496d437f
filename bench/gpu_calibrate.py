"""Fit a cost-model preset on this GPU: time a Llama-3-8B-shaped model with the engine.

A random-initialised Llama-3-8B-shaped model (hidden 4096, 32 layers, 32 heads, 8 KV heads,
intermediate 14336, vocab 128256) in bf16 is served by the project's engine
(`trail.engine.Engine`, paged KV cache, TRAIL scheduler). Timed, with CUDA synchronised,
medians of --repeats steps:
- decode steps over a grid of batch sizes × context lengths (every request decoding);
- prefill steps of one prompt over a grid of lengths.
`trail.sim.cost_model.fit_calibration` then fits the preset's overhead and efficiencies to
them (the GPU's datasheet numbers come from the shipped preset for A100/H100, or H200's
datasheet, or --peak-flops/--mem-bandwidth/--memory-bytes). Writes into --out:
gpu_calibrate_<gpu>_<date>.{json,md,png} and the fitted preset <name>.json, usable as
`trail simulate --preset PATH.json`.

    python bench/gpu_calibrate.py                 # on a GPU: ~5 min
    python bench/gpu_calibrate.py --smoke         # tiny model on the CPU; checks the script
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pathlib
import re
import statistics
import time
from typing import Any

import numpy as np
import torch
import transformers
from trail.engine import Engine, EngineConfig, SamplingParams
from trail.microbench import median_seconds
from trail.sim.cost_model import CostModel, fit_calibration

import trail_ext as te

from trail.provenance import commit, describe

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                 max_position_embeddings=8192, rope_theta=500000.0)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=256, max_position_embeddings=1024)
# Datasheet numbers (bf16 dense tensor FLOP/s, HBM bytes/s, bytes) of GPUs without a preset.
DATASHEETS = {"h200": dict(peak_flops=989e12, mem_bandwidth=4.8e12, host_bandwidth=55e9,
                           memory_bytes=141e9)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_numbers(device: torch.device, args: argparse.Namespace) -> tuple[str, dict[str, float]]:
    """(short GPU name, its datasheet numbers): from flags, the shipped presets or DATASHEETS."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    key = next((k for k in ("a100", "h100", "h200") if k in name.lower()), "cpu")
    if args.peak_flops and args.mem_bandwidth:
        return key, dict(peak_flops=args.peak_flops, mem_bandwidth=args.mem_bandwidth,
                         host_bandwidth=args.host_bandwidth,
                         memory_bytes=args.memory_bytes or
                         (torch.cuda.get_device_properties(device).total_memory
                          if device.type == "cuda" else 16e9))
    if key in ("a100", "h100"):
        preset = CostModel.preset("llama3-8b-a100-80gb" if key == "a100" else "llama3-8b-h100")
        return key, preset.to_dict()["gpu"]
    if key in DATASHEETS:
        return key, DATASHEETS[key]
    if device.type == "cpu":  # smoke runs: nominal numbers; only the script is being checked
        return key, dict(peak_flops=1e11, mem_bandwidth=1e10, host_bandwidth=1e10,
                         memory_bytes=16e9)
    raise SystemExit(f"unknown GPU {name!r}: pass --peak-flops and --mem-bandwidth")


def engine_for(model: Any, tokens: int, batch: int) -> Engine:
    """An engine whose KV cache holds `tokens` tokens (plus room to decode) for `batch` rows."""
    block = 16
    cfg = te.SchedulerConfig(policy=te.Policy.FCFS, max_running=max(batch, 1),
                             kv_capacity_tokens=block * (tokens // block + 8 * batch + 8),
                             block_size=block)
    return Engine(model, EngineConfig(scheduler=cfg))


def time_decode(model: Any, batch: int, context: int, repeats: int, vocab: int,
                device: torch.device) -> float:
    """Median seconds of one engine step with `batch` requests of `context` tokens decoding."""
    eng = engine_for(model, batch * (context + repeats + 4), batch)
    g = torch.Generator().manual_seed(batch * 7919 + context)
    for _ in range(batch):
        ids = torch.randint(0, vocab, (context,), generator=g).tolist()
        eng.add_request(ids, SamplingParams(max_new_tokens=repeats + 3))
    eng.step()  # the prefill
    return median_seconds(eng.step, repeats, warmup=0, sync=lambda: sync(device))


def time_prefill(model: Any, length: int, repeats: int, vocab: int,
                 device: torch.device) -> float:
    """Median seconds of one engine step prefilling one prompt of `length` tokens."""
    samples = []
    g = torch.Generator().manual_seed(length)
    for _ in range(repeats):
        eng = engine_for(model, length + 8, 1)
        eng.add_request(torch.randint(0, vocab, (length,), generator=g).tolist(),
                        SamplingParams(max_new_tokens=2))
        sync(device)
        t = time.perf_counter()
        eng.step()
        sync(device)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/results"))
    ap.add_argument("--label", default=None, help="file name date (default: today, UTC)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batches", default="1,8,32,64,128")
    ap.add_argument("--contexts", default="128,512,2048")
    ap.add_argument("--prefills", default="128,512,1024,2048,4096")
    ap.add_argument("--peak-flops", type=float, default=None)
    ap.add_argument("--mem-bandwidth", type=float, default=None)
    ap.add_argument("--host-bandwidth", type=float, default=25e9)
    ap.add_argument("--memory-bytes", type=float, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    args = ap.parse_args()
    smoke = args.smoke
    device = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    if device.type == "cpu" and not smoke:
        raise SystemExit("no GPU: gpu_calibrate.py needs CUDA (use --smoke to check the script)")
    shape = TINY if smoke else LLAMA3_8B
    dtype = torch.float32 if smoke else torch.bfloat16
    batches = [1, 2] if smoke else [int(x) for x in args.batches.split(",")]
    contexts = [16, 64] if smoke else [int(x) for x in args.contexts.split(",")]
    prefills = [16, 64, 128] if smoke else [int(x) for x in args.prefills.split(",")]
    repeats = 2 if smoke else args.repeats
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**shape, torch_dtype=dtype)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(cfg).to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    key, gpu = gpu_numbers(device, args)
    print(f"{device} ({key}): random Llama {params / 1e9:.2f}B params, {dtype}", flush=True)

    rows = []
    for b in batches:
        for c in contexts:
            t = time_decode(model, b, c, repeats, shape["vocab_size"], device)
            rows.append({"kind": "decode", "batch": b, "context": c, "prefill": 0,
                         "seconds": t})
            print(f"decode batch {b:4d} context {c:5d}: {t * 1e3:8.2f} ms", flush=True)
    for n in prefills:
        t = time_prefill(model, n, repeats, shape["vocab_size"], device)
        rows.append({"kind": "prefill", "batch": 0, "context": 0, "prefill": n, "seconds": t})
        print(f"prefill {n:5d} tokens: {t * 1e3:8.2f} ms", flush=True)

    name = f"llama3-8b-{key}-fitted" if not smoke else "tiny-cpu-smoke"
    base = CostModel.from_dict({
        "name": name,
        "model": dict(params=float(params), layers=shape["num_hidden_layers"],
                      hidden=shape["hidden_size"], heads=shape["num_attention_heads"],
                      kv_heads=shape["num_key_value_heads"],
                      head_dim=shape["hidden_size"] // shape["num_attention_heads"],
                      dtype_bytes=2 if dtype == torch.bfloat16 else 4),
        "gpu": gpu,
        "calibration": dict(overhead_s=0.0, compute_efficiency=1.0, bandwidth_efficiency=1.0)})
    pre = np.array([r["prefill"] for r in rows], float)
    batch = np.array([r["batch"] for r in rows], float)
    ctx = np.array([r["batch"] * r["context"] for r in rows], float)
    secs = np.array([r["seconds"] for r in rows])
    fitted = fit_calibration(base, pre, batch, ctx, pre ** 2, secs, name=name)
    pred = fitted.iteration_times(pre, batch, ctx, pre ** 2)
    for r, p in zip(rows, pred):
        r["predicted_seconds"] = float(p)
    err = np.abs(np.log(pred / secs))
    print(f"fitted: {fitted.to_dict()['calibration']}; median |log error| {np.median(err):.3f}, "
          f"max {err.max():.3f}", flush=True)
    if smoke:
        print("smoke run done (nothing written)")
        return
    label = args.label or dt.datetime.now(dt.timezone.utc).date().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu_name = torch.cuda.get_device_name(device)
    stem = args.out / f"gpu_calibrate_{re.sub(r'[^a-z0-9]+', '-', key)}_{label}"
    fitted.to_json(args.out / f"{name}.json")
    meta = {"date": label, "gpu": gpu_name, "host": describe(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "commit": commit(), "params": params, "repeats": repeats,
            "preset": fitted.to_dict(), "median_abs_log_error": float(np.median(err)),
            "max_abs_log_error": float(err.max())}
    pathlib.Path(str(stem) + ".json").write_text(json.dumps({**meta, "samples": rows},
                                                            indent=1) + "\n")
    lines = [f"# Cost-model calibration on {gpu_name} ({label})", "",
             f"Random Llama-3-8B-shaped model ({params / 1e9:.2f}B params), bf16, served by "
             f"the engine; medians of {repeats} steps. torch {torch.__version__}, CUDA "
             f"{torch.version.cuda}, commit {meta['commit']}.", "",
             f"Fitted preset `{name}.json`: overhead {fitted.overhead_s * 1e3:.2f} ms, "
             f"compute efficiency {fitted.compute_efficiency:.3f}, bandwidth efficiency "
             f"{fitted.bandwidth_efficiency:.3f}; median |log error| {np.median(err):.3f}, max "
             f"{err.max():.3f}.", "",
             "| step | batch | context | prefill | measured ms | model ms |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['kind']} | {r['batch']} | {r['context']} | {r['prefill']} | "
              f"{r['seconds'] * 1e3:.2f} | {r['predicted_seconds'] * 1e3:.2f} |" for r in rows]
    pathlib.Path(str(stem) + ".md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for kind, marker in (("decode", "o"), ("prefill", "s")):
        sel = [i for i, r in enumerate(rows) if r["kind"] == kind]
        ax.loglog(secs[sel] * 1e3, pred[sel] * 1e3, marker, label=kind)
    lim = [secs.min() * 1e3 / 1.5, secs.max() * 1e3 * 1.5]
    ax.plot(lim, lim, color="grey", linewidth=0.8)
    ax.set(xlabel="measured ms", ylabel="cost model ms", title=f"{name} on {gpu_name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(str(stem) + ".png", dpi=120)
    print("\n".join(lines))
    print(f"wrote {stem}.json, .md, .png and {args.out / (name + '.json')}")


if __name__ == "__main__":
    main()
