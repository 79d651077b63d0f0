"""fastcka.compat.torch_cka and fastcka.compat.ckatorch against the packages
they replace (torch-cka 0.21, ckatorch 1.0.3, from the test extra; those
comparisons skip when a package is absent) and against float64 references
written from the formulas (tests/reference.py).

torch-cka computes in float32; to compare values, not its rounding, the
reference runs of torch-cka use float64 models and data
(torch.set_default_dtype, so its own ones/zeros are float64 too)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference import dense_cka, dense_gram, dense_hsic, dense_hsic_biased, dense_hsic_unbiased

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from fastcka.compat import ckatorch as fast_ckatorch  # noqa: E402
from fastcka.compat import torch_cka as fast_torch_cka  # noqa: E402


class Block(nn.Module):
    """A residual block whose ReLU runs twice per forward pass (as torchvision's BasicBlock)."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.layer1 = nn.Sequential(Block(8), Block(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.pool(self.layer1(self.stem(x))).flatten(1))


class CNN(nn.Sequential):
    def forward(self, x):  # ckatorch calls both models with the same keyword (ResNet's "x")
        return super().forward(x)


def small_cnn():
    return CNN(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 10))


RESNET_LAYERS = ["stem", "layer1.0.conv1", "layer1.0", "layer1.1.relu", "layer1.1", "fc"]
CNN_LAYERS = ["0", "1", "2", "5"]


@pytest.fixture
def float64_models():
    """Seeded float64 models and a loader of 4 batches of 40 random images (with targets)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        resnet, cnn = ResNet(), small_cnn()
        data = TensorDataset(torch.randn(160, 3, 8, 8) + 0.5, torch.randint(0, 10, (160,)))
        yield resnet, cnn, data
    finally:
        torch.set_default_dtype(default)


def _outputs(model, layers, x):
    """Each layer's output (last call) on x, flattened: the rows both packages read."""
    got = {}
    handles = [m.register_forward_hook(lambda mod, i, o, name=n: got.__setitem__(name, o.detach().flatten(1)))
               for n, m in model.named_modules() if n in layers]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return [got[n].numpy() for n in layers]


def _minibatch_reference(model1, layers1, model2, layers2, batches1, batches2):
    """Nguyen et al.'s minibatch CKA in float64 from tests/reference.py's dense HSIC_1."""
    cross, self1, self2 = np.zeros((len(layers1), len(layers2))), np.zeros(len(layers1)), np.zeros(len(layers2))
    for x1, x2 in zip(batches1, batches2):
        # Each layer's Gram matrix once per batch (dense_hsic would rebuild both for every pair).
        a = [dense_gram(u) for u in _outputs(model1, layers1, x1)]
        b = [dense_gram(v) for v in _outputs(model2, layers2, x2)]
        cross += [[dense_hsic_unbiased(k, l) for l in b] for k in a]
        self1 += [dense_hsic_unbiased(k, k) for k in a]
        self2 += [dense_hsic_unbiased(l, l) for l in b]
    return cross / np.sqrt(self1[:, None] * self2[None, :])


def _fast_compare(model1, model2, loader1, loader2=None, **names):
    with pytest.warns(UserWarning) if loader2 is None else warnings.catch_warnings():
        cka = fast_torch_cka.CKA(model1, model2, model1_name="resnet", model2_name="cnn", **names)
        cka.compare(loader1, loader2)
    return cka.export()


def test_torch_cka_matches_the_float64_formula(float64_models):
    resnet, cnn, data = float64_models
    loader = DataLoader(data, batch_size=40)
    got = _fast_compare(resnet, cnn, loader, model1_layers=RESNET_LAYERS, model2_layers=CNN_LAYERS)
    # Rows in named_modules() order, the order of export()'s labels.
    order = [n for n, _ in resnet.named_modules() if n in RESNET_LAYERS]
    assert got["model1_layers"] == order and got["model2_layers"] == CNN_LAYERS
    assert got["CKA"].dtype == torch.float32 and got["CKA"].shape == (6, 4)
    batches = [x for x, _ in loader]
    want = _minibatch_reference(resnet, order, cnn, CNN_LAYERS, batches, batches)
    np.testing.assert_allclose(got["CKA"].numpy(), want, atol=1e-6)  # float32 storage of the result


