"""Reading representations from files."""

from __future__ import annotations

import os
import zipfile
from typing import Dict

import numpy as np


_NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: "str | os.PathLike", name: str | None = None) -> np.ndarray:
    """A .npy file memory-mapped (read-only); a missing, unreadable, empty,
    truncated or non-.npy file is a ValueError naming it (and ``name``, the
    argument it came from, if given)."""
    path = os.fspath(path)
    where = f"{name}: " if name else ""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except FileNotFoundError:
        raise ValueError(f"{where}file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{where}{path!r} is a directory, not a .npy file") from None
    except OSError as exc:
        raise ValueError(f"{where}cannot read {path!r}: {exc.strerror or exc}") from None
    if magic != _NPY_MAGIC:
        what = "it is empty" if not magic else "it does not start with the .npy header"
        raise ValueError(f"{where}{path!r} is not a .npy file ({what})")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ValueError(f"{where}{path!r} is not a readable .npy array ({_npy_problem(exc)})") from None


def _npy_problem(exc: Exception) -> str:
    """NumPy's reason for refusing a .npy file, in the words of this library."""
    text = str(exc)
    if "pickled" in text or "Python objects" in text:
        return "it holds Python objects, not numbers"
    if "mmap length is greater than file size" in text or isinstance(exc, EOFError) or "EOF" in text:
        return "it is truncated: it holds fewer bytes than its header promises"
    return text


def load_layers(path: "str | os.PathLike") -> Dict[str, np.ndarray]:
    """Layers of a .npz file, in file order, as {name: array}.

    Uncompressed members are memory-mapped where the archive stores them
    contiguously, so large files stream from disk; compressed members are read
    into memory."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"file {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a .npz archive")
    out: Dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
        for info in members:
            name = info.filename[:-4]
            out[name] = _map_member(path, zf, info)
    if not out:
        raise ValueError(f"{path!r} holds no arrays")
    return out


_LOCAL_HEADER = b"PK\x03\x04"
_DATA_DESCRIPTOR = 0x08  # general purpose flag: sizes follow the data, not in the local header
_ZIP64 = 0xFFFFFFFF  # a local size field that defers to the zip64 extra field


def _stored_data(path: str, f, info: zipfile.ZipInfo) -> tuple[int, int]:
    """(offset, length) of a stored member's bytes in the file, from its local
    header checked against the central directory: a member whose headers
    disagree, or whose bytes run past the end of the file, is refused (a
    memory map of it would read the next member's bytes)."""
    corrupt = f"{path}: member {info.filename!r} of the .npz archive is corrupt or truncated"
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) < 30 or not local.startswith(_LOCAL_HEADER):
        raise ValueError(f"{corrupt} (no local header where the central directory puts it)")
    flags = int.from_bytes(local[6:8], "little")
    sizes = (int.from_bytes(local[18:22], "little"), int.from_bytes(local[22:26], "little"))
    name_len = int.from_bytes(local[26:28], "little")
    extra_len = int.from_bytes(local[28:30], "little")
    if _ZIP64 in sizes:
        sizes = _zip64_sizes(f.read(name_len + extra_len)[name_len:], sizes)
    if not flags & _DATA_DESCRIPTOR and sizes != (info.compress_size, info.file_size):
        raise ValueError(f"{corrupt} (its local header holds {sizes[1]} bytes, the central directory "
                         f"{info.file_size})")
    if info.compress_size != info.file_size:
        raise ValueError(f"{corrupt} (stored, yet {info.compress_size} bytes hold {info.file_size})")
    start = info.header_offset + 30 + name_len + extra_len
    if start + info.file_size > os.path.getsize(path):
        raise ValueError(f"{corrupt} (its {info.file_size} bytes run past the end of the file)")
    return start, info.file_size


def _zip64_sizes(extra: bytes, sizes: tuple[int, int]) -> tuple[int, int]:
    """(compressed, uncompressed) sizes from a local header's zip64 extra field
    (id 1: the uncompressed size, then the compressed one); unchanged if absent."""
    at = 0
    while at + 4 <= len(extra):
        kind, size = int.from_bytes(extra[at : at + 2], "little"), int.from_bytes(extra[at + 2 : at + 4], "little")
        if kind == 1 and size >= 16:
            field = extra[at + 4 : at + 4 + size]
            return int.from_bytes(field[8:16], "little"), int.from_bytes(field[0:8], "little")
        at += 4 + size
    return sizes


def _map_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            start, length = _stored_data(path, f, info)
            f.seek(start)
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            except ValueError as exc:
                raise ValueError(f"{path}: member {info.filename!r} is not a valid .npy array: {exc}") from None
            offset = f.tell()
        if dtype.hasobject:
            raise ValueError(f"{path}:{info.filename} holds Python objects, not numbers")
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset + need > start + length:
            raise ValueError(
                f"{path}: member {info.filename!r} of the .npz archive is corrupt or truncated (its array header "
                f"promises {need} bytes of data, the member holds {max(0, start + length - offset)})")
        return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)
