"""The package's layers: every import inside trail runs from a higher layer to a lower one.

A newcomer reads the package bottom up; an import that runs back up (the engine importing
the pipeline that drives it, a model importing the demo that serves it) makes two modules
one tangle. Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "python" / "trail"

# Lowest first. A unit may import only units of a lower layer (and itself).
LAYERS: dict[str, int] = {
    "checks": 0, "metrics": 0, "policies": 0, "fileio": 0, "progress": 0, "cpu": 0, "provenance": 0, "kernels": 0,
    "ops": 1, "sched_ref": 1,
    "probe": 2,          # the runtime predictor
    "engine": 3,         # serves with it
    "models": 4, "sim": 4,
    "training": 5,       # drives the engine offline
    "demo": 6, "microbench": 6,
    "integrations": 7, "serve": 7,
    "cli": 8,
}


def unit(module: str) -> str:
    """The top-level unit of a trail module name ('trail.probe.bins' -> 'probe')."""
    return module.split(".")[1]


def import_nodes(path: pathlib.Path) -> list[ast.Import | ast.ImportFrom]:
    """Every absolute import statement in the file, at any depth."""
    return [n for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Import) or (isinstance(n, ast.ImportFrom) and n.level == 0)]


def imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a trail module in the file."""
    found = []
    for node in import_nodes(path):
        if isinstance(node, ast.ImportFrom):
            names = [node.module] if node.module != "trail" else \
                [f"trail.{a.name}" for a in node.names]
        else:
            names = [a.name for a in node.names]
        found += [(node.lineno, n) for n in names if n and n.startswith("trail.")]
    return found


def test_every_unit_has_a_layer() -> None:
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert units == set(LAYERS), "give a new module a layer in LAYERS"


def test_imports_run_downward() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        if rel.parts[1:] == ("__init__.py",):
            continue  # the package root re-exports the public API
        here = rel.parts[1].removesuffix(".py")
        for line, module in imports(path):
            there = unit(module)
            if there != here and LAYERS[there] >= LAYERS[here]:
                upward.append(f"{rel}:{line} imports {module} ({here} -> {there})")
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("root", ["python/trail", "bench", "tests"])
def test_every_trail_import_resolves(root: str) -> None:
    """Lazy imports too: a module moved without its callers updated fails here, not in use."""
    broken = []
    for path in sorted((PACKAGE.parent.parent / root).rglob("*.py")):
        for node in import_nodes(path):
            if isinstance(node, ast.ImportFrom):
                module, names = node.module or "", [a.name for a in node.names]
            else:
                module, names = "", [a.name for a in node.names]
            targets = [(module, n) for n in names] if module else [(n, None) for n in names]
            for mod, name in targets:
                if not (mod == "trail" or mod.startswith("trail.")):
                    continue
                try:
                    obj = importlib.import_module(mod)
                except ImportError as e:  # an optional dependency of that module
                    if (e.name or "").split(".")[0] in ("trail",):
                        broken.append(f"{path}:{node.lineno} {mod}: {e}")
                    continue
                if name is not None and name != "*" and not hasattr(obj, name):
                    try:
                        importlib.import_module(f"{mod}.{name}")
                    except ImportError:
                        broken.append(f"{path}:{node.lineno} {mod} has no {name}")
    assert not broken, "\n".join(broken)
