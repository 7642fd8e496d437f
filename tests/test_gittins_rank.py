"""The Gittins rank: the reference against its definition; the C++ op and Triton against it."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest
import torch
import trail  # noqa: F401  (registers torch.ops.trail.probe_step_rank)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trail.kernels.probe_triton import probe_step_rank_triton
from trail.kernels.reference import (gittins_rank_reference, probe_step_rank_reference,
                                     probe_step_reference)
from trail.probe import Bins

from test_probe_kernels import assert_close, make_args

RANK_OP: Callable[..., tuple[torch.Tensor, torch.Tensor]] = torch.ops.trail.probe_step_rank
U = 2.0 ** -24


def by_definition(q: np.ndarray, edges: np.ndarray, cap: float, grid: int = 4001) -> float:
    """min over a of E[min(R, a)] / P(R <= a), on a dense grid of a plus the edges and cap,
    with the piecewise-uniform distribution integrated exactly (float64, no torch)."""
    if math.isnan(cap):
        return math.nan
    lo, hi = edges[:-1], edges[1:]
    top = min(cap, hi[-1])
    cands = np.concatenate([np.linspace(top / grid, top, grid), hi[hi < cap],
                            [cap] if cap <= hi[-1] else []])
    best = math.inf
    for a in cands:
        if a <= 0:
            continue
        frac = np.clip((a - lo) / (hi - lo), 0.0, 1.0)  # P(U_k <= a)
        p = 1.0 if a >= cap else float(q @ frac) / q.sum()
        x = min(a, cap)
        inside = ((x - lo) * (x + lo) / 2 + x * (hi - x)) / (hi - lo)
        part = np.where(x >= hi, (lo + hi) / 2, np.where(x <= lo, x, inside))
        e = float(q @ part) / q.sum()
        if p > 0:
            best = min(best, e / p)
    if cap <= 0:
        best = cap
    return best


def gittins_tolerance(k: int, want: torch.Tensor) -> torch.Tensor:
    """A sum of K positive terms, a ratio and a min: a few K ulp relative (no cancellation)."""
    return (8 * k + 32) * U * want.double().abs() + 1e-30


edges_st = st.lists(st.floats(0.5, 400.0), min_size=1, max_size=9).map(
    lambda w: np.concatenate([[0.0], np.cumsum(np.maximum(w, 1.0))]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edges=edges_st, data=st.data())
def test_reference_matches_the_definition(edges: np.ndarray, data: st.DataObject) -> None:
    k = len(edges) - 1
    q = np.array(data.draw(st.lists(st.floats(0.0, 1.0), min_size=k, max_size=k)))
    q[data.draw(st.integers(0, k - 1))] += 0.05  # some mass somewhere
    cap = data.draw(st.one_of(st.just(math.inf), st.floats(0.0, float(edges[-1]) * 1.2)))
    got = float(gittins_rank_reference(torch.tensor(q[None]), torch.tensor(edges),
                                       torch.tensor([cap], dtype=torch.float64))[0])
    want = by_definition(q, edges, cap)
    # the grid can only miss the minimum from above; the edge set is exact
    assert got <= want + 1e-9 * max(1.0, abs(want))
    assert got >= want - 1e-3 * max(1.0, want) - float(edges[-1]) / 4000


def test_worked_examples() -> None:
    e = torch.tensor([0.0, 64, 128, 256, 512, 1024], dtype=torch.float64)
    q = torch.tensor([[0, 0, 1.0, 0, 0], [0.5, 0, 0, 0, 0.5], [0.5, 0, 0, 0, 0.5],
                      [0.2, 0.2, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2, 0.2]],
                     dtype=torch.float64)
    cap = torch.tensor([math.inf, math.inf, 100.0, 0.0, math.nan], dtype=torch.float64)
    g = gittins_rank_reference(q, e, cap)
    assert g[0] == 192.0                    # one bin: its mean
    assert g[1] == 96.0                     # serve a 64-token quantum: (0.5·32 + 0.5·64) / 0.5
    assert g[2] == pytest.approx(66.0)      # the cap makes the long half short: 0.5·32 + 0.5·100
    assert g[3] == 0.0
    assert math.isnan(g[4])


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 12), scale=st.floats(0.01, 100.0))
def test_properties(seed: int, k: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    bins = Bins.geometric(k, 2.0, 2.0)
    edges = torch.tensor(bins.edges, dtype=torch.float64)
    q = torch.softmax(torch.randn(6, k, generator=g, dtype=torch.float64) * 3, dim=1)
    cap = torch.rand(6, generator=g, dtype=torch.float64) * edges[-1] * 1.3
    cap[0] = math.inf
    rank = gittins_rank_reference(q, edges, cap)
    mean = torch.minimum((q * bins.centers.double()).sum(dim=1), cap)
    assert (rank >= 0).all()
    assert (rank <= mean * (1 + 1e-12) + 1e-12).all()  # never above the capped mean
    torch.testing.assert_close(gittins_rank_reference(q * scale, edges, cap), rank,
                               rtol=1e-12, atol=1e-12)  # the scale of q does not matter
    j = int(torch.randint(0, k, (1,), generator=g))
    point = torch.zeros(1, k, dtype=torch.float64)
    point[0, j] = 1.0
    one = gittins_rank_reference(point, edges, torch.tensor([math.inf], dtype=torch.float64))
    assert float(one[0]) == pytest.approx(float(bins.centers[j]), rel=1e-6)


def rank_args(b: int, d: int, h: int, k: int, seed: int = 0, s: int | None = None
              ) -> list[torch.Tensor]:
    """probe_step_rank's arguments: probe_step's with the bins' edges before cap; peaked
    distributions and some unbounded caps, so that every candidate a can be the minimum."""
    args = make_args(b, d, h, k, s=s, seed=seed, scale=2.0)
    args[9][::3] = math.inf
    edges = torch.tensor(Bins.uniform(k, 512.0).edges, dtype=torch.float32)
    return args[:9] + [edges] + args[9:]


def run_rank(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]], args: list[torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    state = args[-1].clone()
    pred, rank = fn(*args[:-1], state)
    return pred, rank, state


def check_rank(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]],
               args: list[torch.Tensor]) -> None:
    """Mean and state as probe_step; the rank within a few ulp of the float64 reference rank
    of the state the kernel wrote."""
    pred, rank, state = run_rank(fn, args)
    plain = args[:9] + args[10:]
    ref_state = plain[-1].clone()
    ref_pred = probe_step_reference(*plain[:-1], ref_state)
    assert_close((pred, state), (ref_pred, ref_state), plain)
    slots = args[1].long()
    want = gittins_rank_reference(state[slots].double(), args[9].double(), args[10].double())
    bad = ~((rank.double() - want).abs() <= gittins_tolerance(args[5].shape[0], want))
    bad &= ~(torch.isnan(rank) & torch.isnan(want))
    assert not bad.any(), (rank[bad], want[bad])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(0, 70), k=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_op_matches_reference(b: int, k: int, seed: int) -> None:
    args = rank_args(b, 24, 16, k, seed=seed)
    if b > 2:
        args[10][0] = 0.0          # at the limit
        args[10][1] = math.inf     # no limit
        args[0][2, 3] = math.nan   # a poisoned row keeps its prior
    check_rank(RANK_OP, args)


def test_op_mean_is_probe_step_bit_for_bit() -> None:
    args = rank_args(80, 64, 32, 10, seed=5)  # past the GEMM crossover too
    pred, _, state = run_rank(RANK_OP, args)
    plain = args[:9] + args[10:]
    s2 = plain[-1].clone()
    pred2 = torch.ops.trail.probe_step(*plain[:-1], s2)
    assert torch.equal(pred, pred2) and torch.equal(state, s2)


@pytest.mark.parametrize("b,k", [(1, 1), (5, 3), (17, 10), (12, 16), (9, 20), (16, 6)])
def test_triton_matches_reference(b: int, k: int) -> None:
    args = rank_args(b, 16, 16, k, seed=b * 31 + k)
    if b > 2:
        args[10][0] = 0.0
        args[10][1] = math.inf
    check_rank(probe_step_rank_triton, args)


@pytest.mark.parametrize("fn", [probe_step_rank_reference, RANK_OP, probe_step_rank_triton],
                         ids=["reference", "op", "triton"])
def test_nan_cap_gives_nan_rank(fn: Callable[..., tuple[torch.Tensor, torch.Tensor]]) -> None:
    args = rank_args(3, 16, 8, 4, seed=4)
    args[10][1] = math.nan
    pred, rank, _ = run_rank(fn, args)
    assert math.isnan(rank[1]) and math.isnan(pred[1])
    assert torch.isfinite(rank[[0, 2]]).all()


def test_reference_twin_returns_mean_and_rank() -> None:
    args = rank_args(6, 16, 8, 5, seed=2)
    pred, rank, state = run_rank(probe_step_rank_reference, args)
    want = gittins_rank_reference(state[args[1].long()], args[9], args[10])
    assert torch.equal(rank, want)
    assert (rank <= pred + 1e-3).all()


@pytest.mark.parametrize("bad,err", [
    (lambda e: e[:-1], ValueError),                         # K edges, not K + 1
    (lambda e: e.double(), TypeError),
    (lambda e: torch.flip(e, [0]), ValueError),             # decreasing
    (lambda e: torch.where(torch.arange(len(e)) == 2, e[1], e), ValueError),  # repeated
    (lambda e: torch.where(torch.arange(len(e)) == len(e) - 1, math.inf, e), ValueError),
    (lambda e: torch.where(torch.arange(len(e)) == 3, math.nan, e), ValueError),
])
@pytest.mark.parametrize("b", [0, 4])
def test_bad_edges_are_rejected_by_name(bad: Callable[[torch.Tensor], torch.Tensor],
                                        err: type, b: int) -> None:
    args = rank_args(b, 16, 8, 5, seed=1)
    before = args[-1].clone()
    args[9] = bad(args[9])
    with pytest.raises(err, match="edges"):
        RANK_OP(*args)
    assert torch.equal(args[-1], before)  # nothing was updated


def test_torch_compile_aot_eager() -> None:
    """A compiled function calling probe_step_rank (through its fake): same outputs and state."""
    args = rank_args(3, 32, 16, 4, seed=2)

    def serve(hidden: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        pred, rank = torch.ops.trail.probe_step_rank(hidden * 1.0, *args[1:-1], state)
        return pred + rank

    eager_state, compiled_state = args[-1].clone(), args[-1].clone()
    want = serve(args[0], eager_state)
    torch._dynamo.reset()
    got = torch.compile(serve, backend="aot_eager", fullgraph=True)(args[0], compiled_state)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(compiled_state, eager_state)
