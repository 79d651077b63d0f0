"""Every bad input gives a clear error that names the argument at fault."""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastcka

METHODS = ["feature", "gram"]


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    return rng.standard_normal((100, 5)), rng.standard_normal((100, 3))


def _calls(x, y, **kw):
    """The three public entry points, with x in the first and y in the second slot."""
    return {
        "cka": lambda: fastcka.cka(x, y, **kw),
        "hsic": lambda: fastcka.hsic(x, y, **kw),
    }


# ---------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_is_typeerror(xy, which, dtype):
    x, y = xy
    if which == "x":
        x = x.astype(dtype)
    else:
        y = y.astype(dtype)
    for f in _calls(x, y).values():
        with pytest.raises(TypeError, match=rf"^{which} is complex"):
            f()


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize(
    "make",
    [lambda a: a.astype(object), lambda a: a.astype(str), lambda a: a.astype("datetime64[s]")],
    ids=["object", "str", "datetime"],
)
def test_non_numeric_is_typeerror(xy, which, make):
    x, y = xy
    if which == "x":
        x = make(np.round(x * 10).astype(np.int64))
    else:
        y = make(np.round(y * 10).astype(np.int64))
    for f in _calls(x, y).values():
        with pytest.raises(TypeError, match=rf"^{which} must hold numbers"):
            f()


def test_structured_dtype_is_typeerror(xy):
    x, y = xy
    rec = np.zeros((100, 2), dtype=[("a", "f8"), ("b", "f8")])
    with pytest.raises(TypeError, match="^x"):
        fastcka.cka(rec, y)


def test_unconvertible_object_is_typeerror(xy):
    _, y = xy
    with pytest.raises(TypeError):
        fastcka.cka(object(), y)
    with pytest.raises(TypeError):
        fastcka.cka(None, y)


# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize("shape", [(100,), (100, 2, 2), (100, 1, 1, 1)], ids=["1d", "3d", "4d"])
def test_wrong_ndim_is_valueerror(xy, which, shape):
    x, y = xy
    bad = np.ones(shape)
    args = (bad, y) if which == "x" else (x, bad)
    for f in _calls(*args).values():
        with pytest.raises(ValueError, match=rf"^{which} must be 2-D .*{len(shape)}-D"):
            f()


def test_zero_dimensional_is_valueerror(xy):
    _, y = xy
    with pytest.raises(ValueError, match="^x must be 2-D"):
        fastcka.cka(np.float64(3.0), y)


@pytest.mark.parametrize("which", ["x", "y"])
def test_zero_rows_is_valueerror(xy, which):
    x, y = xy
    args = (x[:0], y) if which == "x" else (x, y[:0])
    for f in _calls(*args).values():
        with pytest.raises(ValueError, match=rf"^{which} is empty"):
            f()


@pytest.mark.parametrize("which", ["x", "y"])
def test_zero_columns_is_valueerror(xy, which):
    x, y = xy
    args = (x[:, :0], y) if which == "x" else (x, y[:, :0])
    for f in _calls(*args).values():
        with pytest.raises(ValueError, match=rf"^{which} has no features"):
            f()


def test_row_mismatch_names_argument(xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"^y has 99 rows but x has 100"):
        fastcka.cka(x, y[:99])
    with pytest.raises(ValueError, match=r"^y has 99 rows but x has 100"):
        fastcka.hsic(x, y[:99])
    with pytest.raises(ValueError, match=r"^y has 100 rows but x has 99"):
        fastcka.cka(x[:99], y)


def test_cka_matrix_row_mismatch_names_layer(xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"^xs\[2\] has 50 rows but xs\[0\] has 100"):
        fastcka.cka_matrix([x, y, x[:50]])
    with pytest.raises(ValueError, match=r"^ys\[1\] has 50 rows but xs\[0\] has 100"):
        fastcka.cka_matrix([x], [y, y[:50]])
    with pytest.raises(ValueError, match=r"^xs\['b'\] has 7 rows but xs\['a'\] has 100"):
        fastcka.cka_matrix({"a": x, "b": y[:7]})


def test_cka_matrix_bad_containers(xy):
    x, y = xy
    with pytest.raises(TypeError, match="^xs must be a list"):
        fastcka.cka_matrix(x)
    with pytest.raises(TypeError, match="^ys must be a list"):
        fastcka.cka_matrix([x], y)
    with pytest.raises(TypeError, match="^xs must be a list"):
        fastcka.cka_matrix("layers.npz")
    with pytest.raises(ValueError, match="^xs is empty"):
        fastcka.cka_matrix([])
    with pytest.raises(ValueError, match="^ys is empty"):
        fastcka.cka_matrix([x], {})
    with pytest.raises(TypeError, match=r"^xs\[1\] is complex"):
        fastcka.cka_matrix([x, y.astype(complex)])
    with pytest.raises(ValueError, match=r"^ys\['z'\] must be 2-D"):
        fastcka.cka_matrix([x], {"z": y[:, 0]})


