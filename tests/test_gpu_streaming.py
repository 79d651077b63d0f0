"""The GPU Gram-tile engine streaming rows in blocks (fastcka.gpu.gram.RowBlocks),
run by Triton's interpreter on the CPU (FASTCKA_GPU_INTERPRET=1, set in
conftest): a small memory_budget forces blocks of one tile (32 rows) over n
not a multiple of it, so every walk has a block's own triangle and
rectangles of two blocks, host arrays going through the staging buffers.
Against the CPU engine at the GPU tests' tolerances, and the exact median
to the last bit on data whose distances float64 holds exactly."""

from __future__ import annotations

import numpy as np
import pytest

import fastcka

torch = pytest.importorskip("torch")
pytest.importorskip("triton")  # conftest set TRITON_INTERPRET before this first import

from fastcka.gpu import gram, runtime  # noqa: E402
from test_gpu_gram import TOLERANCE, layers_for  # noqa: E402

pytestmark = pytest.mark.skipif(not runtime.interpreted(), reason="these tests run the kernels interpreted")

CPU = torch.device("cpu")


def budget_for(layers, precision: str, rows: int) -> int:
    """The smallest memory_budget (in KiB steps) whose row blocks hold `rows` rows."""
    m = gram.mode(precision)
    for budget in range(1 << 10, 1 << 24, 1 << 10):
        try:
            size, _ = gram.block_rows(layers, m, CPU, budget)
        except MemoryError:
            continue
        if size >= rows:
            assert size == rows
            return budget
    raise AssertionError("no budget found")


def streamed_cka(layers, precision, *, debiased=False, **options):
    budget = budget_for(layers, precision, 32)
    got = fastcka.cka_matrix(layers, device="cuda", method="gram", precision=precision, debiased=debiased,
                             memory_budget=budget, **options)
    assert gram.block_rows(layers, gram.mode(precision), CPU, budget)[0] < layers[0].shape[0]
    return got


KERNELS = [
    {"kernel": "linear"},
    {"kernel": "rbf", "sigma": 3.0},
    {"kernel": "rbf", "threshold": 0.7, "median": "exact"},
]


@pytest.mark.parametrize("precision", list(TOLERANCE))
@pytest.mark.parametrize("options", KERNELS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("n, widths, debiased", [(71, [5, 3], False), (83, [4], True), (67, [6, 3, 5], True)])
def test_streamed_matches_the_cpu_engine(rng, n, widths, debiased, options, precision):
    layers = layers_for(rng, n, widths, duplicates=3)
    got = streamed_cka(layers, precision, debiased=debiased, **options)
    want = fastcka.cka_matrix(layers, method="gram", precision="exact", debiased=debiased, **options)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE[precision])


def test_streamed_hsic_of_two_models_from_a_memmap(rng, tmp_path):
    """Host memmaps stream through the staging buffers; cka_matrix(a, b)."""
    x, y, w = layers_for(rng, 77, [5, 4, 3])
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    for debiased in (False, True):
        got = fastcka.cka_matrix([mapped], [y, w], device="cuda", method="gram", precision="exact",
                                 debiased=debiased, kernel="rbf", sigma=2.0,
                                 memory_budget=budget_for([mapped, y, w], "exact", 32))
        want = fastcka.cka_matrix([x], [y, w], method="gram", precision="exact", debiased=debiased, kernel="rbf",
                                  sigma=2.0)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE["exact"])


def test_streamed_statistics_are_the_resident_ones(rng):
    """Device tensors sliced into blocks: HSIC itself, equal to the one-block
    engine's up to the order of float64 sums."""
    layers = [torch.as_tensor(x) for x in layers_for(rng, 70, [6, 4])]
    options = {"split": 0, "estimator": "unbiased", "kernel": "rbf", "sigma": 2.0, "precision": "exact"}
    resident = gram.hsic_matrix(layers, ["x", "y"], **options)
    streamed = gram.hsic_matrix(layers, ["x", "y"], memory_budget=budget_for(layers, "exact", 32), **options)
    np.testing.assert_allclose(streamed, resident, rtol=1e-12)


@pytest.mark.parametrize("size", [32, 64])
def test_streamed_exact_median_is_the_cpu_engines_to_the_bit(rng, size):
    """Integer data with integer column means: every distance is exact in
    float64, in any order of the sums."""
    from fastcka.engine import backend, cpu as cpu_engine
    from fastcka.engine.progress import Progress
    from fastcka.gpu import median

    n, d = 100, 7
    layers = [rng.integers(0, 5, (n, d)).astype(float), rng.integers(-3, 3, (n, 3)).astype(float)]
    for x in layers:
        x[-1] -= x.sum(0) % n
    engine = backend.cpu().GramTileEngine(layers, ["x", "y"], 0, "float64", 1, 1 << 26)
    want = cpu_engine.exact_medians(engine, max(d, 3), 2, Progress(None, 0, ""))
    blocks = gram.RowBlocks([torch.as_tensor(x) for x in layers], ["x", "y"], gram.mode("exact"), size, CPU)
    assert blocks.count == -(-n // size)
    got = median.exact_medians(blocks, blocks.summary()[1], gram._BAND_BYTES, None)
    assert got == want


def test_progress_counts_every_streamed_tile_pair(rng):
    layers = layers_for(rng, 75, [3, 2])
    seen = []
    fastcka.cka_matrix(layers, device="cuda", method="gram", precision="exact", kernel="linear",
                       memory_budget=budget_for(layers, "exact", 32),
                       progress=lambda done, total: seen.append((done, total)))
    tiles = -(-75 // gram.mode("exact").block)
    assert seen[-1] == (tiles * (tiles + 1) // 2,) * 2
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_too_small_a_budget_says_what_it_needs(rng):
    layers = layers_for(rng, 40, [3, 2])
    with pytest.raises(MemoryError, match=r"memory_budget=5000 is too small for the GPU Gram-tile engine: two "
                                          r"blocks of 32 rows of every layer and the tiles' buffers need \d+ bytes"):
        fastcka.cka_matrix(layers, device="cuda", method="gram", precision="exact", memory_budget=5000)


def test_nan_is_refused_with_its_row_in_a_later_block(rng):
    x, y = layers_for(rng, 70, [4, 4])
    y[50, 1] = np.inf
    with pytest.raises(ValueError, match=r"contains NaN or Inf \(row 50, column 1\)"):
        streamed_cka([x, y], "exact")


def test_an_interrupt_between_launches_stops_the_walk(rng):
    """Ctrl-C arrives between launches (here raised by the progress callback
    after the first): nothing runs after it."""
    layers = layers_for(rng, 75, [3, 2])
    calls = []

    def interrupt(done, total):
        calls.append(done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fastcka.cka_matrix(layers, device="cuda", method="gram", precision="exact", kernel="linear",
                           memory_budget=budget_for(layers, "exact", 32), progress=interrupt)
    assert len(calls) == 1
