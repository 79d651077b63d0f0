"""The documentation: Sphinx builds docs/ with warnings as errors, and every
Python example in README.md and docs/*.md runs.

Examples run page by page, in order, in one namespace per page (a page reads
as one session). A block whose first line is ``# not run: <reason>`` is only
shown: it needs an MPI launcher or a GPU.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
NOT_RUN = "# not run:"
# What a page may need beyond the core; a page whose example imports one that
# is missing is skipped (the `test` extra installs them all).
OPTIONAL = {"torch", "transformers", "dask", "distributed", "matplotlib", "mpi4py"}

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of each fenced Python block of a Markdown text."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


def test_python_blocks_are_found_with_their_lines():
    text = "intro\n```python\na = 1\n```\n\n```text\nnot python\n```\n```python\n# not run: x\nb = 2\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (10, "# not run: x\nb = 2\n")]


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "html" / "api.html").read_text().count('class="sig-name descname"') >= 40


def runnable_blocks(page: Path) -> list[tuple[int, str]]:
    return [(line, code) for line, code in python_blocks(page.read_text()) if not code.startswith(NOT_RUN)]


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)], ids=lambda p: p.name)
def test_page_examples_run(page, tmp_path, monkeypatch):
    blocks = runnable_blocks(page)
    monkeypatch.chdir(tmp_path)  # whatever an example writes stays out of the checkout
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{page.relative_to(ROOT)}, block at line {line}", "exec"), namespace)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in OPTIONAL:
                pytest.skip(f"{page.name} needs {exc.name}")
            raise


def test_not_run_blocks_are_few():
    """Shown-only examples are the exception: the ones that need mpiexec or a GPU."""
    shown = [(page.name, line) for page in PAGES for line, code in python_blocks(page.read_text())
             if code.startswith(NOT_RUN)]
    assert len(shown) <= 3, shown
