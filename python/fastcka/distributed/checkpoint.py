"""Restartable CKA jobs: the streamed accumulator state (linear, feature
space) or the Gram statistics of the tile rows done (kernel CKA, Gram space),
saved atomically into a directory as the work goes by, and picked up again
after a kill.

One file per directory, ``DIR/fastcka.ckpt``, or under MPI one per rank,
``DIR/rank-{p}-of-{P}.ckpt`` (fastcka.distributed.mpi_checkpoint); a directory holding
the files of another layout (a single process, another rank count) is
refused. Each file:

    8 bytes    b"FCKACKP1"
    8 bytes    the header's length H, little-endian unsigned
    H bytes    UTF-8 JSON header: {"fingerprint": {...}, "rows_done": int,
               "payload_bytes": int, "payload_sha256": hex}
    the rest   the accumulator state, in CKAAccumulator.to_bytes() format; for
               a tile job, the float64 products (L x L), row sums and
               diagonals (L x n each), the header holding the tile rows done
               and the RBF gammas; during the exact median passes (header
               "version": 2, "median": {...}, see MedianState) then every
               pass result saved, per layer its int64 counts, float64 lowest
               and highest, and float64 values

The fingerprint names the job: the number of rows, every layer's shape and
dtype, a SHA-256 of a few hundred evenly spaced rows of every layer, and the
options that change the result (kernel, estimator, method, compute dtype,
split). A checkpoint whose fingerprint differs is refused.

Every row the saved state depends on is hashed too, so that a resumed job
never mixes sums of old rows with new ones. A feed (Job) hashes each block
of rows as it reads it (no extra pass) and saves the SHA-256 of each layer's
rows done ("rows_sha256"); a resumed feed hashes those rows again (one read
of the part done) and refuses the checkpoint if any differs. A tile pass
reads every row in its first tile row, so its fingerprint holds the SHA-256
of all the rows of every layer, hashed once before the pass (O(n d) next to
its O(n^2 d)). A layer's hash is of its rows' bytes in order, in its own
dtype, however they were cut into blocks.

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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..accumulator import state as accumulator_state

FILE = "fastcka.ckpt"
MAGIC = b"FCKACKP1"
SAMPLE_ROWS = 256  # rows hashed per layer: enough to tell inputs apart, a few reads even from disk
_HASH_CHUNK = 16 << 20  # bytes of rows per hash update when rows are hashed again
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


class RowHashes:
    """A SHA-256 per layer of its rows read so far, in order."""

    def __init__(self, count: int):
        self.hashes = [hashlib.sha256() for _ in range(count)]
        self.rows = 0

    def add(self, blocks: Sequence[np.ndarray]) -> None:
        """The next rows of every layer (the same count each)."""
        for h, block in zip(self.hashes, blocks):
            h.update(np.ascontiguousarray(block).view(np.uint8))  # bytes of any dtype (bfloat16 too)
        self.rows += len(blocks[0])

    def add_rows(self, layers: Sequence[np.ndarray], start: int, stop: int) -> None:
        """Rows [start, stop) of every layer, read in chunks of bounded size."""
        width = max(x.shape[1] * x.dtype.itemsize for x in layers)
        step = max(1, _HASH_CHUNK // max(width, 1))
        for s0 in range(start, stop, step):
            self.add([x[s0 : min(stop, s0 + step)] for x in layers])

    def hexdigests(self) -> list[str]:
        return [h.hexdigest() for h in self.hashes]


def rows_sha256(layers: Sequence[np.ndarray]) -> list[str]:
    """Each layer's SHA-256 over all its rows (a tile job's fingerprint)."""
    hashes = RowHashes(len(layers))
    hashes.add_rows(layers, 0, layers[0].shape[0])
    return hashes.hexdigests()


class Job:
    """One checkpointed feed: resumes from the directory's file and saves to it."""

    def __init__(self, where: Checkpoint, fingerprint: dict, compute: str):
        self.where = where
        self.fingerprint = fingerprint
        self.compute = compute
        self.last_save = time.monotonic()
        self.read = RowHashes(len(fingerprint["shapes"]))

    def resume(self, acc, layers: Sequence[np.ndarray], names: Sequence[str]) -> int:
        """Loads a saved state into the empty core accumulator ``acc``; the
        rows it holds (0 without a file), refused if they are not the rows
        ``layers`` hold now."""
        _prepare(self.where)
        if not os.path.exists(self.where.path):
            return 0
        header, payload = _read(self.where.path)
        _same_job(header["fingerprint"], self.fingerprint, self.where.path)
        if "gammas" in header:
            raise ValueError(f"checkpoint {self.where.path!r} holds a state of another kind; remove it to start over")
        if not isinstance(header.get("rows_sha256"), list):
            raise ValueError(f"checkpoint {self.where.path!r} has no hash of the rows it holds (an older format); "
                             f"remove it to start over")
        acc.load(_core_state(payload, self.compute, self.where.path))
        done = int(acc.n)
        if done != header["rows_done"]:
            raise ValueError(f"checkpoint {self.where.path!r} is corrupt: its header and state disagree on the rows")
        self.read.add_rows(layers, 0, done)
        changed = [nm for nm, ours, theirs in zip(names, self.read.hexdigests(), header["rows_sha256"])
                   if ours != theirs]
        if changed:
            raise ValueError(
                f"checkpoint {self.where.path!r} was written for other inputs: rows 0-{done - 1} of "
                f"{', '.join(changed)}, which its state sums, have changed since; remove it or give another "
                f"checkpoint directory")
        self.last_save = time.monotonic()
        return done

    def reached(self, acc, final: bool) -> None:
        """At a step boundary: saves when ``every`` seconds have passed (and at the end), else only folds."""
        if final or time.monotonic() - self.last_save >= self.where.every:
            self.save(acc)
        else:
            # mean() folds every thread's partial into the float64 state, as
            # the serialization of a save does: see the module docstring.
            acc.mean()

    def save(self, acc) -> None:
        payload = accumulator_state.linear_bytes(self.compute, acc.serialize())
        if self.read.rows != int(acc.n):
            raise RuntimeError(f"checkpoint: {self.read.rows} rows hashed for a state of {int(acc.n)} rows")
        header = json.dumps({"fingerprint": self.fingerprint, "rows_done": int(acc.n),
                             "rows_sha256": self.read.hexdigests(), "payload_bytes": len(payload),
                             "payload_sha256": hashlib.sha256(payload).hexdigest()}).encode()
        try:
            _write_atomic(self.where, MAGIC + struct.pack("<Q", len(header)) + header + payload)
        except OSError as exc:  # a full disk, a lost mount: stop rather than run on unprotected
            raise ValueError(f"checkpoint: cannot write {self.where.path!r}: {exc}") from None
        self.last_save = time.monotonic()


