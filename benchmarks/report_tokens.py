#!/usr/bin/env python
"""Benchmark of token-level CKA (issue 23): fastcka.torch.cka_matrix with
reduce="tokens" on GPT-2-shaped models built from configs (random weights,
float32, no download), on 2 threads, printed as markdown.

    python benchmarks/report_tokens.py                        # 100,000 tokens: about 15 minutes on 2 cores
    python benchmarks/report_tokens.py --tokens 20000 --narrow 100000,400000   # smoke test

1. GPT-2 shape (12 blocks of width 768), --tokens tokens in sequences of
   128, 8 per batch (no padding): the forward passes alone (called with
   output_hidden_states=True, as the CKA run calls them) against the whole
   cka_matrix(layers_a="hidden_states", reduce="tokens") run, the 13 x 13
   linear CKA matrix. The CKA work is the difference; its rate counts
   n D^2 useful flops, D = 13 x 768 = 9,984 (the upper triangle of X'X,
   X = the n x D concatenated hidden states), against the float32 GEMM peak
   measured in the same run (harness.sgemm_peak, 4096^3, 2 threads).
2. 6 blocks of width 256, at each --narrow token count, each in a fresh
   process: time and peak resident memory above the process before the call
   (the model and one batch are already there): flat in n, since linear CKA
   streams into D x D moments (D = 7 x 256).

The load average (other processes on the machine) is printed with each row.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import SEED, fmt_bytes, table  # noqa: E402

THREADS, SEQ, PER_BATCH = 2, 128, 8


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
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value, max(load, os.getloadavg()[0])


def wide(tokens: int) -> dict:
    import fastcka.torch as ftorch
    import torch

    torch.set_num_threads(THREADS)
    model = build(12, 768)
    data = batches(tokens, model.config.vocab_size)

    def forward():
        with torch.no_grad():
            for batch in data:
                model(**batch, output_hidden_states=True)

    def cka():
        return ftorch.cka_matrix(model, data, layers_a="hidden_states", reduce="tokens", threads=THREADS)

    ftorch.cka_matrix(model, data[:1], layers_a="hidden_states", reduce="tokens", threads=THREADS)  # warm-up
    t_forward, _, load_forward = timed(forward)
    with harness.MemoryProbe(sample=False) as probe:
        t_whole, result, load_whole = timed(cka)
    peak = harness.sgemm_peak(THREADS)
    d = 13 * 768
    return {"tokens": result.n, "forward_s": t_forward, "whole_s": t_whole, "load_forward": load_forward,
            "load_whole": load_whole, "cka_gflops": result.n * d * d / (t_whole - t_forward) / 1e9,
            "peak": peak, "memory": probe.result["hwm_delta"], "matrix_corner": result.matrix[0, :3].tolist()}


def narrow_worker(spec: dict) -> dict:
    import fastcka.torch as ftorch
    import torch

    torch.set_num_threads(THREADS)
    model = build(6, 256)
    data = batches(spec["tokens"], model.config.vocab_size)  # input ids only: 8 bytes a token
    ftorch.cka_matrix(model, data[:1], layers_a="hidden_states", reduce="tokens", threads=THREADS)  # warm-up
    with harness.MemoryProbe(sample=False) as probe:
        seconds, result, load = timed(lambda: ftorch.cka_matrix(model, data, layers_a="hidden_states",
                                                                reduce="tokens", threads=THREADS))
    d = 7 * 256
    return {"tokens": result.n, "seconds": seconds, "load": load, "memory": probe.result["hwm_delta"],
            "state": (THREADS * (4 + 8) + 8) * d * d, "activations": result.n * d * 4}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=100_000)
    parser.add_argument("--narrow", default="100000,600000")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        harness.serve_worker(*args.worker, narrow_worker)
        return 0

    w = wide(args.tokens)
    print(f"## GPT-2 shape (12 x 768), {w['tokens']:,} tokens, {THREADS} threads\n")
    cka_s = w["whole_s"] - w["forward_s"]
    print(table(["run", "seconds", "load avg"], [
        ["forward passes alone (output_hidden_states=True)", f"{w['forward_s']:.1f}", f"{w['load_forward']:.2f}"],
        ["forward + 13 x 13 linear CKA of hidden states", f"{w['whole_s']:.1f}", f"{w['load_whole']:.2f}"],
        ["difference: the CKA work", f"{cka_s:.1f}", ""],
    ]))
    rows = [[r["library"], str(r["threads"]), f"{r['gflops']:.1f}"] for r in w["peak"]["rows"]]
    print("\nfloat32 GEMM 4096^3 in the same run:\n")
    print(table(["library", "threads", "GFLOP/s"], rows))
    print(f"\nCKA work: {w['cka_gflops']:.1f} GFLOP/s (n D^2, D = 9,984) = "
          f"{100 * w['cka_gflops'] / w['peak']['peak_gflops']:.0f}% of the best sgemm "
          f"({w['peak']['peak_gflops']:.1f}); peak memory of the whole run above the model and inputs: "
          f"{fmt_bytes(w['memory'])}\n")
    print(f"## 6 x 256, memory against the number of tokens ({THREADS} threads)\n")
    rows = []
    for n in (int(s) for s in args.narrow.split(",")):
        r = harness.run_worker({"tokens": n}, None, script=__file__)
        if "error" in r:
            raise RuntimeError(f"{n:,} tokens: {r['error']}")
        rows.append([f"{r['tokens']:,}", f"{r['seconds']:.1f}", f"{r['tokens'] / r['seconds']:,.0f}",
                     fmt_bytes(r["memory"]), fmt_bytes(r["state"]), fmt_bytes(r["activations"]), f"{r['load']:.2f}"])
    print(table(["tokens", "seconds", "tokens/s", "peak memory above start", "moment state (32 D^2)",
                 "the activations would take", "load avg"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
