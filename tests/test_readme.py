"""The README's Python examples must run as written."""

from __future__ import annotations

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index: int, tmp_path: pathlib.Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if "from vllm import" in BLOCKS[index]:
        pytest.importorskip("vllm", reason="the vLLM example runs where vLLM is installed "
                            "(CI's vLLM job)")
    monkeypatch.chdir(tmp_path)  # examples may write files (e.g. a report into ./out)
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


def test_readme_has_examples() -> None:
    assert BLOCKS


def test_readme_commands_are_what_ci_runs() -> None:
    """The quick start's two commands: CI installs the same way and runs the same tests."""
    root = pathlib.Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    block = readme.split("## Quick start: two commands", 1)[1].split("```bash\n", 1)[1]
    first, second = block.split("```", 1)[0].strip().splitlines()
    assert first.endswith(" && trail demo") and second == "python -m pytest -q"
    install = first.split(". .venv/bin/activate && ", 1)[1].removesuffix(" && trail demo")
    # PyTorch's CPU build: a plain `torch==...` from PyPI is the CUDA build on Linux.
    assert install.startswith("pip install torch==") and "/whl/cpu" in install.split("&&")[0]
    ci = (root / ".ci" / "run").read_text()
    assert f"\n{install}\n" in ci and "\npython -m pytest -q\n" in ci
