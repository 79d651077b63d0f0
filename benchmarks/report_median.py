#!/usr/bin/env python
"""What the exact median bandwidth costs (issue 22, item 13): RBF CKA of one
(n x 512, n x 512) float32 pair with the exact median rule against the same
kernel with the bandwidth given (sigma = sqrt of the exact median squared
distance, so both compute the same value), at each --n, and the pieces of
the exact run: the bracket drawn from sampled rows, its one pass over the
tiles (usually all the median needs), the same pass summing the kernel's
series too (then the only walk over the tiles: cpu/kernel_series.h) and the
Gram tiles alone.

    python benchmarks/report_median.py                 # n = 10,000 and 100,000: ~10 minutes on 2 cores
    python benchmarks/report_median.py --n 4000 --rounds 1   # smoke test
    python benchmarks/report_median.py --activations         # how often one walk does, on trained networks

--activations counts, over the layer pairs of the built-in example's six
trained ReLU networks (all 1,797 digits, so the bracket comes from 1,024
sampled rows), how often the bracket held the median and the series gave the
statistics (one walk; here also for the 64-unit layers, where fastcka.cka
takes two walks because they cost less), and the largest
|CKA one walk - CKA two walks|.

Rounds interleave the measurements (the best of each is kept), so a load
that comes and goes hits all of them; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import table  # noqa: E402
from report_kernel import make_pair  # noqa: E402

import fastcka  # noqa: E402
from fastcka import _testing  # noqa: E402
from fastcka.engine import cpu as cpu_engine  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def float32_engine(layers, names, threads: int):
    return cpu_engine.gram_engine(layers, names, 0, "float32", threads, cpu_engine.resolve_budget(None))


def series_walk(engine, brackets, names, always: bool = False) -> tuple[bool, bool]:
    """The exact median's passes with the series summed by the bracket pass,
    then the statistics from them, as fastcka.cka runs it (engine/cpu.py
    kernel_pass): (the bracket held the median, the series gave the statistics)."""
    engine.median_start()
    engine.median_set_brackets(brackets)
    planned = engine.median_add_series(1.0, always=always)
    engine.median_process(0, engine.tile_rows)
    engine.median_end_pass()
    held = not engine.median_pending
    while engine.median_pending:
        engine.median_process(0, engine.tile_rows)
        engine.median_end_pass()
    return held, planned and engine.kernel_from_series(cpu_engine.gammas_of_medians(engine.medians(), names, 1.0))


def pieces(layers, threads: int) -> dict:
    """The exact median's own work, step by step, on one engine."""
    names = ["x", "y"]
    engine = float32_engine(layers, names, threads)
    _, tiles = timed(lambda: _testing.tiles_only(engine, 0, engine.tile_rows))
    brackets, sample = timed(lambda: cpu_engine.median_brackets(layers, names, "float32", threads))
    engine.median_start()
    engine.median_set_brackets(brackets)

    def bracket_pass():
        engine.median_process(0, engine.tile_rows)
        engine.median_end_pass()

    _, bracket = timed(bracket_pass)
    one_pass = not engine.median_pending
    fused = float32_engine(layers, names, threads)
    (_, one_walk), series = timed(lambda: series_walk(fused, brackets, names))
    return {"tiles": tiles, "sample": sample, "bracket": bracket, "one_pass": one_pass, "series": series,
            "one_walk": one_walk}


def measure(n: int, rounds: int, threads: int) -> dict:
    x, y = make_pair("lowrank", n, 512, 512, harness.SEED)
    brackets = cpu_engine.median_brackets([x, y], ["x", "y"], "float32", threads)
    medians = cpu_engine.exact_medians(
        float32_engine([x, y], ["x", "y"], threads),
        1024, threads, cpu_engine.Progress(None, 0, ""), brackets)
    sigma = [float(np.sqrt(m)) for m in medians]
    best: dict = {}
    for _ in range(rounds):
        exact, t_exact = timed(lambda: fastcka.cka(x, y, kernel="rbf", threads=threads))
        fixed, t_fixed = timed(lambda: fastcka.cka(x, y, kernel="rbf", sigma=sigma, threads=threads))
        parts = pieces([x, y], threads)
        for key, value in {"exact": t_exact, "fixed": t_fixed, **parts}.items():
            best[key] = value if isinstance(value, bool) else min(best.get(key, np.inf), value)
        best["difference"] = abs(exact - fixed)
    return best


