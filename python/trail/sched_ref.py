"""Plain-Python reference scheduler; the exact semantics are in docs/scheduler.md.

This module exists to be read and to be compared against the C++ scheduler
(`trail_ext.Scheduler`), which tests drive with the same random event sequences.
It is deliberately naive: every call re-sorts candidates and re-sums memory, so each
line can be checked against the spec by eye.  Keys and `remaining` are Python floats
updated with exactly the operations (and operation order) the spec gives, so that
they agree bit for bit with the C++ doubles.

Argument checking happens in three phases, and nothing changes before all of them pass:
(1) each argument on its own, in parameter order (scalars: `TypeError`; arrays: not
one-dimensional `ValueError`, then a wrong dtype `TypeError`), (2) array lengths
(`ValueError`), (3) values and state, row by row (`KeyError` for an unknown rid,
`ValueError` otherwise).
"""

from __future__ import annotations

import copy
import enum
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from trail.checks import as_integer

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# Documented limits (docs/scheduler.md, "Limits"); the C++ scheduler enforces the same ones
# (csrc/scheduler/types.h), where they keep every block count and sum inside int64.
MAX_TOKENS = 2**40        # kv/swap capacity, block size, mlfq_base_quantum (and so lengths)
MAX_RUNNING = 2**20       # max_running
MAX_MLFQ_LEVELS = 64      # mlfq_levels
MAX_LIVE = 2**32 - 1      # live requests (the C++ table's uint32 slots)


class Policy(enum.Enum):
    """How requests are ranked (see the table in docs/scheduler.md)."""

    FCFS = 0
    SJF = 1
    SRPT = 2
    TRAIL = 3
    LTR = 4
    MLFQ = 5


class PreemptMode(enum.Enum):
    """What happens to the KV cache of a request preempted for rank."""

    KEEP = 0
    SWAP = 1
    RECOMPUTE = 2


class RequestState(enum.Enum):
    """Lifecycle state of a live request."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2


class KvLocation(enum.Enum):
    """Where a live request's KV cache is."""

    NONE = 0
    DEVICE = 1
    HOST = 2
    DROPPED = 3


_PREEMPTIVE = (Policy.SRPT, Policy.TRAIL, Policy.LTR, Policy.MLFQ)
_STARVING = (Policy.SJF, Policy.SRPT, Policy.TRAIL, Policy.LTR, Policy.MLFQ)


@dataclass
class SchedulerConfig:
    """Scheduler parameters; validated when a `Scheduler` is built."""

    policy: Policy = Policy.TRAIL
    max_running: int = 48
    kv_capacity_tokens: int = 65536
    block_size: int = 16
    c: float = 0.8
    preempt_mode: PreemptMode = PreemptMode.KEEP
    swap_capacity_tokens: int = 0
    max_preemptions: int = -1
    starvation_steps: int = 0
    starvation_period: int = 0
    default_predicted_len: float = 128.0
    mlfq_levels: int = 4
    mlfq_base_quantum: int = 16
    mlfq_prefill_ratio: float = 64.0
    prefill_weight: float = 0.0   # work-aware rank: size + weight * pending prefill tokens
    aging_rate: float = 0.0       # ... + aging_rate * arrival (tokens per second)
    preempt_margin: float = 0.0   # preempt only if victim key > candidate key + margin
    kv_aware: bool = False        # fill only while the predicted KV of the batch fits
    boost_gamma: float = 0.0      # > 0: Boost key aging_rate * arrival - B(work)
    rebuild_cost: float = 0.0     # a rebuilt KV token's cost / a prefill token's (preempt_cost)


@dataclass
class Decision:
    """What one `schedule` call decided; each array lists rids in event order."""

    iteration: int
    admitted: np.ndarray
    resumed: np.ndarray
    swapped_in: np.ndarray
    recomputed: np.ndarray
    preempted: np.ndarray
    swapped_out: np.ndarray
    dropped: np.ndarray
    running: np.ndarray


@dataclass(frozen=True)
class RequestView:
    """Read-only snapshot of one live request."""

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


class _Request:
    """Mutable per-request record (internal)."""

    def __init__(self, rid: int, arrival: float, prompt_len: int, max_new_tokens: int,
                 predicted_len: float, remaining: float, score: float, level: int) -> None:
        self.rid = rid
        self.arrival = arrival
        self.prompt_len = prompt_len
        self.max_new_tokens = max_new_tokens
        self.generated = 0
        self.predicted_len = predicted_len  # NaN while unknown
        self.remaining = remaining
        self.score = score  # NaN while unscored
        self.state = RequestState.WAITING
        self.kv = KvLocation.NONE
        self.preemptions = 0
        self.level = level  # MLFQ only; 0 otherwise
        self.level_used = 0  # MLFQ: tokens generated at the current level
        self.left_out = 0  # starvation counter (all but FCFS)
        self.promoted_left = 0  # promoted calls still to use (not MLFQ)

    @property
    def tokens(self) -> int:
        """Tokens whose KV exists: prompt plus generated."""
        return self.prompt_len + self.generated


# ----------------------------------------------------------------------------------------
# Argument conversion.  These mimic what the pybind11 binding accepts so that both
# implementations raise the same exception types.


