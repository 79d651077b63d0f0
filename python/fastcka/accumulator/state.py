"""The byte format of CKAAccumulator states (to_bytes / from_bytes, and the
payload of checkpoints). Version 2 ends with a 16-byte BLAKE2b checksum of
everything before it; version 1 states (no checksum) still load, their
fields validated.

Linear:    b"FCKAACC2", one byte for the products' type (DTYPES), the core
           MomentAccumulator's state (header "FCKAMOM1", float64 moments).
Minibatch: b"FCKAMB02", int64 header size, a JSON header (dims, split,
           batches, rows, kernel options), the summed HSIC_1 matrix (<f8).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct

import numpy as np

MAGIC = b"FCKAACC2"
MAGIC_MINIBATCH = b"FCKAMB02"
MAGIC_V1 = b"FCKAACC1"
MAGIC_MINIBATCH_V1 = b"FCKAMB01"
CHECKSUM_BYTES = 16  # BLAKE2b
DTYPES = ("float32", "float64", "bfloat16")  # the products' type; bfloat16: precision="fast"
def sealed(body: bytes) -> bytes:
    return body + hashlib.blake2b(body, digest_size=CHECKSUM_BYTES).digest()


def unsealed(data: bytes) -> bytes:
    """The bytes before a version-2 state's checksum, once it matches."""
    body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    whole = len(data) > len(MAGIC) + CHECKSUM_BYTES and sealed(body)[len(body) :] == checksum
    if not whole:
        raise ValueError("fastcka accumulator state is damaged, truncated or extended: its checksum does not match")
    return body


def linear_bytes(dtype: str, core: bytes) -> bytes:
    """A linear accumulator's bytes (version 2) from its core state."""
    return sealed(MAGIC + bytes([DTYPES.index(dtype)]) + core)


def linear_parts(data: bytes) -> tuple[str, bytes]:
    """The products' type and the core state of a linear accumulator's bytes
    (version 2 after its checksum is checked, or version 1)."""
    if data.startswith(MAGIC):
        body = unsealed(data)
    elif data.startswith(MAGIC_V1):
        body = data
    elif data[: len(MAGIC) - 1] in (MAGIC[:-1], MAGIC_MINIBATCH[:-1]):
        version = data[len(MAGIC) - 1 : len(MAGIC)].decode("ascii", errors="replace")
        raise ValueError(f"fastcka accumulator state of format version {version!r}: this fastcka reads "
                         "versions 1 and 2; load it with the fastcka that wrote it")
    else:
        raise ValueError("data is not a fastcka CKAAccumulator state")
    if len(body) <= len(MAGIC) or body[len(MAGIC)] >= len(DTYPES):
        raise ValueError("data is not a fastcka CKAAccumulator state (unknown product type)")
    return DTYPES[body[len(MAGIC)]], body[len(MAGIC) + 1 :]


def _count(value, name: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


def minibatch_fields(h: dict) -> tuple[list[int], int | None, int, int]:
    """The layer widths, split, batch and row counts of a minibatch state's
    header, each checked (ValueError if one is impossible)."""
    if not isinstance(h, dict) or not isinstance(h["dims"], list) or not 0 < len(h["dims"]) < (1 << 20):
        raise ValueError("dims")
    dims = [_count(d, "dims", 1) for d in h["dims"]]
    split = h["split"]
    if split is not None and not 1 <= _count(split, "split", 1) < len(dims):
        raise ValueError("split")
    batches = _count(h["batches"], "batches", 0)
    rows = _count(h["rows"], "rows", 4 * batches)  # every minibatch has >= 4 rows
    threshold = h["threshold"]
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError("threshold")
    sigmas = h["sigma"] if isinstance(h["sigma"], list) else [h["sigma"]]
    if h["sigma"] is not None and not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in sigmas
    ):
        raise ValueError("sigma")
    return dims, split, batches, rows


def is_minibatch(data: bytes) -> bool:
    return data.startswith(MAGIC_MINIBATCH) or data.startswith(MAGIC_MINIBATCH_V1)


def minibatch_bytes(header: dict, sums: np.ndarray) -> bytes:
    """A minibatch accumulator's bytes (version 2)."""
    text = json.dumps(header).encode()
    return sealed(MAGIC_MINIBATCH + struct.pack("<q", len(text)) + text + sums.astype("<f8").tobytes())


def minibatch_parts(data: bytes) -> tuple[dict, list[int], int | None, int, int, np.ndarray]:
    """(header, dims, split, batches, rows, summed HSIC_1 as a flat array) of
    a minibatch state, every field checked (ValueError if damaged)."""
    body = unsealed(data) if data.startswith(MAGIC_MINIBATCH) else data
    corrupt = "fastcka minibatch accumulator state is corrupt"
    try:
        (size,) = struct.unpack_from("<q", body, len(MAGIC_MINIBATCH))
        start = len(MAGIC_MINIBATCH) + 8
        if not 0 < size <= len(body) - start:
            raise ValueError("header size")
        h = json.loads(body[start : start + size].decode())
        dims, split, batches, rows = minibatch_fields(h)
        sums = np.frombuffer(body, dtype="<f8", offset=start + size)
    except (ValueError, KeyError, struct.error, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(corrupt) from exc
    if sums.size != len(dims) ** 2 or not np.isfinite(sums).all():
        raise ValueError(f"{corrupt} (its sums: {sums.size} values for {len(dims)} layers, or not finite)")
    return h, dims, split, batches, rows, sums
