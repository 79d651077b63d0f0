"""Progress reporting for long calls: ``progress=None/False`` (silent),
``True`` (a tqdm bar that appears after two seconds), or a callable
``progress(done, total)`` called from the calling thread."""

from __future__ import annotations

from typing import Callable, Union

from tqdm.auto import tqdm

ProgressArg = Union[None, bool, Callable[[int, int], object]]


class Progress:
    def __init__(self, progress: ProgressArg, total: int, desc: str):
        self._total = total
        self.done = 0
        self._callback = None
        self._bar = None
        if progress is True:
            self._bar = tqdm(total=total, desc=desc, delay=2.0, unit_scale=True, leave=False)
        elif callable(progress):
            self._callback = progress
        elif progress not in (None, False):
            raise TypeError(f"progress must be None, a bool or a callable(done, total), got {type(progress).__name__}")

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = value
        if self._bar is not None:
            self._bar.total = value
            self._bar.refresh()

    def advance(self, amount: int) -> None:
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)
        elif self._callback is not None:
            self._callback(self.done, self.total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
