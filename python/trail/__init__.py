"""TRAIL: LLM serving scheduled by predicted remaining output length.

Submodules: :mod:`trail.sched_ref` (plain-Python twin of the native scheduler in
:mod:`trail_ext`).
"""

__version__ = "0.1.0"
