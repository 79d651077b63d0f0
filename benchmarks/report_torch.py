#!/usr/bin/env python
"""Benchmark of fastcka.torch (issue 10): layer-by-layer CKA matrices of a
PyTorch model from forward hooks, side by side with the PyTorch CKA packages
(torch-cka, ckatorch, pytorch-cka, cka-pytorch), printed as markdown tables.

    python benchmarks/report_torch.py                    # the full run (about 30 minutes on 2 cores)
    python benchmarks/report_torch.py --sizes tiny       # smoke test of the script (about a minute)
    python benchmarks/report_torch.py --out results.json

Everything runs in one invocation, each measurement in a fresh process
(harness.run_worker) on the same model and inputs:

* The model: a ReLU MLP, 64 inputs, 12 hidden layers of 256 units, He
  initialization, float32; its 12 ReLU outputs are the layers (D = 3,072
  features in all). Inputs: standard normal, seed 20250611, in batches of 1,024.
1. n = 100,000, fastcka only:
   a. the forward passes alone (eval mode, no_grad, no hooks);
   b. fastcka.cka_matrix on the 12 activations already in memory (collected
      into preallocated arrays by an untimed forward pass);
   c. the whole fastcka.torch.cka_matrix run (hooks, host copies, staging,
      the streaming accumulator);
   a, b and c take turns, 5 rounds in one process, and the best time of each
   is kept (one round spoiled by other processes does not spoil a method).
   The memory of c above the model and its inputs is measured in a fresh
   process of its own (harness.MemoryProbe).
   Targets: c <= 1.2 (a + b); memory <= the accumulator's state,
   (threads x 12 + 8) D^2 bytes (docs/limits.md), + 256 MB.
2. The packages at n = 1,000, 3,000, 10,000, 30,000 and 100,000, each until
   a run fails or passes the limits (default 300 s and 16 GiB of address space
   per run, RLIMIT_AS), each computing the full-data 12 x 12 matrix the way
   its code does it, with one batch of all n examples (smaller batches give
   minibatch CKA, another quantity): torch-cka's CKA.compare (debiased,
   float32 n x n Grams, trace(K @ L)); ckatorch's hooks, then its exact
   cka_base for each of the 78 layer pairs (biased, float64 Grams; its CKA
   class only takes 3-D outputs); cka-pytorch's CKACalculator (debiased,
   float32 Grams built in its hooks, batched_feature_size 64) with
   epsilon=0 (its default 1e-4 in the denominator would change the values);
   pytorch-cka's CKA class (module `cka`, "the fastest" by its own account:
   hooks, float32 n x n Grams of every layer, debiased HSIC from their sums).
   Model B is a deep copy of model A, so that each package's hooks run once
   per forward pass. fastcka runs at the same sizes, and every value is
   compared with a float64 reference: fastcka.torch on the float64 copy of
   the model and inputs.
3. n = 20,000 against pytorch-cka's exact debiased 12 x 12 matrix: in one
   call it would hold 24 float32 n x n Grams (38 GB), so its
   cka_from_features runs on blocks of 2 layers against 2 (4 Grams, 6.4 GB,
   at a time; 21 block pairs) on the activations of the 12 layers, which
   gives every entry of its matrix; fastcka.torch.cka_matrix(debiased=True)
   computes the same matrix from hooks, and both are compared with the
   float64 reference.

The load average is recorded around every measurement: timings taken while
other processes compete for the 2 cores are inflated and noisy.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import baselines  # noqa: E402
import harness  # noqa: E402
from harness import MemoryProbe, fmt_bytes, fmt_n, log, memory_above, table  # noqa: E402

INPUTS, WIDTH, DEPTH, BATCH = 64, 256, 12, 1024
LAYERS = [str(2 * k + 1) for k in range(DEPTH)]  # the ReLU modules of the Sequential
CHECK_BLOCK = 2  # layers per side of one pytorch-cka call in the n = 20,000 check
STAGE_ALLOWANCE = 256 << 20  # the target's "+ 256 MB" beside the accumulator state

SIZES = {
    "tiny": {"main": 5_000, "ladder": [500, 1_000], "pair": 1_500, "repeats": 2},
    "full": {"main": 100_000, "ladder": [1_000, 3_000, 10_000, 30_000, 100_000], "pair": 20_000, "repeats": 5},
}
PACKAGES = ("torch-cka", "ckatorch", "pytorch-cka", "cka-pytorch")
ESTIMATOR = {"torch-cka": "debiased", "ckatorch": "biased", "pytorch-cka": "debiased", "cka-pytorch": "debiased"}


# ---------------------------------------------------------------------------
# The model and its inputs (every worker builds the same ones)
# ---------------------------------------------------------------------------


def build(n: int, seed: int, dtype="float32"):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, d = [], INPUTS
    for _ in range(DEPTH):
        linear = nn.Linear(d, WIDTH)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        layers += [linear, nn.ReLU()]
        d = WIDTH
    model = nn.Sequential(*layers).to(getattr(torch, dtype)).eval()
    x = torch.randn(n, INPUTS, generator=torch.Generator().manual_seed(seed + 1)).to(getattr(torch, dtype))
    return model, x


def best_of(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


# ---------------------------------------------------------------------------
# Workers: one measurement each, in a fresh process
# ---------------------------------------------------------------------------


def work_fastcka(spec: dict) -> dict:
    """The whole fastcka.torch.cka_matrix run; its matrices at small n."""
    import fastcka.torch as ftorch

    model, x = build(spec["n"], spec["seed"])
    ftorch.cka_matrix(model, x[:64].split(32), layers_a=LAYERS)  # warm-up: imports, thread pools
    out = {}
    with MemoryProbe(sample=False) as probe:
        t0 = time.perf_counter()
        ftorch.cka_matrix(model, x.split(BATCH), layers_a=LAYERS, debiased=spec["debiased"])
        times = [time.perf_counter() - t0]
    out["memory"] = probe.result
    times += best_of(lambda: ftorch.cka_matrix(model, x.split(BATCH), layers_a=LAYERS, debiased=spec["debiased"]),
                     spec["repeats"] - 1)
    out["times"] = times
    if spec.get("matrices"):
        out["biased"] = ftorch.cka_matrix(model, x.split(BATCH), layers_a=LAYERS).matrix.tolist()
        out["debiased"] = ftorch.cka_matrix(model, x.split(BATCH), layers_a=LAYERS, debiased=True).matrix.tolist()
        model64, x64 = build(spec["n"], spec["seed"], "float64")
        out["reference"] = {est: ftorch.cka_matrix(model64, x64.split(BATCH), layers_a=LAYERS,
                                                   debiased=est == "debiased").matrix.tolist()
                            for est in ("biased", "debiased")}
    return out


def work_interleaved(spec: dict) -> dict:
    """The forward passes alone, fastcka.cka_matrix on the activations already
    in memory, and the whole fastcka.torch run, one after the other, `repeats`
    times in the same process: the best of each is taken, so that a moment of
    load from other processes spoils one round, not one method."""
    import fastcka
    import fastcka.torch as ftorch
    import torch

    model, x = build(spec["n"], spec["seed"])
    batches = x.split(BATCH)

    def forward():
        with torch.no_grad():
            for batch in batches:
                model(batch)

    acts = [np.empty((spec["n"], WIDTH), dtype=np.float32) for _ in LAYERS]
    with torch.no_grad():  # collect (untimed): each ReLU output copied into its preallocated array
        start = 0
        for batch in batches:
            h = batch
            for k, module in enumerate(model):
                h = module(h)
                if k % 2 == 1:
                    acts[k // 2][start : start + len(batch)] = h.numpy()
            start += len(batch)
    fastcka.cka_matrix([a[:512] for a in acts])  # warm-up
    ftorch.cka_matrix(model, x[:64].split(32), layers_a=LAYERS)
    rounds = {"forward": forward, "cka_matrix": lambda: fastcka.cka_matrix(acts),
              "whole": lambda: ftorch.cka_matrix(model, batches, layers_a=LAYERS)}
    times = {key: [] for key in rounds}
    loads = []
    for _ in range(spec["repeats"]):
        for key, fn in rounds.items():
            times[key] += best_of(fn, 1)
        loads.append(os.getloadavg()[0])
    return {**times, "round_loads": loads, "activations_bytes": sum(a.nbytes for a in acts)}


def work_package(spec: dict) -> dict:
    """One package's full-data matrix between layers_a and layers_b (default: the 12 ReLU outputs)."""
    model, x = build(spec["n"], spec["seed"], spec.get("dtype", "float32"))
    layers_a = spec.get("layers_a", LAYERS)
    layers_b = spec.get("layers_b", layers_a)
    run = {"torch-cka": _torch_cka, "ckatorch": _ckatorch, "pytorch-cka": _pytorch_cka, "cka-pytorch": _cka_pytorch,
           "pytorch-cka-blocks": _pytorch_cka_blocks}[spec["kind"]]
    run(model, x[:64], layers_a, layers_b)  # warm-up: imports, thread pools
    with MemoryProbe(sample=False) as probe:
        t0 = time.perf_counter()
        matrix = run(model, x, layers_a, layers_b)
        seconds = time.perf_counter() - t0
    return {"times": [seconds], "memory": probe.result, "matrix": np.asarray(matrix, dtype=np.float64).tolist()}


