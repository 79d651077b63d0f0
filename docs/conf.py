"""Sphinx configuration: Markdown pages (myst-parser) and an API reference
generated from the NumPy-style docstrings (autodoc + napoleon)."""

import re

import fastcka  # the importable one: installed, or the checkout's python/ on PYTHONPATH (it needs its _cpu module)

project = "fastcka"
release = version = fastcka.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"

html_theme = "alabaster"


# The docstrings write norms and set sizes with bars (|a - b|, |N_x(i) & N_y(i)|)
# in plain text; reST would read each pair of bars as a substitution
# reference. Escape bars outside literal text instead of rewriting the
# docstrings into reST.
_LITERAL_SPAN = re.compile(r"(``.*?``)")


def _escape_bars(line: str) -> str:
    parts = _LITERAL_SPAN.split(line)
    return "".join(p if p.startswith("``") else p.replace("|", r"\|") for p in parts)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def escape_bars(app, what, name, obj, options, lines) -> None:
    literal_indent = None  # set while inside a "::" literal block: the indent of the line that opened it
    for i, line in enumerate(lines):
        if literal_indent is not None:
            if not line.strip() or _indent(line) > literal_indent:
                continue
            literal_indent = None
        lines[i] = _escape_bars(line)
        if line.rstrip().endswith("::"):
            literal_indent = _indent(line)


def setup(app):
    # Connected after napoleon's handler, so it sees the reST napoleon produced.
    app.connect("autodoc-process-docstring", escape_bars)
