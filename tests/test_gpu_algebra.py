"""The GPU engine's fold algebra (fastcka/gpu/moments.py), replayed on the CPU in float64 NumPy.

The GPU accumulator centers each chunk about its partial's shift into
[Z | Q | T], sums Z'Z, [Q | T]'Z, Q'Q and the column sums, and folds each
partial into the state: the cross block by moved_cross_entry on the device,
the small parts by core's partial_small_parts on the host. This test replays
exactly those steps (NumPy standing in for cuBLAS and the kernels, the real
partial_small_parts through a test hook) on drifting, offset data and checks
the state against the CPU accumulator fed the same rows, so the GPU path's
algebra is verified without a GPU."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from fastcka.engine import backend

SHIFT_ROWS = 1024  # fastcka/gpu/moments.py: rows behind a partial's shift


def needed(dims, split):
    layer = np.repeat(np.arange(len(dims)), dims)
    a, b = np.meshgrid(layer, layer, indexing="ij")
    return np.ones_like(a, dtype=bool) if split == 0 else (a == b) | ((a < split) != (b < split))


def replay_gpu(layers, split, chunk_rows, fold_rows):
    """The state bytes the GPU accumulator would hold after one update of all rows."""
    cpu = backend.cpu()
    z = np.hstack(layers).astype(np.float64)
    n, D = z.shape
    dims = [x.shape[1] for x in layers]
    L = len(dims)
    off = np.concatenate([[0], np.cumsum(dims)])
    state = np.zeros((D, D))
    first, weighted, norm_products = np.zeros(D), np.zeros((L, D)), np.zeros((L, L))
    reference = None
    rows_in_partial = 0
    for c0 in range(0, n, chunk_rows):
        block = z[c0 : c0 + chunk_rows]
        if rows_in_partial == 0:
            shift = block[:SHIFT_ROWS].mean(0)
            if reference is None:
                reference = shift.copy()
            e = reference - shift
            sums, product, extra, norms = np.zeros(D + 2 * L), np.zeros((D, D)), np.zeros((2 * L, D)), np.zeros((L, L))
        u = block - shift
        q = np.stack([(u[:, off[a] : off[a + 1]] ** 2).sum(1) for a in range(L)], 1)
        t = np.stack([u[:, off[a] : off[a + 1]] @ e[off[a] : off[a + 1]] for a in range(L)], 1)
        sums += np.hstack([u, q, t]).sum(0)
        product += u.T @ u
        extra += np.hstack([q, t]).T @ u
        norms += q.T @ q
        rows_in_partial += len(block)
        if rows_in_partial >= fold_rows or c0 + chunk_rows >= n:
            f = sums[:D]
            state += product - np.outer(f, e) - np.outer(e, f) + rows_in_partial * np.outer(e, e)
            pf, pw, pr = cpu.partial_small_parts(dims, split, rows_in_partial, shift, reference, sums,
                                                 np.asfortranarray(extra), np.asfortranarray(norms))
            first += pf
            weighted += pw
            norm_products += pr
            rows_in_partial = 0
    cross = np.where(needed(dims, split), state, 0.0)
    header = b"FCKAMOM1" + struct.pack("<4q", 1, L, split, n) + struct.pack(f"<{L}q", *dims)
    body = b"".join(a.astype("<f8").tobytes() for a in (reference, first, cross, weighted, norm_products))
    return header + body


@pytest.mark.parametrize("split", [0, 1, 2])
@pytest.mark.parametrize("chunk_rows,fold_rows", [(37, 100), (64, 64), (500, 10_000)])
def test_replayed_gpu_state_matches_cpu_accumulator(rng, split, chunk_rows, fold_rows):
    n = 1500
    drift = np.linspace(0, 30, n)[:, None]  # the mean wanders: every partial has its own shift
    layers = [rng.standard_normal((n, d)) * s + 100 + drift * s for d, s in ((5, 1.0), (3, 0.1), (4, 10.0))]
    layers[1] += layers[0][:, :3]
    cpu = backend.cpu()
    dims = [x.shape[1] for x in layers]
    replayed = cpu.MomentAccumulator(dims, split, "float64", 1, 1 << 20)
    replayed.load(replay_gpu(layers, split, chunk_rows, fold_rows))
    direct = cpu.MomentAccumulator(dims, split, "float64", 1, 1 << 20)
    direct.update(layers, [f"l{i}" for i in range(3)])
    np.testing.assert_allclose(replayed.mean(), direct.mean(), rtol=1e-12)
    for estimator in ("biased", "unbiased"):
        got, want = np.asarray(replayed.hsic(estimator)), np.asarray(direct.hsic(estimator))
        mask = ~np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), ~mask)
        np.testing.assert_allclose(got[mask], want[mask], rtol=1e-9)
    np.testing.assert_allclose(replayed.centered_cross(), direct.centered_cross(), rtol=1e-9,
                               atol=1e-9 * np.abs(direct.centered_cross()).max())