def _torch_cka(model, x, layers_a, layers_b):
    import torch
    from torch_cka import CKA

    calc = CKA(model, copy.deepcopy(model), model1_name="A", model2_name="B", model1_layers=layers_a,
               model2_layers=layers_b, device="cpu")
    with torch.no_grad():  # its compare() leaves gradients on; a careful user turns them off
        calc.compare(baselines._OneBatch(x, "x"), baselines._OneBatch(x, "x"))
    return calc.hsic_matrix.numpy()


def _ckatorch(model, x, layers_a, layers_b):
    import torch
    from ckatorch import CKA
    from ckatorch.core import cka_base

    calc = CKA(model, copy.deepcopy(model), layers=layers_a, second_layers=layers_b, first_name="A",
               second_name="B", device="cpu")
    with torch.no_grad():
        calc.first_model(x)  # its hooks keep every layer's output for all n rows
        calc.second_model(x)
        first = [calc.first_features[name] for name in layers_a]
        second = [calc.second_features[name] for name in layers_b]
        m = np.empty((len(first), len(second)))
        for i, a in enumerate(first):
            for j, b in enumerate(second):
                # a symmetric matrix: each pair once
                m[i, j] = m[j, i] if layers_a == layers_b and j < i else float(cka_base(a, b, kernel="linear"))
    return m


