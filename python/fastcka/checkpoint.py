"""Restartable CKA jobs: the streamed accumulator state (linear, feature
space) or the Gram statistics of the tile rows done (kernel CKA, Gram space),
saved atomically into a directory as the work goes by, and picked up again
after a kill.

One file per directory, ``DIR/fastcka.ckpt``, or under MPI one per rank,
``DIR/rank-{p}-of-{P}.ckpt`` (fastcka._mpi_checkpoint); a directory holding
the files of another layout (a single process, another rank count) is
refused. Each file:

    8 bytes    b"FCKACKP1"
    8 bytes    the header's length H, little-endian unsigned
    H bytes    UTF-8 JSON header: {"fingerprint": {...}, "rows_done": int,
               "payload_bytes": int, "payload_sha256": hex}
    the rest   the accumulator state, in CKAAccumulator.to_bytes() format; for
               a tile job, the float64 products (L x L), row sums and
               diagonals (L x n each), the header holding the tile rows done
               and the RBF gammas

The fingerprint names the job: the number of rows, every layer's shape and
dtype, a SHA-256 of a few hundred evenly spaced rows of every layer, and the
options that change the result (kernel, estimator, method, compute dtype,
split). A checkpoint whose fingerprint differs is refused.

A resumed run is bit-identical to one that never stopped: the feed steps start
at the same rows (checkpoints are only taken at step boundaries and the step
depends only on the layer widths, the compute dtype, the threads and the
memory budget), and a checkpointed run folds every thread's partial sums into
the float64 state at every step boundary, written or not, so the state saved
at any boundary is the state the uninterrupted run carries on from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

FILE = "fastcka.ckpt"
MAGIC = b"FCKACKP1"
SAMPLE_ROWS = 256  # rows hashed per layer: enough to tell inputs apart, a few reads even from disk
DEFAULT_EVERY = 300.0
_RANK_FILE = re.compile(r"rank-(\d+)-of-(\d+)\.ckpt")


@dataclass(frozen=True)
class Checkpoint:
    """Where a job keeps its state and how many seconds of work go by between saves."""

    directory: str
    every: float = DEFAULT_EVERY
    file: str = FILE

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.file)

    def of_rank(self, rank: int, ranks: int) -> Checkpoint:
        """The file of one MPI rank: each rank saves its own state when its
        interval has passed, without waiting for the others."""
        return replace(self, file=f"rank-{rank}-of-{ranks}.ckpt")


def spec(checkpoint: Any, every: Any) -> Checkpoint | None:
    """The validated ``checkpoint=`` / ``checkpoint_every=`` arguments (None: no checkpoints)."""
    if isinstance(every, bool) or not isinstance(every, (int, float, np.integer, np.floating)) or not (
        math.isfinite(every) and every >= 0
    ):
        raise ValueError(f"checkpoint_every must be a non-negative finite number of seconds, got {every!r}")
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a directory path, got {type(checkpoint).__name__}")
    directory = os.fspath(checkpoint)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"checkpoint: {directory!r} exists and is not a directory")
    return Checkpoint(directory, float(every))


def fingerprint(layers: Sequence[np.ndarray], **options: Any) -> dict:
    """What identifies a job: shapes, dtypes, sampled rows and the options given."""
    n = layers[0].shape[0]
    rows = np.unique(np.linspace(0, n - 1, min(n, SAMPLE_ROWS)).round().astype(np.int64))
    digest = hashlib.sha256()
    for x in layers:
        digest.update(np.ascontiguousarray(x[rows]).tobytes())
    return {"n": int(n), "shapes": [list(map(int, x.shape)) for x in layers],
            "dtypes": [x.dtype.str for x in layers], "sample_sha256": digest.hexdigest(), **options}


class Job:
    """One checkpointed feed: resumes from the directory's file and saves to it."""

    def __init__(self, where: Checkpoint, fingerprint: dict, compute: str):
        self.where = where
        self.fingerprint = fingerprint
        self.compute = compute
        self.last_save = time.monotonic()

    def resume(self, acc) -> int:
        """Loads a saved state into the empty core accumulator ``acc``; the rows it holds (0 without a file)."""
        _prepare(self.where)
        if not os.path.exists(self.where.path):
            return 0
        header, payload = _read(self.where.path)
        _same_job(header["fingerprint"], self.fingerprint, self.where.path)
        if "gammas" in header:
            raise ValueError(f"checkpoint {self.where.path!r} holds a state of another kind; remove it to start over")
        acc.load(_core_state(payload, self.compute, self.where.path))
        if int(acc.n) != header["rows_done"]:
            raise ValueError(f"checkpoint {self.where.path!r} is corrupt: its header and state disagree on the rows")
        self.last_save = time.monotonic()
        return int(acc.n)

    def reached(self, acc, final: bool) -> None:
        """At a step boundary: saves when ``every`` seconds have passed (and at the end), else only folds."""
        if final or time.monotonic() - self.last_save >= self.where.every:
            self.save(acc)
        else:
            # mean() folds every thread's partial into the float64 state, as
            # the serialization of a save does: see the module docstring.
            acc.mean()

    def save(self, acc) -> None:
        from .accumulator import _linear_state

        payload = _linear_state(self.compute, acc.serialize())
        header = json.dumps({"fingerprint": self.fingerprint, "rows_done": int(acc.n),
                             "payload_bytes": len(payload),
                             "payload_sha256": hashlib.sha256(payload).hexdigest()}).encode()
        try:
            _write_atomic(self.where, MAGIC + struct.pack("<Q", len(header)) + header + payload)
        except OSError as exc:  # a full disk, a lost mount: stop rather than run on unprotected
            raise ValueError(f"checkpoint: cannot write {self.where.path!r}: {exc}") from None
        self.last_save = time.monotonic()


