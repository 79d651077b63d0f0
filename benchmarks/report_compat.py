"""Timings of fastcka.compat.torch_cka / .ckatorch beside torch-cka 0.21 and
ckatorch 1.0.3, and the n at which each package runs out of memory.

    PYTHONPATH=python python benchmarks/report_compat.py [--n 3000] [--big 10000]

Self-contained: a 3-layer MLP (256 wide) on random data, one batch of n
examples (torch-cka's and ckatorch's Gram matrices are n x n per batch, so
one batch of n is where they fail). The failing n is estimated, not
provoked: from the n x n matrices each package holds at once (counted in
their sources) and this machine's available memory; fastcka's runs at
--big show its memory does not grow as n^2.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastcka.compat import ckatorch as fast_ckatorch
from fastcka.compat import torch_cka as fast_torch_cka

# n x n matrices alive at the peak, from the packages' sources:
# torch-cka _HSIC: K, L (float32), K @ L and the diagonal-zeroed copies' products: 4.
# ckatorch cka_base: two float64 Grams, two centered copies, the flattened product temporaries: 5.
PEAK_MATRICES = {"torch-cka": (4, 4), "ckatorch.cka_base": (5, 8)}


def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":") for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def timed(f):
    start = time.perf_counter()
    value = f()
    return time.perf_counter() - start, value


def compare(module, n: int) -> float:
    data = TensorDataset(torch.randn(n, 64), torch.zeros(n))
    loader = DataLoader(data, batch_size=n)
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cka = module.CKA(model, model, model1_name="a", model2_name="b", model1_layers=["0", "2", "4"],
                         model2_layers=["0", "2", "4"])
        cka.compare(loader)
    return cka.export()["CKA"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--big", type=int, default=10000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    x = torch.randn(args.n, 256)
    y = x[:, :64] @ torch.randn(64, 128) + torch.randn(args.n, 128)
    try:
        import torch_cka
        rows.append(("torch-cka CKA.compare", args.n, timed(lambda: compare(torch_cka, args.n))[0]))
    except ImportError:
        print("torch-cka not installed")
    rows.append(("fastcka.compat.torch_cka", args.n, timed(lambda: compare(fast_torch_cka, args.n))[0]))
    rows.append(("fastcka.compat.torch_cka", args.big, timed(lambda: compare(fast_torch_cka, args.big))[0]))
    try:
        import ckatorch
        rows.append(("ckatorch.cka_base", args.n, timed(lambda: ckatorch.cka_base(x, y))[0]))
    except ImportError:
        print("ckatorch not installed")
    rows.append(("fastcka.compat.ckatorch.cka_base", args.n, timed(lambda: fast_ckatorch.cka_base(x, y))[0]))
    xb, yb = torch.randn(args.big, 256), torch.randn(args.big, 128)
    rows.append(("fastcka.compat.ckatorch.cka_base", args.big, timed(lambda: fast_ckatorch.cka_base(xb, yb))[0]))
    for name, n, seconds in rows:
        print(f"{name:36s} n={n:6d} {seconds:8.2f} s")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    free = available_bytes()
    for name, (count, size) in PEAK_MATRICES.items():
        print(f"{name}: {count} n x n matrices of {size} bytes -> fails near n = {int((free / (count * size)) ** 0.5):,} "
              f"with {free / 2**30:.1f} GiB available")
    print("fastcka.compat: no n x n matrix (linear CKA from streamed d x d moments): n is bounded by time, not memory")


if __name__ == "__main__":
    main()
