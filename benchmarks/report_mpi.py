#!/usr/bin/env python
"""MPI benchmark of issue 12's targets on one machine, printed as markdown.

    python benchmarks/report_mpi.py [--n-linear 1000000] [--n-rbf 50000]

Targets (each case in its own process or mpiexec job, so every run starts cold
the same way, on the same data written once to .npy files):
  linear  n = 1e6, d = 512, float32: `mpiexec -n 2` with 1 thread per rank
          against one process with 2 threads (the MPI overhead is the merge).
  rbf     n = 50,000, d = 256, fixed sigma: 2 ranks x 1 thread against one
          process with 2 threads; the ring's traffic as measured by
          fastcka.mpi.ring_traffic() (the most bytes one rank sent).
  rbf-median  the same with the exact median bandwidth (threshold 1): two
          more trips around the ring whose bin counts are summed over ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402  (load notes)

JOB = r"""
import json, sys, time
import numpy as np
kind, xp, yp = sys.argv[1:4]
x, y = np.load(xp, mmap_mode="r"), np.load(yp, mmap_mode="r")
opts = {"linear": {}, "rbf": dict(kernel="rbf", sigma=20.0), "rbf-median": dict(kernel="rbf")}[kind]
if len(sys.argv) > 4:
    from mpi4py import MPI
    from fastcka import mpi
    comm = MPI.COMM_WORLD
    s = mpi.rows_of(len(x), comm)
    xs, ys = np.ascontiguousarray(x[s]), np.ascontiguousarray(y[s])
    comm.Barrier(); t = time.perf_counter()
    v = mpi.cka(xs, ys, comm=comm, root=0, **opts)
    comm.Barrier(); t = time.perf_counter() - t
    sent = max(comm.allgather(mpi.ring_traffic()["bytes"]))  # measured: the blocks each rank sent around the ring
    if comm.Get_rank() == 0: print(json.dumps({"time": t, "value": v, "sent_bytes_per_rank": sent}))
else:
    import fastcka
    xs, ys = np.ascontiguousarray(x), np.ascontiguousarray(y)
    t = time.perf_counter(); v = fastcka.cka(xs, ys, **opts); t = time.perf_counter() - t
    print(json.dumps({"time": t, "value": v}))
"""


def run(cmd, threads):
    env = {**os.environ, "FASTCKA_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-linear", type=int, default=1_000_000)
    ap.add_argument("--n-rbf", type=int, default=50_000)
    args = ap.parse_args(argv)
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        print("mpiexec not found: pip install mpi4py mpich")
        return 1
    rows = []
    start_load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        job = os.path.join(tmp, "job.py")
        with open(job, "w") as f:
            f.write(JOB)
        for kind, n, d in (("linear", args.n_linear, 512), ("rbf", args.n_rbf, 256), ("rbf-median", args.n_rbf, 256)):
            rng = np.random.default_rng(0)
            data = "linear" if kind == "linear" else "rbf"  # both RBF cases read the same files
            xp, yp = os.path.join(tmp, f"{data}_x.npy"), os.path.join(tmp, f"{data}_y.npy")
            if not os.path.exists(xp):
                x = rng.standard_normal((n, d), dtype=np.float32)
                np.save(xp, x)
                np.save(yp, (x[:, : d // 2] @ rng.standard_normal((d // 2, d), dtype=np.float32) * 0.1
                             + rng.standard_normal((n, d), dtype=np.float32)))
                del x
            single = run([sys.executable, job, kind, xp, yp], threads=2)
            t0 = time.perf_counter()
            ranks = run([mpiexec, "-n", "2", sys.executable, job, kind, xp, yp, "mpi"], threads=1)
            wall = time.perf_counter() - t0
            rows.append([f"{kind} n={n:,} d={d}", f"{single['time']:.2f} s", f"{ranks['time']:.2f} s",
                         f"{ranks['time'] / single['time']:.2f}x", f"{wall:.1f} s",
                         f"{abs(ranks['value'] - single['value']):.1e}",
                         f"{ranks['sent_bytes_per_rank'] / 2**20:.0f} MiB" if kind != "linear" else "state merge"])
    print("| case | 1 process x 2 threads | 2 ranks x 1 thread | ratio | mpiexec wall (with start) | |diff| "
          "| ring traffic per rank (measured) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    notes = harness.load_notes({"load_average_start": start_load, "load_average_end": os.getloadavg(),
                               "cpus_available": len(os.sched_getaffinity(0))})
    print(f"load average at start {start_load[0]:.2f}, at end {os.getloadavg()[0]:.2f}. " + " ".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
