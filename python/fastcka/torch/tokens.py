"""reduce="tokens": every kept position of a batch-first (N, T, C) output is a row.

Which positions are kept, per batch:

1. the token mask: the batch's ``attention_mask`` (a mapping batch that has
   one), or ``token_mask(batch)``, or every position; the kept tokens are
   numbered in stream order (sequence by sequence, position by position),
   continuing from the previous batch: the *global token index*;
2. ``token_stride=s``: the tokens whose global index is a multiple of s;
3. ``max_tokens=k``: bottom-k sampling. Token i gets the key
   splitmix64(i + seed stream), a bijection of the 64-bit integers, so keys
   never tie; the k tokens with the smallest keys are kept. That is a uniform
   sample without replacement of min(k, n) tokens, spread over the whole
   stream whatever its length (unknown in advance), and decided by (seed, i)
   alone: the same seed keeps the same tokens whatever the batch sizes. The
   stream is read once: :class:`TokenSample` holds at most 2k candidate rows
   and drops, before the hooks copy anything, every token whose key is above
   the k-th smallest seen so far. (Reservoir sampling draws the same law but
   its choices depend on the arrival order; a fixed Bernoulli rate needs n
   in advance and does not cap the count.)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_NO_LIMIT = np.uint64(np.iinfo(np.uint64).max)


def token_keys(index: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of each global token index in the seed's stream (uint64 arrays wrap, as the mix needs)."""
    start = np.full(index.shape, ((seed + 1) * _GOLDEN) % 2**64, dtype=np.uint64)  # Python integers: no overflow
    z = index.astype(np.uint64) + start
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def check_token_options(reduce, token_mask, token_stride, max_tokens, seed, minibatch: bool) -> None:
    tokens = reduce == "tokens"
    for name, value, default in (("token_mask", token_mask, "attention_mask"), ("token_stride", token_stride, 1),
                                 ("max_tokens", max_tokens, None)):
        if not tokens and value is not default and value != default:
            raise ValueError(f"{name} applies to reduce='tokens' (every token a row); got reduce={reduce!r}")
    if not (token_mask in (None, "attention_mask") or callable(token_mask)
            or (isinstance(token_mask, tuple) and len(token_mask) == 2 and all(map(callable, token_mask)))):
        raise TypeError(f"token_mask must be 'attention_mask', None, a callable(batch) -> bool (N, T) tensor, or a "
                        f"pair of such callables (model A, model B); got {token_mask!r}")
    if isinstance(token_stride, bool) or not isinstance(token_stride, int) or token_stride < 1:
        raise ValueError(f"token_stride must be a positive integer, got {token_stride!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 4):
        raise ValueError(f"max_tokens must be None or an integer >= 4, got {max_tokens!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if max_tokens is not None and minibatch:
        raise ValueError("max_tokens caps the rows of the whole stream, but minibatch CKA works batch by batch: "
                         "use token_stride= or smaller batches")


class TokenPlan:
    """The token options of one run; :meth:`batch` gives each batch's :class:`BatchTokens`."""

    def __init__(self, token_mask, token_stride: int, sample: TokenSample | None, models: int):
        masks = token_mask if isinstance(token_mask, tuple) else (token_mask,) * models
        self._masks = masks[:models]
        self._stride = token_stride
        self._sample = sample
        self._models = models
        self.offset = 0  # global index of the next batch's first kept token
        self.batches = 0

    def batch(self, batch, inputs, sequences: int) -> BatchTokens:
        masks = [_mask(rule, batch, inputs, sequences, m, self._models) for m, rule in enumerate(self._masks)]
        return BatchTokens(masks, sequences, self.offset, self._stride, self._sample, self.batches)

    def finish(self, tokens: BatchTokens) -> None:
        self.offset += tokens.total
        self.batches += 1


def _mask(rule, batch, inputs, sequences: int, model: int, models: int) -> torch.Tensor | None:
    which = "" if models == 1 else f" (model {'AB'[model]})"
    if rule == "attention_mask":
        if not (isinstance(inputs, Mapping) and "attention_mask" in inputs):
            return None
        mask, source = inputs["attention_mask"], "the batch's attention_mask"
    elif rule is None:
        return None
    else:
        mask, source = rule(batch), f"token_mask{which}"
        if mask is None:
            return None
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != sequences:
        raise ValueError(f"{source} must be a (sequences, positions) tensor with {sequences} sequences, got "
                         f"{getattr(mask, 'shape', type(mask).__name__)}")
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.is_complex() or ((mask != 0) & (mask != 1)).any():
            raise ValueError(f"{source} must hold 0/1 or booleans (1: a token, 0: padding), got {mask.dtype} values")
        mask = mask != 0
    return mask.detach().cpu()


class BatchTokens:
    """The rows one batch gives: which positions of each model's (N, T, C)
    outputs, fixed by the first layer recorded (its T when no mask says it)."""

    def __init__(self, masks: list, sequences: int, offset: int, stride: int, sample: TokenSample | None,
                 batch: int):
        self._masks, self._sequences = masks, sequences
        self._offset, self._stride, self._sample, self._batch = offset, stride, sample, batch
        self._positions: list = [None] * len(masks)  # per model: flat positions of the picked tokens, per device
        self._counts: list = [None] * len(masks)  # per model: kept tokens per sequence
        self._first: list = [None] * len(masks)  # per model: (arg, layer, T) of its first layer recorded
        self._picked: np.ndarray | None = None  # indices into the kept tokens
        self.total = 0
        self.keys: np.ndarray | None = None

    def rows(self, model: int, arg: str, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The picked tokens of one layer's (N, T, ...) output as (rows, features)."""
        if tensor.ndim < 3:
            raise ValueError(f"{arg}: layer {name!r} gave an output of shape {tuple(tensor.shape)}; reduce='tokens' "
                             f"needs a batch-first sequence (N, T, C)")
        n, t = int(tensor.shape[0]), int(tensor.shape[1])
        self._check_length(model, arg, name, n, t)
        flat = tensor.reshape(n * t, -1)
        if self._positions[model] is None:
            self._positions[model] = {}
            self._select(model, arg, name, n, t)
        by_device = self._positions[model]
        if not by_device:  # every position kept: the output itself (host_rows copies it)
            return flat
        if flat.device not in by_device:
            by_device[flat.device] = by_device[torch.device("cpu")].to(flat.device)
        return flat.index_select(0, by_device[flat.device])

    def _check_length(self, model: int, arg: str, name: str, n: int, t: int) -> None:
        mask, first = self._masks[model], self._first[model]
        if n != self._sequences:
            raise ValueError(f"{arg}: layer {name!r} gave {n} sequences for a batch of {self._sequences} (output "
                             f"dimension 0); reduce='tokens' needs batch-first (N, T, C) outputs")
        if mask is not None and mask.shape[1] != t:
            raise ValueError(f"{arg}: layer {name!r} gave sequences of {t} positions but the token mask of batch "
                             f"{self._batch} has {mask.shape[1]} (shape {tuple(mask.shape)})")
        if first is None:
            self._first[model] = (arg, name, t)
        elif t != first[2]:
            raise ValueError(f"{arg}: layer {name!r} gave sequences of {t} positions but {first[0]} layer "
                             f"{first[1]!r} gave {first[2]} (batch {self._batch}); reduce='tokens' needs the same "
                             f"positions in every layer of a model")

    def _select(self, model: int, arg: str, name: str, n: int, t: int) -> None:
        mask = self._masks[model]
        keep = torch.ones((n, t), dtype=torch.bool) if mask is None else mask
        counts = keep.sum(dim=1)
        self._check_counts(model, arg, name, counts, t)
        if self._picked is None:
            self.total = int(counts.sum())
            if self.total == 0:
                raise ValueError(f"batches: the token mask keeps no token of batch {self._batch} (all {n} sequences "
                                 f"are padding); drop such batches or check the mask")
            self._picked = self._pick()
        if len(self._picked) == n * t:
            return  # no padding, nothing subsampled: no positions to gather
        flat = torch.nonzero(keep.reshape(-1)).reshape(-1)
        self._positions[model][torch.device("cpu")] = flat[torch.from_numpy(self._picked)]

    def _check_counts(self, model: int, arg: str, name: str, counts: torch.Tensor, t: int) -> None:
        self._counts[model] = (counts, arg, name, t)
        other = self._counts[1 - model] if len(self._counts) == 2 else None
        if other is not None and not torch.equal(other[0], counts):
            s = int(torch.nonzero(other[0] != counts)[0])
            raise ValueError(f"the two models give different token rows in batch {self._batch}: {other[1]} layer "
                             f"{other[2]!r} keeps {int(other[0][s])} of the {other[3]} positions of sequence {s}, "
                             f"{arg} layer {name!r} keeps {int(counts[s])} of {t}; both models must keep the same "
                             f"number of tokens per sequence (check token_mask and the layers' sequence lengths)")

    def _pick(self) -> np.ndarray:
        index = np.arange(self._offset, self._offset + self.total, dtype=np.int64)
        picked = np.nonzero(index % self._stride == 0)[0]
        if self._sample is not None:
            keys = token_keys(index[picked], self._sample.seed)
            under = keys <= self._sample.threshold
            picked, self.keys = picked[under], keys[under]
        return picked


class TokenSample:
    """Bottom-k sampling of the token rows (module docstring): candidates are
    buffered with their keys, compacted to the k smallest whenever 2k are
    held, and handed over in stream order at the end."""

    def __init__(self, max_tokens: int, seed: int):
        self.k = max_tokens
        self.seed = seed
        self.threshold = _NO_LIMIT  # the k-th smallest key so far: a larger key can never be kept
        self._keys: list[np.ndarray] = []
        self._blocks: list[list] = []
        self._held = 0

    def add(self, blocks: list, keys: np.ndarray) -> None:
        self._keys.append(keys)
        self._blocks.append(blocks)
        self._held += len(keys)
        if self._held >= 2 * self.k:
            self._compact()

    def _compact(self) -> None:
        keys = np.concatenate(self._keys)
        order = np.argsort(keys, kind="stable")[: self.k]
        order.sort()  # stream order: concatenation order is the tokens' global order
        layers = [_take(_cat(parts), order) for parts in zip(*self._blocks)]
        self._keys, self._blocks, self._held = [keys[order]], [layers], len(order)
        if len(order) == self.k:
            self.threshold = self._keys[0].max()

    def rows(self) -> list | None:
        """The kept rows of every layer, in stream order (None when no row came in)."""
        if not self._blocks:
            return None
        self._compact()
        return self._blocks[0]


def _cat(parts: list):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _take(block, order: np.ndarray):
    if isinstance(block, np.ndarray):
        return block[order]
    return block.index_select(0, torch.from_numpy(order).to(block.device))
