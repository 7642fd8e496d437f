"""Kernels beside their plain-torch references (the specs the tests compare them with): the
probe step (reference.py, probe_triton.py for the GPU, C++ for the CPU) and paged decode
attention (paged_attention_ref.py; the kernel is C++)."""

from trail.kernels.paged_attention_ref import paged_attention_decode_ref
from trail.kernels.reference import probe_step_reference

__all__ = ["paged_attention_decode_ref", "probe_step_reference"]
