"""The plain-torch reference of paged decode attention (the spec of the C++ kernel
`trail_ext._C.paged_attention_decode`, csrc/kernels/paged_attention.cpp).

One query token per request attends over that request's context, stored in blocks of a
paged cache [blocks, kv_heads, block_size, D] listed by its block table; grouped-query
attention shares each KV head among heads // kv_heads query heads. Computed in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_context(cache: torch.Tensor, tables: torch.Tensor, lens: torch.Tensor, heads: int
                   ) -> list[torch.Tensor]:
    """Each request's context from its blocks, one copy per query head: [heads, len, D] each."""
    group = heads // cache.shape[1]
    return [cache[tables[i].long()].permute(1, 0, 2, 3).flatten(1, 2)[:, :int(lens[i])]
            .repeat_interleave(group, dim=0) for i in range(len(lens))]


def attend(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], scale: float
           ) -> torch.Tensor:
    """Scaled dot-product attention of q [n, heads, D] over gathered contexts, in float64."""
    return torch.stack([F.scaled_dot_product_attention(q[i][:, None].double(), kc.double(),
                                                       vc.double(), scale=scale)[:, 0]
                        for i, (kc, vc) in enumerate(zip(keys, values))])


def paged_attention_decode_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                               tables: torch.Tensor, lens: torch.Tensor, scale: float
                               ) -> torch.Tensor:
    """What the kernel computes: [n, heads, D] in float64."""
    heads = q.shape[1]
    return attend(q, gather_context(k_cache, tables, lens, heads),
                  gather_context(v_cache, tables, lens, heads), scale)
