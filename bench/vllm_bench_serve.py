"""OpenAI servers measured by vLLM's own client: `vllm bench serve` against `vllm serve` with
and without TRAIL's scheduler, and against `trail serve` (TRAIL's own engine) under each
policy, at several Poisson rates, on real prompts.

For each run, each prompt set and each policy (in an order rotated every run, so a drift in
the machine's speed does not favour one policy), one server starts; `vllm bench serve` then
drives it at every rate, lowest first, with the same prompts and arrival times for every
policy (its --seed); the server stops. Each point's result is vLLM's own JSON (TTFT, TPOT,
ITL, E2E: mean, median, p99), plus TRAIL's counters (rank preemptions, every preemption,
recomputed tokens, the learned β and margin) read from the scheduler's stats file before
and after it. Points already measured are kept, so an interrupted sweep resumes.

    python bench/vllm_bench_serve.py --prompts alpaca=$TRAIL_SHARED_DATA/alpaca/alpaca_data_subset5000.json \
        --prompts chat=$TRAIL_SHARED_DATA/alpaca_eval/alpaca_eval_instructions.jsonl \
        --rates 0.2,0.4,0.6,0.8 --runs 3 --requests 50 \
        --prompt-predictor PROMPT_ONLY_DIR --work runs/bench-serve
    python bench/vllm_bench_serve.py --summarize runs/bench-serve --label NAME

Policies: `fcfs` (vLLM's own scheduler), `trail` (TrailAsyncScheduler, policy TRAIL, the
shipped probe installed over HTTP, the prompt predictor at arrival when given), `sjf`
(TrailAsyncScheduler, policy SJF on the prompt predictor); `engine-fcfs`, `engine-trail`,
`engine-sjf`: `trail serve` with that policy, the same probe and predictor, batch and context
(ratios of engine-* rows are to engine-fcfs of the same run; `vs vLLM FCFS` compares the two
servers). Greedy decoding, so every policy serves the same tokens. Run it with the Python of the vLLM venv (README, "TRAIL inside
vLLM"). vLLM's CPU build cannot start its `vllm` command (it looks for package metadata
named vllm), so the client runs as `vllm.benchmarks.serve`, the code behind
`vllm bench serve`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from trail.cli.models import has_chat_template  # noqa: E402
POLICIES = ("fcfs", "trail", "sjf")  # vLLM's server (with TRAIL's scheduler plugged in)
ENGINE_POLICIES = ("engine-fcfs", "engine-trail", "engine-sjf")  # `trail serve`
ALL_POLICIES = POLICIES + ENGINE_POLICIES
START_S = 600  # a server's start on 2 busy cores, at most
METRICS = ("ttft", "tpot", "itl", "e2el")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_prompts(name: str, source: str, skip: int, n: int, work: pathlib.Path) -> pathlib.Path:
    """The prompt set as vLLM's custom dataset (JSONL with a `prompt` field): rows
    [skip, skip + n) of `source` (Alpaca JSON or a JSONL with `prompt`/`instruction`),
    read as trail reads prompts everywhere (`trail.training.collect.read_prompts`)."""
    from trail.training.collect import read_prompts

    texts = read_prompts(source)
    rows = texts[skip: skip + n] if len(texts) > skip else texts[:n]
    if len(rows) < n:
        raise ValueError(f"{source}: {len(rows)} prompts from row {skip}, {n} wanted")
    path = work / f"prompts_{name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in rows))
    return path


def server_cmd(args: argparse.Namespace, policy: str, port: int, stats: pathlib.Path,
               model: str) -> list[str]:
    """`vllm serve`'s command (the OpenAI server module) for one policy; the same engine
    settings for all: float32, eager, no prefix caching (so the probe sees whole prompts),
    the same batch and KV size. An engine-* policy: `trail serve`'s, with the same batch,
    context, threads, probe and prompt predictor."""
    if policy in ENGINE_POLICIES:
        name = {"engine-fcfs": "FCFS", "engine-trail": "TRAIL", "engine-sjf": "SJF"}[policy]
        cmd = [sys.executable, "-m", "trail.cli", "serve", "--model", model, "--policy", name,
               "--host", "127.0.0.1", "--port", str(port), "--max-running",
               str(args.max_num_seqs), "--max-model-len", str(args.max_model_len),
               "--threads", str(args.threads), "--max-waiting", str(max(args.requests, 1) * 2)]
        if name == "TRAIL":
            cmd += ["--probe", str(pathlib.Path(args.probe).resolve())]
        if args.prompt_predictor and name != "FCFS":
            cmd += ["--prompt-predictor", str(pathlib.Path(args.prompt_predictor).resolve())]
        return cmd
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs),
           "--kv-cache-memory-bytes", str(args.kv_bytes), "--enforce-eager",
           "--no-enable-prefix-caching", "--seed", "0"]
    if policy == "fcfs":
        return cmd
    trail: dict[str, Any] = {"policy": "TRAIL" if policy == "trail" else "SJF",
                             "stats_path": str(stats)}
    if args.prompt_predictor:
        trail["prompt_predictor"] = str(pathlib.Path(args.prompt_predictor).resolve())
    return cmd + ["--scheduler-cls", "trail.integrations.vllm.scheduler.TrailAsyncScheduler",
                  "--worker-extension-cls",
                  "trail.integrations.vllm.worker.TrailWorkerExtension",
                  "--additional-config", json.dumps({"trail": trail})]


def start_server(args: argparse.Namespace, policy: str, work: pathlib.Path, model: str
                 ) -> tuple[subprocess.Popen, int, pathlib.Path]:
    """Start one policy's server and wait until it serves (and has the probe, for TRAIL)."""
    import httpx

    port = free_port()
    stats = work / f"stats_{policy}.json"
    stats.unlink(missing_ok=True)
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1", HF_HUB_OFFLINE="1",
               VLLM_LOGGING_LEVEL="WARNING", OMP_NUM_THREADS=str(args.threads))
    log = open(work / f"server_{policy}.log", "w")
    server = subprocess.Popen(server_cmd(args, policy, port, stats, model), env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_S
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the {policy} server exited; see {work}/server_{policy}.log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"the {policy} server did not start in {START_S} s")
        time.sleep(2)
    if policy == "trail":  # vLLM's: the probe is installed in its worker over HTTP
        r = httpx.post(f"http://127.0.0.1:{port}/collective_rpc", timeout=120,
                       json={"method": "trail_install_probe", "args": [str(args.probe)]})
        r.raise_for_status()
    return server, port, stats


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def read_stats(path: pathlib.Path, port: int | None = None) -> dict[str, float]:
    """TRAIL's counters: from the vLLM scheduler's stats file ({} for FCFS or before the
    first), or with `port`, from `trail serve`'s /metrics (preemptions)."""
    if port is not None:
        import httpx
        from serve_checks import metric

        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return {"preemptions": metric(text, "trail_preemptions_total")}
    try:
        return dict(json.loads(path.read_text())["stats"])
    except (OSError, ValueError, KeyError):
        return {}


