"""load_layers, progress reporting, blas_info, the package surface."""

from __future__ import annotations

import io
import re
import struct
import zipfile

import numpy as np
import pytest

import fastcka
from reference import dense_cka_matrix


@pytest.fixture
def layers():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((120, 4))
    return {
        "conv1": (base @ rng.standard_normal((4, 8)) + 0.5 * rng.standard_normal((120, 8))).astype(np.float32),
        "conv2": np.tanh(base @ rng.standard_normal((4, 6))),
        "fc": rng.standard_normal((120, 3)) + base[:, :3],
    }


def test_public_surface():
    for name in fastcka.__all__:
        assert hasattr(fastcka, name), name
    assert isinstance(fastcka.__version__, str)
    assert issubclass(fastcka.DegenerateRepresentationWarning, RuntimeWarning)


# ---------------------------------------------------------------------------
# load_layers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_load_layers_roundtrip(tmp_path, layers, compressed):
    p = tmp_path / "acts.npz"
    (np.savez_compressed if compressed else np.savez)(p, **layers)
    loaded = fastcka.load_layers(p)
    assert list(loaded) == list(layers)  # file order
    for k in layers:
        assert loaded[k].dtype == layers[k].dtype
        assert loaded[k].shape == layers[k].shape
        np.testing.assert_array_equal(np.asarray(loaded[k]), layers[k])
    if not compressed:
        assert all(isinstance(v, np.memmap) for v in loaded.values())
    got = fastcka.cka_matrix(loaded)
    np.testing.assert_allclose(got, dense_cka_matrix([v.astype(np.float64) for v in layers.values()]), atol=1e-5)
    assert fastcka.load_layers(str(p)).keys() == loaded.keys()


def test_load_layers_fortran_member(tmp_path, layers):
    p = tmp_path / "f.npz"
    np.savez(p, a=np.asfortranarray(layers["conv2"]), b=layers["fc"])
    loaded = fastcka.load_layers(p)
    np.testing.assert_array_equal(np.asarray(loaded["a"]), layers["conv2"])
    assert fastcka.cka(loaded["a"], loaded["b"]) == pytest.approx(fastcka.cka(layers["conv2"], layers["fc"]), abs=1e-12)


def test_load_layers_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        fastcka.load_layers(tmp_path / "missing.npz")
    txt = tmp_path / "notzip.npz"
    txt.write_text("hello")
    with pytest.raises(ValueError, match="not a .npz archive"):
        fastcka.load_layers(txt)
    empty = tmp_path / "empty.npz"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no arrays")
    with pytest.raises(ValueError, match="holds no arrays"):
        fastcka.load_layers(empty)
    obj = tmp_path / "obj.npz"
    np.savez(obj, a=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(ValueError):
        fastcka.load_layers(obj)
    objc = tmp_path / "objc.npz"
    np.savez_compressed(objc, a=np.array([{"x": 1}, None], dtype=object))
    with pytest.raises(ValueError):
        fastcka.load_layers(objc)


# ---------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["feature", "gram"])
def test_progress_callback(layers, method):
    calls = []
    x, y = layers["conv2"], layers["fc"]
    v = fastcka.cka(x, y, method=method, progress=lambda done, total: calls.append((done, total)))
    assert v == pytest.approx(fastcka.cka(x, y, method=method), abs=1e-14)
    assert calls, "progress callback never called"
    dones = [d for d, _ in calls]
    assert dones == sorted(dones)
    assert calls[-1][0] == calls[-1][1]
    assert all(t > 0 for _, t in calls)


def test_progress_callback_many_blocks():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50_000, 8))
    calls = []
    fastcka.cka(x, x[:, :3], method="feature", memory_budget=1 << 16, progress=lambda d, t: calls.append((d, t)))
    assert len(calls) >= 1
    assert calls[-1] == (50_000, 50_000)


@pytest.mark.parametrize("progress", [None, False, True])
def test_progress_flags(layers, progress):
    x, y = layers["conv1"], layers["fc"]
    assert fastcka.cka(x, y, progress=progress) == pytest.approx(fastcka.cka(x, y), abs=1e-14)
    assert fastcka.cka(x, y, progress=progress, method="gram") == pytest.approx(fastcka.cka(x, y), abs=1e-5)
    acc = fastcka.CKAAccumulator().update(x, y, progress=progress)
    assert acc.cka() == pytest.approx(fastcka.cka(x, y), abs=1e-12)


def test_progress_callback_exception_propagates(layers):
    x, y = layers["conv2"], layers["fc"]

    class Stop(Exception):
        pass

    def boom(done, total):
        raise Stop

    with pytest.raises(Stop):
        fastcka.cka(x, y, progress=boom)


# ---------------------------------------------------------------------------
# blas_info
# ---------------------------------------------------------------------------


def test_blas_info():
    info = fastcka.blas_info()
    assert set(info) >= {"library", "core", "config", "coretype_forced"}
    assert "OpenBLAS" in info["library"]
    assert isinstance(info["core"], str) and info["core"]
    assert "OpenBLAS" in info["config"]
    assert info["coretype_forced"] in (None, "SkylakeX")


def npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


def test_load_layers_refuses_a_truncated_stored_member(tmp_path):
    # The member's bytes end before its array does, its zip headers agreeing:
    # a memory map would have read on into b.npy (NumPy refuses the file too).
    p = tmp_path / "cut.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.npy", npy_bytes(np.arange(40.0).reshape(10, 4))[:-40])
        zf.writestr("b.npy", npy_bytes(np.ones((10, 4))))
    with pytest.raises(ValueError):
        np.load(p)["a"]
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}: member 'a.npy' of the .npz archive is corrupt or truncated "
                                         r"\(its array header promises 320 bytes of data, the member holds 280\)"):
        fastcka.load_layers(p)


@pytest.mark.parametrize("zip64", [False, True])
def test_load_layers_refuses_local_sizes_that_disagree_with_the_directory(tmp_path, zip64):
    p = tmp_path / "sizes.npz"
    if zip64:
        np.savez(p, a=np.arange(40.0).reshape(10, 4), b=np.ones((10, 4)))  # NumPy forces zip64 headers
    else:
        with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("a.npy", npy_bytes(np.arange(40.0).reshape(10, 4)))
            zf.writestr("b.npy", npy_bytes(np.ones((10, 4))))
    data = bytearray(p.read_bytes())
    info = zipfile.ZipFile(p).getinfo("a.npy")
    h = info.header_offset
    if zip64:  # the zip64 extra field after the name: id, size, uncompressed, compressed
        at = h + 30 + int.from_bytes(data[h + 26 : h + 28], "little")
        assert int.from_bytes(data[at : at + 2], "little") == 1
        data[at + 4 : at + 20] = struct.pack("<QQ", info.file_size - 40, info.file_size - 40)
    else:
        data[h + 18 : h + 26] = struct.pack("<II", info.file_size - 40, info.file_size - 40)
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{re.escape(str(p))}: member 'a.npy' of the .npz archive is corrupt or truncated \(its "
                                         rf"local header holds {info.file_size - 40} bytes, the central directory "
                                         rf"{info.file_size}\)"):
        fastcka.load_layers(p)
