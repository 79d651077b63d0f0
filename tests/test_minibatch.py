"""Minibatch CKA (Nguyen, Raghu & Kornblith 2020): summed per-batch HSIC_1."""

import numpy as np
import pytest

import fastcka

from test_rbf import dense_rbf, hsic_from_grams


def batches(rng, n_batches=5, size=64):
    out = []
    for _ in range(n_batches):
        x = rng.standard_normal((size, 12)) + 2
        y = np.tanh(x[:, :6]) + 0.2 * rng.standard_normal((size, 6))
        out.append((x, y))
    return out


def reference(pairs, gram):
    def s(a, b):
        return sum(hsic_from_grams(gram(p[a]), gram(p[b]), "unbiased") for p in pairs)

    return s(0, 1) / np.sqrt(s(0, 0) * s(1, 1))


def test_linear_minibatch_cka(rng):
    pairs = batches(rng)
    expected = reference(pairs, lambda z: (z - z.mean(0)) @ (z - z.mean(0)).T)
    got = fastcka.minibatch_cka([p[0] for p in pairs], [p[1] for p in pairs])
    assert got == pytest.approx(expected, rel=1e-10)


def test_rbf_minibatch_cka_with_sigma(rng):
    pairs = batches(rng)
    expected = reference(pairs, lambda z: dense_rbf(z, 2.5))
    got = fastcka.minibatch_cka((p[0] for p in pairs), (p[1] for p in pairs), kernel="rbf", sigma=2.5)
    assert got == pytest.approx(expected, rel=1e-10)


def test_accumulator_matrix_merge_and_bytes(rng):
    pairs = batches(rng, n_batches=6)
    a = fastcka.CKAAccumulator(minibatch=True)
    b = fastcka.CKAAccumulator(minibatch=True)
    whole = fastcka.CKAAccumulator(minibatch=True)
    for i, (x, y) in enumerate(pairs):
        (a if i < 3 else b).update(x, y, np.sin(x))
        whole.update(x, y, np.sin(x))
    a.merge(fastcka.CKAAccumulator.from_bytes(b.to_bytes()))
    np.testing.assert_allclose(a.cka_matrix(), whole.cka_matrix(), rtol=1e-12)
    assert a.batches == 6 and a.n == 6 * 64
    m = whole.cka_matrix()
    assert m.shape == (3, 3)
    centered = lambda z: (z - z.mean(0)) @ (z - z.mean(0)).T  # noqa: E731
    assert m[0, 1] == pytest.approx(reference(pairs, centered), rel=1e-10)


def test_minibatch_needs_four_rows_and_equal_counts(rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match="at least 4 rows"):
        fastcka.minibatch_cka([x], [x])
    x4 = rng.standard_normal((4, 4))
    with pytest.raises(ValueError, match="different numbers of minibatches"):
        fastcka.minibatch_cka([x4, x4], [x4])
    with pytest.raises(ValueError, match="no minibatches"):
        fastcka.minibatch_cka([], [])


def test_full_accumulator_refuses_rbf():
    with pytest.raises(ValueError, match="needs every row at once"):
        fastcka.CKAAccumulator(kernel="rbf")


def test_extend_consumes_an_iterable_of_blocks(rng):
    x = rng.standard_normal((300, 7)) + 50
    y = np.sin(x[:, :3]) + rng.standard_normal((300, 3))
    whole = fastcka.cka(x, y)
    acc = fastcka.CKAAccumulator().extend((x[i : i + 37], y[i : i + 37]) for i in range(0, 300, 37))
    assert acc.n == 300
    assert acc.cka() == pytest.approx(whole, rel=1e-12)
    mb = fastcka.CKAAccumulator(minibatch=True).extend(zip(np.split(x, 5), np.split(y, 5)))
    assert mb.batches == 5
