"""Shared fixtures: `impl` runs a test against both scheduler implementations."""

from __future__ import annotations

import types

import pytest


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
