"""CPU microbenchmark of the probe step (pytest-benchmark): fused C++ op vs unfused reference.

The paper's probe shape: D=4096 (Llama-3-8B hidden size), H=512, K=10 bins, fp32, one
thread (torch.set_num_threads(1)), B ∈ {1, 8, 64, 256} rows. `op` is
torch.ops.trail.probe_step (the C++ kernel; from trail.ops.CPU_GEMM_MIN_ROWS rows on, layer
1 goes through torch's GEMM and the rest stays fused); `reference` is the plain-torch
specification (an unfused sequence of torch ops); `op+gittins` is
torch.ops.trail.probe_step_rank, the same fused step with the Gittins rank as a second
output (its extra cost is what ranking by the whole distribution adds).

    python -m pytest bench/bench_probe.py --benchmark-json=probe.json
    python bench/summarize_probe.py probe.json bench/results
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import trail
from trail.kernels.reference import probe_step_reference
from trail.microbench import probe_args

from trail_ext import _C

D, H, K, SLOTS = 4096, 512, 10, 1024
EDGES = torch.linspace(0.0, 512.0, K + 1)  # probe_args' bins: Bins.uniform(K, 512)


def op_gittins(*args: torch.Tensor) -> torch.Tensor:
    """probe_step_rank with probe_step's arguments; returns the rank."""
    return torch.ops.trail.probe_step_rank(*args[:9], EDGES, *args[9:])[1]


IMPLS = {"op": torch.ops.trail.probe_step, "op+gittins": op_gittins,
         "reference": probe_step_reference}


def make_args(b: int, seed: int = 0) -> list[torch.Tensor]:
    return probe_args(b, D, H, K, SLOTS, "cpu", seed=seed)


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("b", [1, 8, 64, 256])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_probe_step(benchmark: Any, impl: str, b: int) -> None:
    args = make_args(b)
    fn = IMPLS[impl]
    benchmark.extra_info.update(impl=impl, batch=b, D=D, H=H, K=K, threads=1,
                                isa=_C.probe_isa(),
                                path=("gemm+fused tail" if b >= trail.ops.CPU_GEMM_MIN_ROWS
                                      else "fused") if impl != "reference" else "unfused torch")
    with torch.no_grad():
        pred = benchmark.pedantic(fn, args=tuple(args), rounds=60 if b <= 64 else 30,
                                  iterations=1, warmup_rounds=3)
    assert pred.shape == (b,) and torch.isfinite(pred).all()
