"""The C++ paged decode-attention kernel vs its reference (trail.kernels.paged_attention_ref)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from error_bounds import attention_tolerance
from trail.kernels.paged_attention_ref import gather_context, paged_attention_decode_ref
from trail_ext import _C


def assert_matches_spec(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        tables: torch.Tensor, lens: torch.Tensor, scale: float) -> None:
    """Every element within the fp32 error bound of the exact result (tests/error_bounds.py)."""
    keys = gather_context(k, tables, lens, q.shape[1])
    values = gather_context(v, tables, lens, q.shape[1])
    want = paged_attention_decode_ref(q, k, v, tables, lens, scale)
    excess = (out.double() - want).abs() - attention_tolerance(q, keys, values, scale, want)
    assert (excess <= 0).all(), f"beyond the fp32 error bound by up to {float(excess.max()):.3g}"


def case(n: int, heads: int, kv_heads: int, d: int, bs: int, max_len: int, seed: int,
         ) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, max_len + 1, (n,), generator=g).int()
    width = int((lens.max() + bs - 1) // bs)
    blocks = n * width + 3
    k = torch.randn(blocks, kv_heads, bs, d, generator=g)
    v = torch.randn(blocks, kv_heads, bs, d, generator=g)
    tables = torch.randperm(blocks, generator=g)[: n * width].view(n, width).int()  # scattered
    q = torch.randn(n, heads, d, generator=g)
    return q, k, v, tables, lens


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), kv_heads=st.integers(1, 3), group=st.integers(1, 4),
       d=st.sampled_from([1, 7, 16, 33, 64, 80]), bs=st.sampled_from([1, 3, 16]),
       max_len=st.integers(1, 70), threads=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_kernel_matches_sdpa(n: int, kv_heads: int, group: int, d: int, bs: int, max_len: int,
                             threads: int, seed: int) -> None:
    q, k, v, tables, lens = case(n, kv_heads * group, kv_heads, d, bs, max_len, seed)
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    scale = d ** -0.5
    _C.paged_attention_decode(q.numpy(), k.numpy(), v.numpy(), tables.numpy(), lens.numpy(),
                              bs, scale, out.numpy(), threads)
    assert_matches_spec(out, q, k, v, tables, lens, scale)


def test_long_contexts_and_large_scores() -> None:
    """Thousand-token contexts and scores far from 0 exercise the vectorised exp's range."""
    q, k, v, tables, lens = case(4, 8, 2, 64, 16, 1500, seed=3)
    q *= 4.0
    out = torch.empty_like(q)
    _C.paged_attention_decode(q.numpy(), k.numpy(), v.numpy(), tables.numpy(), lens.numpy(),
                              16, 0.125, out.numpy(), 2)
    assert_matches_spec(out, q, k, v, tables, lens, 0.125)


def test_bad_tables_and_shapes_raise() -> None:
    q, k, v, tables, lens = case(2, 4, 2, 8, 4, 10, seed=1)
    out = torch.empty_like(q)

    def call(**kw: object) -> None:
        a = dict(q=q.numpy(), k_cache=k.numpy(), v_cache=v.numpy(), block_tables=tables.numpy(),
                 context_lens=lens.numpy(), block_size=4, scale=0.3, out=out.numpy())
        a.update(kw)
        _C.paged_attention_decode(**a)

    bad = tables.clone()
    bad[0, 0] = k.shape[0]
    with pytest.raises(ValueError, match="outside"):
        call(block_tables=bad.numpy())
    with pytest.raises(ValueError, match="context_lens"):
        call(context_lens=np.array([0, 1], np.int32))
    with pytest.raises(ValueError, match="context_lens"):
        call(context_lens=np.array([10_000, 1], np.int32))
    with pytest.raises(ValueError, match="block_size"):
        call(block_size=8)
    with pytest.raises(TypeError):
        call(q=q.double().numpy())
    with pytest.raises(ValueError):
        call(q=torch.randn(2, 3, 8).numpy())  # 3 query heads over 2 KV heads
