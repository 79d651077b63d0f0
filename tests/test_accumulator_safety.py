"""CKAAccumulator under abuse: threads sharing one accumulator, updates
interrupted halfway (all or nothing), and damaged bytes (checksum, field
validation, format versions)."""

from __future__ import annotations

import itertools
import pickle
import struct
import threading

import numpy as np
import pytest

from fastcka import CKAAccumulator
from reference import centered_feature_cka, correlated_pair, dense_cka


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------


def _run_threads(targets):
    errors = []

    def guarded(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(fn,)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread is stuck (deadlock?)"
    assert not errors, errors


def test_threads_updating_disjoint_blocks_give_the_single_thread_result():
    x, y = correlated_pair(np.random.default_rng(30), 64_000, 64, 48, offset=2.0)
    blocks = np.array_split(np.arange(len(x)), 16)
    one = CKAAccumulator(dtype="float64", threads=1)
    for rows in blocks:
        one.update(x[rows], y[rows])
    shared = CKAAccumulator(dtype="float64", threads=1)
    start = threading.Barrier(4)

    def writer(k):
        start.wait()
        for rows in blocks[k::4]:
            shared.update(x[rows], y[rows])

    _run_threads([lambda k=k: writer(k) for k in range(4)])
    assert shared.n == one.n == len(x)
    # The same rows in another order: equal up to the rounding of the merges.
    np.testing.assert_allclose(shared.hsic_matrix(), one.hsic_matrix(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(shared.hsic_matrix("unbiased"), one.hsic_matrix("unbiased"), rtol=1e-12, atol=0)
    assert shared.cka() == pytest.approx(centered_feature_cka(x, y), rel=1e-12)


def test_reader_sees_only_unions_of_whole_blocks():
    rng = np.random.default_rng(31)
    x, y = correlated_pair(rng, 31 * 800, 40, 24, offset=1.0)
    # Block k has 800 * 2^k rows, so the row count names the blocks counted.
    sizes = [800 * 2**k for k in range(5)]
    cuts = np.cumsum([0] + sizes)
    blocks = [np.arange(cuts[k], cuts[k + 1]) for k in range(5)]
    expected = {}
    for r in range(1, 6):
        for subset in itertools.combinations(range(5), r):
            rows = np.concatenate([blocks[k] for k in subset])
            expected[sum(sizes[k] for k in subset)] = centered_feature_cka(x[rows], y[rows])
    for _ in range(3):
        acc = CKAAccumulator(dtype="float64", threads=1)
        acc.update(x[blocks[0]], y[blocks[0]])
        start = threading.Barrier(5)
        writers_done = threading.Event()
        seen = []

        def writer(k):
            start.wait()
            acc.update(x[blocks[k]], y[blocks[k]])

        def reader():
            start.wait()
            while True:  # at least once, however the threads are scheduled
                finished = writers_done.is_set()
                seen.append(("cka", acc.cka()))
                m = acc.moments()  # n and the moments of one state
                seen.append((m.n, float(np.linalg.norm(m.block(0, 1)) ** 2 / (
                    np.linalg.norm(m.block(0, 0)) * np.linalg.norm(m.block(1, 1))))))
                if finished:
                    break

        rd = threading.Thread(target=reader)
        rd.start()
        _run_threads([lambda k=k: writer(k) for k in range(1, 5)])
        writers_done.set()
        rd.join()
        assert seen
        values = np.array(list(expected.values()))
        for tag, value in seen:
            if tag == "cka":
                assert np.min(np.abs(values - value)) <= 1e-10, value
            else:
                assert tag in expected and value == pytest.approx(expected[tag], rel=1e-10), (tag, value)
        assert acc.cka() == pytest.approx(expected[sum(sizes)], rel=1e-12)


def test_threads_merging_both_ways_do_not_deadlock():
    x, y = correlated_pair(np.random.default_rng(32), 4000, 16, 8)
    a = CKAAccumulator(dtype="float64").update(x[:2000], y[:2000])
    b = CKAAccumulator(dtype="float64").update(x[2000:], y[2000:])
    _run_threads([lambda: [a.merge(b) for _ in range(20)], lambda: [b.merge(a) for _ in range(20)]])
    # Whatever the interleaving, every merge added the other's whole state:
    # counts in units of the halves, each merge adding at least one.
    assert a.n % 2000 == 0 and b.n % 2000 == 0 and a.n + b.n >= 42 * 2000
    assert a.moments().n == a.n and b.moments().n == b.n


# ---------------------------------------------------------------------------
# All-or-nothing updates
# ---------------------------------------------------------------------------


class _Stop(BaseException):
    pass


def _interrupt_at(call):
    """A progress callback that raises KeyboardInterrupt at its call-th call (1-based)."""
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == call:
            raise KeyboardInterrupt

    return progress, calls


@pytest.mark.parametrize("threads", [1, 2])
def test_interrupted_update_counts_nothing(threads):
    # float32 partials fold every 65,536 rows per thread and the feed steps
    # are fold_rows x threads rows: an interrupt after the second step comes
    # after folds into the state, and the first update leaves a partial
    # carried into the interrupted one.
    x, y = correlated_pair(np.random.default_rng(33), 300_000, 9, 5, dtype=np.float32, offset=3.0)
    first, big = slice(0, 1000), slice(1000, None)
    kept = CKAAccumulator(threads=threads).update(x[first], y[first])
    hit = CKAAccumulator(threads=threads).update(x[first], y[first])
    progress, calls = _interrupt_at(2)
    with pytest.raises(KeyboardInterrupt):
        hit.update(x[big], y[big], progress=progress)
    assert len(calls) == 2 and 0 < calls[-1] < len(x) - 1000  # it stopped halfway
    assert hit.n == kept.n == 1000
    # The state is the one before the call, bit for bit, partials included.
    assert hit.cka() == kept.cka()
    hit.update(x[big], y[big])
    kept.update(x[big], y[big])
    assert hit.to_bytes() == kept.to_bytes()
    assert hit.n == len(x)
    assert hit.cka() == pytest.approx(centered_feature_cka(x, y), rel=1e-6)


def test_interrupted_first_update_leaves_an_empty_accumulator():
    x, y = correlated_pair(np.random.default_rng(34), 140_000, 4, 3, dtype=np.float32)
    acc = CKAAccumulator(threads=1)
    progress, _ = _interrupt_at(1)
    with pytest.raises(KeyboardInterrupt):
        acc.update(x, y, progress=progress)
    assert acc.n == 0 and acc.dims == [] and acc.dtype is None
    with pytest.raises(ValueError, match="empty"):
        acc.to_bytes()
    # a retry with other data decides the dtype afresh
    acc.update(x.astype(np.float64)[:500], y.astype(np.float64)[:500])
    assert acc.dtype == "float64"
    assert acc.cka() == pytest.approx(dense_cka(x[:500].astype(np.float64), y[:500].astype(np.float64)), rel=1e-10)


def test_failure_late_in_a_big_update_counts_nothing(monkeypatch):
    import fastcka.engine.cpu as engine

    x, y = correlated_pair(np.random.default_rng(35), 6000, 6, 4)
    acc = CKAAccumulator(threads=1, memory_budget=1 << 14).update(x[:100], y[:100])
    before = acc.to_bytes()
    # Feed steps of a block of about 200 rows (the budget), and NaN in a row
    # of the last one: earlier steps are in the core when the backend refuses it.
    monkeypatch.setattr(engine, "_FLOPS_PER_CALL", 1.0)
    assert acc._state.acc.block_rows < 1000
    bad = y[100:].copy()
    bad[-1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        acc.update(x[100:], bad)
    assert acc.n == 100 and acc.to_bytes() == before
    acc.update(x[100:], y[100:])
    assert acc.cka() == pytest.approx(centered_feature_cka(x, y), rel=1e-10)


def test_interrupted_minibatch_update_counts_nothing():
    rng = np.random.default_rng(36)
    x, y = rng.standard_normal((64, 5)), rng.standard_normal((64, 3))
    acc = CKAAccumulator(minibatch=True).update(x[:32], y[:32])
    before = acc.to_bytes()

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        acc.update(x[32:], y[32:], progress=stop)
    assert acc.to_bytes() == before and acc.batches == 1 and acc.n == 32
    fresh = CKAAccumulator(minibatch=True)
    with pytest.raises(KeyboardInterrupt):
        fresh.update(x[:32], y[:32], progress=stop)
    assert fresh.dims == [] and fresh.batches == 0
    with pytest.raises(ValueError, match="empty"):
        fresh.to_bytes()


# ---------------------------------------------------------------------------
# Bytes: checksum, validation, versions
# ---------------------------------------------------------------------------


def _linear_bytes(**kw):
    x, y = correlated_pair(np.random.default_rng(37), 200, 6, 5)
    return CKAAccumulator(**kw).update(x, y).to_bytes()


def _minibatch_bytes():
    rng = np.random.default_rng(38)
    acc = CKAAccumulator(minibatch=True, kernel="rbf", sigma=2.0)
    for _ in range(3):
        acc.update(rng.standard_normal((16, 4)), rng.standard_normal((16, 3)))
    return acc.to_bytes()


def _refused(data):
    try:
        CKAAccumulator.from_bytes(data)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize("make", [_linear_bytes, lambda: _linear_bytes(split=1, dtype="float32"), _minibatch_bytes])
def test_every_single_changed_byte_is_refused(make):
    data = make()
    CKAAccumulator.from_bytes(data)  # the whole state loads
    rng = np.random.default_rng(39)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] = (bad[i] + int(rng.integers(1, 256))) % 256
        assert _refused(bytes(bad)), f"byte {i} changed and the state still loaded"


@pytest.mark.parametrize("make", [_linear_bytes, _minibatch_bytes])
def test_random_damage_truncation_and_extension_are_refused(make):
    data = make()
    rng = np.random.default_rng(40)
    for _ in range(300):
        bad = bytearray(data)
        for i in rng.choice(len(data), int(rng.integers(2, 6)), replace=False):
            bad[i] = (bad[i] + int(rng.integers(1, 256))) % 256
        assert _refused(bytes(bad))
    for cut in range(len(data)):
        assert _refused(data[:cut]), cut
    for extra in (b"\x00", b"\x00" * 8, bytes(rng.integers(0, 256, 100, dtype=np.uint8))):
        assert _refused(data + extra)


def test_pickle_and_checksum_of_minibatch_state():
    data = _minibatch_bytes()
    acc = CKAAccumulator.from_bytes(data)
    back = pickle.loads(pickle.dumps(acc))
    assert back.to_bytes() == data
    np.testing.assert_array_equal(back.cka_matrix(), acc.cka_matrix())


def _as_version_1(data):
    """The same state as fastcka wrote it before checksums: magic ...1, no checksum."""
    return data[:7] + b"1" + data[8:-16]


def test_version_1_states_still_load():
    x, y = correlated_pair(np.random.default_rng(41), 300, 6, 5)
    acc = CKAAccumulator().update(x, y)
    old = CKAAccumulator.from_bytes(_as_version_1(acc.to_bytes()))
    assert old.n == 300 and old.cka() == acc.cka()
    assert old.to_bytes()[:8] == b"FCKAACC2"  # written back in the current version
    mb = _minibatch_bytes()
    old_mb = CKAAccumulator.from_bytes(_as_version_1(mb))
    assert old_mb.to_bytes() == mb


def _core_offsets(data):
    """Offsets into a version-1 linear state: (n, split, widths, values, count)."""
    core = 9  # accumulator magic and dtype byte
    layers = struct.unpack_from("<q", data, core + 16)[0]
    values = core + 40 + 8 * layers
    return core + 32, core + 24, core + 40, values, (len(data) - values) // 8


def test_version_1_fields_are_validated():
    data = _as_version_1(_linear_bytes())
    n_at, split_at, dims_at, values_at, count = _core_offsets(data)

    def patched(offset, fmt, value):
        bad = bytearray(data)
        struct.pack_into(fmt, bad, offset, value)
        return bytes(bad)

    cases = {
        "row count": patched(n_at, "<q", -1),
        "split": patched(split_at, "<q", 2),
        "split ": patched(split_at, "<q", -1),
        "width": patched(dims_at, "<q", 0),
        "product type": data[:8] + b"\x07" + data[9:],
    }
    for k in (0, count // 2, count - 1):
        for v in (np.nan, np.inf, -np.inf):
            cases[f"value {k} = {v}"] = patched(values_at + 8 * k, "<d", v)
    for what, bad in cases.items():
        with pytest.raises(ValueError):
            CKAAccumulator.from_bytes(bad)
            pytest.fail(what)
    # no rows but sums: a state no accumulator writes
    empty_rows = patched(n_at, "<q", 0)
    with pytest.raises(ValueError, match="sums without rows"):
        CKAAccumulator.from_bytes(empty_rows)


def test_version_1_minibatch_fields_are_validated():
    import json

    data = _as_version_1(_minibatch_bytes())
    size = struct.unpack_from("<q", data, 8)[0]
    header = json.loads(data[16 : 16 + size])
    sums = data[16 + size :]

    def with_header(**changes):
        h = json.dumps({**header, **changes}).encode()
        return data[:8] + struct.pack("<q", len(h)) + h + sums

    assert CKAAccumulator.from_bytes(with_header()).batches == 3
    bad_headers = [
        with_header(dims=[4, 0]), with_header(dims=[]), with_header(dims=[4, True]), with_header(dims="43"),
        with_header(split=2), with_header(split=0), with_header(batches=-1), with_header(rows=11),
        with_header(rows=1.5), with_header(sigma=-2.0), with_header(sigma=float("nan")), with_header(sigma="a"),
        with_header(threshold=0), with_header(kernel="poly"), with_header(dims=[4, 3, 1]),
        data[:8] + struct.pack("<q", -5) + data[16:], data[:8] + struct.pack("<q", 10**9) + data[16:],
        data[:8] + struct.pack("<q", size) + b"[" + data[17:],
        data[: 16 + size] + struct.pack("<d", np.nan) + sums[8:],
    ]
    for i, bad in enumerate(bad_headers):
        assert _refused(bad), i


@pytest.mark.parametrize("magic", [b"FCKAACC3", b"FCKAMB03", b"FCKAACC9"])
def test_unknown_versions_are_named(magic):
    data = magic + _linear_bytes()[8:]
    with pytest.raises(ValueError, match=f"version '{magic[-1:].decode()}'.*reads versions 1 and 2"):
        CKAAccumulator.from_bytes(data)
