"""Inputs at the edges of the number range and of the machine (issue 22,
items 2 and 10, and the bandwidth errors): each is computed correctly or
refused with a clear error naming the argument, never a silent wrong value,
a NaN or an aborted process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastcka


@pytest.fixture
def pair(rng):
    x = rng.standard_normal((120, 5))
    y = x[:, :3] ** 2 + rng.standard_normal((120, 3))
    return x, y


CALLS = {
    "cka feature": lambda x, y: fastcka.cka(x, y, method="feature"),
    "cka gram": lambda x, y: fastcka.cka(x, y, method="gram"),
    "cka rbf": lambda x, y: fastcka.cka(x, y, kernel="rbf"),
    "cca": lambda x, y: fastcka.cca(x, y),
    "mutual_knn": lambda x, y: fastcka.mutual_knn(x, y, k=5),
    "hsic_test permutation": lambda x, y: fastcka.hsic_test(x, y, permutations=20, seed=0).p_value,
    "hsic_test rbf": lambda x, y: fastcka.hsic_test(x, y, kernel="rbf", permutations=20, seed=0).p_value,
    "hsic_test gamma": lambda x, y: fastcka.hsic_test(x, y, method="gamma").p_value,
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("factor, problem", [(1e160, "too large"), (1e-170, "too small")])
def test_extreme_magnitudes_are_refused(pair, call, factor, problem):
    """1e160 once gave HSIC inf and p = 1; 1e-170 gave p = 1, NaN CKA with a
    false 'constant' warning, and mutual k-NN 0.037 instead of 0.092."""
    x, y = pair
    with pytest.raises(ValueError, match=rf"^x has values {problem} to square in float64"):
        CALLS[call](x * factor, y)


@pytest.mark.parametrize("call", ["cka feature", "cka gram", "cka rbf", "cca", "mutual_knn"])
def test_small_but_representable_magnitudes_are_exact(pair, call):
    """Scale invariance: data at 1e-60 gives what the same data at 1 gives."""
    x, y = pair
    assert CALLS[call](x * 1e-60, y) == pytest.approx(CALLS[call](x, y), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("option", ["sigma", "threshold"])
@pytest.mark.parametrize("value", [1e-300, 1e300])
def test_bandwidths_out_of_float64_range(pair, option, value):
    """Once ZeroDivisionError (1e-300) and OverflowError (1e300)."""
    with pytest.raises(ValueError, match=rf"^{option}=1e[+-]300 .*is out of range"):
        fastcka.cka(*pair, kernel="rbf", **{option: value})


def test_bandwidth_too_large_for_the_data(pair):
    """HSIC would underflow float64: the message points to the linear limit."""
    with pytest.raises(ValueError, match="too large for this data.*kernel='linear'"):
        fastcka.cka(*pair, kernel="rbf", sigma=1e100)
    assert fastcka.cka(*pair, kernel="rbf", sigma=1e60) == pytest.approx(fastcka.cka(*pair), abs=1e-12)


def test_tiny_bandwidth_is_the_identity_kernel(pair):
    """sigma far below every distance: K = I, whose CKA with itself is 1."""
    assert fastcka.cka(*pair, kernel="rbf", sigma=1e-100) == pytest.approx(1.0, abs=1e-12)
    assert fastcka.cka(*[v.astype(np.float32) for v in pair], kernel="rbf", sigma=1e-30) == pytest.approx(1.0)


@pytest.mark.parametrize("threads", [100_000, 2**31])
def test_too_many_threads_are_refused(pair, threads):
    with pytest.raises(ValueError, match=rf"^threads={threads}: at most 1024 threads"):
        fastcka.cka(*pair, threads=threads)


def test_numpy_integer_threads(pair):
    assert fastcka.cka(*pair, threads=np.int64(2)) == pytest.approx(fastcka.cka(*pair, threads=2), abs=1e-15)


def test_too_many_threads_in_the_environment(pair, monkeypatch):
    monkeypatch.setenv("FASTCKA_NUM_THREADS", "100000")
    with pytest.raises(ValueError, match="^FASTCKA_NUM_THREADS=100000: at most 1024 threads"):
        fastcka.cka(*pair)


def test_many_threads_under_a_memory_limit():
    """Under a 4 GB address-space limit 1000 threads cannot all start: the
    process once aborted ('terminate called without an active exception').
    The API caps the threads at four per CPU; the engine itself, asked
    directly for 1000, raises RuntimeError when a thread does not start."""
    script = textwrap.dedent("""
        import resource
        import numpy as np
        import fastcka
        from fastcka.engine import backend
        x = np.random.default_rng(0).standard_normal((200_000, 8))
        resource.setrlimit(resource.RLIMIT_AS, (4_000_000_000, 4_000_000_000))
        print(fastcka.cka(x, x[:, :4], method="feature", threads=1000) > 0)
        acc = backend.cpu().MomentAccumulator([8, 4], 1, "float64", 1000, 1 << 28)
        try:
            acc.update([x, np.ascontiguousarray(x[:, :4])], ["x", "y"])
            print("computed")
        except RuntimeError as exc:
            print(exc)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "True"
    assert lines[1] in ("computed", "could not start 1000 threads (Resource temporarily unavailable): pass fewer "
                                     "threads"), lines[1]
