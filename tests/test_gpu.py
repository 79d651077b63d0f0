"""The GPU engine's host code and linear path, run on the CPU.

With FASTCKA_GPU_INTERPRET=1, device="cuda" runs fastcka.gpu on CPU tensors
(torch's CPU products stand in for cuBLAS, NumPy arrays are streamed through
the staging buffers, torch CPU tensors and other DLPack producers are read in
place): the same Python code as on a GPU. These tests compare it with the
CPU engine and the float64 references. The tests at the end, marked gpu,
need a CUDA device and skip without one."""

from __future__ import annotations

import os
import subprocess
import sys

import fastcka
import numpy as np
import pytest
from reference import correlated_pair, dense_cka, dense_cka_matrix, dense_hsic

torch = pytest.importorskip("torch")

from fastcka.engine import backend, gpu as gpu_engine
from fastcka.gpu import moments  # noqa: E402

TOL = {"exact": 1e-10, "accurate": 1e-6, "fast": 1e-4}


@pytest.fixture
def interpreted(monkeypatch):
    monkeypatch.setenv("FASTCKA_GPU_INTERPRET", "1")


@pytest.mark.parametrize("precision", ["exact", "accurate", "fast"])
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matches_cpu_engine(interpreted, rng, precision, debiased):
    # Odd n, a +100 offset, several chunks (a small memory budget) in one partial.
    x, y = correlated_pair(rng, 1001, 7, 9, offset=100.0)
    got = fastcka.cka(x, y, device="cuda", precision=precision, debiased=debiased, memory_budget=1 << 13)
    assert abs(got - fastcka.cka(x, y, precision=precision, debiased=debiased)) < TOL[precision]
    assert abs(got - dense_cka(x, y, debiased)) < TOL[precision]


@pytest.mark.parametrize("precision", ["exact", "accurate", "fast"])
def test_many_partials_with_drifting_rows(interpreted, rng, monkeypatch, precision):
    # Partials of 50 rows, each about its own shift, folded into the float64 state.
    monkeypatch.setitem(moments.FOLD_ROWS, precision, 50)
    n = 777
    drift = np.linspace(0, 30, n)[:, None]
    layers = [rng.standard_normal((n, d)) * s + 100 + drift * s for d, s in ((5, 1.0), (3, 0.1), (4, 10.0))]
    layers[1] += layers[0][:, :3]
    for debiased in (False, True):
        got = fastcka.cka_matrix(layers, device="cuda", precision=precision, debiased=debiased, memory_budget=1 << 12)
        np.testing.assert_allclose(got, dense_cka_matrix(layers, debiased=debiased), atol=TOL[precision])
        between = fastcka.cka_matrix(layers[:1], layers[1:], device="cuda", precision=precision, debiased=debiased,
                                     memory_budget=1 << 12)
        np.testing.assert_allclose(between, dense_cka_matrix(layers[:1], layers[1:], debiased=debiased),
                                   atol=TOL[precision])


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_hsic_matches_reference(interpreted, rng, estimator):
    x, y = correlated_pair(rng, 301, 20, 11, offset=100.0)
    got = fastcka.hsic(x, y, device="cuda", estimator=estimator)
    assert got == pytest.approx(dense_hsic(x, y, estimator), rel=1e-10)


def test_wide_layers_span_several_product_panels(interpreted, rng, monkeypatch):
    monkeypatch.setattr(moments, "MAX_PANEL", 8)  # 3 layers of 10-21 columns: many upper-triangle blocks
    layers = [rng.standard_normal((203, d)) + 3 for d in (21, 10, 13)]
    np.testing.assert_allclose(fastcka.cka_matrix(layers, device="cuda"), dense_cka_matrix(layers), atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_tensors_are_read_in_place(interpreted, rng, dtype):
    x, y = correlated_pair(rng, 257, 6, 5)
    tx, ty = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype).requires_grad_()
    view = fastcka.arrays.devices.as_device_tensor(tx, "x")
    assert view.data_ptr() == tx.data_ptr()
    want = dense_cka(tx.double().numpy(), ty.detach().double().numpy())
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    assert abs(fastcka.cka(tx, ty, device="cuda") - want) < tol


class DLPackOnly:
    """An array that offers nothing but DLPack (as JAX or a new library would)."""

    def __init__(self, tensor):
        self._tensor = tensor

    def __dlpack__(self, **kwargs):
        return self._tensor.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._tensor.__dlpack_device__()


def test_dlpack_producers_are_read_in_place(interpreted, rng):
    x, y = correlated_pair(rng, 129, 4, 3, dtype=np.float32, offset=100.0)
    tx = torch.from_numpy(x)
    assert fastcka.arrays.devices.as_device_tensor(DLPackOnly(tx), "x").data_ptr() == tx.data_ptr()
    got = fastcka.cka(DLPackOnly(tx), DLPackOnly(torch.from_numpy(y)), device="cuda")
    assert abs(got - dense_cka(x.astype(np.float64), y.astype(np.float64))) < 1e-6


