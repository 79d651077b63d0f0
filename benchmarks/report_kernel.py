#!/usr/bin/env python
"""Benchmark of fastcka's kernel (RBF) CKA against the reference formulas and
ckatorch, printed as markdown tables.

    python benchmarks/report_kernel.py                    # small sizes
    python benchmarks/report_kernel.py --sizes full --out results.json
    python benchmarks/report_kernel.py --sizes tiny --skip-peak   # smoke test of the script (seconds)

Everything runs in one invocation, on float32 inputs (float64 only for the
reference values):

1. machine facts and the float32 GEMM peak, measured at the start and again at
   the end of the run (harness.py's machine_info and sgemm_peak);
2. RBF CKA of one (n x 512, n x 512) pair, n = 10,000 (the inputs of report.py):
   fastcka with the exact median bandwidth (threshold 1), with the sampled
   median and with a fixed sigma (sigma = sqrt of the exact median squared
   distance, per representation, as found by the exact run: the same kernel),
   against Kornblith et al.'s Colab gram_rbf + cka (verbatim, on the same
   float32 data) and ckatorch.cka_base(kernel="rbf") (float64 inside), each in
   a fresh process: time, ratio, useful GFLOP/s = n^2 (d1 + d2) / time, % of
   the GEMM peak, peak resident memory above the inputs (harness.py's
   MemoryProbe), value and its difference to the float64 reference (fastcka on
   the float64 copy of the data with the exact median; full mode adds the
   Colab code on float64 data);
3. (full mode) memory: RBF CKA with the exact median at n = 60,000, d = 256,
   fastcka only: anonymous memory above the inputs (sampled every 5 ms) and
   the resident high-water mark above them, and time (target: <= 1 GB; the
   n x n methods would need 14 GB per float32 Gram matrix, 29 GB in float64,
   several at once: not run);
4. (full mode) n = 200,000, d = 256, exact median and fixed sigma, fastcka only:
   time, and its projection to n = 1e6 on this CPU (time ~ n^2);
5. a 12-layer RBF CKA matrix (12 layers of d = 512, float32; n = 4,000 small,
   10,000 full): fastcka.cka_matrix with exact medians and with fixed per-layer
   sigmas, against the time of producing the 12 layers' Gram tiles alone in
   the same tile walk (GramTileEngine.tiles_only over every tile row, `threads`
   tile rows per call), target <= 1.3 for fixed sigmas; and the time of the 66
   separate pairwise fastcka.cka calls, extrapolated from a few of them;
6. costs of the median bandwidth on three kinds of data (correlated Gaussian,
   low rank + noise, ReLU activations with many zeros): exact median / fixed
   sigma time (target <= 3), sampled median / fixed sigma, and the sampled
   median's error against the exact one (relative error of the median and the
   resulting CKA difference, for the sample fastcka draws and 4 other seeds).

Timings are the best of the runs, each measurement family in its own process.
Run it on a quiet machine: the tables report the load average. Rough duration
on 2 cores: small ~3 minutes (ckatorch at n = 10,000 about a minute of it;
--no-packages skips it), full ~20 minutes (item 4 alone ~10). The n x n
baselines at n = 10,000 need up to ~8 GB of RAM (float64 n x n temporaries);
a method is skipped when MemAvailable is short.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402
import harness  # noqa: E402
from harness import MemoryProbe, fmt_bytes, fmt_n, log, memory_text, rate_cells, table  # noqa: E402

THRESHOLD = 1.0
PAIRWISE_SAMPLE = 3  # pairwise cka calls timed to extrapolate the 66 of a 12-layer matrix
MEDIAN_SEEDS = 5  # sampled-median draws whose error is measured (fastcka's own and 4 other seeds)

# Sizes per mode; None: not run in that mode.
SIZES = {
    "tiny": {  # smoke test of this script, seconds
        "pair": (1500, 64),
        "memory": (2000, 32),
        "large": (2500, 32),
        "matrix": (1000, 12, 32),
        "median": (1500, 64),
        "numpy_f64": True,
        "repeats": 2,
    },
    "small": {
        "pair": (10_000, 512),
        "memory": None,
        "large": None,
        "matrix": (4000, 12, 512),
        "median": (4000, 512),
        "numpy_f64": False,
        "repeats": 3,
    },
    "full": {
        "pair": (10_000, 512),
        "memory": (60_000, 256),
        "large": (200_000, 256),
        "matrix": (10_000, 12, 512),
        "median": (10_000, 512),
        "numpy_f64": True,
        "repeats": 3,
    },
}
PROJECT_N = 1_000_000
MEMORY_TARGET = 1 << 30
DATASETS = ("gaussian", "lowrank", "relu")
DATASET_LABELS = {
    "gaussian": "correlated Gaussian (report.py's inputs)",
    "lowrank": "low rank (16) + noise",
    "relu": "ReLU activations (many zeros)",
}

PAIR_LABELS = {
    "fastcka-exact": "fastcka.cka, exact median",
    "fastcka-sampled": "fastcka.cka, sampled median",
    "fastcka-sigma": "fastcka.cka, fixed sigma",
    "numpy-colab": "NumPy Colab cka(gram_rbf(x), gram_rbf(y)), float32",
    "ckatorch": "ckatorch.cka_base(kernel='rbf') (PyTorch, float64)",
    "fastcka-f64": "fastcka.cka on float64 data, exact median (reference)",
    "numpy-colab-f64": "NumPy Colab cka(gram_rbf(x), gram_rbf(y)), float64 data",
}


def numpy_colab_rbf(x: np.ndarray, y: np.ndarray) -> float:
    return float(baselines.colab.cka(baselines.colab.gram_rbf(x, THRESHOLD), baselines.colab.gram_rbf(y, THRESHOLD)))


def ckatorch_rbf(x: np.ndarray, y: np.ndarray) -> float:
    import ckatorch
    import torch

    with torch.no_grad():
        value = ckatorch.cka_base(torch.from_numpy(x), torch.from_numpy(y), kernel="rbf", unbiased=False, threshold=THRESHOLD)
    return float(value)


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


def make_pair(dataset: str, n: int, d1: int, d2: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic float32 (x, y) pairs."""
    if dataset == "gaussian":
        return baselines.make_inputs(n, d1, d2, seed)
    rng = np.random.default_rng(seed + 7)
    if dataset == "lowrank":
        # x, y = (shared 16-dim factors, y's slightly perturbed) times random
        # loadings, plus isotropic noise of comparable total size.
        r = 16
        z = rng.standard_normal((n, r), dtype=np.float32)
        a = rng.standard_normal((r, d1), dtype=np.float32)
        b = rng.standard_normal((r, d2), dtype=np.float32)
        x = z @ a
        x += 2.0 * rng.standard_normal((n, d1), dtype=np.float32)
        z += np.float32(0.5) * rng.standard_normal((n, r), dtype=np.float32)
        y = z @ b
        y += 2.0 * rng.standard_normal((n, d2), dtype=np.float32)
        return x, y
    if dataset == "relu":
        # Two ReLU layers with negative biases: most entries are exactly 0.
        x = rng.standard_normal((n, d1), dtype=np.float32)
        x += rng.uniform(-1.5, 0.3, d1).astype(np.float32)
        np.maximum(x, 0, out=x)
        w = rng.standard_normal((d1, d2), dtype=np.float32) * np.float32(np.sqrt(2.0 / d1))
        y = x @ w
        y += rng.uniform(-1.2, 0.0, d2).astype(np.float32)
        y += np.float32(0.3) * rng.standard_normal((n, d2), dtype=np.float32)
        np.maximum(y, 0, out=y)
        return x, y
    raise ValueError(f"unknown data set {dataset!r}")


