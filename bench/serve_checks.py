"""`trail serve` under load, measured from outside with the `openai` client:

- `overhead`: what the HTTP server adds per token. B streams of N tokens served together by
  `trail serve` (time per output token as each client sees it: from its first chunk to its
  last over its tokens after the first), against the same B requests served by the engine
  in this process (its decode step time at that batch). Same model, threads and tokens.
- `load`: reliability under a loopback load: R requests at Poisson arrivals, some clients
  disconnecting mid-stream and some bodies malformed. Every well-formed request must complete
  or be aborted by its own client (none lost, none stuck), the KV pool and probe slots must
  be empty afterwards, and the server's RSS must come back near its value before the load.

    python bench/serve_checks.py overhead --model smollm2-135m-instruct --batch 32 --tokens 48
    python bench/serve_checks.py load --requests 500
    python bench/serve_checks.py --smoke

Results go to bench/results/serve_checks_<label>.{json,md} (with a plot of the overhead
check); the server runs as `python -m trail.cli serve` on 127.0.0.1 with one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from vllm_bench_serve import free_port  # noqa: E402

PROMPTS = ("Write a short story about a lighthouse keeper.",
           "Explain how a bicycle stays upright.",
           "List some uses of baking soda.",
           "Describe the water cycle to a child.")


def tiny_model(folder: pathlib.Path) -> str:
    """A tiny demo-language model trained in a second, saved as a folder `trail serve` loads."""
    from trail.models.demo import train

    model, tok, _ = train.train_demo_model(seed=1, steps=25, progress=False, hidden_size=32,
                                           num_layers=2, max_batch_tokens=512, threads=1)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@contextlib.contextmanager
def server(args: list[str], log: pathlib.Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`trail serve` with `args` on a free port, until it answers /health."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "trail.cli", "serve", "--port", str(port),
                                 "--threads", "1", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"trail serve exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                if get(base, "/health")[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("trail serve did not start in 300 s")
            time.sleep(0.3)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def get(base: str, path: str) -> tuple[int, str]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def post_raw(base: str, path: str, body: bytes) -> int:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"content-type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from Prometheus text (NaN if absent), read by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return float("nan")


def rss_bytes(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------- overhead

def engine_step_s(spec: str, batch: int, tokens: int, max_len: int) -> dict[str, Any]:
    """The engine's own decode step time with `batch` rows, serving the same requests."""
    import torch

    from trail.engine import Engine, SamplingParams, engine_config
    from trail.models import encode_prompt, has_chat_template, load_model

    torch.set_num_threads(1)
    model, tok = load_model(spec)
    chat = has_chat_template(tok)
    cfg = engine_config("FCFS", max_running=batch, kv_capacity_tokens=batch * max_len,
                        max_model_len=max_len, record_steps=True)
    with Engine(model, cfg) as engine:
        for i in range(batch):
            engine.add_request(encode_prompt(tok, PROMPTS[i % len(PROMPTS)], chat),
                               SamplingParams(max_new_tokens=tokens))
        while engine.has_unfinished():
            engine.step()
        steps = [s for shape, s in engine.step_log
                 if shape.rows == batch and shape.prefill_tokens == 0]
    return {"decode_steps": len(steps), "step_s_mean": float(np.mean(steps)),
            "step_s_median": float(np.median(steps))}


async def stream_tpot(base: str, model: str, prompt: str, tokens: int, chat: bool
                      ) -> dict[str, Any]:
    """One streamed request (chat, or plain completions for a model without a chat
    template): its tokens, and its time per token after the first as seen here."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0,
                                timeout=600)
    common = dict(model=model, max_tokens=tokens, temperature=0, stream=True,
                  stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    stream = await (client.chat.completions.create(
        messages=[{"role": "user", "content": prompt}], **common) if chat
        else client.completions.create(prompt=prompt, **common))
    stamps, used = [], None
    async for chunk in stream:
        if chunk.choices:
            stamps.append(time.perf_counter())
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    await client.close()
    n = used or len(stamps)
    return {"tokens": n, "tpot_s": (stamps[-1] - stamps[0]) / max(n - 1, 1), "stamps": stamps}


def steady_itl_s(streams: list[dict[str, Any]]) -> float:
    """Mean time between chunks once every stream has its first token and before any has
    its last: the server's decode step at the full batch as the clients see it (the
    streams' own TPOT also spans the prefill steps of the streams admitted after them)."""
    start = max(s["stamps"][0] for s in streams)
    end = min(s["stamps"][-1] for s in streams)
    gaps = [b - a for s in streams for a, b in zip(s["stamps"], s["stamps"][1:])
            if a >= start and b <= end]
    return float(np.mean(gaps)) if gaps else float("nan")