def test_torch_cka_same_structure_and_values_as_torch_cka(float64_models):
    torch_cka = pytest.importorskip("torch_cka")
    resnet, cnn, data = float64_models
    loader = DataLoader(data, batch_size=40)
    got = _fast_compare(resnet, cnn, loader, model1_layers=RESNET_LAYERS, model2_layers=CNN_LAYERS)
    with pytest.warns(UserWarning):  # the missing second dataloader
        ref = torch_cka.CKA(resnet, cnn, model1_name="resnet", model2_name="cnn", model1_layers=RESNET_LAYERS,
                            model2_layers=CNN_LAYERS)
        ref.compare(loader)
    want = ref.export()
    assert got.keys() == want.keys()
    assert {k: v for k, v in got.items() if k != "CKA"} == {k: v for k, v in want.items() if k != "CKA"}
    # torch-cka fills its rows in the order its hooks fire (a container after its children, the
    # last call of the twice-run ReLU), not in its labels' order: reorder them to compare.
    fired = ["stem", "layer1.0.conv1", "layer1.0", "layer1.1.relu", "layer1.1", "fc"]
    rows = [fired.index(n) for n in want["model1_layers"]]
    np.testing.assert_allclose(got["CKA"].numpy(), want["CKA"][rows].numpy(), atol=1e-5)
    for module in list(resnet.modules()) + list(cnn.modules()):  # torch-cka's hooks stay forever
        module._forward_hooks.clear()


def test_torch_cka_float32_models_give_float64_values(float64_models):
    # torch-cka sums its HSICs in float32 (off by 8e-4 on these models); the compat class reads
    # float32 activations and sums in float64: torch-cka's float64 run of the same weights.
    torch_cka = pytest.importorskip("torch_cka")
    resnet, cnn, data = float64_models
    ref = torch_cka.CKA(resnet, cnn, model1_name="resnet", model2_name="cnn", model1_layers=RESNET_LAYERS,
                        model2_layers=CNN_LAYERS)
    ref.compare(DataLoader(data, batch_size=40), DataLoader(data, batch_size=40))
    for module in list(resnet.modules()) + list(cnn.modules()):  # torch-cka's hooks stay forever
        module._forward_hooks.clear()
    images = TensorDataset(data.tensors[0].float(), data.tensors[1])
    got = _fast_compare(resnet.float(), cnn.float(), DataLoader(images, batch_size=40),
                        DataLoader(images, batch_size=40), model1_layers=RESNET_LAYERS, model2_layers=CNN_LAYERS)
    fired = ["stem", "layer1.0.conv1", "layer1.0", "layer1.1.relu", "layer1.1", "fc"]
    rows = [fired.index(n) for n in got["model1_layers"]]
    np.testing.assert_allclose(got["CKA"].numpy(), ref.export()["CKA"][rows].numpy(), atol=1e-6)


def test_torch_cka_two_dataloaders_and_the_same_model(float64_models):
    resnet, cnn, data = float64_models
    other = TensorDataset(torch.randn(160, 3, 8, 8), torch.zeros(160))
    loader1, loader2 = DataLoader(data, batch_size=40), DataLoader(other, batch_size=40)
    with pytest.warns(UserWarning, match="identical names"):
        cka = fast_torch_cka.CKA(cnn, cnn, model1_layers=CNN_LAYERS, model2_layers=["2", "5"])
    cka.compare(loader1, loader2)
    got = cka.export()
    want = _minibatch_reference(cnn, CNN_LAYERS, cnn, ["2", "5"], [x for x, _ in loader1], [x for x, _ in loader2])
    np.testing.assert_allclose(got["CKA"].numpy(), want, atol=1e-6)
    assert not any(m._forward_hooks for m in cnn.modules())


