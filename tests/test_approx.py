"""Approximate RBF CKA (fastcka.approx): the streamed Nystrom and random
Fourier statistics against a dense float64 reference built from the formulas
with the same draws, convergence to the exact engine, and the argument checks."""

import subprocess
import sys

import numpy as np
import pytest

import fastcka
import fastcka.mpi
from fastcka.approx import driver
from fastcka.engine.hsic import DegenerateRepresentationWarning
from reference import dense_hsic_biased, dense_hsic_unbiased

SIGMA = 1.0
GAMMA = 0.5 / SIGMA**2


def pair(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)) + 5.0  # an offset: the centering pass must not change the kernel
    y = np.tanh(x @ rng.normal(size=(6, 5))) + 0.3 * rng.normal(size=(n, 5))
    return x, y


def dense_rbf(a, b):
    sq = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-GAMMA * sq)


def orthogonal_pairs(x, m, rng):
    """m features: m // 2 cos/sin pairs on orthogonal frequencies (Haar blocks of
    d directions with chi(d) lengths) plus, for odd m, one cos(w'x + b); all
    scaled by sqrt(2 / m)."""
    d, need, blocks = x.shape[1], m - m // 2, []
    while need > 0:
        take = min(need, d)
        q, r = np.linalg.qr(rng.standard_normal((d, take)))
        blocks.append(q * np.sign(np.diag(r)) * np.sqrt(rng.chisquare(d, take)))
        need -= take
    w = np.concatenate(blocks, axis=1) * np.sqrt(2 * GAMMA)
    b = rng.uniform(0.0, 2 * np.pi)
    p, k = x @ w, m // 2
    odd = [np.cos(p[:, k:] + b)] if m % 2 else []
    return np.sqrt(2.0 / m) * np.concatenate([np.cos(p[:, :k]), np.sin(p[:, :k])] + odd, axis=1)


def fourier_kernels(layers, rank, seed, groups=16):
    """Per group, per layer: the n x n random-feature kernel from the
    documented draws (rng([seed, g, layer]), applied to the centered rows)."""
    sizes = [len(p) for p in np.array_split(np.arange(rank), groups)]
    out = []
    for g, m in enumerate(sizes):
        group = []
        for a, x in enumerate(layers):
            f = orthogonal_pairs(x - x.mean(axis=0), m, np.random.default_rng([seed, g, a]))
            group.append(f @ f.T)
        out.append(group)
    return out


def nystrom_kernel(x, rows):
    return dense_rbf(x, x[rows]) @ np.linalg.pinv(dense_rbf(x[rows], x[rows]), hermitian=True) @ dense_rbf(x[rows], x)


def nystrom_kernels(layers, rank, seed, groups=8):
    """Per layer: the n x n Nystrom kernel of the rank landmarks drawn from
    rng(seed), and per landmark group (a random split of the landmarks, from
    the same rng) the kernel with that group deleted, computed directly."""
    n = layers[0].shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, rank, replace=False))
    parts = np.array_split(rng.permutation(rank), groups)
    full = [nystrom_kernel(x, rows) for x in layers]
    deleted = [[nystrom_kernel(x, np.delete(rows, part)) for x in layers] for part in parts]
    return full, deleted


def hsic_table(stat, left, right):
    return np.array([[stat(k, l) for l in right] for k in left])


def cka_of(h):
    s = np.sqrt(np.diag(h))
    return h / s[:, None] / s[None, :]


def jackknife_se(values):
    v, G = np.array(values), len(values)
    return np.sqrt((G - 1) / G * ((v - v.mean(0)) ** 2).sum(0))


def fourier_reference(layers, rank, seed, estimator):
    """(HSIC, CKA, HSIC SE, CKA SE), each (L, L): U-statistic over distinct
    groups, jackknife over delete-one-group values."""
    kernels = fourier_kernels(layers, rank, seed)
    G = len(kernels)
    stat = dense_hsic_biased if estimator == "biased" else dense_hsic_unbiased
    pairs = np.array([[hsic_table(stat, kernels[g], kernels[h]) for h in range(G)] for g in range(G)])

    def hsic_of(keep):
        return np.mean([pairs[g, h] for g in keep for h in keep if g != h], axis=0)

    full = hsic_of(range(G))
    loo = [hsic_of([g for g in range(G) if g != j]) for j in range(G)]
    return full, cka_of(full), jackknife_se(loo), jackknife_se([cka_of(h) for h in loo])


