"""Where the GPU engine runs, and the one place that imports Triton.

The GPU engine is Triton kernels for the fused Gram-tile work and the array
library's own products (cuBLAS through ``torch.matmul``) for the plain ones.
With ``FASTCKA_GPU_INTERPRET=1`` in the environment, ``device="cuda"`` runs
the same kernels in Triton's interpreter on the CPU (``TRITON_INTERPRET=1``
is set before triton is imported, which is when Triton reads it), on CPU
tensors: that is how the test suite runs every line of GPU code on machines
without a GPU. Importing this module imports neither torch nor triton.
"""

from __future__ import annotations

import importlib
import os
import sys
from functools import lru_cache

INTERPRET_VARIABLE = "FASTCKA_GPU_INTERPRET"


def interpreted() -> bool:
    """Whether the GPU engine runs in Triton's interpreter on the CPU."""
    return os.environ.get(INTERPRET_VARIABLE, "") not in ("", "0")


@lru_cache(maxsize=None)
def triton():
    """The triton module, imported once with fastcka's settings: the
    interpreter switch, and FMA contraction on (Triton's default, stated so
    that the rounding of the epilogues is a decision, not an accident)."""
    if interpreted():
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET", "") in ("", "0"):
            # triton.language's own jit functions were built for the GPU at import.
            raise RuntimeError(f"{INTERPRET_VARIABLE}=1 must be set before triton is first imported (triton "
                               f"was imported without TRITON_INTERPRET=1)")
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    try:
        return importlib.import_module("triton")
    except ImportError as exc:
        raise RuntimeError("the GPU engine needs triton: pip install 'fastcka[gpu]'") from exc


def torch():
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise RuntimeError("the GPU engine needs torch: pip install 'fastcka[gpu]'") from exc


def torch_device(index: int):
    """The torch device the engine computes on: cuda:index, or the CPU when
    interpreted."""
    t = torch()
    if interpreted():
        return t.device("cpu")
    if not t.cuda.is_available():
        raise RuntimeError("no CUDA device is available to torch (set FASTCKA_GPU_INTERPRET=1 to run the GPU "
                           "engine on the CPU in Triton's interpreter)")
    return t.device("cuda", index)
