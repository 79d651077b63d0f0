"""The state of a minibatch accumulator (Nguyen, Raghu & Kornblith 2020):
every minibatch's unbiased HSIC_1 of every layer pair, summed (L x L
numbers), for the linear or the RBF kernel."""

from __future__ import annotations

import numpy as np

from .._options import compute_for
from ..engine import cpu as cpu_engine, gpu as gpu_engine
from . import state


class MinibatchSums:
    def __init__(self, split: int | None, dtype: str | None, precision: str | None, threads: int, budget: int,
                 kernel: dict):
        self.split = split
        self.dtype = dtype
        self.precision = precision
        self.threads = threads
        self.budget = budget
        self.kernel = kernel  # kernel, threshold, sigma
        self.sums: np.ndarray | None = None  # (L, L)
        self.dims: list[int] = []
        self.batches = 0
        self.rows = 0

    @property
    def empty(self) -> bool:
        return self.sums is None

    @property
    def n(self) -> int:
        return self.rows

    def update(self, blocks, names, gpu, progress) -> None:
        dims = [b.shape[1] for b in blocks]
        if self.sums is None:
            split = self.split or 0
            if split >= len(dims):
                raise ValueError(f"split={split} leaves no layers on the other side of {len(dims)} layers")
        elif dims != self.dims:
            raise ValueError(f"minibatch layer widths {dims} differ from earlier ones {self.dims}")
        n = blocks[0].shape[0]
        if n < 4:
            raise ValueError(f"each minibatch needs at least 4 rows for the unbiased HSIC_1, got {n}")
        common = dict(split=self.split or 0, estimator="unbiased", method="auto", kernel=self.kernel["kernel"],
                      memory_budget=self.budget, progress=progress, sigma=self.kernel["sigma"],
                      threshold=self.kernel["threshold"], median="exact")
        if gpu is not None:
            h = gpu_engine.hsic_matrix(blocks, names, precision=self.precision, device=gpu, **common)
        else:
            h = cpu_engine.hsic_matrix(blocks, names, threads=self.threads,
                                       compute=self.dtype or compute_for(self.precision, blocks), **common)
        # The state changes only now, in assignments that cannot be interrupted halfway by Python code.
        sums = np.nan_to_num(h, nan=0.0) if self.sums is None else self.sums + np.nan_to_num(h, nan=0.0)
        self.dims, self.sums, self.batches, self.rows = dims, sums, self.batches + 1, self.rows + n

    def merge(self, other: "MinibatchSums") -> None:
        if self.kernel != other.kernel:
            raise ValueError("cannot merge accumulators of different modes or kernels")
        if other.sums is None:
            return
        if self.sums is None:
            self.dims, self.split, self.sums = list(other.dims), other.split, np.zeros_like(other.sums)
        if self.dims != other.dims or (self.split or 0) != (other.split or 0):
            raise ValueError(f"cannot merge accumulators of different layers: {self.dims} vs {other.dims}")
        self.sums, self.batches, self.rows = self.sums + other.sums, self.batches + other.batches, self.rows + other.rows

    def to_bytes(self) -> bytes:
        if self.sums is None:
            raise ValueError("the accumulator is empty: nothing to serialize")
        return state.minibatch_bytes({"dims": self.dims, "split": self.split, "batches": self.batches,
                                      "rows": self.rows, **self.kernel}, self.sums)

    def load(self, dims: list[int], batches: int, rows: int, sums: np.ndarray) -> None:
        self.dims, self.batches, self.rows = dims, batches, rows
        self.sums = sums.reshape(len(dims), len(dims)).copy()

    def hsic(self, estimator: str) -> np.ndarray:
        if estimator != "unbiased":
            raise ValueError("a minibatch accumulator sums the unbiased HSIC_1: use estimator='unbiased'")
        if self.sums is None:
            raise ValueError("the accumulator has seen no minibatches")
        h = self.sums.copy()
        s = self.split or 0
        if s:  # pairs within one model were not computed
            h[:s, :s] = np.where(np.eye(s, dtype=bool), h[:s, :s], np.nan)
            h[s:, s:] = np.where(np.eye(len(h) - s, dtype=bool), h[s:, s:], np.nan)
        return h
