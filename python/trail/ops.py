"""`torch.ops.trail.probe_step`: one fused probe step for a whole batch.

Registered with `torch.library` when `trail` is imported. CPU tensors run the C++ kernel in
`trail_ext` (csrc/kernels/); CUDA tensors run the Triton kernel
(`trail.kernels.probe_triton`); the fake implementation lets `torch.compile` trace it.
`trail.kernels.reference.probe_step_reference` is the specification of what it computes.

    pred = torch.ops.trail.probe_step(hidden, slots, first, w1, b1, w2, b2,
                                      transition, centers, cap, state)

hidden [B, D] (fp32/bf16/fp16), slots [B] int32 or int64 (unique rows of `state`; never
narrowed: on the CPU an int64 slot outside the state is refused, on CUDA its row is skipped),
first [B] bool, w1 [H, D], b1 [H], w2 [K, H], b2 [K] (torch.nn.Linear layout, fp32 on the
CPU path), transition [K, K] f32, centers [K] f32, cap [B] f32, state [S, K] f32 (updated
in place) → pred [B] f32.

    pred, gittins = torch.ops.trail.probe_step_rank(hidden, slots, first, w1, b1, w2, b2,
                                                    transition, centers, edges, cap, state)

is the same step with a second output: the Gittins rank of each updated distribution over
bins with edges [K + 1] f32 (finite, strictly increasing; checked on the CPU, trusted on
CUDA, where checking would cost a synchronisation — `trail.Probe` passes its `Bins`, which
are validated once). `gittins_rank_reference` is its specification.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# From this many rows on, the CPU path lets torch's BLAS do the first layer's GEMM (it is
# at the machine's FMA peak there) and runs the rest fused in C++; below it the fused C++
# kernel streams W1 once for all rows. Measured crossover: bench/bench_probe.py.
CPU_GEMM_MIN_ROWS = 64

_HIDDEN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
           b2: Tensor, transition: Tensor, centers: Tensor, cap: Tensor, state: Tensor) -> None:
    """Shapes, dtypes and devices; raises ValueError/TypeError naming the offending value."""
    named = (("hidden", hidden), ("slots", slots), ("first", first), ("w1", w1), ("b1", b1),
             ("w2", w2), ("b2", b2), ("transition", transition), ("centers", centers),
             ("cap", cap), ("state", state))
    for name, t in named:
        if not isinstance(t, Tensor):  # the dispatcher lets None through to here
            raise TypeError(f"probe_step: {name} must be a Tensor, got {type(t).__name__}")
    if hidden.dim() != 2:
        raise ValueError(f"probe_step: hidden must be [B, D], got shape {tuple(hidden.shape)}")
    b, d = hidden.shape
    if w1.dim() != 2 or w1.shape[1] != d:
        raise ValueError(f"probe_step: w1 must be [H, D={d}], got {tuple(w1.shape)}")
    h = w1.shape[0]
    if w2.dim() != 2 or w2.shape[1] != h:
        raise ValueError(f"probe_step: w2 must be [K, H={h}], got {tuple(w2.shape)}")
    k = w2.shape[0]
    if state.dim() != 2 or state.shape[1] != k:
        raise ValueError(f"probe_step: state must be [S, K={k}], got {tuple(state.shape)}")
    shapes = {"slots": (slots, (b,)), "first": (first, (b,)), "b1": (b1, (h,)),
              "b2": (b2, (k,)), "transition": (transition, (k, k)), "centers": (centers, (k,)),
              "cap": (cap, (b,))}
    for name, (t, shape) in shapes.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"probe_step: {name} must have shape {shape}, got {tuple(t.shape)}")
    if k < 1 or h < 1 or d < 1:
        raise ValueError(f"probe_step: empty probe (D={d}, H={h}, K={k})")
    if hidden.dtype not in _HIDDEN_DTYPES + (torch.float64,):
        raise TypeError(f"probe_step: hidden must be a floating dtype, got {hidden.dtype}")
    if slots.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"probe_step: slots must be int32 or int64, got {slots.dtype}")
    if first.dtype != torch.bool:
        raise TypeError(f"probe_step: first must be bool, got {first.dtype}")
    for name, t in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        if not t.dtype.is_floating_point:
            raise TypeError(f"probe_step: {name} must be floating point, got {t.dtype}")
    for name, t in (("transition", transition), ("centers", centers), ("cap", cap),
                    ("state", state)):
        if t.dtype != torch.float32:
            raise TypeError(f"probe_step: {name} must be float32, got {t.dtype}")
    if not state.is_contiguous():
        raise ValueError("probe_step: state must be contiguous (it is updated in place)")
    devices = {t.device for t in (hidden, slots, first, w1, b1, w2, b2, transition, centers,
                                  cap, state)}
    if len(devices) != 1:
        raise ValueError(f"probe_step: all tensors must be on one device, got {sorted(map(str, devices))}")


def _check_edges(edges: Tensor, k: int, device: torch.device) -> None:
    """Shape, dtype and device of the Gittins rank's bin edges."""
    if not isinstance(edges, Tensor):
        raise TypeError(f"probe_step_rank: edges must be a Tensor, got {type(edges).__name__}")
    if tuple(edges.shape) != (k + 1,):
        raise ValueError(f"probe_step_rank: edges must have shape ({k + 1},), "
                         f"got {tuple(edges.shape)}")
    if edges.dtype != torch.float32:
        raise TypeError(f"probe_step_rank: edges must be float32, got {edges.dtype}")
    if edges.device != device:
        raise ValueError(f"probe_step_rank: edges must be on {device}, got {edges.device}")


