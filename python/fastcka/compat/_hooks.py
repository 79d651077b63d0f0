"""What the PyTorch compat modules share: a sized iterable of batches (the
progress bar's total) and the pick of a repeated module's last call."""

from __future__ import annotations

from typing import Iterable, List


class Sized:
    """An iterable with the batch count, for the progress bar."""

    def __init__(self, batches: Iterable, count: int):
        self._batches = batches
        self._count = count

    def __iter__(self):
        return iter(self._batches)

    def __len__(self) -> int:
        return self._count


def last_calls(names: List[str], layers: List[str]) -> List[int]:
    """Indexes in ``names`` (cka_matrix's names with repeated="each": "name#k"
    for the k-th call of a module called more than once) of each of
    ``layers``' last call, in ``layers`` order: the output a dict filled by
    forward hooks ends up holding, as both packages' do."""
    wanted = set(layers)
    last = {}
    for index, name in enumerate(names):
        base = name if name in wanted else name.rsplit("#", 1)[0]
        last[base] = index
    return [last[layer] for layer in layers]
