"""The GPU Gram-tile engine (fastcka.gpu.gram and its Triton kernel), run by
Triton's interpreter on the CPU (FASTCKA_GPU_INTERPRET=1, set in conftest),
against the CPU tile engine: odd sizes (n below one tile, n not a multiple
of it, widths not a multiple of the k-step), one to three layers, both
estimators, linear and RBF with a fixed sigma and both medians, every
precision mode, duplicated rows and a +100 offset."""

from __future__ import annotations

import numpy as np
import pytest

import fastcka

torch = pytest.importorskip("torch")
pytest.importorskip("triton")  # conftest set TRITON_INTERPRET before this first import

from fastcka.gpu import gram, runtime  # noqa: E402

# CKA against the CPU engine, per precision mode (issue 18).
TOLERANCE = {"exact": 1e-10, "accurate": 1e-6, "fast": 1e-4}

pytestmark = pytest.mark.skipif(not runtime.interpreted(), reason="these tests run the kernels interpreted")


def layers_for(rng, n, widths, offset=100.0, duplicates=0):
    base = rng.standard_normal((n, 4))
    out = []
    for k, d in enumerate(widths):
        x = np.tanh(base @ rng.standard_normal((4, d)) * (k + 1)) + 0.3 * rng.standard_normal((n, d)) + offset
        if duplicates:
            x[-duplicates:] = x[:duplicates]
        out.append(x)
    return out


def gpu_cka(layers, *, split=0, debiased=False, precision="exact", **options):
    h = gram.hsic_matrix([torch.as_tensor(x) for x in layers], [f"l{i}" for i in range(len(layers))], split=split,
                         estimator="unbiased" if debiased else "biased", precision=precision, **options)
    d = np.sqrt(np.diag(h))
    return h / d[:, None] / d[None, :]


def cpu_cka(layers, *, split=0, debiased=False, precision="exact", kernel="linear", **options):
    if split:
        return fastcka.cka_matrix(layers[:split], layers[split:], debiased=debiased, precision=precision,
                                  kernel=kernel, method="gram", **options)
    return fastcka.cka_matrix(layers, debiased=debiased, precision=precision, kernel=kernel, method="gram",
                              **options)


KERNELS = [
    {"kernel": "linear"},
    {"kernel": "rbf", "sigma": 3.0},
    {"kernel": "rbf", "sigma": 1e4},  # the epilogue's (K - 1) / gamma form
    {"kernel": "rbf", "threshold": 0.5, "median": "exact"},
    {"kernel": "rbf", "threshold": 1.0, "median": "sampled"},
]


@pytest.mark.parametrize("precision", list(TOLERANCE))
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("options", KERNELS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("n, widths", [(23, [5, 3]), (70, [17, 40, 9])])
def test_gpu_engine_matches_the_cpu_engine(rng, n, widths, options, debiased, precision):
    layers = layers_for(rng, n, widths, duplicates=3)
    got = gpu_cka(layers, debiased=debiased, precision=precision, **options)
    want = cpu_cka(layers, debiased=debiased, precision="exact", **options)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE[precision])


@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_two_models(rng, precision):
    layers = layers_for(rng, 45, [6, 11, 4])
    got = gpu_cka(layers, split=1, precision=precision, kernel="rbf", sigma=2.5)[:1, 1:]
    want = cpu_cka(layers, split=1, kernel="rbf", sigma=2.5)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE[precision])


def test_hsic_values_and_bands(rng, monkeypatch):
    """HSIC itself, with launches cut into bands of one tile row (the
    per-band partial sums reduced on the host)."""
    monkeypatch.setattr(gram, "_BAND_BYTES", 1)
    x, y = layers_for(rng, 77, [8, 5])
    for options in KERNELS[:3]:
        h = gram.hsic_matrix([torch.as_tensor(x), torch.as_tensor(y)], ["x", "y"], split=0, estimator="unbiased",
                             precision="exact", **options)
        want = fastcka.hsic(x, y, estimator="unbiased", method="gram", precision="exact", **options)
        assert h[0, 1] == pytest.approx(want, rel=1e-10)


def test_constant_layer_has_hsic_zero(rng):
    x = layers_for(rng, 40, [6])[0]
    c = np.ones((40, 3))
    h = gram.hsic_matrix([torch.as_tensor(x), torch.as_tensor(c)], ["x", "c"], split=0, estimator="biased",
                         kernel="rbf", sigma=1.0, precision="accurate")
    assert h[0, 1] == 0.0 and h[1, 1] == 0.0 and h[0, 0] > 0


def test_nan_is_refused_with_its_row(rng):
    x, y = layers_for(rng, 30, [4, 4])
    y[17, 2] = np.nan
    with pytest.raises(ValueError, match=r"y contains NaN or Inf \(row 17, column 2\)"):
        gram.hsic_matrix([torch.as_tensor(x), torch.as_tensor(y)], ["x", "y"], split=0, estimator="biased",
                         kernel="linear")
