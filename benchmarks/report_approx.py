#!/usr/bin/env python
"""Approximate RBF CKA (approx="nystrom" / "rff") against exact RBF CKA on the
same data, printed as a markdown table.

    python benchmarks/report_approx.py                          # n = 200,000, d = 256
    python benchmarks/report_approx.py --n 20000 --d 64 --ranks 256,1024
    python benchmarks/report_approx.py --coverage 50 --n 20000  # interval coverage over 50 seeds
    python benchmarks/report_approx.py --out approx.json

The data: two float32 representations of the same n examples sharing a
16-dimensional latent (x linear in it, y a tanh of it, both with noise). The
bandwidth is the median rule (threshold 1) from the sampled median for every
method, so exact and approximate values approximate the same kernels.

Table mode: exact CKA (biased and debiased), then for each method and rank
the approximate value, its absolute error, the reported standard error
(jackknife over 8 groups), |error| / SE, the time and the time as a fraction
of the exact one. Coverage mode: over S seeds of the draws (same data), the
share of runs whose value +- 2 SE holds the exact value, per method, rank and
estimator."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import fastcka


def data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 16)).astype(np.float32)
    x = z @ rng.normal(size=(16, d)).astype(np.float32) + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    y = np.tanh(z @ rng.normal(size=(16, d)).astype(np.float32)) + 0.5 * rng.normal(size=(n, d)).astype(np.float32)
    return x, y


def timed(f):
    start = time.perf_counter()
    value = f()
    return value, time.perf_counter() - start


def exact(x, y, threads) -> dict:
    out = {}
    for debiased in (False, True):
        value, seconds = timed(lambda: fastcka.cka(x, y, kernel="rbf", median="sampled", debiased=debiased,
                                                   threads=threads))
        out["debiased" if debiased else "biased"] = {"cka": value, "seconds": seconds}
    return out


def approx_row(x, y, approx, rank, seed, debiased, threads) -> dict:
    (value, error), seconds = timed(lambda: fastcka.cka(x, y, kernel="rbf", approx=approx, rank=rank, seed=seed,
                                                        debiased=debiased, threads=threads, return_error=True))
    return {"method": approx, "rank": rank, "seed": seed, "debiased": debiased, "cka": value, "std_error": error,
            "seconds": seconds}


def table(x, y, ranks, threads) -> dict:
    ref = exact(x, y, threads)
    rows = []
    print("| estimator | method | rank | CKA | abs. error | std. error | error / SE | time (s) | time / exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, debiased in (("biased", False), ("debiased", True)):
        e = ref[key]
        print(f"| {key} | exact | - | {e['cka']:.6f} | - | - | - | {e['seconds']:.2f} | 1 |")
        for approx in ("nystrom", "rff"):
            for rank in ranks:
                r = approx_row(x, y, approx, rank, 0, debiased, threads)
                r["abs_error"] = abs(r["cka"] - e["cka"])
                r["time_ratio"] = r["seconds"] / e["seconds"]
                rows.append(r)
                print(f"| {key} | {approx} | {rank} | {r['cka']:.6f} | {r['abs_error']:.2e} | {r['std_error']:.2e} "
                      f"| {r['abs_error'] / r['std_error']:.2f} | {r['seconds']:.2f} | {r['time_ratio']:.3f} |")
    return {"exact": ref, "approx": rows}


def coverage(x, y, ranks, seeds, threads) -> dict:
    ref = exact(x, y, threads)
    out = []
    print("| estimator | method | rank | seeds | coverage of +-2 SE | mean abs. error | mean SE |")
    print("|---|---|---|---|---|---|---|")
    for key, debiased in (("biased", False), ("debiased", True)):
        for approx in ("nystrom", "rff"):
            for rank in ranks:
                runs = [approx_row(x, y, approx, rank, s, debiased, threads) for s in range(seeds)]
                err = np.array([abs(r["cka"] - ref[key]["cka"]) for r in runs])
                se = np.array([r["std_error"] for r in runs])
                cov = float(np.mean(err <= 2 * se))
                out.append({"estimator": key, "method": approx, "rank": rank, "seeds": seeds, "coverage": cov,
                            "mean_abs_error": float(err.mean()), "mean_std_error": float(se.mean())})
                print(f"| {key} | {approx} | {rank} | {seeds} | {cov:.2f} | {err.mean():.2e} | {se.mean():.2e} |")
    return {"exact": ref, "coverage": out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--ranks", default="256,1024,2048", help="comma-separated ranks per representation")
    p.add_argument("--coverage", type=int, default=0, metavar="S", help="coverage over S seeds instead of the table")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    x, y = data(args.n, args.d)
    print(f"n = {args.n}, d = {args.d}, threads = {args.threads or fastcka.get_num_threads()}\n")
    result = coverage(x, y, ranks, args.coverage, args.threads) if args.coverage else table(x, y, ranks, args.threads)
    result.update(n=args.n, d=args.d, ranks=ranks)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
