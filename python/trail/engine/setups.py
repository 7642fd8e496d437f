"""The named set-ups of `trail.policies` served by the engine: `engine_config(name, ...)`
builds the EngineConfig of FCFS, SJF, SJF-work, TRAIL-paper, TRAIL, TRAIL+, LTR or MLFQ
with exactly the scheduler settings the simulator, the demo and the vLLM adapter use.

"auto" settings are resolved against what is known of the server: a `Server` given by the
caller, else the step cost (`step_cost_server`, a virtual clock's or one fitted to the
engine's steps); β "auto" is also learned online from the engine's own steps
(EngineConfig.prefill_weight = "auto").
"""

from __future__ import annotations

from typing import Any

from trail import policies
from trail.engine.clock import StepCost
from trail.engine.engine import EngineConfig
from trail.probe import Probe


def step_cost_server(cost: StepCost | None, max_running: int, context: int = 1024
                     ) -> policies.Server:
    """What a step cost tells of the server at a full batch of `max_running` rows attending
    to `context` tokens each: β, one request's decode speed and the work rate (Boost's γ
    needs the arrivals: not measured here)."""
    if cost is None:
        return policies.Server()
    speed = cost.decode_tokens_per_s(max_running, context)
    return policies.Server(prefill_weight=cost.prefill_weight(max_running, context),
                           decode_tokens_per_s=speed, work_rate=max_running * speed,
                           batch=max_running)


def engine_config(name: str, *, max_running: int, kv_capacity_tokens: int,
                  block_size: int = 16, probe: Probe | None = None,
                  step_cost: StepCost | None = None, server: policies.Server | None = None,
                  settings: policies.Settings | None = None, **engine: Any) -> EngineConfig:
    """The EngineConfig of a named set-up (`settings`: its own by default, see
    `trail.policies.settings_of` for overrides); `engine`: other EngineConfig fields
    (predict_every, max_model_len, ...). A set-up ranked by the probe needs `probe`."""
    sp = policies.spec(name)
    s = sp.settings if settings is None else settings
    if sp.lengths == "probe" and probe is None:
        raise ValueError(f"{sp.name} ranks running requests by the embedding probe: "
                         f"give probe=")
    srv = server if server is not None else step_cost_server(step_cost, max_running)
    sched = policies.scheduler_config(sp.name, srv, s, max_running=max_running,
                                      kv_capacity_tokens=kv_capacity_tokens,
                                      block_size=block_size)
    # margin "auto" without measured MAEs: learned from this engine's finished requests,
    # as the vLLM adapter learns it
    seen = policies.server_for(sp.name, srv)
    learn_margin = (s.preempt_margin == policies.AUTO and sp.scheduler in ("SRPT", "TRAIL")
                    and None in (seen.arrival_mae, seen.probe_mae))
    engine.setdefault("preempt_margin", "auto" if learn_margin else None)
    return EngineConfig(scheduler=sched, probe=probe if sp.lengths == "probe" else None,
                        step_cost=step_cost,
                        prefill_weight="auto" if s.prefill_weight == policies.AUTO else None,
                        probe_rank=s.rank, **engine)