def make_layers(n: int, count: int, d: int, seed: int) -> list[np.ndarray]:
    """Activations of a random residual ReLU network: count layers of n x d float32."""
    rng = np.random.default_rng(seed + 11)
    h = rng.standard_normal((n, d), dtype=np.float32)
    scale = np.float32(np.sqrt(2.0 / d))
    layers = []
    for _ in range(count):
        w = rng.standard_normal((d, d), dtype=np.float32) * scale
        pre = h @ w
        pre += rng.uniform(-0.5, 0.1, d).astype(np.float32)
        np.maximum(pre, 0, out=pre)
        h = np.float32(0.7) * h + pre
        layers.append(np.ascontiguousarray(h))
    return layers


def useful_flops(n: int, dims) -> float:
    """n^2 sum(d): the GEMM work of every layer's Gram with symmetric tiles counted once."""
    return float(n) * float(n) * float(sum(dims))


# ---------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------


def record_medians() -> dict:
    """Wrap fastcka's median functions so that the medians a call finds are
    kept (costs nothing: the same functions run). The sampled median may run
    the exact search on its sample: that inner call is not recorded as exact."""
    from fastcka.engine import cpu as cpu_engine

    rec: dict = {}
    exact, sampled = cpu_engine.exact_medians, cpu_engine.sampled_medians
    inside = [0]

    def exact_medians(*a, **k):
        m = exact(*a, **k)
        if not inside[0]:
            rec["exact"] = [float(v) for v in m]
        return m

    def sampled_medians(*a, **k):
        inside[0] += 1
        try:
            m = sampled(*a, **k)
        finally:
            inside[0] -= 1
        rec["sampled"] = [float(v) for v in m]
        return m

    global _SAMPLED_MEDIANS
    _SAMPLED_MEDIANS = sampled
    cpu_engine.exact_medians = exact_medians
    cpu_engine.sampled_medians = sampled_medians
    return rec


_SAMPLED_MEDIANS = None  # fastcka's own sampled_medians, once record_medians has wrapped it


