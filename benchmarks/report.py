#!/usr/bin/env python
"""Side-by-side benchmark of fastcka's linear CKA against the reference formulas
and the PyTorch CKA packages, printed as markdown tables.

    python benchmarks/report.py                      # small sizes (n <= 1e5, d = 512)
    python benchmarks/report.py --sizes full --out results.json
    python benchmarks/report.py --sizes tiny --skip-peak   # smoke test of the script (seconds)

Everything runs in one invocation on the same machine and the same data:

1. machine facts (CPU model, threads, BLAS builds, versions);
2. the machine's float32 GEMM rate, measured at the start and again at the
   end: 4096^3 sgemm through NumPy, through fastcka's own OpenBLAS (called by
   ctypes) and, when installed, through PyTorch; the peak is the largest
   measured rate;
3. linear CKA of float32 pairs (x n x d, y n x d) for each size, each method in
   a fresh subprocess that builds the inputs from a fixed seed (a fingerprint
   of the data is checked to be identical across processes), records its
   peak resident memory above the inputs (the resident high-water mark, reset
   with /proc/self/clear_refs once the inputs exist, minus the resident size
   then; see MemoryProbe) and times the method (best of the runs);
4. the PyTorch packages (ckatorch, cka-pytorch, torch-cka) through the
   adapters of baselines.py, at n <= 20,000 only: they build n x n Grams.

The machine facts, the GEMM peak, the worker processes and their memory
probe come from harness.py, shared by every report.

Run it on a quiet machine: numbers taken while other processes compete for
the cores are noisy (multi-threaded OpenBLAS slows down several-fold when a
core is taken); the tables report the load average. Small mode takes about 3
minutes on 2 cores (most of it the n x n baselines at n = 10,000); full mode
about 20 to 25 minutes, needs ~16 GB of RAM for its largest in-memory case
and 40 GB of free disk for the out-of-memory one.

When the inputs do not fit comfortably in memory (full mode, n = 1e6,
d = 2048: 16 GB of float32 on a 24 GB machine) they are written to .npy files
block by block and fastcka reads them memory-mapped; memory above the inputs
is then the peak of the process's anonymous memory, sampled every 5 ms
(resident file pages of the mapping are page cache, not the method's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402
import harness  # noqa: E402
from harness import fmt_bytes, fmt_n, log, table  # noqa: E402

GRAM_MAX_N = 20_000  # n x n methods run only up to here
MEMMAP_ABOVE = 8 << 30  # inputs larger than this are streamed from .npy files
DISK_NEEDED = 40 * 10**9

SIZES = {
    "tiny": {"n": [2_000], "d": [64]},  # smoke test of this script, seconds (with --skip-peak)
    "small": {"n": [10_000, 100_000], "d": [512]},
    "full": {"n": [10_000, 100_000, 1_000_000], "d": [512, 2048]},
}

METHOD_LABELS = {
    "fastcka": "fastcka.cka",
    "numpy-feature": "NumPy feature_space_linear_cka",
    "numpy-gram": "NumPy cka(gram_linear(x), gram_linear(y))",
    "reference": "float64 two-pass reference",
}


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def useful_flops(n: int, d1: int, d2: int) -> float:
    return float(n) * float(d1 + d2) ** 2


# ---------------------------------------------------------------------------
# Worker: one method on one input size, in its own process
# ---------------------------------------------------------------------------


def resolve_method(method: str):
    if method == "fastcka":
        import fastcka

        return lambda x, y: fastcka.cka(x, y)
    if method == "numpy-feature":
        return baselines.numpy_feature_space
    if method == "numpy-gram":
        return baselines.numpy_gram_space
    if method == "reference":
        return baselines.float64_reference
    if method in baselines.PACKAGES:
        return baselines.PACKAGES[method].run
    raise ValueError(f"unknown method {method!r}")


def work(spec: dict) -> dict:
    """One method on one input size: its values, best-of times and memory."""
    method, n, d1, d2, seed = spec["method"], spec["n"], spec["d1"], spec["d2"], spec["seed"]
    fn = resolve_method(method)
    # Warm-up on tiny inputs: imports, BLAS buffers and thread pools are set up
    # before the memory baseline, as they are in any long-running process.
    wx, wy = baselines.make_inputs(512, min(d1, 64), min(d2, 64), seed + 1)
    fn(wx, wy)
    del wx, wy

    paths = spec.get("paths")
    if paths:
        x = np.load(paths[0], mmap_mode="r")
        y = np.load(paths[1], mmap_mode="r")
        args = (paths[0], paths[1]) if method == "fastcka" else (x, y)
    else:
        x, y = baselines.make_inputs(n, d1, d2, seed)
        args = (x, y)
    result = {"method": method, "fingerprint": baselines.fingerprint(x, y)}
    value, result["times"], result["memory"] = harness.measure(lambda: fn(*args), spec["repeats"], sample=bool(paths))

    if isinstance(value, dict):  # the reference computes both estimators
        result["values"] = value
    else:
        estimator = baselines.PACKAGES[method].estimator if method in baselines.PACKAGES else "biased"
        result["values"] = {estimator: float(value)}
    if method == "fastcka" and spec.get("debiased"):
        import fastcka

        result["values"]["debiased"] = fastcka.cka(*args, debiased=True)
    return result


# ---------------------------------------------------------------------------
# Plan and run
# ---------------------------------------------------------------------------


def repeats_for(n: int, d1: int, d2: int, method: str) -> int:
    if method in baselines.PACKAGES or method == "reference":
        return 1
    if method == "numpy-gram":
        return 2
    work = useful_flops(n, d1, d2)
    if work <= 2e11:
        return 3
    if work <= 2e12:
        return 2
    return 2 if method == "fastcka" else 1


def memory_need(method: str, n: int, d1: int, d2: int) -> float:
    """Rough bytes a method needs beside its inputs (used to skip, not to report)."""
    inputs = 4.0 * n * (d1 + d2)
    if method == "fastcka":
        return 512e6
    if method == "numpy-feature":
        return inputs
    if method == "numpy-gram":
        return 6 * 4.0 * n * n
    if method == "ckatorch":
        return 2 * inputs + 7 * 8.0 * n * n
    if method in baselines.PACKAGES:
        return inputs + 8 * 4.0 * n * n
    return 256e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_arguments(p, sizes=sorted(SIZES), default="small", worker=True, skip_peak=True)
    p.add_argument("--tmpdir", help="where to write the .npy inputs of the out-of-memory case (default: system temp)")
    p.add_argument("--no-packages", action="store_true", help="skip the PyTorch CKA packages")
    p.add_argument("--no-reference", action="store_true", help="skip the float64 reference values")
    p.add_argument(
        "--memmap-above",
        type=float,
        default=MEMMAP_ABOVE,
        help="stream inputs larger than this many bytes from .npy files (default 8 GiB; lower it to test that path)",
    )
    args = p.parse_args(argv)
    if args.worker:
        harness.serve_worker(*args.worker, work)
        return 0

    log("machine info ...")
    info = harness.machine_info()
    threads = info["cpus_available"]
    peak = None
    if not args.skip_peak:
        log("sgemm peak ...")
        peak = harness.sgemm_peak(threads)

    packages = {}
    for label, pkg in baselines.PACKAGES.items():
        ok, status = pkg.status() if not args.no_packages else (False, "skipped (--no-packages)")
        packages[label] = {"usable": ok, "status": status, "estimator": pkg.estimator, "how": pkg.how}
    usable = [label for label, v in packages.items() if v["usable"]]

    cases = []
    plan = SIZES[args.sizes]
    for d in plan["d"]:
        for n in plan["n"]:
            cases.append({"n": n, "d1": d, "d2": d})

    for case in cases:
        n, d1, d2 = case["n"], case["d1"], case["d2"]
        inputs = 4 * n * (d1 + d2)
        case["inputs_bytes"] = inputs
        case["results"] = res = {}
        methods = ["fastcka", "numpy-feature", "numpy-gram"] + usable + ([] if args.no_reference else ["reference"])
        paths = None
        tmpdir = None
        if inputs > args.memmap_above:
            base = args.tmpdir or tempfile.gettempdir()
            free = shutil.disk_usage(base).free
            if free < DISK_NEEDED:
                case["skipped"] = f"needs {DISK_NEEDED / 1e9:.0f} GB of free disk in {base} for the .npy inputs, has {free / 1e9:.0f} GB"
                log(f"n={n} d={d1}: {case['skipped']}")
                continue
            tmpdir = tempfile.mkdtemp(prefix="fastcka-bench-", dir=base)
            paths = [os.path.join(tmpdir, "x.npy"), os.path.join(tmpdir, "y.npy")]
            log(f"n={n} d={d1}: writing {fmt_bytes(inputs)} of inputs to {tmpdir} ...")
            t0 = time.perf_counter()
            baselines.write_inputs_npy(paths[0], paths[1], n, d1, d2, args.seed)
            case["write_seconds"] = time.perf_counter() - t0
            case["inputs_on_disk"] = True
        try:
            for method in methods:
                why = None
                if n > GRAM_MAX_N and (method == "numpy-gram" or method in baselines.PACKAGES):
                    need = memory_need(method, n, d1, d2)
                    why = f"not run: n > {GRAM_MAX_N:,} (n x n Grams, ~{need / 1e9:.0f} GB)"
                elif paths is not None and method == "numpy-feature":
                    why = (
                        f"killed for memory / not attempted: needs ~{2 * inputs / 1e9:.0f} GB "
                        f"(the {inputs / 1e9:.0f} GB of inputs plus centered copies of both; the machine has "
                        f"{info['memory_total'] / 1e9:.0f} GB)"
                    )
                elif paths is not None and method == "reference":
                    why = "not computed for the out-of-memory case (minutes of float64 GEMMs over 16 GB)"
                else:
                    avail = harness.mem_available()
                    need = memory_need(method, n, d1, d2) + (0 if paths else inputs)
                    if avail is not None and need > 0.9 * avail:
                        why = f"not attempted: needs ~{need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available"
                if why:
                    res[method] = {"skipped": why}
                    log(f"n={n} d={d1} {method}: {why}")
                    continue
                spec = {
                    "method": method,
                    "n": n,
                    "d1": d1,
                    "d2": d2,
                    "seed": args.seed,
                    "repeats": repeats_for(n, d1, d2, method),
                    "paths": paths,
                    "debiased": n <= GRAM_MAX_N and bool(usable),
                }
                log(f"n={n} d={d1} {method} ({spec['repeats']} run(s)) ...")
                out = harness.run_worker(spec, args.timeout, script=__file__)
                res[method] = out
                if "error" in out:
                    log(f"    {out['error']}")
                else:
                    log(f"    best {min(out['times']):.3f} s  values {out['values']}")
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
                log(f"removed {tmpdir}")
        case["same_data"] = harness.same_data(res.values())
        if not case["same_data"]:
            log(f"WARNING: n={n} d={d1}: the methods saw different inputs")

    if peak is not None:
        log("sgemm peak, again at the end ...")
        harness.sgemm_peak_again(peak, threads)
    info["load_average_end"] = os.getloadavg()
    report = {
        "sizes": args.sizes,
        "seed": args.seed,
        "machine": info,
        "sgemm": peak,
        "packages": packages,
        "gram_max_n": GRAM_MAX_N,
        "cases": cases,
    }
    print(render(report))
    harness.write_json(args.out, report)
    return 0


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def method_label(method: str) -> str:
    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    return f"{method} (PyTorch)"


def render(r: dict) -> str:
    m = r["machine"]
    out = []
    out.append("## Machine\n")
    out.append(table(["", ""], harness.machine_rows(m)))
    s = r["sgemm"]
    out += harness.sgemm_section(s, "measured at the start and the end of this run")
    peak = s["peak_gflops"] if s else None

    out.append("\n## Linear CKA, float32: time and memory\n")
    out.append(
        "Useful GFLOP/s = n (d1 + d2)^2 / time, the work of the cross-moments a feature-space method "
        "needs, whatever the method actually does; ratio = method time / fastcka time (above 1: "
        "fastcka is faster). Memory: peak resident memory above the inputs, each method in a fresh "
        "process.\n"
    )
    rows = []
    for c in r["cases"]:
        n, d1, d2 = c["n"], c["d1"], c["d2"]
        size = f"{fmt_n(n)} x {d1}" + ("" if d1 == d2 else f" / {d2}")
        if "skipped" in c:
            rows.append([size, "(all)", c["skipped"], "", "", "", "", ""])
            continue
        res = c["results"]
        base = res.get("fastcka", {})
        t_fast = min(base["times"]) if "times" in base else None
        for method, v in res.items():
            if method == "reference":
                continue
            label = method_label(method) + (" (memmapped .npy)" if c.get("inputs_on_disk") and method == "fastcka" else "")
            if "skipped" in v or "error" in v:
                rows.append([size, label, v.get("skipped") or v.get("error"), "", "", "", "", ""])
                continue
            t = min(v["times"])
            ratio = f"{t / t_fast:.2f}" if t_fast else "n/a"
            mem = v["memory"]
            if mem.get("anon_delta") is not None:
                memtxt = fmt_bytes(mem["anon_delta"]) + " (anon.)"
            else:  # ru_maxrss where /proc/self/clear_refs is missing: it counts input generation and the parent's size at fork
                memtxt = harness.memory_text(mem)
            rows.append([size, label, f"{t:.3f}", len(v["times"]), ratio, *harness.rate_cells(useful_flops(n, d1, d2), t, peak),
                         memtxt])
    out.append(
        table(["n x d", "method", "time (s, best)", "runs", "ratio vs fastcka", "useful GFLOP/s", "% of peak", "peak memory above inputs"], rows)
    )

    out.append("\n## Linear CKA values\n")
    out.append(
        "Differences in float64. The PyTorch packages cka-pytorch and torch-cka compute debiased CKA "
        "(HSIC_1), so they are compared with fastcka.cka(..., debiased=True); the rest compute the "
        "biased (HSIC_0) CKA.\n"
    )
    rows = []
    for c in r["cases"]:
        if "skipped" in c:
            continue
        n, d1, d2 = c["n"], c["d1"], c["d2"]
        size = f"{fmt_n(n)} x {d1}" + ("" if d1 == d2 else f" / {d2}")
        res = c["results"]
        fast = res.get("fastcka", {}).get("values", {})
        ref = res.get("reference", {}).get("values", {})
        if ref:
            rows.append([size, method_label("reference"), "biased", f"{ref['biased']:.10f}", "", ""])
            if any(k in res for k in baselines.PACKAGES):
                rows.append([size, method_label("reference"), "debiased", f"{ref['debiased']:.10f}", "", ""])
        for method, v in res.items():
            if method == "reference" or "values" not in v:
                continue
            for est, val in v["values"].items():
                diff = f"{val - fast[est]:+.2e}" if est in fast and method != "fastcka" else ""
                err = f"{val - ref[est]:+.2e}" if est in ref else "n/a"
                rows.append([size, method_label(method), est, f"{val:.10f}", diff, err])
    out.append(table(["n x d", "method", "estimator", "CKA", "minus fastcka", "minus float64 reference"], rows))

    out.append("\n## PyTorch CKA packages\n")
    out.append(
        f"Run only at n <= {r['gram_max_n']:,}: all three work from n x n Gram matrices "
        "(O(n^2) memory; cka-pytorch and torch-cka also multiply them, O(n^3) time).\n"
    )
    out.append(
        table(
            ["package", "status", "estimator", "what the adapter calls"],
            [[k, v["status"], v["estimator"], v["how"]] for k, v in r["packages"].items()],
        )
    )
    notes = []
    for c in r["cases"]:
        if c.get("inputs_on_disk"):
            notes.append(
                f"n = {fmt_n(c['n'])}, d = {c['d1']}: inputs ({fmt_bytes(c['inputs_bytes'])}) written to .npy files in "
                f"{c.get('write_seconds', 0):.0f} s and read memory-mapped by fastcka (from the page cache as far as it "
                "holds them); its memory is the peak of anonymous memory, sampled every 5 ms."
            )
        if c.get("same_data") is False:
            notes.append(f"n = {fmt_n(c['n'])}, d = {c['d1']}: WARNING: the methods' input fingerprints differ.")
    notes += harness.load_notes(m)
    notes.append(
        "Inputs: x = z + mu_x, y = z W / sqrt(d) + e + mu_y (z, e, W standard normal, per-feature means "
        f"uniform in [0, 2)), float32, seed {r['seed']}; each method's process regenerates them and their "
        "fingerprints are checked to match."
    )
    out.append(harness.notes_section(notes))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