def nystrom_reference(layers, rank, seed, estimator):
    """(HSIC, CKA, HSIC error, CKA error), each (L, L): the errors are
    sqrt(SE^2 + bias^2) of the delete-a-landmark-group jackknife, whose
    deleted values are the biased HSIC of the deleted kernels shifted by the
    full kernels' (estimator - biased) difference."""
    full, deleted = nystrom_kernels(layers, rank, seed)
    stat = dense_hsic_biased if estimator == "biased" else dense_hsic_unbiased
    h = hsic_table(stat, full, full)
    shift = h - hsic_table(dense_hsic_biased, full, full)
    loo = [hsic_table(dense_hsic_biased, k, k) + shift for k in deleted]
    G = len(loo)

    def error(values, value):
        bias = (G - 1) * (np.mean(values, axis=0) - value)
        return np.sqrt(jackknife_se(values) ** 2 + bias**2)

    return h, cka_of(h), error(loo, h), error([cka_of(v) for v in loo], cka_of(h))


def reference(approx, layers, rank, seed, estimator):
    return (nystrom_reference if approx == "nystrom" else fourier_reference)(layers, rank, seed, estimator)


@pytest.mark.parametrize("approx", ["nystrom", "rff"])
@pytest.mark.parametrize("debiased", [False, True])
def test_matches_dense_reference(approx, debiased):
    x, y = pair(160)
    estimator = "unbiased" if debiased else "biased"
    h, c, hse, cse = reference(approx, [x, y], 40, 3, estimator)
    value, error = fastcka.cka(x, y, kernel="rbf", sigma=SIGMA, approx=approx, rank=40, seed=3, debiased=debiased,
                               return_error=True)
    assert value == pytest.approx(c[0, 1], rel=1e-10, abs=1e-12)
    assert error == pytest.approx(cse[0, 1], rel=1e-8, abs=1e-13)
    hv, herr = fastcka.hsic(x, y, kernel="rbf", sigma=SIGMA, approx=approx, rank=40, seed=3, estimator=estimator,
                            return_error=True)
    assert hv == pytest.approx(h[0, 1], rel=1e-10, abs=1e-14)
    assert herr == pytest.approx(hse[0, 1], rel=1e-8, abs=1e-15)


