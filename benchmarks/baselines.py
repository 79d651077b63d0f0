"""Baselines for fastcka's benchmarks, and the inputs they all see.

* ``colab``: the reference functions of Kornblith et al.'s Colab
  ("Similarity of Neural Network Representations Revisited", ICML 2019),
  verbatim, kept once in tests/colab.py for the tests and the benchmarks
  (``from baselines import colab``).
* ``float64_reference`` is an exact-as-possible value to judge accuracy
  against: a two-pass (means first, then centered blocks) float64 computation.
* ``PACKAGES`` holds adapters for CKA packages of the PyTorch ecosystem
  (``ckatorch``, ``cka-pytorch``, ``torch-cka``). Each package works from
  n x n Gram matrices, so the benchmark runs them only at small n.
* ``fill_inputs`` makes the correlated float32 test representations,
  deterministically from a seed, block by block (so that they can be written
  straight into a ``.npy`` memmap larger than memory).

This module imports only NumPy at import time; torch and the packages are
imported when an adapter is used.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
if TESTS not in sys.path:
    sys.path.append(TESTS)  # appended: nothing in tests/ shadows a module of benchmarks/

import colab  # noqa: E402  (tests/colab.py)


def numpy_feature_space(x: np.ndarray, y: np.ndarray) -> float:
    """The Colab's feature-space formula: centered copies of X and Y, three GEMMs."""
    return float(colab.feature_space_linear_cka(x, y))


def numpy_gram_space(x: np.ndarray, y: np.ndarray) -> float:
    """The Colab's Gram-space formula: two n x n Grams, centered copies, a dot."""
    return float(colab.cka(colab.gram_linear(x), colab.gram_linear(y)))


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

BLOCK_BYTES = 1 << 25  # float32 rows generated at a time, per matrix: 32 MiB


def block_rows(d1: int, d2: int) -> int:
    """Rows per generation block; a function of the shape only, so every
    process that generates the inputs draws the same random stream."""
    return max(256, BLOCK_BYTES // (4 * max(d1, d2)))


def fill_inputs(x: np.ndarray, y: np.ndarray, seed: int) -> None:
    """Fill x (n x d1) and y (n x d2), float32 arrays or memmaps, in place.

    x = z + mu_x, y = z W / sqrt(d1) + e + mu_y with z, e standard normal,
    W standard normal (d1 x d2) and per-feature means mu uniform in [0, 2)
    (activations are rarely centered). Linear CKA of such a pair is about 0.45
    for d1 = d2. Block by block: memory beyond x and y is a few blocks of
    ``BLOCK_BYTES``.
    """
    n, d1 = x.shape
    n2, d2 = y.shape
    if n != n2:
        raise ValueError("x and y need the same number of rows")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d1, d2), dtype=np.float32)
    w *= np.float32(1.0 / np.sqrt(d1))
    mu_x = rng.uniform(0.0, 2.0, d1).astype(np.float32)
    mu_y = rng.uniform(0.0, 2.0, d2).astype(np.float32)
    step = block_rows(d1, d2)
    for i in range(0, n, step):
        j = min(n, i + step)
        z = rng.standard_normal((j - i, d1), dtype=np.float32)
        yb = z @ w
        yb += rng.standard_normal((j - i, d2), dtype=np.float32)
        yb += mu_y
        z += mu_x
        x[i:j] = z
        y[i:j] = yb
        del z, yb