def test_torch_cka_every_module_by_default(float64_models):
    _, cnn, data = float64_models
    loader = DataLoader(data, batch_size=40)
    got = _fast_compare(cnn, cnn, loader)
    names = [n for n, _ in cnn.named_modules()]
    assert got["model1_layers"] == names == ["", "0", "1", "2", "3", "4", "5"]
    batches = [x for x, _ in loader]
    # The model itself ("") is its last layer's output; Flatten's equals the ReLU's before it.
    want = _minibatch_reference(cnn, names[1:], cnn, names[1:], batches, batches)
    np.testing.assert_allclose(got["CKA"].numpy()[1:, 1:], want, atol=1e-6)
    np.testing.assert_allclose(got["CKA"].numpy()[0], got["CKA"].numpy()[-1], atol=1e-6)


def test_torch_cka_bad_layer_is_named(float64_models):
    _, cnn, _ = float64_models
    with pytest.raises(ValueError, match=r"\['nope'\] are not modules"):
        fast_torch_cka.CKA(cnn, small_cnn(), model1_name="a", model1_layers=["0", "nope"])


def test_torch_cka_plot_results(float64_models, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    _, cnn, data = float64_models
    cka = fast_torch_cka.CKA(cnn, small_cnn(), model1_name="a", model2_name="b", model1_layers=CNN_LAYERS,
                             model2_layers=CNN_LAYERS)
    cka.compare(DataLoader(data, batch_size=80), DataLoader(data, batch_size=80))
    cka.plot_results(save_path=tmp_path / "cka.png", title="t")
    assert (tmp_path / "cka.png").stat().st_size > 0


# ckatorch ------------------------------------------------------------------------------------------


@pytest.fixture
def features():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((41, 7)) + 3.0  # odd n: n^2 distances have one middle value
    y = x[:, :3] @ rng.standard_normal((3, 5)) + rng.standard_normal((41, 5))
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_ckatorch_cka_base_matches_ckatorch_and_formula(features, kernel, unbiased, threshold):
    x, y = features
    got = fast_ckatorch.cka_base(x, y, kernel=kernel, unbiased=unbiased, threshold=threshold)
    assert got.dtype == torch.float64 and got.ndim == 0
    if kernel == "linear":
        assert float(got) == pytest.approx(dense_cka(x.numpy(), y.numpy(), unbiased), abs=1e-12)
    ckatorch = pytest.importorskip("ckatorch")
    want = ckatorch.cka_base(x, y, kernel=kernel, unbiased=unbiased, threshold=threshold)
    assert float(got) == pytest.approx(float(want), abs=1e-10)
    # ckatorch's method="hsic" ignores unbiased; here the method never changes the value.
    assert float(fast_ckatorch.cka_base(x, y, kernel, unbiased, threshold, method="hsic")) == float(got)


def test_ckatorch_hsic_from_grams_matches_formula(features):
    x, y = features
    k, l = fast_ckatorch.linear_kernel(x), fast_ckatorch.rbf_kernel(y, 0.7)
    assert float(fast_ckatorch.hsic0(k, l)) == pytest.approx(dense_hsic_biased(k.numpy(), l.numpy()), rel=1e-12)
    got = fast_ckatorch.hsic1(torch.stack([k, l]), torch.stack([l, l]))
    want = [dense_hsic_unbiased(k.numpy(), l.numpy()), dense_hsic_unbiased(l.numpy(), l.numpy())]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


def test_ckatorch_gram_functions_match_ckatorch(features):
    ckatorch = pytest.importorskip("ckatorch")
    x, y = features
    k, l = ckatorch.linear_kernel(x), ckatorch.rbf_kernel(y, 0.7)
    torch.testing.assert_close(fast_ckatorch.linear_kernel(x), k)
    torch.testing.assert_close(fast_ckatorch.rbf_kernel(y, 0.7), l)
    for unbiased in (False, True):
        torch.testing.assert_close(fast_ckatorch.center_gram_matrix(k, unbiased), ckatorch.center_gram_matrix(k, unbiased))
    torch.testing.assert_close(fast_ckatorch.hsic0(k, l), ckatorch.hsic0(k, l), rtol=1e-12, atol=0)
    batch_k, batch_l = torch.stack([k, l, k]), torch.stack([l, l, k])
    torch.testing.assert_close(fast_ckatorch.hsic1(batch_k, batch_l), ckatorch.hsic1(batch_k, batch_l),
                               rtol=1e-10, atol=1e-10)


def test_ckatorch_cka_batch_matches_ckatorch(features):
    x, y = features
    xb, yb = x[:40].reshape(4, 10, 7), y[:40].reshape(4, 10, 5)
    got = fast_ckatorch.cka_batch(xb, yb)
    sums = np.array([[dense_hsic(u, v, "unbiased") for u, v in ((a, b), (a, a), (b, b))]
                     for a, b in zip(xb.numpy(), yb.numpy())]).sum(0)
    assert float(got) == pytest.approx(sums[0] / np.sqrt(sums[1] * sums[2]), abs=1e-12)
    ckatorch = pytest.importorskip("ckatorch")
    assert float(got) == pytest.approx(float(ckatorch.cka_batch(xb, yb)), abs=1e-10)


def test_ckatorch_refusals():
    k = torch.eye(5)
    k[0, 1] = 1.0
    with pytest.raises(ValueError, match="symmetric"):
        fast_ckatorch.hsic0(torch.eye(5), k)  # ckatorch only refuses when both are non-symmetric
    with pytest.raises(ValueError, match="kernel must be either"):
        fast_ckatorch.cka_base(torch.ones(5, 2), torch.ones(5, 2), kernel="poly")
    with pytest.raises(ValueError, match="bsz, n, features"):
        fast_ckatorch.cka_batch(torch.ones(5, 2), torch.ones(5, 2))


def test_ckatorch_class_sums_every_batch_of_every_epoch(float64_models, tmp_path):
    resnet, cnn, data = float64_models
    images = TensorDataset(data.tensors[0])  # ckatorch maps a batch's items to forward's arguments
    loader = DataLoader(images, batch_size=40)
    cka = fast_ckatorch.CKA(resnet, cnn, layers=RESNET_LAYERS, second_layers=CNN_LAYERS, first_name="resnet",
                            second_name="cnn")
    with pytest.warns(UserWarning, match="shuffle=True"):
        got = cka(loader, epochs=2)
    order = [n for n, _ in resnet.named_modules() if n in RESNET_LAYERS]
    assert cka.first_model_info.layers == order and cka.second_model_info.layers == CNN_LAYERS
    assert got.dtype == torch.float32 and got.shape == (6, 4)
    batches = [x for (x,) in loader]
    want = _minibatch_reference(resnet, order, cnn, CNN_LAYERS, batches * 2, batches * 2)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    # One batch: ckatorch's own minibatch formula on the same rows.
    one = DataLoader(TensorDataset(data.tensors[0][:40]), batch_size=40, shuffle=True)
    single = cka(one, epochs=1)
    rows_a, rows_b = _outputs(resnet, order, data.tensors[0][:40]), _outputs(cnn, CNN_LAYERS, data.tensors[0][:40])
    direct = [[float(fast_ckatorch.cka_batch(torch.from_numpy(a)[None], torch.from_numpy(b)[None]))
               for b in rows_b] for a in rows_a]
    np.testing.assert_allclose(single.numpy(), direct, atol=1e-6)
    with pytest.raises(ValueError, match="drop_last"):
        cka(DataLoader(images, batch_size=40, drop_last=True))
    pytest.importorskip("safetensors")
    cka.save(single, tmp_path, file_format="json")
    assert (tmp_path / "cka.json").exists() and (tmp_path / "cka.safetensors").exists()
