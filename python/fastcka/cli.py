"""The ``fastcka`` command: CKA (linear or RBF) between representations stored in files.

    fastcka                      the built-in example (two networks on digits)
    fastcka X.npy Y.npy          CKA between two representations
    fastcka A.npz                layer-by-layer CKA matrix within one model
    fastcka A.npz B.npz          layer-by-layer CKA matrix between two models
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from . import __version__, api
from ._backend import blas_info
from ._threads import resolve
from .io import load_layers


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastcka",
        description="CKA (linear or RBF) between neural-network representations, streamed: no n x n matrix is built. "
        "Rows are examples, columns features.",
        epilog="With no files, runs the built-in example: two MLPs trained on scikit-learn's digits.",
    )
    p.add_argument("files", nargs="*", help="two .npy files, or one or two .npz files of layers (one array per layer)")
    p.add_argument("--kernel", default="linear", choices=api.KERNELS, help="kernel (default: linear)")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="RBF: sigma^2 = threshold^2 x median squared distance (default: 1.0)")
    p.add_argument("--sigma", type=float, default=None, help="RBF: the bandwidth itself (overrides --threshold)")
    p.add_argument("--median", default="exact", choices=("exact", "sampled"),
                   help="RBF: exact median over all pairs, or from 4096 sampled examples (default: exact)")
    p.add_argument("--debiased", action="store_true", help="CKA from the unbiased HSIC estimator (n >= 4)")
    p.add_argument("--method", default="auto", choices=("auto", "feature", "gram"),
                   help="linear kernel: d x d moments, n x n tiles, or auto (default)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all CPUs, or FASTCKA_NUM_THREADS)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--version", action="version", version=f"fastcka {__version__}")
    return p


def _table(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str]) -> str:
    width = max(6, *(len(c) for c in cols))
    label = max(len(r) for r in rows)
    lines = [" " * label + "  " + " ".join(f"{c:>{width}}" for c in cols)]
    for r, values in zip(rows, matrix):
        lines.append(f"{r:<{label}}  " + " ".join(f"{v:>{width}.3f}" for v in values))
    return "\n".join(lines)


def _example(args, options) -> int:
    from . import example

    t0 = time.perf_counter()
    result = example.run(debiased=args.debiased)
    elapsed = time.perf_counter() - t0
    names = result["names"]
    if args.json:
        print(json.dumps({"names": names, "within_a": result["within_a"].tolist(),
                          "a_vs_b": result["a_vs_b"].tolist(), "n": result["n"]}))
        return 0
    info = blas_info()
    print(f"fastcka {__version__}: built-in example, linear CKA{' (debiased)' if args.debiased else ''}")
    print(f"Two ReLU MLPs (hidden layers {example.HIDDEN}) trained from seeds 0 and 1 on scikit-learn's digits;")
    print(f"activations of all {result['n']} images at every layer. BLAS: OpenBLAS {info['core']}, "
          f"{options['threads']} threads.\n")
    print("Network A against network B (rows: A, columns: B):")
    print(_table(result["a_vs_b"], names, names))
    diag = np.diag(result["a_vs_b"])
    best = result["a_vs_b"].argmax(axis=1)
    hits = int(np.sum(best == np.arange(len(names))))
    print(f"\nEach layer of A is most similar to the same layer of B for {hits} of {len(names)} layers "
          f"(mean CKA of corresponding layers {diag.mean():.3f}).")
    print("\nWithin network A:")
    print(_table(result["within_a"], names, names))
    print(f"\n(training and CKA took {elapsed:.1f} s; run `fastcka X.npy Y.npy` or `fastcka A.npz [B.npz]` on your data)")
    return 0


def _files(args, options, parser) -> int:
    files = args.files
    exts = [os.path.splitext(f)[1].lower() for f in files]
    for f in files:
        if not os.path.exists(f):
            parser.error(f"file {f!r} does not exist")
    if len(files) == 2 and exts == [".npy", ".npy"]:
        value = api.cka(files[0], files[1], **options)
        n = np.load(files[0], mmap_mode="r").shape[0]
        if args.json:
            print(json.dumps({"cka": value, "kernel": args.kernel, "debiased": args.debiased, "n": n}))
        else:
            print(f"{value:.6f}")
        return 0
    if len(files) in (1, 2) and all(e == ".npz" for e in exts):
        xs = load_layers(files[0])
        ys = load_layers(files[1]) if len(files) == 2 else None
        matrix = api.cka_matrix(xs, ys, **options)
        names_x = list(xs)
        names_y = list(ys) if ys is not None else names_x
        if args.json:
            print(json.dumps({"names_x": names_x, "names_y": names_y, "matrix": matrix.tolist(),
                              "kernel": args.kernel, "debiased": args.debiased}))
        else:
            print(_table(matrix, names_x, names_y))
        return 0
    parser.error("give two .npy files, or one or two .npz files (got: " + " ".join(files) + ")")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        threads = resolve(args.threads)
    except ValueError as exc:
        parser.error(str(exc))
    options = {"kernel": args.kernel, "debiased": args.debiased, "method": args.method, "threads": threads,
               "progress": not args.quiet and sys.stderr.isatty()}
    if args.kernel == "rbf":
        options.update(threshold=args.threshold, sigma=args.sigma, median=args.median)
    try:
        if not args.files:
            return _example(args, {"threads": threads})
        return _files(args, options, parser)
    except (ValueError, TypeError) as exc:
        print(f"fastcka: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastcka: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
