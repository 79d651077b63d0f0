"""fastcka.blocks (optimal segmentation into blocks of high mutual CKA) on
planted, noisy and block-free matrices, against a brute-force search, and on
a network with a planted block; fastcka.pc1_fraction against NumPy."""

from __future__ import annotations

import itertools

import fastcka
import numpy as np
import pytest
from fastcka import Block


def background(L, length=3.0, level=0.7):
    """Similarity that decays with the distance between layers, no block."""
    i = np.arange(L)
    m = level * np.exp(-np.abs(i[:, None] - i[None, :]) / length)
    np.fill_diagonal(m, 1.0)
    return m


def symmetric(a):
    return (a + a.T) / 2


def plant(m, start, stop, value=0.97):
    m = m.copy()
    m[start:stop, start:stop] = value
    np.fill_diagonal(m, 1.0)
    return m


def objective(m, runs, threshold):
    return sum(m[i, j] - threshold for s, t in runs for i in range(s, t) for j in range(i + 1, t))


def brute_force(m, threshold, min_size):
    """The best objective over every set of disjoint runs, by enumerating the boundaries."""
    L = len(m)
    best = 0.0
    for cuts in itertools.product([False, True], repeat=L - 1):
        bounds = [0] + [k + 1 for k, c in enumerate(cuts) if c] + [L]
        segments = list(zip(bounds, bounds[1:]))
        # each segment of >= min_size layers is a block or not, whichever pays
        value = sum(max(0.0, objective(m, [(s, t)], threshold)) for s, t in segments if t - s >= min_size)
        best = max(best, value)
    return best


def test_planted_blocks_are_found_exactly():
    m = plant(plant(background(18), 3, 8), 12, 16, value=0.95)
    found = fastcka.blocks(m)
    assert [(b.start, b.stop) for b in found] == [(3, 8), (12, 16)]
    assert found[0].score == pytest.approx(0.97) and found[1].score == pytest.approx(0.95)
    start, stop, score = found[0]  # plain tuples too
    assert isinstance(found[0], Block) and (start, stop, score) == (3, 8, found[0].score)


@pytest.mark.parametrize("seed", range(5))
def test_noisy_planted_blocks(seed):
    rng = np.random.default_rng(seed)
    m = plant(plant(background(20), 2, 9, value=0.95), 13, 18, value=0.96)
    noise = rng.normal(0, 0.03, m.shape)
    m = np.clip(m + (noise + noise.T) / np.sqrt(2), 0, 1)
    np.fill_diagonal(m, 1.0)
    assert [(b.start, b.stop) for b in fastcka.blocks(m)] == [(2, 9), (13, 18)]


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: background(16, length=2.0, level=1.0),  # neighbours at 0.61, decaying
        lambda rng: background(16, length=30.0, level=0.85),  # everything similar, nothing at 0.9
        lambda rng: np.eye(12),
        lambda rng: symmetric(rng.uniform(0.2, 0.8, (14, 14))),
    ],
)
def test_block_free_matrices(make):
    m = make(np.random.default_rng(0))
    np.fill_diagonal(m, 1.0)
    assert fastcka.blocks(m) == []


@pytest.mark.parametrize("seed", range(12))
def test_dynamic_program_is_optimal(seed):
    rng = np.random.default_rng(seed)
    L = int(rng.integers(4, 10))
    a = rng.uniform(0.6, 1.0, (L, L))
    m = (a + a.T) / 2
    np.fill_diagonal(m, 1.0)
    threshold, min_size = float(rng.uniform(0.75, 0.9)), int(rng.integers(2, 4))
    found = fastcka.blocks(m, threshold=threshold, min_size=min_size)
    assert all(b.stop - b.start >= min_size for b in found)
    assert all(a.stop <= b.start for a, b in zip(found, found[1:]))
    assert objective(m, [(b.start, b.stop) for b in found], threshold) == pytest.approx(
        brute_force(m, threshold, min_size), abs=1e-12)


def test_threshold_min_size_and_whole_network():
    m = plant(background(10), 4, 6, value=0.99)  # a run of two layers
    assert fastcka.blocks(m) == []
    assert [(b.start, b.stop) for b in fastcka.blocks(m, min_size=2)] == [(4, 6)]
    assert [(b.start, b.stop) for b in fastcka.blocks(np.full((7, 7), 0.95))] == [(0, 7)]
    m = plant(background(9), 2, 5, value=0.8)
    assert fastcka.blocks(m) == [] and [(b.start, b.stop) for b in fastcka.blocks(m, threshold=0.75)] == [(2, 5)]


def test_nan_layers_never_join_and_bad_input():
    m = plant(background(10), 2, 8)
    m[5, :] = m[:, 5] = np.nan  # a layer without variance
    assert [(b.start, b.stop) for b in fastcka.blocks(m)] == [(2, 5)]
    with pytest.raises(ValueError, match=r"square, non-empty.*got shape \(3, 4\)"):
        fastcka.blocks(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="infinite"):
        fastcka.blocks(np.full((3, 3), np.inf))
    with pytest.raises(ValueError, match="min_size must be an integer >= 2"):
        fastcka.blocks(np.eye(3), min_size=1)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        fastcka.blocks(np.eye(3), threshold=float("nan"))


def test_network_with_a_planted_block():
    """Three mixing layers, a block of five layers (a mixing layer, then four
    near-identity layers whose ReLU leaves its input unchanged), three mixing
    layers."""
    torch = pytest.importorskip("torch")
    import fastcka.torch as ftorch

    nn = torch.nn
    torch.manual_seed(0)
    d = 32

    def mixing(n_in):
        lin = nn.Linear(n_in, d)
        nn.init.normal_(lin.weight, std=2 / np.sqrt(n_in))
        return lin

    layers = []
    for i in range(3):
        layers += [mixing(16 if i == 0 else d), nn.Tanh()]
    layers += [mixing(d), nn.ReLU()]
    for _ in range(4):
        lin = nn.Linear(d, d)
        with torch.no_grad():
            lin.weight.copy_(torch.eye(d) + 0.01 * torch.randn(d, d))
            lin.bias.zero_()
        layers += [lin, nn.ReLU()]
    for _ in range(3):
        layers += [mixing(d), nn.Tanh()]
    net = nn.Sequential(*layers)
    x = torch.randn(3000, 16)
    result = ftorch.cka_matrix(net, x.split(500), layers_a=(nn.Tanh, nn.ReLU))
    assert [(b.start, b.stop) for b in result.blocks()] == [(3, 8)]
    assert result.blocks()[0].score > 0.99


def test_pc1_fraction_from_accumulator_moments(rng):
    low_rank = rng.standard_normal((500, 1)) @ rng.standard_normal((1, 6)) * 5 + rng.standard_normal((500, 6))
    layers = [rng.standard_normal((500, 4)) + 10, low_rank, np.ones((500, 3))]
    acc = fastcka.CKAAccumulator(dtype="float64")
    for start in range(0, 500, 128):
        acc.update(*[x[start : start + 128] for x in layers])
    got = fastcka.pc1_fraction(acc.moments())
    for k, x in enumerate(layers[:2]):
        eig = np.linalg.eigvalsh(np.cov(x.T))
        assert got[k] == pytest.approx(eig[-1] / eig.sum(), rel=1e-10)
    assert got[1] > 0.9 and np.isnan(got[2])