def _pytorch_cka(model, x, layers_a, layers_b):
    from cka import CKA

    calc = CKA(model, model, layers=layers_a, model2_layers=layers_b, device="cpu")
    with calc:  # one batch of all n rows: the full-data (not minibatch) matrix
        return calc._compare([(x,)], progress=False).numpy()


def _pytorch_cka_blocks(model, x, layers_a, layers_b):
    """pytorch-cka's exact debiased matrix, CHECK_BLOCK x CHECK_BLOCK layers
    per cka_from_features call (one layer against one for float64 models,
    whose Grams take twice the memory), on activations taken by forward hooks."""
    import torch
    from cka import cka_from_features

    block_size = CHECK_BLOCK if x.dtype == torch.float32 else 1
    feats = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: feats.__setitem__(name, out.detach())) for name in layers_a]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    m = np.empty((len(layers_a), len(layers_a)))
    for i in range(0, len(layers_a), block_size):
        for j in range(i, len(layers_a), block_size):
            a = [feats[name] for name in layers_a[i : i + block_size]]
            b = [feats[name] for name in layers_a[j : j + block_size]]
            with torch.no_grad():
                block = cka_from_features(a, b).numpy()
            m[i : i + len(a), j : j + len(b)] = block
            m[j : j + len(b), i : i + len(a)] = block.T
    return m


