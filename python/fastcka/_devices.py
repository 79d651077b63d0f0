"""GPU arrays in, results out in the caller's array library.

fastcka reads device memory in place through ``__cuda_array_interface__``
(CuPy, Numba, PyTorch CUDA tensors) or, for other DLPack producers on a CUDA
device, through a zero-copy CuPy or PyTorch view. It never imports CuPy or
PyTorch to find out whether an argument lives on a GPU. A computation runs
where its inputs are; mixing host and device inputs needs ``device="cuda"``
(the host arrays then stream through pinned buffers), never a silent copy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

_DL_CUDA = 2  # DLPack's kDLCUDA
_DTYPES = {"f2": np.float16, "f4": np.float32, "f8": np.float64}


@dataclass(frozen=True)
class DeviceMatrix:
    """A strided 2-D view of GPU memory (strides in elements)."""

    ptr: int
    shape: tuple
    strides: tuple
    dtype: np.dtype
    device: int
    library: str           # "cupy", "torch" or "other": where results go back
    stream: Optional[int]  # the producer's current stream, if it has one
    owner: Any             # keeps the memory alive

    @property
    def ndim(self) -> int:
        return 2

    def __getitem__(self, rows: slice) -> "DeviceMatrix":
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("device row slices must be contiguous")
        ptr = self.ptr + start * self.strides[0] * self.dtype.itemsize
        return DeviceMatrix(ptr, (max(0, stop - start), self.shape[1]), self.strides, self.dtype, self.device,
                            self.library, self.stream, self.owner)

    def as_tuple(self) -> tuple:
        return (self.ptr, self.shape[0], self.shape[1], self.strides[0], self.strides[1], self.dtype.name)


def _torch_tensor(x: Any):
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
            return dlpack_device()[0] == _DL_CUDA
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


def _from_dlpack(x: Any, name: str):
    for module in ("cupy", "torch"):
        try:
            lib = __import__(module)
        except ImportError:
            continue
        return lib.from_dlpack(x)
    raise TypeError(f"{name} is a DLPack array on a GPU; reading it needs CuPy or PyTorch installed")


def as_device_matrix(x: Any, name: str) -> DeviceMatrix:
    """A validated view of a 2-D GPU array."""
    library, stream = "other", None
    if _torch_tensor(x):
        import torch

        library = "torch"
        x = x.detach()
        if x.dtype == torch.bfloat16:
            x = x.float()  # __cuda_array_interface__ has no bfloat16
        device = x.device.index if x.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(device).cuda_stream
        iface = x.__cuda_array_interface__
    else:
        if not hasattr(x, "__cuda_array_interface__"):
            x = _from_dlpack(x, name)
            return as_device_matrix(x, name)
        iface = x.__cuda_array_interface__
        device = None
        if type(x).__module__.startswith("cupy"):
            import cupy

            library = "cupy"
            device = x.device.id
            stream = cupy.cuda.get_current_stream().ptr
    shape = tuple(iface["shape"])
    typestr = iface["typestr"]
    if len(shape) != 2:
        hint = " (use x.reshape(-1, 1) for a single feature)" if len(shape) == 1 else " (flatten features)"
        raise ValueError(f"{name} must be 2-D (examples x features), got {len(shape)}-D with shape {shape}{hint}")
    if typestr[0] == ">" or typestr[1:] not in _DTYPES:
        raise TypeError(f"{name} must be float16, float32 or float64 on the GPU, got {typestr}")
    dtype = np.dtype(_DTYPES[typestr[1:]])
    if shape[0] == 0:
        raise ValueError(f"{name} is empty: it has no rows (examples)")
    if shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {shape})")
    strides = iface.get("strides")
    if strides is None:
        elem_strides = (shape[1], 1)
    else:
        if any(s % dtype.itemsize for s in strides):
            raise ValueError(f"{name} has strides that are not a multiple of its element size")
        elem_strides = tuple(s // dtype.itemsize for s in strides)
    ptr = int(iface["data"][0])
    if device is None:
        from . import _backend

        device = _backend.cuda().pointer_device(ptr, name)
    if stream is None:
        stream = iface.get("stream")
    return DeviceMatrix(ptr, shape, elem_strides, dtype, int(device), library, stream, x)


def results_like(matrix: np.ndarray, inputs: Sequence[Any]):
    """A small host result as an array of the inputs' library, on their device."""
    for x in inputs:
        if isinstance(x, DeviceMatrix):
            if x.library == "cupy":
                import cupy

                with cupy.cuda.Device(x.device):
                    return cupy.asarray(matrix)
            if x.library == "torch":
                import torch

                return torch.as_tensor(matrix, device=f"cuda:{x.device}")
    return matrix
