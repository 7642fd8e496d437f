"""TRAIL: LLM serving scheduled by predicted remaining output length.

Importing `trail` registers `torch.ops.trail.probe_step` (see :mod:`trail.ops`).
Submodules: :mod:`trail.sched_ref` (plain-Python twin of the native scheduler in
:mod:`trail_ext`), :mod:`trail.kernels` (probe-step kernels and their reference),
:mod:`trail.probe` (bins and the Probe module).
"""

from trail import ops as ops  # registers torch.ops.trail.*
from trail.probe import Bins, Probe

__all__ = ["Bins", "Probe", "ops"]

__version__ = "0.1.0"