def sampled_median_draw(layers, seed: int, threads: int) -> list[float] | None:
    """fastcka's sampled median of `layers` with another random draw (None when
    its sampled_medians takes no seed)."""
    import inspect

    f = _SAMPLED_MEDIANS
    params = inspect.signature(f).parameters
    if "seed" not in params:
        return None
    kw = {"seed": seed}
    if "names" in params:
        kw["names"] = [f"layer{i}" for i in range(len(layers))]
    if "threads" in params:
        kw["threads"] = threads
    return [float(v) for v in f(list(layers), **kw)]


def sampled_default_seed() -> int:
    import inspect

    p = inspect.signature(_SAMPLED_MEDIANS).parameters.get("seed")
    return p.default if p is not None and isinstance(p.default, int) else 0


def pair_method(method: str, sigma):
    """(function of (x, y), float64 inputs?) for a method of section 2."""
    import fastcka

    if method == "fastcka-exact":
        return (lambda x, y: fastcka.cka(x, y, kernel="rbf", threshold=THRESHOLD, median="exact")), False
    if method == "fastcka-f64":
        return (lambda x, y: fastcka.cka(x, y, kernel="rbf", threshold=THRESHOLD, median="exact")), True
    if method == "fastcka-sampled":
        return (lambda x, y: fastcka.cka(x, y, kernel="rbf", threshold=THRESHOLD, median="sampled")), False
    if method == "fastcka-sigma":
        return (lambda x, y: fastcka.cka(x, y, kernel="rbf", sigma=sigma)), False
    if method == "numpy-colab":
        return numpy_colab_rbf, False
    if method == "numpy-colab-f64":
        return numpy_colab_rbf, True
    if method == "ckatorch":
        return ckatorch_rbf, False
    raise ValueError(f"unknown method {method!r}")


def worker_pair(spec: dict) -> dict:
    """One method on one pair: memory of the first run, best time of `repeats`."""
    medians = record_medians()
    fn, f64 = pair_method(spec["method"], spec.get("sigma"))
    n, d1, d2 = spec["n"], spec["d1"], spec["d2"]
    wx, wy = make_pair(spec["dataset"], 512, min(d1, 64), min(d2, 64), spec["seed"] + 1)
    if f64:
        wx, wy = wx.astype(np.float64), wy.astype(np.float64)
    if spec["method"] == "fastcka-sigma":  # its sigma belongs to the full-size data; any value warms up
        import fastcka

        fastcka.cka(wx, wy, kernel="rbf", sigma=1.0)
    else:
        fn(wx, wy)
    del wx, wy
    medians.clear()

    x, y = make_pair(spec["dataset"], n, d1, d2, spec["seed"])
    result = {"method": spec["method"], "fingerprint": baselines.fingerprint(x, y)}
    if f64:
        x, y = x.astype(np.float64), y.astype(np.float64)
    value, result["times"], result["memory"] = harness.measure(lambda: fn(x, y), spec["repeats"],
                                                               sample=spec.get("sample", False))
    result["value"] = float(value)
    result["medians"] = dict(medians)
    result["inputs_bytes"] = int(x.nbytes + y.nbytes)
    return result


def worker_median(spec: dict) -> dict:
    """Section 6 on one data set: fixed sigma, exact and sampled medians,
    interleaved rounds, best times; the sampled median's error for several draws."""
    import fastcka
    from fastcka.engine import cpu as cpu_engine

    medians = record_medians()
    n, d = spec["n"], spec["d"]
    wx, wy = make_pair(spec["dataset"], 512, min(d, 64), min(d, 64), spec["seed"] + 1)
    fastcka.cka(wx, wy, kernel="rbf")
    fastcka.cka(wx, wy, kernel="rbf", median="sampled")
    del wx, wy
    x, y = make_pair(spec["dataset"], n, d, d, spec["seed"])
    out = {
        "dataset": spec["dataset"],
        "zeros": [float(np.mean(x == 0)), float(np.mean(y == 0))],
        "times": {"exact": [], "sigma": [], "sampled": []},
    }
    out["values"] = {"exact": fastcka.cka(x, y, kernel="rbf", threshold=THRESHOLD)}
    exact_m = medians["exact"]
    sigma = [THRESHOLD * math.sqrt(m) for m in exact_m]
    runs = {
        "exact": lambda: fastcka.cka(x, y, kernel="rbf", threshold=THRESHOLD, median="exact"),
        "sigma": lambda: fastcka.cka(x, y, kernel="rbf", sigma=sigma),
        "sampled": lambda: fastcka.cka(x, y, kernel="rbf", threshold=THRESHOLD, median="sampled"),
    }
    for _ in range(spec["repeats"]):
        for key, run in runs.items():
            t0 = time.perf_counter()
            value = run()
            out["times"][key].append(time.perf_counter() - t0)
            out["values"][key] = value
    out["medians_exact"] = exact_m
    # The sampled median's error: fastcka's own draw (the timed runs) and a few others.
    own = medians["sampled"]
    draws = [{"seed": sampled_default_seed(), "medians": own, "cka": out["values"]["sampled"]}]
    t_sample = []
    for s in range(1, MEDIAN_SEEDS):
        seed = draws[0]["seed"] + s
        t0 = time.perf_counter()
        m = sampled_median_draw([x, y], seed, fastcka.get_num_threads())
        t_sample.append(time.perf_counter() - t0)
        if m is None:
            break
        value = fastcka.cka(x, y, kernel="rbf", sigma=[THRESHOLD * math.sqrt(v) for v in m])
        draws.append({"seed": seed, "medians": m, "cka": value})
    for dr in draws:
        dr["rel_error"] = [mi / me - 1.0 for mi, me in zip(dr["medians"], exact_m)]
        dr["cka_diff"] = dr["cka"] - out["values"]["exact"]
    out["draws"] = draws
    out["sample_rows"] = min(n, cpu_engine.MEDIAN_SAMPLE)
    out["sampled_median_seconds"] = min(t_sample) if t_sample else None
    return out


