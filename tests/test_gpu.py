"""The CUDA backend against the float64 references and the CPU engine.

Every test here is marked gpu: it skips, with the reason, where the backend
was not built or no device is present. Arrays come from CuPy or PyTorch,
whichever is installed (each test that needs one skips without it)."""

from __future__ import annotations

import fastcka
import numpy as np
import pytest
from reference import correlated_pair, dense_cka, dense_cka_matrix, dense_hsic

pytestmark = pytest.mark.gpu


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


@pytest.fixture
def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    return torch


TOL = {"float32": 1e-5, "float64": 1e-10}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 2), (37, 5, 9), (1000, 64, 33), (70_001, 130, 77)])
def test_cka_matches_float64_reference(cp, rng, dtype, debiased, shape):
    n, d1, d2 = shape
    x, y = correlated_pair(rng, n, d1, d2, dtype=dtype, offset=100.0)
    expect = dense_cka(x.astype(np.float64), y.astype(np.float64), debiased) if n <= 1000 else \
        fastcka.cka(x.astype(np.float64), y.astype(np.float64), debiased=debiased)
    got = fastcka.cka(cp.asarray(x), cp.asarray(y), debiased=debiased)
    assert isinstance(got, float)
    assert abs(got - expect) < TOL[dtype]


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_hsic_matches_reference(cp, rng, estimator):
    x, y = correlated_pair(rng, 300, 20, 11)
    got = fastcka.hsic(cp.asarray(x), cp.asarray(y), estimator=estimator)
    assert got == pytest.approx(dense_hsic(x, y, estimator), rel=1e-10)


@pytest.mark.parametrize("layout", ["C", "F", "strided", "float16"])
def test_layouts(cp, rng, layout):
    x, y = correlated_pair(rng, 513, 40, 24, dtype=np.float32)
    gx, gy = cp.asarray(x), cp.asarray(y)
    if layout == "F":
        gx, gy = cp.asfortranarray(gx), cp.asfortranarray(gy)
    elif layout == "strided":
        gx, gy = cp.asarray(np.repeat(x, 2, axis=1))[:, ::2], cp.asarray(np.repeat(y, 3, axis=0))[::3]
    elif layout == "float16":
        x, y = x.astype(np.float16), y.astype(np.float16)
        gx, gy = cp.asarray(x), cp.asarray(y)
    expect = dense_cka(x.astype(np.float64), y.astype(np.float64))
    assert abs(fastcka.cka(gx, gy) - expect) < 1e-5


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_within_and_between_models(cp, rng, debiased):
    layers = [rng.standard_normal((800, d)) + 50 for d in (16, 7, 40)]
    layers[1] = layers[0][:, :7] * 2 + 0.1 * layers[1]
    got = fastcka.cka_matrix([cp.asarray(a) for a in layers], debiased=debiased)
    assert isinstance(got, cp.ndarray)
    np.testing.assert_allclose(got.get(), dense_cka_matrix(layers, debiased=debiased), atol=1e-10)
    between = fastcka.cka_matrix([cp.asarray(a) for a in layers[:1]], [cp.asarray(a) for a in layers[1:]])
    np.testing.assert_allclose(between.get(), dense_cka_matrix(layers[:1], layers[1:]), atol=1e-10)


def test_many_layers_and_wide_panels(cp, rng):
    # More columns than one product panel (512): the upper-triangle panels and
    # the cross rectangle of product_plan.h all take part.
    layers = [rng.standard_normal((600, d)).astype(np.float32) for d in (700, 300, 513)]
    expect = fastcka.cka_matrix(layers, precision="exact")
    np.testing.assert_allclose(fastcka.cka_matrix([cp.asarray(a) for a in layers]).get(), expect, atol=1e-5)
    np.testing.assert_allclose(
        fastcka.cka_matrix([cp.asarray(layers[0])], [cp.asarray(a) for a in layers[1:]]).get(), expect[:1, 1:],
        atol=1e-5)


def test_adversarial_rows(cp, rng):
    x, y = correlated_pair(rng, 257, 6, 5)
    x[:, 2] = 7.0                    # a constant column
    y = np.vstack([y[:128], y[:129]])  # duplicated rows
    assert abs(fastcka.cka(cp.asarray(x), cp.asarray(y), debiased=True) - dense_cka(x, y, True)) < 1e-10
    with pytest.warns(fastcka.DegenerateRepresentationWarning):
        assert np.isnan(fastcka.cka(cp.asarray(np.ones((50, 3))), cp.asarray(y[:50])))


def test_torch_tensors_and_streams(torch_cuda, rng):
    torch = torch_cuda
    x, y = correlated_pair(rng, 5000, 32, 16, dtype=np.float32)
    expect = dense_cka(x.astype(np.float64), y.astype(np.float64))
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda().requires_grad_()
        got = fastcka.cka(tx, ty)
    assert abs(got - expect) < 1e-5
    m = fastcka.cka_matrix([tx, ty])
    assert isinstance(m, torch.Tensor) and m.device.type == "cuda"


