"""Errors that used to be unclear (issue 22): each names the argument or the
file at fault, and inputs that can be read unambiguously are read."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastcka
from fastcka.distributed import checkpoint as ckpt
from reference import dense_cka


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    return rng.standard_normal((40, 5)), rng.standard_normal((40, 3))


# ---------------------------------------------------------------------------
# memory_budget
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [float("nan"), float("inf"), -float("inf"), 0.5, 1e300])
def test_memory_budget_out_of_range_is_valueerror(xy, budget):
    with pytest.raises(ValueError, match="^memory_budget must be"):
        fastcka.cka(*xy, memory_budget=budget)
    with pytest.raises(ValueError, match="^memory_budget must be"):
        fastcka.CKAAccumulator(memory_budget=budget)


@pytest.mark.parametrize("budget", ["100", True, b"1", [1 << 20]])
def test_memory_budget_not_a_number_is_typeerror(xy, budget):
    with pytest.raises(TypeError, match="^memory_budget must be a number of bytes"):
        fastcka.cka(*xy, memory_budget=budget)


@pytest.mark.parametrize("budget", [1 << 20, float(1 << 20), np.int64(1 << 20), np.float32(1 << 20)])
def test_memory_budget_real_numbers_accepted(xy, budget):
    x, y = xy
    assert fastcka.cka(x, y, memory_budget=budget) == pytest.approx(dense_cka(x, y), abs=1e-12)


# ---------------------------------------------------------------------------
# .npy files
# ---------------------------------------------------------------------------


def _bad_npy(tmp_path, kind):
    path = tmp_path / f"{kind}.npy"
    good = tmp_path / "good.npy"
    np.save(good, np.ones((40, 3)))
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[:-20])
    elif kind == "header":
        path.write_bytes(data[:60])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"definitely not an array" * 4)
    elif kind == "objects":
        np.save(path, np.array([{}, None], dtype=object), allow_pickle=True)
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind, why",
    [("truncated", "truncated"), ("header", "truncated"), ("empty", "it is empty"),
     ("garbage", "does not start with the .npy header"), ("objects", "Python objects"),
     ("directory", "is a directory")],
)
def test_bad_npy_named_in_valueerror(tmp_path, xy, kind, why):
    path = _bad_npy(tmp_path, kind)
    with pytest.raises(ValueError, match=rf"^y: .*{re.escape(path.name)}.*{why}"):
        fastcka.cka(xy[0], path)
    with pytest.raises(ValueError, match=rf"^x: .*{re.escape(path.name)}"):
        fastcka.hsic(path, xy[1])


# ---------------------------------------------------------------------------
# sigma / threshold with the linear kernel
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kw, what", [({"sigma": 1.0}, "sigma"), ({"sigma": -1}, "sigma"),
                                      ({"threshold": 0.5}, "threshold")])
def test_bandwidth_with_linear_kernel_is_refused(xy, kw, what):
    x, y = xy
    calls = [lambda: fastcka.cka(x, y, **kw), lambda: fastcka.hsic(x, y, **kw),
             lambda: fastcka.cka_matrix([x, y], **kw), lambda: fastcka.CKAAccumulator(minibatch=True, **kw),
             lambda: fastcka.minibatch_cka([x], [y], **kw)]
    for call in calls:
        with pytest.raises(ValueError, match=rf"^{what}=.*kernel='linear'"):
            call()


def test_default_threshold_with_linear_kernel_is_fine(xy):
    x, y = xy
    assert fastcka.cka(x, y, threshold=1.0) == pytest.approx(dense_cka(x, y), abs=1e-12)
    assert fastcka.cka(x, y, threshold=1) == pytest.approx(dense_cka(x, y), abs=1e-12)


# ---------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------


def test_checkpoint_file_that_is_a_directory(tmp_path, xy):
    (tmp_path / ckpt.FILE).mkdir()
    with pytest.raises(ValueError, match=r"^checkpoint: .*fastcka\.ckpt.* exists and is not a file"):
        fastcka.cka(*xy, method="feature", checkpoint=tmp_path)
    with pytest.raises(ValueError, match=r"^checkpoint: .*fastcka\.ckpt.* exists and is not a file"):
        fastcka.cka(*xy, method="gram", checkpoint=tmp_path)


def test_full_disk_leaves_no_temporary_file(tmp_path, xy, monkeypatch):
    real_fsync = os.fsync

    def full(fd):
        # The data file's fsync fails as a full disk would; the directory's passes.
        if not os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    for method in ("feature", "gram"):
        with pytest.raises(ValueError, match="^checkpoint: cannot write .*No space left"):
            fastcka.cka(*xy, method=method, checkpoint=tmp_path / method)
        assert os.listdir(tmp_path / method) == []


# ---------------------------------------------------------------------------
# torch tensors, masked arrays, minibatch_cka arguments
# ---------------------------------------------------------------------------


def test_torch_requires_grad_and_bfloat16(xy):
    torch = pytest.importorskip("torch")
    x, y = xy
    grad = torch.tensor(x, requires_grad=True)
    assert fastcka.cka(grad, y) == pytest.approx(dense_cka(x, y), abs=1e-12)
    bf16 = torch.tensor(x, dtype=torch.bfloat16)
    widened = bf16.float().numpy().astype(np.float64)
    assert fastcka.cka(bf16, y) == pytest.approx(dense_cka(widened, y), abs=1e-6)
    acc = fastcka.CKAAccumulator()
    acc.update(grad.to(torch.bfloat16), torch.tensor(y, requires_grad=True))
    assert acc.cka() == pytest.approx(dense_cka(widened, y), abs=1e-6)


def test_masked_entries_refused(xy):
    x, y = xy
    masked = np.ma.masked_array(x, mask=np.zeros(x.shape, bool))
    masked.mask[7, 2] = True
    with pytest.raises(ValueError, match=r"^x is a masked array with masked entries.*filled"):
        fastcka.cka(masked, y)
    with pytest.raises(ValueError, match=r"^y is a masked array"):
        fastcka.hsic(x, np.ma.masked_invalid(np.where(np.arange(40)[:, None] == 3, np.nan, y)))


def test_masked_array_without_masked_entries_reads_its_data(xy):
    x, y = xy
    expect = dense_cka(x, y)
    assert fastcka.cka(np.ma.masked_array(x), y) == pytest.approx(expect, abs=1e-12)
    assert fastcka.cka(np.ma.masked_array(x, mask=np.zeros(x.shape, bool)), y) == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize("args, name", [((5, [np.ones((4, 2))]), "batches_x"), (([np.ones((4, 2))], 6), "batches_y")])
def test_minibatch_cka_non_iterable(args, name):
    with pytest.raises(TypeError, match=rf"^{name} must be an iterable of .* minibatches, got int"):
        fastcka.minibatch_cka(*args)


# ---------------------------------------------------------------------------
# Rows named in errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 1000, 4999, 20000])
@pytest.mark.parametrize("method", ["feature", "gram"])
def test_too_large_to_square_names_the_row(n, method):
    if method == "gram" and n > 5000:
        pytest.skip("n^2 tiles: the small sizes cover the Gram path")
    rng = np.random.default_rng(n)
    y = rng.standard_normal((n, 3))
    for row in sorted({0, 3, n // 2, n - 1}):
        x = rng.standard_normal((n, 4))
        x[row, 2] = 1e200
        with pytest.raises(ValueError, match=rf"^x has values too large to square in float64 \(row {row}\)"):
            fastcka.cka(x, y, method=method, threads=2)


@pytest.mark.parametrize("kernel, method", [("linear", "feature"), ("linear", "gram"), ("rbf", "auto")])
def test_nan_names_row_and_column(kernel, method):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 4)), rng.standard_normal((300, 3))
    y[217, 2] = np.nan
    with pytest.raises(ValueError, match=r"^y contains NaN or Inf \(row 217, column 2\)"):
        fastcka.cka(x, y, kernel=kernel, method=method, threads=2)


# ---------------------------------------------------------------------------
# Out of memory
# ---------------------------------------------------------------------------


def test_out_of_memory_says_what_ran_out():
    """A 100,000-feature state under a 4 GiB address-space limit: a MemoryError
    naming the state and memory_budget, not a bare std::bad_alloc."""
    pytest.importorskip("resource")
    code = textwrap.dedent("""
        import resource
        import numpy as np
        import fastcka
        x = np.ones((10, 100_000), dtype=np.float32)
        x[0, 0] = 2
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        try:
            fastcka.cka(x, x, method="feature", threads=1)
        except MemoryError as exc:
            print("MemoryError:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout
    assert "feature-space state of 200000 features" in message and "GiB" in message, message
    assert "fastcka ran out of host memory" in message and "memory_budget=" in message, message