def _checked_rank_args(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                       w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor,
                       edges: Tensor, cap: Tensor, state: Tensor) -> tuple[Tensor, ...]:
    """probe_step_rank's checks; returns probe_step's arguments (edges left out)."""
    args = (hidden, slots, first, w1, b1, w2, b2, transition, centers, cap, state)
    _check(*args)
    _check_edges(edges, w2.shape[0], state.device)
    return args


def _f32(t: Tensor) -> Tensor:
    return t if t.dtype == torch.float32 and t.is_contiguous() else t.float().contiguous()


def _probe_step_cpu(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                    w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor, cap: Tensor,
                    state: Tensor, edges: Tensor | None = None
                    ) -> tuple[Tensor, Tensor | None]:
    from trail_ext import _C

    b = hidden.shape[0]
    pred = torch.empty(b, dtype=torch.float32)
    rank = None if edges is None else torch.empty(b, dtype=torch.float32)
    if b == 0 and edges is None:
        return pred, rank  # (with edges the binding still checks them, as for any batch)
    sl = slots.detach()
    if sl.dtype == torch.int64 and b:
        # Narrowed to int32 below: a slot of 2**32 + 1 would silently become slot 1.
        bad = ((sl < 0) | (sl >= state.shape[0])).nonzero()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"probe_step: slots[{i}]={int(sl[i])} is outside the state's "
                             f"{state.shape[0]} rows")
    x = hidden.detach()
    if x.dtype == torch.float64:
        x = x.float()  # the C++ path computes in fp32; the reference also takes float64
    if x.stride(1) != 1:
        x = x.contiguous()
    if x.dtype == torch.float32:
        xn, code = x.numpy(), "float32"
    else:
        xn, code = x.view(torch.int16).numpy(), str(x.dtype).removeprefix("torch.")
    w1f = _f32(w1.detach())
    pre = None
    if b >= CPU_GEMM_MIN_ROWS:
        pre = torch.mm(x.float(), w1f.t()).numpy()
    _C.probe_step(xn, code, sl.to(torch.int32).contiguous().numpy(),
                  first.detach().contiguous().numpy(), w1f.numpy(), _f32(b1.detach()).numpy(),
                  _f32(w2.detach()).numpy(), _f32(b2.detach()).numpy(),
                  transition.detach().contiguous().numpy(), centers.detach().contiguous().numpy(),
                  cap.detach().contiguous().numpy(), state.detach().numpy(), pred.numpy(), pre,
                  None if edges is None else edges.detach().contiguous().numpy(),
                  None if rank is None else rank.numpy())
    return pred, rank