def bench(args: argparse.Namespace, port: int, model: str, prompts: pathlib.Path, rate: float,
          seed: int, out: pathlib.Path) -> None:
    """One `vllm bench serve` run; its JSON result lands in `out`."""
    client = [sys.executable, __file__, "--client", "--",
              "--backend", "vllm", "--base-url", f"http://127.0.0.1:{port}",
              "--model", model, "--tokenizer", model, "--dataset-name", "custom",
              "--dataset-path", str(prompts), "--custom-output-len", str(args.max_tokens),
              "--num-prompts", str(args.requests), "--request-rate", str(rate),
              "--seed", str(seed), "--temperature", "0", "--num-warmups", "2",
              "--percentile-metrics", ",".join(METRICS), "--metric-percentiles", "50,99",
              "--save-result", "--result-dir", str(out.parent),
              "--result-filename", out.name, "--disable-tqdm"]
    if not has_chat_template(model):  # prompts go as they are
        client.append("--skip-chat-template")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    subprocess.run(client, check=True, env=env, stdout=subprocess.DEVNULL)


def sweep(args: argparse.Namespace) -> None:
    from vllm_serving import resolve_model

    from results_io import portable

    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "sweep_command.txt").write_text(portable(" ".join(
        ["python", "bench/vllm_bench_serve.py"] + sys.argv[1:])) + "\n")
    model = str(resolve_model(args.model).resolve())
    sets = {}
    for spec in args.prompts:
        name, _, source = spec.partition("=")
        sets[name] = write_prompts(name, source, args.skip, args.requests, work)
    rates = sorted(float(r) for r in args.rates.split(","))
    policies = args.policies.split(",")
    total = args.runs * len(sets) * len(policies) * len(rates)
    done = 0
    t0 = time.monotonic()
    for run in range(args.runs):
        order = policies[run % len(policies):] + policies[:run % len(policies)]
        for name, prompts in sets.items():
            for policy in order:
                todo = [r for r in rates if not point(work, name, policy, r, run).exists()]
                done += len(rates) - len(todo)
                if not todo:
                    continue
                server, port, stats = start_server(args, policy, work, model)
                metrics_port = port if policy in ENGINE_POLICIES else None
                try:
                    for rate in todo:
                        before = read_stats(stats, metrics_port)
                        out = point(work, name, policy, rate, run)
                        bench(args, port, model, prompts, rate, args.seed + run, out)
                        time.sleep(3)  # the stats file is rewritten every 50 steps
                        result = json.loads(out.read_text())
                        result["trail_stats_before"], result["trail_stats_after"] = (
                            before, read_stats(stats, metrics_port))
                        result["sweep"] = {"prompts": name, "policy": policy, "rate": rate,
                                           "run": run, "order": order}
                        out.write_text(json.dumps(result))
                        done += 1
                        print(f"[{done}/{total}] {name} {policy} {rate:g} req/s run {run}: "
                              f"mean E2E {result['mean_e2el_ms'] / 1e3:.2f} s "
                              f"({(time.monotonic() - t0) / 60:.1f} min)", flush=True)
                finally:
                    stop_server(server)


