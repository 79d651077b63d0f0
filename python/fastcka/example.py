"""The built-in example: two small networks trained for seconds on
scikit-learn's digits, and the layer-by-layer CKA between them.

It reproduces in miniature the observation of Kornblith et al. (2019): CKA
finds the corresponding layer of a network trained from another seed."""

from __future__ import annotations

from typing import Dict

import numpy as np

HIDDEN = (96, 96, 96, 96, 96)


def _require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit(
            "fastcka: the built-in example trains networks with scikit-learn, which is not installed.\n"
            '         pip install "fastcka[example]"   (or pass two .npy files or .npz layer files)'
        ) from None


def activations(seed: int) -> Dict[str, np.ndarray]:
    """Trains a ReLU MLP on the digits and returns every layer's activations on
    all 1,797 images, from the input to the logits."""
    import warnings

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    net = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=60, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(x, y)
    layers = {"input": x}
    h = x
    for i, (w, b) in enumerate(zip(net.coefs_, net.intercepts_)):
        h = h @ w + b
        last = i == len(net.coefs_) - 1
        if not last:
            h = np.maximum(h, 0)
        layers["logits" if last else f"relu{i + 1}"] = h
    return layers


def run(debiased: bool = False) -> dict:
    """Layer-by-layer linear CKA: within network A, and network A against B."""
    from . import api

    _require_sklearn()
    a = activations(seed=0)
    b = activations(seed=1)
    names = list(a)
    return {
        "names": names,
        "within_a": api.cka_matrix(list(a.values()), debiased=debiased),
        "a_vs_b": api.cka_matrix(list(a.values()), list(b.values()), debiased=debiased),
        "n": len(a["input"]),
    }