def boost_head_start(gamma: float, work: float) -> float:
    """Boost's head start -log(1 - exp(-gamma * w)) / gamma, w = max(work, 1) tokens."""
    w = max(work, 1.0)
    return -math.log(-math.expm1(-gamma * w)) / gamma


def _int_arg(value: Any, name: str) -> int:
    """Convert a scalar integer argument; `TypeError` for anything but an int64 integer."""
    v = as_integer(value, name)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise TypeError(f"{name}={_shown(v)} does not fit in int64")
    return v


def _float_arg(value: Any, name: str) -> float:
    """Convert a scalar real argument; `TypeError` for a non-number."""
    # float("1.5") or float(True) would succeed, but neither is a number to the C++ binding.
    if isinstance(value, (str, bytes, bytearray, bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond the range of a double
        raise TypeError(f"{name}={_shown(value)} does not fit in a double") from None
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None


def _shown(value: Any) -> str:
    """str(value), cut short as the binding does."""
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-10:]}"


def _array_arg(value: Any, name: str, kinds: str) -> np.ndarray:
    """`np.asarray`, then one dimension (`ValueError`), then a dtype kind (`TypeError`)."""
    try:
        arr = np.asarray(value)
    except ValueError as e:  # ragged nesting
        raise ValueError(f"{name} must be a one-dimensional array: {e}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    # np.asarray([]) is float64, yet an empty list of rids is perfectly valid.
    if arr.size > 0 and arr.dtype.kind not in kinds:
        raise TypeError(f"{name} has dtype {arr.dtype}, expected kind in {kinds!r}")
    return arr


def _int64_array_arg(value: Any, name: str) -> np.ndarray:
    """An integer array argument; `TypeError` for values outside int64, like a scalar."""
    arr = _array_arg(value, name, "iu")
    # Python ints in [2**63, 2**64) make np.asarray pick uint64.
    if arr.size > 0 and arr.dtype.kind == "u" and int(arr.max()) > _INT64_MAX:
        raise TypeError(f"{name} value does not fit in int64: {int(arr.max())}")
    return arr


def _int_values(arr: np.ndarray) -> list[int]:
    """Values of a (validated, one-dimensional) integer array as Python ints."""
    return [int(v) for v in arr.tolist()] if arr.size else []


def _same_length(arrays: Iterable[tuple[np.ndarray, str]]) -> int:
    """Require one-dimensional arrays of equal length (`ValueError`); return that length."""
    arrays = list(arrays)
    lengths = {name: arr.shape[0] for arr, name in arrays}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays of different lengths: {lengths}")
    return arrays[0][0].shape[0]


def _ids(rids: Iterable[int]) -> np.ndarray:
    """A list of rids as the int64 array a `Decision` carries."""
    return np.asarray(list(rids), dtype=np.int64)


class Scheduler:
    """Reference scheduler implementing docs/scheduler.md literally."""

    def __init__(self, config: SchedulerConfig) -> None:
        """Validate `config` (`ValueError` naming the field) and start empty."""
        if not isinstance(config, SchedulerConfig):
            raise TypeError(f"config must be a SchedulerConfig, got {config!r}")
        cfg = copy.copy(config)  # later edits to the caller's object must not leak in
        if not isinstance(cfg.policy, Policy):
            raise TypeError(f"policy must be a Policy, got {cfg.policy!r}")
        if not isinstance(cfg.preempt_mode, PreemptMode):
            raise TypeError(f"preempt_mode must be a PreemptMode, got {cfg.preempt_mode!r}")
        for name in ("max_running", "kv_capacity_tokens", "block_size",
                     "swap_capacity_tokens", "max_preemptions", "starvation_steps",
                     "starvation_period", "mlfq_levels", "mlfq_base_quantum"):
            setattr(cfg, name, _int_arg(getattr(cfg, name), name))
        for name in ("c", "default_predicted_len", "mlfq_prefill_ratio", "prefill_weight",
                     "aging_rate", "preempt_margin", "boost_gamma", "rebuild_cost"):
            setattr(cfg, name, _float_arg(getattr(cfg, name), name))
        if not isinstance(cfg.kv_aware, (bool, np.bool_)):
            raise TypeError(f"kv_aware must be a bool, got {cfg.kv_aware!r}")
        cfg.kv_aware = bool(cfg.kv_aware)

        def require(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(cfg, name)!r}")

        require(1 <= cfg.max_running <= MAX_RUNNING, "max_running", "in [1, 2**20]")
        require(1 <= cfg.block_size <= MAX_TOKENS, "block_size", "in [1, 2**40]")
        require(cfg.block_size <= cfg.kv_capacity_tokens <= MAX_TOKENS, "kv_capacity_tokens",
                f"in [block_size ({cfg.block_size}), 2**40]")
        require(math.isfinite(cfg.c) and cfg.c >= 0, "c", "finite and >= 0")
        require(0 <= cfg.swap_capacity_tokens <= MAX_TOKENS, "swap_capacity_tokens",
                "in [0, 2**40]")
        require(cfg.max_preemptions >= -1, "max_preemptions", ">= -1")
        require(cfg.starvation_steps >= 0, "starvation_steps", ">= 0")
        require(cfg.starvation_period >= 0, "starvation_period", ">= 0")
        require(math.isfinite(cfg.default_predicted_len) and cfg.default_predicted_len > 0,
                "default_predicted_len", "finite and > 0")
        require(1 <= cfg.mlfq_levels <= MAX_MLFQ_LEVELS, "mlfq_levels", "in [1, 64]")
        require(1 <= cfg.mlfq_base_quantum <= MAX_TOKENS, "mlfq_base_quantum", "in [1, 2**40]")
        require(math.isfinite(cfg.mlfq_prefill_ratio) and cfg.mlfq_prefill_ratio > 0,
                "mlfq_prefill_ratio", "finite and > 0")
        for name in ("prefill_weight", "aging_rate", "preempt_margin", "boost_gamma",
                     "rebuild_cost"):
            require(math.isfinite(getattr(cfg, name)) and getattr(cfg, name) >= 0, name,
                    "finite and >= 0")

        self._cfg = cfg
        self._C = cfg.kv_capacity_tokens // cfg.block_size
        self._S = cfg.swap_capacity_tokens // cfg.block_size
        self._reqs: dict[int, _Request] = {}
        self._running: list[int] = []  # the batch, in the order the spec gives
        self._it = 0
        self._last_now = -math.inf
        self._counts = dict(added=0, finished=0, aborted=0, preemptions=0, swap_outs=0,
                            swap_ins=0, drops=0, recomputes=0)

    @property
    def config(self) -> SchedulerConfig:
        """A copy of the validated configuration."""
        return copy.copy(self._cfg)

    # ------------------------------------------------------------------------------------
    # Memory

    def _blocks(self, t: int) -> int:
        """ceil(t / block_size) in exact integer arithmetic."""
        return -(-t // self._cfg.block_size)

    def _next(self, r: _Request) -> int:
        """Blocks a running request reserves: its KV after this iteration's token."""
        return self._blocks(r.tokens + 1)

    def _held(self, r: _Request) -> int:
        """Blocks a preempted request holds (on the device if kept, else in swap)."""
        return self._blocks(r.tokens)

    def _kept(self) -> list[_Request]:
        """Preempted requests whose KV is still on the device."""
        return [r for r in self._reqs.values()
                if r.state is RequestState.PREEMPTED and r.kv is KvLocation.DEVICE]

    def _projected(self, r: _Request) -> int:
        """Blocks `r` is predicted to reach: tokens + predicted remaining (kv_aware)."""
        return max(self._next(r), self._blocks(r.tokens + math.ceil(r.remaining)))

    def _projected_fits(self, x: _Request, victims: list[_Request]) -> bool:
        """kv_aware: running (less `victims`) at their projected KV, kept KV (victims kept in
        KEEP mode), and `x` at its projected KV fit in capacity; always true for an empty
        batch."""
        cfg = self._cfg
        if not cfg.kv_aware:
            return True
        gone = {v.rid for v in victims}
        running = [self._reqs[rid] for rid in self._running if rid not in gone]
        if not running:
            return True
        kept = [k for k in self._kept() if k is not x]
        if cfg.preempt_mode is PreemptMode.KEEP:
            kept += victims
        total = (sum(self._projected(r) for r in running) + sum(self._held(k) for k in kept)
                 + self._projected(x))
        return total <= self._C

    def _reserved(self) -> int:
        """Σ_running next + Σ_kept kept."""
        return (sum(self._next(self._reqs[rid]) for rid in self._running)
                + sum(self._held(r) for r in self._kept()))

    def _swap_used(self) -> int:
        """Swap blocks held by swapped requests."""
        return sum(self._held(r) for r in self._reqs.values()
                   if r.state is RequestState.PREEMPTED and r.kv is KvLocation.HOST)

    # ------------------------------------------------------------------------------------
    # Ranks

    def _primary(self, r: _Request) -> float | int:
        """The policy's primary key (lower runs first)."""
        cfg = self._cfg
        p = cfg.policy
        if r.promoted_left > 0:  # starvation guard (LTR, SJF, SRPT, TRAIL)
            return -math.inf
        if p is Policy.FCFS:
            return r.arrival
        if p is Policy.SJF:
            return self._work(r, cfg.default_predicted_len if math.isnan(r.predicted_len)
                              else r.predicted_len)
        if p in (Policy.SRPT, Policy.TRAIL):
            return self._work(r, r.remaining)
        if p is Policy.LTR:
            return math.inf if math.isnan(r.score) else r.score
        return r.level  # MLFQ

    def _work(self, r: _Request, size: float) -> float:
        """size + prefill_weight * pending prefill + aging_rate * arrival, or with boost_gamma
        > 0 the Boost key aging_rate * arrival - B(size + prefill_weight * pending prefill)
        (NaN ranks last)."""
        cfg = self._cfg
        if cfg.boost_gamma == 0 and cfg.prefill_weight == 0 and cfg.aging_rate == 0:
            return size
        if r.state is RequestState.WAITING:
            pending = float(r.prompt_len)  # never prefilled
        elif r.state is RequestState.PREEMPTED and r.kv is KvLocation.DROPPED:
            pending = float(r.prompt_len + r.generated)  # recomputes prompt + generated
        else:
            pending = 0.0  # its KV exists: running, kept, or swapped (a copy, no compute)
        if cfg.boost_gamma > 0:
            key = cfg.aging_rate * r.arrival - boost_head_start(
                cfg.boost_gamma, size + cfg.prefill_weight * pending)
        else:
            key = size + cfg.prefill_weight * pending + cfg.aging_rate * r.arrival
        return math.inf if math.isnan(key) else key

    def _order(self, r: _Request) -> tuple:
        """The total order: (primary, arrival, rid)."""
        return (self._primary(r), r.arrival, r.rid)

    def _preemptible_for_rank(self, r: _Request) -> bool:
        """Whether a running request may be preempted by a better-ranked one."""
        cfg = self._cfg
        if cfg.policy not in _PREEMPTIVE:
            return False
        if cfg.max_preemptions >= 0 and r.preemptions >= cfg.max_preemptions:
            return False
        if cfg.policy is Policy.TRAIL:
            L = cfg.default_predicted_len if math.isnan(r.predicted_len) else r.predicted_len
            return cfg.c > 0 and float(r.generated) <= cfg.c * L
        return True

    def _preempt_cost(self, r: _Request, present: int) -> float:
        """What preempting running `r` for rank costs in key units: rebuilding its KV
        (rebuild_cost × prefill_weight decode tokens of work per prompt and generated token,
        a step serving max_running of them) delays each of the `present` requests
        (evaluated left to right, as the C++ core does)."""
        cfg = self._cfg
        if cfg.rebuild_cost == 0 or cfg.prefill_weight == 0:
            return 0.0
        return (cfg.rebuild_cost * cfg.prefill_weight * float(r.prompt_len + r.generated)
                * float(present) / float(cfg.max_running))

    def _mlfq_quantum(self, level: int) -> int:
        """Tokens a request may generate at `level` before moving down."""
        return self._cfg.mlfq_base_quantum * 2**level

    def _mlfq_initial_level(self, prompt_len: int) -> int:
        """Skip-join: first level whose quantum covers the prefill cost, else the last."""
        cost = prompt_len / self._cfg.mlfq_prefill_ratio
        for i in range(self._cfg.mlfq_levels):
            if self._mlfq_quantum(i) >= cost:
                return i
        return self._cfg.mlfq_levels - 1

    def _mlfq_account(self, r: _Request, n: int) -> None:
        """Charge `n` generated tokens to the request's level, one token at a time."""
        last = self._cfg.mlfq_levels - 1
        while n > 0 and r.level < last:
            q = self._mlfq_quantum(r.level)
            used = min(n, q - r.level_used)
            r.level_used += used
            n -= used
            if r.level_used >= q:
                r.level += 1
                r.level_used = 0
        if n > 0:
            # At the last level the count restarts each quantum but the level stays.
            r.level_used = (r.level_used + n) % self._mlfq_quantum(last)

    # ------------------------------------------------------------------------------------
    # KV moves (each appends to the decision lists and marks the request as touched)

    def _move_off_device(self, r: _Request, dec: dict[str, list[int]]) -> None:
        """Swap `r`'s KV out if the mode allows and swap has room, else drop it."""
        if (self._cfg.preempt_mode is not PreemptMode.RECOMPUTE
                and self._swap_used() + self._held(r) <= self._S):
            r.kv = KvLocation.HOST
            dec["swapped_out"].append(r.rid)
            self._counts["swap_outs"] += 1
        else:
            r.kv = KvLocation.DROPPED
            dec["dropped"].append(r.rid)
            self._counts["drops"] += 1

    def _evict(self, r: _Request, dec: dict[str, list[int]], touched: set[int]) -> None:
        """Move a kept request's KV off the device."""
        touched.add(r.rid)
        self._move_off_device(r, dec)

    def _preempt(self, r: _Request, dec: dict[str, list[int]], touched: set[int],
                 keep: bool) -> None:
        """Take `r` out of the batch; keep its KV on the device or move it off."""
        self._running.remove(r.rid)
        r.state = RequestState.PREEMPTED
        r.preemptions += 1
        self._counts["preemptions"] += 1
        dec["preempted"].append(r.rid)
        touched.add(r.rid)
        if keep:
            r.kv = KvLocation.DEVICE
        else:
            self._move_off_device(r, dec)

    def _take(self, x: _Request, dec: dict[str, list[int]], touched: set[int]) -> None:
        """Put `x` in the batch, then evict kept requests until memory fits."""
        if x.state is RequestState.WAITING:
            dec["admitted"].append(x.rid)
        else:
            dec["resumed"].append(x.rid)
            if x.kv is KvLocation.HOST:
                dec["swapped_in"].append(x.rid)
                self._counts["swap_ins"] += 1
            elif x.kv is KvLocation.DROPPED:
                dec["recomputed"].append(x.rid)
                self._counts["recomputes"] += 1
        x.state = RequestState.RUNNING
        x.kv = KvLocation.DEVICE
        self._running.append(x.rid)
        while self._reserved() > self._C:
            kept = self._kept()
            # The walk only takes X when evicting every other kept request would suffice.
            assert kept, "take overcommitted memory with nothing left to evict"
            self._evict(max(kept, key=self._order), dec, touched)

    # ------------------------------------------------------------------------------------
    # Public API

    def add(self, rid: int, arrival: float, prompt_len: int, max_new_tokens: int,
            predicted_len: float = float("nan"), score: float = float("nan")) -> None:
        """Add a waiting request; NaN `predicted_len`/`score` mean unknown/unscored."""
        rid, arrival, prompt_len, max_new_tokens, predicted_len, score = self._checked_request(
            rid, arrival, prompt_len, max_new_tokens, predicted_len, score)
        need = self._blocks(prompt_len + max_new_tokens)
        if need > self._C:
            raise ValueError(f"request {rid} needs {need} blocks "
                             f"(prompt_len {prompt_len} + max_new_tokens {max_new_tokens}) "
                             f"but the device has {self._C}")
        self._insert(rid, arrival, prompt_len, max_new_tokens, predicted_len, score)
        self._counts["added"] += 1

    def _checked_request(self, rid: Any, arrival: Any, prompt_len: Any, max_new_tokens: Any,
                         predicted_len: Any, score: Any) -> tuple[int, float, int, int, float,
                                                                  float]:
        """`add`'s arguments converted and checked, all but the fit in memory."""
        rid = _int_arg(rid, "rid")
        arrival = _float_arg(arrival, "arrival")
        prompt_len = _int_arg(prompt_len, "prompt_len")
        max_new_tokens = _int_arg(max_new_tokens, "max_new_tokens")
        predicted_len = _float_arg(predicted_len, "predicted_len")
        score = _float_arg(score, "score")
        if rid in self._reqs:
            raise ValueError(f"rid {rid} is already live")
        if not math.isfinite(arrival):
            raise ValueError(f"arrival must be finite, got {arrival!r}")
        if prompt_len < 1:
            raise ValueError(f"prompt_len must be >= 1, got {prompt_len}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not math.isnan(predicted_len) and not (math.isfinite(predicted_len)
                                                  and predicted_len >= 0):
            raise ValueError(f"predicted_len must be NaN or finite and >= 0, "
                             f"got {predicted_len!r}")
        if not math.isnan(score) and not math.isfinite(score):
            raise ValueError(f"score must be NaN or finite, got {score!r}")
        return rid, arrival, prompt_len, max_new_tokens, predicted_len, score

    def _insert(self, rid: int, arrival: float, prompt_len: int, max_new_tokens: int,
                predicted_len: float, score: float) -> _Request:
        """File a new waiting request (after the live-request limit); returns it."""
        if len(self._reqs) >= MAX_LIVE:
            raise ValueError(f"request {rid}: too many live requests (the limit is 2**32 - 1)")
        known = predicted_len if not math.isnan(predicted_len) else self._cfg.default_predicted_len
        level = (self._mlfq_initial_level(prompt_len)
                 if self._cfg.policy is Policy.MLFQ else 0)
        r = _Request(rid, arrival, prompt_len, max_new_tokens, predicted_len,
                     min(known, float(max_new_tokens)), score, level)
        self._reqs[rid] = r
        return r

    def _check_now(self, now: Any) -> float:
        """Convert and validate a clock reading (does not record it)."""
        now = _float_arg(now, "now")
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        if now < self._last_now:
            raise ValueError(f"now {now!r} is below the last now seen ({self._last_now!r})")
        return now

    def schedule(self, now: float) -> Decision:
        """Decide the next batch at time `now` (docs/scheduler.md, `schedule(now)`)."""
        now = self._check_now(now)
        self._last_now = now
        self._it += 1
        cfg = self._cfg
        dec: dict[str, list[int]] = {k: [] for k in (
            "admitted", "resumed", "swapped_in", "recomputed", "preempted",
            "swapped_out", "dropped")}
        touched: set[int] = set()

        def present(r: _Request) -> bool:
            return r.arrival <= now

        starvation = cfg.policy in _STARVING and cfg.starvation_steps > 0

        # 1. Starvation.
        if starvation:
            for r in self._reqs.values():
                if not present(r) or r.state is RequestState.RUNNING:
                    continue
                if cfg.policy is not Policy.MLFQ:
                    if r.promoted_left == 0 and r.left_out >= cfg.starvation_steps:
                        r.promoted_left = cfg.starvation_period
                        r.left_out = 0
                elif r.left_out >= cfg.starvation_steps:  # MLFQ
                    r.level = 0
                    r.level_used = 0
                    r.left_out = 0

        # 2. Memory pressure (rank rules do not protect anyone here).
        while self._reserved() > self._C:
            kept = self._kept()
            if kept:
                self._evict(max(kept, key=self._order), dec, touched)
            else:
                worst = max((self._reqs[rid] for rid in self._running), key=self._order)
                self._preempt(worst, dec, touched, keep=False)

        # 3. Fill, in strict rank order.
        candidates = sorted(
            (r for r in self._reqs.values()
             if present(r) and r.state is not RequestState.RUNNING),
            key=self._order)
        for x in candidates:
            if x.rid in touched:
                continue
            x_is_kept = x.state is RequestState.PREEMPTED and x.kv is KvLocation.DEVICE
            need = self._next(x) - (self._held(x) if x_is_kept else 0)
            free = self._C - self._reserved()
            evictable = sum(self._held(k) for k in self._kept() if k is not x)
            if (len(self._running) < cfg.max_running and need <= free + evictable
                    and self._projected_fits(x, [])):
                self._take(x, dec, touched)
                continue
            if cfg.policy not in _PREEMPTIVE:
                break
            x_key = self._primary(x)
            # Net keys (key - what the preemption costs); in KEEP mode a victim's KV stays.
            n_present = sum(1 for r in self._reqs.values() if present(r))
            charge = cfg.preempt_mode is not PreemptMode.KEEP

            def net(r: _Request) -> float:
                return self._primary(r) - (self._preempt_cost(r, n_present) if charge else 0.0)

            victims = sorted(
                (r for r in (self._reqs[rid] for rid in self._running)
                 if self._preemptible_for_rank(r) and net(r) > x_key + cfg.preempt_margin),
                key=lambda r: (net(r), r.arrival, r.rid), reverse=True)
            chosen: list[_Request] | None = None
            freed = 0
            for k, v in enumerate(victims, start=1):
                freed += self._next(v)
                if (len(self._running) - k < cfg.max_running
                        and need <= free + evictable + freed
                        and self._projected_fits(x, victims[:k])):
                    chosen = victims[:k]
                    break
            if chosen is None:
                break
            for v in chosen:
                self._preempt(v, dec, touched, keep=cfg.preempt_mode is PreemptMode.KEEP)
            self._take(x, dec, touched)

        # 4. Starvation counters, after the decision.
        if starvation:
            in_batch = set(self._running)
            for r in self._reqs.values():
                if not present(r):
                    continue
                if r.promoted_left > 0:
                    r.promoted_left -= 1
                elif r.rid in in_batch:
                    r.left_out = 0
                else:
                    r.left_out += 1

        return Decision(iteration=self._it, running=_ids(self._running),
                        **{k: _ids(v) for k, v in dec.items()})

    def on_step(self, now: float, rids: Any, new_tokens: Any, finished: Any) -> None:
        """Record one decode iteration's output for running requests."""
        # Phase 1: each argument on its own.
        now_f = _float_arg(now, "now")
        rids_a = _int64_array_arg(rids, "rids")
        new_a = _int64_array_arg(new_tokens, "new_tokens")
        fin_a = _array_arg(finished, "finished", "biu")
        # Phase 2: lengths.
        n_rows = _same_length([(rids_a, "rids"), (new_a, "new_tokens"), (fin_a, "finished")])
        rid_list = _int_values(rids_a)
        new_list = _int_values(new_a)
        # Phase 3: values and state.
        now_f = self._check_now(now_f)
        fin_list: list[bool] = []
        for v in fin_a.tolist() if n_rows else []:
            if fin_a.dtype.kind != "b" and v not in (0, 1):
                raise ValueError(f"finished must be bool or 0/1, got {v!r}")
            fin_list.append(bool(v))
        seen: set[int] = set()
        for rid, n in zip(rid_list, new_list):
            r = self._reqs.get(rid)
            if r is None or r.state is not RequestState.RUNNING:
                raise ValueError(f"on_step row for rid {rid}, which is not running")
            if rid in seen:
                raise ValueError(f"rid {rid} appears twice in on_step")
            seen.add(rid)
            if n < 0 or r.generated + n > r.max_new_tokens:
                raise ValueError(f"new_tokens {n} for rid {rid} out of range "
                                 f"(generated {r.generated}, max_new_tokens "
                                 f"{r.max_new_tokens})")

        self._last_now = now_f
        for rid, n, fin in zip(rid_list, new_list, fin_list):
            r = self._reqs[rid]
            r.generated += n
            r.remaining = min(max(r.remaining - n, 0.0),
                              float(r.max_new_tokens - r.generated))
            if self._cfg.policy is Policy.MLFQ:
                self._mlfq_account(r, n)
            if fin or r.generated == r.max_new_tokens:
                self._remove(rid)
                self._counts["finished"] += 1

    def _update(self, rids: Any, values: Any, name: str) -> list[tuple[_Request, float]]:
        """Shared validation of `update_predictions` / `update_scores`."""
        rids_a = _int64_array_arg(rids, "rids")
        vals_a = _array_arg(values, name, "iuf")
        n_rows = _same_length([(rids_a, "rids"), (vals_a, name)])
        rid_list = _int_values(rids_a)
        # Same int64 -> double rounding as a C++ static_cast.
        val_list = [float(v) for v in vals_a.astype(np.float64).tolist()] if n_rows else []
        rows = []
        for rid, v in zip(rid_list, val_list):
            if rid not in self._reqs:
                raise KeyError(rid)
            if not math.isfinite(v) or (name == "remaining" and v < 0):
                rule = "finite and >= 0" if name == "remaining" else "finite"
                raise ValueError(f"{name} for rid {rid} must be {rule}, got {v!r}")
            rows.append((self._reqs[rid], v))
        return rows

    def update_predictions(self, rids: Any, remaining: Any) -> None:
        """Replace predicted remaining lengths; fix `predicted_len` the first time."""
        for r, v in self._update(rids, remaining, "remaining"):
            if math.isnan(r.predicted_len):
                r.predicted_len = float(r.generated) + v
            r.remaining = min(v, float(r.max_new_tokens - r.generated))

    def update_scores(self, rids: Any, scores: Any) -> None:
        """Replace LTR scores (lower runs first)."""
        for r, v in self._update(rids, scores, "scores"):
            r.score = v

    def _remove(self, rid: int) -> None:
        """End a live request, freeing its batch slot and KV wherever it is."""
        del self._reqs[rid]
        if rid in self._running:
            self._running.remove(rid)

    def set_prefill_weight(self, prefill_weight: float) -> None:
        """Change β of a live scheduler; every rank uses it from now on."""
        value = _float_arg(prefill_weight, "prefill_weight")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"SchedulerConfig.prefill_weight={prefill_weight!r}: must be "
                             f"finite and >= 0")
        self._cfg.prefill_weight = value

    def set_preempt_margin(self, preempt_margin: float) -> None:
        """Change preempt_margin of a live scheduler; it applies from the next schedule()."""
        value = _float_arg(preempt_margin, "preempt_margin")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"SchedulerConfig.preempt_margin={preempt_margin!r}: must be "
                             f"finite and >= 0")
        self._cfg.preempt_margin = value

    def abort(self, rid: int) -> None:
        """End a live request in any state."""
        rid = _int_arg(rid, "rid")
        if rid not in self._reqs:
            raise KeyError(rid)
        self._remove(rid)
        self._counts["aborted"] += 1

    def get(self, rid: int) -> RequestView:
        """Snapshot of a live request."""
        rid = _int_arg(rid, "rid")
        if rid not in self._reqs:
            raise KeyError(rid)
        r = self._reqs[rid]
        return RequestView(
            rid=r.rid, state=r.state, kv=r.kv, arrival=r.arrival, prompt_len=r.prompt_len,
            max_new_tokens=r.max_new_tokens, generated=r.generated,
            predicted_len=r.predicted_len, remaining=r.remaining, score=r.score,
            preemptions=r.preemptions,
            level=r.level if self._cfg.policy is Policy.MLFQ else 0,
            promoted=r.promoted_left > 0)

    def kv_reserved_blocks(self) -> int:
        """Device blocks reserved now (kept KV + running requests through their next token)."""
        return self._reserved()

    def stats(self) -> dict[str, int]:
        """Counters since construction and current occupancy."""
        reqs = list(self._reqs.values())

        def count(state: RequestState, kv: KvLocation | None = None) -> int:
            return sum(1 for r in reqs if r.state is state and (kv is None or r.kv is kv))

        c = self._counts
        return {
            "iterations": self._it,
            "added": c["added"],
            "finished": c["finished"],
            "aborted": c["aborted"],
            "live": len(reqs),
            "waiting": count(RequestState.WAITING),
            "running": count(RequestState.RUNNING),
            "preempted": count(RequestState.PREEMPTED),
            "kept": count(RequestState.PREEMPTED, KvLocation.DEVICE),
            "swapped": count(RequestState.PREEMPTED, KvLocation.HOST),
            "dropped": count(RequestState.PREEMPTED, KvLocation.DROPPED),
            "preemptions": c["preemptions"],
            "swap_outs": c["swap_outs"],
            "swap_ins": c["swap_ins"],
            "drops": c["drops"],
            "recomputes": c["recomputes"],
            "kv_capacity_blocks": self._C,
            "kv_reserved_blocks": self._reserved(),
            "swap_capacity_blocks": self._S,
            "swap_used_blocks": self._swap_used(),
        }

    def __len__(self) -> int:
        """Number of live requests."""
        return len(self._reqs)

    def __contains__(self, rid: object) -> bool:
        """Whether `rid` is live; anything that is not an int64 integer is not."""
        try:
            return _int_arg(rid, "rid") in self._reqs
        except TypeError:
            return False