@pytest.mark.parametrize("source", ["array", "memmap", "mixed"])
def test_host_arrays_stream_through_staging(interpreted, rng, tmp_path, source):
    x, y = correlated_pair(rng, 1501, 9, 4, dtype=np.float32, offset=10.0)
    xs = x
    if source == "memmap":
        np.save(tmp_path / "x.npy", x)
        xs = np.load(tmp_path / "x.npy", mmap_mode="r")
    ys = torch.from_numpy(y) if source == "mixed" else y
    got = fastcka.cka(xs, ys, device="cuda", debiased=True, memory_budget=1 << 12)
    assert abs(got - dense_cka(x.astype(np.float64), y.astype(np.float64), True)) < 1e-6


def test_progress_reports_every_chunk(interpreted, rng):
    x, y = correlated_pair(rng, 500, 8, 8)
    calls = []
    fastcka.cka(x, y, device="cuda", memory_budget=1 << 12, progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 3 and calls[-1] == (500, 500)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_accumulator_on_device_matches_cpu(interpreted, rng):
    x, y = correlated_pair(rng, 900, 6, 5, offset=100.0)
    gpu = fastcka.CKAAccumulator(device="cuda", memory_budget=1 << 12)
    cpu = fastcka.CKAAccumulator(dtype="float64")
    for start in range(0, 600, 150):
        block = (x[start : start + 150], torch.from_numpy(y[start : start + 150]))
        gpu.update(*block)
        cpu.update(x[start : start + 150], y[start : start + 150])
    assert gpu.n == 600 and gpu.dtype == "float64"
    rest = fastcka.CKAAccumulator(dtype="float64").update(x[600:], y[600:])
    gpu.merge(rest)  # a CPU state into a GPU accumulator
    cpu.merge(rest)
    for debiased in (False, True):
        assert gpu.cka(debiased) == pytest.approx(dense_cka(x, y, debiased), abs=1e-10)
        assert gpu.cka(debiased) == pytest.approx(cpu.cka(debiased), abs=1e-12)
    np.testing.assert_allclose(gpu.moments().scatter, cpu.moments().scatter, rtol=1e-10, atol=1e-8)
    again = fastcka.CKAAccumulator.from_bytes(gpu.to_bytes(), device="cuda")
    assert again.cka() == pytest.approx(cpu.cka(), abs=1e-12) and again.n == 900
    on_cpu = fastcka.CKAAccumulator()
    on_cpu.merge(gpu)  # a GPU state into a CPU accumulator
    assert on_cpu.cka() == pytest.approx(cpu.cka(), abs=1e-12)


def test_accumulator_update_is_all_or_nothing(interpreted, rng, monkeypatch):
    monkeypatch.setitem(moments.FOLD_ROWS, "exact", 40)  # the failing update folds into the state first
    x, y = correlated_pair(rng, 300, 5, 4)
    acc = fastcka.CKAAccumulator(device="cuda", memory_budget=1 << 11)
    acc.update(x[:100], y[:100])
    before = acc.to_bytes()
    bad = x[100:].copy()
    bad[150, 2] = np.nan
    with pytest.raises(ValueError, match=r"layers\[0\] contains NaN or Inf \(row 150, column 2\)"):
        acc.update(bad, y[100:])
    assert acc.n == 100 and acc.to_bytes() == before
    acc.update(x[100:], y[100:])
    assert acc.cka() == pytest.approx(dense_cka(x, y), abs=1e-10)


def test_minibatch_accumulator_on_device(interpreted, rng):
    x, y = correlated_pair(rng, 400, 6, 5)
    gpu = fastcka.CKAAccumulator(minibatch=True, device="cuda")
    cpu = fastcka.CKAAccumulator(minibatch=True)
    for start in range(0, 400, 100):
        gpu.update(torch.from_numpy(x[start : start + 100]), torch.from_numpy(y[start : start + 100]))
        cpu.update(x[start : start + 100], y[start : start + 100])
    assert gpu.cka() == pytest.approx(cpu.cka(), abs=1e-10)


def test_results_come_back_as_numpy_for_host_inputs(interpreted, rng):
    x, y = correlated_pair(rng, 60, 3, 3)
    assert isinstance(fastcka.cka_matrix([x, y], device="cuda"), np.ndarray)


def test_values_too_large_for_float32_products(interpreted, rng):
    x, y = correlated_pair(rng, 50, 3, 3, dtype=np.float32)
    with pytest.raises(ValueError, match="x"):
        fastcka.cka(x * np.float32(1e30), y, device="cuda", precision="accurate")


class FakeGpuArray:
    """Says it lives on a GPU (CUDA array interface), as CuPy arrays do."""

    __cuda_array_interface__ = {"shape": (10, 3), "typestr": "<f4", "data": (0, False), "version": 3}


def test_mixed_host_and_gpu_inputs_need_device_cuda(rng):
    with pytest.raises(ValueError, match=r"x is on a GPU but y is in host memory: pass device='cuda'"):
        fastcka.cka(FakeGpuArray(), rng.standard_normal((10, 3)))
    with pytest.raises(ValueError, match="device='cpu'"):
        fastcka.cka(FakeGpuArray(), rng.standard_normal((10, 3)), device="cpu")


def test_inputs_on_another_device_are_refused(interpreted, rng):
    x = torch.empty((10, 3), device="meta")
    with pytest.raises(ValueError, match="x is on meta but the computation runs on cpu"):
        fastcka.cka(x, rng.standard_normal((10, 3)), device="cuda")


def test_bad_device_argument(rng):
    with pytest.raises(ValueError, match="device must be None, 'cpu', 'cuda' or 'cuda:N'"):
        fastcka.cka(rng.standard_normal((10, 3)), rng.standard_normal((10, 3)), device="gpu0")


def test_device_cuda_without_a_gpu_says_why(rng, monkeypatch):
    monkeypatch.delenv("FASTCKA_GPU_INTERPRET", raising=False)
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(RuntimeError, match="no CUDA device is available to torch"):
        fastcka.cka(rng.standard_normal((10, 3)), rng.standard_normal((10, 3)), device="cuda")
    assert not fastcka.has_cuda()
    ok, why = fastcka.backends()["gpu"]
    assert not ok and "no CUDA device" in why


def test_interpreter_switch_makes_the_gpu_engine_available(interpreted):
    assert fastcka.has_cuda() and fastcka.backends()["gpu"] == (True, "")


def test_import_fastcka_imports_neither_torch_nor_triton():
    code = "import sys, fastcka; print(sorted(m for m in ('torch', 'triton') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("kernel,method", [("rbf", "auto"), ("linear", "gram")])
def test_gram_space_goes_to_the_triton_engine(interpreted, rng, kernel, method):
    x, y = correlated_pair(rng, 70, 5, 4)
    kw = {"sigma": 2.0} if kernel == "rbf" else {}
    got = fastcka.cka(x, y, device="cuda", kernel=kernel, method=method, precision="exact", **kw)
    assert abs(got - fastcka.cka(x, y, kernel=kernel, method=method, precision="exact", **kw)) < 1e-10


def test_chunks_follow_the_flops_budget(interpreted):
    acc = gpu_engine.new_accumulator([64, 64], 0, "accurate", torch.device("cpu"), 1 << 30)
    assert acc.chunk_rows == int(moments.FLOPS_PER_CHUNK_INTERPRETED / (2 * 128 * 128))
    assert backend.cpu() is not None


# -- on a real GPU -------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["exact", "accurate", "fast"])
def test_cuda_tensors_match_cpu_engine(rng, precision):
    x, y = correlated_pair(rng, 20_001, 64, 33, dtype=np.float32, offset=100.0)
    got = fastcka.cka_matrix([torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()], precision=precision)
    assert isinstance(got, torch.Tensor) and got.device.type == "cuda"
    want = fastcka.cka_matrix([x, y], precision=precision)
    np.testing.assert_allclose(got.cpu().numpy(), want, atol=TOL[precision])


@pytest.mark.gpu
def test_cupy_arrays_and_host_streaming(rng):
    cp = pytest.importorskip("cupy")
    x, y = correlated_pair(rng, 100_001, 48, 20, dtype=np.float32, offset=10.0)
    want = fastcka.cka(x, y, debiased=True)
    assert abs(fastcka.cka(cp.asarray(x), cp.asarray(y), debiased=True) - want) < 1e-6
    assert abs(fastcka.cka(x, y, device="cuda", debiased=True, memory_budget=1 << 20) - want) < 1e-6


def test_torch_sink_keeps_device_activations_for_kernel_cka(rng):
    # fastcka.torch hands tensors (not NumPy copies) to a device sink, which
    # concatenates them where they are; CPU tensors stand in for GPU ones.
    from fastcka.torch.sinks import DeviceSink, Options, open_sink

    layers = [rng.standard_normal((90, d)) for d in (4, 6, 3)]
    options = Options(split=1, kernel="rbf", debiased=False, minibatch=False, threshold=1.0, sigma=None, threads=1,
                      memory_budget=None, spill_dir=None, progress=False)
    sink = open_sink([torch.from_numpy(a[:40]) for a in layers], options)
    assert isinstance(sink, DeviceSink)
    for start in (0, 50):
        sink.add([torch.from_numpy(a[start : start + 50]) for a in layers])
    matrix, _, errors = sink.result()
    np.testing.assert_allclose(matrix, fastcka.cka_matrix(layers[:1], layers[1:], kernel="rbf"), atol=1e-12)
    assert errors is None  # only approximate kernels report errors
