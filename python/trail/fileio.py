"""Writing files atomically with the permissions an ordinary `open()` would give them.

safetensors (from 0.8) writes through a temporary file of its own (Rust's `tempfile`), and
`tempfile.mkstemp` / `mkdtemp` do the same in Python: those are created 0600 / 0700 whatever
the umask, and a rename keeps that mode. A checkpoint then ends up readable by its owner
only while the JSON beside it is 0644. Every writer of files that outlive the process goes
through `atomic_path` (or `set_ordinary_mode` for a folder renamed into place), so all of
them follow the process umask.

`cache_root` is where trail caches what it builds once (demo models, converted models).

`read_json_object` and `json_field` read the JSON files trail writes (checkpoint configs,
manifests, reports) back with errors that name the file and the field: ValueError, never an
AttributeError or a bare KeyError from a file that is truncated or was edited by hand.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
from typing import Any, Iterator


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


def read_json_object(path: str | os.PathLike[str], what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in `path`; ValueError naming the file if it is not valid UTF-8 JSON or
    not an object (FileNotFoundError if it does not exist)."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a directory, expected a {what}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not a {what} (not UTF-8 text: {exc.reason} at byte "
                         f"{exc.start})") from None
    if not text.strip():
        raise ValueError(f"{p}: empty file, expected a {what}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not a {what}: invalid or truncated JSON ({exc.msg} at line "
                         f"{exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: not a {what}: expected a JSON object, got "
                         f"{type(data).__name__}")
    return data


_KINDS = {"int": "an integer", "number": "a finite number", "str": "a string",
          "bool": "true or false", "list": "a list", "dict": "an object",
          "ints": "a list of integers", "numbers": "a list of finite numbers",
          "strs": "a list of strings"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


_CHECK = {"int": _is_int, "number": _is_number, "str": lambda v: isinstance(v, str),
          "bool": lambda v: isinstance(v, bool), "list": lambda v: isinstance(v, list),
          "dict": lambda v: isinstance(v, dict),
          "ints": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
          "numbers": lambda v: isinstance(v, list) and all(_is_number(x) for x in v),
          "strs": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)}


def json_field(data: dict[str, Any], key: str, kind: str, source: str | os.PathLike[str],
               minimum: float | None = None, default: Any = ...) -> Any:
    """`data[key]`, checked to be of `kind` (int, number, str, bool, list, dict, ints,
    numbers, strs) and, for numbers, >= `minimum`; ValueError naming `source` and the field
    when it is missing (and no `default` is given) or bad."""
    if key not in data:
        if default is not ...:
            return default
        raise ValueError(f"{source}: missing field {key!r} ({_KINDS[kind]})")
    value = data[key]
    if not _CHECK[kind](value):
        raise ValueError(f"{source}: field {key!r} must be {_KINDS[kind]}, got {value!r:.80}")
    if minimum is not None:
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v < minimum]
        if bad:
            raise ValueError(f"{source}: field {key!r} must be >= {minimum:g}, got {value!r:.80}")
    return value


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Where trail caches models: `cache_dir`, else $TRAIL_CACHE, else ~/.cache/trail."""
    if cache_dir is not None:
        return pathlib.Path(cache_dir)
    env = os.environ.get("TRAIL_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "trail"
