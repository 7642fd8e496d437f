"""Iteration time of an LLM serving step, from a roofline of the model's shape and the GPU.

One iteration prefills `prefill_tokens` prompt tokens and decodes one token for each of
`decode_batch` requests whose contexts hold `context_tokens` tokens in all. Its time is

    overhead + max(FLOPs / (peak_flops · compute_efficiency),
                   bytes / (mem_bandwidth · bandwidth_efficiency))

FLOPs = 2 · params · (prefill_tokens + decode_batch)          (the weight matmuls)
      + 4 · layers · heads · head_dim · context_tokens         (decode attention: QKᵀ and AV)
      + 2 · layers · heads · head_dim · Σ prefill length²      (causal prefill attention)
bytes = params · dtype_bytes                                   (weights, read once per step)
      + kv_bytes_per_token · (context_tokens + prefill_tokens) (KV read and written)

Swapping moves KV over the host link (`host_bandwidth`); recomputing re-prefills. The GPU
numbers come from datasheets; the efficiencies and overhead are calibration constants kept
with the preset in JSON (presets/*.json), to be fitted by `bench/gpu_calibrate.py` on a GPU.
"""

from __future__ import annotations

import json
import math
import pathlib
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import numpy as np

PRESETS = ("llama3-8b-a100-80gb", "llama3-8b-h100")


