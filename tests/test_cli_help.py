"""Every `trail` sub-command and every one of its flags says what it is for in --help."""

from __future__ import annotations

import argparse

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
