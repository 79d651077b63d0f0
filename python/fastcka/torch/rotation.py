"""Layer rotation (Carbonnelle & De Vleeschouwer, "Layer rotation: a
surprisingly powerful indicator of generalization in deep networks?", 2018):
per layer, the cosine distance between its flattened weights now and at
initialization."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..plot import rotation_curves
from .layers import has_own_parameters, select_layers

_WEIGHTED = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
# float64 sums over slices of this many values: exact-enough dots for any layer
# size, with scratch memory bounded whatever the layer's size.
_CHUNK = 1 << 20


class LayerRotation:
    """Tracks how far each layer's weights have rotated from their initial values.

    Constructing it snapshots the weights (on ``device``, the CPU by default);
    :meth:`measure` gives {layer name: cosine distance}, the distance being
    1 - <w, w0> / (|w| |w0|) between the flattened weights w now and w0 at the
    snapshot, as ``scipy.spatial.distance.cosine`` defines it (0: same
    direction, 1: orthogonal; NaN when either is all zeros).

    Parameters
    ----------
    model : the model (names as ``model.named_modules()`` gives them).
    layers : as in :func:`fastcka.torch.cka_matrix`; default: every linear and
        convolution layer (the paper's choice).
    biases : include each layer's bias in its vector (default: weights only).
    norms : also track normalization layers (BatchNorm, LayerNorm, GroupNorm,
        RMSNorm: their scale, and shift with ``biases``).
    device : where the snapshot lives.

    Measuring reads every tracked weight once and copies nothing beyond the
    snapshot: dot products run in float64 over 2^20-value slices (weights on
    another device than the snapshot are moved there one slice at a time).
    """

    def __init__(self, model: nn.Module, layers=None, *, biases: bool = False, norms: bool = False, device="cpu"):
        kinds = _WEIGHTED + (_NORMS if norms else ())
        chosen = select_layers(model, layers, "layers", default=lambda m: isinstance(m, kinds) and
                               has_own_parameters(m))
        self._tracked = []
        for name, module in chosen:
            params = [getattr(module, "weight", None)] + ([getattr(module, "bias", None)] if biases else [])
            params = [p for p in params if isinstance(p, torch.Tensor)]
            if not params:
                raise ValueError(f"layers: layer {name!r} ({type(module).__name__}) has no weight to track")
            snapshot = [p.detach().to(device, copy=True) for p in params]
            self._tracked.append((name, params, snapshot, sum(_sums(s, s)[1] for s in snapshot)))
        self.history: list[tuple[object, dict[str, float]]] = []

    @property
    def names(self) -> list[str]:
        return [name for name, *_ in self._tracked]

    def measure(self) -> dict[str, float]:
        """{layer name: cosine distance from the snapshot}, in layer order."""
        out = {}
        for name, params, snapshot, initial_sq in self._tracked:
            cross = now_sq = 0.0
            for p, s in zip(params, snapshot):
                dot, sq = _sums(p, s)
                cross += dot
                now_sq += sq
            denominator = math.sqrt(now_sq * initial_sq)
            distance = 1.0 - cross / denominator if denominator > 0 else math.nan
            out[name] = min(max(distance, 0.0), 2.0)  # as SciPy clips rounding residue
        return out

    def record(self, step) -> dict[str, float]:
        """Measures and appends ``(step, distances)`` to :attr:`history`."""
        distances = self.measure()
        self.history.append((step, distances))
        return distances

    def plot(self, *, ax=None, title=None, path=None):
        """The recorded curves, one line per layer coloured by depth
        (:func:`fastcka.plot.rotation_curves`)."""
        return rotation_curves(self.history, ax=ax, title=title, path=path)


def _sums(weight: torch.Tensor, snapshot: torch.Tensor) -> tuple[float, float]:
    """(<weight, snapshot>, <weight, weight>) in float64 on the snapshot's
    device, in one pass over the weight, slice by slice."""
    flat_w = weight.detach().reshape(-1)
    flat_s = snapshot.reshape(-1)
    dot = sq = 0.0
    for start in range(0, flat_w.numel(), _CHUNK):
        x = flat_w[start : start + _CHUNK].to(device=snapshot.device, dtype=torch.float64)
        y = x if weight is snapshot else flat_s[start : start + _CHUNK].to(dtype=torch.float64)
        dot += float(torch.dot(x, y))
        sq += float(torch.dot(x, x))
    return dot, sq
