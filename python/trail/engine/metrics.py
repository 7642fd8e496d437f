"""Per-request records and aggregate serving metrics, written as JSON and CSV."""

from __future__ import annotations

import csv
import json
import math
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from trail.engine.request import RequestOutput


def _stats(values: Sequence[float], prefix: str) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {f"{prefix}_{k}": math.nan for k in ("mean", "median", "p90", "p99")}
    return {f"{prefix}_mean": float(v.mean()), f"{prefix}_median": float(np.median(v)),
            f"{prefix}_p90": float(np.percentile(v, 90)),
            f"{prefix}_p99": float(np.percentile(v, 99))}


def aggregate(outputs: Sequence[RequestOutput], makespan: float) -> dict[str, float]:
    """Latency, TTFT and time per output token (mean/median/p90/p99), throughput, preemptions."""
    done = [o for o in outputs if o.finish_reason != "aborted"]
    latency = [o.finish_time - o.arrival for o in done]
    ttft = [o.first_token_time - o.arrival for o in done if o.first_token_time is not None]
    tpot = [(o.finish_time - o.first_token_time) / (len(o.output_ids) - 1)
            for o in done if o.first_token_time is not None and len(o.output_ids) > 1]
    tokens = sum(len(o.output_ids) for o in done)
    out: dict[str, float] = {"requests": len(outputs), "finished": len(done),
                             "output_tokens": tokens, "makespan_s": makespan,
                             "throughput_tok_s": tokens / makespan if makespan > 0 else math.nan,
                             "preemptions": sum(o.preemptions for o in outputs)}
    out.update(_stats(latency, "latency_s"))
    out.update(_stats(ttft, "ttft_s"))
    out.update(_stats(tpot, "tpot_s"))
    return out


@dataclass
class Report:
    """What `Engine.run` returns: every request's record and the aggregates."""

    outputs: list[RequestOutput]
    aggregates: dict[str, float]
    # Arrivals Engine.run refused (its index in the workload, why): served are the others.
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def save(self, directory: str | pathlib.Path, name: str = "report") -> pathlib.Path:
        """Write DIR/NAME.json (aggregates + records) and DIR/NAME_requests.csv."""
        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        records = [asdict(o) for o in self.outputs]
        (d / f"{name}.json").write_text(json.dumps(
            {"aggregates": self.aggregates, "requests": records}, indent=1) + "\n")
        with open(d / f"{name}_requests.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["rid", "arrival_s", "first_token_s", "finish_s", "prompt_tokens",
                        "output_tokens", "preemptions", "finish_reason"])
            for o in self.outputs:
                w.writerow([o.rid, f"{o.arrival:.6f}",
                            "" if o.first_token_time is None else f"{o.first_token_time:.6f}",
                            f"{o.finish_time:.6f}", len(o.prompt_ids), len(o.output_ids),
                            o.preemptions, o.finish_reason])
        return d / f"{name}.json"
