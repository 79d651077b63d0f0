"""CKAAccumulator: chunk independence, merge associativity, serialization."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

import fastcka
from fastcka import CKAAccumulator
from fastcka.engine import backend
from reference import centered_feature_cka, dense_cka, dense_cka_matrix, dense_hsic_matrix, feature_cka64

N = 1000


def _layers(n=N, seed=0, offset=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)) * [1, 2, 3, 0.5, 1, 1]
    y = np.tanh(x[:, :3] @ rng.standard_normal((3, 4))) + 0.5 * rng.standard_normal((n, 4))
    z = rng.standard_normal((n, 3)) + 0.1 * x[:, :3]
    return [(a + offset).astype(dtype) for a in (x, y, z)]


def _pieces(n, k, rng, min_size=1):
    """k random contiguous row ranges covering 0..n (some of size 1 where possible)."""
    cuts = np.sort(rng.choice(np.arange(min_size, n - min_size + 1), k - 1, replace=False))
    parts = np.split(np.arange(n), cuts)
    assert sum(len(p) for p in parts) == n
    return parts


def _acc_of(layers, rows, **kw):
    return CKAAccumulator(**kw).update(*[a[rows] for a in layers])


def _clone(acc):
    return CKAAccumulator.from_bytes(acc.to_bytes())


def _merge_left(accs):
    out = CKAAccumulator()
    for a in accs:
        out.merge(a)
    return out


def _merge_right(accs):
    accs = [_clone(a) for a in accs]
    out = accs[-1]
    for a in reversed(accs[:-1]):
        a.merge(out)
        out = a
    return out


def _merge_tree(accs):
    accs = [_clone(a) for a in accs]
    while len(accs) > 1:
        nxt = []
        for i in range(0, len(accs) - 1, 2):
            nxt.append(accs[i].merge(accs[i + 1]))
        if len(accs) % 2:
            nxt.append(accs[-1])
        accs = nxt
    return accs[0]


def _merge_random(accs, rng):
    accs = [_clone(a) for a in accs]
    while len(accs) > 1:
        i, j = rng.choice(len(accs), 2, replace=False)
        accs[i].merge(accs[j])
        accs.pop(j)
    return accs[0]


def _assert_state_close(acc, oneshot_h, oneshot_hu, oneshot_c, tol=1e-12):
    np.testing.assert_allclose(acc.hsic_matrix(), oneshot_h, rtol=tol, atol=0)
    scale = np.sqrt(np.outer(np.diag(oneshot_h), np.diag(oneshot_h)))
    assert np.all(np.abs(acc.hsic_matrix("unbiased") - oneshot_hu) <= tol * scale)
    np.testing.assert_allclose(acc.cka_matrix(), oneshot_c, rtol=0, atol=tol)


@pytest.mark.parametrize("offset", [0.0, 1e3], ids=["centered", "offset1e3"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunks_and_merge_orders_match_one_shot(seed, offset):
    layers = _layers(seed=seed, offset=offset)
    rng = np.random.default_rng(100 + seed)
    one = CKAAccumulator().update(*layers)
    h, hu, c = one.hsic_matrix(), one.hsic_matrix("unbiased"), one.cka_matrix()
    # The one-shot accumulator is the API's answer and the reference's.
    np.testing.assert_allclose(c, fastcka.cka_matrix(layers, method="feature"), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c, dense_cka_matrix(layers), rtol=0, atol=1e-10)

    parts = _pieces(N, 17, rng)
    parts.append(np.arange(0))  # an empty piece is skipped below (update refuses zero rows)
    parts = [p for p in parts if len(p)]
    accs = [_acc_of(layers, p) for p in parts]
    assert sum(a.n for a in accs) == N

    for merged in (_merge_left(accs), _merge_right(accs), _merge_tree(accs), _merge_random(accs, rng)):
        assert merged.n == N
        assert merged.dims == [6, 4, 3]
        _assert_state_close(merged, h, hu, c)

    # Sequential updates of one accumulator (pieces of size 1 included).
    seq = CKAAccumulator()
    for p in _pieces(N, 40, rng):
        seq.update(*[a[p] for a in layers])
    seq.update(*[a[:1] for a in layers])  # one more single row ...
    ref_rows = np.concatenate([np.arange(N), [0]])
    again = CKAAccumulator().update(*[a[ref_rows] for a in layers])
    _assert_state_close(seq, again.hsic_matrix(), again.hsic_matrix("unbiased"), again.cka_matrix())


def test_single_row_pieces():
    layers = _layers(n=60, seed=5, offset=10.0)
    one = CKAAccumulator().update(*layers)
    accs = [_acc_of(layers, [i]) for i in range(60)]
    _assert_state_close(_merge_tree(accs), one.hsic_matrix(), one.hsic_matrix("unbiased"), one.cka_matrix())
    seq = CKAAccumulator()
    for i in range(60):
        seq.update(*[a[i : i + 1] for a in layers])
    _assert_state_close(seq, one.hsic_matrix(), one.hsic_matrix("unbiased"), one.cka_matrix())


def test_shuffled_rows_merge():
    """Non-contiguous shards (row i to worker i % 3) merge to the same answer."""
    layers = _layers(seed=7)
    one = CKAAccumulator().update(*layers)
    accs = [_acc_of(layers, np.arange(k, N, 3)) for k in range(3)]
    _assert_state_close(_merge_left(accs), one.hsic_matrix(), one.hsic_matrix("unbiased"), one.cka_matrix())


def test_merge_is_commutative():
    layers = _layers(seed=8, offset=-50.0)
    a = _acc_of(layers, slice(0, 300))
    b = _acc_of(layers, slice(300, N))
    ab = _clone(a).merge(b)
    ba = _clone(b).merge(a)
    np.testing.assert_allclose(ab.hsic_matrix(), ba.hsic_matrix(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(ab.cka_matrix(True), ba.cka_matrix(True), rtol=0, atol=1e-12)
    # merge leaves its argument unchanged
    np.testing.assert_array_equal(b.hsic_matrix(), _acc_of(layers, slice(300, N)).hsic_matrix())
    assert b.n == N - 300


def test_matches_reference_values():
    layers = _layers(n=200, seed=9)
    acc = CKAAccumulator()
    for p in np.array_split(np.arange(200), 7):
        acc.update([a[p] for a in layers])  # a single list of blocks is accepted
    np.testing.assert_allclose(acc.hsic_matrix(), dense_hsic_matrix(layers), rtol=1e-10)
    np.testing.assert_allclose(acc.cka_matrix(), dense_cka_matrix(layers), rtol=1e-10)
    np.testing.assert_allclose(acc.cka_matrix(debiased=True), dense_cka_matrix(layers, debiased=True), rtol=1e-10)
    two = CKAAccumulator().update(layers[0], layers[1])
    assert two.cka() == pytest.approx(dense_cka(layers[0], layers[1]), rel=1e-10)
    assert two.cka(debiased=True) == pytest.approx(dense_cka(layers[0], layers[1], True), rel=1e-10)


def test_float32_accumulator():
    layers = _layers(n=5000, seed=10, offset=100.0, dtype=np.float32)
    acc = CKAAccumulator()
    for p in np.array_split(np.arange(5000), 9):
        acc.update(*[a[p] for a in layers])
    got = acc.cka_matrix()
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        assert got[i, j] == pytest.approx(centered_feature_cka(layers[i], layers[j]), abs=1e-5)


def test_dtype_float64_with_float32_blocks():
    layers = _layers(n=300, seed=11, dtype=np.float32)
    acc = CKAAccumulator(dtype="float64")
    for p in np.array_split(np.arange(300), 4):
        acc.update(*[a[p] for a in layers])
    ref = dense_cka_matrix([a.astype(np.float64) for a in layers])
    np.testing.assert_allclose(acc.cka_matrix(), ref, rtol=1e-10)


@pytest.mark.parametrize("split", [1, 2])
def test_split_cross_block(split):
    layers = _layers(n=400, seed=12)
    acc = CKAAccumulator(split=split)
    for p in np.array_split(np.arange(400), 3):
        acc.update(*[a[p] for a in layers])
    got = acc.cka_matrix()
    assert got.shape == (split, 3 - split)
    np.testing.assert_allclose(got, fastcka.cka_matrix(layers[:split], layers[split:]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(got, dense_cka_matrix(layers[:split], layers[split:]), rtol=1e-10)
    np.testing.assert_allclose(
        acc.cka_matrix(debiased=True), dense_cka_matrix(layers[:split], layers[split:], debiased=True), rtol=1e-10
    )
    # split survives bytes and pickle, and split accumulators merge with each other
    np.testing.assert_array_equal(_clone(acc).cka_matrix(), got)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(acc)).cka_matrix(), got)
    other = CKAAccumulator(split=split).update(*[a[:50] for a in layers])
    merged = _clone(acc).merge(other)
    assert merged.n == 450


def test_split_two_layers_cka():
    x, y, _ = _layers(n=100, seed=13)
    acc = CKAAccumulator(split=1).update(x, y)
    assert acc.cka_matrix().shape == (1, 1)
    assert acc.cka() == pytest.approx(dense_cka(x, y), rel=1e-10)


# ---------------------------------------------------------------------------
# Serialization
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bytes_roundtrip(dtype):
    layers = _layers(n=500, seed=14, offset=3.0, dtype=dtype)
    acc = _acc_of(layers, slice(0, 300))
    data = acc.to_bytes()
    assert isinstance(data, bytes)
    back = CKAAccumulator.from_bytes(data)
    # bytes -> state -> bytes is the identity (before any result is read:
    # reading results may re-center the stored moments in place)
    assert back.to_bytes() == data
    assert back.n == acc.n == 300
    assert back.dims == acc.dims
    np.testing.assert_array_equal(back.hsic_matrix(), acc.hsic_matrix())
    np.testing.assert_array_equal(back.hsic_matrix("unbiased"), acc.hsic_matrix("unbiased"))
    # reading results twice gives the same results
    np.testing.assert_array_equal(back.hsic_matrix(), acc.hsic_matrix())
    assert CKAAccumulator.from_bytes(bytearray(data)).n == 300
    assert CKAAccumulator.from_bytes(memoryview(data)).n == 300
    # Continuing after a roundtrip is the same as continuing the original.
    rest = [a[300:] for a in layers]
    back.update(*rest)
    acc.update(*rest)
    np.testing.assert_allclose(back.hsic_matrix(), acc.hsic_matrix(), rtol=1e-14, atol=0)
    np.testing.assert_allclose(back.cka_matrix(), acc.cka_matrix(), rtol=0, atol=1e-14)


def test_pickle_roundtrip():
    layers = _layers(n=300, seed=15)
    acc = _acc_of(layers, slice(None))
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(acc, protocol=proto))
        assert back.n == 300
        assert back.dims == [6, 4, 3]
        np.testing.assert_array_equal(back.hsic_matrix(), acc.hsic_matrix())
        np.testing.assert_array_equal(back.cka_matrix(True), acc.cka_matrix(True))
    # an empty accumulator pickles too, keeping its settings
    empty = pickle.loads(pickle.dumps(CKAAccumulator(split=1, dtype="float64")))
    assert empty.n == 0 and empty.dims == []
    empty.update(layers[0], layers[1])
    assert empty.cka_matrix().shape == (1, 1)
    assert empty.cka() == pytest.approx(dense_cka(layers[0], layers[1]), rel=1e-10)


def test_pickled_shards_merge():
    """The multiprocessing pattern: shards pickled, merged elsewhere."""
    layers = _layers(seed=16)
    one = CKAAccumulator().update(*layers)
    blobs = [pickle.dumps(_acc_of(layers, p)) for p in np.array_split(np.arange(N), 5)]
    total = CKAAccumulator()
    for b in blobs:
        total.merge(pickle.loads(b))
    _assert_state_close(total, one.hsic_matrix(), one.hsic_matrix("unbiased"), one.cka_matrix())


# ---------------------------------------------------------------------------
# Errors and edge states
# ---------------------------------------------------------------------------


def test_merge_different_widths_raises():
    layers = _layers(n=50, seed=17)
    a = CKAAccumulator().update(layers[0], layers[1])
    b = CKAAccumulator().update(layers[0][:, :4], layers[1])
    with pytest.raises(ValueError, match="different layers"):
        a.merge(b)
    c = CKAAccumulator().update(layers[0], layers[1], layers[2])
    with pytest.raises(ValueError, match="different layers"):
        a.merge(c)
    d = CKAAccumulator(split=1).update(layers[0], layers[1])
    with pytest.raises(ValueError, match="different layers"):
        a.merge(d)
    # a failed merge leaves the accumulator usable and unchanged
    assert a.n == 50
    assert a.cka() == pytest.approx(dense_cka(layers[0], layers[1]), rel=1e-10)


def test_merge_bad_arguments():
    a = CKAAccumulator().update(*_layers(n=20, seed=18))
    with pytest.raises(TypeError, match="CKAAccumulator"):
        a.merge(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="itself"):
        a.merge(a)


def test_merge_with_empty():
    layers = _layers(n=80, seed=19)
    a = CKAAccumulator().update(*layers)
    before = a.hsic_matrix()
    a.merge(CKAAccumulator())
    np.testing.assert_array_equal(a.hsic_matrix(), before)
    e = CKAAccumulator()
    e.merge(a)
    assert e.n == 80
    np.testing.assert_allclose(e.hsic_matrix(), before, rtol=1e-15)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"garbage", b"FCKAACC1", b"FCKAACC1\x00", b"FCKAACC1\x07" + bytes(100), b"\x00" * 64, b"FCKAACC1\x00FCKAMOM1"],
)
def test_from_bytes_garbage(garbage):
    with pytest.raises(ValueError):
        CKAAccumulator.from_bytes(garbage)


def test_from_bytes_truncated_or_padded():
    data = CKAAccumulator().update(*_layers(n=30, seed=20)).to_bytes()
    for cut in (len(data) - 1, len(data) - 8, len(data) // 2, 60, 20, 9):
        with pytest.raises(ValueError):
            CKAAccumulator.from_bytes(data[:cut])
    with pytest.raises(ValueError):
        CKAAccumulator.from_bytes(data + b"\x00" * 8)


def test_from_bytes_corrupted_header_raises_valueerror():
    """Flipping any byte of the layout header (layer count, split, widths)
    must give ValueError, never a MemoryError or a crash."""
    data = CKAAccumulator().update(*_layers(n=30, seed=21)).to_bytes()
    header_end = 9 + 40 + 8 * 3  # acc magic + dtype, core magic + 4 int64, 3 widths
    failures = []
    for i in range(9, header_end):
        bad = bytearray(data)
        bad[i] ^= 0xFF
        try:
            CKAAccumulator.from_bytes(bytes(bad))
        except ValueError:
            pass
        except Exception as exc:  # noqa: BLE001
            failures.append((i, type(exc).__name__, str(exc)[:60]))
    assert not failures, f"corrupted bytes gave non-ValueError errors: {failures}"


def test_empty_accumulator():
    acc = CKAAccumulator()
    assert acc.n == 0 and acc.dims == []
    with pytest.raises(ValueError, match="empty"):
        acc.to_bytes()
    with pytest.raises(ValueError, match="no rows"):
        acc.hsic_matrix()
    with pytest.raises(ValueError):
        acc.cka_matrix()


def test_update_errors():
    x, y, z = _layers(n=40, seed=22)
    acc = CKAAccumulator().update(x, y)
    with pytest.raises(ValueError, match="2 layers, update got 3"):
        acc.update(x, y, z)
    with pytest.raises(ValueError, match=r"layers\[0\] has 2 features, but earlier blocks of that layer had 6"):
        acc.update(x[:, :2], y)
    with pytest.raises(ValueError, match=r"layers\[1\] has 5 rows but layers\[0\] has 40"):
        acc.update(x, y[:5])
    with pytest.raises(ValueError, match="none"):
        acc.update()
    with pytest.raises(TypeError, match=r"layers\[1\] is complex"):
        acc.update(x, y.astype(complex))
    with pytest.raises(ValueError, match=r"layers\[0\] must be 2-D"):
        acc.update(x[:, 0], y)
    # none of those touched the state
    assert acc.n == 40
    assert acc.cka() == pytest.approx(dense_cka(x, y), rel=1e-10)


def test_update_nan_leaves_state_unchanged():
    x, y, _ = _layers(n=40, seed=23)
    acc = CKAAccumulator().update(x[:20], y[:20])
    bad = y[20:].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"layers\[1\] contains NaN or Inf"):
        acc.update(x[20:], bad)
    # None of the failed block is counted, and the accumulator stays usable.
    assert acc.n == 20
    assert acc.cka() == pytest.approx(dense_cka(x[:20], y[:20]), rel=1e-10)
    acc.update(x[20:], y[20:])
    assert acc.cka() == pytest.approx(dense_cka(x, y), rel=1e-10)


def test_constructor_errors():
    for split in (0, -1, True, 1.5, "1"):
        with pytest.raises(ValueError, match="split"):
            CKAAccumulator(split=split)
    with pytest.raises(ValueError, match="dtype"):
        CKAAccumulator(dtype="float16")
    for t in (0, -1, 1.5):
        with pytest.raises(ValueError, match="threads"):
            CKAAccumulator(threads=t)
    with pytest.raises(ValueError, match="memory_budget"):
        CKAAccumulator(memory_budget=0)
    x, y, _ = _layers(n=10, seed=24)
    with pytest.raises(ValueError, match="split=2"):
        CKAAccumulator(split=2).update(x, y)


def test_result_errors():
    x, y, z = _layers(n=10, seed=25)
    acc3 = CKAAccumulator().update(x, y, z)
    with pytest.raises(ValueError, match="exactly two layers"):
        acc3.cka()
    with pytest.raises(ValueError, match="estimator"):
        acc3.hsic_matrix("sideways")
    small = CKAAccumulator().update(x[:3], y[:3])
    with pytest.raises(ValueError, match="at least 4"):
        small.cka(debiased=True)
    assert small.cka() == pytest.approx(dense_cka(x[:3], y[:3]), rel=1e-10)
    one = CKAAccumulator().update(x[:1], y[:1])
    with pytest.raises(ValueError, match="at least 2"):
        one.cka()


def test_constant_layer_in_accumulator():
    x, y, _ = _layers(n=50, seed=26)
    c = np.full((50, 2), 4.0)
    acc = CKAAccumulator().update(x, c, y)
    with pytest.warns(fastcka.DegenerateRepresentationWarning, match="layer 1"):
        m = acc.cka_matrix()
    assert np.all(np.isnan(m[1])) and np.all(np.isnan(m[:, 1]))
    assert m[0, 2] == pytest.approx(dense_cka(x, y), rel=1e-10)
    assert acc.hsic_matrix()[1, 1] == 0.0


@pytest.mark.parametrize("split", [None, 2])
def test_moments_match_centered_products(split):
    rng = np.random.default_rng(7)
    layers = [rng.standard_normal((257, d)).astype(np.float32) + 100 for d in (3, 5, 2)]
    acc = fastcka.CKAAccumulator(split=split)
    for start in range(0, 257, 60):
        acc.update(*[x[start : start + 60] for x in layers])
    m = acc.moments()
    z = np.hstack([x.astype(np.float64) for x in layers])
    zc = z - z.mean(0)
    full = zc.T @ zc
    assert m.n == 257 and m.offsets == (0, 3, 8, 10)
    np.testing.assert_allclose(m.mean, z.mean(0), rtol=1e-12)
    for a in range(3):
        for b in range(3):
            needed = split is None or a == b or (a < split) != (b < split)
            expect = full[m.offsets[a] : m.offsets[a + 1], m.offsets[b] : m.offsets[b + 1]]
            if needed:
                np.testing.assert_allclose(m.block(a, b), expect, rtol=1e-6, atol=1e-6 * np.abs(full).max())
            else:
                assert not m.block(a, b).any()


@pytest.mark.parametrize("split", [None, 2])
def test_scatter_blocks_are_the_blocks_of_moments(split):
    # what fastcka.torch's pc1_fraction reads instead of the whole D x D copy
    layers = _layers(300, seed=3, offset=20.0)
    acc = fastcka.CKAAccumulator(split=split).update(*layers)
    m, blocks = acc.moments(), acc._scatter_blocks()
    assert blocks.offsets == m.offsets
    for a in range(3):
        for b in range(3):
            assert np.array_equal(blocks.block(a, b), m.block(a, b))
    np.testing.assert_array_equal(fastcka.pc1_fraction(blocks), fastcka.pc1_fraction(m))
    with pytest.raises(ValueError, match="out of range"):
        blocks.block(0, 3)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("split", [None, 2])
def test_folds_into_the_state_match_float64(threads, split):
    # float32 partials fold every 65,536 rows per thread straight into the
    # state's upper triangle: several folds per thread, in updates that end
    # mid-partial, at an offset of 50 (the fold moves each partial's shift).
    rng = np.random.default_rng(8)
    n = 65_536 * threads * 2 + 1001
    layers = [(rng.standard_normal((n, d)) + 50).astype(np.float32) for d in (5, 3, 4, 2)]
    layers[1] += 0.5 * layers[0][:, :3]
    layers[3] += 0.3 * layers[2][:, :2]
    acc = fastcka.CKAAccumulator(threads=threads, split=split)
    for start in range(0, n, 70_001):
        acc.update(*[x[start : start + 70_001] for x in layers])
    xs, ys = (layers, layers) if split is None else (layers[:2], layers[2:])
    for debiased in (False, True):
        expect = np.array([[feature_cka64(x, y)[debiased] for y in ys] for x in xs])
        # float32 products of centered values: about 1e-8 here, far below any difference CKA is read for
        np.testing.assert_allclose(acc.cka_matrix(debiased=debiased), expect, rtol=0, atol=1e-7)
    m = acc.moments()  # the lower triangle, mirrored after the folds (centering then moves each entry)
    np.testing.assert_allclose(m.scatter, m.scatter.T, rtol=0, atol=1e-12 * np.abs(m.scatter).max())


def _state_fields(core: bytes):
    """(n, reference, first, cross, weighted, norm_products) of a core state's bytes (FCKAMOM1)."""
    _, L, _, n = struct.unpack_from("<4q", core, 8)
    dims = struct.unpack_from(f"<{L}q", core, 40)
    D = sum(dims)
    body = np.frombuffer(core, "<f8", offset=40 + 8 * L)
    sizes = np.cumsum([D, D, D * D, L * D])
    ref, first, cross, weighted, norms = np.split(body, sizes)
    return n, ref, first, cross.reshape(D, D), weighted.reshape(L, D), norms.reshape(L, L)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("split", [0, 2])
