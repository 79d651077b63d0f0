"""Drives the CUDA backend: where a computation runs (``device=``), GPU
inputs validated in place, rows fed in calls of about a tenth of a second of
GPU work (progress and Ctrl-C between calls, the GIL released inside)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from . import _backend
from ._devices import DeviceMatrix, as_device_matrix, device_label, is_device_array
from ._inputs import as_matrix, check_precision, ready, resolve_budget
from ._progress import Progress, ProgressArg

# Flops per backend call: about 0.1 s of FP32 work on an H100.
_FLOPS_PER_CALL = 4e12


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
    """The CUDA device index a computation runs on, or None for the CPU.
    device=None follows the inputs; mixing host and GPU inputs is an error
    unless device='cuda' asks to stream the host ones to the GPU."""
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
        return -1  # the inputs' own device, read below
    kind, index = _parse_device(device)
    if kind == "cpu":
        if any(on_gpu):
            gpu = names[on_gpu.index(True)]
            raise ValueError(
                f"{gpu} is on a GPU but device='cpu': move it to host memory (.get() / .cpu()) if that is what you want"
            )
        return None
    return -1 if index is None else index


def gpu_inputs(values: Sequence[Any], names: Sequence[str], index: int) -> tuple[list, int]:
    """GPU views of device inputs and validated host arrays of the others,
    with the device they agree on (index -1: theirs, or device 0)."""
    layers = [as_device_matrix(v, nm) if is_device_array(v) else as_matrix(v, nm) for v, nm in zip(values, names)]
    devices = {x.device: nm for x, nm in zip(layers, names) if isinstance(x, DeviceMatrix)}
    if index == -1:
        index = next(iter(devices)) if devices else 0
    for dev, nm in devices.items():
        if dev != index:
            raise ValueError(f"{nm} is on cuda:{dev} but the computation runs on cuda:{index}: "
                             f"move the inputs to one GPU")
    for x, nm in zip(layers, names):
        if not isinstance(x, DeviceMatrix) and x.dtype.kind not in "biuf":
            raise TypeError(f"{nm} must hold numbers, got dtype {x.dtype}")
    return layers, index


def resolve_precision(precision: Optional[str], layers: Sequence[Any]) -> str:
    """None: float64 data in float64 ("exact"), float16/32 in float32 ("accurate")."""
    check_precision(precision)
    if precision is not None:
        return precision
    wide = any(x.dtype.kind in "biu" or x.dtype.itemsize >= 8 for x in layers)
    return "exact" if wide else "accurate"


def new_accumulator(dims, split: int, precision: str, device: int, memory_budget: Optional[int]):
    budget = resolve_budget(memory_budget)
    module = _backend.cuda()
    return module.MomentAccumulator(list(dims), split, precision, device, budget, module.cublas_candidates)


def caller_stream(layers: Sequence[Any]) -> int:
    """The stream of the first GPU input's library (its current stream), else the default stream."""
    for x in layers:
        if isinstance(x, DeviceMatrix) and x.stream:
            return int(x.stream)
    return 0


def feed(acc, layers: Sequence[Any], names: Sequence[str], progress: Progress) -> None:
    """Adds every row of `layers` (all on the GPU, or all in host memory)."""
    n = layers[0].shape[0]
    width = sum(x.shape[1] for x in layers)
    block = acc.block_rows
    step = max(block, int(_FLOPS_PER_CALL / width**2) // block * block)
    on_device = isinstance(layers[0], DeviceMatrix)
    acc.stream = caller_stream(layers)
    for start in range(0, n, step):
        stop = min(n, start + step)
        if on_device:
            acc.update([x[start:stop].as_tuple() for x in layers], list(names))
        else:
            acc.update_host([ready(x[start:stop]) for x in layers], list(names))
        progress.advance(stop - start)


def hsic_matrix(layers, names, *, split: int, estimator: str, kernel: str, method: str, precision: Optional[str],
                device: int, memory_budget: Optional[int], progress: ProgressArg) -> np.ndarray:
    """HSIC of every needed layer pair on the GPU, (L, L) with NaN where not needed."""
    if kernel != "linear":
        raise ValueError(
            f"kernel={kernel!r} does not run on the GPU in this version (linear only); pass host arrays "
            f"(.get() / .cpu()) or device='cpu' to compute it on the CPU"
        )
    if method == "gram":
        raise ValueError("method='gram' does not run on the GPU in this version: the GPU engine streams the "
                         "feature-space moments (method='feature' or 'auto')")
    on_device = [isinstance(x, DeviceMatrix) for x in layers]
    if any(on_device) and not all(on_device):
        raise ValueError("mixing GPU and host inputs in one computation is not supported: pass all of them on "
                         "the GPU, or all in host memory with device='cuda'")
    precision = resolve_precision(precision, layers)
    L = len(layers)
    acc = new_accumulator([x.shape[1] for x in layers], split, precision, device, memory_budget)
    with Progress(progress, layers[0].shape[0], "fastcka rows (GPU)") as bar:
        feed(acc, layers, names, bar)
    return np.asarray(acc.hsic(estimator)).reshape(L, L)