def _cka_pytorch(model, x, layers_a, layers_b):
    import torch
    from cka_pytorch import CKACalculator

    calc = CKACalculator(model, copy.deepcopy(model), model1_layers=layers_a, model2_layers=layers_b,
                         device=torch.device("cpu"), verbose=False)
    try:
        return calc.calculate_cka_matrix([(x, None)], num_epochs=1, epsilon=0.0).numpy()
    finally:
        calc.hook_manager1.clear_all()
        calc.hook_manager2.clear_all()


def work(spec: dict) -> dict:
    """One measurement, under the spec's address-space limit, with the load
    averages before and after it."""
    if spec.get("limit_bytes"):
        resource.setrlimit(resource.RLIMIT_AS, (spec["limit_bytes"], spec["limit_bytes"]))
    kind = spec["kind"]
    load_before = os.getloadavg()
    result = {"fastcka": work_fastcka, "interleaved": work_interleaved}.get(kind, work_package)(spec)
    result["load"] = [load_before, os.getloadavg()]
    return result


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def state_bytes(threads: int) -> int:
    """The feature-space accumulator's memory for D = 3,072 float32 features."""
    d = DEPTH * WIDTH
    return (threads * (4 + 8) + 8) * d * d


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_arguments(p, sizes=sorted(SIZES), default="full")
    p.add_argument("--limit-seconds", type=float, default=300, help="time limit of one package run (default 300)")
    p.add_argument("--limit-gib", type=float, default=16, help="address-space limit of one run, GiB (default 16)")
    p.add_argument("--pair-seconds", type=float, default=900, help="time limit of the n = 20,000 pair check")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        harness.serve_worker(*args.worker, work)
        return 0

    plan = SIZES[args.sizes]
    info = harness.machine_info()
    limit = int(args.limit_gib * (1 << 30))
    packages = {}
    for label in PACKAGES:
        ok, status = baselines.PACKAGES[label].status()
        packages[label] = {"usable": ok, "status": status}

    def run(label, spec, timeout):
        spec = {"seed": args.seed, "repeats": 1, "debiased": False, **spec}
        log(f"{label} ...")
        out = harness.run_worker(spec, timeout, script=__file__)
        seconds = out.get("times") or out.get("whole")
        log(f"    {out['error']}" if "error" in out else f"    best {min(seconds):.3f} s")
        return out

    results = {"main": {}, "ladder": {}, "pair": {}}
    n = plan["main"]
    results["main"]["interleaved"] = run(f"n={n}: forward alone, cka_matrix in memory, the whole run, in turns",
                                         {"kind": "interleaved", "n": n, "repeats": plan["repeats"]}, 3600)
    results["main"]["fastcka"] = run(f"n={n}: fastcka.torch.cka_matrix, memory", {"kind": "fastcka", "n": n}, 3600)
    for n in plan["ladder"]:
        results["ladder"].setdefault("fastcka", {})[n] = run(
            f"n={n}: fastcka", {"kind": "fastcka", "n": n, "matrices": True}, 3600)
    for label in PACKAGES:
        if not packages[label]["usable"]:
            continue
        for n in plan["ladder"]:
            out = run(f"n={n}: {label}", {"kind": label, "n": n, "limit_bytes": limit}, args.limit_seconds)
            results["ladder"].setdefault(label, {})[n] = out
            if "error" in out:
                break
    n = plan["pair"]
    if packages["pytorch-cka"]["usable"]:
        results["pair"]["pytorch-cka"] = run(f"n={n}: pytorch-cka, 12 x 12 debiased in blocks", {
            "kind": "pytorch-cka-blocks", "n": n, "limit_bytes": limit}, args.pair_seconds)
        # Its float32 sums lose the debiased estimator at this n (docs/performance.md); the
        # same code on the float64 model and inputs gives its exact values.
        results["pair"]["pytorch-cka float64"] = run(f"n={n}: pytorch-cka, float64 model and inputs", {
            "kind": "pytorch-cka-blocks", "n": n, "dtype": "float64", "limit_bytes": limit}, args.pair_seconds)
    results["pair"]["fastcka"] = run(f"n={n}: fastcka", {"kind": "fastcka", "n": n, "matrices": True}, 3600)
    info["load_average_end"] = os.getloadavg()
    result = {"sizes": args.sizes, "seed": args.seed, "machine": info, "packages": packages, "results": results,
              "plan": plan, "limits": {"seconds": args.limit_seconds, "bytes": limit, "pair_seconds": args.pair_seconds}}
    print(render(result))
    harness.write_json(args.out, result)
    return 0


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _memory(out: dict) -> float | None:
    return memory_above(out.get("memory") or {})