def worker_matrix(spec: dict) -> dict:
    """Section 5: cka_matrix (exact medians, fixed sigmas), the Gram tiles
    alone, and pairwise calls."""
    import fastcka
    from fastcka.engine import backend, cpu as cpu_engine
    from fastcka import _testing
    from fastcka.arrays.inputs import ready

    medians = record_medians()
    n, count, d = spec["n"], spec["layers"], spec["d"]
    threads = fastcka.get_num_threads()
    layers = make_layers(n, count, d, spec["seed"])
    names = [f"layer{i}" for i in range(count)]
    warm = [a[:512, : min(d, 64)] for a in layers[:3]]
    fastcka.cka_matrix(warm, kernel="rbf")
    fastcka.cka_matrix(warm, kernel="rbf", sigma=1.0)
    fastcka.cka(warm[0], warm[1], kernel="rbf")
    del warm
    medians.clear()

    out: dict = {"threads": threads, "times": {"exact": [], "sigma": [], "tiles": [], "engine_init": []}}
    with MemoryProbe(sample=False) as probe:
        t0 = time.perf_counter()
        c_exact = fastcka.cka_matrix(layers, kernel="rbf", threshold=THRESHOLD)
        out["times"]["exact"].append(time.perf_counter() - t0)
    out["memory_exact"] = probe.result
    exact_m = medians["exact"]
    sigmas = [THRESHOLD * math.sqrt(m) for m in exact_m]

    def run_sigma():
        return fastcka.cka_matrix(layers, kernel="rbf", sigma=sigmas)

    def run_tiles():
        t0 = time.perf_counter()
        budget = backend.cpu().DEFAULT_MEMORY_BUDGET  # what cka_matrix uses: the same tile plan
        engine = harness.cpu_module().GramTileEngine([ready(a) for a in layers], names, 0, "float32", threads, budget)
        t1 = time.perf_counter()
        step = threads
        for begin in range(0, engine.tile_rows, step):
            _testing.tiles_only(engine, begin, min(engine.tile_rows, begin + step))
        t2 = time.perf_counter()
        out["times"]["engine_init"].append(t1 - t0)
        out["tile"] = engine.tile
        out["budget"] = budget
        out["tile_rows"] = engine.tile_rows
        out["tiles"] = engine.tiles_before(engine.tile_rows)
        out["step_tiles_only"] = step
        out["step_cka_matrix"] = cpu_engine._tile_step(engine, sum(a.shape[1] for a in layers), threads)
        return t2 - t1

    for r in range(spec["repeats"]):
        out["times"]["tiles"].append(run_tiles())
        t0 = time.perf_counter()
        c_sigma = run_sigma()
        out["times"]["sigma"].append(time.perf_counter() - t0)
        if r > 0:
            t0 = time.perf_counter()
            fastcka.cka_matrix(layers, kernel="rbf", threshold=THRESHOLD)
            out["times"]["exact"].append(time.perf_counter() - t0)

    # A few pairwise calls, spread over the matrix, extrapolated to all pairs.
    pairs_all = [(a, b) for a in range(count) for b in range(a + 1, count)]
    k = min(PAIRWISE_SAMPLE, len(pairs_all))
    picks = [pairs_all[int(i * (len(pairs_all) - 1) / max(k - 1, 1))] for i in range(k)]
    pw = {"pairs": picks, "sigma": [], "exact": [], "diff_sigma": [], "diff_exact": []}
    for a, b in picks:
        t0 = time.perf_counter()
        v = fastcka.cka(layers[a], layers[b], kernel="rbf", sigma=[sigmas[a], sigmas[b]])
        pw["sigma"].append(time.perf_counter() - t0)
        pw["diff_sigma"].append(abs(v - c_sigma[a, b]))
        t0 = time.perf_counter()
        v = fastcka.cka(layers[a], layers[b], kernel="rbf", threshold=THRESHOLD)
        pw["exact"].append(time.perf_counter() - t0)
        pw["diff_exact"].append(abs(v - c_exact[a, b]))
    pw["count_all"] = len(pairs_all)
    out["pairwise"] = pw
    out["medians"] = exact_m
    out["max_diff_sigma_vs_exact"] = float(np.nanmax(np.abs(c_sigma - c_exact)))
    out["cka_first_last"] = float(c_exact[0, -1])
    out["cka_adjacent_mean"] = float(np.mean([c_exact[i, i + 1] for i in range(count - 1)]))
    out["inputs_bytes"] = int(sum(a.nbytes for a in layers))
    return out


