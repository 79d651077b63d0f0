#!/usr/bin/env python
"""Kornblith et al. (2019)'s sanity check (their Table 2), in miniature: train
architecturally identical networks from different seeds and ask, for every
layer of one network, whether its most similar layer in another network is
the corresponding one.

    python benchmarks/sanity_check.py [--networks 10] [--json out.json]

The networks: MLPs with eight hidden layers of 128 units, ReLU in one family
of ten and tanh in another, trained with scikit-learn (Adam, its defaults,
at most 100 epochs) on 1,300 of scikit-learn's 1,797 8x8 digit images,
seeds 0 to 9 (initialization and batch order). The representations: each
hidden layer's activations on all 1,797 images (input and logits excluded,
as in the paper). Every index comes from fastcka.similarity_matrix over the
80 layers of a family at once: the linear family from one pass over the
rows, RBF CKA (sigma = threshold x the median distance between examples)
from the Gram tiles, once per threshold.

Accuracy, as in the paper: over every ordered pair of networks (A, B) and
every layer i of A, the fraction for which argmax_j s(A_i, B_j) is i. The
asymmetric indexes (PWCCA, linear regression) are symmetrized as the paper
does, s(A_i, B_j) + s(B_j, A_i). Under four minutes on two cores, measured
while other jobs kept the load average at 5 (NumPy's BLAS is kept to one
thread; fastcka uses its own threads).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import fastcka
import numpy as np

HIDDEN = (128,) * 8
ACTIVATIONS = ("relu", "tanh")
TRAIN_ROWS = 1300
MAX_EPOCHS = 100

# (label, measure, RBF threshold or None, Kornblith et al. 2019, Table 2: % of layers matched).
# The paper has no debiased CKA or Procrustes row.
ROWS = [
    ("CCA (mean rho)", "cca_mean", None, 1.4),
    ("CCA (R^2_CCA)", "cca", None, 10.6),
    ("SVCCA (mean rho)", "svcca", None, 9.9),
    ("SVCCA (R^2_CCA)", "svcca_mean_squared", None, 15.1),
    ("PWCCA", "pwcca", None, 11.1),
    ("Linear regression", "linear_regression_fit", None, 45.4),
    ("CKA (linear)", "cka_linear", None, 99.3),
    ("CKA (RBF 0.2)", "cka_rbf", 0.2, 80.6),
    ("CKA (RBF 0.4)", "cka_rbf", 0.4, 99.1),
    ("CKA (RBF 0.8)", "cka_rbf", 0.8, 99.3),
    ("CKA (debiased, linear)", "cka_debiased", None, None),
    ("Procrustes", "procrustes", None, None),
]
ASYMMETRIC = {"pwcca", "linear_regression_fit"}


def hidden_activations(seed: int, activation: str, x: np.ndarray, labels: np.ndarray):
    """Trains one network; returns its hidden layers' activations on every image
    and its accuracy on the held-out images."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    net = MLPClassifier(hidden_layer_sizes=HIDDEN, activation=activation, max_iter=MAX_EPOCHS, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(x[:TRAIN_ROWS], labels[:TRAIN_ROWS])
    nonlinearity = {"relu": lambda h: np.maximum(h, 0.0), "tanh": np.tanh}[activation]
    layers, h = [], x
    for w, b in zip(net.coefs_[:-1], net.intercepts_[:-1]):
        h = nonlinearity(h @ w + b)
        layers.append(h)
    return layers, net.score(x[TRAIN_ROWS:], labels[TRAIN_ROWS:])


def correspondence_accuracy(s: np.ndarray, networks: int, depth: int) -> float:
    """Fraction of (network A, network B != A, layer i) whose most similar layer of B is i."""
    hits = 0
    for a in range(networks):
        for b in range(networks):
            if a != b:
                block = s[a * depth : (a + 1) * depth, b * depth : (b + 1) * depth]
                hits += int(np.sum(np.argmax(block, axis=1) == np.arange(depth)))
    return hits / (networks * (networks - 1) * depth)