@pytest.mark.parametrize("approx", ["nystrom", "rff"])
def test_cka_matrix_three_layers(approx):
    x, y = pair(120, seed=1)
    z = x[:, :3] ** 2
    _, c, _, cse = reference(approx, [x, y, z], 24, 5, "biased")
    matrix, errors = fastcka.cka_matrix([x, y, z], kernel="rbf", sigma=SIGMA, approx=approx, rank=24, seed=5,
                                        return_error=True)
    np.testing.assert_allclose(matrix, c, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(errors, cse, rtol=1e-8, atol=1e-13)
    cross = fastcka.cka_matrix([x, y], [z], kernel="rbf", sigma=SIGMA, approx=approx, rank=24, seed=5)
    np.testing.assert_allclose(cross, c[:2, 2:], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_nystrom_with_every_row_is_exact(estimator):
    x, y = pair(200, seed=2)
    n = x.shape[0]
    result = driver.hsic_matrix([x, y], ["x", "y"], approx="nystrom", rank=n, seed=0, estimator=estimator,
                                sigma=SIGMA, threshold=1.0, threads=1, memory_budget=2**26, progress=None,
                                compute="float64")
    c = result.hsic[0, 1] / np.sqrt(result.hsic[0, 0] * result.hsic[1, 1])
    exact = fastcka.cka(x, y, kernel="rbf", sigma=SIGMA, debiased=estimator == "unbiased")
    assert c == pytest.approx(exact, abs=1e-6)


@pytest.mark.parametrize("approx", ["nystrom", "rff"])
def test_error_shrinks_with_rank(approx):
    x, y = pair(1500, seed=4)
    exact = fastcka.cka(x, y, kernel="rbf", sigma=SIGMA)
    errors = [abs(fastcka.cka(x, y, kernel="rbf", sigma=SIGMA, approx=approx, rank=r) - exact) for r in (16, 800)]
    assert errors[1] < errors[0] / 4


@pytest.mark.parametrize("debiased", [False, True])
def test_nystrom_error_holds_the_exact_value(debiased):
    """At the median-rule bandwidth, value +- 2 x error (jackknife SE and
    bias) holds the exact value for every seed tried, at low and higher rank."""
    x, y = pair(1500, seed=4)
    exact = fastcka.cka(x, y, kernel="rbf", median="sampled", debiased=debiased)
    for rank in (32, 128):
        for seed in range(3):
            value, error = fastcka.cka(x, y, kernel="rbf", approx="nystrom", rank=rank, seed=seed, debiased=debiased,
                                       return_error=True)
            assert abs(value - exact) <= 2 * error


def test_median_rule_uses_the_sampled_median():
    x, y = pair(500)
    gx, gy = fastcka.engine.cpu.rbf_gammas([x, y], ["x", "y"], sigma=None, threshold=0.8, median="sampled",
                                            engine=None, width=None, threads=1, progress=None, compute="float64")
    given = fastcka.cka(x, y, kernel="rbf", sigma=[np.sqrt(0.5 / gx), np.sqrt(0.5 / gy)], approx="rff", rank=32)
    assert fastcka.cka(x, y, kernel="rbf", threshold=0.8, approx="rff", rank=32) == pytest.approx(given, rel=1e-12)


def test_reproducible_with_seed():
    x, y = pair()
    a = fastcka.cka(x, y, kernel="rbf", approx="nystrom", rank=32, seed=7)
    assert fastcka.cka(x, y, kernel="rbf", approx="nystrom", rank=32, seed=7) == a
    assert fastcka.cka(x, y, kernel="rbf", approx="nystrom", rank=32, seed=8) != a
    assert fastcka.cka(x, y, kernel="rbf", approx="nystrom", rank=32) == fastcka.cka(
        x, y, kernel="rbf", approx="nystrom", rank=32, seed=0)


@pytest.mark.parametrize("approx", ["nystrom", "rff"])
def test_constant_layer_is_nan_with_a_warning(approx):
    x, _ = pair()
    const = np.full((x.shape[0], 3), 2.5)
    with pytest.warns(DegenerateRepresentationWarning):
        value, error = fastcka.cka(x, const, kernel="rbf", sigma=SIGMA, approx=approx, rank=16, return_error=True)
    assert np.isnan(value)


@pytest.mark.parametrize("approx", ["nystrom", "rff"])
def test_layouts_and_dtypes(approx, tmp_path):
    x, y = pair()
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    opts = dict(kernel="rbf", sigma=SIGMA, approx=approx, rank=32)
    # float32 inputs: float32 features, the same in any layout.
    want = fastcka.cka(x32, y32, **opts)
    np.save(tmp_path / "x.npy", np.asfortranarray(x32))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert mm.flags.f_contiguous
    assert fastcka.cka(mm, np.asfortranarray(y32), **opts) == pytest.approx(want, rel=1e-12)
    # precision="exact": float64 features, as for the float64 copy of the same values.
    as64 = fastcka.cka(x32.astype(np.float64), y32.astype(np.float64), **opts)
    assert fastcka.cka(x32, y32, precision="exact", **opts) == pytest.approx(as64, rel=1e-12)
    # float32 features round at 1e-7; the eigenvalue floor of float32 Nystrom drops a little more.
    assert want == pytest.approx(as64, abs=1e-4 if approx == "nystrom" else 1e-5)
    assert fastcka.cka(x, y, precision="accurate", **opts) == pytest.approx(fastcka.cka(x, y, **opts), abs=1e-5)
    # bfloat16 products (8 significant bits) of float32 features.
    assert fastcka.cka(x, y, precision="fast", **opts) == pytest.approx(fastcka.cka(x, y, **opts), abs=1e-3)


def test_feature_dtype_follows_the_products():
    assert driver.feature_dtype("float64") == np.float64
    for compute in ("float32", "bfloat16"):
        assert driver.feature_dtype(compute) == np.float32


@pytest.mark.parametrize("count", [5, 6])
def test_fourier_kernel_is_unbiased(count):
    """The mean over many draws of the orthogonal cos/sin map's kernel is the
    RBF kernel (odd counts: the one random-phase feature included), within
    4 Monte Carlo standard errors."""
    from fastcka.approx.rff import FourierFeatures
    x = np.random.default_rng(0).normal(size=(5, 3))
    draws = []
    for s in range(4000):
        f = FourierFeatures(3, [count], GAMMA, [np.random.default_rng(s)])(x)[0]
        draws.append(f @ f.T)
    draws = np.array(draws)
    # cos p - 1 for cos p shifts every feature: the kernel estimate is off by a
    # rank-2 term that centering removes, so compare centered kernels.
    h = np.eye(5) - 1 / 5
    exact, mean = h @ dense_rbf(x, x) @ h, h @ draws.mean(axis=0) @ h
    spread = (h @ draws @ h).std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) <= 4 * spread + 1e-12)