def point(work: pathlib.Path, prompts: str, policy: str, rate: float, run: int) -> pathlib.Path:
    return work / f"point_{prompts}_{policy}_{rate:g}_run{run}.json"


# ---------------------------------------------------------------- summary

def summarize(args: argparse.Namespace) -> None:
    """Medians over runs of each point, ratios to FCFS of the same run, a table and a plot."""
    import numpy as np
    from results_io import portable
    from trail.provenance import provenance

    work = pathlib.Path(args.summarize)
    points = [json.loads(p.read_text()) for p in sorted(work.glob("point_*.json"))]
    if not points:
        raise SystemExit(f"{work}: no measured points")
    by: dict[tuple, dict[str, Any]] = {}
    for p in points:
        s = p["sweep"]
        by[(s["prompts"], s["rate"], s["policy"], s["run"])] = p
    rows = []
    for (name, rate, policy, run), p in sorted(by.items(), key=lambda kv: (
            kv[0][0], kv[0][1], order_of(kv[0][2]), kv[0][3])):
        vllm_fcfs = by.get((name, rate, "fcfs", run))
        # each server's policies against that server's FCFS
        fcfs = by.get((name, rate, "engine-fcfs", run)) if policy in ENGINE_POLICIES \
            else vllm_fcfs
        a, b = p.get("trail_stats_after", {}), p.get("trail_stats_before", {})
        row = {"prompts": name, "rate": rate, "policy": policy, "run": run,
               "completed": p["completed"], "request_throughput": p["request_throughput"]}
        for m in METRICS:
            for stat in ("mean", "median", "p99"):
                row[f"{stat}_{m}_s"] = p[f"{stat}_{m}_ms"] / 1e3
        for k in ("rank_preemptions", "preemptions", "recompute_tokens"):
            if k in a:
                row[k] = a[k] - b.get(k, 0)
        for k in ("prefill_weight", "preempt_margin"):
            if k in a:  # an unmeasured margin is infinite (no rank preemption): null
                row[k] = a[k] if np.isfinite(a[k]) else None
        for kind in ("decode", "prefill"):  # this point's steps, from the running means
            n = a.get(f"{kind}_steps", 0) - b.get(f"{kind}_steps", 0)
            if n > 0:
                def total(d: dict[str, float], what: str) -> float:
                    return d.get(f"{kind}_steps", 0) * d.get(f"{kind}_{what}", 0.0)
                row[f"{kind}_steps"] = n
                row[f"{kind}_step_ms"] = (total(a, "step_ms") - total(b, "step_ms")) / n
                row[f"{kind}_rows_per_step"] = (total(a, "rows_per_step")
                                                - total(b, "rows_per_step")) / n
        if fcfs is not None:
            row["e2e_mean_vs_fcfs"] = p["mean_e2el_ms"] / fcfs["mean_e2el_ms"]
            row["e2e_p99_vs_fcfs"] = p["p99_e2el_ms"] / fcfs["p99_e2el_ms"]
            row["throughput_vs_fcfs"] = p["request_throughput"] / fcfs["request_throughput"]
        if vllm_fcfs is not None:
            row["e2e_mean_vs_vllm_fcfs"] = p["mean_e2el_ms"] / vllm_fcfs["mean_e2el_ms"]
        rows.append(row)
    label = args.label or dt.date.today().isoformat()
    stem = pathlib.Path(args.out) / f"vllm_bench_serve_{label}"
    meta = portable({"date": dt.datetime.now().isoformat(timespec="seconds"),
                     "command": " ".join(["python", "bench/vllm_bench_serve.py"]
                                         + sys.argv[1:]),
                     "sweep_command": (work / "sweep_command.txt").read_text().strip()
                     if (work / "sweep_command.txt").exists() else None,
                     "provenance": provenance() | {"vllm": vllm_version()},
                     "requests_per_point": points[0].get("num_prompts"),
                     "rows": rows})
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")

    def med(sel: list[dict[str, Any]], key: str) -> float:
        vals = [r[key] for r in sel if key in r]
        return float(np.median(vals)) if vals else float("nan")

    prov = meta["provenance"]
    lines = [f"# `vllm bench serve` against vLLM's OpenAI server, FCFS vs TRAIL's scheduler "
             f"({label})", "", f"Sweep: `{meta['sweep_command']}`", "",
             f"Summary: `{meta['command']}`", "",
             f"Machine and versions: {json.dumps(prov)}", "",
             "Medians over runs; ratios are to FCFS in the same run (same prompts, same "
             "arrival times) on the same server: vLLM's for fcfs, trail and sjf, `trail "
             "serve`'s (engine-fcfs) for engine-*; `vs vLLM FCFS` compares with vLLM's FCFS. "
             "The step counters are TRAIL's scheduler's inside vLLM (vLLM's FCFS keeps none; "
             "`trail serve` reports its preemptions only); nan where a policy has none.", "",
             "| prompts | rate (req/s) | policy | runs | mean E2E (s) | p99 E2E (s) | "
             "mean TTFT (s) | mean TPOT (ms) | E2E mean / FCFS | E2E p99 / FCFS | "
             "throughput / FCFS | vs vLLM FCFS | rank preemptions | preemptions | "
             "recomputed tokens | decode step (ms) | rows / decode step |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["prompts"], r["rate"], r["policy"]) for r in rows},
                  key=lambda k: (k[0], k[1], order_of(k[2])))
    for name, rate, policy in keys:
        sel = [r for r in rows if (r["prompts"], r["rate"], r["policy"]) == (name, rate, policy)]
        lines.append(
            f"| {name} | {rate:g} | {policy} | {len(sel)} | {med(sel, 'mean_e2el_s'):.2f} | "
            f"{med(sel, 'p99_e2el_s'):.2f} | {med(sel, 'mean_ttft_s'):.2f} | "
            f"{1e3 * med(sel, 'mean_tpot_s'):.0f} | {med(sel, 'e2e_mean_vs_fcfs'):.3f} | "
            f"{med(sel, 'e2e_p99_vs_fcfs'):.2f} | {med(sel, 'throughput_vs_fcfs'):.3f} | "
            f"{med(sel, 'e2e_mean_vs_vllm_fcfs'):.3f} | "
            f"{med(sel, 'rank_preemptions'):.0f} | {med(sel, 'preemptions'):.0f} | "
            f"{med(sel, 'recompute_tokens'):.0f} | "
            f"{med(sel, 'decode_step_ms'):.0f} | {med(sel, 'decode_rows_per_step'):.1f} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["prompts"] for r in rows})
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for policy in [p for p in ALL_POLICIES if any(r["policy"] == p for r in rows)]:
            rs = sorted({r["rate"] for r in rows if r["prompts"] == name})
            sel = [[r for r in rows if (r["prompts"], r["rate"], r["policy"]) ==
                    (name, rate, policy)] for rate in rs]
            line, = ax.plot(rs, [med(s, "mean_e2el_s") for s in sel], "o-", label=f"{policy} mean")
            ax.plot(rs, [med(s, "p99_e2el_s") for s in sel], "s--", color=line.get_color(),
                    label=f"{policy} p99")
        ax.set(title=f"{name} prompts", xlabel="Poisson rate (req/s)", ylabel="E2E latency (s)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    print(stem.with_suffix(".md").read_text())


def order_of(policy: str) -> int:
    return ALL_POLICIES.index(policy) if policy in ALL_POLICIES else len(ALL_POLICIES)


def vllm_version() -> str | None:
    try:
        import vllm
    except ImportError:
        return None
    return getattr(vllm, "__version__", None)


def smoke(args: argparse.Namespace) -> None:
    """The whole sweep and its summary on a tiny random model, in a temporary folder."""
    import tempfile

    from trail import Probe
    from trail.integrations.vllm.tiny import build_tiny_llama
    from vllm_serving import SMOKE_PROMPTS

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        args.model = str(build_tiny_llama(work / "tiny"))
        args.probe = str(work / "probe")
        Probe(128, layer=1).save(args.probe)
        source = work / "smoke.jsonl"
        source.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in SMOKE_PROMPTS))
        args.prompts, args.skip, args.requests = [f"smoke={source}"], 0, 6
        args.rates, args.runs, args.policies = "4", 1, "fcfs,trail,engine-fcfs,engine-trail"
        args.max_tokens, args.max_model_len, args.max_num_seqs = 12, 256, 2
        args.kv_bytes, args.work, args.prompt_predictor = 1 << 26, str(work / "points"), None
        sweep(args)
        args.summarize, args.out, args.label = args.work, str(work), "smoke"
        summarize(args)
        rows = json.loads((work / "vllm_bench_serve_smoke.json").read_text())["rows"]
        assert len(rows) == 4 and all(r["completed"] == 6 for r in rows), rows


