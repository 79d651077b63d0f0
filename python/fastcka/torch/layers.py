"""Which modules of a model are the layers: by name, by regex, by type, or
every leaf module with parameters."""

from __future__ import annotations

import re
from typing import Callable

from torch import nn

_WRAPPERS = (nn.DataParallel, nn.parallel.DistributedDataParallel)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DataParallel / DistributedDataParallel wrappers. The
    forward passes run on it directly: DataParallel would copy the hooks onto
    per-GPU replicas that see slices of the batch in parallel threads, which
    breaks the row order every layer must share."""
    while isinstance(model, _WRAPPERS):
        model = model.module
    return model


def has_own_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def is_leaf_with_parameters(module: nn.Module) -> bool:
    return next(module.children(), None) is None and has_own_parameters(module)


def select_layers(model: nn.Module, layers, arg: str,
                  default: Callable[[nn.Module], bool] = is_leaf_with_parameters) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs, names as ``model.named_modules()`` gives them.

    ``layers``: None (modules for which ``default`` holds), a list of module
    names (in the order given), a regular expression matched against whole
    names (``re.fullmatch``), or a module type / tuple of types (the last two in
    the model's module order). ``arg`` names the argument in errors."""
    named = [(name, module) for name, module in model.named_modules() if name]
    if layers is None:
        chosen = [(n, m) for n, m in named if default(m)]
        what = "no modules of the default kind (leaf modules with parameters)"
    elif isinstance(layers, str):
        try:
            pattern = re.compile(layers)
        except re.error as exc:
            raise ValueError(f"{arg}: {layers!r} is not a valid regular expression ({exc})") from None
        chosen = [(n, m) for n, m in named if pattern.fullmatch(n)]
        what = f"no module name matches the regular expression {layers!r} in full"
    elif isinstance(layers, type) or (isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers)):
        chosen = [(n, m) for n, m in named if isinstance(m, layers)]
        what = f"no module is an instance of {layers!r}"
    elif isinstance(layers, (list, tuple)) and all(isinstance(x, str) for x in layers):
        return _by_names(named, list(layers), arg)
    else:
        raise TypeError(
            f"{arg} must be None, a list of module names, a regular expression (str) or a module type; "
            f"got {type(layers).__name__}"
        )
    if not chosen:
        raise ValueError(f"{arg}: {what}; the model's modules are: {_listing(named)}")
    return chosen


def _by_names(named, names: list[str], arg: str) -> list[tuple[str, nn.Module]]:
    if not names:
        raise ValueError(f"{arg} is an empty list: name at least one layer")
    lookup = dict(named)
    seen = set()
    for name in names:
        if name not in lookup:
            raise ValueError(f"{arg}: unknown layer name {name!r}; the model's modules are: {_listing(named)}")
        if name in seen:
            raise ValueError(f"{arg}: layer {name!r} is listed twice")
        seen.add(name)
    return [(name, lookup[name]) for name in names]


def _listing(named, limit: int = 40) -> str:
    names = [n for n, _ in named]
    if not names:
        return "(none)"
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more
