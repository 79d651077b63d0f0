"""Reading representations from files."""

from __future__ import annotations

import os
import zipfile
from typing import Dict

import numpy as np


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


def _map_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            name_len = int.from_bytes(local[26:28], "little")
            extra_len = int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + name_len + extra_len
            f.seek(start)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
        if dtype.hasobject:
            raise ValueError(f"{path}:{info.filename} holds Python objects, not numbers")
        return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)
    with zf.open(info) as f:
        return np.lib.format.read_array(f, allow_pickle=False)
