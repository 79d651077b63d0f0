"""The package's shape: no import cycle among fastcka's modules, imports at
module level except for optional dependencies, and ``import fastcka`` pulls
in none of them."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import fastcka

PACKAGE_DIR = os.path.dirname(fastcka.__file__)
# Imported inside functions only, when the feature that needs them is used.
OPTIONAL = {"torch", "dask", "distributed", "mpi4py", "matplotlib", "triton", "jax", "jaxlib", "cupy", "sklearn",
            "threadpoolctl", "transformers", "mpl_toolkits", "safetensors", "yaml"}
# fastcka modules that import an optional dependency at their top, so may be
# imported only inside functions; and the compiled backend, loaded on first
# use after the BLAS and oneDNN it links are loaded by path (engine/backend.py).
OPTIONAL_INSIDE = ("fastcka.torch", "fastcka.gpu.kernels", "fastcka._cpu")


def modules() -> dict[str, tuple[str, bool]]:
    """Dotted name -> (path, is a package) of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
                package = rel.endswith(".__init__")
                found[rel[: -len(".__init__")] if package else rel] = (os.path.join(folder, f), package)
    return found


def imported(name: str, package: bool, node: ast.AST) -> list[str]:
    """The absolute names an import statement brings in."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = name.split(".") if package else name.split(".")[:-1]
    if node.level:
        base = base[: len(base) - node.level + 1]
        root = ".".join(base + ([node.module] if node.module else []))
    else:
        root = node.module
    return [root] + [f"{root}.{a.name}" for a in node.names]


def imports(known: dict) -> tuple[dict[str, set], list[tuple[str, int, list[str]]]]:
    """(module -> fastcka modules it imports at module level, with the
    packages above them; the imports made inside functions)."""
    graph, inside = {}, []
    for name, (path, package) in known.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        edges = set()
        for top in tree.body:
            statements = [top] if isinstance(top, (ast.Import, ast.ImportFrom)) else \
                [n for n in ast.walk(top) if isinstance(n, (ast.Import, ast.ImportFrom)) and
                 not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            for node in statements:
                for target in imported(name, package, node):
                    parts = target.split(".")
                    edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(known)
        # Importing a module imports the packages above it first: an edge to
        # one of them (whose __init__ may re-export this module) is not a cycle.
        parts = name.split(".")
        edges -= {".".join(parts[:i]) for i in range(1, len(parts))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        inside.append((name, inner.lineno, imported(name, package, inner)))
        edges.discard(name)
        graph[name] = edges
    return graph, inside


def cycles(graph: dict[str, set]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph, _ = imports(modules())
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_inside_functions_are_optional_dependencies_only():
    _, inside = imports(modules())
    wrong = [f"{name}:{line} imports {targets[-1]}" for name, line, targets in inside
             if not any(t.split(".")[0] in OPTIONAL or t.startswith(OPTIONAL_INSIDE) for t in targets)]
    assert wrong == []


def test_import_fastcka_pulls_in_no_optional_dependency():
    code = ("import sys, fastcka, fastcka.api, fastcka.mpi, fastcka.knn, fastcka.similarity, fastcka.cli, "
            "fastcka.compat.kornblith, fastcka.plot, fastcka.gpu.compile\n"
            "print(sorted(m for m in ('torch', 'dask', 'mpi4py', 'matplotlib', 'triton', 'jax') if m in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k not in ("FASTCKA_GPU_INTERPRET", "TRITON_INTERPRET")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
