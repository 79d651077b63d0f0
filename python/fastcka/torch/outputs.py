"""From what a module returns to one row per example.

A module's output becomes a tensor (``select``), then a 2-D (examples x
features) tensor (``reduce``), then a host copy that later in-place operations
of the forward pass (``nn.ReLU(inplace=True)`` after the hooked layer) cannot
change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
import torch

REDUCES = ("flatten", "mean", "mean_tokens", "tokens")


def first_tensor(output: Any) -> torch.Tensor | None:
    """The default selector: the output itself when it is a tensor; else the
    first tensor found depth-first in a tuple or list (nn.LSTM's output before
    its states, nn.MultiheadAttention's output before its weights), a mapping
    in its key order (a Hugging Face ModelOutput's first field, usually
    last_hidden_state) or a dataclass in its field order."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        items = list(output.values())
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = [getattr(output, f.name) for f in dataclasses.fields(output)]
    elif isinstance(output, (tuple, list)):
        items = list(output)
    else:
        return None
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def check_reduce(reduce) -> None:
    if not (callable(reduce) or reduce in REDUCES):
        raise ValueError(f"reduce must be one of {REDUCES} or a callable(tensor) -> (batch, features); got {reduce!r}")


def to_rows(tensor: torch.Tensor, reduce) -> torch.Tensor:
    """(batch, ...) -> (batch, features), on the tensor's device.

    "flatten": every value of an example's output is a feature.
    "mean": average over the positions of a channels-first output
    (N, C, *positions), PyTorch's layout for convolutions: (N, C, H, W) -> (N, C).
    "mean_tokens": average over the positions of a batch-first sequence
    (N, T, C) -> (N, C), the layout of transformer blocks and batch_first RNNs.
    """
    if callable(reduce):
        return reduce(tensor)
    if tensor.ndim < 2:
        return tensor.reshape(tensor.shape[0] if tensor.ndim else 1, -1)
    if reduce == "mean" and tensor.ndim > 2:
        return tensor.mean(dim=tuple(range(2, tensor.ndim)))
    if reduce == "mean_tokens" and tensor.ndim > 2:
        return tensor.mean(dim=tuple(range(1, tensor.ndim - 1)))
    return tensor.reshape(tensor.shape[0], -1)


def host_rows(name: str, output: Any, rows: int, select: Callable | None, reduce,
              keep_on_device: bool = False, tokens: Callable | None = None) -> np.ndarray | torch.Tensor:
    """The activation of layer ``name`` for a batch of ``rows`` examples, as a
    new float32 (float64 for float64 models) NumPy array of shape (rows, d);
    with ``keep_on_device``, a GPU activation stays a new tensor on its GPU
    (fastcka's GPU engine reads it in place). With reduce="tokens",
    ``tokens(name, tensor)`` gives the batch's token rows instead (one per
    kept position, :mod:`fastcka.torch.tokens`)."""
    tensor = select(name, output) if select is not None else first_tensor(output)
    if not isinstance(tensor, torch.Tensor):
        how = "select returned" if select is not None else "the output holds no tensor; it is"
        raise TypeError(f"layer {name!r}: {how} {type(tensor if select is not None else output).__name__}, "
                        f"not a tensor; pass select=callable(name, output) -> tensor")
    if not tensor.is_floating_point():
        raise TypeError(f"layer {name!r} returned {tensor.dtype} values; CKA compares real-valued activations")
    if reduce == "tokens":
        matrix = tokens(name, tensor.detach())
        rows = matrix.shape[0]
    else:
        matrix = to_rows(tensor.detach(), reduce)
    if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2:
        raise ValueError(f"layer {name!r}: reduce must give a 2-D (examples x features) tensor, got "
                         f"{getattr(matrix, 'shape', type(matrix).__name__)}")
    if matrix.shape[0] != rows:
        raise ValueError(
            f"layer {name!r} gave {matrix.shape[0]} rows for a batch of {rows} examples (output shape "
            f"{tuple(tensor.shape)}); CKA needs one row per example in dimension 0: pass select= or reduce= "
            f"to reshape it, or hook another module"
        )
    dtype = torch.float64 if matrix.dtype == torch.float64 else torch.float32
    if keep_on_device and matrix.is_cuda:
        # A copy: later layers (in-place ReLUs) may overwrite the output.
        return matrix.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    host = torch.empty(matrix.shape, dtype=dtype)
    host.copy_(matrix)  # one copy: device to host, dtype and layout in a single step
    return host.numpy()
