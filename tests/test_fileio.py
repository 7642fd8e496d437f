"""Saved files get the permissions of an ordinary open(), and are replaced atomically."""

from __future__ import annotations

import os
import pathlib
import stat
from typing import Iterator

import pytest
from trail import Probe
from trail.fileio import atomic_path, ordinary_mode, process_umask

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plain_file_mode(folder: pathlib.Path) -> int:
    with open(folder / "plain.txt", "w") as f:
        f.write("x")
    return mode(folder / "plain.txt")


def test_umask_is_read_without_changing_it(umask: int) -> None:
    assert process_umask() == umask
    assert os.umask(umask) == umask  # still in place
    assert ordinary_mode() == 0o666 & ~umask and ordinary_mode(True) == 0o777 & ~umask


def test_probe_checkpoint_has_the_mode_of_an_ordinary_file(tmp_path: pathlib.Path,
                                                          umask: int) -> None:
    out = Probe(16, hidden_dim=8).save(tmp_path / "probe")
    expected = plain_file_mode(tmp_path)
    assert expected == 0o666 & ~umask
    assert mode(out / "probe.safetensors") == expected  # safetensors alone writes 0600
    assert mode(out / "probe.json") == expected
    assert sorted(p.name for p in out.iterdir()) == ["probe.json", "probe.safetensors"]


def test_atomic_path_keeps_the_old_file_on_error(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "f.bin"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]
