"""Probe-step kernels: the plain-torch reference (the spec), Triton (GPU) and the C++ CPU path."""

from trail.kernels.reference import probe_step_reference

__all__ = ["probe_step_reference"]
