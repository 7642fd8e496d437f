"""The probe step: reference vs a float64 hand computation; C++ op and Triton vs reference."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest
import torch
import trail  # noqa: F401  (registers torch.ops.trail.probe_step)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trail.kernels.probe_triton import probe_step_triton
from trail.kernels.reference import probe_step_reference
from trail.probe import Bins

from error_bounds import probe_step_tolerance
from trail_ext import _C

OP: Callable[..., torch.Tensor] = torch.ops.trail.probe_step


def make_args(b: int, d: int, h: int, k: int, s: int | None = None, seed: int = 0,
              dtype: torch.dtype = torch.float32, tokens: int = 3,
              scale: float = 0.3) -> list[torch.Tensor]:
    """Random arguments of the op; the state holds proper distributions."""
    g = torch.Generator().manual_seed(seed)
    s = s if s is not None else max(2 * b, 4)
    bins = Bins.uniform(k, 512.0)
    state = torch.softmax(torch.randn(s, k, generator=g) * 2, dim=1)
    return [
        torch.randn(b, d, generator=g).to(dtype),
        torch.randperm(s, generator=g)[:b].to(torch.int32),
        torch.rand(b, generator=g) < 0.4,
        torch.randn(h, d, generator=g) * scale / math.sqrt(d) * 4,
        torch.randn(h, generator=g) * 0.1,
        torch.randn(k, h, generator=g) * scale,
        torch.randn(k, generator=g) * 0.1,
        bins.transition(tokens),
        bins.centers,
        torch.rand(b, generator=g) * 700,
        state,
    ]


def run(fn: Callable[..., torch.Tensor], args: list[torch.Tensor]
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run on a copy of the state; returns (pred, state after)."""
    state = args[-1].clone()
    pred = fn(*args[:-1], state)
    return pred, state


def assert_within(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor],
                  tol: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Every element of pred and state within its own bound (0 for untouched state rows)."""
    for name, g, w, t in zip(("pred", "state"), got, want, tol):
        excess = (g.double() - w.double()).abs() - t
        bad = ~(excess <= 0)  # NaN counts as a failure
        assert not bad.any(), (f"{name}: {int(bad.sum())} elements beyond the fp32 error bound; "
                               f"worst |diff| - bound = {float(excess.nan_to_num(1e300).max()):.3g}")


def assert_close(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor],
                 args: list[torch.Tensor], input_unit: float = 0.0) -> None:
    """Two fp32 implementations of the step agree within twice the bound each has to the exact
    result (`error_bounds.probe_step_tolerance`)."""
    pred_tol, state_tol = probe_step_tolerance(args, want, input_unit)
    assert_within(got, want, (2 * pred_tol, 2 * state_tol))


# ---------------------------------------------------------------- the reference itself

def hand_step(args: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The definition, row by row in float64 numpy, independent of torch."""
    hidden, slots, first, w1, b1, w2, b2, trans, centers, cap, state = args
    state = state.copy()
    k = w2.shape[0]
    pred = np.zeros(len(hidden))
    for b in range(len(hidden)):
        x = hidden[b]
        with np.errstate(invalid="ignore", over="ignore"):  # the NaN/Inf rows
            z = np.maximum(w1 @ x + b1, 0.0)
            logits = w2 @ z + b2
        prior = state[slots[b]] @ trans
        if np.all(np.isfinite(x)) and np.all(np.isfinite(logits)):
            p = np.exp(logits - logits.max())
            p /= p.sum()
            if first[b]:
                q = p
            else:
                q = prior * p
                q = q / q.sum() if q.sum() > 0 else p
        elif first[b] or not prior.sum() > 0:
            q = np.full(k, 1.0 / k)
        else:
            q = prior / prior.sum()
        state[slots[b]] = q
        pred[b] = min(float(q @ centers), cap[b])
    return pred, state