@dataclass(frozen=True)
class CostModel:
    """Roofline iteration-time model of one model on one GPU."""

    name: str
    params: float
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    peak_flops: float
    mem_bandwidth: float
    host_bandwidth: float
    memory_bytes: float
    overhead_s: float
    compute_efficiency: float
    bandwidth_efficiency: float

    def __post_init__(self) -> None:
        for field, value in asdict(self).items():
            if field == "name":
                continue
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"CostModel.{field}={value!r} must be a finite number >= 0")
        for field in ("params", "layers", "heads", "kv_heads", "head_dim", "dtype_bytes",
                      "peak_flops", "mem_bandwidth", "host_bandwidth", "memory_bytes"):
            if getattr(self, field) <= 0:
                raise ValueError(f"CostModel.{field}={getattr(self, field)!r} must be > 0")
        for field in ("compute_efficiency", "bandwidth_efficiency"):
            if not 0 < getattr(self, field) <= 1:
                raise ValueError(f"CostModel.{field}={getattr(self, field)!r} must be in (0, 1]")

    # ------------------------------------------------------------------ presets and JSON

    @classmethod
    def preset(cls, name: str) -> "CostModel":
        """A shipped preset: 'llama3-8b-a100-80gb' (the paper's) or 'llama3-8b-h100'."""
        if name not in PRESETS:
            raise ValueError(f"unknown cost-model preset {name!r}; choose one of {PRESETS}")
        text = resources.files("trail.sim").joinpath("presets", f"{name}.json").read_text()
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_json(cls, path: str | pathlib.Path) -> "CostModel":
        """Load a preset file (the format of presets/*.json); ValueError naming the file and
        the field if it is not one."""
        from trail.fileio import read_json_object

        d = read_json_object(path, "cost-model preset")
        try:
            return cls.from_dict(d)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CostModel":
        """Build from the nested preset layout {name, model, gpu, calibration}; ValueError
        naming the missing, unknown or bad field."""
        layout = {"model": ("params", "layers", "hidden", "heads", "kv_heads", "head_dim",
                            "dtype_bytes"),
                  "gpu": ("peak_flops", "mem_bandwidth", "host_bandwidth", "memory_bytes"),
                  "calibration": ("overhead_s", "compute_efficiency", "bandwidth_efficiency")}
        hint = "expected keys name, model, gpu, calibration as in trail/sim/presets/*.json"
        if not isinstance(d, dict):
            raise ValueError(f"not a cost-model preset: expected an object; {hint}")
        missing = [k for k in ("name", *layout) if k not in d]
        if missing:
            raise ValueError(f"not a cost-model preset: missing {', '.join(missing)}; {hint}")
        if not isinstance(d["name"], str):
            raise ValueError(f"cost-model preset: 'name' must be a string, got {d['name']!r}")
        fields: dict[str, Any] = {}
        for section, keys in layout.items():
            part = d[section]
            if not isinstance(part, dict):
                raise ValueError(f"cost-model preset: '{section}' must be an object, "
                                 f"got {type(part).__name__}")
            unknown = sorted(set(part) - set(keys))
            absent = [k for k in keys if k not in part]
            if unknown or absent:
                raise ValueError(f"cost-model preset: '{section}' "
                                 + (f"lacks {', '.join(absent)}" if absent else "")
                                 + ("; " if unknown and absent else "")
                                 + (f"has unknown {', '.join(unknown)}" if unknown else "")
                                 + f" (expected {', '.join(keys)})")
            for k in keys:
                v = part[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValueError(f"cost-model preset: '{section}.{k}' must be a number, "
                                     f"got {v!r}")
            fields.update(part)
        return cls(name=d["name"], **fields)

    def to_dict(self) -> dict[str, Any]:
        """The nested preset layout (inverse of from_dict)."""
        a = asdict(self)
        return {"name": a["name"],
                "model": {k: a[k] for k in ("params", "layers", "hidden", "heads", "kv_heads",
                                            "head_dim", "dtype_bytes")},
                "gpu": {k: a[k] for k in ("peak_flops", "mem_bandwidth", "host_bandwidth",
                                          "memory_bytes")},
                "calibration": {k: a[k] for k in ("overhead_s", "compute_efficiency",
                                                  "bandwidth_efficiency")}}

    def to_json(self, path: str | pathlib.Path) -> None:
        """Write a preset file."""
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    # ------------------------------------------------------------------ costs

    @property
    def kv_bytes_per_token(self) -> float:
        """Bytes of K and V one token holds over all layers."""
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def kv_capacity_tokens(self, utilization: float = 0.9) -> int:
        """Tokens of KV that fit beside the weights in `utilization` of the GPU's memory."""
        if not 0 < utilization <= 1:
            raise ValueError(f"utilization={utilization!r} must be in (0, 1]")
        free = self.memory_bytes * utilization - self.params * self.dtype_bytes
        if free <= 0:
            raise ValueError(f"{self.name}: the weights do not fit in {self.memory_bytes:.3g} B")
        return int(free // self.kv_bytes_per_token)

    def iteration_time(self, prefill_tokens: float, decode_batch: float, context_tokens: float,
                       prefill_sq_tokens: float | None = None) -> float:
        """Seconds for one iteration (see the module docstring).

        `prefill_sq_tokens` is Σ (prompt length)² over the prefills (their attention);
        by default the prefill is taken as one sequence.
        """
        return float(self.iteration_times(np.asarray([prefill_tokens], float),
                                          np.asarray([decode_batch], float),
                                          np.asarray([context_tokens], float),
                                          None if prefill_sq_tokens is None
                                          else np.asarray([prefill_sq_tokens], float))[0])

    def iteration_times(self, prefill_tokens: np.ndarray, decode_batch: np.ndarray,
                        context_tokens: np.ndarray, prefill_sq_tokens: np.ndarray | None = None
                        ) -> np.ndarray:
        """Vectorised iteration_time over arrays of iterations."""
        p, b, ctx = _step_arrays(prefill_tokens, decode_batch, context_tokens)
        sq = p * p if prefill_sq_tokens is None else np.asarray(prefill_sq_tokens, float)
        attn = self.layers * self.heads * self.head_dim
        flops = 2.0 * self.params * (p + b) + 4.0 * attn * ctx + 2.0 * attn * sq
        bytes_ = self.params * self.dtype_bytes + self.kv_bytes_per_token * (ctx + p)
        compute = flops / (self.peak_flops * self.compute_efficiency)
        memory = bytes_ / (self.mem_bandwidth * self.bandwidth_efficiency)
        idle = (p == 0) & (b == 0)
        return np.where(idle, 0.0, self.overhead_s + np.maximum(compute, memory))

    def prefill_weight(self, batch: int = 32, context: int = 1024, prompt: int = 512) -> float:
        """β for the scheduler's work-aware key: server time of one prefill token over that of
        one decode token, both in a decode step of `batch` requests with `context` tokens each.

        A decode token costs the step time / `batch`; a prefill token costs the extra time a
        `prompt`-token prefill adds to that step, per token (chunked into the same forward).
        """
        for name, value in (("batch", batch), ("context", context), ("prompt", prompt)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"prefill_weight: {name}={value!r} must be a positive int")
        step = self.iteration_time(0, batch, batch * context)
        mixed = self.iteration_time(prompt, batch, batch * context, float(prompt) ** 2)
        return ((mixed - step) / prompt) / (step / batch)

    def decode_tokens_per_s(self, batch: int = 32, context: int = 1024) -> float:
        """Tokens per second one request decodes at in a step of `batch` requests with
        `context` tokens each: the speed at which a running request's remaining shrinks."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"decode_tokens_per_s: batch={batch!r} must be a positive int")
        return 1.0 / self.iteration_time(0, batch, batch * context)

    def prefill_time(self, tokens: float) -> float:
        """Seconds to prefill one sequence of `tokens` tokens alone (also: recompute)."""
        return self.iteration_time(tokens, 0, 0) if tokens > 0 else 0.0

    def swap_time(self, tokens: float) -> float:
        """Seconds to move `tokens` tokens of KV across the host link (one direction)."""
        return tokens * self.kv_bytes_per_token / self.host_bandwidth

    def service_time(self, prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
        """Seconds each request would take alone: its prefill, then decode steps at batch 1.

        This is the 'size' that defines offered load (load = rate × mean service time).
        """
        p = np.asarray(prompt_tokens, float)
        n = np.asarray(output_tokens, float)
        prefill = self.iteration_times(p, np.zeros_like(p), np.zeros_like(p))
        # Decode step k (k = 1 .. n-1) reads a context of p + k tokens: sum in closed form.
        steps = np.maximum(n - 1, 0)
        ctx_sum = steps * p + steps * (steps + 1) / 2
        per_step = self.iteration_times(np.zeros_like(p), np.ones_like(p), np.zeros_like(p))
        kv = (self.kv_bytes_per_token * ctx_sum / (self.mem_bandwidth * self.bandwidth_efficiency))
        attn = 4.0 * self.layers * self.heads * self.head_dim * ctx_sum / (
            self.peak_flops * self.compute_efficiency)
        return prefill + steps * per_step + np.maximum(kv, attn)


def _step_arrays(prefill_tokens: Any, decode_batch: Any, context_tokens: Any
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An iteration's prefill tokens, decode rows and context tokens as float arrays (>= 0)."""
    p, b, ctx = (np.asarray(v, float) for v in (prefill_tokens, decode_batch, context_tokens))
    if np.any(p < 0) or np.any(b < 0) or np.any(ctx < 0):
        raise ValueError("token counts and batch sizes must be >= 0")
    return p, b, ctx


@dataclass(frozen=True)
class EngineStepCost:
    """The simulator's iteration cost from an engine's fitted `trail.engine.StepCost`, so a
    simulation can be checked against the engine it models (bench/sim_vs_engine.py).

    The engine's cost is linear in a step's rows, prefill tokens, attended context and probe
    rows. The simulator does not track how many prefills a step batches, so every step with a
    prefill counts one prefill row; the probe (when `probe_every` is set) is charged at its
    mean: one call and one row per running request every `probe_every` steps. Swaps cost
    nothing (on the CPU engine they copy host memory, which its step cost does not model).
    """

    step: Any  # trail.engine.StepCost
    probe_every: int | None = None
    name: str = "engine"

    def __post_init__(self) -> None:
        from trail.engine.clock import StepCost

        if not isinstance(self.step, StepCost):
            raise TypeError(f"EngineStepCost.step must be a trail.engine.StepCost, got "
                            f"{type(self.step).__name__}")
        if self.probe_every is not None and (isinstance(self.probe_every, bool) or not
                                             isinstance(self.probe_every, int)
                                             or self.probe_every < 1):
            raise ValueError(f"EngineStepCost.probe_every={self.probe_every!r} must be None "
                             f"or a positive int")

    def iteration_time(self, prefill_tokens: float, decode_batch: float, context_tokens: float,
                       prefill_sq_tokens: float | None = None) -> float:
        """Seconds of one step (0 for an empty one)."""
        return float(self.iteration_times(np.asarray([prefill_tokens], float),
                                          np.asarray([decode_batch], float),
                                          np.asarray([context_tokens], float))[0])

    def iteration_times(self, prefill_tokens: np.ndarray, decode_batch: np.ndarray,
                        context_tokens: np.ndarray, prefill_sq_tokens: np.ndarray | None = None
                        ) -> np.ndarray:
        """Vectorised iteration_time."""
        p, b, ctx = _step_arrays(prefill_tokens, decode_batch, context_tokens)
        c = self.step
        rows = b + (p > 0)
        t = c.constant + c.rows * rows + c.prefill_tokens * p + c.context_tokens * ctx
        if self.probe_every:
            t = t + (c.probe_call + c.probe_rows * rows) / self.probe_every
        return np.where((p == 0) & (b == 0), 0.0, t)

    def swap_time(self, tokens: float) -> float:
        """Free (see the class docstring)."""
        return 0.0


@dataclass(frozen=True)
class UniformCost:
    """Every non-empty iteration takes `seconds`: cost linear in tokens, as in an M/G/1 queue.

    With `max_running=1` the simulator then serves one request at a time at one token per
    `seconds`, which is the queue the theory (trail.sim.theory) is about; swaps are free.
    """

    seconds: float = 1.0
    name: str = "uniform"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"UniformCost.seconds={self.seconds!r} must be finite and > 0")

    def iteration_time(self, prefill_tokens: float, decode_batch: float, context_tokens: float,
                       prefill_sq_tokens: float | None = None) -> float:
        """`seconds`, or 0 for an empty iteration."""
        return 0.0 if prefill_tokens == 0 and decode_batch == 0 else self.seconds

    def iteration_times(self, prefill_tokens: np.ndarray, decode_batch: np.ndarray,
                        context_tokens: np.ndarray, prefill_sq_tokens: np.ndarray | None = None
                        ) -> np.ndarray:
        """Vectorised iteration_time."""
        p = np.asarray(prefill_tokens, float)
        b = np.asarray(decode_batch, float)
        return np.where((p == 0) & (b == 0), 0.0, self.seconds) + np.zeros(np.broadcast(
            p, b, np.asarray(context_tokens, float)).shape)

    def swap_time(self, tokens: float) -> float:
        """Free: the M/G/1 queue has no memory hierarchy."""
        return 0.0


def fit_calibration(base: CostModel, prefill_tokens: np.ndarray, decode_batch: np.ndarray,
                    context_tokens: np.ndarray, prefill_sq_tokens: np.ndarray,
                    seconds: np.ndarray, name: str | None = None) -> CostModel:
    """`base` with overhead and efficiencies fitted to measured iteration times.

    Minimises the squared log error over the samples (iterations of all sizes count alike):
    a grid over both efficiencies, log-spaced in [0.02, 1], with the overhead for each pair
    the one-dimensional least-squares optimum (bisection), then a finer grid around the best.
    """
    p, b, ctx, sq, t = (np.asarray(a, float) for a in (prefill_tokens, decode_batch,
                                                       context_tokens, prefill_sq_tokens,
                                                       seconds))
    if not (p.shape == b.shape == ctx.shape == sq.shape == t.shape) or t.size < 3:
        raise ValueError("fit_calibration needs >= 3 samples, every array of one shape")
    if np.any(t <= 0) or not np.all(np.isfinite(t)):
        raise ValueError("measured seconds must be finite and > 0")
    attn = base.layers * base.heads * base.head_dim
    flops = 2.0 * base.params * (p + b) + 4.0 * attn * ctx + 2.0 * attn * sq
    bytes_ = base.params * base.dtype_bytes + base.kv_bytes_per_token * (ctx + p)
    log_t = np.log(t)

    def best_overhead(roof: np.ndarray) -> tuple[float, float]:
        def grad(o: float) -> float:  # d/do of sum (log(o + roof) - log t)^2, up to a factor
            return float(np.sum((np.log(o + roof) - log_t) / (o + roof)))
        lo, hi = 0.0, float(t.max())
        if grad(lo) >= 0:
            o = 0.0
        else:
            for _ in range(60):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if grad(mid) < 0 else (lo, mid)
            o = (lo + hi) / 2
        return o, float(np.sum((np.log(o + roof) - log_t) ** 2))

    def search(ces: np.ndarray, bes: np.ndarray) -> tuple[float, float, float, float]:
        best = (math.inf, 1.0, 1.0, 0.0)
        for ce in ces:
            compute = flops / (base.peak_flops * ce)
            for be in bes:
                o, err = best_overhead(np.maximum(compute, bytes_ / (base.mem_bandwidth * be)))
                if err < best[0]:
                    best = (err, float(ce), float(be), o)
        return best

    grid = np.geomspace(0.02, 1.0, 40)
    _, ce, be, _ = search(grid, grid)
    fine = lambda x: np.clip(np.geomspace(x / 1.1, x * 1.1, 15), 1e-3, 1.0)  # noqa: E731
    _, ce, be, o = search(fine(ce), fine(be))
    d = base.to_dict()
    d["name"] = name or base.name
    d["calibration"] = {"overhead_s": o, "compute_efficiency": ce, "bandwidth_efficiency": be}
    return CostModel.from_dict(d)
