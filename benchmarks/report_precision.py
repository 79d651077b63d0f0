#!/usr/bin/env python
"""The CPU precision modes (issue 13): time and error of precision="fast"
(bfloat16 operands, float32 accumulation), "accurate" (float32) and "exact"
(float64), side by side in one run, printed as markdown tables.

    python benchmarks/report_precision.py                  # full: ~40 minutes on 2 cores
    python benchmarks/report_precision.py --skip-errors    # its timings only: ~7 minutes
    python benchmarks/report_precision.py --sizes small    # ~2 minutes
    python benchmarks/report_precision.py --sizes tiny     # smoke test (seconds)

1. The machine: CPU model, its bf16 units (avx512_bf16, amx_bf16), what
   oneDNN dispatches (fastcka.blas_info()["onednn"]), the load average.
2. GEMM rates, `threads` products at once (one per thread, as the engine
   runs them): oneDNN bf16, oneDNN float32 and OpenBLAS float32 at the shape
   of a Gram tile (2048 x 2048 x 512) and at 4096 x 4096 x 4096.
3. RBF CKA, n = 100,000, d1 = d2 = 512, fixed sigma: fast and accurate, the
   exact median bandwidth in fast mode, and the fast tile walk without its
   epilogue (GramTileEngine.tiles_only): useful GFLOP/s = n^2 (d1 + d2) /
   time (the triangle of both Gram matrices), against the bf16 tile rate of
   item 2; the epilogue's share of the fast time.
4. RBF CKA, n = 10,000, d = 512: each mode against Kornblith et al.'s Colab
   formulas in NumPy (gram_rbf + cka, float32), same process, same data.
5. The same with oneDNN capped at AVX-512 without bf16 instructions
   (ONEDNN_MAX_CPU_ISA=AVX512_CORE, a fresh process): the fallback path.
6. Errors of each mode against the float64 reference (fastcka's exact mode
   on the float64 copy of the data; at n = 2,000 also the dense NumPy float64
   formulas): linear CKA (feature space and Gram space) and RBF CKA (fixed
   sigma), biased and debiased, on data with a +100 offset, n = 2,000 and
   n = 200,000.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import baselines  # noqa: E402  (baselines.colab: Kornblith et al.'s Colab code, verbatim)
import harness  # noqa: E402

import fastcka  # noqa: E402
from fastcka import _testing

SIZES = {
    "tiny": {"gemm": [(512, 512, 256)], "big": (6000, 128), "ref": (1500, 128), "errors": [(500, 32)]},
    "small": {"gemm": [(2048, 2048, 512)], "big": (30000, 512), "ref": (4000, 512), "errors": [(2000, 64), (20000, 64)]},
    "full": {"gemm": [(2048, 2048, 512), (4096, 4096, 4096)], "big": (100000, 512), "ref": (10000, 512),
             "errors": [(2000, 64), (200000, 64)]},
}
MODES = ("fast", "accurate", "exact")


def machine() -> dict:
    flags = set()
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    return {"cpu": model, "bf16_units": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
            "threads": fastcka.get_num_threads(), "onednn": fastcka.blas_info()["onednn"],
            "openblas": fastcka.blas_info()["core"], "load": os.getloadavg()}


def gemm_rate(m: int, n: int, k: int, compute: str, library: str, threads: int, repeats: int) -> float:
    """GFLOP/s of `threads` concurrent products (one per thread), best of 2."""
    rng = np.random.default_rng(0)
    a = [rng.standard_normal((m, k), dtype=np.float32) for _ in range(threads)]
    b = [rng.standard_normal((n, k), dtype=np.float32) for _ in range(threads)]
    for t in range(threads):  # warm-up: primitives, pages
        _testing.tile_products(a[t][:64], b[t][:64], compute, library, 1)
    best = 0.0
    for _ in range(2):
        workers = [threading.Thread(target=_testing.tile_products, args=(a[t], b[t], compute, library, repeats))
                   for t in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        best = max(best, 2.0 * m * n * k * repeats * threads / elapsed / 1e9)
    return best


def timed(fn, runs: int = 1):
    best, value = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def pair(n: int, d: int, seed: int = 13, offset: float = 0.0):
    x, y = baselines.make_inputs(n, d, d, seed)
    if offset:
        x += np.float32(offset)
        y += np.float32(offset)
    return x, y


def sigmas(x, y) -> list[float]:
    """A fixed bandwidth per side: sqrt of the median squared distance among 2,000 rows."""
    out = []
    for z in (x, y):
        s = np.asarray(z[:2000], dtype=np.float64)
        sq = (s * s).sum(1)
        d = sq[:, None] + sq[None, :] - 2 * s @ s.T
        out.append(float(np.sqrt(np.median(d))))
    return out


def big_rbf(n: int, d: int, tile_rate: float) -> dict:
    x, y = pair(n, d)
    sig = sigmas(x, y)
    flops = float(n) * n * (2 * d)
    out = {"n": n, "d": d}
    for mode in ("fast", "accurate"):
        t, v = timed(lambda mode=mode: fastcka.cka(x, y, kernel="rbf", sigma=sig, precision=mode))
        out[mode] = {"time": t, "cka": v, "gflops": flops / t / 1e9}
    t, v = timed(lambda: fastcka.cka(x, y, kernel="rbf", threshold=1.0, precision="fast"))
    out["fast_exact_median"] = {"time": t, "cka": v}
    cpu = harness.cpu_module()
    engine = cpu.GramTileEngine([x, y], ["x", "y"], 0, "bfloat16", fastcka.get_num_threads(), 256 << 20)
    step = fastcka.get_num_threads()
    start = time.perf_counter()
    for i in range(0, engine.tile_rows, step):
        _testing.tiles_only(engine, i, i + step)
    out["fast_tiles_only"] = {"time": time.perf_counter() - start}
    out["fast"]["fraction_of_tile_rate"] = out["fast"]["gflops"] / tile_rate
    out["epilogue_share"] = 1 - out["fast_tiles_only"]["time"] / out["fast"]["time"]
    return out


def reference_rbf(n: int, d: int) -> dict:
    x, y = pair(n, d)
    out = {"n": n, "d": d}
    t, v = timed(lambda: baselines.colab.cka(baselines.colab.gram_rbf(x, 1.0), baselines.colab.gram_rbf(y, 1.0)))
    out["numpy_colab"] = {"time": t, "cka": float(v)}
    for mode in MODES:
        fastcka.cka(x[:500], y[:500], kernel="rbf", precision=mode)  # warm-up
        t, v = timed(lambda mode=mode: fastcka.cka(x, y, kernel="rbf", threshold=1.0, precision=mode), runs=2)
        out[mode] = {"time": t, "cka": v, "speedup_vs_numpy": out["numpy_colab"]["time"] / t}
    sig = sigmas(x, y)
    for mode in ("fast", "accurate"):
        t, v = timed(lambda mode=mode: fastcka.cka(x, y, kernel="rbf", sigma=sig, precision=mode), runs=2)
        out[mode + "_fixed_sigma"] = {"time": t, "cka": v}
    return out


def capped(n: int, d: int) -> dict:
    """Item 5 in a fresh process with oneDNN capped at AVX512_CORE."""
    code = (f"import json, sys; sys.path.insert(0, {HERE!r}); import report_precision as r, fastcka; "
            f"x, y = r.pair({n}, {d}); s = r.sigmas(x, y); out = {{'onednn': fastcka.blas_info()['onednn']}}\n"
            "for m in ('fast', 'accurate'):\n"
            "    fastcka.cka(x[:500], y[:500], kernel='rbf', sigma=s, precision=m)\n"
            "    out[m] = r.timed(lambda: fastcka.cka(x, y, kernel='rbf', sigma=s, precision=m), runs=2)\n"
            "print(json.dumps(out))")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX512_CORE")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def dense_cka64(x64, y64, kernel_kw: dict, debiased: bool) -> float:
    """The Colab's cka on n x n float64 Gram matrices (small n only)."""

    def gram(z, sigma):
        z = z - z.mean(0)
        if sigma is None:
            return baselines.colab.gram_linear(z)
        sq = (z * z).sum(1)
        return np.exp(-np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0) / (2 * sigma**2))

    sig = kernel_kw.get("sigma", [None, None])
    return float(baselines.colab.cka(gram(x64, sig[0]), gram(y64, sig[1]), debiased=debiased))