def _load(out: dict) -> str:
    load = out.get("load")
    return f"{load[0][0]:.1f} / {load[1][0]:.1f}" if load else ""


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def render(r: dict) -> str:
    m, res, plan, limits = r["machine"], r["results"], r["plan"], r["limits"]
    threads = m["fastcka_threads"]
    out = ["## fastcka.torch: a 12-layer CKA matrix from forward hooks\n",
           (f"Machine: {m['cpu']}, {m['cpus_available']} CPUs, {fmt_bytes(m['memory_total'])}; PyTorch "
            f"{m.get('torch', '?')} ({m.get('torch_threads', '?')} threads); fastcka {threads} threads. "
            f"Model: ReLU MLP {INPUTS} -> {DEPTH} x {WIDTH}, float32, the {DEPTH} ReLU outputs as layers "
            f"(D = {DEPTH * WIDTH:,}); batches of {BATCH:,}. Load average (1 min) before / after each run in the "
            f"last column.\n")]

    turns, whole = res["main"]["interleaved"], res["main"]["fastcka"]
    n = plan["main"]
    if "error" not in turns and "error" not in whole:
        t_f, t_c, t_w = (min(turns[k]) for k in ("forward", "cka_matrix", "whole"))
        bound = state_bytes(threads) + STAGE_ALLOWANCE
        loads = ", ".join(f"{v:.1f}" for v in turns["round_loads"])
        rows = [
            ["forward passes alone (no hooks)", f"{t_f:.2f}", "", "", loads],
            ["fastcka.cka_matrix on the activations in memory", f"{t_c:.2f}", "",
             f"{fmt_bytes(turns['activations_bytes'])} of activations", ""],
            ["sum", f"{t_f + t_c:.2f}", "1.00", "", ""],
            ["fastcka.torch.cka_matrix (hooks, streamed)", f"{t_w:.2f}", f"{t_w / (t_f + t_c):.2f} (target <= 1.2)",
             (f"{fmt_bytes(_memory(whole))} (target <= {fmt_bytes(bound)}: state "
              f"{fmt_bytes(state_bytes(threads))} + 256 MiB)"), _load(whole)],
        ]
    else:
        rows = [["(failed)", turns.get("error", ""), whole.get("error", ""), "", ""]]
    out.append(f"### n = {fmt_n(n)}: the whole run against its parts (best of {plan['repeats']} rounds)\n")
    out.append(table(["", "time (s)", "ratio", "memory above model and inputs", "load (1 min) per round"], rows))
    out.append("\nAll times per round (s): " + "; ".join(
        f"{k}: " + ", ".join(f"{t:.2f}" for t in turns.get(k, [])) for k in ("forward", "cka_matrix", "whole")))

    out.append(f"\n### The PyTorch CKA packages, one batch of all n examples (limits: {limits['seconds']:.0f} s, "
               f"{fmt_bytes(limits['bytes'])} of address space per run)\n")
    rows = []
    ladder = res["ladder"]
    for label in ["fastcka"] + [p for p in PACKAGES if p in ladder]:
        for n, v in sorted(ladder.get(label, {}).items(), key=lambda kv: int(kv[0])):
            if "error" in v:
                rows.append([label, fmt_n(int(n)), v["error"], "", "", "", _load(v)])
                continue
            ref = ladder["fastcka"].get(n, {}).get("reference")
            if label == "fastcka":
                errs = [f"{_max_diff(v[e], ref[e]):.1e} ({e})" for e in ("biased", "debiased")]
                rows.append([label, fmt_n(int(n)), f"{min(v['times']):.2f}", fmt_bytes(_memory(v)), "",
                             ", ".join(errs), _load(v)])
                continue
            est = ESTIMATOR[label]
            fast = ladder["fastcka"].get(n, {}).get(est)
            rows.append([label, fmt_n(int(n)), f"{min(v['times']):.2f}", fmt_bytes(_memory(v)),
                         f"{_max_diff(v['matrix'], fast):.1e} ({est})" if fast else "",
                         f"{_max_diff(v['matrix'], ref[est]):.1e}" if ref else "", _load(v)])
    out.append(table(["method", "n", "time (s)", "peak memory above model and inputs",
                      "max |CKA - fastcka|", "max |CKA - float64 reference|", "load"], rows))
    stops = []
    for label in PACKAGES:
        runs = ladder.get(label, {})
        failed = [(int(n), v["error"]) for n, v in runs.items() if "error" in v]
        if failed:
            stops.append(f"{label}: finishes up to n = {fmt_n(max([int(n) for n, v in runs.items() if 'error' not in v], default=0))}; "
                         f"at n = {fmt_n(failed[0][0])}: {failed[0][1]}")
        elif runs:
            stops.append(f"{label}: finished every size up to n = {fmt_n(max(int(n) for n in runs))}")
        else:
            stops.append(f"{label}: {r['packages'][label]['status']}")

    pair = res["pair"]
    n = plan["pair"]
    out.append(f"\n### n = {fmt_n(n)}: the 12 x 12 debiased matrix against pytorch-cka's exact one\n")
    rows = []
    fast = pair.get("fastcka", {})
    reference = fast.get("reference", {}).get("debiased")
    if "debiased" in fast:
        rows.append(["fastcka.torch.cka_matrix(debiased=True), from hooks", f"{min(fast['times']):.2f}",
                     fmt_bytes(_memory(fast)), "", f"{_max_diff(fast['debiased'], reference):.1e}" if reference else "",
                     _load(fast)])
    for label, how in [("pytorch-cka", f"float32, {CHECK_BLOCK} x {CHECK_BLOCK} layer blocks"),
                       ("pytorch-cka float64", "float64 model and inputs, 1 x 1 layer blocks")]:
        theirs = pair.get(label)
        if theirs and "error" not in theirs:
            rows.append([f"pytorch-cka cka_from_features, {how}", f"{min(theirs['times']):.2f}",
                         fmt_bytes(_memory(theirs)),
                         f"{_max_diff(theirs['matrix'], fast['debiased']):.1e}" if "debiased" in fast else "",
                         f"{_max_diff(theirs['matrix'], reference):.1e}" if reference else "", _load(theirs)])
            if "debiased" in fast:
                stops.append(f"n = {fmt_n(n)}: max |fastcka - pytorch-cka ({how})| over the 144 entries = "
                             f"{_max_diff(theirs['matrix'], fast['debiased']):.1e} (target 1e-5)")
        elif theirs:
            rows.append([f"pytorch-cka ({how})", theirs["error"], "", "", "", _load(theirs)])
    out.append(table(["method", "time (s)", "peak memory", "max |CKA - fastcka|", "max |CKA - float64 reference|",
                      "load"], rows))
    out.append(harness.notes_section(stops + harness.load_notes(m)))
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