def overhead(args: argparse.Namespace, work: pathlib.Path) -> dict[str, Any]:
    from trail.models import has_chat_template, load_model

    spec = tiny_model(work / "tiny") if args.model == "tiny" else args.model
    print(f"overhead: {args.batch} streams x {args.tokens} tokens on {args.model}", flush=True)
    alone = engine_step_s(spec, args.batch, args.tokens, args.max_model_len)
    print(f"  engine alone: decode step {1e3 * alone['step_s_mean']:.1f} ms at batch "
          f"{args.batch} ({alone['decode_steps']} steps)", flush=True)
    chat = has_chat_template(load_model(spec)[1])
    with server(["--model", spec, "--policy", "FCFS", "--max-running", str(args.batch),
                 "--max-model-len", str(args.max_model_len)], work / "server.log") as (base, _):

        async def all_streams() -> list[dict[str, Any]]:
            return await asyncio.gather(*[stream_tpot(base, spec, PROMPTS[i % len(PROMPTS)],
                                                      args.tokens, chat)
                                          for i in range(args.batch)])

        asyncio.run(stream_tpot(base, spec, PROMPTS[0], 4, chat))  # warm-up
        streams = asyncio.run(all_streams())
    tpots = [s["tpot_s"] for s in streams]
    steady = steady_itl_s(streams)
    out = {"model": args.model, "batch": args.batch, "tokens": args.tokens, "engine": alone,
           "server": {"tpot_s_mean": float(np.mean(tpots)),
                      "tpot_s_median": float(np.median(tpots)),
                      "tpot_s_max": float(np.max(tpots)), "steady_itl_s": steady,
                      "tokens": [s["tokens"] for s in streams], "tpot_s": tpots},
           "ratio_mean": float(np.mean(tpots)) / alone["step_s_mean"],
           "ratio_steady": steady / alone["step_s_mean"]}
    print(f"  through trail serve: TPOT {1e3 * out['server']['tpot_s_mean']:.1f} ms mean "
          f"(ratio to the engine's step {out['ratio_mean']:.3f}); between tokens with all "
          f"{args.batch} streams decoding {1e3 * steady:.1f} ms (ratio "
          f"{out['ratio_steady']:.3f})", flush=True)
    return out


# ---------------------------------------------------------------- load

