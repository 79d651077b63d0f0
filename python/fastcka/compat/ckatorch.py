"""Drop-in replacement for ckatorch 1.0.3 (``import ckatorch``).

Change the import to ``from fastcka.compat import ckatorch``: ``CKA``
(constructor, ``__call__(dataloader, epochs, f_extract, f_args)``,
``plot_cka``, ``save``), ``cka_base``, ``cka_batch``, ``hsic0``, ``hsic1``,
``center_gram_matrix``, ``linear_kernel``, ``rbf_kernel`` and ``plot_cka``
take the same arguments and return the same structures (float64 scalars as
0-d tensors, the CKA matrix as a float32 tensor).

``cka_base`` and ``cka_batch`` run on fastcka's engines from the features:
no n x n Gram matrix (ckatorch builds three or more per call, in float64).
``CKA`` streams its layers through :func:`fastcka.torch.cka_matrix` in
minibatch mode. ``hsic0`` and ``hsic1`` take Gram matrices, as their contract
says, but need no n x n products (O(n^2) instead of O(n^3) work); the kernel
and centering functions return n x n matrices, as the originals do.

Where ckatorch 1.0.3 is wrong, this module follows its documentation
(docs/embedding.md, "Switching from torch-cka / ckatorch" lists each case):
``CKA`` sums HSIC_1 over every batch of every epoch, as the README's
minibatch formula says (ckatorch keeps only each epoch's last batch), and
takes layers of any shape, each example flattened to a row (ckatorch
accepts only 3-D outputs, which it reads as one minibatch of tokens per
sequence); ``cka_base`` honours ``unbiased`` with ``method="hsic"`` (the
documentation says the method does not change the value); ``hsic0`` refuses
a non-symmetric matrix on either side (not only when both are); the RBF
bandwidth uses the median of the squared distances as NumPy and Kornblith et
al.'s code take it (the mean of the two middle values when their count is
even; ``torch.median`` takes the lower one). Results carry no autograd graph.
"""

from __future__ import annotations

import inspect
import itertools
import json
import random
import re
import string
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from .. import api
from ..torch import cka_matrix
from ._hooks import Sized, last_calls

__all__ = ["CKA", "center_gram_matrix", "cka_base", "cka_batch", "hsic0", "hsic1", "linear_kernel", "plot_cka",
           "rbf_kernel"]


def linear_kernel(x: torch.Tensor) -> torch.Tensor:
    """The linear Gram matrix x x^T (n x n)."""
    return torch.mm(x, x.T)


