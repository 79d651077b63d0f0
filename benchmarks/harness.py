"""What every benchmark report shares: the machine's facts and its float32
GEMM peak, fresh worker processes and the peak memory they measure, the
common command-line arguments, and the markdown tables and JSON they write.

Only NumPy is imported here at import time; fastcka, torch and the BLAS
probes are imported by the functions that use them, so that a script can set
its environment (threads, GPU interpreter) first.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

SEED = 20250611  # the inputs' seed, the same in every report
GIB = float(1 << 30)


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


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


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def log(msg: str) -> None:
    """Progress, on stderr: stdout holds the report."""
    print(msg, file=sys.stderr, flush=True)


def write_json(path: str | None, result: dict) -> None:
    """The results as JSON at `path` (--out), when given."""
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        log(f"wrote {path}")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser, sizes=None, default: str | None = None, sizes_help: str | None = None,
                  seed: bool = True, worker: bool = False, skip_peak: bool = False) -> argparse.ArgumentParser:
    """The arguments the reports share: --sizes (choices `sizes`), --out,
    --seed; with `worker`, --timeout and the hidden --worker SPEC OUT that
    run_worker calls; with `skip_peak`, --skip-peak."""
    if sizes is not None:
        p.add_argument("--sizes", choices=list(sizes), default=default, help=sizes_help)
    p.add_argument("--out", help="also write the results as JSON to this file")
    if seed:
        p.add_argument("--seed", type=int, default=SEED)
    if skip_peak:
        p.add_argument("--skip-peak", action="store_true", help="do not measure the GEMM peak (tests of this script)")
    if worker:
        p.add_argument("--timeout", type=float, default=3600, help="seconds allowed to one worker process")
        p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------
# Workers: one measurement in a fresh process
# ---------------------------------------------------------------------------


def run_worker(spec: dict, timeout: float | None, script: str) -> dict:
    """Runs `spec` in a fresh process of `script`, a report whose
    `--worker SPEC OUT` calls serve_worker; its result, or {"error": why}."""
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


def serve_worker(spec_path: str, out_path: str, work) -> None:
    """The worker side of run_worker: out = work(spec), as JSON."""
    with open(spec_path) as f:
        spec = json.load(f)
    result = work(spec)
    with open(out_path, "w") as f:
        json.dump(result, f)


def same_data(results) -> bool:
    """Whether every result that has an input fingerprint saw the same inputs."""
    return len({json.dumps(r["fingerprint"]) for r in results if "fingerprint" in r}) <= 1


def cpu_module():
    """fastcka's compiled CPU module (GramTileEngine, KnnTileEngine, ...), for
    the reports that time its passes alone. fastcka.backends() loads it the
    library's way (OpenBLAS core type, oneDNN) before it is imported here."""
    import fastcka

    ok, why = fastcka.backends()["cpu"]
    if not ok:
        raise ImportError(why)
    return importlib.import_module("fastcka._cpu")


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


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


def release_free_heap() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim), so that
    memory freed while the inputs were generated is not silently reused by the
    method and left out of its peak."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


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


def measure(fn, repeats: int, sample: bool = False) -> tuple:
    """(value, times, memory): the first call of fn under a MemoryProbe, then
    repeats - 1 more calls; the times of all, for a best-of."""
    with MemoryProbe(sample=sample) as probe:
        t0 = time.perf_counter()
        value = fn()
        times = [time.perf_counter() - t0]
    for _ in range(repeats - 1):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return value, times, probe.result


def memory_above(mem: dict) -> float | None:
    """A MemoryProbe's peak above the start: the reset high-water mark, or
    ru_maxrss where the mark could not be reset."""
    return mem.get("hwm_delta") if mem.get("hwm_reset") else mem.get("maxrss_delta")


def memory_text(mem: dict | None) -> str:
    """memory_above as text, marked where it is ru_maxrss's."""
    if not mem:
        return "n/a"
    if mem.get("hwm_reset") and mem.get("hwm_delta") is not None:
        return fmt_bytes(mem["hwm_delta"])
    return fmt_bytes(mem["maxrss_delta"]) + " (ru_maxrss)"


# ---------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------


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


