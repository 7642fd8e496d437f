"""What every `trail` command shares: list flags, the rule of each numeric flag, --out, and
the check of flags that act only with another one."""

from __future__ import annotations

import argparse
import math
import os
import pathlib
from typing import Any, Callable

def floats(text: str) -> list[float]:
    """Comma-separated numbers, for flags like --loads 0.5,0.7,0.9 (no empty items)."""
    try:
        return [float(v) for v in comma_items(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def ints(text: str) -> list[int]:
    """Comma-separated integers, for flags like --batches 1,8,64 (no empty items)."""
    try:
        return [int(v) for v in comma_items(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def comma_items(text: str) -> list[str]:
    """The items of a comma-separated list; ValueError for an empty list or an empty item."""
    items = [v.strip() for v in text.split(",")]
    if not all(items):
        raise ValueError(text)
    return items


# ------------------------------------------------------------------ rules of numeric flags
#
# main() checks every flag against its rule before a command's function runs, so bad input
# fails in a second with one line naming the flag and the value. Each command module lists
# the rule of every flag that takes a number in its RULES (tests/test_cli_errors.py checks
# that none is missing); a list flag's rule holds for each of its values.

Rule = tuple[Callable[[Any], bool], str]
SEED_LIMIT = 2**32
POSITIVE: Rule = (lambda v: v >= 1, "an integer >= 1")
NATURAL: Rule = (lambda v: v >= 0, "an integer >= 0")
SEED: Rule = (lambda v: 0 <= v < SEED_LIMIT, "an integer in [0, 2**32)")
FINITE_NONNEG: Rule = (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
FINITE_POSITIVE: Rule = (lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
UNIT_C: Rule = (lambda v: 0 <= v <= 1, "in [0, 1]")
LOAD: Rule = (lambda v: 0 < v < 1.5, "in (0, 1.5)")
AUTO: Rule = (lambda v: True, "'auto' or a finite number >= 0")  # parsed by auto_or_number
# A flag that only acts with another one: (command, flag's dest, default, whether it acts,
# what it needs). Its parser default is None, so the flag given where it does nothing is
# refused instead of ignored; otherwise it gets its default in check_conditional.
Conditional = tuple[str, str, Any, Callable[[argparse.Namespace], bool], str]


def add_trail_key_flags(p: argparse.ArgumentParser) -> None:
    """--tail, --aging-rate, --boost-gamma and --preempt-margin: TRAIL's settings of those
    names (trail.policies.Settings; None: TRAIL_SETTINGS'), shared by simulate and demo."""
    p.add_argument("--tail", choices=("none", "aging", "boost"), default=None,
                   help="what bounds a long request's wait in TRAIL's key: nothing, linear "
                        "aging (+ ALPHA x arrival) or Boost (ALPHA x arrival - B(work), "
                        "Yu & Scully 2024) (default: trail.policies.TRAIL_SETTINGS)")
    p.add_argument("--aging-rate", default=None, metavar="ALPHA",
                   help="tokens per second: aging's slope ('auto': 2%% of one request's "
                        "decode speed at a full batch) or Boost's work rate ('auto': the "
                        "server's) (default: auto)")
    p.add_argument("--boost-gamma", default=None, metavar="GAMMA",
                   help="Boost's γ per token of work; 'auto': the decay rate of FCFS's tail "
                        "at the workload's load (default: auto)")
    p.add_argument("--preempt-margin", default=None, metavar="TOKENS",
                   help="preempt for rank only past this key gap; 'auto': the winner's curse "
                        "of the predictions' errors (default: auto)")


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def auto_or_number(text: str, flag: str) -> float | str:
    """A flag that takes 'auto' or a finite number >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{flag} {text}: must be {AUTO[1]}")
    return value


def check_rules(args: argparse.Namespace, rules: dict[str, Rule]) -> None:
    """Every numeric flag against its rule ('auto' flags parsed in place)."""
    for dest, (ok, rule) in rules.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if rules[dest] is AUTO:
            setattr(args, dest, auto_or_number(value, flag_name(dest)))
            continue
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if not ok(v)]  # NaN fails every rule
        if bad and isinstance(value, list):
            raise ValueError(f"{flag_name(dest)} {','.join(map(shown, values))}: each value must "
                             f"be {rule}, got {','.join(map(shown, bad))}")
        if bad:
            raise ValueError(f"{flag_name(dest)} {shown(value)}: must be {rule}")


def check_conditional(args: argparse.Namespace, conditional: tuple[Conditional, ...]) -> None:
    """Refuse a conditional flag given where it does nothing; default it where it acts."""
    for command, dest, default, acts, needs in conditional:
        if command != args.command:
            continue
        value = getattr(args, dest)
        if value is not None and not acts(args):
            text = value if isinstance(value, str) else shown(value)
            raise ValueError(f"{flag_name(dest)} {text}: has no effect without {needs}")
        if value is None:
            setattr(args, dest, default)


def shown(v: float) -> str:
    """A flag's number as typed: 2, not 2.0; integers in full."""
    return str(v) if isinstance(v, int) else f"{v:.15g}"


def check_out(out: str | None) -> None:
    """--out must be a directory, or creatable: its nearest existing ancestor a writable
    directory."""
    if out is None:
        return
    path = pathlib.Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable")


def write_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    """Rows of one shape as CSV with a header."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