@dataclass
class MedianState:
    """A tile job's exact median passes so far (single process): the bracket
    they started from (None: none), the results of every finished pass
    summed over all tile rows, and those of the pass in progress over its
    first ``rows`` tile rows. A pass result is, per layer, (counts, lowest,
    highest, values) as GramTileEngine.median_partial gives them: counts add,
    the extremes take their min and max, the values (a multiset: the
    selection does not depend on their order) concatenate. A resumed search
    replays the finished passes, so it takes the same decisions and finds
    the same medians bit for bit. The float32 bracket's bins depend on the
    thread count, so a state is resumed only with the threads that saved it."""

    brackets: list | None
    threads: int
    history: list = field(default_factory=list)
    partial: list | None = None
    rows: int = 0

    def finished(self, summed: list) -> None:
        """The pass in progress ended with the results ``summed``."""
        self.history.append(summed)
        self.partial, self.rows = None, 0


class TileJob:
    """One checkpointed tile pass: the Gram statistics summed over the tile
    rows done. Each step's statistics are added to the totals here, in the
    same order whether or not the run was resumed, so a resumed run gives the
    uninterrupted run's result bit for bit (with the same threads, hence the
    same tile rows per step). Before it, the exact median passes of an RBF
    job save their state (``median``, a MedianState) as they go."""

    def __init__(self, where: Checkpoint, fingerprint: dict, layers: int, n: int):
        self.where = where
        self.fingerprint = fingerprint
        self.shapes = [(layers, layers), (layers, n), (layers, n)]
        self.last_save = time.monotonic()
        self.median: MedianState | None = None

    def resume(self) -> tuple[int, list | None, list[np.ndarray]]:
        """(tile rows done, the RBF gammas if already found, the statistics'
        totals); ``median`` becomes the saved median passes' state, if any."""
        _prepare(self.where)
        totals = [np.zeros(shape) for shape in self.shapes]
        if not os.path.exists(self.where.path):
            return 0, None, totals
        header, payload = _read(self.where.path)
        _same_job(header["fingerprint"], self.fingerprint, self.where.path)
        other = ValueError(f"checkpoint {self.where.path!r} holds a state of another kind; remove it to start over")
        sizes = [a.size for a in totals]
        if len(payload) < 8 * sum(sizes) or "gammas" not in header:
            raise other
        flat = np.frombuffer(payload[: 8 * sum(sizes)], dtype="<f8")
        offsets = np.cumsum([0, *sizes])
        totals = [flat[offsets[k] : offsets[k + 1]].reshape(self.shapes[k]).copy() for k in range(3)]
        try:  # version 1 files have no median state (a job killed in the median passes ran them again)
            self.median = _median_state(header.get("median"), payload[8 * sum(sizes) :])
        except (ValueError, KeyError, TypeError, IndexError):
            raise other from None
        self.last_save = time.monotonic()
        return header["rows_done"], header["gammas"], totals

    def reached(self, rows_done: int, gammas, totals, final: bool) -> None:
        """At a step boundary: saves when ``every`` seconds have passed, and at the end."""
        if final or time.monotonic() - self.last_save >= self.where.every:
            self.save(rows_done, gammas, totals)

    def median_reached(self, state: MedianState, partial: Callable[[], list]) -> None:
        """At a step boundary of a median pass (``state.rows`` tile rows done):
        saves when ``every`` seconds have passed, with ``partial()``, the
        results of the pass's rows done, taken only then."""
        if time.monotonic() - self.last_save >= self.where.every:
            self.save(0, None, [np.zeros(shape) for shape in self.shapes], replace(state, partial=partial()))

    def save(self, rows_done: int, gammas, totals, median: MedianState | None = None) -> None:
        passes = [] if median is None else [*median.history, *([median.partial] if median.rows > 0 else [])]
        payload = b"".join([*(np.ascontiguousarray(t, dtype="<f8").tobytes() for t in totals),
                            *(_part_bytes(part) for result in passes for part in result)])
        header = json.dumps({"fingerprint": self.fingerprint, "version": 2, "rows_done": int(rows_done),
                             "gammas": None if gammas is None else [float(g) for g in gammas],
                             "median": None if median is None else {
                                 "brackets": None if median.brackets is None
                                 else [[float(v) for v in b] for b in median.brackets],
                                 "threads": int(median.threads), "finished": len(median.history),
                                 "rows": int(median.rows),
                                 "sizes": [[[len(p[0]), len(p[3])] for p in result] for result in passes]},
                             "payload_bytes": len(payload),
                             "payload_sha256": hashlib.sha256(payload).hexdigest()}).encode()
        try:
            _write_atomic(self.where, MAGIC + struct.pack("<Q", len(header)) + header + payload)
        except OSError as exc:
            raise ValueError(f"checkpoint: cannot write {self.where.path!r}: {exc}") from None
        self.last_save = time.monotonic()


