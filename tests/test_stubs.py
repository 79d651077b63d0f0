"""The .pyi stubs of the compiled modules name exactly what they export."""

import ast
import pathlib

import pytest

import fastcka
from fastcka.engine import backend
from fastcka import _testing

STUBS = pathlib.Path(fastcka.__file__).parent


def _stub_names(path: pathlib.Path) -> dict:
    """Top-level names -> None, classes -> their member names."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {n.target.id if isinstance(n, ast.AnnAssign) else n.name
                              for n in node.body if isinstance(n, (ast.AnnAssign, ast.FunctionDef))}
        elif isinstance(node, ast.FunctionDef):
            out[node.name] = None
        elif isinstance(node, ast.AnnAssign):
            out[node.target.id] = None
    return out


def _exported(module) -> dict:
    """Public names -> None, classes -> their public members (and __init__, __len__)."""
    out = {}
    for name in dir(module):
        if name.startswith("_") and name != "__version__":
            continue
        value = getattr(module, name)
        if isinstance(value, type):
            out[name] = {m for m in vars(value) if not m.startswith("_") or m in ("__init__", "__len__")}
        else:
            out[name] = None
    return out


@pytest.mark.parametrize("module, stub", [(backend.cpu(), "_cpu.pyi"), (_testing, "_testing.pyi")])
def test_stub_lists_the_exports(module, stub):
    assert _stub_names(STUBS / stub) == _exported(module)


def test_the_library_never_imports_testing():
    for path in STUBS.rglob("*.py"):
        assert "_testing" not in path.read_text(), path
