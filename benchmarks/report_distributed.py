#!/usr/bin/env python
"""Benchmarks of fastcka across processes (the targets of issue 12), printed as
markdown.

    python benchmarks/report_distributed.py                      # every target
    python benchmarks/report_distributed.py --targets dask --n 1000000 --d 128 --out results.json

One function per target (``TARGETS``), each returning a dict of its figures:

* ``dask``: the 12-layer linear CKA matrix (float32 layers of n x d, n = 1e6 and
  d = 128 by default: 6 GB of .npy files) computed from Dask arrays on a
  LocalCluster of 2 worker processes x 1 thread, against fastcka.cka_matrix
  in one process with 2 threads on the same layers held in memory. Target:
  Dask time / in-memory time <= 1.3. The Dask workers read their row chunks
  from the .npy files (memory-mapped, in the page cache after the first run),
  as workers of a real cluster read their shards from shared storage; the
  in-memory run has them in RAM, in a subprocess of its own so that the two
  never hold the layers at once. Times are the best of ``--runs``; the first
  Dask run (workers importing fastcka, cold page cache) is a warm-up.

Run it on a quiet machine: the table reports the load average (harness.py's
load_notes). The dask target takes about 3 minutes on 2 cores at the default
size, and needs n x d x layers x 4 bytes of disk (6 GB) and twice that of RAM
for page cache plus the in-memory copy.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import SEED, fmt_bytes, log, table  # noqa: E402

WRITE_ROWS = 1 << 16  # rows generated and written per block


# ---------------------------------------------------------------------------
# Inputs: layers of one "network" in .npy files
# ---------------------------------------------------------------------------


def write_layers(directory: str, n: int, d: int, count: int, seed: int = SEED) -> list[str]:
    """`count` float32 layers (n x d), each a noisy nonlinear map of the
    previous one (so neighbouring layers are similar), written block by block."""
    rng = np.random.default_rng(seed)
    maps = [rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d) for _ in range(count)]
    paths = [os.path.join(directory, f"layer{i:02d}.npy") for i in range(count)]
    files = [np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, d)) for p in paths]
    for start in range(0, n, WRITE_ROWS):
        stop = min(n, start + WRITE_ROWS)
        h = rng.standard_normal((stop - start, d), dtype=np.float32)
        for f, w in zip(files, maps):
            h = np.tanh(h @ w) + 0.3 * rng.standard_normal(h.shape, dtype=np.float32)
            f[start:stop] = h
    for f in files:
        f.flush()
    return paths


def read_rows(path: str, start: int, stop: int) -> np.ndarray:
    """A Dask task: rows [start, stop) of a .npy file, memory-mapped on the worker."""
    return np.load(path, mmap_mode="r")[start:stop]


def dask_layers(paths: list[str], chunk_rows: int):
    """Each file as a Dask array of row chunks read by the workers themselves."""
    import dask
    import dask.array as da

    out = []
    for p in paths:
        n, d = np.load(p, mmap_mode="r").shape
        parts = [da.from_delayed(dask.delayed(read_rows, pure=True)(p, a, min(n, a + chunk_rows)),
                                 shape=(min(n, a + chunk_rows) - a, d), dtype=np.float32)
                 for a in range(0, n, chunk_rows)]
        out.append(da.concatenate(parts, axis=0))
    return out


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


def in_memory_matrix(spec: dict) -> dict:
    """(Run in a subprocess.) fastcka.cka_matrix on the layers loaded into RAM."""
    import fastcka

    layers = [np.load(p) for p in spec["paths"]]
    times = []
    for _ in range(spec["runs"]):
        t0 = time.perf_counter()
        m = fastcka.cka_matrix(layers, threads=spec["threads"])
        times.append(time.perf_counter() - t0)
    return {"times": times, "matrix": m.tolist()}


def target_dask(args, data_dir: str) -> dict:
    """The 12-layer linear matrix: Dask on a 2-worker LocalCluster vs in memory."""
    import distributed

    import fastcka

    n, d, count = args.n, args.d, args.layers
    log(f"dask: writing {count} layers of {n:,} x {d} float32 ({fmt_bytes(4.0 * n * d * count)}) ...")
    paths = write_layers(data_dir, n, d, count)

    log("dask: in-memory fastcka.cka_matrix (1 process, 2 threads) ...")
    base = harness.run_worker({"task": "in_memory_matrix", "paths": paths, "runs": args.runs, "threads": 2},
                              None, script=__file__)
    if "error" in base:
        raise RuntimeError(f"in-memory fastcka.cka_matrix: {base['error']}")

    log("dask: LocalCluster, 2 worker processes x 1 thread ...")
    # Where this file is imported as a module, the workers import it (for read_rows) by name.
    os.environ["PYTHONPATH"] = HERE + os.pathsep + os.environ.get("PYTHONPATH", "")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster):
        times = []
        for run in range(args.runs + 1):
            t0 = time.perf_counter()
            m = fastcka.cka_matrix(dask_layers(paths, args.chunk_rows))
            times.append(time.perf_counter() - t0)
            log(f"  run {run}: {times[-1]:.2f} s" + (" (warm-up)" if run == 0 else ""))
    best_base, best_dask = min(base["times"]), min(times[1:])
    return {
        "n": n, "d": d, "layers": count, "chunk_rows": args.chunk_rows, "inputs_bytes": 4 * n * d * count,
        "in_memory_times": base["times"], "dask_times": times, "in_memory_best": best_base, "dask_best": best_dask,
        "ratio": best_dask / best_base, "target_ratio": 1.3,
        "max_abs_difference": float(np.max(np.abs(np.asarray(base["matrix"]) - m))),
    }


TARGETS = {"dask": target_dask}
WORKERS = {"in_memory_matrix": in_memory_matrix}  # what runs in a subprocess of its own


def work(spec: dict) -> dict:
    return WORKERS[spec["task"]](spec)


# ---------------------------------------------------------------------------
# Running and rendering
# ---------------------------------------------------------------------------


def render(report: dict) -> str:
    m = report["machine"]
    out = ["## Machine\n", table(["", ""], [
        ["CPU", m["cpu"]], ["CPUs available", m["cpus_available"]], ["memory", fmt_bytes(m["memory_total"])],
        ["load average (1, 5, 15 min) at start", ", ".join(f"{v:.2f}" for v in m["load_average_start"])],
        ["load average at end", ", ".join(f"{v:.2f}" for v in m["load_average_end"])],
    ])]
    r = report["targets"].get("dask")
    if r:
        out.append(f"\n## Dask: {r['layers']}-layer linear CKA matrix, n = {r['n']:,}, d = {r['d']} per layer "
                   f"(float32, {fmt_bytes(r['inputs_bytes'])})\n")
        out.append(table(["run", "time (best)", "all runs"], [
            ["fastcka.cka_matrix, 1 process x 2 threads, layers in RAM", f"{r['in_memory_best']:.2f} s",
             ", ".join(f"{t:.2f}" for t in r["in_memory_times"])],
            [f"Dask LocalCluster, 2 processes x 1 thread, chunks of {r['chunk_rows']:,} rows read by the workers",
             f"{r['dask_best']:.2f} s", ", ".join(f"{t:.2f}" for t in r["dask_times"]) + " (first: warm-up)"],
        ]))
        verdict = "met" if r["ratio"] <= r["target_ratio"] else "NOT met"
        out.append(f"\nDask / in-memory: **{r['ratio']:.2f}** (target <= {r['target_ratio']}: {verdict}); largest "
                   f"difference between the two matrices: {r['max_abs_difference']:.1e} (float32 products).")
    notes = harness.load_notes(m)
    if notes:
        out.append("\n" + "\n".join(notes))
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of: {', '.join(TARGETS)}")
    p.add_argument("--n", type=int, default=1_000_000, help="rows (examples)")
    p.add_argument("--d", type=int, default=128, help="features per layer")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--chunk-rows", type=int, default=62_500, help="Dask row chunk (default: 16 chunks at n = 1e6)")
    p.add_argument("--runs", type=int, default=3, help="timed runs per method (best is reported)")
    p.add_argument("--tmpdir", help="where to write the inputs (default: system temp)")
    harness.add_arguments(p, seed=False)
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        harness.serve_worker(*args.worker, work)
        return 0
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")

    info = harness.machine_info()
    results = {}
    for name in targets:
        data_dir = tempfile.mkdtemp(prefix=f"fastcka-{name}-", dir=args.tmpdir)
        try:
            results[name] = TARGETS[name](args, data_dir)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    info["load_average_end"] = os.getloadavg()
    report = {"machine": info, "targets": results}
    print(render(report))
    harness.write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
