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
WORKER_EXTENSION_CLS = "trail.integrations.vllm.worker.TrailWorkerExtension"


def vllm_kwargs(**trail_options: Any) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM(...)` that plug TRAIL in (options: TrailVllmConfig)."""
    from trail.integrations.vllm.config import TrailVllmConfig

    TrailVllmConfig.from_additional({"trail": trail_options})  # refuse bad options early
    return {"scheduler_cls": SCHEDULER_CLS, "worker_extension_cls": WORKER_EXTENSION_CLS,
            "additional_config": {"trail": dict(trail_options)}, "async_scheduling": False,
            "scheduling_policy": "fcfs"}


def install_probe(llm: Any, path: str, num_slots: int = 256, record: bool = False
                  ) -> list[dict[str, Any]]:
    """Load the probe checkpoint at `path` into every worker of `llm` and hook its layer."""
    return llm.collective_rpc("trail_install_probe", args=(str(path), num_slots, record))


def __getattr__(name: str) -> Any:
    if name == "TrailScheduler":
        from trail.integrations.vllm.scheduler import TrailScheduler
        return TrailScheduler
    if name == "TrailWorkerExtension":
        from trail.integrations.vllm.worker import TrailWorkerExtension
        return TrailWorkerExtension
    raise AttributeError(name)


__all__ = ["SCHEDULER_CLS", "SUPPORTED_VLLM", "WORKER_EXTENSION_CLS", "TrailScheduler",
           "TrailWorkerExtension", "install_probe", "vllm_kwargs"]
