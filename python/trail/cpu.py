"""CPU speed settings that survive a shared machine: thread counts and flush-to-zero.

The choices, measured on a 2-core VM (bench/results/demo_speed_*.md):
- OpenMP's threads spin while they wait for work (libgomp's default: for a while after each
  parallel region; OMP_WAIT_POLICY=ACTIVE: always). When another process holds a core, a spinning
  thread steals it and every parallel region waits for the thread that was descheduled:
  beside two busy processes, 2-thread training of the demo model took 7.9x its quiet time
  with libgomp's default wait, 2.1x with PASSIVE. `import trail` sets
  OMP_WAIT_POLICY=PASSIVE unless the environment says otherwise; it only takes effect if
  torch was not imported before trail (the `trail` command always imports trail first).
- A small model is a long chain of small operations: one thread serves it fastest, and
  trains it about as fast as two sleeping-wait threads while slowing least beside busy
  neighbours (demo model, 150 training steps: 1 thread 16.1 s quiet / 25.9 s busy; 2 threads
  with OpenMP's default wait 10.2 / 80.3 s; 2 threads PASSIVE 15.0 / 31.0 s;
  bench/results/omp_settings_2026-11-30.md). `trail demo` runs everything with one thread.
  A quiet machine running a big model gains from more threads: set OMP_WAIT_POLICY=ACTIVE
  (or GOMP_SPINCOUNT) yourself there, since PASSIVE costs each parallel region a wake-up.
- Subnormal floats (tiny hidden-state features, their gradients) take a slow microcode path
  on x86: probe training on the demo model's layer 0 took 137 s instead of 4.7 s. Training
  runs under `flush_denormals()`, which changes results only below 1.2e-38.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the caller's count."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive int, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Run the block with subnormal floats flushed to zero on the CPU (then turned off again).

    torch cannot report the previous setting, so the block ends with flushing off, which is
    torch's default.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
