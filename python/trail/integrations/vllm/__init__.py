"""TRAIL inside vLLM (optional extra `vllm`; supported: vLLM 0.32, V1 model runner, eager).

    from vllm import LLM
    from trail.integrations.vllm import install_probe, vllm_kwargs
    llm = LLM(model, enforce_eager=True, **vllm_kwargs(policy="TRAIL", c=0.8))
    install_probe(llm, "probe_dir")          # optional: per-token predictions from the probe

`TrailScheduler` (for `scheduler_cls`) orders vLLM's queues with TRAIL's ranks and preempts
for rank; `TrailWorkerExtension` (for `worker_extension_cls`) runs the probe on one layer.
Importing this package does not import vLLM; its two classes load vLLM when first used.
"""

from __future__ import annotations

from typing import Any

SUPPORTED_VLLM = ">=0.32,<0.33"
SCHEDULER_CLS = "trail.integrations.vllm.scheduler.TrailScheduler"
ASYNC_SCHEDULER_CLS = "trail.integrations.vllm.scheduler.TrailAsyncScheduler"
WORKER_EXTENSION_CLS = "trail.integrations.vllm.worker.TrailWorkerExtension"


def vllm_kwargs(async_scheduling: bool = False, **trail_options: Any) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM(...)` that plug TRAIL in (options: TrailVllmConfig);
    `async_scheduling=True` uses `TrailAsyncScheduler` (vLLM plans a step while the previous
    one runs; the probe's predictions then reach the ranks one step later)."""
    from trail.integrations.vllm.config import TrailVllmConfig

    if not isinstance(async_scheduling, bool):
        raise ValueError(f"async_scheduling={async_scheduling!r} must be a bool")
    TrailVllmConfig.from_additional({"trail": trail_options})  # refuse bad options early
    return {"scheduler_cls": ASYNC_SCHEDULER_CLS if async_scheduling else SCHEDULER_CLS,
            "worker_extension_cls": WORKER_EXTENSION_CLS,
            "additional_config": {"trail": dict(trail_options)},
            "async_scheduling": async_scheduling, "scheduling_policy": "fcfs"}


def install_probe(llm: Any, path: str, num_slots: int = 256, record: bool = False
                  ) -> list[dict[str, Any]]:
    """Load the probe checkpoint at `path` into every worker of `llm` and hook its layer."""
    return llm.collective_rpc("trail_install_probe", args=(str(path), num_slots, record))


def __getattr__(name: str) -> Any:
    if name in ("TrailScheduler", "TrailAsyncScheduler"):
        from trail.integrations.vllm.scheduler import TrailAsyncScheduler, TrailScheduler
        return TrailScheduler if name == "TrailScheduler" else TrailAsyncScheduler
    if name == "TrailWorkerExtension":
        from trail.integrations.vllm.worker import TrailWorkerExtension
        return TrailWorkerExtension
    raise AttributeError(name)


__all__ = ["ASYNC_SCHEDULER_CLS", "SCHEDULER_CLS", "SUPPORTED_VLLM", "WORKER_EXTENSION_CLS",
           "TrailAsyncScheduler", "TrailScheduler", "TrailWorkerExtension", "install_probe",
           "vllm_kwargs"]