# Registered with the low-level torch.library API: its dispatch costs ~2 µs per call, against
# ~45 µs for torch.library.custom_op, which matters for a step that runs every token.
_lib = torch.library.Library("trail", "DEF")
_lib.define(
    "probe_step(Tensor hidden, Tensor slots, Tensor first, Tensor w1, Tensor b1, Tensor w2, "
    "Tensor b2, Tensor transition, Tensor centers, Tensor cap, Tensor(a!) state) -> Tensor")
_lib.define(
    "probe_step_rank(Tensor hidden, Tensor slots, Tensor first, Tensor w1, Tensor b1, "
    "Tensor w2, Tensor b2, Tensor transition, Tensor centers, Tensor edges, Tensor cap, "
    "Tensor(a!) state) -> (Tensor, Tensor)")


def _probe_step_cpu_checked(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                            w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor,
                            cap: Tensor, state: Tensor) -> Tensor:
    args = (hidden, slots, first, w1, b1, w2, b2, transition, centers, cap, state)
    _check(*args)
    return _probe_step_cpu(*args)[0]


def _probe_step_rank_cpu(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                         w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor,
                         edges: Tensor, cap: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    args = _checked_rank_args(hidden, slots, first, w1, b1, w2, b2, transition, centers, edges,
                              cap, state)
    return _probe_step_cpu(*args, edges=edges)


def _triton() -> Any:
    """trail.kernels.probe_triton, imported on first CUDA use (triton is the `gpu` extra)."""
    try:
        from trail.kernels import probe_triton
    except ModuleNotFoundError as exc:
        if exc.name != "triton":
            raise
        raise ImportError("probe_step on CUDA tensors runs a Triton kernel: install triton "
                          "(pip install 'trail-sched[gpu]', or PyTorch's CUDA build, which "
                          "brings it)") from None
    return probe_triton


def _probe_step_cuda(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                     w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor, cap: Tensor,
                     state: Tensor) -> Tensor:
    args = (hidden, slots, first, w1, b1, w2, b2, transition, centers, cap, state)
    _check(*args)
    return _triton().probe_step_triton(*args)


def _probe_step_rank_cuda(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                          w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor,
                          edges: Tensor, cap: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    _checked_rank_args(hidden, slots, first, w1, b1, w2, b2, transition, centers, edges, cap,
                       state)
    return _triton().probe_step_rank_triton(hidden, slots, first, w1, b1, w2, b2, transition,
                                            centers, edges, cap, state)


_lib.impl("probe_step", _probe_step_cpu_checked, "CPU")
_lib.impl("probe_step", _probe_step_cuda, "CUDA")
_lib.impl("probe_step_rank", _probe_step_rank_cpu, "CPU")
_lib.impl("probe_step_rank", _probe_step_rank_cuda, "CUDA")


@torch.library.register_fake("trail::probe_step")
def _probe_step_fake(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                     w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor, cap: Tensor,
                     state: Tensor) -> Tensor:
    _check(hidden, slots, first, w1, b1, w2, b2, transition, centers, cap, state)
    return hidden.new_empty((hidden.shape[0],), dtype=torch.float32)


@torch.library.register_fake("trail::probe_step_rank")
def _probe_step_rank_fake(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                          w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor,
                          edges: Tensor, cap: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    _checked_rank_args(hidden, slots, first, w1, b1, w2, b2, transition, centers, edges, cap,
                       state)
    b = hidden.shape[0]
    return (hidden.new_empty((b,), dtype=torch.float32),
            hidden.new_empty((b,), dtype=torch.float32))


def probe_step(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor, w2: Tensor,
               b2: Tensor, transition: Tensor, centers: Tensor, cap: Tensor,
               state: Tensor) -> Tensor:
    """Fused MLP probe + softmax + Bayesian update for a batch; updates `state` rows in place."""
    return torch.ops.trail.probe_step(hidden, slots, first, w1, b1, w2, b2, transition, centers,
                                      cap, state)


def probe_step_rank(hidden: Tensor, slots: Tensor, first: Tensor, w1: Tensor, b1: Tensor,
                    w2: Tensor, b2: Tensor, transition: Tensor, centers: Tensor, edges: Tensor,
                    cap: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
    """The probe step with a second output, the Gittins rank: returns (pred, gittins)."""
    return torch.ops.trail.probe_step_rank(hidden, slots, first, w1, b1, w2, b2, transition,
                                           centers, edges, cap, state)
