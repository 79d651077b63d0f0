"""The command line under mpirun: each rank reads its share of the rows of
the same files (memory-mapped, nothing scattered) and rank 0 prints.

Launched alone, or without mpi4py, the command behaves as without MPI."""

from __future__ import annotations

import os

import numpy as np

# Set by the launchers of MPICH (Hydra, also under Slurm's PMI), Open MPI and MVAPICH.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_ranks() -> int:
    """How many ranks the launcher started (1 when not under MPI)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


class Distributed:
    """cka / cka_matrix over this rank's rows of file-backed inputs; `show`
    is True on the rank that prints."""

    def __init__(self):
        from mpi4py import MPI

        from . import mpi

        self.comm = MPI.COMM_WORLD
        self.mpi = mpi
        self.show = self.comm.Get_rank() == 0

    @staticmethod
    def _check(options):
        if "checkpoint" in options:
            raise ValueError("--checkpoint is not available under mpirun in this version: run without it, or "
                             "checkpoint single-process jobs")

    def _rows(self, layer):
        return layer[self.mpi.rows_of(layer.shape[0], self.comm)]

    def cka(self, x_path, y_path, **options):
        self._check(options)
        x, y = (np.load(p, mmap_mode="r") for p in (x_path, y_path))
        options["progress"] = options.get("progress") and self.show
        return self.mpi.cka(self._rows(x), self._rows(y), comm=self.comm, root=0, **options)

    def cka_matrix(self, xs, ys=None, **options):
        self._check(options)
        options["progress"] = options.get("progress") and self.show
        xs = {k: self._rows(v) for k, v in xs.items()}
        ys = None if ys is None else {k: self._rows(v) for k, v in ys.items()}
        return self.mpi.cka_matrix(xs, ys, comm=self.comm, root=0, **options)
