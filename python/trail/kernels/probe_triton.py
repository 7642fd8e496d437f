"""The probe step as one fused Triton kernel for the whole batch (GPU).

`probe_step_triton(...)` takes the op's arguments (see trail/ops.py) and launches one kernel:
each program owns BLOCK_B rows, streams W1 tile by tile (layer 1 on the tensor cores),
applies bias and ReLU, folds each hidden tile straight into layer 2's logits, and finishes
softmax, the Bayesian update, the state write and the prediction in registers (and, for
`probe_step_rank`, the Gittins rank of each updated row). Nothing but the B predictions
(and ranks) and the touched state rows is written. Its specification is
`trail.kernels.reference.probe_step_reference`; under `TRITON_INTERPRET=1` (set before this
module is imported) it runs on CPU tensors, which is how the tests check it without a GPU.

Rows whose slot lies outside the state are skipped on the GPU (prediction NaN, state
untouched) rather than checked on the host, which would cost a device synchronisation;
duplicate slots in one batch are undefined here. `trail.Probe` checks both on the host.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

MAX_BINS = 1024  # bins (K) the kernel handles: one row's distribution lives in registers


@triton.jit
def _probe_step_kernel(hidden_ptr, stride_h, slots_ptr, first_ptr, w1_ptr, b1_ptr, w2_ptr,
                       b2_ptr, trans_ptr, centers_ptr, cap_ptr, state_ptr, pred_ptr,
                       edges_ptr, gittins_ptr, B, D, H, K, S,
                       BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
                       KP: tl.constexpr, DOT_FP32: tl.constexpr, RANK: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    ks = tl.arange(0, KP)
    kmask = ks < K
    row_ptr = hidden_ptr + rows.to(tl.int64)[:, None] * stride_h

    # Rows holding NaN/Inf: v - v is NaN exactly there.
    bad_x = tl.zeros([BLOCK_B], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(row_ptr + ds[None, :], mask=rmask[:, None] & (ds < D)[None, :], other=0.0)
        xf = x.to(tl.float32)
        bad_x += tl.sum(tl.where(xf - xf == 0.0, 0.0, 1.0), axis=1)

    logits = tl.zeros([BLOCK_B, KP], dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        hs = h0 + tl.arange(0, BLOCK_H)
        hmask = hs < H
        acc = tl.zeros([BLOCK_B, BLOCK_H], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            dmask = ds < D
            x = tl.load(row_ptr + ds[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
            w = tl.load(w1_ptr + hs.to(tl.int64)[:, None] * D + ds[None, :],
                        mask=hmask[:, None] & dmask[None, :], other=0.0)
            if DOT_FP32:
                acc += tl.dot(x.to(tl.float32), tl.trans(w.to(tl.float32)),
                              input_precision="ieee")
            else:
                acc += tl.dot(x.to(w.dtype), tl.trans(w))
        bias = tl.load(b1_ptr + hs, mask=hmask, other=0.0).to(tl.float32)
        z = acc + bias[None, :]
        z = tl.where(z < 0.0, 0.0, z)  # ReLU that keeps NaN, as torch.relu does
        w2t = tl.load(w2_ptr + ks.to(tl.int64)[None, :] * H + hs[:, None],
                      mask=hmask[:, None] & kmask[None, :], other=0.0).to(tl.float32)
        logits += tl.dot(z, w2t, input_precision="ieee")
    logits += tl.load(b2_ptr + ks, mask=kmask, other=0.0).to(tl.float32)[None, :]

    bad_l = tl.sum(tl.where(kmask[None, :] & (logits - logits != 0.0), 1.0, 0.0), axis=1)
    good = (bad_x == 0.0) & (bad_l == 0.0)
    neg_inf = float("-inf")
    safe = tl.where(kmask[None, :], tl.where(good[:, None], logits, 0.0), neg_inf)
    e = tl.exp(safe - tl.max(safe, axis=1)[:, None])
    e = tl.where(kmask[None, :], e, 0.0)
    p = e / tl.sum(e, axis=1)[:, None]

    slots = tl.load(slots_ptr + rows, mask=rmask, other=0).to(tl.int64)
    smask = rmask & (slots >= 0) & (slots < S)
    first = tl.load(first_ptr + rows, mask=rmask, other=1) != 0
    st_ptr = state_ptr + slots[:, None] * K + ks[None, :]
    st_mask = smask[:, None] & kmask[None, :]
    st = tl.load(st_ptr, mask=st_mask, other=0.0)
    trans = tl.load(trans_ptr + ks[:, None] * K + ks[None, :],
                    mask=kmask[:, None] & kmask[None, :], other=0.0)
    prior = tl.sum(st[:, :, None] * trans[None, :, :], axis=1)

    post = prior * p
    post_sum = tl.sum(post, axis=1)
    post = tl.where(post_sum[:, None] > 0.0,
                    post / tl.where(post_sum > 0.0, post_sum, 1.0)[:, None], p)
    prior_sum = tl.sum(prior, axis=1)
    usable = (prior_sum > 0.0) & (prior_sum - prior_sum == 0.0)
    uniform = tl.where(kmask, 1.0 / K, 0.0)[None, :]
    kept = tl.where(usable[:, None], prior / tl.where(usable, prior_sum, 1.0)[:, None], uniform)
    q = tl.where(good[:, None], tl.where(first[:, None], p, post),
                 tl.where(first[:, None], uniform, kept))
    tl.store(st_ptr, q, mask=st_mask)

    centers = tl.load(centers_ptr + ks, mask=kmask, other=0.0)
    mean = tl.sum(q * centers[None, :], axis=1)
    cap = tl.load(cap_ptr + rows, mask=rmask, other=0.0)
    pred = tl.where(cap != cap, cap, tl.minimum(mean, cap))
    pred = tl.where(smask, pred, float("nan"))
    tl.store(pred_ptr + rows, pred, mask=rmask)

    if RANK:  # the Gittins rank of q (reference.gittins_rank_reference), K×K in registers
        lo = tl.load(edges_ptr + ks, mask=kmask, other=0.0)
        hi = tl.load(edges_ptr + ks + 1, mask=kmask, other=0.0)
        mid = (lo + hi) / 2
        upto = (ks[None, :] <= ks[:, None]) & kmask[None, :]   # [j, k]: k <= j
        after = (ks[None, :] > ks[:, None]) & kmask[None, :]   # [j, k]: k > j
        qm = tl.where(kmask[None, :], q, 0.0)
        prefix = tl.sum(tl.where(upto[None, :, :], qm[:, None, :], 0.0), axis=2)
        below = tl.sum(tl.where(upto[None, :, :], (qm * mid[None, :])[:, None, :], 0.0), axis=2)
        tail = tl.sum(tl.where(after[None, :, :], qm[:, None, :], 0.0), axis=2)
        at_edge = (below + hi[None, :] * tail) / tl.where(prefix > 0.0, prefix, 1.0)
        c = cap[:, None]
        valid = (prefix > 0.0) & (hi[None, :] < c) & kmask[None, :]
        best = tl.min(tl.where(valid, at_edge, float("inf")), axis=1)
        width = tl.where(hi > lo, hi - lo, 1.0)[None, :]
        x = tl.minimum(c, hi[None, :])  # = c where used; keeps inf out of the other lanes
        inside = ((x - lo[None, :]) * (x + lo[None, :]) / 2 + x * (hi[None, :] - x)) / width
        part = tl.where(c >= hi[None, :], mid[None, :], tl.where(c <= lo[None, :], c, inside))
        total = tl.sum(qm, axis=1)
        at_cap = tl.sum(qm * part, axis=1) / tl.where(total > 0.0, total, 1.0)
        g = tl.minimum(best, at_cap)
        g = tl.where(cap != cap, cap, g)
        g = tl.where(smask, g, float("nan"))
        tl.store(gittins_ptr + rows, g, mask=rmask)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


def probe_step_triton(hidden: torch.Tensor, slots: torch.Tensor, first: torch.Tensor,
                      w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                      transition: torch.Tensor, centers: torch.Tensor, cap: torch.Tensor,
                      state: torch.Tensor) -> torch.Tensor:
    """Launch the fused kernel; same arguments and result as torch.ops.trail.probe_step."""
    return _launch(hidden, slots, first, w1, b1, w2, b2, transition, centers, cap, state,
                   None)[0]


def probe_step_rank_triton(hidden: torch.Tensor, slots: torch.Tensor, first: torch.Tensor,
                           w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                           b2: torch.Tensor, transition: torch.Tensor, centers: torch.Tensor,
                           edges: torch.Tensor, cap: torch.Tensor, state: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused kernel with the Gittins rank; as torch.ops.trail.probe_step_rank."""
    pred, rank = _launch(hidden, slots, first, w1, b1, w2, b2, transition, centers, cap, state,
                         edges)
    assert rank is not None
    return pred, rank


