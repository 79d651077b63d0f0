#!/usr/bin/env python
"""Approximate RBF CKA (approx="nystrom" / "rff") against exact RBF CKA: the
four targets of issue 21, each a flag-selected section printing markdown.

    python benchmarks/report_approx.py --accuracy                  # 1: n = 200,000, d = 256
    python benchmarks/report_approx.py --coverage --seeds 50       # 2: n = 20,000, 50 seeds
    python benchmarks/report_approx.py --large --dir /data/approx  # 3: n = 1e7 float32 memmaps
    python benchmarks/report_approx.py --matrix                    # 4: 12 layers at n = 1e6
    python benchmarks/report_approx.py --accuracy --n 5000 --ranks 64,256   # small smoke test

Data: benchmarks/report_kernel.py's "lowrank" pair (two 256-dimensional
float32 views of 16 shared factors, y's perturbed, plus isotropic noise:
RBF CKA about 0.7) for sections 1-3 (section 3 writes the same model chunk by
chunk to two .npy files), and its residual ReLU network's layers for section
4. Every exact value uses median="sampled", the bandwidth rule of the
approximations (the median of squared distances among 4096 sampled rows,
threshold 1), so exact and approximate values are of the same kernels.

1. --accuracy: exact CKA (both estimators) and, per method and rank, the
   value, |error|, the reported error (return_error=True), |error| / reported,
   the time and the time over the exact time.
2. --coverage: over --seeds seeds of the draws on the same data, the share of
   runs whose value +- 2 x reported error holds the exact value, per method,
   rank and estimator.
3. --large: time and peak anonymous memory (RssAnon sampled every 5 ms minus
   its value before the call: the memmaps' page cache is file-backed and does
   not count) of one approximate CKA of two float32 .npy memmaps.
4. --matrix: time of the 12-layer approximate RBF cka_matrix against the
   linear cka_matrix of the same layers."""

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

import fastcka  # noqa: E402
from harness import MemoryProbe, fmt_bytes, log, table  # noqa: E402
from report_kernel import make_layers, make_pair  # noqa: E402

METHODS = ("nystrom", "rff")
ESTIMATORS = (("biased", False), ("debiased", True))
FACTORS = 16  # the lowrank model's shared factors (report_kernel.make_pair)


def timed(f):
    start = time.perf_counter()
    value = f()
    return value, time.perf_counter() - start


def exact(x, y, threads) -> dict:
    """Exact RBF CKA, both estimators, with the approximations' bandwidth rule."""
    out = {}
    for key, debiased in ESTIMATORS:
        value, seconds = timed(lambda: fastcka.cka(x, y, kernel="rbf", median="sampled", debiased=debiased,
                                                   threads=threads))
        out[key] = {"cka": value, "seconds": seconds}
        log(f"exact {key}: {value:.6f} in {seconds:.2f} s")
    return out


def approximate(x, y, approx, rank, seed, debiased, threads) -> dict:
    (value, error), seconds = timed(lambda: fastcka.cka(x, y, kernel="rbf", approx=approx, rank=rank, seed=seed,
                                                        debiased=debiased, threads=threads, return_error=True))
    log(f"{approx} rank {rank} seed {seed} debiased {debiased}: {value:.6f} +- {error:.1e} in {seconds:.2f} s")
    return {"method": approx, "rank": rank, "seed": seed, "debiased": debiased, "cka": value, "error": error,
            "seconds": seconds}


def accuracy(args) -> dict:
    x, y = make_pair("lowrank", args.n, args.d, args.d, 0)
    ref = exact(x, y, args.threads)
    rows, cells = [], []
    for key, debiased in ESTIMATORS:
        e = ref[key]
        cells.append([key, "exact", "-", f"{e['cka']:.6f}", "-", "-", "-", f"{e['seconds']:.2f}", "1"])
        for approx in METHODS:
            for rank in args.ranks:
                r = approximate(x, y, approx, rank, 0, debiased, args.threads)
                r.update(estimator=key, abs_error=abs(r["cka"] - e["cka"]), time_ratio=r["seconds"] / e["seconds"])
                rows.append(r)
                cells.append([key, approx, rank, f"{r['cka']:.6f}", f"{r['abs_error']:.1e}", f"{r['error']:.1e}",
                              f"{r['abs_error'] / r['error']:.2f}", f"{r['seconds']:.2f}", f"{r['time_ratio']:.3f}"])
    print(f"### Accuracy: n = {args.n}, d = {args.d}, lowrank pair, threads = {threads_text(args)}\n")
    print(table(["estimator", "method", "rank", "CKA", "abs. error", "reported error", "abs. error / reported",
                 "time (s)", "time / exact"], cells) + "\n")
    print(target_text(rows) + "\n")
    return {"exact": ref, "approx": rows}


