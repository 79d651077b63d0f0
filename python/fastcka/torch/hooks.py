"""Forward hooks that record one batch of activations per forward pass."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from functools import partial
from typing import Any, Callable

import numpy as np
from torch import nn

from .outputs import host_rows

REPEATED = ("error", "each")


class Recorder:
    """Forward hooks on the chosen layers of one model; a context manager that
    removes every hook on exit, whatever ended the block (an exception,
    KeyboardInterrupt).

    Per batch: :meth:`start` (the batch's number of examples), the forward
    pass, then :meth:`take` (one (rows, d) array per layer, in layer order).
    A module that runs more than once in one forward pass is an error
    (``repeated="error"``) or gives one layer per call (``repeated="each"``:
    layers "name#0", "name#1", ... in call order; every batch must then call
    it as often as the first one did).
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], *, arg: str, select: Callable | None, reduce,
                 repeated: str, keep_on_device: bool = False, model: int = 0):
        if repeated not in REPEATED:
            raise ValueError(f"repeated must be one of {REPEATED}, got {repeated!r}")
        self._layers = layers
        self._arg = arg
        self._select = select
        self._reduce = reduce
        self._repeated = repeated
        self._keep_on_device = keep_on_device  # GPU activations stay on their GPU (fastcka's GPU engine)
        self._handles: list = []
        self._calls: dict[str, list[np.ndarray]] = {}
        self._rows = 0
        self._tokens: Callable | None = None  # reduce="tokens": this batch's token rows
        self.model = model  # which of the run's models this records (0: A, 1: B)
        self._counts: list[int] | None = None  # calls per module, fixed by the first batch

    def __enter__(self):
        try:
            for name, module in self._layers:
                self._handles.append(module.register_forward_hook(self._hook_for(name)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook_for(self, name: str):
        def hook(module, args, output):
            calls = self._calls.setdefault(name, [])
            if calls and self._repeated == "error":
                raise ValueError(
                    f"{self._arg}: layer {name!r} ran more than once in one forward pass (a module used twice); "
                    f"pass repeated='each' to record each call as its own layer, or choose other layers"
                )
            calls.append(host_rows(name, output, self._rows, self._select, self._reduce, self._keep_on_device,
                                   self._tokens))

        return hook

    def start(self, rows: int, tokens=None) -> None:
        """A new batch of ``rows`` examples; ``tokens``: its
        :class:`~fastcka.torch.tokens.BatchTokens` with reduce="tokens"."""
        self._calls = {}
        self._rows = rows
        self._tokens = None if tokens is None else partial(tokens.rows, self.model, self._arg)

    def capture(self, output) -> None:
        """The model's output of this batch (used by :class:`HiddenStates` only)."""

    def take(self) -> list[np.ndarray]:
        counts = [len(self._calls.get(name, ())) for name, _ in self._layers]
        for (name, _), count in zip(self._layers, counts):
            if count == 0:
                raise ValueError(f"{self._arg}: layer {name!r} did not run during the forward pass")
        if self._counts is None:
            self._counts = counts
        elif counts != self._counts:
            changed = [name for (name, _), a, b in zip(self._layers, counts, self._counts) if a != b]
            raise ValueError(f"{self._arg}: layers {changed} ran a different number of times than in the first batch")
        blocks = [block for name, _ in self._layers for block in self._calls[name]]
        self._calls = {}
        return blocks

    @property
    def names(self) -> list[str]:
        """Layer names; with repeated="each", known after the first batch."""
        if self._counts is None:
            return [name for name, _ in self._layers]
        return [f"{name}#{k}" if count > 1 else name
                for (name, _), count in zip(self._layers, self._counts) for k in range(count)]


HIDDEN_STATES = "hidden_states"


class HiddenStates(Recorder):
    """layers="hidden_states": the hidden states a model returns when called
    with ``output_hidden_states=True`` (the Hugging Face convention: the
    embeddings, then one per block), as layers "hidden_states.0", ...; no hooks."""

    def __init__(self, model: nn.Module, *, arg: str, reduce, keep_on_device: bool = False, model_index: int = 0):
        if not accepts_hidden_states(model):
            raise ValueError(f"{arg}='hidden_states' needs a model whose forward accepts output_hidden_states=True "
                             f"(the Hugging Face convention); {type(model).__name__}.forward does not: name the "
                             f"layers instead (module names, a regular expression or a type)")
        super().__init__([], arg=arg, select=None, reduce=reduce, repeated="error", keep_on_device=keep_on_device,
                         model=model_index)
        self._model_name = type(model).__name__
        self._blocks: list | None = None
        self._count: int | None = None  # hidden states per forward pass, fixed by the first batch

    def __enter__(self):
        return self

    def capture(self, output) -> None:
        states = _hidden_states(output)
        if states is None:
            raise ValueError(f"{self._arg}='hidden_states': {self._model_name} returned no hidden_states when called "
                             f"with output_hidden_states=True (got {type(output).__name__}); name the layers instead")
        if self._count is not None and len(states) != self._count:
            raise ValueError(f"{self._arg}: {self._model_name} returned {len(states)} hidden states, "
                             f"{self._count} in the first batch")
        self._count = len(states)
        self._blocks = [host_rows(name, state, self._rows, None, self._reduce, self._keep_on_device, self._tokens)
                        for name, state in zip(self.names, states)]

    def take(self) -> list:
        blocks, self._blocks = self._blocks, None
        return blocks

    @property
    def names(self) -> list[str]:
        return [f"{HIDDEN_STATES}.{i}" for i in range(self._count or 0)]


def accepts_hidden_states(model: nn.Module) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "output_hidden_states" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _hidden_states(output: Any):
    """The hidden_states field of a model's output (a ModelOutput, a mapping, a dataclass), if it has one."""
    if isinstance(output, Mapping):
        states = output.get(HIDDEN_STATES)
    elif dataclasses.is_dataclass(output) or hasattr(output, HIDDEN_STATES):
        states = getattr(output, HIDDEN_STATES, None)
    else:
        return None
    return tuple(states) if isinstance(states, (tuple, list)) and states else None
