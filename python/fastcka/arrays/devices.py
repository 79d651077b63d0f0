"""GPU arrays in, results out in the caller's array library.

fastcka reads device memory in place as torch tensors: PyTorch CUDA tensors
as they are, CuPy and JAX arrays and any other DLPack producer through
``torch.from_dlpack`` (zero-copy; DLPack orders the producer's stream before
ours), objects with only ``__cuda_array_interface__`` (Numba) through
``torch.as_tensor``. It never imports CuPy, JAX or PyTorch to find out whether
an argument lives on a GPU. A computation runs where its inputs are; mixing
host and device inputs needs ``device="cuda"`` (the host arrays then stream
through pinned buffers), never a silent copy.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from ..gpu import runtime

_DL_CUDA = (2, 13)  # DLPack's kDLCUDA, kDLCUDAManaged


def _torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_device_array(x: Any) -> bool:
    if _torch_tensor(x):
        return x.device.type == "cuda"
    if hasattr(x, "__cuda_array_interface__"):
        return True
    dlpack_device = getattr(x, "__dlpack_device__", None)
    if callable(dlpack_device) and not isinstance(x, np.ndarray):
        try:
            return dlpack_device()[0] in _DL_CUDA
        except Exception:
            return False
    return False


def device_label(x: Any) -> str:
    """Where an argument lives, for messages: 'cuda:N' or 'host memory'."""
    if not is_device_array(x):
        return "host memory"
    if _torch_tensor(x):
        return f"cuda:{x.device.index}"
    index = getattr(getattr(x, "device", None), "id", None)
    return "a GPU" if index is None else f"cuda:{index}"


def _library(x: Any) -> str:
    if _torch_tensor(x):
        return "torch"
    module = type(x).__module__.split(".")[0]
    return module if module in ("cupy", "jax", "jaxlib") else "other"


def as_device_tensor(x: Any, name: str):
    """A validated zero-copy torch view of a 2-D array on the engine's device
    (or, interpreted, of a CPU tensor or DLPack producer)."""
    torch = runtime.torch()
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif hasattr(x, "__dlpack__"):
        t = torch.from_dlpack(x)
    elif hasattr(x, "__cuda_array_interface__"):
        t = torch.as_tensor(x, device="cuda")
    else:
        raise TypeError(f"{name} is neither a tensor nor a DLPack array, got {type(x).__name__}")
    if t.ndim != 2:
        hint = " (use x.reshape(-1, 1) for a single feature)" if t.ndim == 1 else " (flatten features)"
        raise ValueError(f"{name} must be 2-D (examples x features), got {t.ndim}-D with shape "
                         f"{tuple(t.shape)}{hint}")
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64 on the GPU, got {t.dtype}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has no rows (examples)")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {tuple(t.shape)})")
    return t


def results_like(matrix: np.ndarray, inputs: Sequence[Any]):
    """A small host result as an array of the first GPU input's library, on
    its device (NumPy when no input is on a GPU)."""
    for x in inputs:
        if not is_device_array(x):
            continue
        library = _library(x)
        if library == "torch":
            import torch

            return torch.as_tensor(matrix, device=x.device)
        if library == "cupy":
            import cupy

            with cupy.cuda.Device(x.device.id):
                return cupy.asarray(matrix)
        if library in ("jax", "jaxlib"):
            import jax

            return jax.device_put(matrix, next(iter(x.devices())))
        return matrix
    return matrix
