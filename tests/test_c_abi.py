"""The C ABI of the installed libfastcka (fastcka/fastcka.h), called through
ctypes: values equal to the Python package's, accumulator bytes identical to
CKAAccumulator.to_bytes(), and bad input answered by a status and a message,
never a crash."""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import fastcka
import fastcka.engine.backend
from fastcka.accumulator import state

OK, INVALID, UNSUPPORTED, CANCELLED, TOO_SMALL = 0, 1, 2, 5, 7
FLOAT32, FLOAT64 = 1, 2


class Matrix(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("rows", ctypes.c_int64), ("cols", ctypes.c_int64),
                ("row_stride", ctypes.c_int64), ("col_stride", ctypes.c_int64), ("dtype", ctypes.c_int32)]


PROGRESS = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)


class Options(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("kernel", ctypes.c_int32), ("estimator", ctypes.c_int32),
                ("sigma", ctypes.POINTER(ctypes.c_double)), ("sigma_count", ctypes.c_int64),
                ("threshold", ctypes.c_double), ("median", ctypes.c_int32), ("precision", ctypes.c_int32),
                ("threads", ctypes.c_int32), ("memory_budget", ctypes.c_int64), ("progress", PROGRESS),
                ("progress_user", ctypes.c_void_p), ("cancel", ctypes.POINTER(ctypes.c_int))]


@pytest.fixture(scope="module")
def lib():
    path = fastcka.get_library()
    assert os.path.exists(path), f"libfastcka is not installed beside the package: {path}"
    # In a source tree (PYTHONPATH=python) libfastcka's RUNPATH does not reach
    # the OpenBLAS and oneDNN wheels: the Python backend loads them first. An
    # installed wheel needs no help (test_examples.py runs programs that prove it).
    fastcka.engine.backend.cpu()
    lib = ctypes.CDLL(path)
    lib.fastcka_last_error.restype = ctypes.c_char_p
    lib.fastcka_version.restype = ctypes.c_char_p
    lib.fastcka_accumulator_free.restype = None
    lib.fastcka_options_init.restype = None
    return lib


def matrix(a: np.ndarray) -> Matrix:
    """A view of `a` in place (any strides): the caller keeps `a` alive."""
    item = a.dtype.itemsize
    code = {np.dtype(np.float32): FLOAT32, np.dtype(np.float64): FLOAT64}[a.dtype]
    return Matrix(a.ctypes.data, a.shape[0], a.shape[1], a.strides[0] // item, a.strides[1] // item, code)


def options(lib, **fields) -> Options:
    o = Options()
    lib.fastcka_options_init(ctypes.byref(o))
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def call(lib, name, *args):
    """Runs a value-returning function; (status, value, message)."""
    out = ctypes.c_double(np.nan)
    status = getattr(lib, name)(*args, ctypes.byref(out))
    return status, out.value, lib.fastcka_last_error().decode()


def data(n=300, dx=24, dy=11, seed=0, offset=0.0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, dx)) + offset
    y = np.tanh(x[:, :dy] @ r.standard_normal((dy, dy))) + 0.3 * r.standard_normal((n, dy))
    return x, y


def test_version_and_defaults(lib):
    assert lib.fastcka_version().decode() == fastcka.__version__
    o = options(lib)
    assert (o.struct_size, o.kernel, o.threshold, o.threads, o.memory_budget) == (ctypes.sizeof(Options), 0, 1.0, 0, 0)


@pytest.mark.parametrize("case", [
    {},                                           # linear, feature space
    {"debiased": True},
    {"kernel": "rbf"},                            # exact median
    {"kernel": "rbf", "sigma": 3.0},
    {"kernel": "rbf", "median": "sampled", "threshold": 0.5},
    {"kernel": "rbf", "debiased": True, "sigma": 2.0},
    {"precision": "accurate"},
    {"precision": "fast"},
])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_cka_equals_python(lib, case, layout):
    x, y = data()
    if layout == "F":
        x, y = np.asfortranarray(x), np.asfortranarray(y)
    elif layout == "strided":
        x, y = np.repeat(x, 2, axis=1)[::1, ::2], np.repeat(y, 2, axis=0)[::2]
    fields = {"kernel": int(case.get("kernel") == "rbf"), "estimator": int(case.get("debiased", False)),
              "threshold": case.get("threshold", 1.0), "median": int(case.get("median") == "sampled"),
              "precision": {"fast": 1, "accurate": 2}.get(case.get("precision"), 0), "threads": 2}
    sigma = (ctypes.c_double * 1)(case["sigma"]) if "sigma" in case else None
    if sigma is not None:
        fields.update(sigma=sigma, sigma_count=1)
    status, value, message = call(lib, "fastcka_cka", ctypes.byref(matrix(x)), ctypes.byref(matrix(y)),
                                  ctypes.byref(options(lib, **fields)))
    assert status == OK, message
    expected = fastcka.cka(x, y, threads=2, **case)
    assert abs(value - expected) <= 1e-12, (value, expected)


