"""One scheduling step's plan for a host engine: queue orders and rank preemptions.

Pure Python over a `trail_ext.Ranker` (no vLLM import), so the rule is testable on its own.
It is the fill step of `trail_ext.Scheduler` (docs/scheduler.md, `schedule(now)`, step 3)
restated for an engine that keeps its own memory: walk the waiting requests best first; a
request that fits (a free batch slot and enough free KV blocks for its prompt) is left to the
engine to admit; one that does not fit may take the place of running requests that rank
strictly worse even after paying for their recompute (net key = key - preempt_cost > its
key + preempt_margin; docs/scheduler.md, "Cost-aware preemption") and are preemptible
(TRAIL's c rule, max_preemptions), worst net key first, if preempting them makes it fit;
otherwise the walk stops, as the scheduler's does. The engine then runs its usual step on
the reordered queues.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class Plan:
    """What the host should do before its own scheduling step."""

    waiting: list[Any]                 # waiting ids, best first
    running: list[Any]                 # running ids, best first (the engine evicts from the end)
    preempt: list[Any] = field(default_factory=list)  # running ids to preempt, in this order
    # waiting id -> the running ids it displaced (for logs and tests)
    displaced_by: dict[Any, list[Any]] = field(default_factory=dict)


def plan_step(ranker: Any, waiting: Sequence[Any], running: Sequence[Any],
              rid_of: dict[Any, int], free_slots: int, free_blocks: int,
              blocks_needed: dict[Any, int], blocks_held: dict[Any, int],
              preempt_margin: float = 0.0) -> Plan:
    """Order the queues by rank and choose rank preemptions (see the module docstring).

    `rid_of` maps the host's request ids to the ranker's int64 rids; `blocks_needed[w]` is
    what waiting request w needs to start, `blocks_held[r]` what running request r frees.
    """
    def ranked(ids: Sequence[Any]) -> list[Any]:
        if not ids:
            return []
        by_rid = {rid_of[i]: i for i in ids}
        return [by_rid[int(r)] for r in ranker.order([rid_of[i] for i in ids])]

    wait_order, run_order = ranked(waiting), ranked(running)
    plan = Plan(waiting=wait_order, running=run_order)
    if not wait_order:
        return plan
    wait_keys = dict(zip(wait_order, ranker.keys([rid_of[i] for i in wait_order]).tolist()))
    victims: list[tuple[float, int, Any]] = []  # max-heap of the preemptible, worst on top
    if run_order:
        rids = [rid_of[i] for i in run_order]
        keys = ranker.preempt_keys(rids).tolist()  # net of what each preemption costs
        ok = ranker.preemptible(rids).tolist()
        # Ties in net key: the later in rank order is the worse one.
        victims = [(-k, -pos, i) for pos, (i, k, p) in enumerate(zip(run_order, keys, ok)) if p]
        heapq.heapify(victims)
    slots, blocks = free_slots, free_blocks
    for w in wait_order:
        need = blocks_needed[w]
        if slots >= 1 and need <= blocks:
            slots, blocks = slots - 1, blocks - need
            continue
        threshold = wait_keys[w] + preempt_margin
        taken: list[tuple[float, int, Any]] = []
        s, b = slots, blocks
        while victims and -victims[0][0] > threshold and not (s >= 1 and need <= b):
            v = heapq.heappop(victims)
            taken.append(v)
            s, b = s + 1, b + blocks_held[v[2]]
        if not (s >= 1 and need <= b):
            for v in taken:  # not enough to let it in: preempt nobody for it
                heapq.heappush(victims, v)
            break
        plan.preempt.extend(v[2] for v in taken)
        plan.displaced_by[w] = [v[2] for v in taken]
        slots, blocks = s - 1, b - need
    gone = set(plan.preempt)
    plan.running = [i for i in run_order if i not in gone]
    return plan
