"""The remaining-length probe: bins, the Bayesian transition, and the Probe module."""

from trail.probe.bins import Bins

__all__ = ["Bins"]
