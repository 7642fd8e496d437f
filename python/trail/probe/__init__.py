"""The remaining-length probe: bins, the Bayesian transition, and the Probe module."""

from trail.probe.bins import Bins
from trail.probe.probe import Probe

__all__ = ["Bins", "Probe"]