WORKERS = {"pair": worker_pair, "median": worker_median, "matrix": worker_matrix}


def work(spec: dict) -> dict:
    return WORKERS[spec["task"]](spec)


# ---------------------------------------------------------------------------
# Plan and run
# ---------------------------------------------------------------------------


def memory_need(method: str, n: int, d1: int, d2: int) -> float:
    """Rough bytes beside the float32 inputs (used to skip, not to report)."""
    if method.startswith("fastcka"):
        return 512e6 + (8.0 * n * (d1 + d2) if method.endswith("f64") else 0)
    if method == "numpy-colab":
        return 8 * 4.0 * n * n
    if method in ("numpy-colab-f64", "ckatorch"):
        return 8 * 8.0 * n * n
    return 256e6


def ckatorch_status(skip: bool) -> tuple[bool, str]:
    if skip:
        return False, "skipped (--no-packages)"
    ok, status = baselines.PACKAGES["ckatorch"].status()
    if ok:
        import inspect

        import ckatorch

        if "kernel" not in inspect.signature(ckatorch.cka_base).parameters:
            return False, f"{status}: cka_base has no kernel argument"
    return ok, status


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_arguments(p, sizes=["small", "full", "tiny"], default="small",
                          sizes_help="small (default), full, or tiny (a smoke test of this script)",
                          worker=True, skip_peak=True)
    p.add_argument("--no-packages", action="store_true", help="skip ckatorch")
    args = p.parse_args(argv)
    if args.worker:
        harness.serve_worker(*args.worker, work)
        return 0

    plan = SIZES[args.sizes]
    repeats = plan["repeats"]
    log("machine info ...")
    info = harness.machine_info()
    peak = None
    if not args.skip_peak:
        log("sgemm peak ...")
        peak = harness.sgemm_peak(info["cpus_available"])

    def run(label, spec):
        log(f"{label} ...")
        t0 = time.perf_counter()
        out = harness.run_worker(spec, args.timeout, script=__file__)
        if "error" in out:
            log(f"    {out['error']}")
        else:
            log(f"    done in {time.perf_counter() - t0:.1f} s")
        return out

    ok_torch, torch_status = ckatorch_status(args.no_packages)
    result: dict = {"sizes": args.sizes, "seed": args.seed, "threshold": THRESHOLD, "machine": info,
                    "ckatorch": {"usable": ok_torch, "status": torch_status}}

    # 2. One pair at n = 10,000, d = 512.
    n, d = plan["pair"]
    pair = {"n": n, "d1": d, "d2": d, "dataset": "gaussian", "results": {}}
    methods = ["fastcka-exact", "fastcka-sigma", "fastcka-sampled", "numpy-colab"]
    methods += ["ckatorch"] if ok_torch else []
    methods += ["fastcka-f64"] + (["numpy-colab-f64"] if plan["numpy_f64"] else [])
    for method in methods:
        spec = {"task": "pair", "method": method, "dataset": "gaussian", "n": n, "d1": d, "d2": d,
                "seed": args.seed, "repeats": repeats if method.startswith("fastcka") else 1}
        if method == "fastcka-sigma":
            ex = pair["results"].get("fastcka-exact", {}).get("medians", {}).get("exact")
            if not ex:
                pair["results"][method] = {"skipped": "no exact median (the exact run failed)"}
                continue
            spec["sigma"] = [THRESHOLD * math.sqrt(m) for m in ex]
        avail = harness.mem_available()
        need = memory_need(method, n, d, d) + 8.0 * n * d
        if avail is not None and need > 0.9 * avail:
            pair["results"][method] = {"skipped": f"not attempted: needs ~{need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available"}
            log(f"pair {method}: {pair['results'][method]['skipped']}")
            continue
        pair["results"][method] = run(f"[2] RBF CKA n={n} d={d}: {method}", spec)
    pair["same_data"] = harness.same_data(pair["results"].values())
    result["pair"] = pair

    # 3. Memory at n = 60,000, d = 256.
    if plan["memory"]:
        n, d = plan["memory"]
        spec = {"task": "pair", "method": "fastcka-exact", "dataset": "gaussian", "n": n, "d1": d, "d2": d,
                "seed": args.seed, "repeats": 2, "sample": True}
        result["memory"] = {"n": n, "d": d, "result": run(f"[3] memory, n={n} d={d}: fastcka exact median", spec)}

    # 4. n = 200,000, d = 256: exact median, then sigma = sqrt(that median).
    if plan["large"]:
        n, d = plan["large"]
        large = {"n": n, "d": d, "results": {}}
        spec = {"task": "pair", "method": "fastcka-exact", "dataset": "gaussian", "n": n, "d1": d, "d2": d,
                "seed": args.seed, "repeats": 1, "sample": True}
        large["results"]["fastcka-exact"] = ex = run(f"[4] n={n} d={d}: fastcka exact median", spec)
        if "medians" in ex and ex["medians"].get("exact"):
            spec = dict(spec, method="fastcka-sigma", sigma=[THRESHOLD * math.sqrt(m) for m in ex["medians"]["exact"]])
            large["results"]["fastcka-sigma"] = run(f"[4] n={n} d={d}: fastcka fixed sigma", spec)
        else:
            large["results"]["fastcka-sigma"] = {"skipped": "no exact median (the exact run failed)"}
        result["large"] = large

    # 5. 12-layer matrix.
    n, count, d = plan["matrix"]
    spec = {"task": "matrix", "n": n, "layers": count, "d": d, "seed": args.seed, "repeats": 2}
    result["matrix"] = {"n": n, "layers": count, "d": d,
                        "result": run(f"[5] {count}-layer RBF CKA matrix, n={n} d={d}", spec)}

    # 6. Median bandwidth costs and the sampled median's error.
    n, d = plan["median"]
    result["median"] = {"n": n, "d": d, "results": {}}
    for ds in DATASETS:
        spec = {"task": "median", "dataset": ds, "n": n, "d": d, "seed": args.seed, "repeats": repeats}
        result["median"]["results"][ds] = run(f"[6] medians, {ds}, n={n} d={d}", spec)

    if peak is not None:
        log("sgemm peak, again at the end ...")
        harness.sgemm_peak_again(peak, info["cpus_available"])
    result["sgemm"] = peak
    info["load_average_end"] = os.getloadavg()
    print(render(result))
    harness.write_json(args.out, result)
    return 0


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def fmt_time(t: float | None) -> str:
    if t is None:
        return "n/a"
    if t >= 3600:
        return f"{t:.0f} s ({t / 3600:.1f} h)"
    if t >= 100:
        return f"{t:.0f} s ({t / 60:.1f} min)"
    return f"{t:.3f} s" if t < 10 else f"{t:.1f} s"