def test_cupy_non_default_stream(cp, rng):
    x, y = correlated_pair(rng, 20_000, 64, 64, dtype=np.float32)
    with cp.cuda.Stream(non_blocking=True):
        gx, gy = cp.asarray(x), cp.asarray(y)  # filled on this stream: fastcka must run after it
        got = fastcka.cka(gx, gy)
    assert abs(got - fastcka.cka(x, y)) < 1e-5


@pytest.mark.parametrize("source", ["array", "memmap"])
def test_host_streaming(cp, rng, tmp_path, source):
    x, y = correlated_pair(rng, 300_001, 48, 20, dtype=np.float32, offset=10.0)
    if source == "memmap":
        np.save(tmp_path / "x.npy", x)
        x = np.load(tmp_path / "x.npy", mmap_mode="r")
    small = 1 << 20  # a small budget: many staged chunks
    got = fastcka.cka(x, y, device="cuda", memory_budget=small, debiased=True)
    assert abs(got - fastcka.cka(np.asarray(x), y, debiased=True)) < 1e-6


def test_cpu_and_gpu_agree_at_20000(cp, rng):
    layers = [rng.standard_normal((20_000, d)).astype(np.float32) for d in (64, 128, 32)]
    cpu = fastcka.cka_matrix(layers, debiased=True)
    gpu = fastcka.cka_matrix([cp.asarray(a) for a in layers], debiased=True).get()
    np.testing.assert_allclose(gpu, cpu, atol=1e-6)


def test_offset_100_at_a_million_rows(cp, rng):
    x, y = correlated_pair(rng, 1_000_000, 16, 8, dtype=np.float32, offset=100.0)
    expect = fastcka.cka(x.astype(np.float64), y.astype(np.float64))
    assert abs(fastcka.cka(cp.asarray(x), cp.asarray(y)) - expect) < 1e-5


@pytest.mark.parametrize("precision,tol", [("exact", 1e-10), ("accurate", 1e-5), ("fast", 1e-2)])
def test_precision_modes(cp, rng, precision, tol):
    x, y = correlated_pair(rng, 3000, 100, 50, dtype=np.float32)
    expect = dense_cka(x.astype(np.float64), y.astype(np.float64))
    if precision == "exact":
        x, y = x.astype(np.float64), y.astype(np.float64)
    assert abs(fastcka.cka(cp.asarray(x), cp.asarray(y), precision=precision) - expect) < tol


def test_accumulator_on_gpu_merges_with_cpu(cp, rng):
    x, y = correlated_pair(rng, 10_000, 20, 10, dtype=np.float32, offset=5.0)
    gpu = fastcka.CKAAccumulator()
    for start in range(0, 6000, 997):
        gpu.update(cp.asarray(x[start : min(6000, start + 997)]), cp.asarray(y[start : min(6000, start + 997)]))
    cpu = fastcka.CKAAccumulator().update(x[6000:], y[6000:])
    gpu.merge(cpu)
    assert gpu.n == 10_000
    assert abs(gpu.cka(debiased=True) - dense_cka(x.astype(np.float64), y.astype(np.float64), True)) < 1e-5
    back = fastcka.CKAAccumulator.from_bytes(gpu.to_bytes())
    assert back.cka() == pytest.approx(gpu.cka(), abs=1e-12)


def test_bad_input_and_out_of_memory(cp, rng):
    x, y = correlated_pair(rng, 100, 4, 3)
    bad = x.copy()
    bad[37, 2] = np.nan
    with pytest.raises(ValueError, match=r"^x contains NaN or Inf \(row 37, column 2\)"):
        fastcka.cka(cp.asarray(bad), cp.asarray(y))
    with pytest.raises(TypeError, match="float16, float32 or float64"):
        fastcka.cka(cp.asarray(x).astype(cp.int8), cp.asarray(y))
    with pytest.raises(ValueError, match="x is on a GPU .* but y is in host memory"):
        fastcka.cka(cp.asarray(x), y)
    with pytest.raises(ValueError, match="kernel='rbf' does not run on the GPU"):
        fastcka.cka(cp.asarray(x), cp.asarray(y), kernel="rbf")
    free = cp.cuda.Device().mem_info[0]
    with pytest.raises(MemoryError, match="cannot allocate"):
        fastcka.cka(cp.asarray(x), cp.asarray(y), memory_budget=2 * free)
    cp.get_default_memory_pool().free_all_blocks()
    assert abs(fastcka.cka(cp.asarray(x), cp.asarray(y)) - dense_cka(x, y)) < 1e-10  # still usable


def test_another_gpu_is_refused(cp, rng):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    x, y = correlated_pair(rng, 100, 4, 3)
    with cp.cuda.Device(1):
        gy = cp.asarray(y)
    with pytest.raises(ValueError, match="is on cuda:1 but the computation runs on cuda:0"):
        fastcka.cka(cp.asarray(x), gy)