def client(argv: list[str]) -> None:
    """`vllm bench serve` (vllm.benchmarks.serve, what the CLI runs) with `argv`."""
    from vllm.benchmarks.serve import add_cli_args, main

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # older vLLM
        from vllm.utils import FlexibleArgumentParser
    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    main(parser.parse_args(argv))


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--client":
        client(sys.argv[3:] if sys.argv[2] == "--" else sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", action="append", default=[],
                    help="NAME=FILE (Alpaca JSON or JSONL with prompt/instruction); repeatable")
    ap.add_argument("--skip", type=int, default=4000,
                    help="first row used (the rows before may have trained the predictors)")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--rates", default="0.2,0.4,0.6,0.8", help="Poisson rates, req/s")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help=f"comma-separated, from {', '.join(ALL_POLICIES)} (default: "
                         f"{','.join(POLICIES)})")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--max-num-seqs", type=int, default=8)
    ap.add_argument("--kv-bytes", type=int, default=1 << 30, help="vLLM's KV cache, bytes")
    ap.add_argument("--threads", type=int, default=1, help="the server's OMP threads")
    ap.add_argument("--probe", default=None,
                    help="probe folder for trail (default: the model's shipped probe)")
    ap.add_argument("--prompt-predictor", default=None,
                    help="prompt-only predictor folder (sjf needs one; trail uses it too)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/bench-serve", help="where points are kept")
    ap.add_argument("--summarize", metavar="WORK", help="summarize a sweep's points")
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"),
                    help="where the summary goes")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny random model, 6 prompts, fcfs and trail at one rate: checks "
                         "the script end to end in a few minutes (CI's vLLM job)")
    args = ap.parse_args()
    if args.summarize:
        summarize(args)
        return
    if args.smoke:
        smoke(args)
        return
    if not args.prompts:
        ap.error("give --prompts NAME=FILE at least once")
    chosen = args.policies.split(",")
    unknown = sorted(set(chosen) - set(ALL_POLICIES))
    if unknown:
        ap.error(f"unknown policies {unknown}; choose from {', '.join(ALL_POLICIES)}")
    if {"sjf", "engine-sjf"} & set(chosen) and not args.prompt_predictor:
        ap.error("the sjf policies rank by a prompt-only predictor: give --prompt-predictor")
    if args.probe is None:
        from trail.models import probe_path

        args.probe = str(probe_path(args.model))
    sweep(args)


if __name__ == "__main__":
    main()
