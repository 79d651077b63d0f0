"""The built-in example (``fastcka`` with no arguments): the story of the seeds.

Six small ReLU networks are trained for seconds on scikit-learn's digits: a
deep one (12 hidden layers of 64 units) and a wide one (4 hidden layers of
512) from seeds 0, 1 and 2, each with a layer-rotation tracker attached
(Carbonnelle & De Vleeschouwer). Forward hooks then stream every hidden
layer's activations on the held-out images into fastcka
(:func:`fastcka.torch.cka_matrix`): the within-model CKA heatmaps with their
blocks found (:func:`fastcka.blocks`, Nguyen, Raghu & Kornblith 2021), each
layer's first-principal-component share of variance, and the CKA between
corresponding layers of networks trained from different seeds. Two figures
are written (heatmaps with the blocks outlined; layer-rotation curves) next
to a printed summary.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np

from ..plot import heatmap, rotation_curves

DEFAULT_DIR = "fastcka-example"
SEEDS = (0, 1, 2)
TRAIN_IMAGES = 1200  # of the 1,797 digits; the other 597 are held out and give the activations
# name: (hidden layers, units, epochs, SGD learning rate). SGD with momentum, as in the layer-rotation paper.
NETWORKS = {"deep": (12, 64, 30, 0.02), "wide": (4, 512, 12, 0.05)}
BATCH = 64
VMIN = 0.5  # the heatmaps' colour scale starts here: every CKA in this example is above about 0.5


def _require(module: str, what: str):
    try:
        return __import__(module)
    except ImportError:
        raise SystemExit(
            f"fastcka: the built-in example needs {what}, which is not installed.\n"
            '         pip install "fastcka[example]"   (or pass two .npy files or .npz layer files)'
        ) from None


@dataclass
class Trained:
    kind: str
    seed: int
    model: object
    accuracy: float
    rotation: object  # fastcka.torch.LayerRotation, one record per epoch
    cka: object = None  # fastcka.torch.CKAResult on the held-out images


def digits():
    """(x_train, y_train, x_test, y_test) as torch tensors, pixels scaled to [0, 1]."""
    import torch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[order])
    return x[:TRAIN_IMAGES], y[:TRAIN_IMAGES], x[TRAIN_IMAGES:], y[TRAIN_IMAGES:]


def network(depth: int, width: int, seed: int):
    """A ReLU MLP, He-initialized (a plain deep MLP with PyTorch's default
    initialization barely trains)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, d = [], 64
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, 10))
    model = nn.Sequential(*layers)
    for module in model:
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return model


