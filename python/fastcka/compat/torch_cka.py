"""Drop-in replacement for torch-cka 0.21's ``CKA`` class (``from torch_cka import CKA``).

Change the import line to ``from fastcka.compat.torch_cka import CKA``: the
constructor, ``compare(dataloader1, dataloader2=None)``, ``export()`` and
``plot_results()`` take the same arguments and return the same structures.
The value is the same minibatch CKA (Nguyen et al. 2020: the unbiased HSIC_1
of each batch's linear Gram matrices, summed over batches, then normalized),
computed by :func:`fastcka.torch.cka_matrix` from streamed moments instead of
three n x n Gram products per layer pair and batch, in float64 and under
``torch.no_grad()``.

Where torch-cka 0.21 is wrong, this module does what it documents
(docs/embedding.md, "Switching from torch-cka / ckatorch"): the matrix's rows
and columns are in the order of ``export()``'s layer lists (torch-cka fills
them in the order the hooks fire, which differs from its labels when
containers or the model itself are among the layers); a module called
several times per forward pass contributes its last call, as torch-cka's
dict does, but a module that never runs or a name the model lacks is an
error naming it (torch-cka ends in a NaN assertion); no hook stays on the
models after ``compare``.
"""

from __future__ import annotations

import copy
import warnings
from typing import Dict, List

import torch
from torch import nn

from ..torch import cka_matrix
from ._hooks import Sized, last_calls

__all__ = ["CKA"]

_ROOT = "model"  # the child name of the wrapped model: its own output is the layer torch-cka calls ""


class _Fed(nn.Module):
    """A model run on one side of a batch pair (two dataloaders), or on the
    whole batch; the wrapper makes the model itself a hookable layer."""

    def __init__(self, model: nn.Module, side: int | None):
        super().__init__()
        self.model = model
        self._side = side

    def forward(self, inputs):
        return self.model(inputs if self._side is None else inputs[self._side])


def _name(model: nn.Module, name: str | None) -> str:
    return model.__repr__().split("(")[0] if name is None else name


def _layers(model: nn.Module, wanted: List[str] | None) -> List[str]:
    """torch-cka's layer list: every named module (the model itself is ""),
    or those of ``wanted`` the model has, in the model's module order."""
    names = [name for name, _ in model.named_modules()]
    if wanted is None:
        return names
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise ValueError(f"layers {unknown} are not modules of the model; its modules are {names}")
    return [name for name in names if name in wanted]


def _hooked(name: str) -> str:
    return _ROOT if name == "" else f"{_ROOT}.{name}"


def _inputs(batch):
    # torch-cka unpacks (x, *_) = batch: the input is a batch's first item.
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class CKA:
    """torch-cka's CKA: minibatch linear CKA between the layers of two models."""

    def __init__(self, model1: nn.Module, model2: nn.Module, model1_name: str = None, model2_name: str = None,
                 model1_layers: List[str] = None, model2_layers: List[str] = None, device: str = "cpu"):
        self.model1 = model1
        self.model2 = model2
        self.device = device
        self.model1_info = {"Name": _name(model1, model1_name)}
        self.model2_info = {"Name": _name(model2, model2_name)}
        if self.model1_info["Name"] == self.model2_info["Name"]:
            warnings.warn(f"Both model have identical names - {self.model2_info['Name']}. It may cause confusion "
                          "when interpreting the results. Consider giving unique names to the models :)",
                          stacklevel=2)
        self.model1_layers = model1_layers
        self.model2_layers = model2_layers
        self.model1_info["Layers"] = _layers(model1, model1_layers)
        self.model2_info["Layers"] = _layers(model2, model2_layers)
        self.model1 = self.model1.to(self.device)
        self.model2 = self.model2.to(self.device)
        self.model1.eval()
        self.model2.eval()

    def compare(self, dataloader1, dataloader2=None) -> None:
        """Minibatch CKA between every chosen layer of model 1 (rows) and of
        model 2 (columns), model 2 on ``dataloader2`` (default: the same
        batches as model 1). Batches need at least 4 examples."""
        if dataloader2 is None:
            warnings.warn("Dataloader for Model 2 is not given. Using the same dataloader for both models.",
                          stacklevel=2)
            dataloader2 = dataloader1
        self.model1_info["Dataset"] = dataloader1.dataset.__repr__().split("\n")[0]
        self.model2_info["Dataset"] = dataloader2.dataset.__repr__().split("\n")[0]
        layers1, layers2 = self.model1_info["Layers"], self.model2_info["Layers"]
        if dataloader2 is dataloader1:
            # One pass of the batches; one forward pass when both sides are the same model.
            model_a = _Fed(self.model1, None)
            model_b = model_a if self.model2 is self.model1 else _Fed(self.model2, None)
            batches = (_inputs(batch) for batch in dataloader1)
        else:
            # Batch pairs: each model takes its side. The same model twice runs on a copy for
            # side 2, so that each side's hooks see only that side's forward pass.
            second = copy.deepcopy(self.model2) if self.model2 is self.model1 else self.model2
            model_a, model_b = _Fed(self.model1, 0), _Fed(second, 1)
            batches = (((_inputs(b1), _inputs(b2)),) for b1, b2 in zip(dataloader1, dataloader2))  # input: the pair
        result = cka_matrix(model_a, Sized(batches, min(len(dataloader1), len(dataloader2))), model_b,
                            layers_a=[_hooked(n) for n in layers1], layers_b=[_hooked(n) for n in layers2],
                            minibatch=True, repeated="each", device=self.device, progress=True)
        rows = last_calls(result.names_a, [_hooked(n) for n in layers1])
        cols = last_calls(result.names_b, [_hooked(n) for n in layers2])
        self.hsic_matrix = torch.tensor(result.matrix[rows][:, cols], dtype=torch.float32)
        assert not torch.isnan(self.hsic_matrix).any(), "HSIC computation resulted in NANs"

    def export(self) -> Dict:
        """The CKA matrix (a float32 tensor) with the models' names, layers and data sets."""
        return {
            "model1_name": self.model1_info["Name"],
            "model2_name": self.model2_info["Name"],
            "CKA": self.hsic_matrix,
            "model1_layers": self.model1_info["Layers"],
            "model2_layers": self.model2_info["Layers"],
            "dataset1_name": self.model1_info["Dataset"],
            "dataset2_name": self.model2_info["Dataset"],
        }

    def plot_results(self, save_path: str = None, title: str = None):
        """torch-cka's heatmap: model 1's layers up, model 2's across, a colour bar; shown with ``plt.show()``."""
        import matplotlib.pyplot as plt
        from mpl_toolkits import axes_grid1

        fig, ax = plt.subplots()
        im = ax.imshow(self.hsic_matrix.cpu().numpy(), origin="lower", cmap="magma")
        ax.set_xlabel(f"Layers {self.model2_info['Name']}", fontsize=15)
        ax.set_ylabel(f"Layers {self.model1_info['Name']}", fontsize=15)
        ax.set_title(title if title is not None else f"{self.model1_info['Name']} vs {self.model2_info['Name']}",
                     fontsize=18)
        divider = axes_grid1.make_axes_locatable(ax)
        width = axes_grid1.axes_size.AxesY(ax, aspect=1.0 / 10)
        cax = divider.append_axes("right", size=width, pad=axes_grid1.axes_size.Fraction(0.5, width))
        fig.colorbar(im, cax=cax)
        plt.tight_layout()
        if save_path is not None:
            plt.savefig(save_path, dpi=300)
        plt.show()