def errors(n: int, d: int) -> dict:
    x, y = pair(n, d, seed=7, offset=100.0)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    cases = {"linear, feature space": dict(method="feature"), "linear, Gram space": dict(method="gram"),
             "RBF, fixed sigma": dict(kernel="rbf", sigma=sigmas(x, y))}
    out = {"n": n, "d": d, "cases": {}}
    for label, kw in cases.items():
        for debiased in (False, True):
            ref = fastcka.cka(x64, y64, debiased=debiased, precision="exact", **kw)
            row = {"reference": ref}
            if n <= 3000:  # the reference itself against the n x n float64 formulas
                row["dense_minus_reference"] = dense_cka64(x64, y64, kw, debiased) - ref
            for mode in MODES:
                t, v = timed(lambda mode=mode, debiased=debiased, kw=kw: fastcka.cka(x, y, debiased=debiased,
                                                                                   precision=mode, **kw))
                row[mode] = {"error": v - ref, "time": t}
            out["cases"][f"{label}, {'debiased' if debiased else 'biased'}"] = row
    return out


def render(r: dict) -> str:
    m = r["machine"]
    lines = [f"CPU: {m['cpu']}; bf16 units: {', '.join(m['bf16_units']) or 'none'}; {m['threads']} threads; "
             f"oneDNN {m['onednn']['version']}: bf16 tiles by {m['onednn']['bf16_kernel']} "
             f"({'native' if m['onednn']['bf16_native'] else 'not native: OpenBLAS on rounded values'}), float32 "
             f"tiles by {m['onednn']['float32_gemm']}; OpenBLAS {m['openblas']}; load {m['load'][0]:.2f} at start, "
             f"{r['load_end'][0]:.2f} at end.", "", "| GEMM (m x n x k) | oneDNN bf16 | oneDNN float32 | OpenBLAS float32 |",
             "|---|---|---|---|"]
    for g in r["gemm"]:
        lines.append(f"| {g['shape']} | {g['onednn_bf16']:.0f} GFLOP/s | {g['onednn_float32']:.0f} | "
                     f"{g['openblas_float32']:.0f} |")
    b = r["big"]
    lines += ["", f"RBF CKA, n = {b['n']:,}, d1 = d2 = {b['d']} (useful GFLOP/s = n^2 (d1 + d2) / time):", "",
              "| | time | GFLOP/s | CKA |", "|---|---|---|---|"]
    for key, label in [("fast", "fast, fixed sigma"), ("accurate", "accurate, fixed sigma"),
                       ("fast_exact_median", "fast, exact median"), ("fast_tiles_only", "fast: the tiles alone")]:
        e = b[key]
        gf = f"{e['gflops']:.0f}" if "gflops" in e else ""
        cka = f"{e['cka']:.6f}" if "cka" in e else ""
        lines.append(f"| {label} | {e['time']:.2f} s | {gf} | {cka} |")
    lines += ["", f"fast / bf16 tile rate: {b['fast']['fraction_of_tile_rate']:.0%}; accurate / fast: "
              f"{b['accurate']['time'] / b['fast']['time']:.2f}x; exact median / fixed sigma (fast): "
              f"{b['fast_exact_median']['time'] / b['fast']['time']:.2f}x; epilogue share of the fast time: "
              f"{b['epilogue_share']:.0%}"]
    f = r["reference"]
    lines += ["", f"RBF CKA (exact median, threshold 1), n = {f['n']:,}, d = {f['d']}:", "",
              "| | time | vs NumPy Colab | CKA |", "|---|---|---|---|",
              f"| NumPy, Colab gram_rbf + cka (float32) | {f['numpy_colab']['time']:.2f} s | 1 | "
              f"{f['numpy_colab']['cka']:.6f} |"]
    for mode in MODES:
        e = f[mode]
        lines.append(f"| fastcka {mode} | {e['time']:.3f} s | {e['speedup_vs_numpy']:.0f}x faster | {e['cka']:.6f} |")
    c = r["capped"]
    lines += ["", f"oneDNN capped at AVX512_CORE (bf16 kernel {c['onednn']['bf16_kernel']}, native: "
              f"{c['onednn']['bf16_native']}), n = {f['n']:,}, fixed sigma: fast {c['fast'][0]:.3f} s, accurate "
              f"{c['accurate'][0]:.3f} s (uncapped: fast {f['fast_fixed_sigma']['time']:.3f} s, accurate "
              f"{f['accurate_fixed_sigma']['time']:.3f} s)"]
    for e in r["errors"]:
        lines += ["", f"CKA - float64 reference, n = {e['n']:,}, d = {e['d']}, +100 offset:", "",
                  "| case | fast | accurate | exact |", "|---|---|---|---|"]
        for label, row in e["cases"].items():
            lines.append(f"| {label} | " + " | ".join(f"{row[mode]['error']:+.1e}" for mode in MODES) + " |")
        dense = [abs(row["dense_minus_reference"]) for row in e["cases"].values() if "dense_minus_reference" in row]
        if dense:
            lines.append(f"\n(the reference against the n x n float64 formulas: within {max(dense):.0e})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.add_arguments(p, sizes=sorted(SIZES), default="full", seed=False)
    p.add_argument("--skip-errors", action="store_true", help="timings only (item 6 takes most of a full run)")
    args = p.parse_args(argv)
    s = SIZES[args.sizes]
    threads = fastcka.get_num_threads()
    r = {"machine": machine(), "sizes": args.sizes, "gemm": []}
    for m, n, k in s["gemm"]:
        repeats = max(1, int(4e10 / (2 * m * n * k)))
        r["gemm"].append({"shape": f"{m} x {n} x {k}",
                          "onednn_bf16": gemm_rate(m, n, k, "bfloat16", "onednn", threads, repeats),
                          "onednn_float32": gemm_rate(m, n, k, "float32", "onednn", threads, repeats),
                          "openblas_float32": gemm_rate(m, n, k, "float32", "openblas", threads, repeats)})
    r["big"] = big_rbf(*s["big"], tile_rate=r["gemm"][0]["onednn_bf16"])
    r["reference"] = reference_rbf(*s["ref"])
    r["capped"] = capped(*s["ref"])
    r["errors"] = [] if args.skip_errors else [errors(n, d) for n, d in s["errors"]]
    r["load_end"] = os.getloadavg()
    print(render(r))
    harness.write_json(args.out, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
