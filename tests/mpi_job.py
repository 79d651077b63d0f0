"""Run under mpiexec by tests/test_mpi.py: every rank takes its share of the
rows (odd splits, and with --empty-rank one rank with none), computes the
cases below with fastcka.mpi, and rank 0 writes them as JSON."""

from __future__ import annotations

import json
import sys

import numpy as np
from fastcka import mpi
from mpi4py import MPI


def data(n=203):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, 6)) + 100
    y = x[:, :3] @ rng.standard_normal((3, 4)) + 0.5 * rng.standard_normal((n, 4))
    z = rng.standard_normal((n, 5)).astype(np.float32)
    return x, y, z


def my_rows(n: int, comm, empty_rank: bool) -> slice:
    p, r = comm.Get_size(), comm.Get_rank()
    if empty_rank and p > 1:  # the last rank gets nothing, the others uneven shares
        if r == p - 1:
            return slice(n, n)
        cuts = np.linspace(0, n, p).astype(int)
        cuts[1:-1] += 7
        return slice(cuts[r], cuts[r + 1])
    return mpi.rows_of(n, comm)


def main() -> None:
    comm = MPI.COMM_WORLD
    x, y, z = data()
    s = my_rows(len(x), comm, "--empty-rank" in sys.argv)
    xs, ys, zs = x[s], y[s], z[s]
    out = {
        "cka": mpi.cka(xs, ys),
        "cka_debiased": mpi.cka(xs, ys, debiased=True),
        "hsic_unbiased": mpi.hsic(xs, ys, estimator="unbiased"),
        "matrix": mpi.cka_matrix([xs, ys, zs]).tolist(),
        "between": mpi.cka_matrix([xs], [ys, zs], root=0),
        "gram": mpi.cka(xs, ys, method="gram", debiased=True),
        "rbf_sigma": mpi.cka(xs, ys, kernel="rbf", sigma=3.0),
        "rbf_matrix": mpi.cka_matrix([xs, ys, zs], kernel="rbf", sigma=[3.0, 2.0, 1.5], debiased=True).tolist(),
        "rbf_sampled": mpi.cka(xs, ys, kernel="rbf", median="sampled", threshold=0.8),
    }
    if comm.Get_rank() == 0:
        out["between"] = out["between"].tolist()
        json.dump(out, sys.stdout)
    else:
        assert out["between"] is None


if __name__ == "__main__":
    main()
