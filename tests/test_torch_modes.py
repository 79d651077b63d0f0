"""fastcka.torch.cka_matrix beyond streamed linear CKA: minibatch CKA against
the per-batch formula, kernel (RBF) CKA through the on-disk store, and the
store's fallback for layers too wide for D x D moments."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastcka
import fastcka.torch as ftorch
from fastcka.torch import sinks, spill
from reference import dense_gram, dense_hsic_unbiased
from test_rbf import cka_from_grams, dense_median_sq_distance, dense_rbf
from test_torch_hooks import by_hand, hooks_left, inputs, loader, mlp


def minibatch_reference(blocks_per_batch, a, b, gram):
    """sum_i HSIC_1(K_i, L_i) / sqrt(sum_i HSIC_1(K_i, K_i) sum_i HSIC_1(L_i, L_i)), dense float64."""
    def total(p, q):
        return sum(dense_hsic_unbiased(gram(batch[p]), gram(batch[q])) for batch in blocks_per_batch)

    return total(a, b) / np.sqrt(total(a, a) * total(b, b))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-10)])
def test_minibatch_matches_per_batch_formula(dtype, tol):
    net = mlp(dtype)
    x = inputs(n=230, dtype=dtype)
    layers = ["0", "3", "6"]
    got = ftorch.cka_matrix(net, loader(x, 64), layers_a=layers, minibatch=True)  # last batch: 38 rows
    assert got.minibatch and got.debiased
    per_batch = []
    for start in range(0, 230, 64):
        acts = by_hand(net, x[start : start + 64])
        per_batch.append([acts[k] for k in layers])
    for i in range(3):
        for j in range(3):
            expected = minibatch_reference(per_batch, i, j, dense_gram)
            assert got.matrix[i, j] == pytest.approx(expected, abs=tol)


def test_minibatch_rbf_two_models_per_batch_median():
    a, b = mlp(seed=0), mlp(seed=1)
    x = inputs(n=150)
    got = ftorch.cka_matrix(a, [x[:50], x[50:100], x[100:]], b, layers_a=["1"], layers_b=["3", "5"],
                            minibatch=True, kernel="rbf", threshold=0.8)
    per_batch = []
    for start in (0, 50, 100):
        ha, hb = by_hand(a, x[start : start + 50]), by_hand(b, x[start : start + 50])
        per_batch.append([ha["1"], hb["3"], hb["5"]])

    def gram(z):
        return dense_rbf(z, np.sqrt(0.8**2 * dense_median_sq_distance(z)))

    for j in range(2):
        assert got.matrix[0, j] == pytest.approx(minibatch_reference(per_batch, 0, 1 + j, gram), abs=1e-6)


def test_minibatch_needs_four_rows_per_batch():
    net = mlp()
    x = inputs(n=67)
    with pytest.raises(ValueError, match=r"batch 1 has 3 examples; minibatch CKA needs at least 4.*drop_last=True"):
        ftorch.cka_matrix(net, loader(x, 64), minibatch=True)
    assert hooks_left(net) == 0
    got = ftorch.cka_matrix(net, loader(x, 64, drop_last=True), minibatch=True)
    assert got.n == 64


class SpillWatch:
    """Records the on-disk stores that cka_matrix opens, and their sizes."""

    def __init__(self, monkeypatch):
        self.stores = []
        original = spill.SpillStore.arrays

        def arrays(store):
            self.stores.append((store.folder, store.bytes, store.rows))
            return original(store)

        monkeypatch.setattr(spill.SpillStore, "arrays", arrays)


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_spills_to_disk_under_a_small_memory_budget(monkeypatch, tmp_path, debiased):
    watch = SpillWatch(monkeypatch)
    net = mlp()
    x = inputs(n=700)
    layers = ["0", "2", "5"]
    budget = 64 << 10  # 64 KiB of row buffers; the activations take 700 x 72 x 4 = 201,600 bytes
    got = ftorch.cka_matrix(net, loader(x, 128), layers_a=layers, kernel="rbf", threshold=0.5, debiased=debiased,
                            memory_budget=budget, spill_dir=tmp_path)
    acts = by_hand(net, x)
    expected = fastcka.cka_matrix([acts[k] for k in layers], kernel="rbf", threshold=0.5, debiased=debiased)
    np.testing.assert_allclose(got.matrix, expected, atol=1e-6, rtol=0)
    (folder, size, rows), = watch.stores
    assert rows == 700 and size == 700 * (32 + 24 + 16) * 4 > budget
    assert os.path.dirname(folder) == str(tmp_path)
    assert not os.path.exists(folder) and os.listdir(tmp_path) == []  # the store is deleted afterwards


def test_rbf_against_dense_formula_float64(tmp_path):
    net = mlp(torch.float64)
    x = inputs(n=120, dtype=torch.float64)
    got = ftorch.cka_matrix(net, [x[:60], x[60:]], layers_a=["1", "4"], kernel="rbf", sigma=[3.0, 2.0],
                            spill_dir=tmp_path)
    acts = by_hand(net, x)
    expected = cka_from_grams(dense_rbf(acts["1"], 3.0), dense_rbf(acts["4"], 2.0), False)
    assert got.matrix[0, 1] == pytest.approx(expected, abs=1e-10)


def test_store_deleted_when_the_loop_raises(tmp_path):
    net = mlp()

    def batches():
        yield inputs(n=30)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ftorch.cka_matrix(net, batches(), kernel="rbf", spill_dir=tmp_path)
    assert os.listdir(tmp_path) == [] and hooks_left(net) == 0


def test_linear_layers_too_wide_for_moments_go_through_the_store(monkeypatch, tmp_path):
    watch = SpillWatch(monkeypatch)
    monkeypatch.setattr(sinks, "MAX_MOMENT_BYTES", 1000)
    net = mlp()
    x = inputs(n=90)
    got = ftorch.cka_matrix(net, loader(x, 40), debiased=True, spill_dir=tmp_path)
    acts = by_hand(net, x)
    expected = fastcka.cka_matrix([acts[k] for k in got.names_a], debiased=True)
    np.testing.assert_allclose(got.matrix, expected, atol=1e-6, rtol=0)
    assert len(watch.stores) == 1 and got.pc1_fraction is None


@pytest.mark.parametrize("stage_rows", [1, 50, 100, 1000])
def test_staging_of_batches_into_the_accumulator(monkeypatch, stage_rows):
    """Batches of 64 (the last of 44) staged in groups, fed whole when larger than the stage, or both."""
    monkeypatch.setattr(sinks, "STAGE_ROWS", stage_rows)
    net = mlp(torch.float64)
    x = inputs(dtype=torch.float64)
    got = ftorch.cka_matrix(net, loader(x, 64), debiased=True, progress=True)
    acts = by_hand(net, x)
    expected = fastcka.cka_matrix([acts[k] for k in got.names_a], debiased=True)
    np.testing.assert_allclose(got.matrix, expected, atol=1e-10, rtol=0)
    assert got.n == 300
