"""Shared fixtures: `impl` runs a test against both scheduler implementations.

TRITON_INTERPRET=1 is set here, before any module defining a Triton kernel is imported, so
that the Triton probe kernel runs on CPU tensors (slowly: tests use tiny shapes there).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import types  # noqa: E402

import pytest  # noqa: E402


def _native() -> types.ModuleType:
    import trail_ext

    return trail_ext


def _reference() -> types.ModuleType:
    from trail import sched_ref

    return sched_ref


IMPLS = {"native": _native, "ref": _reference}


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest) -> types.ModuleType:
    """The scheduler module under test: trail_ext (C++) or trail.sched_ref (Python)."""
    return IMPLS[request.param]()
