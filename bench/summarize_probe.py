"""Turn bench_probe.py's pytest-benchmark JSON into a results table, JSON and plot.

    python bench/summarize_probe.py RUN.json bench/results [--label NAME]
"""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from results_io import machine_lines, summary_args, write_json  # noqa: E402

TARGETS = {1: 1.2, 8: 2.0, 64: 1.0, 256: 1.0}  # minimum speed-up of the op over the reference


def main() -> None:
    args = summary_args(__doc__)
    raw = json.loads(args.run_json.read_text())
    rows = {(b["extra_info"]["impl"], b["extra_info"]["batch"]): b for b in raw["benchmarks"]}
    batches = sorted({bb for _, bb in rows})
    label = args.label or raw["datetime"][:10]
    isa = next(iter(rows.values()))["extra_info"]["isa"]
    lines = [f"# Probe step on the CPU ({raw['datetime'][:10]})", "",
             "torch.ops.trail.probe_step (C++) vs the unfused plain-torch reference; "
             f"D=4096, H=512, K=10, fp32, one thread; medians. Kernel ISA: {isa}. "
             "See bench/bench_probe.py.", ""] + machine_lines(raw) + [
             "", "`op+gittins`: torch.ops.trail.probe_step_rank, the same step with the "
             "Gittins rank as a second output.", "",
             "| B | reference (µs) | op (µs) | op+gittins (µs) | op path | speed-up | target | |",
             "|---:|---:|---:|---:|---|---:|---:|---|"]
    results = []
    for b in batches:
        ref = rows[("reference", b)]["stats"]["median"] * 1e6
        op = rows[("op", b)]["stats"]["median"] * 1e6
        ranked = rows.get(("op+gittins", b))
        rank = ranked["stats"]["median"] * 1e6 if ranked else float("nan")
        speed = ref / op
        ok = speed >= TARGETS.get(b, 1.0)
        lines.append(f"| {b} | {ref:.0f} | {op:.0f} | {rank:.0f} | "
                     f"{rows[('op', b)]['extra_info']['path']} "
                     f"| {speed:.2f}× | ≥ {TARGETS.get(b, 1.0):.1f}× | {'met' if ok else 'missed'} |")
        results.append({"batch": b, "reference_us": ref, "op_us": op, "op_gittins_us": rank,
                        "speedup": speed,
                        "target": TARGETS.get(b, 1.0), "met": ok,
                        "path": rows[("op", b)]["extra_info"]["path"]})
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md = args.out_dir / f"probe_cpu_{label}.md"
    md.write_text("\n".join(lines) + "\n")
    write_json(args.out_dir / f"probe_cpu_{label}.json", raw, results)
    plot(results, args.out_dir / f"probe_cpu_{label}.png", isa)
    print(md.read_text())


def plot(results: list[dict], path: pathlib.Path, isa: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = [r["batch"] for r in results]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(b, [r["reference_us"] for r in results], marker="o", label="unfused torch reference")
    ax.plot(b, [r["op_us"] for r in results], marker="o", label=f"trail op (C++, {isa})")
    ax.set(xscale="log", yscale="log", xlabel="batch rows B", ylabel="median µs per step",
           title="Probe step, D=4096 H=512 K=10, 1 thread")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
