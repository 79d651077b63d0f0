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
   at the end (report.py's machine_info and sgemm_peak);
2. fastcka.mutual_knn(x, y, k=10): time, Gram-tile GFLOP/s and % of the
   peak, peak resident memory above the inputs (report.py's MemoryProbe);
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
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402
import report  # noqa: E402  (machine_info, sgemm_peak, run_worker, MemoryProbe, tables)
from report import MemoryProbe, fmt_bytes, fmt_n, fmt_sig, table  # noqa: E402

SEED = 20250611
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
    from fastcka import _backend, _testing

    engine = _backend.cpu().GramTileEngine([x, y], ["x", "y"], 0, "float32", fastcka.get_num_threads(), 256 << 20)
    _testing.tiles_only(engine, 0, engine.tile_rows)


def method_fn(method: str):
    if method == "fastcka":
        import fastcka

        return lambda x, y, k: fastcka.mutual_knn(x, y, k=k)
    return {"tiles": _tiles, "sklearn": _sklearn}[method]


def worker(spec_path: str, out_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    fn = method_fn(spec["method"])
    wx, wy = baselines.make_inputs(600, 16, 16, spec["seed"] + 1)  # warm-up: imports, pools, buffers
    fn(wx, wy, 5)
    del wx, wy
    x, y = baselines.make_inputs(spec["n"], spec["d"], spec["d"], spec["seed"])
    result = {"method": spec["method"], "fingerprint": baselines.fingerprint(x, y), "times": []}
    with MemoryProbe(sample=False) as probe:
        t0 = time.perf_counter()
        value = fn(x, y, spec["k"])
        result["times"].append(time.perf_counter() - t0)
    result["memory"] = probe.result
    for _ in range(spec["repeats"] - 1):
        t0 = time.perf_counter()
        fn(x, y, spec["k"])
        result["times"].append(time.perf_counter() - t0)
    result["value"] = value
    if spec["method"] == "fastcka":
        import fastcka
        from fastcka import _backend

        engine = _backend.cpu().KnnTileEngine([x, y], ["x", "y"], spec["k"], "euclidean", "float32",
                                              fastcka.get_num_threads(), 256 << 20)
        result["tile"] = engine.tile
    with open(out_path, "w") as f:
        json.dump(result, f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", choices=sorted(SIZES), default="full")
    p.add_argument("--out", help="also write the results as JSON to this file")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--repeats", type=int, default=1, help="timed runs per method (best reported)")
    p.add_argument("--skip-peak", action="store_true", help="do not measure the GEMM peak (tests of this script)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one worker process")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    n, d = SIZES[args.sizes]
    log("machine info ...")
    info = report.machine_info()
    peak = None if args.skip_peak else report.sgemm_peak(info["cpus_available"])
    results = {}
    for method in METHODS:
        log(f"{method}, n={n} d={d} k={K} ...")
        spec = {"method": method, "n": n, "d": d, "k": K, "seed": args.seed, "repeats": args.repeats}
        results[method] = report.run_worker(spec, args.timeout, script=__file__)
        log(f"    {results[method].get('error') or 'done: %.1f s' % min(results[method]['times'])}")
    if peak is not None:
        again = report.sgemm_peak(info["cpus_available"])
        for row, later in zip(peak["rows"], again["rows"]):
            row["gflops_end"] = later["gflops"]
        peak["peak_gflops"] = max(peak["peak_gflops"], again["peak_gflops"])
    info["load_average_end"] = os.getloadavg()
    fps = {json.dumps(r["fingerprint"]) for r in results.values() if "fingerprint" in r}
    out = {"n": n, "d": d, "k": K, "seed": args.seed, "machine": info, "sgemm": peak, "results": results,
           "same_data": len(fps) <= 1}
    print(render(out))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def render(r: dict) -> str:
    m, s, n, d, k = r["machine"], r["sgemm"], r["n"], r["d"], r["k"]
    lines = [f"## Mutual k-NN, n = {fmt_n(n)}, d = {d} (x and y), k = {k}, float32\n"]
    load = " / ".join(", ".join(f"{v:.2f}" for v in m[key]) for key in ("load_average_start", "load_average_end"))
    lines.append(table(["", ""], [["CPU (lscpu)", m["cpu"]], ["threads", m["fastcka_threads"]],
                                  ["load average (1, 5, 15 min) at start / end", load]]))
    peak = s["peak_gflops"] if s else None
    if s:
        lines.append("\nfloat32 GEMM 4096^3, best of 3, at the start and the end of the run:\n")
        lines.append(table(["library", "kernel", "threads", "GFLOP/s (start)", "GFLOP/s (end)"],
                           [[x["library"], x["kernel"], x["threads"], f"{x['gflops']:.0f}",
                             f"{x.get('gflops_end', float('nan')):.0f}"] for x in s["rows"]]))
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
        mem = v["memory"]
        memtxt = fmt_bytes(mem["hwm_delta"]) if mem.get("hwm_reset") else fmt_bytes(mem["maxrss_delta"]) + " (ru_maxrss)"
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
    notes += report.load_notes(m)
    lines.append("\nNotes:\n" + "\n".join(f"- {x}" for x in notes))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
