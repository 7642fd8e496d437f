"""Progress bars for long-running commands (one helper so they all look and behave alike)."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True,
                 leave: bool = True) -> tqdm:
    """A tqdm bar; with enabled=False a silent one with the same methods."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave)