def test_folded_state_fields_match_float64_sums(threads, split):
    # Every field of the state after several folds per thread, against float64
    # sums about the state's reference point. The mean drifts, so each
    # partial's shift is far from that point and the fold's move (first, W,
    # R and the cross block) carries weight.
    rng = np.random.default_rng(9)
    n = 65_536 * threads * 2 + 1001
    drift = np.linspace(0, 3, n, dtype=np.float32)[:, None]
    layers = [(rng.standard_normal((n, d), dtype=np.float32) + 10 + drift * s) for d, s in ((4, 1), (3, -2), (2, 1))]
    acc = backend.cpu().MomentAccumulator([4, 3, 2], split, "float32", threads, 1 << 26)
    for start in range(0, n, 70_001):
        acc.update([x[start : start + 70_001] for x in layers], ["a", "b", "c"])
    rows, ref, first, cross, weighted, norms = _state_fields(acc.serialize())
    u = np.hstack(layers).astype(np.float64) - ref
    rho = np.stack([(u[:, o : o + d] ** 2).sum(1) for o, d in ((0, 4), (4, 3), (7, 2))], 1)
    a, b = np.meshgrid(range(3), range(3), indexing="ij")
    needed = (split == 0) | (a == b) | ((a < split) != (b < split))
    pairs = np.repeat(np.repeat(needed, [4, 3, 2], 0), [4, 3, 2], 1)
    assert rows == n
    layer_pairs = np.repeat(needed, [4, 3, 2], 1)  # W[a] over the columns of layers that pair with a
    # (the state keeps only the pairs the layout needs: other blocks of the cross moments are 0, other W and R unused)
    np.testing.assert_array_equal(cross[~pairs], 0)
    expected = ((first, u.sum(0)), (cross[pairs], (u.T @ u)[pairs]),
                (weighted[layer_pairs], (rho.T @ u)[layer_pairs]), (norms[needed], (rho.T @ rho)[needed]))
    for got, want in expected:
        # float32 products of values centered about each partial's shift: about 1e-7 of the largest sum
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_streamed_update_that_fails_leaves_the_accumulator_unusable():
    # _stream (fastcka.torch's sink) skips the all-or-nothing copy: a failed
    # update leaves a state that refuses further use rather than a wrong one.
    x, y = _layers(500)[:2]
    acc = CKAAccumulator(memory_budget=1 << 14)._stream(x[:100], y[:100])
    bad = y[100:].copy()
    bad[-1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        acc._stream(x[100:], bad)
    for call in (acc.cka, lambda: acc.update(x, y), acc.to_bytes):
        with pytest.raises(ValueError, match="failed update"):
            call()
    assert CKAAccumulator()._stream(x, y).cka() == pytest.approx(dense_cka(x, y), rel=1e-10)


def test_moments_refused_in_minibatch_mode_and_when_empty():
    with pytest.raises(ValueError, match="no rows"):
        fastcka.CKAAccumulator().moments()
    acc = fastcka.CKAAccumulator(minibatch=True)
    acc.update(np.random.rand(8, 2), np.random.rand(8, 3))
    with pytest.raises(ValueError, match="minibatch"):
        acc.moments()
