"""TRAIL's native core (C++17 via pybind11): the request scheduler and its rank rule
(`Ranker`, for engines that keep their own memory, such as vLLM).

The semantics are specified in docs/scheduler.md; :mod:`trail.sched_ref` is the plain-Python
twin that tests compare this module against.
"""

from ._C import (
    Decision,
    KvLocation,
    Policy,
    PreemptMode,
    Ranker,
    RequestState,
    RequestView,
    Scheduler,
    SchedulerConfig,
)

__all__ = [
    "Decision",
    "KvLocation",
    "Policy",
    "PreemptMode",
    "Ranker",
    "RequestState",
    "RequestView",
    "Scheduler",
    "SchedulerConfig",
]