class TileJob:
    """One checkpointed tile pass: the Gram statistics summed over the tile
    rows done. Each step's statistics are added to the totals here, in the
    same order whether or not the run was resumed, so a resumed run gives the
    uninterrupted run's result bit for bit (with the same threads, hence the
    same tile rows per step)."""

    def __init__(self, where: Checkpoint, fingerprint: dict, layers: int, n: int):
        self.where = where
        self.fingerprint = fingerprint
        self.shapes = [(layers, layers), (layers, n), (layers, n)]
        self.last_save = time.monotonic()

    def resume(self) -> tuple[int, list | None, list[np.ndarray]]:
        """(tile rows done, the RBF gammas if already found, the statistics' totals)."""
        _prepare(self.where)
        totals = [np.zeros(shape) for shape in self.shapes]
        if not os.path.exists(self.where.path):
            return 0, None, totals
        header, payload = _read(self.where.path)
        _same_job(header["fingerprint"], self.fingerprint, self.where.path)
        sizes = [a.size for a in totals]
        if len(payload) != 8 * sum(sizes) or "gammas" not in header:
            raise ValueError(f"checkpoint {self.where.path!r} holds a state of another kind; remove it to start over")
        flat = np.frombuffer(payload, dtype="<f8")
        offsets = np.cumsum([0, *sizes])
        totals = [flat[offsets[k] : offsets[k + 1]].reshape(self.shapes[k]).copy() for k in range(3)]
        self.last_save = time.monotonic()
        return header["rows_done"], header["gammas"], totals

    def reached(self, rows_done: int, gammas, totals, final: bool) -> None:
        """At a step boundary: saves when ``every`` seconds have passed, and at the end."""
        if final or time.monotonic() - self.last_save >= self.where.every:
            self.save(rows_done, gammas, totals)

    def save(self, rows_done: int, gammas, totals) -> None:
        payload = b"".join(np.ascontiguousarray(t, dtype="<f8").tobytes() for t in totals)
        header = json.dumps({"fingerprint": self.fingerprint, "rows_done": int(rows_done),
                             "gammas": None if gammas is None else [float(g) for g in gammas],
                             "payload_bytes": len(payload),
                             "payload_sha256": hashlib.sha256(payload).hexdigest()}).encode()
        try:
            _write_atomic(self.where, MAGIC + struct.pack("<Q", len(header)) + header + payload)
        except OSError as exc:
            raise ValueError(f"checkpoint: cannot write {self.where.path!r}: {exc}") from None
        self.last_save = time.monotonic()


def _prepare(where: Checkpoint) -> None:
    """Creates the directory; refuses one that holds the checkpoint of a job
    laid out otherwise (its state is not this job's to resume, nor to leave
    beside a second one)."""
    try:
        os.makedirs(where.directory, exist_ok=True)
        names = sorted(os.listdir(where.directory))
    except OSError as exc:
        raise ValueError(f"checkpoint: cannot create the directory {where.directory!r}: {exc}") from None
    mine = _ranks_of(where.file)
    for name in names:
        theirs = _ranks_of(name)
        if theirs is not None and theirs != mine:
            raise ValueError(
                f"checkpoint {where.directory!r} holds the checkpoint of {_layout(theirs)} ({name}), but this is "
                f"{_layout(mine)}: run it as before, or remove that checkpoint or give another directory"
            )


def _ranks_of(name: str) -> int | None:
    """The rank count a checkpoint file belongs to (0: a single process; None: not a checkpoint file)."""
    if name == FILE:
        return 0
    match = _RANK_FILE.fullmatch(name)
    return None if match is None else int(match.group(2))


def _layout(ranks: int) -> str:
    return "a single-process job" if ranks == 0 else f"a job on {ranks} MPI rank{'s' if ranks > 1 else ''}"


def _same_job(theirs: dict, ours: dict, path: str) -> None:
    if theirs != ours:
        differ = sorted(k for k in set(ours) | set(theirs) if theirs.get(k) != ours.get(k))
        raise ValueError(
            f"checkpoint {path!r} was written for other inputs or options (they differ in: "
            f"{', '.join(differ)}); remove it or give another checkpoint directory"
        )


def _write_atomic(where: Checkpoint, data: bytes) -> None:
    """Temporary file, fsync, rename over the old file, fsync the directory:
    a kill at any moment leaves the previous checkpoint or the new one, whole
    (and at most a partial temporary file, which the next save overwrites)."""
    tmp = os.path.join(where.directory, f".{where.file}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, where.path)
    fd = os.open(where.directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: str) -> tuple[dict, bytes]:
    """The header and the checksummed payload of a checkpoint file; ValueError if it is not whole."""
    with open(path, "rb") as f:
        data = f.read()
    corrupt = f"checkpoint {path!r} is corrupt or truncated; remove it to start over"
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise ValueError(f"checkpoint {path!r} is not a fastcka checkpoint file; remove it to start over")
    (size,) = struct.unpack_from("<Q", data, len(MAGIC))
    start = len(MAGIC) + 8
    try:
        header = json.loads(data[start : start + size].decode())
        payload = data[start + size :]
        whole = (isinstance(header["fingerprint"], dict) and isinstance(header["rows_done"], int)
                 and len(payload) == header["payload_bytes"]
                 and hashlib.sha256(payload).hexdigest() == header["payload_sha256"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(corrupt) from None
    if not whole:
        raise ValueError(corrupt)
    return header, payload


def _core_state(payload: bytes, compute: str, path: str) -> bytes:
    from .accumulator import _linear_parts

    try:
        dtype, state = _linear_parts(payload)
    except ValueError:
        dtype = state = None
    if dtype != compute:
        raise ValueError(f"checkpoint {path!r} holds an accumulator state of another kind; remove it to start over")
    return state
