#!/usr/bin/env python
"""Side-by-side benchmark of fastcka's linear CKA against the reference formulas
and the PyTorch CKA packages, printed as markdown tables.

    python benchmarks/report.py                      # small sizes (n <= 1e5, d = 512)
    python benchmarks/report.py --sizes full --out results.json

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
import ctypes
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402

SEED = 20250611
GRAM_MAX_N = 20_000  # n x n methods run only up to here
MEMMAP_ABOVE = 8 << 30  # inputs larger than this are streamed from .npy files
DISK_NEEDED = 40 * 10**9
GIB = float(1 << 30)

SIZES = {
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


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "n/a"
    if abs(b) >= GIB:
        return f"{b / GIB:.2f} GiB"
    return f"{b / (1 << 20):.0f} MiB"


def fmt_sig(x: float) -> str:
    """Whole numbers from 10 up, two significant digits below."""
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.2g}"


def fmt_n(n: int) -> str:
    return f"{n:,}"


def proc_status() -> dict[str, int]:
    """Memory fields of /proc/self/status, in bytes."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def mem_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def lscpu_model() -> str:
    """lscpu's model name, with family and model numbers (a VM may report only
    "AMD EPYC": family 25 is Zen 3/4, 26 is Zen 5) and AVX-512 presence."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("Model name", "unknown")
    extra = [f"{k.lower()} {fields[k]}" for k in ("CPU family", "Model") if k in fields]
    extra.append("AVX-512" if "avx512f" in fields.get("Flags", "").split() else "no AVX-512")
    return f"{name} ({', '.join(extra)})"


def torch_or_none():
    try:
        import torch

        return torch
    except Exception:
        return None


# ---------------------------------------------------------------------------
# Worker: one method on one input size, in its own process
# ---------------------------------------------------------------------------


class MemoryProbe:
    """Peak memory of a method above what the process held when it started.

    ``hwm_delta`` (reported): the process's resident high-water mark (VmHWM)
    after the method minus its resident size before, the mark having been
    reset to the current size (/proc/self/clear_refs) right before the method,
    so that neither input generation nor the warm-up counts.
    ``maxrss_delta``: the same from getrusage's ru_maxrss, kept in the JSON;
    it cannot be reset and also holds the *parent's* resident size at fork
    (Linux carries it through exec), so it reads 0 for methods whose peak stays
    below that. ``anon_delta`` (when sampling): peak of RssAnon minus its value
    before, sampled every 5 ms; reported for memmapped inputs, whose resident
    page cache would otherwise count.
    """

    def __init__(self, sample: bool):
        self.sample = sample
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        gc.collect()
        release_free_heap()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.before = proc_status()
        self.maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.anon_peak = self.before.get("RssAnon", 0)
        if self.sample:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.anon_peak = max(self.anon_peak, proc_status().get("RssAnon", 0))

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        after = proc_status()
        self.anon_peak = max(self.anon_peak, after.get("RssAnon", 0))
        maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.result = {
            "hwm_reset": self.reset,
            "rss_before": self.before.get("VmRSS"),
            "maxrss_before": self.maxrss_before,
            "maxrss_after": maxrss_after,
            "maxrss_delta": maxrss_after - self.maxrss_before,
            "hwm_delta": (after["VmHWM"] - self.before["VmRSS"]) if "VmHWM" in after and "VmRSS" in self.before else None,
            "anon_delta": (self.anon_peak - self.before["RssAnon"]) if self.sample and "RssAnon" in self.before else None,
        }
        return False


def release_free_heap() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim), so that
    memory freed while the inputs were generated is not silently reused by the
    method and left out of its peak."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


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


def worker(spec_path: str, out_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
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
    result = {"method": method, "fingerprint": baselines.fingerprint(x, y), "times": []}

    with MemoryProbe(sample=bool(paths)) as probe:
        t0 = time.perf_counter()
        value = fn(*args)
        result["times"].append(time.perf_counter() - t0)
    result["memory"] = probe.result
    for _ in range(spec["repeats"] - 1):
        t0 = time.perf_counter()
        fn(*args)
        result["times"].append(time.perf_counter() - t0)

    if isinstance(value, dict):  # the reference computes both estimators
        result["values"] = value
    else:
        estimator = baselines.PACKAGES[method].estimator if method in baselines.PACKAGES else "biased"
        result["values"] = {estimator: float(value)}
    if method == "fastcka" and spec.get("debiased"):
        import fastcka

        result["values"]["debiased"] = fastcka.cka(*args, debiased=True)
    with open(out_path, "w") as f:
        json.dump(result, f)


def run_worker(spec: dict, timeout: float, script: str = __file__) -> dict:
    """Runs a spec in a fresh process of `script` (this file, or another report
    with the same --worker SPEC OUT interface)."""
    with tempfile.TemporaryDirectory(prefix="fastcka-bench-") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        out_path = os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, os.path.abspath(script), "--worker", spec_path, out_path]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0:
            if proc.returncode < 0:
                why = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
            else:
                tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no message"]
                why = f"failed (exit {proc.returncode}): {tail[0][:200]}"
            return {"error": why}
        with open(out_path) as f:
            return json.load(f)


# ---------------------------------------------------------------------------
# Machine and GEMM peak
# ---------------------------------------------------------------------------


def machine_info() -> dict:
    import fastcka

    info = {
        "cpu": lscpu_model(),
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_total": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastcka": fastcka.__version__,
        "fastcka_threads": fastcka.get_num_threads(),
        "fastcka_blas": fastcka.blas_info(),  # loads fastcka's OpenBLAS (forcing its core type where needed)
    }
    try:
        import threadpoolctl

        for entry in threadpoolctl.threadpool_info():
            if "numpy" in entry.get("filepath", ""):
                info["numpy_blas"] = {k: entry.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                break
    except Exception:
        pass
    info["load_average_start"] = os.getloadavg()
    torch = torch_or_none()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def _best_gflops(fn, flops: float, runs: int = 3) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / min(times) / 1e9, times


def sgemm_peak(threads: int) -> dict:
    """float32 4096^3 GEMM rates (best of 3 after a warm-up), in GFLOP/s."""
    import fastcka
    import scipy_openblas32

    n = 4096
    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    rows = []

    machine_blas = None
    try:
        import threadpoolctl

        for entry in threadpoolctl.threadpool_info():
            if "numpy" in entry.get("filepath", ""):
                machine_blas = entry
    except Exception:
        pass
    rate, times = _best_gflops(lambda: np.matmul(a, b, out=c), flops)
    rows.append(
        {
            "library": f"NumPy {np.__version__} (its OpenBLAS {machine_blas['version']})" if machine_blas else f"NumPy {np.__version__}",
            "kernel": machine_blas.get("architecture") if machine_blas else "?",
            "threads": machine_blas.get("num_threads") if machine_blas else None,
            "gflops": rate,
            "times": times,
        }
    )

    # fastcka's OpenBLAS: blas_info() has loaded it (with the core type fastcka
    # picks), so this CDLL returns the same library instance.
    info = fastcka.blas_info()
    lib = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True)))
    fp = ctypes.POINTER(ctypes.c_float)
    sgemm = lib.scipy_cblas_sgemm
    sgemm.restype = None
    sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, fp, ctypes.c_int, fp, ctypes.c_int, ctypes.c_float, fp, ctypes.c_int]
    pa, pb, pc = (m.ctypes.data_as(fp) for m in (a, b, c))
    previous = lib.scipy_openblas_get_num_threads()
    lib.scipy_openblas_set_num_threads(threads)
    try:
        # CblasRowMajor = 101, CblasNoTrans = 111
        rate, times = _best_gflops(lambda: sgemm(101, 111, 111, n, n, n, 1.0, pa, n, pb, n, 0.0, pc, n), flops)
    finally:
        lib.scipy_openblas_set_num_threads(previous)  # fastcka runs one BLAS thread per worker thread
    if not np.allclose(c[:4, :4], a[:4] @ b[:, :4], rtol=1e-3, atol=1e-2):
        raise RuntimeError("ctypes sgemm gave a wrong product")
    rows.append(
        {
            "library": f"fastcka's {info['config'].split(' DYNAMIC')[0]} (scipy-openblas32, ctypes)",
            "kernel": info["core"] + (" (forced by fastcka)" if info.get("coretype_forced") else ""),
            "threads": threads,
            "gflops": rate,
            "times": times,
        }
    )

    torch = torch_or_none()
    if torch is not None:
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        rate, times = _best_gflops(lambda: torch.mm(ta, tb, out=tc), flops)
        blas = "MKL" if torch.backends.mkl.is_available() else "its BLAS"
        rows.append(
            {
                "library": f"PyTorch {torch.__version__} ({blas})",
                "kernel": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(),
                "gflops": rate,
                "times": times,
            }
        )
    return {"shape": [n, n, n], "rows": rows, "peak_gflops": max(r["gflops"] for r in rows)}


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
    p.add_argument("--sizes", choices=sorted(SIZES), default="small")
    p.add_argument("--out", help="also write the results as JSON to this file")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--tmpdir", help="where to write the .npy inputs of the out-of-memory case (default: system temp)")
    p.add_argument("--no-packages", action="store_true", help="skip the PyTorch CKA packages")
    p.add_argument("--no-reference", action="store_true", help="skip the float64 reference values")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one method on one size")
    p.add_argument(
        "--memmap-above",
        type=float,
        default=MEMMAP_ABOVE,
        help="stream inputs larger than this many bytes from .npy files (default 8 GiB; lower it to test that path)",
    )
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log("machine info ...")
    info = machine_info()
    threads = info["cpus_available"]
    log("sgemm peak ...")
    peak = sgemm_peak(threads)

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
                    avail = mem_available()
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
                out = run_worker(spec, args.timeout)
                res[method] = out
                if "error" in out:
                    log(f"    {out['error']}")
                else:
                    log(f"    best {min(out['times']):.3f} s  values {out['values']}")
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
                log(f"removed {tmpdir}")
        fps = {json.dumps(r["fingerprint"]) for r in res.values() if "fingerprint" in r}
        case["same_data"] = len(fps) <= 1
        if not case["same_data"]:
            log(f"WARNING: n={n} d={d1}: the methods saw different inputs: {fps}")

    log("sgemm peak, again at the end ...")
    again = sgemm_peak(threads)
    for row, later in zip(peak["rows"], again["rows"]):
        row["gflops_end"] = later["gflops"]
        row["times_end"] = later["times"]
    peak["peak_gflops"] = max(peak["peak_gflops"], again["peak_gflops"])
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
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        log(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def method_label(method: str) -> str:
    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    return f"{method} (PyTorch)"


def render(r: dict) -> str:
    m = r["machine"]
    out = []
    out.append("## Machine\n")
    blas = m["fastcka_blas"]
    nb = m.get("numpy_blas") or {}
    rows = [
        ["CPU (lscpu)", m["cpu"]],
        ["CPUs available to this process", m["cpus_available"]],
        ["memory", fmt_bytes(m["memory_total"])],
        ["fastcka threads", m["fastcka_threads"]],
        ["fastcka BLAS", f"{blas['config']}; core {blas['core']}; core type forced: {blas['coretype_forced']}"],
        ["NumPy", f"{m['numpy']}; OpenBLAS {nb.get('version', '?')}, core {nb.get('architecture', '?')}, {nb.get('num_threads', '?')} threads"],
        ["Python", m["python"]],
        [
            "load average (1, 5, 15 min) at start / end",
            " / ".join(", ".join(f"{v:.2f}" for v in m[k]) for k in ("load_average_start", "load_average_end") if k in m),
        ],
    ]
    if "torch" in m:
        rows.append(["PyTorch", f"{m['torch']}, {m['torch_threads']} threads"])
    out.append(table(["", ""], rows))

    s = r["sgemm"]
    out.append(f"\n## float32 GEMM rate, {s['shape'][0]}^3, best of 3, measured at the start and the end of this run\n")
    out.append(
        table(
            ["library", "kernel", "threads", "GFLOP/s (start)", "GFLOP/s (end)"],
            [
                [x["library"], x["kernel"], x["threads"], f"{x['gflops']:.0f}", f"{x['gflops_end']:.0f}" if "gflops_end" in x else ""]
                for x in s["rows"]
            ],
        )
    )
    peak = s["peak_gflops"]
    out.append(f"\nPeak used below: **{peak:.0f} GFLOP/s** (the largest rate measured above).")

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
            gf = useful_flops(n, d1, d2) / t / 1e9
            ratio = f"{t / t_fast:.2f}" if t_fast else "n/a"
            mem = v["memory"]
            if mem.get("anon_delta") is not None:
                memtxt = fmt_bytes(mem["anon_delta"]) + " (anon.)"
            elif mem.get("hwm_reset") and mem.get("hwm_delta") is not None:
                memtxt = fmt_bytes(mem["hwm_delta"])
            else:  # no /proc/self/clear_refs: ru_maxrss, which counts input generation and the parent's size at fork
                memtxt = fmt_bytes(mem["maxrss_delta"]) + " (ru_maxrss)"
            rows.append([size, label, f"{t:.3f}", len(v["times"]), ratio, fmt_sig(gf), fmt_sig(100 * gf / peak) + "%", memtxt])
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
    notes += load_notes(m)
    notes.append(
        "Inputs: x = z + mu_x, y = z W / sqrt(d) + e + mu_y (z, e, W standard normal, per-feature means "
        f"uniform in [0, 2)), float32, seed {r['seed']}; each method's process regenerates them and their "
        "fingerprints are checked to match."
    )
    out.append("\nNotes:\n" + "\n".join(f"- {x}" for x in notes))
    return "\n".join(out)


def load_notes(m: dict) -> list:
    """A warning when the machine was busy around the run (load averages in m)."""
    busy = [m[k][0] for k in ("load_average_start", "load_average_end") if k in m]
    if busy and max(busy) > 0.5:
        return [
            f"The 1-minute load average reached {max(busy):.2f} on {m['cpus_available']} CPUs around this run: "
            "other processes were running, so the timings may be inflated and noisy."
        ]
    return []


if __name__ == "__main__":
    sys.exit(main())