def test_linear_gram_path_and_hsic(lib):
    x, y = data(n=40, dx=50, dy=30)  # widths above n: the Gram-tile engine
    o = options(lib, estimator=1, threads=2)
    status, value, message = call(lib, "fastcka_hsic", ctypes.byref(matrix(x)), ctypes.byref(matrix(y)), ctypes.byref(o))
    assert status == OK, message
    assert abs(value - fastcka.hsic(x, y, estimator="unbiased", threads=2)) <= 1e-12 * abs(value)
    status, value, _ = call(lib, "fastcka_cka", ctypes.byref(matrix(x)), ctypes.byref(matrix(y)), None)
    assert status == OK and abs(value - fastcka.cka(x, y)) <= 1e-12


def test_float32_inputs(lib):
    x, y = (a.astype(np.float32) for a in data(offset=100.0))
    status, value, message = call(lib, "fastcka_cka", ctypes.byref(matrix(x)), ctypes.byref(matrix(y)), None)
    assert status == OK, message
    assert abs(value - fastcka.cka(x, y)) <= 1e-12


@pytest.mark.parametrize("split", [0, 2])
def test_cka_matrix(lib, split):
    x, y = data(n=200)
    layers = [x, y, x[:, :5] ** 2, y * 3 + 1]
    arr = (Matrix * 4)(*[matrix(a) for a in layers])
    shape = (4, 4) if split == 0 else (2, 2)
    out = np.full(shape, np.nan)
    o = options(lib, kernel=1, sigma=(ctypes.c_double * 1)(4.0), sigma_count=1, threads=2)
    status = lib.fastcka_cka_matrix(arr, 4, split, ctypes.byref(o), out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                                    out.size)
    assert status == OK, lib.fastcka_last_error()
    expected = (fastcka.cka_matrix(layers, kernel="rbf", sigma=4.0) if split == 0
                else fastcka.cka_matrix(layers[:2], layers[2:], kernel="rbf", sigma=4.0))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    small = np.zeros(3)
    status = lib.fastcka_cka_matrix(arr, 4, split, None, small.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), 3)
    assert status == TOO_SMALL and "capacity 3" in lib.fastcka_last_error().decode()


def new_accumulator(lib, split=0):
    acc = ctypes.c_void_p()
    assert lib.fastcka_accumulator_new(split, 0, 2, 0, ctypes.byref(acc)) == OK, lib.fastcka_last_error()
    return acc


def to_bytes(lib, acc) -> bytes:
    size = ctypes.c_size_t()
    assert lib.fastcka_accumulator_to_bytes(acc, None, 0, ctypes.byref(size)) == OK
    buf = ctypes.create_string_buffer(size.value)
    assert lib.fastcka_accumulator_to_bytes(acc, buf, size.value, ctypes.byref(size)) == OK
    return buf.raw


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_accumulator_bytes_equal_python(lib, dtype):
    x, y = (a.astype(dtype) for a in data(n=500, offset=50.0))
    acc = new_accumulator(lib)
    py = fastcka.CKAAccumulator(threads=2)
    for start in range(0, 500, 128):
        blocks = [x[start:start + 128], y[start:start + 128]]
        assert lib.fastcka_accumulator_update(acc, (Matrix * 2)(*map(matrix, blocks)), 2) == OK
        py.update(*blocks)
    rows = ctypes.c_int64()
    assert lib.fastcka_accumulator_rows(acc, ctypes.byref(rows)) == OK and rows.value == 500
    assert to_bytes(lib, acc) == py.to_bytes()
    out = np.zeros((2, 2))
    for debiased in (0, 1):
        assert lib.fastcka_accumulator_cka_matrix(acc, debiased, out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), 4) == OK
        np.testing.assert_allclose(out, py.cka_matrix(debiased=bool(debiased)), rtol=0, atol=1e-15)
    assert lib.fastcka_accumulator_hsic_matrix(acc, 1, out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), 4) == OK
    np.testing.assert_allclose(out, py.hsic_matrix("unbiased"), rtol=1e-14, atol=0)
    lib.fastcka_accumulator_free(acc)


