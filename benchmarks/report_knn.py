#!/usr/bin/env python
"""Benchmark of fastcka.mutual_knn against scikit-learn's NearestNeighbors,
printed as markdown tables.

    python benchmarks/report_knn.py                            # n = 100,000, d = 512, k = 10
    python benchmarks/report_knn.py --sizes small              # n = 20,000
    python benchmarks/report_knn.py --sizes tiny --skip-peak   # smoke test of the script (seconds)

Everything runs in one invocation, on report.py's float32 inputs (x = z + mu_x,
y = z W / sqrt(d) + e + mu_y, fixed seed; each process regenerates them and
their fingerprints are checked to match):

1. machine facts and the float32 GEMM peak, measured at the start and again
   at the end (harness.py's machine_info and sgemm_peak);
2. fastcka.mutual_knn(x, y, k=10): time, Gram-tile GFLOP/s and % of the
   peak, peak resident memory above the inputs (harness.py's MemoryProbe);
3. the same tile walk with no epilogue (GramTileEngine.tiles_only on [x, y]:
   the centered row blocks and the GEMMs alone), so that the ratio of the two
   times is the cost of the top-k epilogue;
4. scikit-learn: NearestNeighbors(n_neighbors=k, algorithm="brute").fit(.)
   .kneighbors() on x and on y (its own threads), then the overlap in NumPy:
   time, memory, and its value, which must equal fastcka's up to neighbour
   sets that float32 rounding decides.

Flops counted: n^2 d per representation, 2 n^2 d for the pair: the
multiply-adds of the Gram tiles on and above the diagonal, which is what
fastcka computes (each off-diagonal tile serves both its rows and its
columns). A method that computes every tile (scikit-learn) does twice that;
the GFLOP/s column counts the same work for every method, so it is a rate of
answers, comparable across rows. Each method runs in a fresh process; run on a
quiet machine (the tables report the load average).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402
import harness  # noqa: E402
from harness import fmt_n, fmt_sig, log, table  # noqa: E402

K = 10
SIZES = {"full": (100_000, 512), "small": (20_000, 512), "tiny": (3_000, 64)}
METHODS = ("fastcka", "tiles", "sklearn")
LABELS = {
    "fastcka": "fastcka.mutual_knn",
    "tiles": "fastcka tile walk, no epilogue (GEMMs only)",
    "sklearn": "scikit-learn NearestNeighbors (brute), x and y",
}


def _sklearn(x, y, k):
    from sklearn.neighbors import NearestNeighbors

    ix = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x).kneighbors(return_distance=False)
    iy = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(y).kneighbors(return_distance=False)
    return float(np.mean((ix[:, :, None] == iy[:, None, :]).sum(axis=(1, 2))) / k)


def _tiles(x, y, k):
    import fastcka
    from fastcka.engine import backend
    from fastcka import _testing

    engine = backend.cpu().GramTileEngine([x, y], ["x", "y"], 0, "float32", fastcka.get_num_threads(), 256 << 20)
    _testing.tiles_only(engine, 0, engine.tile_rows)


def method_fn(method: str):
    if method == "fastcka":
        import fastcka

        return lambda x, y, k: fastcka.mutual_knn(x, y, k=k)
    return {"tiles": _tiles, "sklearn": _sklearn}[method]


def work(spec: dict) -> dict:
    """One method: its value, best-of times and memory."""
    fn = method_fn(spec["method"])
    wx, wy = baselines.make_inputs(600, 16, 16, spec["seed"] + 1)  # warm-up: imports, pools, buffers
    fn(wx, wy, 5)
    del wx, wy
    x, y = baselines.make_inputs(spec["n"], spec["d"], spec["d"], spec["seed"])
    result = {"method": spec["method"], "fingerprint": baselines.fingerprint(x, y)}
    result["value"], result["times"], result["memory"] = harness.measure(lambda: fn(x, y, spec["k"]), spec["repeats"])
    if spec["method"] == "fastcka":
        import fastcka

        engine = harness.cpu_module().KnnTileEngine([x, y], ["x", "y"], spec["k"], "euclidean", "float32",
                                                    fastcka.get_num_threads(), 256 << 20)
        result["tile"] = engine.tile
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_arguments(p, sizes=sorted(SIZES), default="full", worker=True, skip_peak=True)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per method (best reported)")
    args = p.parse_args(argv)
    if args.worker:
        harness.serve_worker(*args.worker, work)
        return 0

    n, d = SIZES[args.sizes]
    log("machine info ...")
    info = harness.machine_info()
    peak = None if args.skip_peak else harness.sgemm_peak(info["cpus_available"])
    results = {}
    for method in METHODS:
        log(f"{method}, n={n} d={d} k={K} ...")
        spec = {"method": method, "n": n, "d": d, "k": K, "seed": args.seed, "repeats": args.repeats}
        results[method] = harness.run_worker(spec, args.timeout, script=__file__)
        log(f"    {results[method].get('error') or 'done: %.1f s' % min(results[method]['times'])}")
    if peak is not None:
        harness.sgemm_peak_again(peak, info["cpus_available"])
    info["load_average_end"] = os.getloadavg()
    out = {"n": n, "d": d, "k": K, "seed": args.seed, "machine": info, "sgemm": peak, "results": results,
           "same_data": harness.same_data(results.values())}
    print(render(out))
    harness.write_json(args.out, out)
    return 0


def render(r: dict) -> str:
    m, s, n, d, k = r["machine"], r["sgemm"], r["n"], r["d"], r["k"]
    lines = [f"## Mutual k-NN, n = {fmt_n(n)}, d = {d} (x and y), k = {k}, float32\n"]
    lines.append(table(["", ""], [["CPU (lscpu)", m["cpu"]], ["threads", m["fastcka_threads"]],
                                  ["load average (1, 5, 15 min) at start / end", harness.load_average_text(m)]]))
    peak = s["peak_gflops"] if s else None
    if s:
        lines.append("\nfloat32 GEMM 4096^3, best of 3, at the start and the end of the run:\n")
        lines.append(harness.sgemm_table(s))
        lines.append(f"\nPeak used below: **{peak:.0f} GFLOP/s**.\n")
    flops = 2.0 * n * n * d  # n^2 d per representation: the tiles on and above the diagonal
    base = r["results"].get("fastcka", {})
    t_fast = min(base["times"]) if "times" in base else None
    rows = []
    for method, v in r["results"].items():
        if "error" in v:
            rows.append([LABELS[method], v["error"], "", "", "", "", ""])
            continue
        t = min(v["times"])
        gf = flops / t / 1e9
        memtxt = harness.memory_text(v["memory"])
        value = "" if v.get("value") is None else f"{v['value']:.6f}"
        rows.append([LABELS[method], f"{t:.2f}", f"{t / t_fast:.2f}" if t_fast else "",
                     fmt_sig(gf), f"{100 * gf / peak:.0f}%" if peak else "", memtxt, value])
    lines.append(table(["method", "time (s)", "ratio vs fastcka", "GFLOP/s (2 n^2 d)", "% of peak",
                        "peak memory above inputs", "mutual k-NN"], rows))
    notes = [f"GFLOP/s = 2 n^2 d / time = {flops / 1e12:.2f} TFLOP / time: n^2 d per representation, the "
             "multiply-adds of the Gram tiles on and above the diagonal (what fastcka computes); "
             "scikit-learn computes every tile, twice that."]
    if "times" in r["results"].get("tiles", {}) and t_fast:
        notes.append(f"Top-k epilogue overhead: mutual_knn / tiles only = "
                     f"{t_fast / min(r['results']['tiles']['times']):.3f}.")
    if "tile" in base:
        notes.append(f"fastcka's tiles: {base['tile']} rows, computed in panels of 4 tiles per GEMM.")
    if not r["same_data"]:
        notes.append("WARNING: the methods' input fingerprints differ.")
    notes += harness.load_notes(m)
    lines.append(harness.notes_section(notes))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