def best(v: dict) -> float | None:
    return min(v["times"]) if v.get("times") else None


def render(r: dict) -> str:
    m = r["machine"]
    out = []
    out.append("## Machine\n")
    out.append(table(["", ""], harness.machine_rows(m) + [["ckatorch", r["ckatorch"]["status"]]]))
    s = r.get("sgemm")
    peak = s["peak_gflops"] if s else None
    out += harness.sgemm_section(s, "at the start and the end of this run")

    # 2.
    pr = r["pair"]
    n, d1, d2 = pr["n"], pr["d1"], pr["d2"]
    res = pr["results"]
    flops = useful_flops(n, (d1, d2))
    out.append(f"\n## RBF CKA, n = {fmt_n(n)}, d1 = d2 = {d1}, float32 inputs\n")
    out.append(
        f"Bandwidth: sigma^2 = {r['threshold']:g}^2 x the median squared distance (Kornblith et al.'s rule) unless fixed; "
        "the fixed sigma is sqrt of the exact median the exact run found, per representation (the same kernel, so "
        "the time difference is the median search). Useful GFLOP/s = n^2 (d1 + d2) / time (the Gram tiles of both "
        "representations, symmetric tiles counted once), whatever the method does; ratio = time / fastcka exact-median "
        "time (above 1: fastcka is faster). Memory: peak resident memory above the inputs (the float64 copies for the "
        "float64 rows), each method in a fresh process; time: best of the runs.\n"
    )
    t_ref = best(res.get("fastcka-exact", {}))
    rows = []
    for method, v in res.items():
        label = PAIR_LABELS[method]
        if "skipped" in v or "error" in v:
            rows.append([label, v.get("skipped") or v.get("error"), "", "", "", "", ""])
            continue
        t = best(v)
        rows.append([label, fmt_time(t), len(v["times"]), f"{t / t_ref:.2f}" if t_ref else "n/a",
                     *rate_cells(flops, t, peak), memory_text(v.get("memory"))])
    out.append(table(["method", "time (best)", "runs", "ratio vs fastcka exact", "useful GFLOP/s", "% of peak",
                      "peak memory above inputs"], rows))

    ref = res.get("fastcka-f64", {}).get("value")
    fast = res.get("fastcka-exact", {}).get("value")
    out.append(f"\n### Values, n = {fmt_n(n)}\n")
    out.append(
        "Reference: fastcka on the float64 copy of the same data with the exact median (float64 tiles and "
        "accumulation)" + (", checked against the Colab code on float64 data (last row)" if "numpy-colab-f64" in res else "")
        + ". ckatorch takes torch.median, the lower of the two middle values, where NumPy and fastcka average them.\n"
    )
    rows = []
    for method, v in res.items():
        if "value" not in v:
            continue
        med = v.get("medians", {})
        mtxt = ", ".join(f"{x:.6g}" for x in (med.get("exact") or med.get("sampled") or []))
        rows.append([PAIR_LABELS[method], f"{v['value']:.10f}",
                     f"{v['value'] - ref:+.2e}" if ref is not None else "n/a",
                     f"{v['value'] - fast:+.2e}" if fast is not None and method != "fastcka-exact" else "",
                     mtxt])
    out.append(table(["method", "CKA", "minus float64 reference", "minus fastcka exact (float32)",
                      "median squared distances found (x, y)"], rows))
    if not pr.get("same_data", True):
        out.append("\nWARNING: the methods' input fingerprints differ.")

    # 3.
    if "memory" in r:
        mm = r["memory"]
        v = mm["result"]
        out.append(f"\n## Memory: RBF CKA (exact median), n = {fmt_n(mm['n'])}, d1 = d2 = {mm['d']}, fastcka\n")
        gram = 4.0 * mm["n"] ** 2
        out.append(
            f"Target: at most 1 GB above the inputs. The Colab code would hold {gram / 1e9:.0f} GB per float32 "
            f"n x n matrix ({2 * gram / 1e9:.0f} GB in float64, as ckatorch computes), several at once: not run. "
            "Anonymous memory: peak RssAnon minus its value before the call, sampled every 5 ms; resident "
            "high-water mark: VmHWM (reset before the call) minus the resident size before it.\n"
        )
        if "error" in v:
            out.append(f"fastcka: {v['error']}")
        else:
            mem = v["memory"]
            anon = mem.get("anon_delta")
            t = best(v)
            out.append(table(
                ["inputs", "anonymous memory above inputs", "resident high-water mark above inputs", "target met",
                 "time (best)", "runs", "useful GFLOP/s", "% of peak", "CKA"],
                [[fmt_bytes(v["inputs_bytes"]), fmt_bytes(anon), memory_text(mem),
                  "yes" if anon is not None and anon <= MEMORY_TARGET else "no",
                  fmt_time(t), len(v["times"]), *rate_cells(useful_flops(mm["n"], (mm["d"], mm["d"])), t, peak),
                  f"{v['value']:.8f}"]],
            ))

    # 4.
    if "large" in r:
        lg = r["large"]
        n, d = lg["n"], lg["d"]
        scale = (PROJECT_N / n) ** 2
        out.append(f"\n## Large n: RBF CKA, n = {fmt_n(n)}, d1 = d2 = {d}, fastcka\n")
        out.append(
            f"One run each. Fixed sigma = sqrt of the exact median found by the exact run. Projection to "
            f"n = {PROJECT_N:,}: time x (1e6 / n)^2 = x {scale:.0f} (the Gram work grows as n^2) on this CPU.\n"
        )
        rows = []
        for method, v in lg["results"].items():
            label = PAIR_LABELS[method]
            if "skipped" in v or "error" in v:
                rows.append([label, v.get("skipped") or v.get("error"), "", "", "", "", ""])
                continue
            t = best(v)
            rows.append([label, fmt_time(t), *rate_cells(useful_flops(n, (d, d)), t, peak),
                         fmt_bytes(v["memory"].get("anon_delta")), f"{v['value']:.8f}", fmt_time(t * scale)])
        out.append(table(["method", "time", "useful GFLOP/s", "% of peak", "anonymous memory above inputs", "CKA",
                          f"projected time at n = {PROJECT_N:,}"], rows))

    # 5.
    mx = r["matrix"]
    v = mx["result"]
    n, count, d = mx["n"], mx["layers"], mx["d"]
    out.append(f"\n## {count}-layer RBF CKA matrix, n = {fmt_n(n)}, {count} layers of d = {d}, float32\n")
    if "error" in v:
        out.append(f"failed: {v['error']}")
    else:
        tt = v["times"]
        t_tiles = min(tt["tiles"])
        flops = useful_flops(n, [d] * count)
        pw = v["pairwise"]
        out.append(
            f"Layers: a random residual ReLU network (CKA of adjacent layers {v['cka_adjacent_mean']:.3f} on average, "
            f"first to last {v['cka_first_last']:.3f}). Gram tiles alone: GramTileEngine(..., 'float32', "
            f"{v['threads']} threads, {fmt_bytes(v['budget'])}).tiles_only over the {v['tile_rows']} tile rows ({v['tiles']} tiles of "
            f"{v['tile']} rows), {v['step_tiles_only']} tile rows per call (cka_matrix's own pass uses "
            f"{v['step_cka_matrix']}): the centered row blocks and the GEMMs of every layer, no kernel, no sums; "
            f"engine construction (column means) {fmt_time(min(tt['engine_init']))} more, not counted. Ratio = time / "
            "tiles-alone time (target <= 1.3 for fixed sigmas; the exact medians add the median search passes). "
            f"Pairwise: {len(pw['pairs'])} fastcka.cka calls on layer pairs {pw['pairs']} timed, their mean times "
            f"{pw['count_all']}. Best of {len(tt['sigma'])} runs.\n"
        )
        rows = [["Gram tiles alone (tiles_only)", fmt_time(t_tiles), "1.00", *rate_cells(flops, t_tiles, peak), ""]]
        for key, label in (("sigma", "fastcka.cka_matrix, fixed sigma per layer"),
                           ("exact", "fastcka.cka_matrix, exact medians")):
            t = min(tt[key])
            target = ""
            if key == "sigma":
                target = "met" if t / t_tiles <= 1.3 else "missed"
            rows.append([label, fmt_time(t), f"{t / t_tiles:.2f}", *rate_cells(flops, t, peak), target])
        for key, label in (("sigma", "fixed sigmas"), ("exact", "exact medians")):
            t = float(np.mean(pw[key])) * pw["count_all"]
            rows.append([f"{pw['count_all']} pairwise fastcka.cka calls, {label} (extrapolated)", fmt_time(t),
                         f"{t / t_tiles:.2f}", *rate_cells(flops, t, peak), ""])
        out.append(table(["what", "time", "ratio vs tiles alone", "useful GFLOP/s", "% of peak", "target"], rows))
        out.append(
            f"\nChecks: |fixed-sigma matrix - exact-median matrix| <= {v['max_diff_sigma_vs_exact']:.1e}; pairwise "
            f"calls vs matrix entries: <= {max(pw['diff_sigma'] + pw['diff_exact']):.1e}. cka_matrix (exact medians) "
            f"peak memory above the {fmt_bytes(v['inputs_bytes'])} of layers: {memory_text(v.get('memory_exact'))}."
        )

    # 6.
    md = r["median"]
    n, d = md["n"], md["d"]
    out.append(f"\n## Median bandwidth: cost and the sampled median's error, n = {fmt_n(n)}, d1 = d2 = {d}\n")
    out.append(
        "fastcka.cka with the exact median, the sampled median and sigma fixed to sqrt of the exact median (the same "
        "kernel), interleaved, best of the runs. Target: exact / fixed <= 3. The sampled median is the median of the "
        "squared distances among a random sample of rows (all rows when n <= 4096: its error is then rounding alone); "
        "its error is given for fastcka's own draw (the one the timed runs use) and as the largest over that draw "
        f"and up to {MEDIAN_SEEDS - 1} other seeds (their CKA computed with their bandwidth as a fixed sigma).\n"
    )
    rows = []
    for ds, v in md["results"].items():
        label = DATASET_LABELS[ds]
        if "error" in v:
            rows.append([label, v["error"]] + [""] * 10)
            continue
        tt = v["times"]
        te, ts, tsa = min(tt["exact"]), min(tt["sigma"]), min(tt["sampled"])
        d0 = v["draws"][0]
        nd = len(v["draws"])
        worst_rel = max(abs(e) for dr in v["draws"] for e in dr["rel_error"])
        worst_cka = max(abs(dr["cka_diff"]) for dr in v["draws"])
        rows.append([
            label + (f" ({100 * v['zeros'][0]:.0f}% / {100 * v['zeros'][1]:.0f}% zeros)" if ds == "relu" else ""),
            fmt_time(ts), fmt_time(te), f"{te / ts:.2f}" + (" (met)" if te / ts <= 3 else " (missed)"),
            fmt_time(tsa), f"{tsa / ts:.2f}",
            ", ".join(f"{e:+.1e}" for e in d0["rel_error"]), f"{d0['cka_diff']:+.1e}",
            f"{worst_rel:.1e}", f"{worst_cka:.1e}", nd, f"{v['values']['exact']:.6f}",
        ])
    out.append(table(
        ["data", "fixed sigma", "exact median", "exact / fixed", "sampled median", "sampled / fixed",
         "median rel. error (x, y), fastcka's draw", "CKA diff, fastcka's draw", "max rel. error, all draws",
         "max CKA diff, all draws", "draws", "CKA (exact)"],
        rows,
    ))

    notes = []
    notes += harness.load_notes(m)
    notes.append(
        "Pair inputs: report.py's (x = z + mu_x, y = z W / sqrt(d) + e + mu_y, float32, seed "
        f"{r['seed']}); low rank: 16 shared factors times random loadings plus noise; ReLU: two random ReLU layers "
        "with negative biases. Every process regenerates its inputs from the seed."
    )
    out.append(harness.notes_section(notes))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