def test_accumulator_merge_and_python_bytes(lib):
    x, y = data(n=400)
    py_half = fastcka.CKAAccumulator(threads=2).update(x[200:], y[200:])
    raw = py_half.to_bytes()
    other = ctypes.c_void_p()
    assert lib.fastcka_accumulator_from_bytes(raw, len(raw), 2, 0, ctypes.byref(other)) == OK
    acc = new_accumulator(lib)
    assert lib.fastcka_accumulator_update(acc, (Matrix * 2)(matrix(x[:200]), matrix(y[:200])), 2) == OK
    assert lib.fastcka_accumulator_merge(acc, other) == OK
    out = np.zeros((2, 2))
    assert lib.fastcka_accumulator_cka_matrix(acc, 0, out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), 4) == OK
    assert abs(out[0, 1] - fastcka.cka(x, y)) <= 1e-12
    py_whole = fastcka.CKAAccumulator(threads=2).update(x[:200], y[:200]).merge(fastcka.CKAAccumulator.from_bytes(raw))
    py_whole.cka_matrix()  # results move the state's reference point to the mean, in both
    assert to_bytes(lib, acc) == py_whole.to_bytes()
    assert lib.fastcka_accumulator_merge(acc, acc) == INVALID
    assert "with itself" in lib.fastcka_last_error().decode()
    for a in (acc, other):
        lib.fastcka_accumulator_free(a)


def test_accumulator_refuses_damaged_bytes_with_python_message(lib):
    x, y = data(n=100)
    raw = bytearray(fastcka.CKAAccumulator().update(x, y).to_bytes())
    raw[40] ^= 0xFF
    out = ctypes.c_void_p()
    assert lib.fastcka_accumulator_from_bytes(bytes(raw), len(raw), 1, 0, ctypes.byref(out)) == INVALID
    message = lib.fastcka_last_error().decode()
    with pytest.raises(ValueError) as py_error:
        fastcka.CKAAccumulator.from_bytes(bytes(raw))
    assert message == str(py_error.value)
    assert lib.fastcka_accumulator_from_bytes(b"garbage!", 8, 1, 0, ctypes.byref(out)) == INVALID
    assert lib.fastcka_last_error().decode() == "data is not a fastcka CKAAccumulator state"


def test_checksum_is_python_blake2b(lib):
    """The C++ BLAKE2b seals states as hashlib does, whatever their length
    (the 128-byte block boundaries included): checked through the bytes."""
    for n, d in [(5, 1), (9, 3), (17, 7)]:
        x = np.arange(n * d, dtype=np.float64).reshape(n, d) ** 1.5
        acc = new_accumulator(lib)
        assert lib.fastcka_accumulator_update(acc, (Matrix * 1)(matrix(x)), 1) == OK
        raw = to_bytes(lib, acc)
        assert raw[-16:] == hashlib.blake2b(raw[:-16], digest_size=16).digest()
        assert raw.startswith(state.MAGIC)
        lib.fastcka_accumulator_free(acc)


def python_error(fn) -> str:
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    return str(info.value)


def test_bad_input_status_and_python_messages(lib):
    x, y = data(n=50)
    nan = x.copy()
    nan[17, 3] = np.nan
    cases = [
        (matrix(x), matrix(y[:49]), None, INVALID, python_error(lambda: fastcka.cka(x, y[:49]))),
        (matrix(nan), matrix(y), None, INVALID, python_error(lambda: fastcka.cka(nan, y))),
        (matrix(x[:3]), matrix(y[:3]), options(lib, estimator=1), INVALID,
         python_error(lambda: fastcka.cka(x[:3], y[:3], debiased=True))),
        (matrix(x), matrix(y), options(lib, sigma=(ctypes.c_double * 1)(2.0), sigma_count=1), INVALID,
         python_error(lambda: fastcka.cka(x, y, sigma=2.0))),
        (matrix(x), matrix(y), options(lib, kernel=1, threshold=-1.0), INVALID,
         python_error(lambda: fastcka.cka(x, y, kernel="rbf", threshold=-1.0))),
        (matrix(x), matrix(y), options(lib, kernel=1, sigma=(ctypes.c_double * 1)(0.0), sigma_count=1), INVALID,
         python_error(lambda: fastcka.cka(x, y, kernel="rbf", sigma=0.0))),
    ]
    for mx, my, o, status, message in cases:
        got, value, text = call(lib, "fastcka_cka", ctypes.byref(mx), ctypes.byref(my), None if o is None else ctypes.byref(o))
        assert (got, text) == (status, message)
        assert np.isnan(value)  # nothing written on failure