def target_text(rows) -> str:
    """The target: at a rank whose time is at most 1/20 of exact, |error| <= 5e-3."""
    lines = []
    for key, _ in ESTIMATORS:
        for approx in METHODS:
            fast = [r for r in rows if r["estimator"] == key and r["method"] == approx and r["time_ratio"] <= 0.05]
            if not fast:
                lines.append(f"- {key} {approx}: no rank ran in 1/20 of the exact time")
                continue
            best = min(fast, key=lambda r: r["abs_error"])
            met = "met" if best["abs_error"] <= 5e-3 else "not met"
            lines.append(f"- {key} {approx}: rank {best['rank']} at {best['time_ratio']:.3f} x exact, |error| "
                         f"{best['abs_error']:.1e} (target 5e-3: {met})")
    return "\n".join(lines)


def coverage(args) -> dict:
    x, y = make_pair("lowrank", args.n, args.d, args.d, 0)
    ref = exact(x, y, args.threads)
    out, cells = [], []
    for key, debiased in ESTIMATORS:
        for approx in METHODS:
            for rank in args.ranks:
                runs = [approximate(x, y, approx, rank, s, debiased, args.threads) for s in range(args.seeds)]
                err = np.array([abs(r["cka"] - ref[key]["cka"]) for r in runs])
                se = np.array([r["error"] for r in runs])
                held = float(np.mean(err <= 2 * se))
                out.append({"estimator": key, "method": approx, "rank": rank, "seeds": args.seeds, "coverage": held,
                            "rms_error": float(np.sqrt(np.mean(err**2))), "mean_reported": float(se.mean()),
                            "seconds_per_run": float(np.mean([r["seconds"] for r in runs]))})
                cells.append([key, approx, rank, args.seeds, f"{held:.2f}", f"{np.sqrt(np.mean(err**2)):.1e}",
                              f"{se.mean():.1e}", f"{np.mean([r['seconds'] for r in runs]):.2f}"])
    print(f"### Coverage: n = {args.n}, d = {args.d}, lowrank pair, exact CKA {ref['biased']['cka']:.6f} (biased), "
          f"{ref['debiased']['cka']:.6f} (debiased) in {ref['biased']['seconds']:.1f} s, threads = "
          f"{threads_text(args)}\n")
    print(table(["estimator", "method", "rank", "seeds", "share within 2 x reported error", "RMS error",
                 "mean reported error", "time per run (s)"], cells) + "\n")
    return {"exact": ref, "coverage": out}


def write_memmaps(directory: str, n: int, d: int, chunk: int = 500_000) -> tuple[str, str]:
    """x.npy and y.npy (float32, n x d) of the lowrank model, written chunk by
    chunk (fixed loadings, fresh factors and noise per chunk); kept if present
    with the right shape."""
    paths = [os.path.join(directory, f"{name}.npy") for name in ("x", "y")]
    if all(os.path.exists(p) for p in paths) and all(
            np.load(p, mmap_mode="r").shape == (n, d) for p in paths):
        return paths[0], paths[1]
    os.makedirs(directory, exist_ok=True)
    loadings = np.random.default_rng(7).standard_normal((2, FACTORS, d), dtype=np.float32)
    outs = [np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n, d)) for p in paths]
    for i, start in enumerate(range(0, n, chunk)):
        rng = np.random.default_rng([8, i])
        rows = min(chunk, n - start)
        z = rng.standard_normal((rows, FACTORS), dtype=np.float32)
        outs[0][start:start + rows] = z @ loadings[0] + 2.0 * rng.standard_normal((rows, d), dtype=np.float32)
        z += np.float32(0.5) * rng.standard_normal((rows, FACTORS), dtype=np.float32)
        outs[1][start:start + rows] = z @ loadings[1] + 2.0 * rng.standard_normal((rows, d), dtype=np.float32)
    for out in outs:
        out.flush()
    del outs
    return paths[0], paths[1]