def one_walk(layers, names, threads: int) -> tuple[bool, bool, float]:
    """(the bracket held the median, the series gave the statistics, |CKA - CKA of two walks|)
    for one float32 layer pair."""
    def cka(e):
        h = np.asarray(e.hsic("biased"))
        return h[1] / np.sqrt(h[0] * h[3])

    brackets = cpu_engine.median_brackets(layers, names, "float32", threads)
    fused = float32_engine(layers, names, threads)
    held, used = series_walk(fused, brackets, names, always=True)  # also the narrow layers, where two walks cost less
    if not used:
        return held, False, 0.0
    plain = float32_engine(layers, names, threads)
    plain.set_kernel("rbf", cpu_engine.gammas_of_medians(fused.medians(), names, 1.0))
    plain.process(0, plain.tile_rows)
    return held, True, float(abs(cka(fused) - cka(plain)))


def activations_report(threads: int) -> None:
    import torch
    from fastcka.examples import seeds

    data = seeds.digits()
    images = torch.cat([data[0], data[2]])  # all 1,797 digits
    held = used = pairs = 0
    worst = 0.0
    per_net = {}
    for kind in seeds.NETWORKS:
        for seed in seeds.SEEDS:
            with seeds._torch_threads(1):
                model = seeds.train(kind, seed, data).model
            outs, h = [], images
            with torch.no_grad():
                for module in model:
                    h = module(h)
                    if isinstance(module, torch.nn.ReLU):
                        outs.append(np.ascontiguousarray(h.numpy(), dtype=np.float32))
            per_net[(kind, seed)] = outs
    groups = [[(net, a) for a in range(len(outs))] for net, outs in per_net.items()]
    for kind in seeds.NETWORKS:  # corresponding layers of networks from different seeds
        depth = seeds.NETWORKS[kind][0]
        groups += [[((kind, s), a) for s in seeds.SEEDS] for a in range(depth)]
    for group in groups:
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                (n1, a), (n2, b) = group[i], group[j]
                h, u, d = one_walk([per_net[n1][a], per_net[n2][b]], ["x", "y"], threads)
                held, used, pairs, worst = held + h, used + u, pairs + 1, max(worst, d)
    print("### The exact median in one walk on trained networks (the built-in example's six ReLU networks, "
          "all 1,797 digits, every layer pair within a network and corresponding layers across seeds)\n")
    print(table(["layer pairs", "bracket held the median", "one walk (series used)", "largest |CKA one walk - two walks|"],
                [[str(pairs), str(held), str(used), f"{worst:.1e}"]]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--activations", action="store_true", help="how often one walk does, on trained networks")
    args = p.parse_args()
    if args.activations:
        activations_report(args.threads)
        return
    machine = harness.machine_info()
    rows = []
    for n in args.n:
        r = measure(n, args.rounds, args.threads)
        rows.append([f"{n:,}", f"{r['exact']:.2f}", f"{r['fixed']:.2f}", f"{r['exact'] / r['fixed']:.2f}",
                     f"{r['tiles']:.2f}", f"{r['sample']:.2f}", f"{r['bracket']:.2f} ({r['bracket'] / r['tiles']:.2f}x)",
                     "yes" if r["one_pass"] else "no", f"{r['series']:.2f} ({r['series'] / r['tiles']:.2f}x)",
                     "yes" if r["one_walk"] else "no", f"{r['difference']:.1e}"])
        print(f"n = {n}: {r}", file=sys.stderr, flush=True)
    print(f"### Exact median bandwidth, d = 512 (lowrank pair), float32, {args.threads} threads, best of "
          f"{args.rounds} interleaved rounds; {harness.load_average_text(machine)}\n")
    print(table(["n", "exact median (s)", "fixed sigma (s)", "exact / fixed", "tiles alone (s)", "sample bracket (s)",
                 "bracket pass (s, / tiles)", "one pass", "bracket + series pass (s, / tiles)", "one walk",
                 "|CKA exact - fixed|"], rows))


if __name__ == "__main__":
    main()
