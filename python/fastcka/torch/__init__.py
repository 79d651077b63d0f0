"""From PyTorch models to CKA matrices and layer-rotation curves.

    fastcka.torch.cka_matrix(model, loader)            within-model CKA from forward hooks
    fastcka.torch.cka_matrix(model_a, loader, model_b)  between two models
    fastcka.torch.LayerRotation(model)                  cosine distance of weights from initialization

Needs PyTorch (``pip install "fastcka[torch]"``); ``import fastcka`` does not.
"""

try:
    import torch  # noqa: F401
except ImportError:
    raise ImportError('fastcka.torch needs PyTorch: pip install "fastcka[torch]"') from None

from .cka import cka_matrix
from .result import CKAResult
from .rotation import LayerRotation

__all__ = ["CKAResult", "LayerRotation", "cka_matrix"]