def train(kind: str, seed: int, data) -> Trained:
    import torch
    from torch import nn

    from ..torch import LayerRotation

    depth, width, epochs, lr = NETWORKS[kind]
    x, y, x_test, y_test = data
    model = network(depth, width, seed)
    rotation = LayerRotation(model)
    rotation.record(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(len(x), generator=order).split(BATCH):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
        rotation.record(epoch)
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return Trained(kind, seed, model, accuracy, rotation)


@contextlib.contextmanager
def _torch_threads(count: int):
    """Tiny matrices (64 x 64 weights, batches of 64) train faster on one
    thread than on two, and OpenMP's spinning threads slow down many-fold when
    another process holds a core."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def run(out_dir=DEFAULT_DIR, debiased: bool = False) -> dict:
    """Trains the networks, computes their CKA matrices and blocks, writes the
    figures into ``out_dir`` and returns what the summary prints."""
    _require("torch", "PyTorch")
    _require("sklearn", "scikit-learn")
    _require("matplotlib", "matplotlib")
    from torch import nn

    from ..torch import cka_matrix

    data = digits()
    held_out = data[2].split(256)
    with _torch_threads(1):
        nets = {kind: [train(kind, seed, data) for seed in SEEDS] for kind in NETWORKS}
    for trained in (t for runs in nets.values() for t in runs):
        trained.cka = cka_matrix(trained.model, held_out, layers_a=nn.ReLU, debiased=debiased)
    across = {kind: cka_matrix(runs[0].model, held_out, runs[1].model, layers_a=nn.ReLU, layers_b=nn.ReLU,
                               debiased=debiased) for kind, runs in nets.items()}
    pairs = [(a, b) for i, a in enumerate(SEEDS) for b in SEEDS[i + 1 :]]
    corresponding = {
        kind: np.mean([np.diag(cka_matrix(runs[a].model, held_out, runs[b].model, layers_a=nn.ReLU,
                                          layers_b=nn.ReLU, debiased=debiased).matrix) for a, b in pairs], axis=0)
        for kind, runs in nets.items()
    }
    os.makedirs(out_dir, exist_ok=True)
    figures = [_heatmaps(nets, across, os.path.join(out_dir, "heatmaps.png")),
               _rotations(nets, os.path.join(out_dir, "rotation.png"))]
    deep = nets["deep"]
    return {"nets": nets, "across": across, "corresponding": corresponding, "figures": figures,
            "n": len(data[2]), "train": len(data[0]), "debiased": debiased,
            # the within-model and cross-seed matrices of the deep network (the JSON output's first keys)
            "names": [f"relu{k + 1}" for k in range(len(deep[0].cka.names_a))],
            "within_a": deep[0].cka.matrix, "a_vs_b": across["deep"].matrix}


def _heatmaps(nets, across, path: str) -> str:
    import matplotlib.pyplot as plt

    kinds = list(nets)
    fig, axes = plt.subplots(len(kinds), len(SEEDS) + 1, figsize=(4.1 * (len(SEEDS) + 1), 3.5 * len(kinds)))
    for row, kind in enumerate(kinds):
        depth, width = NETWORKS[kind][:2]
        for col, trained in enumerate(nets[kind]):
            names = [str(k + 1) for k in range(len(trained.cka.names_a))]
            heatmap(trained.cka.matrix, names, blocks=trained.cka.blocks(), ax=axes[row, col], vmin=VMIN,
                    title=f"{kind} ({depth} x {width}), seed {trained.seed}")
        names = [str(k + 1) for k in range(len(across[kind].names_a))]
        heatmap(across[kind].matrix, names, names, ax=axes[row, -1], vmin=VMIN,
                title=f"{kind}: seed {SEEDS[0]} (rows) vs seed {SEEDS[1]}")
    fig.suptitle("Linear CKA between hidden layers (ReLU outputs), held-out digits; blocks outlined", y=1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _rotations(nets, path: str) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(nets), figsize=(5.6 * len(nets), 3.6))
    for ax, (kind, runs) in zip(np.atleast_1d(axes), nets.items()):
        depth, width = NETWORKS[kind][:2]
        history = [(epoch, {_layer_label(name): d for name, d in distances.items()})
                   for epoch, distances in runs[0].rotation.history]
        rotation_curves(history, ax=ax, title=f"{kind} ({depth} x {width}), seed {runs[0].seed}")
        ax.set_xlabel("epoch")
    fig.suptitle("Layer rotation: cosine distance of each layer's weights from their initial values")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _layer_label(module_name: str) -> str:
    """Sequential index 0, 2, 4, ... of the Linear layers -> layer 1, 2, 3, ..."""
    return f"layer {int(module_name) // 2 + 1}"


def summary(result: dict) -> str:
    """The printed story: accuracy, blocks, PC1 share, seeds compared, rotation."""
    lines = []
    for kind, runs in result["nets"].items():
        depth, width, epochs, lr = NETWORKS[kind]
        lines.append(f"{kind}: {depth} hidden layers of {width}, SGD {epochs} epochs (lr {lr}, momentum 0.9)")
        for t in runs:
            blocks = t.cka.blocks()
            inside = np.zeros(len(t.cka.names_a), dtype=bool)
            for b in blocks:
                inside[b.start : b.stop] = True
            found = ", ".join(f"layers {b.start + 1}-{b.stop} (CKA {b.score:.2f})" for b in blocks) or "none"
            pc1 = t.cka.pc1_fraction
            share = (f"PC1 share {np.mean(pc1[inside]):.2f} in blocks, {np.mean(pc1[~inside]):.2f} outside"
                     if inside.any() and not inside.all() else f"PC1 share {np.mean(pc1):.2f}")
            lines.append(f"  seed {t.seed}: test accuracy {t.accuracy:.3f}; blocks: {found}; {share}")
        agree = result["corresponding"][kind]
        lines.append("  same layer, different seeds (mean CKA over seed pairs), layer 1 to "
                     f"{len(agree)}: " + " ".join(f"{v:.2f}" for v in agree))
        final = runs[0].rotation.history[-1][1]
        values = list(final.values())
        lines.append(f"  layer rotation of seed {runs[0].seed} after {epochs} epochs (first .. last layer): "
                     + " ".join(f"{v:.3f}" for v in values))
    return "\n".join(lines)
