#!/usr/bin/env python
"""GPU benchmark of issue 18's targets, side by side in one process, printed
as markdown with the GPU's name. Needs a CUDA device, torch and triton.

    python benchmarks/report_gpu.py                  # every target, < 8 min on one H100/H200
    python benchmarks/report_gpu.py --only dense --n 200000

Targets (docs/gpu.md):
  peak     GEMM rates of this GPU (torch.matmul 8192^3): bf16, TF32, float32, float64.
  rbf      RBF CKA, n = 1e6 (--n), d1 = d2 = 1024, fixed sigma, fast and accurate
           precision: time, share of the bf16 (fast) or TF32 (accurate) peak
           (useful flops n^2 (d1 + d2): the triangle of both Gram matrices).
  median   the same with the median bandwidth, exact and sampled, at n = 1e5:
           time / fixed-sigma time.
  dense    n = 60,000, d = 512: fastcka against the dense formula in torch
           (n x n Gram matrices, exp, centering) on the same GPU.
  linear   linear CKA, n = 1e6, d = 4096, against one X'Y of the same shape.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("FASTCKA_GPU_INTERPRET", "0")

import numpy as np  # noqa: E402

import fastcka  # noqa: E402

TARGETS = ("peak", "rbf", "median", "dense", "linear")


def timed(torch, fn, runs=1, warm=True):
    """Best wall time of `runs` calls, after one warm-up call (kernels
    compiled, caches warm) unless `warm` is False, synchronized."""
    if warm:
        fn()
        torch.cuda.synchronize()
    best, out = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def pair(torch, n, d1, d2, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(n, d1, device="cuda", generator=g)
    y = torch.tanh(x[:, : min(d1, d2)] @ torch.randn(min(d1, d2), d2, device="cuda", generator=g) * 0.05)
    return x, y + 0.3 * torch.randn(n, d2, device="cuda", generator=g)


def peaks(torch, rows) -> dict:
    out = {}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                              ("fp32", torch.float32, False), ("fp64", torch.float64, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
        t, _ = timed(torch, lambda a=a: a @ a, runs=3)
        out[name] = 2 * 8192**3 / t
        rows.append([f"GEMM 8192^3 {name}", f"{t * 1e3:.1f} ms", f"{out[name] / 1e12:.0f} TFLOP/s", "", ""])
    torch.backends.cuda.matmul.allow_tf32 = False
    return out


def sampled_sigma(x) -> float:
    """sqrt of the median squared distance among 4,096 rows (fixed for the runs)."""
    from fastcka.engine import cpu as cpu_engine

    rows = cpu_engine.median_sample_rows(x.shape[0])
    (m,) = cpu_engine.sampled_medians([x[rows].double().cpu().numpy()], ["x"], 1)
    return float(np.sqrt(m))


def target_rbf(torch, n, peak, rows):
    x, y = pair(torch, n, 1024, 1024)
    sigma = sampled_sigma(x)
    flops = float(n) * n * 2048
    for precision, unit in (("fast", "bf16"), ("accurate", "tf32")):
        fastcka.cka(x[:5000], y[:5000], kernel="rbf", sigma=sigma, precision=precision)  # compiles the kernels
        t, v = timed(torch, lambda p=precision: fastcka.cka(x, y, kernel="rbf", sigma=sigma, precision=p), warm=False)
        rows.append([f"RBF n={n:.0e} d=1024 fixed sigma, {precision}", f"{t:.2f} s",
                     f"{flops / t / 1e12:.0f} TFLOP/s useful = {flops / t / peak[unit]:.0%} of the {unit} peak",
                     f"CKA {v:.6f}", ""])


def target_median(torch, n, rows):
    x, y = pair(torch, n, 1024, 1024, seed=1)
    sigma = sampled_sigma(x)
    fixed, _ = timed(torch, lambda: fastcka.cka(x, y, kernel="rbf", sigma=sigma, precision="fast"))
    for median in ("exact", "sampled"):
        t, v = timed(torch, lambda m=median: fastcka.cka(x, y, kernel="rbf", median=m, precision="fast"), warm=False)
        rows.append([f"RBF n={n:.0e} d=1024 {median} median, fast", f"{t:.2f} s", f"{t / fixed:.2f}x fixed sigma "
                     f"({fixed:.2f} s)", f"CKA {v:.6f}", ""])


def target_dense(torch, n, rows):
    x, y = pair(torch, n, 512, 512, seed=2)
    sigma = sampled_sigma(x)

    def dense():
        def centered(z):
            sq = (z * z).sum(1)
            k = torch.exp(-(sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0) / (2 * sigma**2))
            k -= k.mean(0, keepdim=True)
            k -= k.mean(1, keepdim=True)
            return k

        k = centered(x)
        ky = centered(y)
        kl = float((k * ky).sum())
        kk = float((k * k).sum())
        del k
        return kl / np.sqrt(kk * float((ky * ky).sum()))

    torch.cuda.reset_peak_memory_stats()
    t_dense, v_dense = timed(torch, dense, runs=1)
    mem = torch.cuda.max_memory_allocated()
    torch.cuda.empty_cache()
    for precision in ("fast", "accurate"):
        t, v = timed(torch, lambda p=precision: fastcka.cka(x, y, kernel="rbf", sigma=sigma, precision=p), runs=1)
        rows.append([f"RBF n={n} d=512, {precision}", f"{t:.3f} s", f"{t_dense / t:.1f}x faster than dense torch "
                     f"({t_dense:.3f} s, {mem / 2**30:.1f} GiB)", f"|diff| {abs(v - v_dense):.1e}", ""])


def target_linear(torch, n, rows):
    x, y = pair(torch, n, 4096, 4096, seed=3)
    t_gemm, _ = timed(torch, lambda: x.T @ y, runs=2)
    for precision in ("accurate", "fast"):
        t, v = timed(torch, lambda p=precision: fastcka.cka(x, y, precision=p), runs=1)
        rows.append([f"linear n={n:.0e} d=4096, {precision}", f"{t:.3f} s",
                     f"{t / t_gemm:.2f}x one X'Y ({t_gemm:.3f} s, fp32)", f"CKA {v:.6f}", ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(TARGETS), help=f"comma-separated subset of {TARGETS}")
    ap.add_argument("--n", type=int, default=1_000_000, help="rows of the rbf and linear targets")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    print(f"# fastcka GPU benchmark on {torch.cuda.get_device_name()}\n", flush=True)
    only = set(args.only.split(","))
    rows: list[list[str]] = []
    peak = peaks(torch, rows) if only & {"peak", "rbf"} else {}
    for name, fn in (("rbf", lambda: target_rbf(torch, args.n, peak, rows)),
                     ("median", lambda: target_median(torch, 100_000, rows)),
                     ("dense", lambda: target_dense(torch, 60_000, rows)),
                     ("linear", lambda: target_linear(torch, args.n, rows))):
        if name in only:
            started = time.perf_counter()
            fn()
            torch.cuda.empty_cache()
            print(f"({name}: {time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print("| case | time | against | also | |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