async def load_client(base: str, model: str, kind: str, rng: np.random.Generator
                      ) -> dict[str, Any]:
    """One client: 'ok' (streamed or not), 'disconnect' (leaves mid-stream) or 'bad'."""
    import openai

    if kind == "bad":
        body = b"{not json" if rng.random() < 0.5 else json.dumps(
            {"prompt": "x", "max_tokens": "ten"}).encode()
        status = await asyncio.to_thread(post_raw, base, "/v1/completions", body)
        return {"kind": kind, "status": status}
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0,
                                timeout=120)
    prompt = f"count down from {int(rng.integers(2, 10))}"
    try:
        if kind == "disconnect":
            stream = await client.completions.create(
                model=model, prompt=prompt, max_tokens=400, stream=True,
                extra_body={"ignore_eos": True})
            leave_after = int(rng.integers(1, 4))
            seen = 0
            async for _ in stream:
                seen += 1
                if seen >= leave_after:
                    break
            await stream.close()
            return {"kind": kind, "chunks": seen}
        tokens = int(rng.integers(4, 64))
        extra = {"ignore_eos": bool(rng.random() < 0.5)}
        if rng.random() < 0.5:
            r = await client.completions.create(model=model, prompt=prompt, max_tokens=tokens,
                                                extra_body=extra)
            reason = r.choices[0].finish_reason
        else:
            reason = None
            stream = await client.completions.create(model=model, prompt=prompt,
                                                     max_tokens=tokens, stream=True,
                                                     extra_body=extra)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].finish_reason:
                    reason = chunk.choices[0].finish_reason
        return {"kind": kind, "finish_reason": reason}
    except Exception as exc:  # noqa: BLE001 - a lost request is what this check counts
        return {"kind": kind, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        await client.close()


def load(args: argparse.Namespace, work: pathlib.Path) -> dict[str, Any]:
    from trail.probe import Probe

    folder = tiny_model(work / "tiny")
    hidden = json.loads((work / "tiny" / "config.json").read_text())["hidden_size"]
    Probe(hidden, layer=1).save(work / "probe")
    rng = np.random.default_rng(args.seed)
    n = args.requests
    kinds = rng.choice(["ok", "disconnect", "bad"], size=n, p=[0.85, 0.10, 0.05])
    at = np.cumsum(rng.exponential(1.0 / args.rate, n))
    print(f"load: {n} requests at {args.rate:g} req/s ({int((kinds == 'disconnect').sum())} "
          f"disconnect, {int((kinds == 'bad').sum())} malformed)", flush=True)
    with server(["--model", folder, "--policy", "TRAIL", "--probe", str(work / "probe"),
                 "--max-running", "8", "--max-model-len", "512",
                 "--max-waiting", str(n + 10)], work / "server.log") as (base, proc):

        async def run(count: int, kinds_: Any, at_: Any) -> list[dict[str, Any]]:
            t0 = time.perf_counter()

            async def one(k: str, t: float, seed: int) -> dict[str, Any]:
                await asyncio.sleep(max(0.0, t - (time.perf_counter() - t0)))
                return await load_client(base, folder, k, np.random.default_rng(seed))

            return await asyncio.gather(*[one(str(kinds_[i]), float(at_[i]), args.seed + i)
                                          for i in range(count)])

        asyncio.run(run(20, ["ok"] * 20, np.zeros(20)))  # warm-up: allocations settle
        rss_before = rss_bytes(proc.pid)
        t0 = time.perf_counter()
        results = asyncio.run(run(n, kinds, at))
        wall = time.perf_counter() - t0
        deadline, stuck = time.monotonic() + 60, True
        while time.monotonic() < deadline:
            text = get(base, "/metrics")[1]
            if metric(text, "trail_requests_running") == 0 and \
                    metric(text, "trail_requests_waiting") == 0:
                stuck = False
                break
            time.sleep(0.5)
        text = get(base, "/metrics")[1]
        rss_after = rss_bytes(proc.pid)
    ok = [r for r in results if r["kind"] == "ok"]
    out = {"requests": n, "rate_req_s": args.rate, "wall_s": wall,
           "well_formed": len(ok), "disconnecting": int((kinds == "disconnect").sum()),
           "malformed": int((kinds == "bad").sum()),
           "completed": sum(r.get("finish_reason") in ("stop", "length") for r in ok),
           "lost": [r for r in results if r["kind"] != "bad" and "error" in r],
           "malformed_answered_400": sum(r.get("status") == 400 for r in results
                                         if r["kind"] == "bad"),
           "server_aborted": metric(text, "trail_requests_finished_total", finish_reason="abort"),
           "server_errors": metric(text, "trail_requests_finished_total", finish_reason="error"),
           "stuck": stuck,
           "kv_blocks_used_after": metric(text, "trail_kv_blocks_used"),
           "probe_slots_used_after": metric(text, "trail_probe_slots_used"),
           "rss_before_bytes": rss_before, "rss_after_bytes": rss_after,
           "rss_ratio": rss_after / rss_before}
    out["passed"] = bool(out["completed"] == out["well_formed"] and not out["lost"]
                         and not stuck and out["malformed_answered_400"] == out["malformed"]
                         and out["server_aborted"] == out["disconnecting"]
                         and out["kv_blocks_used_after"] == 0
                         and out["probe_slots_used_after"] == 0
                         and out["rss_ratio"] <= 1.05)
    print(f"  {out['completed']}/{out['well_formed']} well-formed completed, "
          f"{len(out['lost'])} lost, {int(out['server_aborted'])}/{out['disconnecting']} "
          f"disconnects aborted, {out['malformed_answered_400']}/{out['malformed']} malformed "
          f"answered 400, stuck: {stuck}, KV blocks {out['kv_blocks_used_after']:.0f}, probe "
          f"slots {out['probe_slots_used_after']:.0f}, RSS x{out['rss_ratio']:.3f}; "
          f"passed: {out['passed']}", flush=True)
    return out


# ---------------------------------------------------------------- results

def write(result: dict[str, Any], out: pathlib.Path, label: str) -> pathlib.Path:
    from results_io import portable
    from trail.provenance import provenance

    result = portable({"date": dt.datetime.now().isoformat(timespec="seconds"),
                       "command": " ".join(["python", "bench/serve_checks.py"] + sys.argv[1:]),
                       "provenance": provenance(), **result})
    stem = out / f"serve_checks_{label}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# `trail serve` checks ({label})", "", f"Command: `{result['command']}`", "",
             f"Machine and versions: {json.dumps(result['provenance'])}", ""]
    o = result.get("overhead")
    if o:
        lines += ["## Overhead: time per output token through the server vs the engine's step",
                  "", f"{o['batch']} streams of {o['tokens']} tokens ({o['model']}), "
                  "streamed, one thread.", "",
                  "TPOT is each stream's own (first chunk to last, over its tokens after the "
                  "first: it includes the prefill steps of streams admitted after it); "
                  "'all decoding' is the mean time between chunks while every stream is "
                  "decoding, the server's step at the full batch as its clients see it.", "",
                  "| engine decode step at the batch (ms) | TPOT through `trail serve`, mean "
                  "(ms) | median | max | TPOT / step | between tokens, all decoding (ms) | "
                  "/ step |", "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {1e3 * o['engine']['step_s_mean']:.1f} | "
                  f"{1e3 * o['server']['tpot_s_mean']:.1f} | "
                  f"{1e3 * o['server']['tpot_s_median']:.1f} | "
                  f"{1e3 * o['server']['tpot_s_max']:.1f} | {o['ratio_mean']:.3f} | "
                  f"{1e3 * o['server']['steady_itl_s']:.1f} | {o['ratio_steady']:.3f} |", ""]
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.hist(1e3 * np.asarray(o["server"]["tpot_s"]), bins=16, label="TPOT per stream, "
                "through trail serve")
        ax.axvline(1e3 * o["engine"]["step_s_mean"], color="k", ls="--",
                   label="engine decode step, alone")
        ax.set(xlabel="ms per token", ylabel="streams",
               title=f"{o['model']}: {o['batch']} streams x {o['tokens']} tokens")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=120)
    ld = result.get("load")
    if ld:
        lines += ["## Load: every well-formed request served or aborted by its own client", "",
                  "| requests | rate (req/s) | well-formed completed | lost | disconnects "
                  "aborted | malformed answered 400 | stuck | KV blocks after | probe slots "
                  "after | RSS after / before | passed |",
                  "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
                  f"| {ld['requests']} | {ld['rate_req_s']:g} | {ld['completed']}/"
                  f"{ld['well_formed']} | {len(ld['lost'])} | {ld['server_aborted']:.0f}/"
                  f"{ld['disconnecting']} | {ld['malformed_answered_400']}/{ld['malformed']} | "
                  f"{ld['stuck']} | {ld['kv_blocks_used_after']:.0f} | "
                  f"{ld['probe_slots_used_after']:.0f} | {ld['rss_ratio']:.3f} | "
                  f"{ld['passed']} |", ""]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("check", nargs="*", help="overhead, load or both (default both)")
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="the overhead check's model: a trail model name, a folder or 'tiny'")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0, help="the load's Poisson rate, req/s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--smoke", action="store_true",
                    help="both checks, small, on the tiny model, into a temporary folder")
    args = ap.parse_args()
    checks = args.check or ["overhead", "load"]
    unknown = sorted(set(checks) - {"overhead", "load"})
    if unknown:
        ap.error(f"unknown checks {unknown}: choose overhead, load or both")
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        if args.smoke:
            args.model, args.batch, args.tokens, args.requests, args.rate = "tiny", 4, 8, 40, 40.0
            args.out, args.label = tmp, "smoke"
        result: dict[str, Any] = {}
        if "overhead" in checks:
            result["overhead"] = overhead(args, work)
        if "load" in checks:
            result["load"] = load(args, work)
        stem = write(result, pathlib.Path(args.out), args.label or dt.date.today().isoformat())
        print(f"wrote {stem}.md")
        if args.smoke:
            assert result["load"]["passed"], result["load"]
            print("smoke run done")


if __name__ == "__main__":
    main()
