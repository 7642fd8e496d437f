"""The named policy set-ups TRAIL compares, in one table: the simulator's comparison
(`trail.sim.compare`, `trail simulate`) and the demo (`trail.demo.end_to_end`) both read it.

A set-up pairs a scheduler policy with what it is told about lengths and which key it ranks by:

- `FCFS`: arrival order (vLLM's default).
- `SJF`: the paper's baseline: SJF on a prompt-only prediction at arrival, ranked by the
  output length alone (the paper's rule: β = 0, α = 0, margin 0, rank "mean").
- `SJF-work`: SJF on the same prompt-only predictions with TRAIL's work-aware key.
- `SRPT`: TRAIL's key and probe, preempting with no c limit (simulator only).
- `TRAIL-paper`: the paper's exact rule on the embedding probe, with no cap on preemptions
  and no starvation guard.
- `TRAIL`: the recommended configuration on the probe.
- `TRAIL+`: TRAIL's rule fed true lengths (the oracle bound).
- `LTR`: learned-to-rank scores at arrival; `MLFQ`: FastServe's multi-level feedback queue.

"TRAIL's work-aware key" (`work`) means the settings each caller holds for TRAIL: the prefill
weight β, aging α, preemption margin, KV-aware fill and rank ("mean" or "gittins"); the
other set-ups run as their authors describe them.
"""

from __future__ import annotations

from dataclasses import dataclass

import trail_ext as te

LENGTHS = (None, "prompt-only", "probe", "true")


@dataclass(frozen=True)
class PolicySpec:
    """One named set-up: scheduler policy, what it knows of lengths, and which key it uses."""

    name: str
    scheduler: str            # a trail_ext.Policy name
    lengths: str | None       # None, "prompt-only", "probe" (prompt-only until the probe's
    #                           first prediction) or "true"
    scores: bool = False      # learned-to-rank scores at arrival
    work: bool = False        # TRAIL's work-aware key, aging, margin, KV-aware fill, rank
    guards: bool = True       # the preemption cap and starvation guard apply

    @property
    def policy(self) -> te.Policy:
        """The scheduler policy as trail_ext's enum."""
        return getattr(te.Policy, self.scheduler)


SPECS: dict[str, PolicySpec] = {s.name: s for s in (
    PolicySpec("FCFS", "FCFS", None),
    PolicySpec("SJF", "SJF", "prompt-only"),
    PolicySpec("SJF-work", "SJF", "prompt-only", work=True),
    PolicySpec("SRPT", "SRPT", "probe", work=True),
    PolicySpec("TRAIL-paper", "TRAIL", "probe", guards=False),
    PolicySpec("TRAIL", "TRAIL", "probe", work=True),
    PolicySpec("TRAIL+", "TRAIL", "true", work=True),
    PolicySpec("LTR", "LTR", None, scores=True),
    PolicySpec("MLFQ", "MLFQ", None),
)}
POLICY_NAMES = tuple(SPECS)
# What a side-by-side comparison serves (SRPT is TRAIL with c = 1: a knob, not a rival).
COMPARE = tuple(n for n in POLICY_NAMES if n != "SRPT")


def canonical_name(name: str) -> str:
    """The POLICY_NAMES spelling of `name` (case-insensitive); ValueError if unknown."""
    names = {n.upper(): n for n in POLICY_NAMES}
    if not isinstance(name, str) or name.upper() not in names:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
    return names[name.upper()]


def spec(name: str) -> PolicySpec:
    """The set-up of a name of POLICY_NAMES (case-insensitive); ValueError if unknown."""
    return SPECS[canonical_name(name)]