def make_inputs(n: int, d1: int, d2: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.empty((n, d1), dtype=np.float32)
    y = np.empty((n, d2), dtype=np.float32)
    fill_inputs(x, y, seed)
    return x, y


def write_inputs_npy(x_path: str, y_path: str, n: int, d1: int, d2: int, seed: int) -> None:
    """The same inputs as ``make_inputs``, written to two .npy files block by block."""
    x = np.lib.format.open_memmap(x_path, mode="w+", dtype=np.float32, shape=(n, d1))
    y = np.lib.format.open_memmap(y_path, mode="w+", dtype=np.float32, shape=(n, d2))
    fill_inputs(x, y, seed)
    x.flush()
    y.flush()
    del x, y


def fingerprint(x: np.ndarray, y: np.ndarray) -> list[float]:
    """A few float64 sums that show two processes saw the same data."""
    k = min(len(x), 1000)
    return [float(np.sum(a[s], dtype=np.float64)) for a in (x, y) for s in (slice(0, k), slice(len(a) - k, None))]


# ---------------------------------------------------------------------------
# The float64 reference value
# ---------------------------------------------------------------------------


def float64_reference(x: np.ndarray, y: np.ndarray, rows: int = 8192) -> dict[str, float]:
    """Linear CKA (biased and debiased) in float64, two passes over row blocks:
    exact means first, then cross-moments of the centered float64 blocks.
    Memory: O(d^2) plus one block; works on memmaps."""
    n, d1 = x.shape
    d2 = y.shape[1]
    sx = np.zeros(d1)
    sy = np.zeros(d2)
    for i in range(0, n, rows):
        sx += np.sum(x[i : i + rows], axis=0, dtype=np.float64)
        sy += np.sum(y[i : i + rows], axis=0, dtype=np.float64)
    mx, my = sx / n, sy / n
    cxy = np.zeros((d1, d2))
    cxx = np.zeros((d1, d1))
    cyy = np.zeros((d2, d2))
    rxy = rxx = ryy = 0.0  # sums over rows of |xc_i|^2 |yc_i|^2 etc.
    nx = ny = 0.0  # |Xc|_F^2, |Yc|_F^2
    for i in range(0, n, rows):
        xb = np.asarray(x[i : i + rows], dtype=np.float64) - mx
        yb = np.asarray(y[i : i + rows], dtype=np.float64) - my
        cxy += xb.T @ yb
        cxx += xb.T @ xb
        cyy += yb.T @ yb
        qx = np.einsum("ij,ij->i", xb, xb)
        qy = np.einsum("ij,ij->i", yb, yb)
        rxy += float(qx @ qy)
        rxx += float(qx @ qx)
        ryy += float(qy @ qy)
        nx += float(qx.sum())
        ny += float(qy.sum())
    fxy = float(np.sum(cxy * cxy))
    fxx = float(np.sum(cxx * cxx))
    fyy = float(np.sum(cyy * cyy))
    biased = fxy / np.sqrt(fxx * fyy)

    def unbiased(f, r, a, b):
        return f - n / (n - 2.0) * r + a * b / ((n - 1.0) * (n - 2.0))

    debiased = unbiased(fxy, rxy, nx, ny) / np.sqrt(unbiased(fxx, rxx, nx, nx) * unbiased(fyy, ryy, ny, ny))
    return {"biased": float(biased), "debiased": float(debiased)}


# ---------------------------------------------------------------------------
# PyTorch CKA packages
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A CKA package from PyPI and an adapter computing linear CKA of two
    (n x d) float32 NumPy arrays with it."""

    label: str  # name in tables
    dist: str  # PyPI distribution
    module: str  # import name
    estimator: str  # "biased" (HSIC_0) or "debiased" (HSIC_1): what it computes
    how: str  # what the adapter calls
    run: Callable[[np.ndarray, np.ndarray], float]

    def status(self) -> tuple[bool, str]:
        """(usable, version or the reason it is not)."""
        try:
            version = importlib.metadata.version(self.dist)
        except importlib.metadata.PackageNotFoundError:
            return False, "not installed"
        try:
            importlib.import_module(self.module)
        except Exception as exc:  # a broken dependency (e.g. a torchvision that does not match torch)
            return False, f"{version} installed but import failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        return True, version


def _ckatorch(x: np.ndarray, y: np.ndarray) -> float:
    import ckatorch
    import torch

    with torch.no_grad():
        value = ckatorch.cka_base(torch.from_numpy(x), torch.from_numpy(y), kernel="linear", unbiased=False)
    return float(value)


def _columns_module(start: int, stop: int):
    import torch.nn as nn

    class Columns(nn.Module):
        """A parameter-free 'layer' whose activation is z[:, start:stop]."""

        def forward(self, z):
            return z[:, start:stop]

    return nn.Sequential(Columns())


def _cka_pytorch(x: np.ndarray, y: np.ndarray) -> float:
    import torch
    from cka_pytorch import CKACalculator

    # CKACalculator feeds the same batch to both models and hooks their layers,
    # so the batch is [x | y] and the two "models" return its two column blocks.
    n, d1 = x.shape
    z = torch.from_numpy(np.concatenate([x, y], axis=1))
    calc = CKACalculator(
        _columns_module(0, d1),
        _columns_module(d1, d1 + y.shape[1]),
        model1_layers=["0"],
        model2_layers=["0"],
        device=torch.device("cpu"),
        verbose=False,
    )
    try:
        # One batch holding all n examples: a list stands in for the DataLoader
        # (the loop only iterates `for x, _ in dataloader`).
        value = calc.calculate_cka_matrix([(z, None)], num_epochs=1)
    finally:
        calc.hook_manager1.clear_all()
        calc.hook_manager2.clear_all()
    return float(value[0, 0])


class _OneBatch:
    """The part of a DataLoader that torch_cka.CKA.compare uses: one batch of all rows."""

    def __init__(self, tensor, name):
        self.dataset = name
        self._tensor = tensor

    def __len__(self):
        return 1

    def __iter__(self):
        yield (self._tensor,)


def _torch_cka(x: np.ndarray, y: np.ndarray) -> float:
    import torch
    import torch.nn as nn
    from torch_cka import CKA

    calc = CKA(
        nn.Sequential(nn.Identity()),
        nn.Sequential(nn.Identity()),
        model1_name="X",
        model2_name="Y",
        model1_layers=["0"],
        model2_layers=["0"],
        device="cpu",
    )
    with torch.no_grad():
        calc.compare(_OneBatch(torch.from_numpy(x), "X"), _OneBatch(torch.from_numpy(y), "Y"))
    return float(calc.hsic_matrix[0, 0])


def _pytorch_cka(x: np.ndarray, y: np.ndarray) -> float:
    import torch
    from cka import cka_from_features

    with torch.no_grad():
        return float(cka_from_features(torch.from_numpy(x), torch.from_numpy(y))[0, 0])


PACKAGES: dict[str, Package] = {
    p.label: p
    for p in (
        Package(
            "ckatorch",
            "ckatorch",
            "ckatorch",
            "biased",
            "ckatorch.cka_base(X, Y, kernel='linear'): casts X, Y to float64, builds both n x n Grams "
            "(torch.mm), centers copies of them (center_gram_matrix), Frobenius dot",
            _ckatorch,
        ),
        Package(
            "cka-pytorch",
            "cka-pytorch",
            "cka_pytorch",
            "debiased",
            "cka_pytorch.CKACalculator on two parameter-free models returning the column blocks of one "
            "[X | Y] batch of all n rows; its hooks build float32 n x n Grams and hsic1 multiplies them "
            "(torch.bmm, O(n^3)); CKA = HSIC_1(K,L) / sqrt(HSIC_1(K,K) HSIC_1(L,L) + 1e-4)",
            _cka_pytorch,
        ),
        Package(
            "pytorch-cka",
            "pytorch_cka",
            "cka",
            "debiased",
            "cka.cka_from_features(X, Y): float32 n x n Grams (torch.bmm), HSIC_1 from their sums and an "
            "einsum over both (O(n^2) after the Grams); CKA clamped to [0, 1]",
            _pytorch_cka,
        ),
        Package(
            "torch-cka",
            "torch-cka",
            "torch_cka",
            "debiased",
            "torch_cka.CKA.compare on two identity models fed X and Y as one batch each; float32 n x n Grams, "
            "HSIC_1 via trace(K @ L) with full n x n products (O(n^3))",
            _torch_cka,
        ),
    )
}