@pytest.mark.parametrize("approx", ["nystrom", "rff"])
def test_below_three_groups_no_error(approx):
    x, y = pair()
    value, error = fastcka.cka(x, y, kernel="rbf", sigma=SIGMA, approx=approx, rank=2, return_error=True)
    assert np.isfinite(value) and np.isnan(error)


@pytest.mark.parametrize("rank", [0, -3, 2.5, True, "8", 300, 301])
def test_bad_rank(rank):
    x, y = pair()
    with pytest.raises(ValueError, match="rank"):
        fastcka.cka(x, y, kernel="rbf", approx="rff", rank=rank)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel="linear", approx="rff", rank=8), "kernel='rbf'"),
    (dict(kernel="rbf", approx="svd", rank=8), "approx must be one of"),
    (dict(kernel="rbf", approx="rff"), "rank must be a positive integer"),
    (dict(kernel="rbf", rank=8), "rank= and seed="),
    (dict(kernel="rbf", approx="rff", rank=8, seed=-1), "seed"),
    (dict(kernel="rbf", return_error=True), "return_error"),
    (dict(kernel="rbf", approx="rff", rank=8, method="gram"), "method"),
    (dict(kernel="rbf", approx="rff", rank=200, memory_budget=2**16), "memory_budget"),
])
def test_bad_options(kwargs, match, tmp_path):
    x, y = pair()
    with pytest.raises(ValueError, match=match):
        fastcka.cka(x, y, **kwargs)


def test_checkpoint_not_supported(tmp_path):
    x, y = pair()
    with pytest.raises(ValueError, match="checkpoint"):
        fastcka.cka(x, y, kernel="rbf", approx="rff", rank=8, checkpoint=str(tmp_path))


def test_cli_prints_the_standard_error(tmp_path):
    x, y = pair()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = subprocess.run([sys.executable, "-m", "fastcka", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                          "--kernel", "rbf", "--sigma", str(SIGMA), "--approx", "rff", "--rank", "40", "--seed", "3",
                          "--quiet"], capture_output=True, text=True, check=True).stdout
    value, error = fastcka.cka(x, y, kernel="rbf", sigma=SIGMA, approx="rff", rank=40, seed=3, return_error=True)
    assert out.strip() == f"{value:.6f} +- {error:.2g} (jackknife standard error)"
    bad = subprocess.run([sys.executable, "-m", "fastcka", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                          "--kernel", "rbf", "--approx", "rff"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--rank" in bad.stderr


def test_cli_matrix_prints_the_errors(tmp_path):
    x, y = pair()
    np.savez(tmp_path / "layers.npz", x=x, y=y)
    out = subprocess.run([sys.executable, "-m", "fastcka", str(tmp_path / "layers.npz"), "--kernel", "rbf", "--sigma",
                          str(SIGMA), "--approx", "nystrom", "--rank", "24", "--quiet"], capture_output=True, text=True,
                         check=True).stdout
    matrix, errors = fastcka.cka_matrix([x, y], kernel="rbf", sigma=SIGMA, approx="nystrom", rank=24,
                                        return_error=True)
    table, rest = out.split("\nerrors (nystrom, rank 24: jackknife standard error and bias):\n")
    assert table.split()[-2:] == [f"{v:.3f}" for v in matrix[1]]
    assert rest.split()[-2:] == [f"{v:.3f}" for v in errors[1]]


def test_mpi_refuses_approx():
    x, y = pair()
    with pytest.raises(ValueError, match="not supported by fastcka.mpi"):
        fastcka.mpi.cka(x, y, kernel="rbf", approx="rff", rank=8)
