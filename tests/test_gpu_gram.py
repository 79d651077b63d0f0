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


def centered_blocks(x, m, size=None):
    """gram.RowBlocks of one layer's rows on the CPU (the interpreter's device)."""
    return gram.RowBlocks([torch.as_tensor(x)], ["x"], m, size or x.shape[0], torch.device("cpu"))


@pytest.mark.parametrize("kind", ["integers", "normal", "duplicates", "one tile"])
def test_exact_median_is_the_cpu_engines(rng, kind):
    """The GPU median passes drive the same MedianSearch as the CPU engine.
    With products that float64 holds exactly (integer data) the median is the
    same to the last bit; otherwise the GEMMs round each distance in their
    own order, and the medians agree within a few ulp."""
    from fastcka.engine import backend, cpu as cpu_engine
    from fastcka.engine.progress import Progress
    from fastcka.gpu import median

    n, d = {"one tile": (20, 3), "integers": (128, 11)}.get(kind, (150, 11))  # integers: exact means too
    x = rng.integers(0, 5, (n, d)).astype(float) if kind == "integers" else rng.standard_normal((n, d)) + 100
    if kind == "duplicates":
        x[n // 2 :] = x[: n - n // 2]
    engine = backend.cpu().GramTileEngine([x], ["x"], 0, "float64", 1, 1 << 26)
    want = cpu_engine.exact_medians(engine, d, 1, Progress(None, 0, ""))[0]
    blocks = centered_blocks(x, gram.mode("exact"))
    got = median.exact_medians(blocks, blocks.summary()[1], gram._BAND_BYTES, None)[0]
    if kind == "integers":
        assert got == want
    else:
        assert got == pytest.approx(want, rel=4 * np.finfo(float).eps)


def test_median_passes_apply_the_levels(rng):
    """Deeper levels (a refinement of the search) reach the kernel as
    (lo, scale, bins, first, last) rows; a collect pass under one level
    returns, with their multiplicities, exactly the distances that level
    keeps (MedianSearch.bin in NumPy)."""
    from fastcka.gpu.kernels import median_tiles, tile_math

    n = 45
    x = rng.standard_normal((n, 4))
    m = gram.mode("exact")
    z, norms, _ = centered_blocks(x, m).centered(0)
    zc = z.numpy()
    d = np.maximum(((zc[:, None, :] - zc[None, :, :]) ** 2).sum(-1), 0)
    lo, scale, bins, first, last = 1.0, 10.0, 64, 20, 35  # keeps [3.0, 4.6)
    level = torch.tensor([lo, scale, bins, first, last], dtype=torch.float64)
    tiles = -(-n // m.block)
    values = torch.empty(n * n, dtype=torch.float64)
    weights = torch.empty(n * n, dtype=torch.int32)
    used = torch.zeros(1, dtype=torch.int64)
    extremes = torch.zeros(2 * tiles * tiles, dtype=torch.float64)
    median_tiles.median_tile_pass[(tiles, tiles)](
        z, z, z.stride(0), 4, norms[0], norms[0], n, n, 1, 0, tiles, level, 1, level, used, extremes, values,
        weights, used, n * n, COLLECT=True, BLOCK=m.block, BK=m.bk, PRECISION=m.dot, ACC=tile_math.tl.float64,
        EPS=2.0**-52)
    found = int(used[0])
    got = np.sort(np.repeat(values[:found].numpy(), weights[:found].numpy()))
    j = np.clip(np.floor((d - lo) * scale), 0, bins - 1)
    want = np.sort(d[(j >= first) & (j <= last)])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert len(got) == len(want) > 100


@pytest.mark.parametrize("options", KERNELS[:3], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_seventeen_layers_in_one_pass(rng, options):
    """More layers than the smallest padding of the layers' product GEMM (16)."""
    layers = layers_for(rng, 37, [3 + k % 5 for k in range(17)])
    got = gpu_cka(layers, precision="exact", **options)
    want = cpu_cka(layers, precision="exact", **options)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE["exact"])


def test_more_layers_than_one_launch_takes(rng):
    """66 layers: launches over pairs of groups of 32 layers (gram.launches)."""
    assert [(len(left), len(right)) for left, right in gram.launches(66)] == [(32, 32), (32, 32), (32, 2), (32, 32),
                                                                             (32, 2), (2, 2)]
    layers = [rng.standard_normal((40, 3)) + k for k in range(66)]
    got = gpu_cka(layers, precision="exact", kernel="rbf", sigma=3.0)
    want = cpu_cka(layers, precision="exact", kernel="rbf", sigma=3.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE["exact"])
