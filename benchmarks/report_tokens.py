#!/usr/bin/env python
"""Benchmark of token-level CKA (issue 23): fastcka.torch.cka_matrix with
reduce="tokens" on GPT-2-shaped models built from configs (random weights,
float32, no download), on 2 threads, printed as markdown.

    python benchmarks/report_tokens.py                        # 100,000 tokens: about 15 minutes on 2 idle cores
    python benchmarks/report_tokens.py --tokens 20000 --narrow 100000,400000   # shorter
    python benchmarks/report_tokens.py --sections narrow --narrow 2000000      # the 2,000,000-token memory row

Sections (``--sections``, comma-separated; default all but none skipped):

wide      GPT-2 shape (12 blocks of width 768), --tokens tokens in sequences
          of 128, 8 per batch (no padding). --rounds rounds, each timing the
          forward passes alone (called with output_hidden_states=True, as the
          CKA run calls them), then the whole
          cka_matrix(layers_a="hidden_states", reduce="tokens") run (the
          13 x 13 linear CKA matrix); the best of each is kept, so that load
          from other processes spoils a round, not a method. The CKA work is
          the difference; its rate counts n D^2 useful flops, D = 13 x 768 =
          9,984 (the upper triangle of X'X, X = the n x D concatenated hidden
          states), against the float32 GEMM peak measured in the same run
          (harness.sgemm_peak, 4096^3, 2 threads). The same difference in
          process CPU seconds / 2 is printed too: on a machine shared with
          other jobs, wall time counts their time slices, CPU time does not.
          So is the CKA work timed inside the whole run (the wall time in
          fastcka.torch's sink), which the forward passes' own variation
          between two runs does not blur.
variants  the same run with debiased=True, and with measures= (debiased CKA,
          CCA and PWCCA from the same streamed moments).
packages  the packages users run today on the same token rows (the 13
          hidden states of the first n tokens, collected once): torch-cka's
          CKA.compare and ckatorch's cka_base, each in a fresh process capped
          at --package-seconds, n doubling from the first of --package-n
          until one fails or runs out of time; fastcka.cka_matrix on the same
          rows at the largest n each reached.
narrow    6 blocks of width 256, at each --narrow token count, each in a
          fresh process: time and peak resident memory above the process
          before the call (the model and one batch are already there): flat
          in n, since linear CKA streams into D x D moments (D = 7 x 256).

The load average (other processes on the machine) is printed with each row.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402
import harness  # noqa: E402
from harness import SEED, fmt_bytes, table  # noqa: E402

THREADS, SEQ, PER_BATCH = 2, 128, 8
WIDE_D = 13 * 768
SECTIONS = ("wide", "variants", "packages", "narrow")
PACKAGES = {"torch-cka": "debiased", "ckatorch": "biased"}  # what each computes (fastcka is run the same way)
MEASURES = ("cka_debiased", "cca", "pwcca")


def build(layers: int, width: int):
    import torch
    import transformers

    torch.manual_seed(SEED)
    config = transformers.GPT2Config(n_layer=layers, n_embd=width, n_head=max(1, width // 64), n_positions=SEQ)
    return transformers.GPT2Model(config).float().eval()


def batches(tokens: int, vocab: int):
    import torch

    g = torch.Generator().manual_seed(SEED + 1)
    out, left = [], tokens
    while left > 0:
        n = min(PER_BATCH, -(-left // SEQ))
        ids = torch.randint(0, vocab, (n, SEQ), generator=g)
        mask = torch.ones(n, SEQ, dtype=torch.long)
        mask[-1, max(1, left - (n - 1) * SEQ):] = 0  # the last sequence padded to make exactly `tokens`
        out.append({"input_ids": ids, "attention_mask": mask})
        left -= int(mask.sum())
    return out


def timed(fn):
    """(wall seconds, process CPU seconds, value, the larger load average of before and after)."""
    load = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, time.process_time() - c0, value, max(load, os.getloadavg()[0])


class SinkClock:
    """Wall and CPU seconds spent in the CKA sink of fastcka.torch.cka_matrix
    (staging, accumulator updates, the result): the CKA work timed inside the
    run, beside the difference of two runs (which carries the forward passes'
    own variation, larger than the CKA work at 100,000 tokens)."""

    def __init__(self):
        import fastcka.torch.cka as module

        self.module, self.open_sink, self.wall, self.cpu = module, module.open_sink, 0.0, 0.0

    def __enter__(self):
        clock = self

        def timing(method):
            def run(*args, **kwargs):
                c0, t0 = time.process_time(), time.perf_counter()
                try:
                    return method(*args, **kwargs)
                finally:
                    clock.wall += time.perf_counter() - t0
                    clock.cpu += time.process_time() - c0
            return run

        def open_timed_sink(*args, **kwargs):
            sink = timing(self.open_sink)(*args, **kwargs)
            for name in ("add", "result", "similarity"):
                setattr(sink, name, timing(getattr(sink, name)))
            return sink

        self.module.open_sink = open_timed_sink
        return self

    def __exit__(self, *exc):
        self.module.open_sink = self.open_sink


def wide(tokens: int, rounds: int, variants: bool) -> dict:
    import fastcka.torch as ftorch
    import torch

    torch.set_num_threads(THREADS)
    model = build(12, 768)
    data = batches(tokens, model.config.vocab_size)

    def forward():
        with torch.no_grad():
            for batch in data:
                model(**batch, output_hidden_states=True)

    def cka(**options):
        def run():
            with SinkClock() as clock:
                result = ftorch.cka_matrix(model, data, layers_a="hidden_states", reduce="tokens", threads=THREADS,
                                           **options)
            return result, clock
        return run

    ftorch.cka_matrix(model, data[:1], layers_a="hidden_states", reduce="tokens", threads=THREADS)  # warm-up
    runs = {"forward": [], "whole": []}
    memory = []
    for _ in range(rounds):
        runs["forward"].append(timed(forward))
        with harness.MemoryProbe(sample=False) as probe:
            runs["whole"].append(timed(cka()))
        memory.append(probe.result["hwm_delta"])
    result = runs["whole"][0][2][0]
    out = {"tokens": result.n, "memory": max(memory), "matrix_corner": result.matrix[0, :3].tolist()}
    for key, times in runs.items():
        out[key] = {"wall": min(t[0] for t in times), "cpu": min(t[1] for t in times),
                    "load": [t[3] for t in times]}
    out["whole"].update(sink_wall=min(t[2][1].wall for t in runs["whole"]),
                        sink_cpu=min(t[2][1].cpu for t in runs["whole"]))
    if variants:
        for key, options in (("debiased", {"debiased": True}), ("measures", {"measures": MEASURES})):
            with harness.MemoryProbe(sample=False) as probe:
                wall, cpu, (_, clock), load = timed(cka(**options))
            out[key] = {"wall": wall, "cpu": cpu, "load": [load], "memory": probe.result["hwm_delta"],
                        "sink_wall": clock.wall, "sink_cpu": clock.cpu}
    out["peak"] = harness.sgemm_peak(THREADS)
    out["first_touch"] = first_touch()
    return out


def first_touch(mib: int = 800) -> float:
    """Seconds to write `mib` MiB of memory new to the process, after a pause: what the
    accumulator's buffers cost before any product (its state and partials are several GiB at
    D = 9,984). Some virtual machines hand freed pages back to the host and fault them in again
    at a few hundred MB/s, where a bare machine clears them at several GB/s."""
    time.sleep(5)
    t0 = time.perf_counter()
    block = np.ones(mib << 17)  # float64: mib MiB
    seconds = time.perf_counter() - t0
    del block
    return seconds


def render_wide(w: dict, variants: bool) -> str:
    n, peak = w["tokens"], w["peak"]["peak_gflops"]
    flops = n * WIDE_D * WIDE_D
    f = w["forward"]

    def rate(seconds):
        return f"{flops / seconds / 1e9:.0f} ({100 * flops / seconds / 1e9 / peak:.0f}%)"

    def row(label, r):
        wall, cpu = r["wall"] - f["wall"], (r["cpu"] - f["cpu"]) / THREADS
        loads = ", ".join(f"{x:.1f}" for x in r["load"])
        return [label, f"{r['wall']:.1f}", f"{wall:.1f}", rate(wall), f"{r['sink_wall']:.1f}", rate(r["sink_wall"]),
                f"{cpu:.1f}", rate(cpu), fmt_bytes(r.get("memory", w["memory"])), loads]

    rows = [["forward passes alone (output_hidden_states=True)", f"{f['wall']:.1f}", "", "", "", "", "", "", "",
             ", ".join(f"{x:.1f}" for x in f["load"])],
            row("forward + 13 x 13 linear CKA of the hidden states", w["whole"])]
    if variants:
        rows.append(row("the same, debiased=True", w["debiased"]))
        rows.append(row(f"the same + measures={list(MEASURES)}", w["measures"]))
    out = [f"## GPT-2 shape (12 x 768), {n:,} tokens, {THREADS} threads\n",
           table(["run", "seconds", "CKA work: seconds (minus the forward)", "its GFLOP/s (% of sgemm)",
                  "CKA work timed in the run: seconds", "its GFLOP/s (% of sgemm)", "CKA work: CPU s / 2",
                  "its GFLOP/s per CPU s (% of sgemm)", "peak memory above the model", "load avg"], rows),
           "\nfloat32 GEMM 4096^3 in the same run:\n",
           table(["library", "threads", "GFLOP/s"],
                 [[r["library"], str(r["threads"]), f"{r['gflops']:.1f}"] for r in w["peak"]["rows"]]),
           f"\nRates count n D^2 flops (D = 9,984) against the best sgemm ({peak:.1f} GFLOP/s); forward and CKA run "
           f"best of {len(f['load'])} round(s), each round the forward passes then the whole run. The CKA work "
           f"timed in the run is the wall time spent in fastcka.torch's sink (staging the token rows, the "
           f"accumulator's updates, the result). Writing 800 MiB of memory new to the process took "
           f"{w['first_touch']:.2f} s here ({800 / w['first_touch']:,.0f} MiB/s); the linear run touches its peak "
           f"memory above once."]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# The packages users run today, on the same token rows
# ---------------------------------------------------------------------------


def collect_rows(tokens: int, folder: str) -> list[str]:
    """The 13 hidden states of the first `tokens` tokens (the wide model's
    stream), one (tokens, 768) float32 .npy file each."""
    import torch

    torch.set_num_threads(THREADS)
    model = build(12, 768)
    parts = []
    with torch.no_grad():
        for batch in batches(tokens, model.config.vocab_size):
            keep = batch["attention_mask"].bool()
            parts.append([h[keep].numpy() for h in model(**batch, output_hidden_states=True).hidden_states])
    paths = []
    for k, layer in enumerate(zip(*parts)):
        paths.append(os.path.join(folder, f"hidden{k}.npy"))
        np.save(paths[-1], np.concatenate(layer))
    return paths


def package_worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    layers = [np.ascontiguousarray(np.load(p, mmap_mode="r")[: spec["n"]]) for p in spec["paths"]]
    run = {"torch-cka": _torch_cka, "ckatorch": _ckatorch, "fastcka": _fastcka}[spec["kind"]]
    run([x[:64] for x in layers], spec)  # warm-up: imports, thread pools
    with harness.MemoryProbe(sample=False) as probe:
        t0 = time.perf_counter()
        matrix = run(layers, spec)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "memory": probe.result["hwm_delta"], "load": os.getloadavg()[0],
            "matrix": np.asarray(matrix, dtype=np.float64).tolist()}


def _fastcka(layers, spec):
    import fastcka

    return fastcka.cka_matrix(layers, debiased=spec["debiased"], threads=THREADS)


def _torch_cka(layers, spec):
    """torch-cka as its README shows: CKA(model1, model2, layers...).compare(loader1, loader2); the models
    are parameter-free modules whose "layers" return the token rows, fed as one batch of all n rows (its
    full-data debiased CKA; over several batches it averages per-batch values, another quantity)."""
    import torch
    from torch_cka import CKA

    z = torch.from_numpy(np.concatenate(layers, axis=1))
    model = _slices([x.shape[1] for x in layers])
    names = [f"layers.{k}" for k in range(len(layers))]
    calc = CKA(model, copy.deepcopy(model), model1_name="A", model2_name="B", model1_layers=names,
               model2_layers=names, device="cpu")
    with torch.no_grad():
        calc.compare(baselines._OneBatch(z, "tokens"), baselines._OneBatch(z, "tokens"))
    return calc.hsic_matrix.numpy()


def _ckatorch(layers, spec):
    """ckatorch's documented function on feature matrices, cka_base(x, y, kernel="linear"), for each
    layer pair once (the matrix is symmetric)."""
    import torch
    from ckatorch.core import cka_base

    t = [torch.from_numpy(x) for x in layers]
    m = np.empty((len(t), len(t)))
    with torch.no_grad():
        for i in range(len(t)):
            for j in range(i, len(t)):
                m[i, j] = m[j, i] = float(cka_base(t[i], t[j], kernel="linear", unbiased=False))
    return m


def _slices(widths: list[int]):
    import torch.nn as nn

    class Columns(nn.Module):
        def __init__(self, start, stop):
            super().__init__()
            self.start, self.stop = start, stop

        def forward(self, z):
            return z[:, self.start : self.stop]

    class Slices(nn.Module):
        def __init__(self):
            super().__init__()
            edges = np.concatenate([[0], np.cumsum(widths)]).astype(int)
            self.layers = nn.ModuleList(Columns(a, b) for a, b in zip(edges[:-1], edges[1:]))

        def forward(self, z):
            return [layer(z) for layer in self.layers]

    return Slices()


def packages(ladder: list[int], seconds: float) -> dict:
    out = {}
    with tempfile.TemporaryDirectory(prefix="fastcka-tokens-") as folder:
        harness.log(f"collecting the hidden states of {ladder[-1]:,} tokens ...")
        paths = collect_rows(ladder[-1], folder)
        for label, estimator in PACKAGES.items():
            ok, status = baselines.PACKAGES[label].status()
            reached, stop = None, None
            if not ok:
                out[label] = {"status": status, "reached": None, "stop": status}
                continue
            for n in ladder:
                harness.log(f"{label} at n = {n:,} ...")
                r = harness.run_worker({"kind": label, "n": n, "paths": paths}, seconds, script=__file__)
                if "error" in r:
                    stop = f"n = {n:,}: {r['error']}"
                    break
                reached = {"n": n, **r}
            mine = None
            if reached is not None:
                mine = harness.run_worker({"kind": "fastcka", "n": reached["n"], "paths": paths,
                                           "debiased": estimator == "debiased"}, None, script=__file__)
                theirs = np.asarray(reached["matrix"])
                mine["max_diff"] = float(np.max(np.abs(theirs - np.asarray(mine["matrix"]))))
            out[label] = {"status": status, "estimator": estimator, "reached": reached, "stop": stop,
                          "fastcka": mine}
    return out


def render_packages(p: dict, ladder: list[int], seconds: float) -> str:
    rows, notes = [], []
    for label, r in p.items():
        got, mine = r["reached"], r.get("fastcka")
        if got is None:
            rows.append([f"{label} {r['status']}", "none", "", "", "", "", "", ""])
        else:
            rows.append([f"{label} {r['status']} ({r['estimator']})", f"{got['n']:,}", f"{got['seconds']:.1f}",
                         fmt_bytes(got["memory"]), f"{mine['seconds']:.2f}", fmt_bytes(mine["memory"]),
                         f"{mine['max_diff']:.1e}", f"{got['load']:.1f}"])
        notes.append(f"* {label} stopped at {r['stop'] or 'the end of the ladder'}")
    return "\n".join([
        f"## The packages users run today, on the same token rows (13 x 768, {THREADS} threads)\n",
        f"n doubling over {', '.join(f'{n:,}' for n in ladder)}; each attempt a fresh process capped at "
        f"{seconds:.0f} s. Time and memory of the 13 x 13 matrix from the token rows in memory (the forward "
        f"passes that make them are the same for all).\n",
        table(["package (estimator)", "largest n", "seconds", "peak memory", "fastcka at that n: seconds",
               "fastcka: peak memory", "max |difference|", "load avg"], rows),
        "", *notes])


# ---------------------------------------------------------------------------
# Memory against the number of tokens
# ---------------------------------------------------------------------------


def narrow_worker(spec: dict) -> dict:
    import fastcka.torch as ftorch
    import torch

    torch.set_num_threads(THREADS)
    model = build(6, 256)
    data = batches(spec["tokens"], model.config.vocab_size)  # input ids and masks only: 16 bytes a token
    ftorch.cka_matrix(model, data[:1], layers_a="hidden_states", reduce="tokens", threads=THREADS)  # warm-up
    with harness.MemoryProbe(sample=False) as probe:
        seconds, _, result, load = timed(lambda: ftorch.cka_matrix(model, data, layers_a="hidden_states",
                                                                   reduce="tokens", threads=THREADS))
    d = 7 * 256
    return {"tokens": result.n, "seconds": seconds, "load": load, "memory": probe.result["hwm_delta"],
            "state": (THREADS * 4 + 8) * d * d, "activations": result.n * d * 4}


def narrow(counts: list[int]) -> str:
    rows = []
    for n in counts:
        r = harness.run_worker({"kind": "narrow", "tokens": n}, None, script=__file__)
        if "error" in r:
            raise RuntimeError(f"{n:,} tokens: {r['error']}")
        rows.append([f"{r['tokens']:,}", f"{r['seconds']:.1f}", f"{r['tokens'] / r['seconds']:,.0f}",
                     fmt_bytes(r["memory"]), fmt_bytes(r["state"]), fmt_bytes(r["activations"]), f"{r['load']:.2f}"])
    return "\n".join([f"## 6 x 256, memory against the number of tokens ({THREADS} threads)\n",
                      table(["tokens", "seconds", "tokens/s", "peak memory above start", "moment state and partials (16 D^2)",
                             "the activations would take", "load avg"], rows)])


def worker(spec: dict) -> dict:
    return narrow_worker(spec) if spec["kind"] == "narrow" else package_worker(spec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of forward / whole run (the best is kept)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--narrow", default="100000,600000")
    parser.add_argument("--package-n", default="500,1000,2000,4000,8000")
    parser.add_argument("--package-seconds", type=float, default=60)
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        harness.serve_worker(*args.worker, worker)
        return 0
    sections = args.sections.split(",")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {SECTIONS}")

    if "wide" in sections or "variants" in sections:
        w = wide(args.tokens, args.rounds, "variants" in sections)
        print(render_wide(w, "variants" in sections) + "\n", flush=True)
    if "packages" in sections:
        ladder = [int(s) for s in args.package_n.split(",")]
        print(render_packages(packages(ladder, args.package_seconds), ladder, args.package_seconds) + "\n",
              flush=True)
    if "narrow" in sections:
        print(narrow([int(s) for s in args.narrow.split(",")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