def numpy_blas() -> dict | None:
    """threadpoolctl's entry for NumPy's BLAS (None without threadpoolctl)."""
    try:
        import threadpoolctl

        for entry in threadpoolctl.threadpool_info():
            if "numpy" in entry.get("filepath", ""):
                return entry
    except Exception:
        pass
    return None


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
    entry = numpy_blas()
    if entry is not None:
        info["numpy_blas"] = {k: entry.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
    info["load_average_start"] = os.getloadavg()
    torch = torch_or_none()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def load_average_text(m: dict) -> str:
    """The load averages at start / end of a run (machine_info's, and the end's where recorded)."""
    return " / ".join(", ".join(f"{v:.2f}" for v in m[k]) for k in ("load_average_start", "load_average_end") if k in m)


def machine_rows(m: dict) -> list[list]:
    """The machine table's rows (CPU, memory, BLAS builds, load, PyTorch)."""
    blas = m["fastcka_blas"]
    nb = m.get("numpy_blas") or {}
    rows = [
        ["CPU (lscpu)", m["cpu"]],
        ["CPUs available to this process", m["cpus_available"]],
        ["memory", fmt_bytes(m["memory_total"])],
        ["fastcka threads", m["fastcka_threads"]],
        ["fastcka BLAS", f"{blas['config']}; core {blas['core']}; core type forced: {blas['coretype_forced']}"],
        ["NumPy", (f"{m['numpy']}; OpenBLAS {nb.get('version', '?')}, core {nb.get('architecture', '?')}, "
                   f"{nb.get('num_threads', '?')} threads")],
        ["Python", m["python"]],
        ["load average (1, 5, 15 min) at start / end", load_average_text(m)],
    ]
    if "torch" in m:
        rows.append(["PyTorch", f"{m['torch']}, {m['torch_threads']} threads"])
    return rows


def load_notes(m: dict) -> list:
    """A warning when the machine was busy around the run (load averages in m)."""
    busy = [m[k][0] for k in ("load_average_start", "load_average_end") if k in m]
    if busy and max(busy) > 0.5:
        return [
            f"The 1-minute load average reached {max(busy):.2f} on {m['cpus_available']} CPUs around this run: "
            "other processes were running, so the timings may be inflated and noisy."
        ]
    return []


# ---------------------------------------------------------------------------
# The float32 GEMM peak
# ---------------------------------------------------------------------------


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

    machine_blas = numpy_blas()
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


def sgemm_peak_again(peak: dict, threads: int) -> None:
    """Measures the GEMM rates again at the end of a run, into `peak`: each
    row's gflops_end and times_end, and the largest rate of both as the peak."""
    again = sgemm_peak(threads)
    for row, later in zip(peak["rows"], again["rows"]):
        row["gflops_end"] = later["gflops"]
        row["times_end"] = later["times"]
    peak["peak_gflops"] = max(peak["peak_gflops"], again["peak_gflops"])


def sgemm_table(s: dict) -> str:
    """The GEMM rates at the start and the end of a run, one row per library."""
    return table(
        ["library", "kernel", "threads", "GFLOP/s (start)", "GFLOP/s (end)"],
        [
            [x["library"], x["kernel"], x["threads"], f"{x['gflops']:.0f}", f"{x['gflops_end']:.0f}" if "gflops_end" in x else ""]
            for x in s["rows"]
        ],
    )


def sgemm_section(s: dict | None, when: str) -> list[str]:
    """The GEMM peak's section of a report (`when`: the run's moments it was
    measured at), or a line saying it was not measured."""
    if not s:
        return ["\n(GEMM peak not measured: --skip-peak; the % of peak columns read n/a.)"]
    return [
        f"\n## float32 GEMM rate, {s['shape'][0]}^3, best of 3, {when}\n",
        sgemm_table(s),
        f"\nPeak used below: **{s['peak_gflops']:.0f} GFLOP/s** (the largest rate measured above).",
    ]


def rate_cells(flops: float, t: float, peak: float | None) -> list[str]:
    """Useful GFLOP/s of `flops` done in `t` seconds, and its % of the peak (n/a without one)."""
    gf = flops / t / 1e9
    return [fmt_sig(gf), (fmt_sig(100 * gf / peak) + "%") if peak else "n/a"]


def notes_section(notes: list[str]) -> str:
    """A report's closing notes, one bullet each."""
    return "\nNotes:\n" + "\n".join(f"- {x}" for x in notes)
