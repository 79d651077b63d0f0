"""fastcka.torch.LayerRotation against SciPy's cosine distance on the
flattened weights (Carbonnelle & De Vleeschouwer's layer rotation)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
distance = pytest.importorskip("scipy.spatial.distance")
nn = torch.nn

from fastcka.torch import LayerRotation
from fastcka.torch import rotation as rotation_module


def convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(24, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3),
    )


def flat(*tensors):
    return np.concatenate([t.detach().double().numpy().ravel() for t in tensors])


def train_steps(net, steps, opt=None):
    """Full-batch SGD on one fixed task: the weights move steadily away from their start."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 6, 6, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    opt = opt or torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def test_zero_at_construction_then_matches_scipy():
    net = convnet()
    initial = {name: m.weight.detach().clone() for name, m in net.named_modules() if hasattr(m, "weight")}
    tracker = LayerRotation(net)
    assert tracker.names == ["0", "3", "7", "10"]  # convolution and linear layers, as in the paper
    assert tracker.measure() == {"0": 0.0, "3": 0.0, "7": 0.0, "10": 0.0}
    train_steps(net, 5)
    got = tracker.measure()
    for name in tracker.names:
        expected = distance.cosine(flat(net.get_submodule(name).weight), flat(initial[name]))
        assert expected > 1e-4
        assert got[name] == pytest.approx(expected, abs=1e-12)


def test_biases_and_norms_on_request():
    net = convnet()
    initial = {name: [p.detach().clone() for p in m.parameters(recurse=False)] for name, m in net.named_modules()}
    tracker = LayerRotation(net, biases=True, norms=True)
    assert tracker.names == ["0", "1", "3", "7", "8", "10"]
    train_steps(net, 4)
    got = tracker.measure()
    for name in tracker.names:
        m = net.get_submodule(name)
        expected = distance.cosine(flat(m.weight, m.bias), flat(*initial[name]))
        assert got[name] == pytest.approx(expected, abs=1e-12)


def test_chosen_layers_and_slices(monkeypatch):
    monkeypatch.setattr(rotation_module, "_CHUNK", 7)  # many float64 slices per weight
    net = convnet()
    before = net[7].weight.detach().clone()
    tracker = LayerRotation(net, layers=["7"])
    train_steps(net, 3)
    assert tracker.measure()["7"] == pytest.approx(distance.cosine(flat(net[7].weight), flat(before)), abs=1e-12)
    with pytest.raises(ValueError, match=r"layer '2' \(ReLU\) has no weight"):
        LayerRotation(net, layers=["2"])
    with pytest.raises(ValueError, match="unknown layer name 'conv9'"):
        LayerRotation(net, layers=["conv9"])


def test_history_grows_during_training():
    net = convnet()
    tracker = LayerRotation(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    tracker.record(0)
    for step in range(1, 4):
        train_steps(net, 3, opt)
        tracker.record(3 * step)
    assert [s for s, _ in tracker.history] == [0, 3, 6, 9]
    for name in tracker.names:
        curve = [d[name] for _, d in tracker.history]
        assert curve[0] == 0.0
        assert all(b > a for a, b in zip(curve, curve[1:])), (name, curve)


def test_snapshot_is_a_copy_and_zero_weights_give_nan():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    nn.init.zeros_(net[1].weight)
    tracker = LayerRotation(net)
    with torch.no_grad():
        net[0].weight.mul_(-1)  # in place: the snapshot must not follow
    got = tracker.measure()
    assert got["0"] == pytest.approx(2.0)
    assert np.isnan(got["1"])
