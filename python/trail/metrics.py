"""Serving metrics, one definition for the engine, the simulator and the demo.

`aggregate` turns per-request times into the aggregates every report carries
(`latency_s_mean`, `ttft_s_p99`, `throughput_tok_s`, ...); `summary_row` is the short
per-policy row of a comparison table (`latency_s_mean`, `latency_s_p99`, ...), taken from
those aggregates. Times are seconds; a request that never finished has finish = NaN, one
that never produced a token has first_token = NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

QUANTILES = (("mean", None), ("median", 50), ("p90", 90), ("p99", 99))


def stats(values: np.ndarray, prefix: str) -> dict[str, float]:
    """Mean, median, p90 and p99 of the finite values, as PREFIX_mean ...; NaN when none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {f"{prefix}_{k}": math.nan for k, _ in QUANTILES}
    return {f"{prefix}_{k}": float(v.mean() if q is None else np.percentile(v, q))
            for k, q in QUANTILES}


def aggregate(arrival: Any, first_token: Any, finish: Any, output_tokens: Any,
              preemptions: Any, makespan: float | None = None) -> dict[str, float]:
    """Latency, TTFT and time per output token (mean/median/p90/p99), throughput, counts.

    Only finished requests count in the times and the tokens; `makespan` defaults to the
    last finish minus the first arrival.
    """
    arrival, first, finish = (np.asarray(x, dtype=float) for x in (arrival, first_token, finish))
    tokens, preempt = np.asarray(output_tokens, dtype=np.int64), np.asarray(preemptions)
    done = np.isfinite(finish)
    if makespan is None:
        makespan = float(finish[done].max() - arrival.min()) if done.any() else math.nan
    multi = done & np.isfinite(first) & (tokens > 1)
    out_tokens = int(tokens[done].sum())
    out: dict[str, float] = {
        "submitted": int(len(arrival)), "finished": int(done.sum()),
        "output_tokens": out_tokens, "makespan_s": makespan,
        "throughput_tok_s": out_tokens / makespan if makespan and makespan > 0 else math.nan,
        "preemptions": int(preempt.sum())}
    out.update(stats((finish - arrival)[done], "latency_s"))
    out.update(stats((first - arrival)[done], "ttft_s"))
    out.update(stats((finish - first)[multi] / (tokens[multi] - 1), "tpot_s"))
    return out


SUMMARY_KEYS = ("latency_s_mean", "latency_s_median", "latency_s_p99", "ttft_s_mean",
                "throughput_tok_s", "preemptions", "submitted", "finished")


def summary_row(a: dict[str, float]) -> dict[str, Any]:
    """The per-policy row of a comparison (summary.json, tables): SUMMARY_KEYS of `aggregate`'s
    output, under the same names, counts as ints."""
    return {k: int(a[k]) if k in ("preemptions", "submitted", "finished") else a[k]
            for k in SUMMARY_KEYS}
