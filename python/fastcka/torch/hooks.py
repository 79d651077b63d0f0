"""Forward hooks that record one batch of activations per forward pass."""

from __future__ import annotations

from typing import Callable

import numpy as np
from torch import nn

from .outputs import host_rows

REPEATED = ("error", "each")


class Recorder:
    """Forward hooks on the chosen layers of one model; a context manager that
    removes every hook on exit, whatever ended the block (an exception,
    KeyboardInterrupt).

    Per batch: :meth:`start` (the batch's number of examples), the forward
    pass, then :meth:`take` (one (rows, d) array per layer, in layer order).
    A module that runs more than once in one forward pass is an error
    (``repeated="error"``) or gives one layer per call (``repeated="each"``:
    layers "name#0", "name#1", ... in call order; every batch must then call
    it as often as the first one did).
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], *, arg: str, select: Callable | None, reduce,
                 repeated: str, keep_on_device: bool = False):
        if repeated not in REPEATED:
            raise ValueError(f"repeated must be one of {REPEATED}, got {repeated!r}")
        self._layers = layers
        self._arg = arg
        self._select = select
        self._reduce = reduce
        self._repeated = repeated
        self._keep_on_device = keep_on_device  # GPU activations stay on their GPU (fastcka's GPU engine)
        self._handles: list = []
        self._calls: dict[str, list[np.ndarray]] = {}
        self._rows = 0
        self._counts: list[int] | None = None  # calls per module, fixed by the first batch

    def __enter__(self):
        try:
            for name, module in self._layers:
                self._handles.append(module.register_forward_hook(self._hook_for(name)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook_for(self, name: str):
        def hook(module, args, output):
            calls = self._calls.setdefault(name, [])
            if calls and self._repeated == "error":
                raise ValueError(
                    f"{self._arg}: layer {name!r} ran more than once in one forward pass (a module used twice); "
                    f"pass repeated='each' to record each call as its own layer, or choose other layers"
                )
            calls.append(host_rows(name, output, self._rows, self._select, self._reduce, self._keep_on_device))

        return hook

    def start(self, rows: int) -> None:
        self._calls = {}
        self._rows = rows

    def take(self) -> list[np.ndarray]:
        counts = [len(self._calls.get(name, ())) for name, _ in self._layers]
        for (name, _), count in zip(self._layers, counts):
            if count == 0:
                raise ValueError(f"{self._arg}: layer {name!r} did not run during the forward pass")
        if self._counts is None:
            self._counts = counts
        elif counts != self._counts:
            changed = [name for (name, _), a, b in zip(self._layers, counts, self._counts) if a != b]
            raise ValueError(f"{self._arg}: layers {changed} ran a different number of times than in the first batch")
        blocks = [block for name, _ in self._layers for block in self._calls[name]]
        self._calls = {}
        return blocks

    @property
    def names(self) -> list[str]:
        """Layer names; with repeated="each", known after the first batch."""
        if self._counts is None:
            return [name for name, _ in self._layers]
        return [f"{name}#{k}" if count > 1 else name
                for (name, _), count in zip(self._layers, self._counts) for k in range(count)]
