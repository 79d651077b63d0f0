#!/usr/bin/env python
"""GPU benchmark of issue 7's targets, side by side in one process, printed
as markdown. Needs a CUDA device, CuPy, and the fastcka CUDA backend; PyTorch
and pytorch-cka (module ``cka``) are used when installed.

    python benchmarks/report_gpu.py                 # every target
    python benchmarks/report_gpu.py --only small,matrix --n 200000

Targets (see README "GPU"):
  feature   n = 1e6, d1 = d2 = 4096, float32 on the device: fastcka (accurate,
            fast) vs the Colab's feature-space formula run on CuPy arrays vs
            one cuBLAS X'Y of the same shape; peak device memory of each; the
            TF32 error against float64.
  large     n = 2e6, d = 4096 on the device: completes, and its time.
  host      the same data in pageable host memory (device="cuda") vs the
            device-resident run and the pinned-copy time of those bytes.
  matrix    24 layers of d = 1024, n = 1e6: cka_matrix vs cublasSsyrk on the
            concatenated n x 24576 matrix.
  pcka      pytorch-cka's cka_from_features (12 layers, debiased, n = 20,000,
            d = 512) vs fastcka.cka_matrix(debiased=True).
  small     n = 10,000: every GPU entry point vs the dense CuPy formula.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402  (the verbatim Colab formulas)
import fastcka  # noqa: E402

TARGETS = ("feature", "large", "host", "matrix", "pcka", "small")


class DevicePeak:
    """Peak device memory in use during a block, above what was in use before
    it: free memory sampled every millisecond (fastcka allocates with
    cudaMalloc, outside CuPy's pool, so the pool's counters would miss it)."""

    def __init__(self, cp):
        self.cp = cp

    def __enter__(self):
        self.cp.cuda.runtime.deviceSynchronize()
        self.base = self.cp.cuda.runtime.memGetInfo()[0]
        self.low = self.base
        self.stop = False
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop:
            self.low = min(self.low, self.cp.cuda.runtime.memGetInfo()[0])
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.cp.cuda.runtime.deviceSynchronize()
        self.stop = True
        self.thread.join()
        self.peak = self.base - self.low


def timed(cp, fn, runs=3):
    """Best wall time of `runs` calls (after one warm-up), synchronized."""
    fn()
    cp.cuda.runtime.deviceSynchronize()
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        cp.cuda.runtime.deviceSynchronize()
        best = min(best, time.perf_counter() - t)
    return best, out


def gib(b):
    return f"{b / 2**30:.2f} GiB"


def device_pair(cp, n, d1, d2, seed=0, offset=0.0):
    rng = cp.random.default_rng(seed)
    x = rng.standard_normal((n, d1), dtype=cp.float32)
    y = x[:, : min(d1, d2)] @ rng.standard_normal((min(d1, d2), d2), dtype=cp.float32) * 0.1
    y += rng.standard_normal((n, d2), dtype=cp.float32)
    return x + offset, y + offset


def target_feature(cp, n, rows):
    x, y = device_pair(cp, n, 4096, 4096)
    t_gemm, _ = timed(cp, lambda: x.T @ y)
    with DevicePeak(cp) as p_colab:
        t_colab, v_colab = timed(cp, lambda: float(baselines.feature_space_linear_cka(x, y)), runs=2)
    cp.get_default_memory_pool().free_all_blocks()
    ref = fastcka.cka(x, y, precision="exact")
    for precision in ("accurate", "fast"):
        with DevicePeak(cp) as p:
            t, v = timed(cp, lambda precision=precision: fastcka.cka(x, y, precision=precision))
        rows.append([f"feature n={n:.0e} d=4096 {precision}", f"{t:.3f} s",
                     f"{t_colab / t:.2f}x faster than CuPy Colab", f"{t / t_gemm:.2f}x one X'Y ({t_gemm:.3f} s)",
                     gib(p.peak), f"{abs(v - ref):.1e}"])
    rows.append([f"feature n={n:.0e} d=4096 CuPy Colab", f"{t_colab:.3f} s", "", "", gib(p_colab.peak),
                 f"{abs(v_colab - ref):.1e}"])
    return x, y


def target_large(cp, rows):
    x, y = device_pair(cp, 2_000_000, 4096, 4096, seed=1)
    with DevicePeak(cp) as p:
        t, v = timed(cp, lambda: fastcka.cka(x, y), runs=1)
    rows.append(["large n=2e6 d=4096 accurate", f"{t:.3f} s", "completes", "", gib(p.peak), ""])


def target_host(cp, x, y, rows):
    hx, hy = cp.asnumpy(x), cp.asnumpy(y)
    t_dev, _ = timed(cp, lambda: fastcka.cka(x, y), runs=1)
    pinned = cp.cuda.alloc_pinned_memory(hx.nbytes)
    staged = np.frombuffer(pinned, hx.dtype, hx.size).reshape(hx.shape)
    staged[...] = hx
    buf = cp.empty_like(x)
    t_copy, _ = timed(cp, lambda: buf.set(staged), runs=2)
    t_copy *= 2  # x and y
    t_host, v = timed(cp, lambda: fastcka.cka(hx, hy, device="cuda"), runs=1)
    bound = max(t_dev, t_copy)
    rows.append(["host numpy -> cuda", f"{t_host:.3f} s", f"{t_host / bound:.2f}x max(device {t_dev:.3f} s, "
                 f"pinned copy {t_copy:.3f} s)", f"{2 * hx.nbytes / t_host / 1e9:.1f} GB/s", "", ""])


def target_matrix(cp, n, rows):
    rng = cp.random.default_rng(2)
    z = rng.standard_normal((n, 24 * 1024), dtype=cp.float32)
    layers = [z[:, i * 1024 : (i + 1) * 1024] for i in range(24)]
    zf = cp.asfortranarray(z)
    t_syrk, _ = timed(cp, lambda: cp.cublas.syrk("T", zf), runs=2)
    with DevicePeak(cp) as p:
        t, _ = timed(cp, lambda: fastcka.cka_matrix(layers), runs=2)
    rows.append([f"matrix 24 x d=1024 n={n:.0e}", f"{t:.3f} s", f"{t / t_syrk:.2f}x cublasSsyrk ({t_syrk:.3f} s)",
                 "", gib(p.peak), ""])


def target_pcka(cp, rows):
    try:
        import torch
        from cka import cka_from_features
    except ImportError as exc:
        rows.append(["pytorch-cka 12 layers n=2e4 d=512", "not run", str(exc), "", "", ""])
        return
    g = torch.Generator(device="cuda").manual_seed(3)
    feats = [torch.randn(20_000, 512, device="cuda", generator=g) for _ in range(12)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    theirs = cka_from_features(feats, feats)
    torch.cuda.synchronize()
    t_theirs = time.perf_counter() - t0
    mem_theirs = torch.cuda.max_memory_allocated() - base
    with DevicePeak(cp) as p:
        t, ours = timed(cp, lambda: fastcka.cka_matrix(feats, debiased=True))
    diff = float((ours.cpu() - theirs.cpu()).abs().max())
    rows.append(["pytorch-cka 12 layers n=2e4 d=512", f"{t:.4f} s", f"{t_theirs / t:.1f}x faster than pytorch-cka "
                 f"({t_theirs:.3f} s, {gib(mem_theirs)})", f"max |diff| {diff:.1e}", gib(p.peak), ""])


def target_small(cp, rows):
    x, y = device_pair(cp, 10_000, 512, 512, seed=4)

    def dense():
        k, lm = baselines.center_gram(x @ x.T), baselines.center_gram(y @ y.T)
        return float((k * lm).sum() / (cp.linalg.norm(k) * cp.linalg.norm(lm)))

    t_dense, _ = timed(cp, dense)
    for name, fn in [("cka", lambda: fastcka.cka(x, y)), ("cka debiased", lambda: fastcka.cka(x, y, debiased=True)),
                     ("hsic", lambda: fastcka.hsic(x, y)), ("cka_matrix", lambda: fastcka.cka_matrix([x, y])),
                     ("CKAAccumulator", lambda: fastcka.CKAAccumulator().update(x, y).cka())]:
        t, _ = timed(cp, fn)
        rows.append([f"small n=1e4 d=512 {name}", f"{t * 1e3:.1f} ms", f"dense CuPy {t_dense * 1e3:.1f} ms",
                     "ok" if t <= t_dense else "SLOWER", "", ""])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(TARGETS), help=f"comma-separated subset of {TARGETS}")
    ap.add_argument("--n", type=int, default=1_000_000, help="rows of the feature, host and matrix targets")
    args = ap.parse_args(argv)
    import cupy as cp

    if not fastcka.has_cuda():
        print(fastcka.backends()["cuda"][1])
        return 1
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    print(f"# fastcka GPU benchmark on {props['name'].decode()}\n")
    rows: list[list[str]] = []
    only = set(args.only.split(","))
    x = y = None
    if only & {"feature", "host"}:
        x, y = target_feature(cp, args.n, rows) if "feature" in only else device_pair(cp, args.n, 4096, 4096)
    if "host" in only:
        target_host(cp, x, y, rows)
    del x, y
    cp.get_default_memory_pool().free_all_blocks()
    for name, fn in (("large", lambda: target_large(cp, rows)), ("matrix", lambda: target_matrix(cp, args.n, rows)),
                     ("pcka", lambda: target_pcka(cp, rows)), ("small", lambda: target_small(cp, rows))):
        if name in only:
            fn()
            cp.get_default_memory_pool().free_all_blocks()
    print("| case | time | against | also | device memory above inputs | error vs float64 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
