"""The engine's report: per-request records and their aggregates (`trail.metrics`), as JSON
and CSV."""

from __future__ import annotations

import csv
import json
import math
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Sequence

from trail.engine.request import RequestOutput
from trail.metrics import aggregate


def aggregate_outputs(outputs: Sequence[RequestOutput], makespan: float) -> dict[str, float]:
    """`trail.metrics.aggregate` of the engine's records (aborted requests count as unfinished)."""
    done = [o.finish_reason != "aborted" for o in outputs]
    return aggregate(
        [o.arrival for o in outputs],
        [math.nan if o.first_token_time is None else o.first_token_time for o in outputs],
        [o.finish_time if d else math.nan for o, d in zip(outputs, done)],
        [len(o.output_ids) for o in outputs], [o.preemptions for o in outputs], makespan)


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