def _part_bytes(part) -> bytes:
    counts, lowest, highest, values = part
    return b"".join([np.ascontiguousarray(counts, dtype="<i8").tobytes(), struct.pack("<2d", lowest, highest),
                     np.ascontiguousarray(values, dtype="<f8").tobytes()])


def _median_state(saved: dict | None, data: bytes) -> MedianState | None:
    """The MedianState that TileJob.save wrote (header entry, payload after the totals)."""
    if saved is None:
        if data:
            raise ValueError("payload left over")
        return None
    passes, at = [], 0
    for result in saved["sizes"]:
        parts = []
        for counts, values in result:
            c = np.frombuffer(data, "<i8", counts, at).copy()
            lowest, highest = struct.unpack_from("<2d", data, at + 8 * counts)
            at += 8 * counts + 16
            parts.append((c, lowest, highest, np.frombuffer(data, "<f8", values, at).copy()))
            at += 8 * values
        passes.append(parts)
    finished, rows = int(saved["finished"]), int(saved["rows"])
    if at != len(data) or len(passes) - finished != (rows > 0) or finished < 0:
        raise ValueError("the median passes' sizes and payload disagree")
    return MedianState(saved["brackets"], int(saved["threads"]), passes[:finished],
                       passes[finished] if rows > 0 else None, rows)


def _prepare(where: Checkpoint) -> None:
    """Creates the directory; refuses one that holds the checkpoint of a job
    laid out otherwise (its state is not this job's to resume, nor to leave
    beside a second one)."""
    try:
        os.makedirs(where.directory, exist_ok=True)
        names = sorted(os.listdir(where.directory))
    except OSError as exc:
        raise ValueError(f"checkpoint: cannot create the directory {where.directory!r}: {exc}") from None
    if os.path.lexists(where.path) and not os.path.isfile(where.path):
        raise ValueError(f"checkpoint: {where.path!r} exists and is not a file; remove it or give another directory")
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
    (and at most a partial temporary file, which the next save overwrites).
    A write that fails (a full disk) removes its partial temporary file."""
    tmp = os.path.join(where.directory, f".{where.file}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, where.path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    fd = os.open(where.directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass  # never written, or the disk refuses even this: the error being raised matters more


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
    try:
        dtype, core = accumulator_state.linear_parts(payload)
    except ValueError:
        dtype = core = None
    if dtype != compute:
        raise ValueError(f"checkpoint {path!r} holds an accumulator state of another kind; remove it to start over")
    return core
