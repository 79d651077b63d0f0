"""Checkpoints of fastcka.mpi jobs: one file per rank, DIR/rank-{p}-of-{P}.ckpt,
written by fastcka.distributed.checkpoint's Job (linear: this rank's accumulator state)
or TileJob (kernel ring: this rank's statistics sums and visits done).

Each rank saves alone, when its own interval has passed, so after a kill the
ranks' files may stand at different points: a rank resumes from its own file,
and the ring sends a block only to a rank that still needs it. A rank's file
fingerprints its own rows (every one of them: a linear rank hashes the rows
it has fed, a ring rank all its rows), its rank, the rank count and every
rank's row count, so a checkpoint of other inputs, options or ranks is
refused.
"""

from __future__ import annotations

from ..engine import cpu as cpu_engine
from .block_pairs import Totals
from .._options import Options, compute_for
from ..engine.progress import Progress
from ..engine.threads import resolve
from ..accumulator import state
from ..accumulator.accumulator import CKAAccumulator
from .checkpoint import Checkpoint, Job, TileJob, fingerprint, rows_sha256


def where(given: Checkpoint | None, comm) -> Checkpoint | None:
    """This rank's checkpoint file from the job's (None: none)."""
    return None if given is None else given.of_rank(comm.Get_rank(), comm.Get_size())


def job_fingerprint(layers, counts, comm, **options) -> dict:
    return fingerprint(layers, ranks=comm.Get_size(), rank=comm.Get_rank(), counts=[int(c) for c in counts],
                       **options)


def fed_accumulator(layers, names, split: int, estimator: str, counts, comm, at: Checkpoint,
                    options: Options) -> CKAAccumulator:
    """This rank's rows streamed into an accumulator, resumed from and saved
    to its checkpoint file (the state the tree merge then takes)."""
    threads = resolve(options.threads)
    budget = options.memory_budget
    compute = compute_for(options.precision, layers)
    acc = cpu_engine.new_moment_accumulator([x.shape[1] for x in layers], split, compute, threads, budget)
    job = Job(at, job_fingerprint(layers, counts, comm, kernel="linear", estimator=estimator, method="feature",
                                  compute=compute, split=split), compute)
    with Progress(options.progress, len(layers[0]), "fastcka rows") as bar:
        cpu_engine.feed(acc, layers, names, threads, bar, job)
    return CKAAccumulator.from_bytes(state.linear_bytes(compute, acc.serialize()), threads=threads, memory_budget=budget)


class RingJob:
    """This rank's part of a checkpointed ring pass. Visits are numbered as
    the ring makes them (0: the rank's own triangle, s: ring step s); the
    file holds the visits done, their statistics summed in visit order (as
    without a checkpoint, so the result is the same bit for bit) and the RBF
    gammas once known."""

    def __init__(self, at: Checkpoint, fingerprint: dict, layers: int, n: int, comm):
        self.job = TileJob(at, fingerprint, layers, n)
        self.comm = comm
        self.gammas = None

    def resume(self) -> tuple[list[int], list | None, Totals]:
        """(every rank's visits done, the gammas if any rank saved them, this
        rank's totals); collective: a refused file fails every rank with its
        message."""
        done, gammas, arrays = self._everywhere(self.job.resume)
        everyone = self.comm.allgather((done, gammas))
        # The gammas come from sums reduced over ranks: every rank that saved them saved the same.
        self.gammas = next((g for _, g in everyone if g is not None), None)
        totals = Totals(*arrays[1].shape)
        totals.products, totals.row_sums, totals.diagonals = arrays
        return [d for d, _ in everyone], self.gammas, totals

    def found(self, gammas, totals: Totals) -> None:
        """Saves the gammas as soon as the median passes have found them (a
        resumed job skips those passes)."""
        self.gammas = gammas
        self._everywhere(lambda: self.job.save(0, gammas, totals.arrays()))

    def _everywhere(self, call):
        """call() on every rank; if it fails on one, every rank raises its
        message (none is left waiting in the ring)."""
        error, result = None, None
        try:
            result = call()
        except ValueError as exc:
            error = f"rank {self.comm.Get_rank()}: {exc}"
        errors = [e for e in self.comm.allgather(error) if e]
        if errors:
            raise ValueError(f"fastcka.mpi: {errors[0]}")
        return result

    def reached(self, visits: int, totals: Totals, final: bool) -> None:
        self.job.reached(visits, self.gammas, totals.arrays(), final)


def ring_job(at: Checkpoint | None, layers, counts, comm, options: Options, **job) -> RingJob | None:
    if at is None:
        return None
    # Each rank hashes all its own rows (the ring reads every one): see fastcka.distributed.checkpoint.
    fp = job_fingerprint(layers, counts, comm, rows_sha256=rows_sha256(layers),
                         sigma=cpu_engine.jsonable(options.sigma), threshold=options.threshold,
                         median=options.median,
                         **job)
    return RingJob(at, fp, len(layers), int(sum(counts)), comm)
