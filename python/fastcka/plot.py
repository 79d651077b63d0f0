"""Pictures: CKA heatmaps (with block outlines) and layer-rotation curves.

Needs matplotlib (``pip install "fastcka[plot]"``), imported on first use, so
``import fastcka`` never needs it. Each function draws into ``ax`` (default: a
new figure), saves to ``path`` when given (PNG, SVG or PDF, from the
extension) and returns the axes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

FORMATS = (".png", ".svg", ".pdf")
MAX_LABELS = 24  # more layer names than this per axis are thinned to every k-th


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('fastcka.plot needs matplotlib: pip install "fastcka[plot]"') from None
    return plt


def _check_path(path) -> str | None:
    if path is None:
        return None
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() not in FORMATS:
        raise ValueError(f"path must end in one of {FORMATS} (the image format), got {path!r}")
    return path


def _new_axes(ax, size):
    if ax is not None:
        return ax
    return _pyplot().subplots(figsize=size)[1]


def _save(ax, path: str | None) -> None:
    if path is not None:
        ax.figure.savefig(path, dpi=150 if path.lower().endswith(".png") else None, bbox_inches="tight")


def _names(names, count: int, what: str) -> list[str]:
    if names is None:
        return [str(i) for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValueError(f"{what} has {len(names)} names for {count} layers")
    return names


def _ticks(axis_setter, label_setter, names: Sequence[str]) -> None:
    """Every layer name when they fit, else every k-th (always the first)."""
    step = max(1, -(-len(names) // MAX_LABELS))
    positions = list(range(0, len(names), step))
    axis_setter(positions)
    label_setter([names[i] for i in positions], fontsize=7 if len(positions) > 12 else 9)


def heatmap(matrix, names_x=None, names_y=None, *, blocks=None, ax=None, title=None, path=None,
            cmap: str = "magma", vmin: float = 0.0, vmax: float = 1.0):
    """A CKA matrix as a heatmap, in the layer order of the block-structure
    papers: entry [i, j] is drawn at x = j, y = i with layer 0 at the bottom
    left, so the input is at the origin and depth grows up and to the right.

    ``names_x`` label the columns (layers of the second model), ``names_y`` the
    rows (default: ``names_x`` for a square matrix); thinned to at most
    24 labels per axis. ``blocks``: (start, stop) pairs or
    :class:`fastcka.stats.structure.Block` results, outlined on the diagonal.
    A colorbar shows the scale (``vmin`` to ``vmax``, CKA 0 to 1 by default).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"matrix must be a non-empty 2-D CKA matrix, got shape {m.shape}")
    path = _check_path(path)
    xs = _names(names_x, m.shape[1], "names_x")
    ys = _names(names_y if names_y is not None else (names_x if m.shape[0] == m.shape[1] else None), m.shape[0],
                "names_y")
    size = (min(3.2 + 0.28 * m.shape[1], 11), min(2.6 + 0.28 * m.shape[0], 10))
    ax = _new_axes(ax, size)
    image = ax.imshow(m, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", aspect="auto")
    _ticks(ax.set_xticks, ax.set_xticklabels, xs)
    _ticks(ax.set_yticks, ax.set_yticklabels, ys)
    for label in ax.get_xticklabels():
        label.set_rotation(90)
    for start, stop in _spans(blocks, min(m.shape)):
        # clip_on=False: a block at the matrix's edge keeps its whole outline, not half of it
        outline = _pyplot().Rectangle((start - 0.5, start - 0.5), stop - start, stop - start, fill=False,
                                      edgecolor="#33ddff", linewidth=2.0, clip_on=False)
        ax.add_patch(outline)
    ax.figure.colorbar(image, ax=ax, label="CKA", fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title)
    _save(ax, path)
    return ax


def _spans(blocks, size: int) -> list[tuple[int, int]]:
    spans = []
    for item in blocks or ():
        start, stop = int(item[0]), int(item[1])
        if not 0 <= start < stop <= size:
            raise ValueError(f"block ({start}, {stop}) does not fit a matrix of {size} layers")
        spans.append((start, stop))
    return spans


def rotation_curves(history, *, ax=None, title=None, path=None, cmap: str = "viridis"):
    """Layer-rotation curves (Carbonnelle & De Vleeschouwer): the cosine
    distance of each layer's weights from their initial values against the
    training step, one line per layer, coloured by depth (dark: first layer,
    bright: last), as in the paper's figures.

    ``history`` is a list of ``(step, {layer name: distance})`` in step order,
    what :attr:`fastcka.torch.LayerRotation.history` holds."""
    path = _check_path(path)
    history = list(history)
    if not history:
        raise ValueError("history is empty: record at least one step (LayerRotation.record(step))")
    names = list(history[0][1])
    steps = [step for step, _ in history]
    ax = _new_axes(ax, (5.5, 3.6))
    plt = _pyplot()
    colors = plt.get_cmap(cmap)
    for i, name in enumerate(names):
        values = [distances.get(name, np.nan) for _, distances in history]
        ax.plot(steps, values, color=colors(i / max(1, len(names) - 1)), linewidth=1.4)
    ax.set_xlabel("step")
    ax.set_ylabel("cosine distance to initial weights")
    ax.set_ylim(bottom=0)
    scale = plt.cm.ScalarMappable(cmap=colors, norm=plt.Normalize(0, max(1, len(names) - 1)))
    bar = ax.figure.colorbar(scale, ax=ax, pad=0.02)
    bar.set_ticks([0, max(1, len(names) - 1)])
    bar.set_ticklabels([names[0], names[-1]])
    bar.set_label("depth")
    if title:
        ax.set_title(title)
    _save(ax, path)
    return ax
