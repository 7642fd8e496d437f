"""The same workload served by vLLM with its default scheduler and with TRAIL's inside it.

Each policy runs in a fresh process (one vLLM engine each): requests arrive on the wall
clock (Poisson, or all at once with --rate 0), the engine steps, and every request's
arrival, first token and finish are recorded, with the time vLLM spends in its scheduler
(`schedule` + `update_from_output`) and, for TRAIL, in the probe hook.

    python bench/vllm_serving.py --smoke                       # tiny random model, a minute
    python bench/vllm_serving.py --model smollm2-135m-instruct --prompts ALPACA.json \
        --probe PROBE_DIR --requests 120 --rate 1.5            # CPU here; also runs on a GPU

Policies: `fcfs` (vLLM's default scheduler, unchanged), `trail` (TrailScheduler, TRAIL
policy, the probe's predictions; without --probe the prompt predictor or the default length),
`sjf` (TrailScheduler, SJF on the prompt-only predictor, when --prompt-predictor is given).
Results: bench/results/vllm_serving_<date>.{json,md,png} (not with --smoke).
Needs vLLM (README, "TRAIL inside vLLM"); runs with VLLM_ENABLE_V1_MULTIPROCESSING=0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import portable  # noqa: E402
from trail.provenance import provenance  # noqa: E402
from trail import metrics  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
SMOKE_PROMPTS = ["hello there", "a", "the quick brown fox", "0123456789" * 2, "short",
                 "what is the capital of France?", "abc" * 5, "xyz"]


# ---------------------------------------------------------------- one policy (child process)

def run_policy(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the workload once under args.child; return per-request times and overheads."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    import vllm
    from vllm.inputs import TokensPrompt

    from trail.integrations.vllm import install_probe, vllm_kwargs

    work = json.loads(pathlib.Path(args.workload).read_text())
    policy = args.child
    kw: dict[str, Any] = {}
    if policy == "trail":
        opts: dict[str, Any] = {"policy": "TRAIL", "c": args.c}
        if args.prompt_predictor:
            opts["prompt_predictor"] = args.prompt_predictor
        kw = vllm_kwargs(**opts)
    elif policy == "sjf":
        kw = vllm_kwargs(policy="SJF", prompt_predictor=args.prompt_predictor)
    llm = vllm.LLM(model=work["model_dir"], dtype="float32", enforce_eager=True,
                   max_model_len=work["max_model_len"], max_num_seqs=args.max_num_seqs,
                   block_size=32, kv_cache_memory_bytes=args.kv_mb << 20, seed=0,
                   enable_prefix_caching=False, **kw)  # every policy alike; the probe sees
    # whole prompts, as it was trained (README, "TRAIL inside vLLM")
    if policy == "trail" and args.probe:
        install_probe(llm, args.probe)
    engine = llm.llm_engine
    sched = engine.engine_core.engine_core.scheduler
    timers = {"schedule": 0.0, "update_from_output": 0.0}
    for name in timers:  # time vLLM's scheduler calls, whichever class it is
        original = getattr(sched, name)

        def timed(*a: Any, _o: Any = original, _n: str = name, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return _o(*a, **k)
            finally:
                timers[_n] += time.perf_counter() - t
        setattr(sched, name, timed)

    reqs = work["requests"]
    arrival = {str(i): r["arrival"] for i, r in enumerate(reqs)}
    first: dict[str, float] = {}
    done: dict[str, tuple[float, int]] = {}
    nxt, steps = 0, 0
    t0 = time.perf_counter()
    while len(done) < len(reqs):
        now = time.perf_counter() - t0
        while nxt < len(reqs) and reqs[nxt]["arrival"] <= now:
            r = reqs[nxt]
            sp = vllm.SamplingParams(temperature=work["temperature"], seed=nxt,
                                     max_tokens=work["max_tokens"],
                                     stop_token_ids=work["stop_token_ids"])
            engine.add_request(str(nxt), TokensPrompt(prompt_token_ids=r["prompt_ids"]), sp)
            nxt += 1
        if not engine.has_unfinished_requests():
            time.sleep(max(0.0, min(0.01, reqs[nxt]["arrival"] - now)))
            continue
        outs = engine.step()
        steps += 1
        now = time.perf_counter() - t0
        for o in outs:
            if o.outputs and o.outputs[0].token_ids and o.request_id not in first:
                first[o.request_id] = now
            if o.finished:
                done[o.request_id] = (now, len(o.outputs[0].token_ids))
    wall = time.perf_counter() - t0
    ids = sorted(done, key=int)  # request order, so that policies compare request by request
    lat = [done[k][0] - arrival[k] for k in ids]
    ttft = [first[k] - arrival[k] for k in ids if k in first]
    out = {"policy": policy, "wall_s": wall, "steps": steps,
           "output_tokens": int(sum(v[1] for v in done.values())),
           "tokens": [done[k][1] for k in ids], "latency": lat, "ttft": ttft,
           "scheduler_s": dict(timers)}
    if policy in ("trail", "sjf"):
        out["trail_stats"] = dict(sched.trail_stats)
    if policy == "trail" and args.probe:
        out["probe"] = llm.collective_rpc("trail_probe_stats")[0]
    return out


# ---------------------------------------------------------------- the parent

def build_workload(args: argparse.Namespace, work_dir: pathlib.Path) -> dict[str, Any]:
    """Prompts (chat-formatted token ids), Poisson arrivals and sampling settings, as JSON."""
    from transformers import AutoTokenizer

    if args.smoke:
        from trail.integrations.vllm.tiny import build_tiny_llama
        model_dir = build_tiny_llama(work_dir / "tiny")
        texts = (SMOKE_PROMPTS * 2)[: args.requests]
    else:
        model_dir = resolve_model(args.model)
        rows = json.loads(pathlib.Path(args.prompts).read_text())
        rows = rows[args.skip: args.skip + args.requests]
        texts = [r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
                 for r in rows]
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    from trail.models import encode_prompt, has_chat_template
    chat = has_chat_template(tok)
    ids = [encode_prompt(tok, t, chat) for t in texts]
    rng = np.random.default_rng(args.seed)
    gaps = rng.exponential(1.0 / args.rate, size=len(ids)) if args.rate > 0 else np.zeros(len(ids))
    arrivals = np.cumsum(gaps) - gaps[0]
    stop = sorted({i for i in (tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>"))
                   if isinstance(i, int) and i != tok.unk_token_id})
    return {"model_dir": str(model_dir), "max_tokens": args.max_tokens,
            "max_model_len": min(2048, max(len(i) for i in ids) + args.max_tokens + 1),
            "temperature": 0.0 if args.smoke else args.temperature, "stop_token_ids": stop,
            "requests": [{"arrival": float(a), "prompt_ids": i} for a, i in zip(arrivals, ids)]}


def resolve_model(name: str) -> pathlib.Path:
    """A save_pretrained folder, or SmolLM2 by name (converted once by trail.models)."""
    from trail.models import smollm2
    if name == smollm2.NAME:
        path = smollm2.converted_path()
        if not smollm2.is_converted(path):
            smollm2.convert()
        return path
    return pathlib.Path(name)


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    lat, ttft = np.asarray(r["latency"]), np.asarray(r["ttft"])
    sched_s = sum(r["scheduler_s"].values())
    s = {"policy": r["policy"], "finished": len(lat), "output_tokens": r["output_tokens"],
         **metrics.stats(lat, "latency_s"), **metrics.stats(ttft, "ttft_s"),
         "wall_s": r["wall_s"], "steps": r["steps"],
         "step_ms": 1e3 * r["wall_s"] / max(1, r["steps"]),
         "scheduler_ms_per_step": 1e3 * sched_s / max(1, r["steps"])}
    if "trail_stats" in r:
        st = r["trail_stats"]
        s["trail_ms_per_step"] = 1e3 * st["overhead_s"] / max(1, st["steps"])
        s["rank_preemptions"] = int(st["rank_preemptions"])
        s["predictions"] = int(st["predictions"])
        # what the adapter learned of this server (last values; absent in older records)
        for k in ("prefill_weight", "preempt_margin", "preemptions", "recompute_tokens"):
            if k in st:
                s[k] = float(st[k])
    if "probe" in r:
        s["probe_ms_per_step"] = 1e3 * r["probe"]["seconds"] / max(1, r["probe"]["steps"])
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=pathlib.Path, help="Alpaca-style JSON array")
    ap.add_argument("--skip", type=int, default=4000,
                    help="first prompt used (skip those the predictors learned from)")
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--rate", type=float, default=1.5, help="arrivals per second; 0: all at once")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-num-seqs", type=int, default=16)
    ap.add_argument("--kv-mb", type=int, default=512, help="vLLM's KV cache, MiB")
    ap.add_argument("--c", type=float, default=0.8, help="TRAIL's limited-preemption c")
    ap.add_argument("--probe", help="probe checkpoint folder for the trail policy")
    ap.add_argument("--prompt-predictor", help="prompt-only predictor checkpoint folder")
    ap.add_argument("--policies", default="fcfs,trail")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "bench" / "results")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, 8 requests")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        pathlib.Path(args.result).write_text(json.dumps(run_policy(args)))
        return
    if args.smoke:
        args.requests, args.rate, args.max_tokens, args.max_num_seqs = 8, 0.0, 16, 2
        args.kv_mb = 8
    elif args.prompts is None:
        ap.error("--prompts: an Alpaca-style JSON array is needed (or --smoke)")
    policies = [p for p in args.policies.split(",") if p]
    for p in policies:
        if p not in ("fcfs", "trail", "sjf"):
            ap.error(f"--policies: unknown policy {p!r}")
        if p == "sjf" and not args.prompt_predictor:
            ap.error("--policies sjf needs --prompt-predictor")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = pathlib.Path(tmp)
        if args.smoke and "trail" in policies and not args.probe:
            from trail import Bins, Probe
            from trail.integrations.vllm.tiny import HIDDEN
            Probe(HIDDEN, Bins.uniform(8, 64.0), hidden_dim=16, layer=1).save(tmp_p / "probe")
            args.probe = str(tmp_p / "probe")
        workload = build_workload(args, tmp_p)
        (tmp_p / "workload.json").write_text(json.dumps(workload))
        results = []
        for i, policy in enumerate(policies, 1):
            print(f"[{i}/{len(policies)}] {policy}: {len(workload['requests'])} requests ...",
                  flush=True)
            cmd = [sys.executable, __file__, "--child", policy, "--workload",
                   str(tmp_p / "workload.json"), "--result", str(tmp_p / f"{policy}.json"),
                   "--max-num-seqs", str(args.max_num_seqs), "--kv-mb", str(args.kv_mb),
                   "--c", str(args.c)]
            if args.probe:
                cmd += ["--probe", args.probe]
            if args.prompt_predictor:
                cmd += ["--prompt-predictor", args.prompt_predictor]
            subprocess.run(cmd, check=True)
            results.append(json.loads((tmp_p / f"{policy}.json").read_text()))
            s = summarize(results[-1])
            print(f"    mean latency {s['latency_s_mean']:.2f} s, p99 {s['latency_s_p99']:.2f} s,"
                  f" mean TTFT {s['ttft_s_mean']:.2f} s, scheduler "
                  f"{s['scheduler_ms_per_step']:.2f} ms/step of {s['step_ms']:.1f}", flush=True)
    rows = [summarize(r) for r in results]
    if args.smoke:
        assert all(r["finished"] == len(workload["requests"]) for r in rows), rows
        print("smoke run done")
        return
    write_results(args, workload, rows, results)


def write_results(args: argparse.Namespace, workload: dict[str, Any], rows: list[dict],
                  raw: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    date = dt.date.today().isoformat()
    meta = portable(provenance("vllm", date=date, command=" ".join(sys.argv),
                               workload={k: v for k, v in workload.items() if k != "requests"}
                               | {"requests": len(workload["requests"])}))
    stem = args.out / f"vllm_serving_{date}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": rows,
                                                     "raw": raw}, indent=1))
    base = next((r for r in rows if r["policy"] == "fcfs"), rows[0])
    lines = [f"# vLLM serving: default scheduler vs TRAIL inside it ({date})", "",
             f"- machine: {meta['machine']}", f"- vllm {meta['vllm']}, torch {meta['torch']}, "
             f"commit {meta['commit']}", f"- command: `{meta['command']}`", "",
             "| policy | mean latency (s) | vs fcfs | p99 latency (s) | mean TTFT (s) | "
             "p99 TTFT (s) | scheduler ms/step | TRAIL ms/step | probe ms/step | step ms | "
             "rank preemptions | recomputed tokens | β learned | margin learned |",
             "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['latency_s_mean']:.2f} | "
            f"{r['latency_s_mean'] / base['latency_s_mean']:.2f}× | {r['latency_s_p99']:.2f} | "
            f"{r['ttft_s_mean']:.2f} | {r['ttft_s_p99']:.2f} | "
            f"{r['scheduler_ms_per_step']:.2f} | {r.get('trail_ms_per_step', float('nan')):.2f} | "
            f"{r.get('probe_ms_per_step', float('nan')):.2f} | {r['step_ms']:.1f} | "
            f"{r.get('rank_preemptions', 0)} | {r.get('recompute_tokens', 0):.0f} | "
            f"{r.get('prefill_weight', float('nan')):.3g} | "
            f"{r.get('preempt_margin', float('nan')):.3g} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r["policy"] for r in rows]
    for a, key, title in ((ax[0], "latency", "latency (s)"), (ax[1], "ttft", "TTFT (s)")):
        data = [np.asarray(r[key]) for r in raw]
        a.bar(names, [d.mean() for d in data], label="mean")
        a.plot(names, [np.percentile(d, 99) for d in data], "kv", label="p99")
        a.set_title(title)
        a.legend()
    fig.suptitle(f"vLLM {meta['vllm']}: default scheduler vs TRAIL ({len(raw[0]['latency'])} "
                 "requests)")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print(f"wrote {stem}.md/.json/.png")


if __name__ == "__main__":
    main()
