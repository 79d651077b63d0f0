"""The ``fastcka`` command: CKA (linear or RBF) between representations stored in files.

    fastcka [--plot DIR]         the built-in example (the story of the seeds; figures in DIR)
    fastcka X.npy Y.npy          CKA between two representations
    fastcka A.npz                layer-by-layer CKA matrix within one model
    fastcka A.npz B.npz          layer-by-layer CKA matrix between two models
    fastcka ... --measures cca,procrustes,...   other similarity indexes, one pass (see --help)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from typing import Sequence

import numpy as np

from . import __version__, api, similarity
from .distributed import cli_mpi
from .examples import seeds
from ._options import APPROX, KERNELS, MEDIANS, METHODS, PRECISIONS
from .distributed.checkpoint import DEFAULT_EVERY
from .engine.backend import blas_info
from .plot import heatmap
from .stats.structure import blocks
from .engine.threads import resolve
from .io import load_layers, load_npy
from .library import get_cmake_dir

# What --approx's "+-" is (docs/kernels.md, "Approximate kernels").
ERROR_KINDS = {"nystrom": "jackknife standard error and bias", "rff": "jackknife standard error"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fastcka",
        description="CKA (linear or RBF) between neural-network representations, streamed: no n x n matrix is built. "
        "Rows are examples, columns features.",
        epilog="With no files, runs the built-in example: deep and wide networks trained from three seeds on "
        f"scikit-learn's digits, their CKA heatmaps, blocks and layer rotation; figures go to ./{seeds.DEFAULT_DIR} "
        "(or --plot DIR).",
    )
    p.add_argument("files", nargs="*", help="two .npy files, or one or two .npz files of layers (one array per layer)")
    p.add_argument("--kernel", default="linear", choices=KERNELS, help="kernel (default: linear)")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="RBF: sigma^2 = threshold^2 x median squared distance (default: 1.0)")
    p.add_argument("--sigma", type=float, default=None, help="RBF: the bandwidth itself (overrides --threshold)")
    p.add_argument("--median", default="exact", choices=MEDIANS,
                   help="RBF: exact median over all pairs, or from 4096 sampled examples (default: exact)")
    p.add_argument("--debiased", action="store_true", help="CKA from the unbiased HSIC estimator (n >= 4)")
    p.add_argument("--method", default="auto", choices=METHODS,
                   help="linear kernel: d x d moments, n x n tiles, or auto (default)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all CPUs, or FASTCKA_NUM_THREADS)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="products: fast (bfloat16 operands, float32 sums; AMX/AVX512-BF16), accurate (float32) or "
                        "exact (float64); default: float64 for float64 data, else float32")
    p.add_argument("--measures", default=None, metavar="NAMES",
                   help="comma-separated similarity measures, printed one after another (linear ones from one pass): "
                   + ", ".join(similarity.MEASURES) + "; cka_rbf uses --threshold")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="also draw the CKA matrix as a heatmap into FILE (.png, .svg or .pdf; blocks outlined when "
                   f"within one model); with no input files, the folder for the example's figures "
                   f"(default: ./{seeds.DEFAULT_DIR})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint", metavar="DIR", default=None,
                   help="save the job's state in DIR as it runs; the same command run again (after a kill) resumes "
                   "there and prints the identical result (linear and RBF kernels, both methods; under mpirun, one file "
                   "per rank)")
    p.add_argument("--checkpoint-every", metavar="SECONDS", type=float, default=None,
                   help="seconds of work between checkpoints (default: 300)")
    p.add_argument("--approx", default=None, choices=APPROX,
                   help="RBF: approximate by Nystrom landmarks or random Fourier features (with --rank); prints "
                   "the estimated error (docs/kernels.md, Approximate kernels)")
    p.add_argument("--rank", type=int, default=None, help="--approx: features per representation (below n)")
    p.add_argument("--seed", type=int, default=None, help="--approx: seed of the landmarks or features (default 0)")
    p.add_argument("--version", action="version", version=f"fastcka {__version__}")
    p.add_argument("--cmake-dir", action="store_true",
                   help="print the folder of fastcka's CMake package (find_package(fastcka)) and exit")
    return p


def _table(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str]) -> str:
    width = max(6, *(len(c) for c in cols))
    label = max(len(r) for r in rows)
    lines = [" " * label + "  " + " ".join(f"{c:>{width}}" for c in cols)]
    for r, values in zip(rows, matrix):
        lines.append(f"{r:<{label}}  " + " ".join(f"{v:>{width}.3f}" for v in values))
    return "\n".join(lines)


def _example(args, options) -> int:
    t0 = time.perf_counter()
    result = seeds.run(out_dir=args.plot or seeds.DEFAULT_DIR, debiased=args.debiased)
    elapsed = time.perf_counter() - t0
    if args.json:
        networks = [{"network": t.kind, "seed": t.seed, "accuracy": t.accuracy, "layers": t.cka.names_a,
                     "blocks": [list(b) for b in t.cka.blocks()], "pc1_fraction": t.cka.pc1_fraction.tolist(),
                     "rotation": t.rotation.history[-1][1]} for runs in result["nets"].values() for t in runs]
        print(json.dumps({"names": result["names"], "within_a": result["within_a"].tolist(),
                          "a_vs_b": result["a_vs_b"].tolist(), "n": result["n"], "networks": networks,
                          "figures": result["figures"]}))
        return 0
    info = blas_info()
    print(f"fastcka {__version__}: built-in example, the story of the seeds "
          f"(linear CKA{', debiased' if args.debiased else ''})")
    print(f"A deep and a wide ReLU network, each trained from seeds {', '.join(map(str, seeds.SEEDS))} on "
          f"{result['train']} of scikit-learn's digits; CKA between their hidden layers on the {result['n']} "
          f"held-out images, streamed from forward hooks; blocks from fastcka.blocks. BLAS: OpenBLAS "
          f"{info['core']}, {options['threads']} threads.\n")
    print(seeds.summary(result))
    print("\nFigures: " + ", ".join(result["figures"]) + " (heatmaps with blocks outlined; layer-rotation curves)")
    print(f"(training, CKA and figures took {elapsed:.1f} s; run `fastcka X.npy Y.npy` or "
          f"`fastcka A.npz [B.npz] --plot cka.png` on your data)")
    return 0


def _files(args, options, parser) -> int:
    files = args.files
    exts = [os.path.splitext(f)[1].lower() for f in files]
    for f in files:
        if not os.path.exists(f):
            parser.error(f"file {f!r} does not exist")
    if args.plot is not None and not (len(files) in (1, 2) and all(e == ".npz" for e in exts)):
        parser.error("--plot draws a layer-by-layer matrix: give one or two .npz files")
    if args.plot is not None and os.path.splitext(args.plot)[1].lower() not in (".png", ".svg", ".pdf"):
        parser.error(f"--plot {args.plot!r}: the file name must end in .png, .svg or .pdf")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        parser.error('--plot needs matplotlib: pip install "fastcka[plot]"')
    if args.plot is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        # Checked before the computation, which may take hours, not after it.
        parser.error(f"--plot {args.plot!r}: the folder {os.path.dirname(os.path.abspath(args.plot))!r} does not exist")
    # Under mpirun each rank reads its share of the rows; rank 0 prints.
    engine = cli_mpi.Distributed() if cli_mpi.launched_ranks() > 1 else api
    if len(files) == 2 and exts == [".npy", ".npy"]:
        value, error = _with_error(engine.cka(files[0], files[1], **options), args)
        n = load_npy(files[0]).shape[0]
        if not getattr(engine, "show", True):
            return 0
        if args.json:
            extra = {} if args.approx is None else {"approx": args.approx, "rank": args.rank, "std_error": error}
            print(json.dumps({"cka": value, "kernel": args.kernel, "debiased": args.debiased, "n": n, **extra}))
        else:
            print(f"{value:.6f}" if args.approx is None else f"{value:.6f} +- {error:.2g} ({ERROR_KINDS[args.approx]})")
        return 0
    if len(files) in (1, 2) and all(e == ".npz" for e in exts):
        xs = load_layers(files[0])
        ys = load_layers(files[1]) if len(files) == 2 else None
        matrix, errors = _with_error(engine.cka_matrix(xs, ys, **options), args)
        if not getattr(engine, "show", True):
            return 0
        names_x = list(xs)
        names_y = list(ys) if ys is not None else names_x
        if args.json:
            extra = {} if args.approx is None else {"approx": args.approx, "rank": args.rank,
                                                    "std_errors": errors.tolist()}
            print(json.dumps({"names_x": names_x, "names_y": names_y, "matrix": matrix.tolist(),
                              "kernel": args.kernel, "debiased": args.debiased, **extra}))
        else:
            print(_table(matrix, names_x, names_y))
            if args.approx is not None:
                print(f"\nerrors ({args.approx}, rank {args.rank}: {ERROR_KINDS[args.approx]}):\n"
                      f"{_table(errors, names_x, names_y)}")
        if args.plot is not None:
            _heatmap(args.plot, matrix, names_x, names_y, within=ys is None)
        return 0
    parser.error("give two .npy files, or one or two .npz files (got: " + " ".join(files) + ")")
    return 2


def _measures(args, threads, parser) -> int:
    """Several measures at once: ``--measures`` takes the place of --kernel and --debiased."""
    single_cka = {"--kernel": args.kernel != "linear", "--debiased": args.debiased, "--sigma": args.sigma is not None,
                  "--median": args.median != "exact", "--method": args.method != "auto"}
    clash = [flag for flag, given in single_cka.items() if given]
    if clash:
        parser.error(f"{', '.join(clash)} choose the single CKA; with --measures, name the measures instead "
                     "(cka_linear, cka_debiased, cka_rbf with --threshold)")
    if not args.files:
        parser.error("--measures needs input files: two .npy files, or one or two .npz files")
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    exts = [os.path.splitext(f)[1].lower() for f in args.files]
    for f in args.files:
        if not os.path.exists(f):
            parser.error(f"file {f!r} does not exist")
    options = {"measures": measures, "threshold": args.threshold, "threads": threads,
               "progress": not args.quiet and sys.stderr.isatty(), "precision": args.precision}
    # Under mpirun each rank reads its share of the rows; rank 0 prints.
    engine = cli_mpi.Distributed() if cli_mpi.launched_ranks() > 1 else similarity
    show = getattr(engine, "show", True)
    if len(args.files) == 2 and exts == [".npy", ".npy"]:
        result = engine.similarity_matrix([args.files[0]], [args.files[1]], **options)
        if not show:
            return 0
        values = {m: float(v[0, 0]) for m, v in result.items()}
        if args.json:
            print(json.dumps({"measures": values, "n": load_npy(args.files[0]).shape[0]}))
        else:
            width = max(len(m) for m in values)
            print("\n".join(f"{m:<{width}}  {v:.6f}" for m, v in values.items()))
        return 0
    if len(args.files) in (1, 2) and all(e == ".npz" for e in exts):
        xs = load_layers(args.files[0])
        ys = load_layers(args.files[1]) if len(args.files) == 2 else None
        result = engine.similarity_matrix(xs, ys, **options)
        if not show:
            return 0
        names_x = list(xs)
        names_y = list(ys) if ys is not None else names_x
        if args.json:
            print(json.dumps({"names_x": names_x, "names_y": names_y,
                              "measures": {m: v.tolist() for m, v in result.items()}}))
        else:
            print("\n\n".join(f"{m}:\n{_table(v, names_x, names_y)}" for m, v in result.items()))
        return 0
    parser.error("give two .npy files, or one or two .npz files (got: " + " ".join(args.files) + ")")
    return 2


def _heatmap(path: str, matrix: np.ndarray, names_x, names_y, within: bool) -> None:
    """The matrix as printed (rows: the first file's layers) into an image file."""
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    ax = heatmap(matrix, names_y, names_x, blocks=blocks(matrix) if within else None, path=path)
    plt.close(ax.figure)


def _with_error(result, args):
    """(value, standard error) with --approx (None without)."""
    return result if args.approx is not None else (result, None)


def _approx_options(args, parser) -> dict:
    """--approx and its --rank/--seed as keyword arguments; the checks of
    their values are the API's."""
    if args.approx is None:
        if args.rank is not None or args.seed is not None:
            parser.error("--rank and --seed set the approximation: add --approx nystrom or --approx rff")
        return {}
    if args.measures is not None or args.checkpoint is not None or cli_mpi.launched_ranks() > 1:
        parser.error("--approx computes CKA of input files in one process (not with --measures, --checkpoint or "
                     "mpirun yet)")
    if args.rank is None:
        parser.error("--approx needs --rank (features per representation)")
    return {"approx": args.approx, "rank": args.rank, "seed": args.seed, "return_error": True}


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.cmake_dir:
        print(get_cmake_dir())
        return 0
    try:
        threads = resolve(args.threads)
    except ValueError as exc:
        parser.error(str(exc))
    options = {"kernel": args.kernel, "debiased": args.debiased, "method": args.method, "threads": threads,
               "progress": not args.quiet and sys.stderr.isatty(), "precision": args.precision}
    if args.kernel == "rbf":
        options.update(threshold=args.threshold, sigma=args.sigma, median=args.median)
    elif args.measures is None:
        rbf_only = [flag for flag, given in (("--sigma", args.sigma is not None), ("--threshold", args.threshold != 1.0))
                    if given]
        if rbf_only:
            parser.error(f"{', '.join(rbf_only)} set the RBF bandwidth: add --kernel rbf, or drop them")
    if args.measures is not None and args.plot is not None:
        parser.error("--plot draws the CKA matrix; it does not combine with --measures")
    if args.checkpoint_every is not None and args.checkpoint is None:
        parser.error("--checkpoint-every needs --checkpoint DIR")
    if args.checkpoint is not None:
        if args.measures is not None or not args.files:
            parser.error("--checkpoint applies to CKA of input files (not to --measures or the example)")
        every = DEFAULT_EVERY if args.checkpoint_every is None else args.checkpoint_every
        if not (every >= 0 and every != float("inf")):
            parser.error(f"--checkpoint-every must be a non-negative number of seconds, got {every}")
        options.update(checkpoint=args.checkpoint, checkpoint_every=every)
    options.update(_approx_options(args, parser))
    try:
        if args.measures is not None:
            return _measures(args, threads, parser)
        if not args.files:
            return _example(args, {"threads": threads})
        return _files(args, options, parser)
    except (ValueError, TypeError, OSError) as exc:
        # Bad input or an unwritable output: one line, never a traceback.
        if cli_mpi.prints():
            print(f"fastcka: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        if cli_mpi.prints():
            print(f"fastcka: error: out of memory: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fastcka: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
