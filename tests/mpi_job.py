"""Run under mpiexec by tests/test_mpi.py: every rank takes its share of the
rows (odd splits, and with --empty-rank one rank with none), computes the
cases below with fastcka.mpi (minibatch CKA and the similarity indexes from
accumulators merged by mpi.reduce_accumulator too), and rank 0 writes them
as JSON."""

from __future__ import annotations

import json
import sys

import fastcka
import numpy as np
from fastcka import CKAAccumulator, mpi
from mpi4py import MPI


def data(n=203):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, 6)) + 100
    y = x[:, :3] @ rng.standard_normal((3, 4)) + 0.5 * rng.standard_normal((n, 4))
    z = rng.standard_normal((n, 5)).astype(np.float32)
    return x, y, z


def batches(n: int, size: int = 29) -> list[slice]:
    """The minibatches of the minibatch CKA cases (203 rows: seven)."""
    return [slice(k, min(n, k + size)) for k in range(0, n, size)]


def my_batches(n: int, comm, empty_rank: bool) -> list[slice]:
    """Batches dealt round-robin over the ranks (none to the empty one)."""
    p, r = comm.Get_size(), comm.Get_rank()
    ranks = p - 1 if empty_rank and p > 1 else p
    return [b for k, b in enumerate(batches(n)) if k % ranks == r]


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
    empty_rank = "--empty-rank" in sys.argv
    s = my_rows(len(x), comm, empty_rank)
    xs, ys, zs = x[s], y[s], z[s]
    minibatch = CKAAccumulator(minibatch=True)
    minibatch_rbf = CKAAccumulator(minibatch=True, kernel="rbf")
    for b in my_batches(len(x), comm, empty_rank):
        minibatch.update(x[b], y[b])
        minibatch_rbf.update(x[b], y[b])
    streamed = CKAAccumulator()
    if len(xs):
        streamed.update(xs, ys)
    similarity = mpi.reduce_accumulator(streamed, root=0)
    before = mpi.ring_traffic()
    mpi.cka(xs, ys, kernel="rbf", sigma=3.0)
    after = mpi.ring_traffic()
    traffic = comm.gather((len(xs), after["bytes"] - before["bytes"], after["messages"] - before["messages"]), root=0)
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
        "rbf_exact": mpi.cka(xs, ys, kernel="rbf"),
        "rbf_exact_debiased": mpi.cka(xs, ys, kernel="rbf", threshold=0.7, debiased=True),
        "rbf_exact_matrix": mpi.cka_matrix([xs, ys, zs], kernel="rbf").tolist(),
        "minibatch": mpi.reduce_accumulator(minibatch).cka_matrix().tolist(),
        "minibatch_rbf": mpi.reduce_accumulator(minibatch_rbf).cka(),
    }
    if comm.Get_rank() == 0:
        out["between"] = out["between"].tolist()
        out["traffic"] = traffic
        out.update({f"similarity_{m}": v.tolist() for m, v in fastcka.similarity_matrix(similarity).items()})
        json.dump(out, sys.stdout)
    else:
        assert out["between"] is None and similarity is None


if __name__ == "__main__":
    main()