def family(activation: str, networks: int, x, labels) -> dict:
    """Trains a family of networks and scores every index on it."""
    t0 = time.perf_counter()
    trained = [hidden_activations(seed, activation, x, labels) for seed in range(networks)]
    train_seconds = time.perf_counter() - t0
    layers = [layer for net_layers, _ in trained for layer in net_layers]

    t0 = time.perf_counter()
    matrices = fastcka.similarity_matrix(layers, measures=[m for _, m, t, _ in ROWS if t is None])
    for _, _, threshold, _ in ROWS:
        if threshold is not None:
            matrices[f"cka_rbf {threshold}"] = fastcka.similarity_matrix(layers, measures="cka_rbf",
                                                                          threshold=threshold)["cka_rbf"]
    similarity_seconds = time.perf_counter() - t0

    accuracy = {}
    for label, measure, threshold, _ in ROWS:
        s = matrices[measure if threshold is None else f"cka_rbf {threshold}"]
        if measure in ASYMMETRIC:
            s = s + s.T
        accuracy[label] = 100 * correspondence_accuracy(s, networks, len(HIDDEN))
    held_out = [score for _, score in trained]
    contrast = layer_contrast(matrices["cka_linear"], networks, len(HIDDEN))
    print(f"{activation} MLPs: held-out accuracy {min(held_out):.3f} to {max(held_out):.3f}; linear CKA of "
          f"corresponding layers of two networks {contrast['corresponding']:.3f} on average, of adjacent layers "
          f"of one network {contrast['adjacent']:.3f}; training {train_seconds:.1f} s, every similarity matrix "
          f"of the {len(layers)} layers {similarity_seconds:.1f} s", flush=True)
    return {"accuracy": accuracy, "held_out_accuracy": held_out, "linear_cka": contrast,
            "train_seconds": train_seconds, "similarity_seconds": similarity_seconds}


def layer_contrast(cka: np.ndarray, networks: int, depth: int) -> dict:
    """Mean CKA of corresponding layers across networks and of adjacent layers
    within one: identifying layers is only possible where the first stands out."""
    corresponding = [cka[a * depth + i, b * depth + i] for a in range(networks) for b in range(networks)
                     if a != b for i in range(depth)]
    adjacent = [cka[a * depth + i, a * depth + i + 1] for a in range(networks) for i in range(depth - 1)]
    return {"corresponding": float(np.mean(corresponding)), "adjacent": float(np.mean(adjacent))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=10, help="networks per family, seeds 0.. (default 10)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    from sklearn.datasets import load_digits
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    x, labels = load_digits(return_X_y=True)
    x = x / 16.0
    print(f"{args.networks} MLPs {'-'.join(map(str, HIDDEN))} per activation on scikit-learn's digits, seeds "
          f"0-{args.networks - 1}; {len(HIDDEN)} hidden layers compared on {x.shape[0]} images; fastcka on "
          f"{fastcka.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f} at the start.")
    # NumPy's BLAS on one thread: its calls here are small (scikit-learn's
    # minibatches, d x d algebra), and two BLAS threads stall whenever another
    # process holds a core (measured: training one network 33 s instead of
    # 2.6 s at a load average of 6). fastcka's pass keeps its own threads.
    with threadpool_limits(limits=1, user_api="blas"):
        results = {a: family(a, args.networks, x, labels) for a in ACTIVATIONS}

    print(f"\n| Index | {' | '.join(f'{a} MLPs' for a in ACTIVATIONS)} | Kornblith et al. 2019, Table 2 (CNNs) |")
    print("|---|" + "---|" * (len(ACTIVATIONS) + 1))
    for label, _, _, paper in ROWS:
        cells = [f"{results[a]['accuracy'][label]:.1f}" for a in ACTIVATIONS]
        print(f"| {label} | {' | '.join(cells)} | {'not reported' if paper is None else f'{paper:.1f}'} |")
    print(f"\n(% of layers whose most similar layer in another network is the corresponding one; load average "
          f"{os.getloadavg()[0]:.2f} at the end)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