class Ranker:
    """Reference twin of `trail_ext.Ranker`: the scheduler's rank rule, no memory model.

    It reuses this module's `Scheduler` for validation, keys and predictions, so the rank
    rule exists once per language; the host engine (vLLM) reports who runs, who was
    preempted and how many tokens each generated (docs/scheduler.md, "Ranker").
    """

    def __init__(self, config: SchedulerConfig) -> None:
        """Validate `config` as `Scheduler` does and start empty."""
        self._s = Scheduler(config)
        self._reqs = self._s._reqs

    @property
    def config(self) -> SchedulerConfig:
        """A copy of the validated configuration."""
        return self._s.config

    def add(self, rid: int, arrival: float, prompt_len: int, max_new_tokens: int,
            predicted_len: float = float("nan"), score: float = float("nan")) -> None:
        """Track a waiting request; NaN `predicted_len`/`score` mean unknown/unscored."""
        rid, arrival, prompt_len, max_new_tokens, predicted_len, score = \
            self._s._checked_request(rid, arrival, prompt_len, max_new_tokens, predicted_len,
                                     score)
        if prompt_len > MAX_TOKENS or max_new_tokens > MAX_TOKENS - prompt_len:
            raise ValueError(f"request {rid}: prompt_len {prompt_len} + max_new_tokens "
                             f"{max_new_tokens} must be <= 2**40")
        self._s._insert(rid, arrival, prompt_len, max_new_tokens, predicted_len, score)

    def _live(self, rid: int) -> _Request:
        if rid not in self._reqs:
            raise KeyError(rid)
        return self._reqs[rid]

    def _rids(self, rids: Any) -> list[int]:
        return _int_values(_int64_array_arg(rids, "rids"))

    def remove(self, rid: int) -> None:
        """Forget a finished or aborted request."""
        rid = _int_arg(rid, "rid")
        self._live(rid)
        del self._reqs[rid]

    def set_running(self, rids: Any) -> None:
        """These requests now run, their KV on the device (all or nothing)."""
        rows = [self._live(rid) for rid in self._rids(rids)]
        for r in rows:
            r.state, r.kv = RequestState.RUNNING, KvLocation.DEVICE

    def set_preempted(self, rid: int) -> None:
        """A running request was preempted and its KV freed: it will recompute."""
        r = self._live(_int_arg(rid, "rid"))
        if r.state is not RequestState.RUNNING:
            raise ValueError(f"set_preempted: request {r.rid} is not running")
        r.state, r.kv = RequestState.PREEMPTED, KvLocation.DROPPED
        r.preemptions += 1

    def on_tokens(self, rids: Any, new_tokens: Any) -> None:
        """Count tokens generated by these requests (each at most once per call)."""
        rids_a = _int64_array_arg(rids, "rids")
        new_a = _int64_array_arg(new_tokens, "new_tokens")
        _same_length([(rids_a, "rids"), (new_a, "new_tokens")])
        rows = list(zip(_int_values(rids_a), _int_values(new_a)))
        seen: set[int] = set()
        for rid, n in rows:
            r = self._live(rid)
            if rid in seen:
                raise ValueError(f"on_tokens: request {rid} repeats")
            seen.add(rid)
            if n < 0 or r.generated + n > r.max_new_tokens:
                raise ValueError(f"on_tokens: new_tokens {n} for rid {rid} out of range")
        for rid, n in rows:
            r = self._reqs[rid]
            r.generated += n
            r.remaining = min(max(r.remaining - n, 0.0), float(r.max_new_tokens - r.generated))
            if self._s._cfg.policy is Policy.MLFQ:
                self._s._mlfq_account(r, n)

    def update_predictions(self, rids: Any, remaining: Any) -> None:
        """Replace predicted remaining lengths; fix `predicted_len` the first time."""
        self._s.update_predictions(rids, remaining)

    def update_scores(self, rids: Any, scores: Any) -> None:
        """Replace LTR scores (lower runs first)."""
        self._s.update_scores(rids, scores)

    def set_prefill_weight(self, prefill_weight: float) -> None:
        """Change β; every key uses it from now on."""
        self._s.set_prefill_weight(prefill_weight)

    def set_aging_rate(self, aging_rate: float) -> None:
        """Change the tail's aging_rate (tokens per second); every key uses it from now on."""
        value = _float_arg(aging_rate, "aging_rate")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"SchedulerConfig.aging_rate={aging_rate!r}: must be finite "
                             f"and >= 0")
        self._s._cfg.aging_rate = value

    def _starvation(self) -> bool:
        cfg = self._s._cfg
        return cfg.policy in _STARVING and cfg.starvation_steps > 0

    def begin_step(self) -> None:
        """Starvation guard: promote (MLFQ: lift to level 0) who waited too long."""
        if not self._starvation():
            return
        cfg = self._s._cfg
        for r in self._reqs.values():
            if (r.state is RequestState.RUNNING or r.promoted_left > 0
                    or r.left_out < cfg.starvation_steps):
                continue
            r.left_out = 0
            if cfg.policy is not Policy.MLFQ:
                r.promoted_left = cfg.starvation_period
            else:
                r.level, r.level_used = 0, 0

    def end_step(self) -> None:
        """Starvation guard: use up promotions, count who was left out of the batch."""
        if not self._starvation():
            return
        for r in self._reqs.values():
            if r.promoted_left > 0:
                r.promoted_left -= 1
            elif r.state is RequestState.RUNNING:
                r.left_out = 0
            else:
                r.left_out += 1

    def keys(self, rids: Any) -> np.ndarray:
        """Primary keys (lower runs first), float64."""
        rows = [self._live(rid) for rid in self._rids(rids)]
        return np.array([float(self._s._primary(r)) for r in rows], dtype=np.float64)

    def preempt_keys(self, rids: Any) -> np.ndarray:
        """Net keys of running requests: key - preempt_cost with every live request
        present, float64 (a waiting request w may preempt one above w's key + margin)."""
        rows = [self._live(rid) for rid in self._rids(rids)]
        present = len(self._reqs)
        return np.array([float(self._s._primary(r) - self._s._preempt_cost(r, present))
                         for r in rows], dtype=np.float64)

    def preemptible(self, rids: Any) -> np.ndarray:
        """Whether each may be preempted for rank (TRAIL's c, max_preemptions, promotion)."""
        rows = [self._live(rid) for rid in self._rids(rids)]
        return np.array([r.promoted_left == 0 and self._s._preemptible_for_rank(r)
                         for r in rows], dtype=bool)

    def order(self, rids: Any) -> np.ndarray:
        """The rids sorted by (primary, arrival, rid), best first."""
        rows = [self._live(rid) for rid in self._rids(rids)]
        return _ids(r.rid for r in sorted(rows, key=self._s._order))

    def get(self, rid: int) -> RequestView:
        """Snapshot of one tracked request."""
        return self._s.get(rid)

    def __len__(self) -> int:
        return len(self._reqs)

    def __contains__(self, rid: object) -> bool:
        return rid in self._reqs
