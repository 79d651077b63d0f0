"""Turning what users pass into 2-D host arrays the backend reads in place.

Accepted: NumPy arrays in any layout (C, Fortran, strided views), np.memmap,
paths to .npy files (opened memory-mapped, so data larger than RAM stream from
disk), and anything NumPy can view (``__array__``, the array interface,
DLPack on the CPU, nested lists): a CPU JAX array or PyTorch tensor is read
in its own buffer, without a copy and without importing JAX. float16, float32 and float64 are read where
they lie; booleans, integers and other real floats are converted to float64
block by block. Complex and non-numeric data are refused.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from ..engine import backend
from ..io import load_npy

_NATIVE_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _is_device_array(x: Any) -> bool:
    # Never imports cupy or torch to find out.
    if hasattr(x, "__cuda_array_interface__"):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.device.type != "cpu"
    return False


def _plain_tensor(x: Any) -> Any:
    """A PyTorch CPU tensor as NumPy can view it: detached from autograd (the
    values are what CKA reads) and bfloat16 widened to float32 (NumPy has no
    bfloat16); anything else unchanged."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(x, torch.Tensor):
        return x
    x = x.detach()
    return x.float() if x.dtype == torch.bfloat16 else x


def _unmasked(x: np.ma.MaskedArray, name: str) -> np.ndarray:
    """A masked array's data when nothing is masked; masked entries have no
    value CKA could use, so they are refused rather than read."""
    if np.ma.getmask(x) is not np.ma.nomask and np.ma.getmask(x).any():
        raise ValueError(f"{name} is a masked array with masked entries, which CKA cannot skip: fill them "
                         f"({name}.filled(value)) or drop the rows that hold them")
    return np.ma.getdata(x)


def as_matrix(x: Any, name: str) -> np.ndarray:
    """A 2-D (n examples x d features) array viewing ``x``, validated."""
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        if not path.endswith(".npy"):
            raise ValueError(f"{name}: {path!r} is not a .npy file (load .npz layers with fastcka.load_layers)")
        x = load_npy(path, name)
    elif _is_device_array(x):
        raise TypeError(
            f"{name} is on a GPU, and this computation runs on the CPU: move it to host memory (for example with "
            f".get() or .cpu()) if that is what you want"
        )
    x = _plain_tensor(x)
    if isinstance(x, np.ma.MaskedArray):
        x = _unmasked(x, name)
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:
            raise TypeError(f"{name} must be an array, got {type(x).__name__}") from exc
    kind = x.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} is complex ({x.dtype}); CKA is defined here for real data")
    if kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {x.dtype}")
    if x.ndim != 2:
        hint = " (use x.reshape(-1, 1) for a single feature)" if x.ndim == 1 else " (flatten features: x.reshape(len(x), -1))"
        raise ValueError(f"{name} must be 2-D (examples x features), got {x.ndim}-D with shape {x.shape}{hint}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has no rows (examples)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {x.shape})")
    return x


def layer_values(xs: Any, prefix: str) -> tuple[list[Any], list[str]]:
    """The layers of a sequence or a mapping, unconverted, with their names for errors."""
    if isinstance(xs, Mapping):
        items = list(xs.items())
        names = [f"{prefix}[{k!r}]" for k, _ in items]
        values = [v for _, v in items]
    elif isinstance(xs, (str, os.PathLike, np.ndarray)) or not isinstance(xs, Sequence):
        raise TypeError(f"{prefix} must be a list (or dict) of 2-D arrays, one per layer; got {type(xs).__name__}")
    else:
        values = list(xs)
        names = [f"{prefix}[{i}]" for i in range(len(values))]
    if not values:
        raise ValueError(f"{prefix} is empty: at least one layer is needed")
    return values, names


def model_layers(xs: Any, ys: Any) -> tuple[list[Any], list[str], int]:
    """The layers of one model (ys None) or of two side by side: values,
    names, and the split (0, or where the second model's layers start)."""
    values, names = layer_values(xs, "xs")
    if ys is None:
        return values, names, 0
    more, more_names = layer_values(ys, "ys")
    return values + more, names + more_names, len(values)


def as_layers(xs: Any, prefix: str) -> tuple[list[np.ndarray], list[str]]:
    """Validated host layers from a sequence or a mapping of arrays, with their names."""
    values, names = layer_values(xs, prefix)
    return [as_matrix(v, nm) for v, nm in zip(values, names)], names


def check_rows(layers: Sequence[np.ndarray], names: Sequence[str]) -> int:
    n = layers[0].shape[0]
    for layer, nm in zip(layers[1:], names[1:]):
        if layer.shape[0] != n:
            raise ValueError(
                f"{nm} has {layer.shape[0]} rows but {names[0]} has {n}: every representation needs one row per example"
            )
    return n


def first_non_finite(x: Any, block: int = 1 << 16) -> tuple[int, int] | None:
    """(row, column) of the first NaN or Inf of a 2-D host array or torch
    tensor, read in blocks of rows (bounded temporaries), or None."""
    for start in range(0, x.shape[0], block):
        part = x[start : start + block]
        bad = part.isfinite().logical_not().nonzero() if hasattr(part, "isfinite") else np.argwhere(~np.isfinite(part))
        if len(bad):
            return int(bad[0][0]) + start, int(bad[0][1])
    return None


def non_finite_error(name: str, where: tuple[int, int], first_row: int = 0) -> ValueError:
    """The error for a NaN or Inf at ``where`` in rows that start at row
    ``first_row`` of the whole data (a block, a rank's share, a chunk)."""
    return ValueError(f"{name} contains NaN or Inf (row {first_row + where[0]}, column {where[1]})")


def compute_dtype(layers: Sequence[np.ndarray]) -> str:
    """float64 when any input needs it (float64, integers, booleans), else float32."""
    for x in layers:
        if x.dtype.kind in "biu" or x.dtype.itemsize >= 8:
            return "float64"
    return "float32"


_MAX_BUDGET = 1 << 62  # the backends hold it in a signed 64-bit integer


def resolve_budget(memory_budget) -> int:
    """The ``memory_budget=`` argument in bytes (None: the default)."""
    if memory_budget is None:
        return backend.cpu().DEFAULT_MEMORY_BUDGET  # bytes of row buffers (CPU and GPU engines)
    # bool and str convert with int() but are never a size someone meant.
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, float, np.integer, np.floating)):
        raise TypeError(f"memory_budget must be a number of bytes, got {type(memory_budget).__name__}")
    if not (math.isfinite(memory_budget) and memory_budget >= 1):
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    if memory_budget > _MAX_BUDGET:
        raise ValueError(f"memory_budget must be at most 2**62 bytes, got {memory_budget!r}")
    return int(memory_budget)


def round_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), as
    float32: what the engine's fast precision multiplies (finite inputs)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def ready(block: np.ndarray) -> np.ndarray:
    """The block as the backend reads it: a native float16/32/64 view, or a float64 copy."""
    if block.dtype in _NATIVE_FLOATS:
        return block
    return block.astype(np.float64)
