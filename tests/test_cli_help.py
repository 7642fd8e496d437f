"""Every `trail` sub-command and every one of its flags says what it is for in --help."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from trail.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions
                 if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_subcommand_has_help() -> None:
    (action,) = [a for a in build_parser()._actions
                 if isinstance(a, argparse._SubParsersAction)]
    described = {c.dest: (c.help or "").strip() for c in action._choices_actions}
    assert set(described) == set(action.choices)
    assert all(described.values()), [k for k, v in described.items() if not v]


def test_every_flag_of_every_subcommand_has_help() -> None:
    missing = []
    commands = subcommands()
    assert {"collect", "train-probe", "eval-probe", "demo", "simulate", "tune-c", "theory",
            "bench"} <= set(commands)
    for name, parser in commands.items():
        flags = [a for a in parser._actions if a.option_strings]
        assert flags, name
        for a in flags:
            if not (a.help or "").strip() or a.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(a.option_strings)}")
        parser.format_help()  # a stray % in a help string would only fail here
    assert not missing, f"flags without help: {missing}"


@pytest.mark.parametrize("argv, words", [
    (["simulate", "--trace", "azure-conv", "--loads", "0.5,2", "--limit", "50"], "--loads"),
    (["simulate", "--trace", "azure-conv", "--load", "0", "--limit", "50"], "--load"),
    (["tune-c", "--load", "3"], "--load"),
    (["bench", "--device", "cuda:0"], "no CUDA"),
    (["simulate", "--trace", "azure-conv", "--limit", "50", "--out", "FILE"], "not a directory"),
    (["theory", "--out", "FILE"], "not a directory"),
])
def test_bad_flags_fail_early_with_one_line(argv: list[str], words: str, tmp_path: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before any work starts; one line on stderr, exit status 1, no traceback."""
    import time

    from trail.cli import main

    f = tmp_path / "a-file"
    f.write_text("x")
    argv = [str(f) if a == "FILE" else a for a in argv]
    t = time.perf_counter()
    assert main(argv) == 1
    assert time.perf_counter() - t < 5  # nothing was simulated first
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and err.count("\n") == 1

