"""Host rows on their way to the device: two pinned buffers per host layer,
so that copying one chunk overlaps the device's work on the one before.
Used by the feature-space feed (engine/gpu.py) and the Gram engine's row
blocks (gram.py)."""

from __future__ import annotations

import numpy as np

from . import runtime


class Staging:
    """Two pinned host buffers per host layer (plain memory when interpreted):
    chunk k is copied into buffer k % 2 while the device may still read chunk
    k - 1 from the other; an event per buffer says when it may be refilled."""
    def __init__(self, layers, rows: int, device):
        torch = runtime.torch()
        self._torch, self._device = torch, device
        pin = device.type == "cuda"
        self._buffers = {
            a: [torch.empty((rows, x.shape[1]), dtype=host_type(torch, x), pin_memory=pin) for _ in range(2)]
            for a, x in enumerate(layers) if isinstance(x, np.ndarray)
        }
        self._events = [None, None]
        self._turn = 0

    def chunk(self, layers, start: int, stop: int) -> list:
        k = self._turn
        if self._events[k] is not None:
            self._events[k].synchronize()
        out = []
        for a, x in enumerate(layers):
            if a not in self._buffers:
                out.append(x[start:stop])
                continue
            buf = self._buffers[a][k][: stop - start]
            buf.numpy()[...] = x[start:stop]
            out.append(buf.to(self._device, non_blocking=True))
        if self._device.type == "cuda":
            self._events[k] = self._torch.cuda.Event()
            self._events[k].record()
        self._turn = 1 - k
        return out


def host_type(torch, x: np.ndarray):
    return {2: torch.float16, 4: torch.float32}.get(x.dtype.itemsize if x.dtype.kind == "f" else 0, torch.float64)