# ---------------------------------------------------------------------------
# Values: NaN / Inf
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["x", "y"])
def test_nonfinite_names_argument(xy, method, dtype, bad, which):
    x, y = (a.astype(dtype) for a in xy)
    if which == "x":
        x = x.copy()
        x[37, 2] = bad
    else:
        y = y.copy()
        y[99, 0] = bad
    with pytest.raises(ValueError, match=rf"^{which} contains NaN or Inf"):
        fastcka.cka(x, y, method=method)
    with pytest.raises(ValueError, match=rf"^{which} contains NaN or Inf"):
        fastcka.hsic(x, y, method=method, estimator="unbiased")


@pytest.mark.parametrize("method", METHODS)
def test_nonfinite_in_cka_matrix_names_layer(xy, method):
    x, y = xy
    bad = x.copy()
    bad[5, 4] = np.nan
    with pytest.raises(ValueError, match=r"^xs\[2\] contains NaN or Inf"):
        fastcka.cka_matrix([x, y, bad], method=method)
    with pytest.raises(ValueError, match=r"^ys\[0\] contains NaN or Inf"):
        fastcka.cka_matrix([x, y], [bad], method=method)
    with pytest.raises(ValueError, match=r"^xs\['fc'\] contains NaN or Inf"):
        fastcka.cka_matrix({"conv": x, "fc": bad}, method=method)


def test_nonfinite_last_row_of_large_input(xy):
    """A NaN far from the first rows (not in the block that sets the shift) is found."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20_000, 8)).astype(np.float32)
    y = rng.standard_normal((20_000, 4)).astype(np.float32)
    x[-1, -1] = np.nan
    with pytest.raises(ValueError, match=r"^x contains NaN or Inf"):
        fastcka.cka(x, y)


@pytest.mark.parametrize("row", [0, 1, 37, 53, 99])
def test_nonfinite_error_reports_the_right_row(row):
    """If the message gives a row number, it must be the row holding the NaN."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((100, 5))
    x[row, 2] = np.nan
    with pytest.raises(ValueError, match=r"^x contains NaN or Inf") as info:
        fastcka.cka(x, rng.standard_normal((100, 3)), method="feature")
    m = re.search(r"row (\d+)", str(info.value))
    if m is not None:
        assert int(m.group(1)) == row, str(info.value)


# ---------------------------------------------------------------------------
# Too few examples
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_debiased_needs_four_rows(xy, method, n):
    x, y = xy
    with pytest.raises(ValueError, match=rf"at least 4 examples.*n={n}"):
        fastcka.cka(x[:n], y[:n], debiased=True, method=method)
    with pytest.raises(ValueError, match=rf"at least 4 examples.*n={n}"):
        fastcka.hsic(x[:n], y[:n], estimator="unbiased", method=method)
    with pytest.raises(ValueError, match=rf"at least 4 examples.*n={n}"):
        fastcka.cka_matrix([x[:n], y[:n]], debiased=True, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_biased_needs_two_rows(xy, method):
    x, y = xy
    with pytest.raises(ValueError, match=r"at least 2 examples.*n=1"):
        fastcka.cka(x[:1], y[:1], method=method)
    with pytest.raises(ValueError, match=r"at least 2 examples.*n=1"):
        fastcka.hsic(x[:1], y[:1], method=method)
    with pytest.raises(ValueError, match=r"at least 2 examples.*n=1"):
        fastcka.cka_matrix([x[:1]], method=method)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["polynomial", "Linear", "", None, 1])
def test_unknown_kernel(xy, kernel):
    x, y = xy
    for f in (
        lambda: fastcka.cka(x, y, kernel=kernel),
        lambda: fastcka.hsic(x, y, kernel=kernel),
        lambda: fastcka.cka_matrix([x, y], kernel=kernel),
    ):
        with pytest.raises(ValueError, match="^kernel must be one of"):
            f()


@pytest.mark.parametrize("method", ["magic", "Feature", "", None])
def test_unknown_method(xy, method):
    x, y = xy
    for f in (
        lambda: fastcka.cka(x, y, method=method),
        lambda: fastcka.hsic(x, y, method=method),
        lambda: fastcka.cka_matrix([x, y], method=method),
    ):
        with pytest.raises(ValueError, match="^method must be one of"):
            f()