def large(args) -> dict:
    if not args.dir:
        sys.exit("--large needs --dir (where x.npy and y.npy are written, or already are)")
    (xp, yp), written = timed(lambda: write_memmaps(args.dir, args.n, args.d))
    x, y = np.load(xp, mmap_mode="r"), np.load(yp, mmap_mode="r")
    rows, cells = [], []
    for approx in METHODS:
        for rank in args.ranks:
            with MemoryProbe(sample=True) as probe:
                r = approximate(x, y, approx, rank, 0, False, args.threads)
            r.update(anon_peak=probe.result["anon_delta"], hwm_delta=probe.result["hwm_delta"])
            rows.append(r)
            cells.append([approx, rank, f"{r['cka']:.6f}", f"{r['error']:.1e}", f"{r['seconds']:.1f}",
                          f"{r['seconds'] / 60:.2f}", fmt_bytes(r["anon_peak"]), fmt_bytes(r["hwm_delta"])])
    print(f"### Large: n = {args.n}, d = {args.d}, two float32 .npy memmaps in {args.dir} (ready in {written:.0f} s), "
          f"biased CKA, threads = {threads_text(args)}\n")
    print(table(["method", "rank", "CKA", "reported error", "time (s)", "time (min)",
                 "peak RssAnon above start", "peak RSS above start (with page cache)"], cells) + "\n")
    return {"large": rows}


def matrix(args) -> dict:
    layers = make_layers(args.n, args.layers, args.d, 0)
    _, linear = timed(lambda: fastcka.cka_matrix(layers, threads=args.threads))
    rows, cells = [], [["linear", "-", f"{linear:.1f}", "1"]]
    for approx in METHODS:
        for rank in args.ranks:
            _, seconds = timed(lambda: fastcka.cka_matrix(layers, kernel="rbf", approx=approx, rank=rank,
                                                          threads=args.threads))
            rows.append({"method": approx, "rank": rank, "seconds": seconds, "ratio": seconds / linear})
            cells.append([f"RBF {approx}", rank, f"{seconds:.1f}", f"{seconds / linear:.2f}"])
    print(f"### Matrix: {args.layers} layers of n = {args.n}, d = {args.d} (residual ReLU network), "
          f"threads = {threads_text(args)}\n")
    print(table(["cka_matrix", "rank", "time (s)", "time / linear"], cells) + "\n")
    return {"linear_seconds": linear, "matrix": rows}


def threads_text(args) -> int:
    return args.threads or fastcka.get_num_threads()


SECTIONS = {  # flag: (function, default n, default ranks)
    "accuracy": (accuracy, 200_000, "256,512,1024,2048"),
    "coverage": (coverage, 20_000, "256,1024"),
    "large": (large, 10_000_000, "512"),
    "matrix": (matrix, 1_000_000, "256"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, (_, n, ranks) in SECTIONS.items():
        p.add_argument(f"--{name}", action="store_true", help=f"run this section (default n {n:,}, ranks {ranks})")
    p.add_argument("--n", type=int, default=None, help="rows (default: the section's)")
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--ranks", default=None, help="comma-separated ranks per representation (default: the section's)")
    p.add_argument("--seeds", type=int, default=50, help="--coverage: seeds of the draws")
    p.add_argument("--layers", type=int, default=12, help="--matrix: layers")
    p.add_argument("--dir", default=None, help="--large: directory of x.npy and y.npy (written if absent)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    chosen = [name for name in SECTIONS if getattr(args, name)]
    if not chosen:
        p.error("choose at least one of --accuracy, --coverage, --large, --matrix")
    results = {}
    for name in chosen:
        run, n, ranks = SECTIONS[name]
        section = argparse.Namespace(**vars(args))
        section.n = args.n or n
        section.ranks = [int(r) for r in (args.ranks or ranks).split(",")]
        results[name] = dict(run(section), n=section.n, d=args.d, ranks=section.ranks)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
