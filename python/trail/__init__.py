"""TRAIL: LLM serving scheduled by predicted remaining output length.

Importing `trail` registers `torch.ops.trail.probe_step` (see :mod:`trail.ops`).
Submodules: :mod:`trail.sched_ref` (plain-Python twin of the native scheduler in
:mod:`trail_ext`), :mod:`trail.kernels` (probe-step kernels and their reference),
:mod:`trail.probe` (bins and the Probe module).
"""

import os as _os

# Sleeping, not spinning, OpenMP threads: beside two busy processes, spinning threads made
# demo-model training 3x slower than sleeping ones (trail.cpu). Effective only if torch is
# not imported yet.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from trail import ops as ops  # noqa: E402  (registers torch.ops.trail.*)
from trail.probe import Bins, Probe  # noqa: E402

__all__ = ["Bins", "Probe", "ops"]

__version__ = "0.1.0"