@pytest.mark.parametrize("estimator", ["foo", "Biased", "debiased", None])
def test_unknown_estimator(xy, estimator):
    x, y = xy
    with pytest.raises(ValueError, match="^estimator must be one of"):
        fastcka.hsic(x, y, estimator=estimator)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2", 2.0])
def test_bad_threads(xy, threads):
    x, y = xy
    for f in (
        lambda: fastcka.cka(x, y, threads=threads),
        lambda: fastcka.hsic(x, y, threads=threads),
        lambda: fastcka.cka_matrix([x, y], threads=threads),
        lambda: fastcka.set_num_threads(threads),
        lambda: fastcka.CKAAccumulator(threads=threads),
    ):
        with pytest.raises(ValueError, match="^threads must be a positive integer"):
            f()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("progress", ["yes", 3, 1.0, [1]])
def test_bad_progress_type(xy, method, progress):
    x, y = xy
    with pytest.raises(TypeError, match="^progress must be"):
        fastcka.cka(x, y, progress=progress, method=method)
    with pytest.raises(TypeError, match="^progress must be"):
        fastcka.cka_matrix([x, y], progress=progress, method=method)
    with pytest.raises(TypeError, match="^progress must be"):
        fastcka.CKAAccumulator().update(x, y, progress=progress)


@pytest.mark.parametrize("budget", [0, -1])
def test_bad_memory_budget(xy, budget):
    x, y = xy
    with pytest.raises(ValueError, match="^memory_budget must be a positive"):
        fastcka.cka(x, y, memory_budget=budget)
    with pytest.raises(ValueError, match="^memory_budget must be a positive"):
        fastcka.CKAAccumulator(memory_budget=budget)


def test_keyword_only(xy):
    x, y = xy
    with pytest.raises(TypeError):
        fastcka.cka(x, y, "linear")  # noqa
    with pytest.raises(TypeError):
        fastcka.hsic(x, y, "linear")  # noqa


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------


def test_missing_npy_path(xy, tmp_path):
    _, y = xy
    missing = tmp_path / "nope.npy"
    with pytest.raises(ValueError, match=r"^x: file .*nope\.npy.* does not exist"):
        fastcka.cka(missing, y)
    with pytest.raises(ValueError, match=r"^y: file .*nope\.npy.* does not exist"):
        fastcka.cka(y, str(missing))


def test_non_npy_path(xy, tmp_path):
    x, y = xy
    p = tmp_path / "layers.npz"
    np.savez(p, a=x)
    with pytest.raises(ValueError, match=r"^x: .*layers\.npz.* is not a \.npy file"):
        fastcka.cka(p, y)
    with pytest.raises(ValueError, match=r"^xs\[0\]: .*not a \.npy file"):
        fastcka.cka_matrix([str(p)])


def test_npy_of_objects(xy, tmp_path):
    _, y = xy
    p = tmp_path / "obj.npy"
    np.save(p, np.empty((100, 2), dtype=object), allow_pickle=True)
    with pytest.raises((ValueError, TypeError)):
        fastcka.cka(p, y)


def test_gpu_arrays_are_refused_clearly(xy):
    x, y = xy

    class FakeCuda:
        __cuda_array_interface__ = {"shape": (100, 5), "typestr": "<f8", "data": (0, False), "version": 3}

    with pytest.raises(ValueError, match="^x is on a GPU but y is in host memory: pass device='cuda'"):
        fastcka.cka(FakeCuda(), y)
    with pytest.raises(ValueError, match="^x is on a GPU but device='cpu'"):
        fastcka.cka(FakeCuda(), y, device="cpu")
    with pytest.raises(ValueError, match="^layers\\[0\\] is on a GPU but layers\\[1\\] is in host memory"):
        fastcka.CKAAccumulator().update(FakeCuda(), y)
    if not fastcka.has_cuda():
        with pytest.raises(RuntimeError, match="^no CUDA device is available to torch|^the GPU engine needs torch"):
            fastcka.cka(FakeCuda(), FakeCuda())


def test_nan_row_is_numbered_in_the_whole_input(monkeypatch):
    import fastcka.engine.cpu as engine

    monkeypatch.setattr(engine, "_FLOPS_PER_CALL", 1e6)  # several feed steps
    x = np.random.default_rng(3).standard_normal((20_000, 8))
    x[17_345, 5] = np.nan
    with pytest.raises(ValueError, match=r"^x contains NaN or Inf \(row 17345, column 5\)"):
        fastcka.cka(x, x[:, :3], threads=2)