def test_reference_matches_float64_hand_computation() -> None:
    args = make_args(9, 24, 12, 6, s=14, seed=3)
    args = [a.double() if a.is_floating_point() else a for a in args]
    args[0][4, 2] = math.nan  # a poisoned row keeps the propagated prior
    args[0][5, 0] = math.inf
    args[9][1] = 0.5          # a cap that binds
    pred, state = run(probe_step_reference, args)
    assert pred.dtype == torch.float64
    want_pred, want_state = hand_step([a.numpy() for a in args])
    np.testing.assert_allclose(pred.numpy(), want_pred, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.numpy(), want_state, rtol=1e-12, atol=1e-15)
    assert pred[1] == 0.5


def underflow_args(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Prior mass only where the probe's softmax underflows to exactly zero."""
    args = make_args(2, 16, 16, 4, s=4, seed=1, tokens=0)
    args[2][:] = False
    args[5] = torch.zeros_like(args[5])
    args[6] = torch.tensor([0.0, -1000.0, -1000.0, -1000.0])  # p = [1, 0, 0, 0] in fp32
    args[10][args[1].long()] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    return args


@pytest.mark.parametrize("fn", [probe_step_reference, OP, probe_step_triton],
                         ids=["reference", "op", "triton"])
def test_underflowing_posterior_falls_back_to_probe(fn: Callable[..., torch.Tensor]) -> None:
    args = underflow_args()
    pred, state = run(fn, args)
    rows = state[args[1].long()]
    torch.testing.assert_close(rows, torch.tensor([[1.0, 0, 0, 0]] * 2))
    assert torch.isfinite(pred).all()


# ---------------------------------------------------------------- Triton (interpreter)

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("k", [4, 10])
@pytest.mark.parametrize("h", [16, 32])
@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("b", [1, 3, 8])
def test_triton_matches_reference(b: int, d: int, h: int, k: int, dtype: torch.dtype) -> None:
    args = make_args(b, d, h, k, seed=b * 1000 + d * 10 + h + k, dtype=dtype)
    assert_close(run(probe_step_triton, args), run(probe_step_reference, args), args)


@pytest.mark.parametrize("wdtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("fn", [probe_step_triton, OP], ids=["triton", "op"])
def test_low_precision_weights(fn: Callable[..., torch.Tensor], wdtype: torch.dtype) -> None:
    """Probe weights in bf16/fp16 (a user's half-precision probe layers pass straight in)."""
    args = make_args(8, 64, 32, 10, seed=9, dtype=wdtype)
    for i in (3, 4, 5, 6):
        args[i] = args[i].to(wdtype)
    # The Triton kernel rounds the hidden states to the weights' format before the first layer.
    unit = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[wdtype]
    assert_close(run(fn, args), run(probe_step_reference, args), args, input_unit=unit)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(1, 20), d=st.integers(1, 70), h=st.integers(1, 40), k=st.integers(1, 12),
       seed=st.integers(0, 2**16), bad=st.integers(-1, 19))
def test_triton_random_shapes(b: int, d: int, h: int, k: int, seed: int, bad: int) -> None:
    """Odd sizes exercise every mask; `bad` puts a NaN in one row."""
    args = make_args(b, d, h, k, seed=seed)
    if 0 <= bad < b:
        args[0][bad, seed % d] = math.nan
    assert_close(run(probe_step_triton, args), run(probe_step_reference, args), args)


def test_triton_skips_rows_with_out_of_range_slots() -> None:
    args = make_args(3, 32, 16, 4, s=6)
    args[1][1] = 6  # outside the state: skipped on the GPU path instead of a host check
    pred, state = run(probe_step_triton, args)
    ref_args = [a[[0, 2]] if i in (0, 1, 2, 9) else a for i, a in enumerate(args)]
    want_pred, want_state = run(probe_step_reference, ref_args)
    assert math.isnan(pred[1])
    assert_close((pred[[0, 2]], state), (want_pred, want_state), ref_args)


# ---------------------------------------------------------------- C++ op (CPU)

@pytest.mark.parametrize("b", [1, 2, 5, 8, 33, 63, 64])
def test_op_matches_exact_step_at_paper_shape(b: int) -> None:
    """D=4096, H=512, K=10: the op and the fp32 reference are each within the fp32 error bound
    of the exact (float64) step, element by element, and every output element is written."""
    args = make_args(b, 4096, 512, 10, s=128, seed=b)  # logits ~ N(0, 5²), as trained probes give
    first_rows = args[1][args[2]].long()
    poisoned = args[-1].clone()
    poisoned[first_rows] = math.nan  # first rows never read the state: all must be rewritten
    want = run(probe_step_reference, args)
    exact = run(probe_step_reference, [a.double() if a.is_floating_point() else a for a in args])
    pred = OP(*args[:-1], poisoned)
    tol = probe_step_tolerance(args, want)
    assert_within(want, exact, tol)   # the bound holds for the specification itself
    assert_within((pred, poisoned), exact, tol)
    untouched = ~torch.isin(torch.arange(128), args[1].long())
    assert torch.equal(poisoned[untouched], args[-1][untouched])


@pytest.mark.parametrize("b", [1, 8, 64])
def test_binding_writes_every_prediction(b: int) -> None:
    """The C++ kernel's output buffer is poisoned first; every element must be written."""
    args = make_args(b, 4096, 512, 10, s=128, seed=7 + b)
    n = [a.numpy() for a in args]
    state = n[-1].copy()
    pred = np.full(b, np.nan, dtype=np.float32)
    pre = (args[0] @ args[3].T).numpy() if b == 64 else None
    _C.probe_step(n[0], "float32", *n[1:-1], state, pred, pre)
    assert np.isfinite(pred).all()
    assert_close((torch.from_numpy(pred), torch.from_numpy(state)),
                 run(probe_step_reference, args), args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_op_hidden_dtypes(dtype: torch.dtype) -> None:
    args = make_args(6, 40, 24, 7, seed=11, dtype=dtype)
    args32 = [a.float() if a.dtype == torch.float64 else a for a in args]
    assert_close(run(OP, args), run(probe_step_reference, args32), args32)


@settings(max_examples=60, deadline=None)
@given(b=st.integers(0, 12), d=st.integers(1, 80), h=st.integers(1, 40), k=st.integers(1, 12),
       seed=st.integers(0, 2**16), bad=st.integers(-1, 11), strided=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_op_random_shapes(b: int, d: int, h: int, k: int, seed: int, bad: int, strided: bool,
                          dtype: torch.dtype) -> None:
    """Odd sizes hit every vector tail; strided hidden rows; NaN/Inf rows."""
    args = make_args(b, d, h, k, seed=seed, dtype=dtype)
    if 0 <= bad < b:
        args[0][bad, seed % d] = math.inf if seed % 2 else math.nan
    if strided:
        wide = torch.zeros(b, d + 3, dtype=dtype)
        wide[:, :d] = args[0]
        args[0] = wide[:, :d]
    assert_close(run(OP, args), run(probe_step_reference, args), args)


@pytest.mark.parametrize("fn", [OP, probe_step_triton], ids=["op", "triton"])
def test_nan_rows_keep_the_prior_and_get_finite_predictions(fn: Callable[..., torch.Tensor]
                                                            ) -> None:
    args = make_args(4, 32, 16, 5, s=8, seed=5)
    args[2][:] = torch.tensor([False, True, False, False])
    args[0][0, 3] = math.nan          # non-first: keeps state @ T
    args[0][1, :] = math.inf          # first: uniform
    args[0][2, :] = 3e38              # finite but overflows the logits
    state0 = args[-1].clone()
    pred, state = run(fn, args)
    assert torch.isfinite(pred).all() and torch.isfinite(state).all()
    trans = args[7]
    for row in (0, 2):
        slot = int(args[1][row])
        prior = state0[slot] @ trans
        torch.testing.assert_close(state[slot], prior / prior.sum())
    torch.testing.assert_close(state[int(args[1][1])], torch.full((5,), 0.2))
    assert_close((pred, state), run(probe_step_reference, args), args)


def test_empty_batch() -> None:
    args = make_args(0, 16, 8, 4, s=4)
    pred, state = run(OP, args)
    assert pred.shape == (0,) and torch.equal(state, args[-1])


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile(backend: str) -> None:
    """A compiled function calling the op: same predictions, and the state is updated."""
    args = make_args(3, 32, 16, 4, s=6, seed=2)

    def serve(hidden: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        pred = torch.ops.trail.probe_step(hidden * 1.0, *args[1:-1], state)
        return pred.clamp(min=0.0) + 0.0

    eager_state, compiled_state = args[-1].clone(), args[-1].clone()
    want = serve(args[0], eager_state)
    torch._dynamo.reset()
    got = torch.compile(serve, backend=backend, fullgraph=True)(args[0], compiled_state)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(compiled_state, eager_state)
    assert not torch.equal(compiled_state, args[-1])


# ---------------------------------------------------------------- bad input

BAD: list[tuple[str, Callable[[list[torch.Tensor]], None], type]] = [
    ("hidden 1-D", lambda a: a.__setitem__(0, a[0][0]), ValueError),
    ("w1 wrong D", lambda a: a.__setitem__(3, a[3][:, :-1]), ValueError),
    ("w2 wrong H", lambda a: a.__setitem__(5, a[5][:, :-1]), ValueError),
    ("state wrong K", lambda a: a.__setitem__(10, a[10][:, :-1].contiguous()), ValueError),
    ("cap wrong B", lambda a: a.__setitem__(9, a[9][:-1]), ValueError),
    ("transition not KxK", lambda a: a.__setitem__(7, a[7][:-1]), ValueError),
    ("slots float", lambda a: a.__setitem__(1, a[1].float()), TypeError),
    ("first int", lambda a: a.__setitem__(2, a[2].int()), TypeError),
    ("cap float64", lambda a: a.__setitem__(9, a[9].double()), TypeError),
    ("state float64", lambda a: a.__setitem__(10, a[10].double()), TypeError),
    ("hidden int", lambda a: a.__setitem__(0, a[0].int()), TypeError),
    ("state strided", lambda a: a.__setitem__(10, a[10].t().contiguous().t()), ValueError),
    ("slot out of range", lambda a: a[1].__setitem__(0, 99), ValueError),
    ("negative slot", lambda a: a[1].__setitem__(0, -1), ValueError),
    ("duplicate slot", lambda a: a[1].__setitem__(1, int(a[1][0])), ValueError),
    ("mixed devices", lambda a: a.__setitem__(8, a[8].to("meta")), ValueError),
]


@pytest.mark.parametrize("name, mutate, exc", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_raise_and_leave_state(name: str, mutate: Callable[[list[Any]], None],
                                             exc: type) -> None:
    args = make_args(3, 16, 8, 4, s=6)
    mutate(args)
    before = args[-1].clone()
    with pytest.raises(exc):
        OP(*args)
    if args[-1].shape == before.shape:
        assert torch.equal(args[-1], before)


def test_binding_rejects_bad_buffers() -> None:
    n = [a.numpy() for a in make_args(2, 16, 8, 4, s=4)]
    pred = np.zeros(2, np.float32)
    with pytest.raises(TypeError):
        _C.probe_step(n[0].astype(np.float64), "float32", *n[1:], pred)
    with pytest.raises(ValueError):
        _C.probe_step(n[0], "float32", *n[1:-1], n[-1], np.zeros(3, np.float32))
    with pytest.raises(TypeError):
        _C.probe_step(n[0], "int8", *n[1:], pred)
    ro = n[-1].copy()
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="writable"):
        _C.probe_step(n[0], "float32", *n[1:-1], ro, pred)
    assert _C.probe_isa() in ("avx512", "avx2", "generic")
