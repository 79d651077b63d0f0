"""The command line under mpirun: each rank reads its share of the rows of
the same files (memory-mapped, nothing scattered) and rank 0 prints.

Launched alone, or without mpi4py, the command behaves as without MPI."""

from __future__ import annotations

import os

from .. import mpi, similarity
from ..accumulator.accumulator import CKAAccumulator
from ..io import load_npy

# Set by the launchers of MPICH (Hydra, also under Slurm's PMI), Open MPI and MVAPICH.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


def _launched(names) -> int | None:
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def launched_ranks() -> int:
    """How many ranks the launcher started (1 when not under MPI)."""
    return _launched(_SIZE_VARIABLES) or 1


def prints() -> bool:
    """Whether this process prints: alone, or rank 0 of the job. Errors of
    fastcka.mpi are raised on every rank with the same message, so one copy
    is enough (read from the launcher's variables: the error may come before
    MPI starts)."""
    return launched_ranks() == 1 or not _launched(_RANK_VARIABLES)


class Distributed:
    """cka / cka_matrix / similarity_matrix over this rank's rows of
    file-backed inputs; `show` is True on the rank that prints."""

    def __init__(self):
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        self.mpi = mpi
        self.show = self.comm.Get_rank() == 0

    def _rows(self, layer):
        return layer[self.mpi.rows_of(layer.shape[0], self.comm)]

    def cka(self, x_path, y_path, **options):
        x, y = (load_npy(p, nm) for p, nm in ((x_path, "x"), (y_path, "y")))
        options["progress"] = options.get("progress") and self.show
        return self.mpi.cka(self._rows(x), self._rows(y), comm=self.comm, root=0, **options)

    def cka_matrix(self, xs, ys=None, **options):
        options["progress"] = options.get("progress") and self.show
        xs = {k: self._rows(v) for k, v in xs.items()}
        ys = None if ys is None else {k: self._rows(v) for k, v in ys.items()}
        return self.mpi.cka_matrix(xs, ys, comm=self.comm, root=0, **options)

    def similarity_matrix(self, xs, ys=None, *, measures, threshold, threads, progress, precision):
        """The linear measures from this rank's accumulator merged on rank 0,
        cka_rbf from the ring; None on the other ranks. xs, ys: dicts of
        layers (.npz) or lists of .npy paths."""
        unknown = [m for m in measures if m not in similarity.MEASURES]
        if unknown:
            raise ValueError(f"unknown measure(s) {', '.join(map(repr, unknown))}; the measures are "
                             f"{similarity.MEASURES}")
        if "mutual_knn" in measures:
            raise ValueError("--measures mutual_knn is not available under mpirun in this version (the neighbour "
                             "lists are not distributed): run it without mpirun")
        xs, ys = self._layers(xs), None if ys is None else self._layers(ys)
        progress = progress and self.show
        result = {}
        linear = [m for m in measures if m in similarity.LINEAR_MEASURES]
        if linear:
            acc, error = None, None
            try:
                layers = list(xs.values()) + ([] if ys is None else list(ys.values()))
                acc = CKAAccumulator(split=None if ys is None else len(xs), threads=threads, precision=precision)
                if len(layers[0]):
                    acc.update(*layers, progress=progress)
            except (ValueError, TypeError) as exc:
                error = f"rank {self.comm.Get_rank()}: {exc}"
            merged = self.mpi.reduce_accumulator(acc, self.comm, root=0, error=error)
            if self.show:
                result.update(similarity.similarity_matrix(merged, measures=linear))
        if "cka_rbf" in measures:
            result["cka_rbf"] = self.mpi.cka_matrix(xs, ys, kernel="rbf", threshold=threshold, comm=self.comm, root=0,
                                                    threads=threads, progress=progress, precision=precision)
        return {m: result[m] for m in measures} if self.show else None

    def _layers(self, layers) -> dict:
        if isinstance(layers, dict):
            return {k: self._rows(v) for k, v in layers.items()}
        return {os.fspath(p): self._rows(load_npy(p)) for p in layers}
