"""The engine's attention: a function registered with transformers' AttentionInterface.

All sequences of one forward are flattened into a single row of T tokens (each with its
own position id). For every layer the function writes the new keys and values into each
request's blocks of the paged cache, then attends:
- prefill rows (a whole prompt, or prompt + generated tokens when recomputing) attend
  causally over their own new keys and values, which is everything they have;
- decode rows (one token each) attend over their cached keys and values.
  On the CPU with a float32 cache, a C++ kernel (csrc/kernels/paged_attention.cpp) reads the
  blocks in place through each row's block table; elsewhere the context is gathered into one
  padded batch for scaled_dot_product_attention (the reference path, also used by tests).
The per-forward metadata arrives through `forward_context`, set by the model runner.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from trail.engine.kv_cache import PagedKVCache

NAME = "trail_paged"


@dataclass
class ForwardBatch:
    """Where each new token goes and what each row attends to, for one forward."""

    cache: PagedKVCache
    slot_mapping: torch.Tensor                  # [T] flat cache slot of each new token
    prefills: list[tuple[int, int]]             # (offset, length) in the flattened batch
    decode_rows: torch.Tensor                   # [n] positions of decode tokens in the batch
    decode_tables: torch.Tensor                 # [n, W] int32 block tables (host)
    decode_lens: torch.Tensor                   # [n] int32 context lengths (host)
    use_kernel: bool = True                     # paged C++ kernel when the cache allows it
    calls: set[int] = field(default_factory=set)  # layers that ran through this function
    _gather: tuple[torch.Tensor, torch.Tensor] | None = None

    def gather_index(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Block tables [n, W] (long, on the cache's device), mask [n, 1, 1, L], and L."""
        if self._gather is None:
            dev = self.cache.data.device
            lens = self.decode_lens.to(dev, torch.long)
            span = int(lens.max())
            mask = torch.arange(span, device=dev)[None, :] < lens[:, None]
            self._gather = (self.decode_tables.to(dev, torch.long), mask[:, None, None, :], span)
        return self._gather


_state = threading.local()


@contextlib.contextmanager
def forward_context(batch: ForwardBatch) -> Iterator[ForwardBatch]:
    """Make `batch` the metadata the attention function sees during one forward."""
    _state.batch = batch
    try:
        yield batch
    finally:
        _state.batch = None


def paged_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                    value: torch.Tensor, attention_mask: torch.Tensor | None,
                    scaling: float | None = None, dropout: float = 0.0,
                    **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention over the paged cache for query [1, H, T, D], key/value [1, KVH, T, D]."""
    batch: ForwardBatch | None = getattr(_state, "batch", None)
    if batch is None:  # the model's own forward (e.g. model.generate()): its own attention
        return fallback(module)(module, query, key, value, attention_mask, scaling=scaling,
                                dropout=dropout, **kwargs)
    if kwargs.get("sliding_window") is not None or kwargs.get("softcap") is not None:
        raise NotImplementedError("the TRAIL engine supports neither sliding-window attention "
                                  "nor logit soft-capping")
    layer = module.layer_idx
    batch.calls.add(layer)
    q, k, v = query[0], key[0], value[0]  # [H, T, D], [KVH, T, D]
    batch.cache.write(layer, batch.slot_mapping, k.transpose(0, 1), v.transpose(0, 1))
    k_cache, v_cache = batch.cache.layer(layer)

    n_heads, total, head_dim = q.shape
    out = q.new_empty(total, n_heads, head_dim)
    gqa = n_heads != k.shape[0]
    for off, length in batch.prefills:
        o = F.scaled_dot_product_attention(
            q[None, :, off:off + length], k[None, :, off:off + length],
            v[None, :, off:off + length], is_causal=True, scale=scaling, enable_gqa=gqa)
        out[off:off + length] = o[0].transpose(0, 1)
    if batch.decode_rows.numel():
        qd = q[:, batch.decode_rows].transpose(0, 1)  # [n, H, D]
        if (batch.use_kernel and k_cache.device.type == "cpu"
                and k_cache.dtype == torch.float32 and qd.dtype == torch.float32):
            from trail_ext import _C

            qd = qd.contiguous()
            od = torch.empty_like(qd)
            _C.paged_attention_decode(
                qd.numpy(), k_cache.numpy(), v_cache.numpy(), batch.decode_tables.numpy(),
                batch.decode_lens.numpy(), batch.cache.block_size,
                scaling if scaling is not None else head_dim ** -0.5, od.numpy(),
                torch.get_num_threads())
            out[batch.decode_rows] = od
        else:
            tables, mask, span = batch.gather_index()
            # [n, W, KVH, bs, D] -> [n, KVH, W·bs, D], cut to the longest context
            ctx_k = k_cache[tables].permute(0, 2, 1, 3, 4).flatten(2, 3)[:, :, :span]
            ctx_v = v_cache[tables].permute(0, 2, 1, 3, 4).flatten(2, 3)[:, :, :span]
            o = F.scaled_dot_product_attention(qd[:, :, None], ctx_k.to(qd.dtype),
                                               ctx_v.to(qd.dtype), attn_mask=mask,
                                               scale=scaling, enable_gqa=gqa)
            out[batch.decode_rows] = o[:, :, 0]
    return out[None], None


FALLBACK_ATTR = "_trail_fallback_attention"


def fallback(module: torch.nn.Module) -> Any:
    """The attention for `module`'s own forwards while the engine holds its model: SDPA,
    whose mask format is the one transformers builds for this attention (an eager model's
    additive masks are not built while the engine's attention is set)."""
    if getattr(module, FALLBACK_ATTR, None) is None:
        raise RuntimeError(f"attention '{NAME}' ran outside the TRAIL engine's forward on a "
                           f"module the engine did not set up")
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS["sdpa"]


def register() -> str:
    """Register the attention function with transformers (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, paged_attention)
    return NAME