def _launch(hidden: torch.Tensor, slots: torch.Tensor, first: torch.Tensor, w1: torch.Tensor,
            b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, transition: torch.Tensor,
            centers: torch.Tensor, cap: torch.Tensor, state: torch.Tensor,
            edges: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    b, d = hidden.shape
    h, k = w1.shape[0], w2.shape[0]
    if k > MAX_BINS:  # the kernel holds a row's K bins in registers (KP below)
        raise ValueError(f"probe_step on CUDA supports at most {MAX_BINS} bins, got K={k}")
    pred = torch.empty(b, dtype=torch.float32, device=hidden.device)
    rank = None if edges is None else torch.empty_like(pred)
    if b == 0:
        return pred, rank
    if hidden.stride(1) != 1:
        hidden = hidden.contiguous()
    w1, w2 = w1.contiguous(), w2.contiguous()
    # Triton's CPU interpreter (3.9) computes bf16 tl.dot wrongly; bf16 products are exact in
    # fp32, so upcasting there computes the same thing (fp16 dots are fine and stay native).
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    dot_fp32 = w1.dtype in (torch.float32, torch.float64) or (
        interpreted and torch.bfloat16 in (w1.dtype, hidden.dtype))
    block_b = 16  # tl.dot's smallest tile
    grid = (triton.cdiv(b, block_b),)
    _probe_step_kernel[grid](
        hidden, hidden.stride(0), slots.contiguous(),  # int32 or int64: never narrowed
        first.contiguous().view(torch.uint8), w1, b1.contiguous(), w2, b2.contiguous(),
        transition.contiguous(), centers.contiguous(), cap.contiguous(), state, pred,
        pred if edges is None else edges.contiguous(), pred if rank is None else rank,
        b, d, h, k, state.shape[0],
        BLOCK_B=block_b, BLOCK_D=_pow2(d, 16, 128), BLOCK_H=_pow2(h, 16, 64),
        KP=_pow2(k, 16, MAX_BINS), DOT_FP32=dot_fp32, RANK=edges is not None)
    return pred, rank
