"""Type stubs for the native module trail_ext._C (see docs/scheduler.md)."""

from enum import Enum
from typing import Sequence

import numpy as np
import numpy.typing as npt

IntArray = Sequence[int] | npt.NDArray[np.integer]
RealArray = Sequence[float] | npt.NDArray[np.floating] | npt.NDArray[np.integer]
FlagArray = Sequence[bool] | npt.NDArray[np.bool_] | npt.NDArray[np.integer]

class Policy(Enum):
    FCFS = 0
    SJF = 1
    SRPT = 2
    TRAIL = 3
    LTR = 4
    MLFQ = 5

class PreemptMode(Enum):
    KEEP = 0
    SWAP = 1
    RECOMPUTE = 2

class RequestState(Enum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2

class KvLocation(Enum):
    NONE = 0
    DEVICE = 1
    HOST = 2
    DROPPED = 3

class SchedulerConfig:
    policy: Policy
    max_running: int
    kv_capacity_tokens: int
    block_size: int
    c: float
    preempt_mode: PreemptMode
    swap_capacity_tokens: int
    max_preemptions: int
    starvation_steps: int
    starvation_period: int
    default_predicted_len: float
    mlfq_levels: int
    mlfq_base_quantum: int
    mlfq_prefill_ratio: float
    prefill_weight: float
    aging_rate: float
    preempt_margin: float
    kv_aware: bool
    boost_gamma: float
    rebuild_cost: float
    # Defaults: csrc/scheduler/types.h (the one place they are spelled).
    def __init__(self, *, policy: Policy = ..., max_running: int = ...,
                 kv_capacity_tokens: int = ..., block_size: int = ..., c: float = ...,
                 preempt_mode: PreemptMode = ..., swap_capacity_tokens: int = ...,
                 max_preemptions: int = ..., starvation_steps: int = ...,
                 starvation_period: int = ..., default_predicted_len: float = ...,
                 mlfq_levels: int = ..., mlfq_base_quantum: int = ...,
                 mlfq_prefill_ratio: float = ..., prefill_weight: float = ...,
                 aging_rate: float = ..., preempt_margin: float = ...,
                 kv_aware: bool = ..., boost_gamma: float = ...,
                 rebuild_cost: float = ...) -> None: ...

class Decision:
    @property
    def iteration(self) -> int: ...
    @property
    def admitted(self) -> npt.NDArray[np.int64]: ...
    @property
    def resumed(self) -> npt.NDArray[np.int64]: ...
    @property
    def swapped_in(self) -> npt.NDArray[np.int64]: ...
    @property
    def recomputed(self) -> npt.NDArray[np.int64]: ...
    @property
    def preempted(self) -> npt.NDArray[np.int64]: ...
    @property
    def swapped_out(self) -> npt.NDArray[np.int64]: ...
    @property
    def dropped(self) -> npt.NDArray[np.int64]: ...
    @property
    def running(self) -> npt.NDArray[np.int64]: ...

class RequestView:
    rid: int
    state: RequestState
    kv: KvLocation
    arrival: float
    prompt_len: int
    max_new_tokens: int
    generated: int
    predicted_len: float
    remaining: float
    score: float
    preemptions: int
    level: int
    promoted: bool

class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None: ...
    @property
    def config(self) -> SchedulerConfig: ...
    def add(self, rid: int, arrival: float, prompt_len: int, max_new_tokens: int,
            predicted_len: float = ..., score: float = ...) -> None: ...
    def schedule(self, now: float) -> Decision: ...
    def on_step(self, now: float, rids: IntArray, new_tokens: IntArray,
                finished: FlagArray) -> None: ...
    def update_predictions(self, rids: IntArray, remaining: RealArray) -> None: ...
    def update_scores(self, rids: IntArray, scores: RealArray) -> None: ...
    def set_prefill_weight(self, prefill_weight: float) -> None: ...
    def abort(self, rid: int) -> None: ...
    def get(self, rid: int) -> RequestView: ...
    def stats(self) -> dict[str, int]: ...
    def kv_reserved_blocks(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, rid: object) -> bool: ...

class Ranker:
    """The scheduler's rank rule for an engine that keeps its own memory (vLLM)."""
    def __init__(self, config: SchedulerConfig) -> None: ...
    @property
    def config(self) -> SchedulerConfig: ...
    def add(self, rid: int, arrival: float, prompt_len: int, max_new_tokens: int,
            predicted_len: float = ..., score: float = ...) -> None: ...
    def remove(self, rid: int) -> None: ...
    def set_running(self, rids: IntArray) -> None: ...
    def set_preempted(self, rid: int) -> None: ...
    def on_tokens(self, rids: IntArray, new_tokens: IntArray) -> None: ...
    def update_predictions(self, rids: IntArray, remaining: RealArray) -> None: ...
    def update_scores(self, rids: IntArray, scores: RealArray) -> None: ...
    def set_prefill_weight(self, prefill_weight: float) -> None: ...
    def begin_step(self) -> None: ...
    def end_step(self) -> None: ...
    def keys(self, rids: IntArray) -> npt.NDArray[np.float64]: ...
    def preempt_keys(self, rids: IntArray) -> npt.NDArray[np.float64]: ...
    def set_aging_rate(self, aging_rate: float) -> None: ...
    def preemptible(self, rids: IntArray) -> npt.NDArray[np.bool_]: ...
    def order(self, rids: IntArray) -> npt.NDArray[np.int64]: ...
    def get(self, rid: int) -> RequestView: ...
    def __len__(self) -> int: ...
    def __contains__(self, rid: object) -> bool: ...