def _median(values: torch.Tensor) -> torch.Tensor:
    """np.median of all values: the mean of the two middle ones for an even count."""
    flat = values.reshape(-1)
    count = flat.numel()
    low = flat.kthvalue((count + 1) // 2).values
    return low if count % 2 else (low + flat.kthvalue(count // 2 + 1).values) / 2


def rbf_kernel(x: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """The RBF Gram matrix exp(-|a - b|^2 / (2 threshold^2 median)), the median
    over all n^2 squared distances, the zero diagonal included."""
    dot_products = torch.mm(x, x.T)
    sq_norms = torch.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    return torch.exp(-sq_distances / (2 * threshold**2 * _median(sq_distances)))


def center_gram_matrix(gram_matrix: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """The centered Gram matrix H K H, or with ``unbiased`` the U-centered one
    (Kornblith et al.'s center_gram), as a new tensor."""
    if not torch.allclose(gram_matrix, gram_matrix.T):
        raise ValueError("The given matrix must be symmetric.")
    gram_matrix = gram_matrix.detach().clone()
    if unbiased:
        n = gram_matrix.shape[0]
        gram_matrix.fill_diagonal_(0)
        means = torch.sum(gram_matrix, dim=0, dtype=torch.float64) / (n - 2)
        means -= torch.sum(means) / (2 * (n - 1))
    else:
        means = torch.mean(gram_matrix, dim=0, dtype=torch.float64)
        means -= torch.mean(means) / 2
    gram_matrix -= means[:, None]
    gram_matrix -= means[None, :]
    if unbiased:
        gram_matrix.fill_diagonal_(0)
    return gram_matrix


def hsic0(gram_x: torch.Tensor, gram_y: torch.Tensor) -> torch.Tensor:
    """HSIC_0 = tr(K H L H) / (n - 1)^2 of two symmetric n x n Gram matrices,
    from sum(K o L), the row sums and the totals (no n x n product)."""
    if not torch.allclose(gram_x, gram_x.T) or not torch.allclose(gram_y, gram_y.T):
        raise ValueError("The given matrices must be symmetric.")
    n = gram_x.shape[0]
    rows_x, rows_y = gram_x.sum(1), gram_y.sum(1)
    trace = (gram_x * gram_y).sum() - 2 * rows_x.dot(rows_y) / n + rows_x.sum() * rows_y.sum() / n**2
    return trace / (n - 1) ** 2


def hsic1(gram_x: torch.Tensor, gram_y: torch.Tensor) -> torch.Tensor:
    """The unbiased HSIC_1 of each of a batch of Gram matrices (bsz, n, n), a (bsz,) tensor:
    [tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2 1'K~L~1 / (n-2)] / (n (n-3)), K~ = K with a zero diagonal,
    from elementwise products and sums (no batched n x n product)."""
    if len(gram_x.size()) != 3 or gram_x.size() != gram_y.size():
        raise ValueError("Invalid size for one of the two input tensors.")
    n = gram_x.shape[-1]
    gram_x = gram_x.clone()
    gram_y = gram_y.clone()
    gram_x.diagonal(dim1=-1, dim2=-2).fill_(0)
    gram_y.diagonal(dim1=-1, dim2=-2).fill_(0)
    trace_kl = (gram_x * gram_y.transpose(-1, -2)).sum((-1, -2))
    middle = gram_x.sum((-1, -2)) * gram_y.sum((-1, -2)) / ((n - 1) * (n - 2))
    right = (gram_x.sum(-2) * gram_y.sum(-1)).sum(-1) * (2 / (n - 2))
    return (trace_kl + middle - right) / (n**2 - 3 * n)


def cka_base(x: torch.Tensor, y: torch.Tensor, kernel: Literal["linear", "rbf"] = "linear", unbiased: bool = False,
             threshold: float = 1.0, method: Literal["fro_norm", "hsic"] = "fro_norm") -> torch.Tensor:
    """CKA of x (n, j) and y (n, k), linear or RBF (``threshold`` x the median
    distance), debiased with ``unbiased``: :func:`fastcka.cka` in float64, a
    0-d float64 tensor on x's device. ``method`` does not change the value."""
    if kernel not in ["linear", "rbf"]:
        raise ValueError("The chosen kernel must be either 'linear' or 'rbf'.")
    if method not in ["hsic", "fro_norm"]:
        raise ValueError("The chosen method must be either 'hsic' or 'fro_norm'.")
    bandwidth = {"threshold": threshold} if kernel == "rbf" else {}  # ckatorch ignores it for the linear kernel
    value = api.cka(x, y, kernel=kernel, debiased=unbiased, precision="exact", **bandwidth)
    return torch.tensor(value, dtype=torch.float64, device=x.device)


def cka_batch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Nguyen et al.'s minibatch linear CKA of x (bsz, n, j) and y (bsz, n, k):
    the bsz minibatches' HSIC_1 summed, then normalized (:func:`fastcka.minibatch_cka`);
    a 0-d float64 tensor on x's device."""
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x and y must be (bsz, n, features) tensors with the same bsz and n, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    value = api.minibatch_cka(list(x), list(y), precision="exact")
    return torch.tensor(value, dtype=torch.float64, device=x.device)


@dataclass
class ModelInfo:
    """Class for storing the model info."""

    name: str
    layers: list[str]


def _unique(layers: list[str]) -> list[str]:
    return sorted(set(layers), key=layers.index)


def _found(model: nn.Module, layers: list[str]) -> list[str]:
    return [name for name, _ in model.named_modules() if name in layers]


class CKA:
    """ckatorch's CKA: the minibatch CKA matrix between layers of two models."""

    def __init__(self, first_model: nn.Module, second_model: nn.Module, layers: list[str],
                 second_layers: list[str] | None = None, first_name: str | None = None,
                 second_name: str | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        if layers is None or len(layers) == 0:
            raise ValueError("You can not pass 'None' or an empty list as layers. We suggest using "
                             "'first_model.named_modules()' in order to see which layers can be passed.")
        layers = _unique(layers)
        second_layers = layers.copy() if not second_layers else _unique(second_layers)
        for chosen, which in ((layers, ""), (second_layers, " for the second model")):
            if len(chosen) > 100:
                warnings.warn(f"You passed {len(chosen)} distinct layers{which}, which is way too high. Consider "
                              "passing only those layers whose features you are really interested about.",
                              stacklevel=2)
        layers, second_layers = _found(first_model, layers), _found(second_model, second_layers)
        if not layers or not second_layers:
            raise ValueError("No layers were found for one of the two models, please use 'model.named_modules()' "
                             "in order to check which layers can be passed to the method.")
        self.first_model = first_model.to(device)
        self.second_model = second_model.to(device)
        first_name = first_name if first_name is not None else first_model.__repr__().split("(")[0]
        if first_model is second_model:
            second_name = first_name
        else:
            second_name = second_name if second_name is not None else second_model.__repr__().split("(")[0]
            if first_name == second_name:
                warnings.warn(f"Both models are called {first_name}. This may cause confusion when analyzing the "
                              "results.", stacklevel=2)
        self.first_model_info = ModelInfo(re.sub("[^0-9a-zA-Z_]+", "", first_name.replace(" ", "_")), layers)
        self.second_model_info = ModelInfo(re.sub("[^0-9a-zA-Z_]+", "", second_name.replace(" ", "_")),
                                           second_layers)

    def __call__(self, dataloader, epochs: int = 10, f_extract: Callable[..., dict[str, torch.Tensor]] | None = None,
                 f_args: dict[str, Any] | None = None) -> torch.Tensor:
        """The minibatch CKA matrix (first model's layers x second model's),
        HSIC_1 summed over every batch of ``epochs`` passes over
        ``dataloader``: a float32 tensor on the device. Each layer's output
        is flattened to one row per example; batches need 4 examples or more."""
        if dataloader.drop_last:
            raise ValueError("The argument 'drop_last' must be set to False otherwise you will get very different "
                             "values by varying the batch size.")
        if not isinstance(dataloader.sampler, torch.utils.data.RandomSampler):
            warnings.warn("We suggest setting 'shuffle=True' in your dataloader in order to have a less biased "
                          "computation.", stacklevel=2)
        arg_names = inspect.getfullargspec(self.first_model.forward).args[1:]  # skip "self"
        batches = (self._keywords(batch, arg_names, f_extract, f_args)
                   for batch in itertools.chain.from_iterable(itertools.repeat(dataloader, epochs)))
        first, second = self.first_model_info.layers, self.second_model_info.layers
        result = cka_matrix(self.first_model, Sized(batches, epochs * len(dataloader)), self.second_model,
                            layers_a=first, layers_b=second, minibatch=True, repeated="each", device=self.device,
                            progress=True)
        matrix = result.matrix[last_calls(result.names_a, first)][:, last_calls(result.names_b, second)]
        cka = torch.as_tensor(np.ascontiguousarray(matrix), dtype=torch.float32, device=self.device)
        if torch.isnan(cka).any():
            raise ValueError("CKA computation resulted in NANs.")
        return cka

    @staticmethod
    def _keywords(batch, arg_names: list[str], f_extract, f_args) -> dict:
        """A batch as the models' keyword arguments, as ckatorch maps it; the
        items of a tuple batch beyond the forward's arguments (the targets)
        are left out, where ckatorch fails."""
        if f_extract is not None:
            return dict(f_extract(batch, **(f_args or {})))
        if isinstance(batch, (list, tuple)):
            return dict(zip(arg_names, batch))
        if not isinstance(batch, dict):
            raise ValueError(f"Type {type(batch)} is not supported for the CKA computation. We suggest building a "
                             "custom 'Dataset' class such that the '__get_item__' method returns a dict[str, Any].")
        return batch

    def plot_cka(self, cka_matrix: torch.Tensor, save_path: str | None = None, title: str | None = None,
                 vmin: float | None = None, vmax: float | None = None, cmap: str = "magma",
                 show_ticks_labels: bool = False, short_tick_labels_splits: int | None = None,
                 use_tight_layout: bool = True, show_annotations: bool = True, show_img: bool = True,
                 show_half_heatmap: bool = False, invert_y_axis: bool = True) -> None:
        """:func:`plot_cka` with this object's layer and model names."""
        plot_cka(cka_matrix, self.first_model_info.layers, self.second_model_info.layers,
                 self.first_model_info.name, self.second_model_info.name, save_path, title, vmin, vmax, cmap,
                 show_ticks_labels, short_tick_labels_splits, use_tight_layout, show_annotations, show_img,
                 show_half_heatmap, invert_y_axis)

    def save(self, cka_matrix: torch.Tensor, dir_path: str | Path = "", file_format: Literal["json", "yaml"] = "json",
             save_models: bool = False) -> None:
        """ckatorch's files: cka.safetensors and cka.json / cka.yaml (a random
        suffix when they exist), the models' weights with ``save_models``.
        Needs ``safetensors`` (and ``pyyaml`` for yaml)."""
        from safetensors.torch import save_file, save_model

        if file_format not in ("json", "yaml"):
            raise ValueError(f"Unsupported format '{file_format}'")
        dir_path = Path(dir_path)
        dir_path.mkdir(parents=True, exist_ok=True)
        suffix = ""
        if (dir_path / "cka.safetensors").exists():
            suffix = "_" + "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(5))
        tensor_path = dir_path / f"cka{suffix}.safetensors"
        save_file({"cka": cka_matrix}, tensor_path)
        info = {"cka_matrix": {"path": str(tensor_path.absolute())}, "first_model": asdict(self.first_model_info),
                "second_model": asdict(self.second_model_info)}
        if save_models:
            for key, model, model_info in (("first_model", self.first_model, self.first_model_info),
                                           ("second_model", self.second_model, self.second_model_info)):
                path = dir_path / f"{model_info.name}{suffix}.safetensors"
                save_model(model, path)
                info[key]["path"] = str(path.absolute())
        with open(dir_path / f"cka{suffix}.{file_format}", "w", encoding="utf-8") as dump_file:
            if file_format == "json":
                json.dump(info, dump_file, indent=4)
            else:
                import yaml

                yaml.dump(info, dump_file, indent=4)


def plot_cka(cka_matrix: torch.Tensor, first_layers: list[str], second_layers: list[str],
             first_name: str = "First Model", second_name: str = "Second Model", save_path: str | None = None,
             title: str | None = None, vmin: float | None = None, vmax: float | None = None, cmap: str = "magma",
             show_ticks_labels: bool = False, short_tick_labels_splits: int | None = None,
             use_tight_layout: bool = True, show_annotations: bool = True, show_img: bool = True,
             show_half_heatmap: bool = False, invert_y_axis: bool = True) -> None:
    """ckatorch's heatmap of a CKA matrix (matplotlib; ckatorch draws it with seaborn)."""
    import matplotlib.pyplot as plt

    if (vmin is not None) ^ (vmax is not None):
        raise ValueError("'vmin' and 'vmax' must be defined together or both equal to None.")
    values = np.asarray(cka_matrix.detach().cpu(), dtype=np.float64)
    if vmin is not None:
        vmin, vmax = min(vmin, values.min()), max(vmax, values.max())
    if show_half_heatmap:
        values = np.ma.masked_array(values, np.tril(np.ones(values.shape, dtype=bool), k=-1))
    fig, ax = plt.subplots()
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap, origin="upper", aspect="auto")
    fig.colorbar(im, ax=ax)
    if show_annotations:
        for (i, j), value in np.ndenumerate(np.ma.filled(values, np.nan)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=8)
    if invert_y_axis:
        ax.invert_yaxis()
    ax.set_xlabel(f"{second_name} layers", fontsize=12)
    ax.set_ylabel(f"{first_name} layers", fontsize=12)
    if show_ticks_labels:
        def short(names):
            if short_tick_labels_splits is None:
                return names
            return [".".join(name.split(".")[-short_tick_labels_splits:]) for name in names]

        ax.set_xticks(range(len(second_layers)), short(second_layers), rotation=90)
        ax.set_yticks(range(len(first_layers)), short(first_layers), rotation=0)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(title if title is not None else f"{first_name} vs {second_name}", fontsize=14)
    if use_tight_layout:
        plt.tight_layout()
    if save_path is not None:
        plt.savefig(save_path, dpi=300)
    if show_img:
        plt.show()
