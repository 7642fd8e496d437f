"""Writing files atomically with the permissions an ordinary `open()` would give them.

safetensors (from 0.8) writes through a temporary file of its own (Rust's `tempfile`), and
`tempfile.mkstemp` / `mkdtemp` do the same in Python: those are created 0600 / 0700 whatever
the umask, and a rename keeps that mode. A checkpoint then ends up readable by its owner
only while the JSON beside it is 0644. Every writer of files that outlive the process goes
through `atomic_path` (or `set_ordinary_mode` for a folder renamed into place), so all of
them follow the process umask.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Iterator


def process_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way is to set one and restore the old at once; the one set is strict,
    # so a file another thread creates in between is never more open than intended.
    old = os.umask(0o077)
    os.umask(old)
    return old


def ordinary_mode(directory: bool = False) -> int:
    """The mode `open()` (or `mkdir()`, with `directory`) gives a new file under the umask."""
    return (0o777 if directory else 0o666) & ~process_umask()


def set_ordinary_mode(path: str | os.PathLike[str]) -> None:
    """chmod `path` to the ordinary mode; a folder recursively, with everything in it."""
    p = pathlib.Path(path)
    if p.is_dir():
        os.chmod(p, ordinary_mode(directory=True))
        for child in p.rglob("*"):
            if not child.is_symlink():
                os.chmod(child, ordinary_mode(directory=child.is_dir()))
    else:
        os.chmod(p, ordinary_mode())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside `path` to write a file to; on success give it the
    ordinary mode and move it over `path` in one step, so readers see the old file or the
    new one, never a half-written one. On an error the temporary file is removed."""
    final = pathlib.Path(path)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        set_ordinary_mode(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