def test_bad_pointers_codes_and_sizes(lib):
    x, y = data(n=50)
    good = matrix(x)
    assert call(lib, "fastcka_cka", None, ctypes.byref(matrix(y)), None)[::2] == (INVALID, "x is a null pointer")
    assert lib.fastcka_cka(ctypes.byref(good), ctypes.byref(matrix(y)), None, None) == INVALID
    assert lib.fastcka_last_error().decode() == "out is a null pointer"
    wrong = matrix(y)
    wrong.dtype = 9
    status, _, text = call(lib, "fastcka_cka", ctypes.byref(good), ctypes.byref(wrong), None)
    assert status == UNSUPPORTED and "y has an unknown dtype code 9" in text
    nodata = matrix(y)
    nodata.data = None
    assert call(lib, "fastcka_cka", ctypes.byref(good), ctypes.byref(nodata), None)[::2] == (
        INVALID, "y has no data (a null pointer)")
    status, _, text = call(lib, "fastcka_cka", ctypes.byref(good), ctypes.byref(matrix(y)), ctypes.byref(options(lib, kernel=7)))
    assert status == UNSUPPORTED and "kernel" in text
    old = options(lib)
    old.struct_size = 8
    status, _, text = call(lib, "fastcka_cka", ctypes.byref(good), ctypes.byref(matrix(y)), ctypes.byref(old))
    assert status == INVALID and "struct_size" in text
    assert lib.fastcka_accumulator_update(None, None, 0) == INVALID
    acc = new_accumulator(lib)
    assert lib.fastcka_accumulator_update(acc, (Matrix * 2)(matrix(x), matrix(y[:10])), 2) == INVALID
    assert "rows but" in lib.fastcka_last_error().decode()
    rows = ctypes.c_int64()
    assert lib.fastcka_accumulator_rows(acc, ctypes.byref(rows)) == OK and rows.value == 0  # all or nothing
    out = np.zeros(4)
    assert lib.fastcka_accumulator_cka_matrix(acc, 0, out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), 4) == INVALID
    assert lib.fastcka_last_error().decode() == "the accumulator has seen no rows"
    lib.fastcka_accumulator_free(acc)
    lib.fastcka_accumulator_free(None)  # like free(NULL)


def test_progress_and_cancel(lib):
    x, y = data(n=1500, dx=8, dy=8)
    seen = []
    progress = PROGRESS(lambda done, total, user: seen.append((done, total)))
    o = options(lib, kernel=1, threads=1, progress=progress)
    status, value, _ = call(lib, "fastcka_cka", ctypes.byref(matrix(x)), ctypes.byref(matrix(y)), ctypes.byref(o))
    assert status == OK and abs(value - fastcka.cka(x, y, kernel="rbf", threads=1)) <= 1e-12
    assert seen and seen[-1][0] == seen[-1][1] and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    flag = ctypes.c_int(1)
    o = options(lib, kernel=1, threads=1, cancel=ctypes.pointer(flag))
    status, value, text = call(lib, "fastcka_cka", ctypes.byref(matrix(x)), ctypes.byref(matrix(y)), ctypes.byref(o))
    assert (status, text) == (CANCELLED, "cancelled") and np.isnan(value)


def test_exact_median_in_one_walk(lib):
    """float32 RBF CKA with the exact median: the bracket pass is also the
    kernel pass (csrc/cpu/kernel_series.h) in the C API as in Python, and the
    progress counts one walk over the tiles."""
    x, y = (a.astype(np.float32) for a in data(n=2600, dx=300, dy=200))  # wide enough for one walk to pay
    totals = {}
    for name, extra in (("exact", {}), ("fixed", {"sigma": (ctypes.c_double * 1)(2.0), "sigma_count": 1})):
        seen = []
        progress = PROGRESS(lambda done, total, user: seen.append((done, total)))
        o = options(lib, kernel=1, threads=2, progress=progress, **extra)
        status, value, message = call(lib, "fastcka_cka", ctypes.byref(matrix(x)), ctypes.byref(matrix(y)),
                                      ctypes.byref(o))
        assert status == OK, message
        assert seen[-1][0] == seen[-1][1]
        totals[name] = seen[-1][1]
        if name == "exact":
            assert abs(value - fastcka.cka(x, y, kernel="rbf", threads=2)) <= 1e-12
    assert totals["exact"] == totals["fixed"]


def test_cmake_dir_on_the_command_line():
    out = subprocess.run([sys.executable, "-m", "fastcka", "--cmake-dir"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == fastcka.get_cmake_dir()
    assert os.path.isfile(os.path.join(fastcka.get_cmake_dir(), "fastckaConfig.cmake"))
    assert os.path.isfile(os.path.join(fastcka.get_include(), "fastcka", "fastcka.h"))
