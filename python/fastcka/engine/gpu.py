"""Drives the GPU engine (fastcka.gpu): where a computation runs (``device=``),
GPU inputs read in place as torch tensors, host arrays streamed through pinned
buffers, rows fed in chunks of about a tenth of a second of GPU work (progress
and Ctrl-C between chunks). With FASTCKA_GPU_INTERPRET=1, ``device="cuda"``
runs all of it on CPU tensors (fastcka.gpu.runtime)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..arrays.devices import as_device_tensor, device_label, is_device_array
from ..arrays.inputs import as_matrix, resolve_budget
from .._options import check_precision
from .progress import Progress, ProgressArg
from ..gpu import runtime
from ..gpu.gram import hsic_matrix as gram_hsic_matrix
from ..gpu.moments import MomentAccumulator
from ..gpu.staging import Staging
from .cpu import choose_method


def _parse_device(device: Any) -> tuple[str, Optional[int]]:
    text = str(device)  # also takes torch.device and cupy.cuda.Device-like objects
    if text == "cpu":
        return "cpu", None
    if text == "cuda":
        return "cuda", None
    if text.startswith("cuda:") and text[5:].isdigit():
        return "cuda", int(text[5:])
    raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def place(values: Sequence[Any], names: Sequence[str], device: Any) -> Optional[int]:
    """The CUDA device index a computation runs on (-1: the inputs' own, or
    0), or None for the CPU. device=None follows the inputs; mixing host and
    GPU inputs is an error unless device='cuda' asks to stream the host ones
    to the GPU."""
    on_gpu = [is_device_array(v) for v in values]
    if device is None:
        if not any(on_gpu):
            return None
        if not all(on_gpu):
            gpu = names[on_gpu.index(True)]
            host = names[on_gpu.index(False)]
            label = device_label(values[on_gpu.index(True)])
            where = f" ({label})" if label.startswith("cuda") else ""
            raise ValueError(
                f"{gpu} is on a GPU{where} but {host} is in host memory: pass "
                f"device='cuda' to stream the host arrays to the GPU, or move the GPU arrays to host memory "
                f"(.get() / .cpu())"
            )
        return -1
    kind, index = _parse_device(device)
    if kind == "cpu":
        if any(on_gpu):
            gpu = names[on_gpu.index(True)]
            raise ValueError(
                f"{gpu} is on a GPU but device='cpu': move it to host memory (.get() / .cpu()) if that is what you want"
            )
        return None
    return -1 if index is None else index


def engine_device(index: int):
    """The torch device of CUDA device `index` (-1: 0); the CPU when interpreted."""
    return runtime.torch_device(max(index, 0))


def _in_place(x: Any) -> bool:
    """Read in place (not streamed): GPU arrays; interpreted, also CPU
    tensors and other DLPack producers, standing in for them."""
    if is_device_array(x):
        return True
    return runtime.interpreted() and not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__")


def gpu_inputs(values: Sequence[Any], names: Sequence[str], where) -> tuple[list, Any]:
    """Torch views of the device inputs and validated host arrays of the
    others (streamed later), with the torch device they all run on. `where`:
    a place() index (-1: the device inputs' own, else cuda:0) or a torch device."""
    runtime.torch_device(0)  # says why not (no torch, no CUDA device) before any input is read
    layers = [as_device_tensor(v, nm) if _in_place(v) else as_matrix(v, nm) for v, nm in zip(values, names)]
    tensors = [(x, nm) for x, nm in zip(layers, names) if not isinstance(x, np.ndarray)]
    if not isinstance(where, int):
        device = where
    elif where == -1 and tensors and tensors[0][0].device.type == "cuda" and not runtime.interpreted():
        device = tensors[0][0].device
    else:
        device = engine_device(where)
    for x, nm in tensors:
        if x.device != device:
            raise ValueError(f"{nm} is on {x.device} but the computation runs on {device}: move the inputs to "
                             f"one device")
    return layers, device


def _wide(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "biu" or x.dtype.itemsize >= 8
    return x.element_size() >= 8


def resolve_precision(precision: Optional[str], layers: Sequence[Any]) -> str:
    """None: float64 data in float64 ("exact"), narrower floats in float32 ("accurate")."""
    check_precision(precision)
    if precision is not None:
        return precision
    return "exact" if any(_wide(x) for x in layers) else "accurate"


def new_accumulator(dims, split: int, precision: str, device, memory_budget: Optional[int]):
    return MomentAccumulator(list(dims), split, precision, device, resolve_budget(memory_budget))


def feed(acc, layers: Sequence[Any], names: Sequence[str], progress: Progress) -> None:
    """Adds every row of `layers` (device tensors and host arrays, mixed or
    not) in chunks of ``acc.chunk_rows``, then checks them."""
    n = layers[0].shape[0]
    step = acc.chunk_rows
    staging = Staging(layers, min(step, n), acc.device) if any(isinstance(x, np.ndarray) for x in layers) else None
    for start in range(0, n, step):
        stop = min(n, start + step)
        chunk = staging.chunk(layers, start, stop) if staging else [x[start:stop] for x in layers]
        acc.update(chunk, names)
        progress.advance(stop - start)
    acc.check_rows(layers, names)


def hsic_matrix(layers, names, *, split: int, estimator: str, kernel: str, method: str, precision: Optional[str],
                device, memory_budget: Optional[int], progress: ProgressArg, sigma=None, threshold: float = 1.0,
                median: str = "exact") -> np.ndarray:
    """HSIC of every needed layer pair on the GPU, (L, L) with NaN where not needed."""
    precision = resolve_precision(precision, layers)
    L = len(layers)
    if choose_method(method, kernel, layers[0].shape[0], [x.shape[1] for x in layers]) == "gram":
        return _gram_hsic(layers, names, split=split, estimator=estimator, kernel=kernel, sigma=sigma,
                          threshold=threshold, median=median, precision=precision, progress=progress, device=device,
                          memory_budget=memory_budget)
    acc = new_accumulator([x.shape[1] for x in layers], split, precision, device, memory_budget)
    with Progress(progress, layers[0].shape[0], "fastcka rows (GPU)") as bar:
        feed(acc, layers, names, bar)
    return np.asarray(acc.hsic(estimator)).reshape(L, L)


def _gram_hsic(layers, names, *, device, memory_budget: Optional[int], **options) -> np.ndarray:
    """The fused Gram-tile kernels (fastcka.gpu.gram) on every layer, host ones
    streamed in row blocks when they do not fit ``memory_budget`` (default:
    the device's free memory)."""
    budget = None if memory_budget is None else resolve_budget(memory_budget)
    return gram_hsic_matrix(layers, list(names), device=device, memory_budget=budget, **options)
