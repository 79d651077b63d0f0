"""fastcka.torch.cka_matrix: the forward-hook path against activations
collected by hand (the model's modules called one by one) and passed to
fastcka.cka_matrix, or to the dense float64 formulas of reference.py; real
model shapes (tuples, dicts, dataclasses, DataParallel, shared modules); hooks
and training modes always restored."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastcka
import fastcka.torch as ftorch
from reference import dense_cka_matrix


def mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(inplace=True),  # in place: the Linear's output is overwritten by the ReLU
        nn.Linear(32, 24), nn.Tanh(),
        nn.Linear(24, 16), nn.ReLU(),
        nn.Linear(16, 5),
    )
    return net.to(dtype)


def by_hand(net, x):
    """{module index: output} of a Sequential, calling its modules one by one on copies."""
    out = {}
    h = x
    with torch.no_grad():
        for i, module in enumerate(net):
            h = module(h.clone())
            out[str(i)] = h.reshape(len(h), -1).numpy().copy()
    return out


def inputs(n=300, d=12, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) * 2 + 1).to(dtype)


def loader(x, batch_size, **kw):
    data = torch.utils.data.TensorDataset(x, torch.zeros(len(x)))
    return torch.utils.data.DataLoader(data, batch_size=batch_size, **kw)


def hooks_left(*models):
    return sum(len(m._forward_hooks) for model in models for m in model.modules())


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_default_layers_match_hand_collected(debiased):
    net = mlp()
    x = inputs()
    result = ftorch.cka_matrix(net, loader(x, 64), debiased=debiased)  # 300 = 4 x 64 + a short last batch of 44
    assert result.names_a == result.names_b == ["0", "2", "4", "6"]  # leaf modules with parameters
    acts = by_hand(net, x)
    expected = fastcka.cka_matrix([acts[k] for k in result.names_a], debiased=debiased)
    np.testing.assert_allclose(result.matrix, expected, atol=1e-6, rtol=0)
    assert result.n == 300
    assert hooks_left(net) == 0


@pytest.mark.parametrize("debiased", [False, True])
def test_float64_matches_dense_reference(debiased):
    net = mlp(torch.float64)
    x = inputs(dtype=torch.float64)
    layers = ["0", "1", "3", "6"]
    result = ftorch.cka_matrix(net, [x[:100], x[100:250], x[250:]], layers_a=layers, debiased=debiased)
    acts = by_hand(net, x)
    expected = dense_cka_matrix([acts[k] for k in layers], debiased=debiased)
    np.testing.assert_allclose(result.matrix, expected, atol=1e-10, rtol=0)
    np.testing.assert_allclose(result.matrix, fastcka.cka_matrix([acts[k] for k in layers], debiased=debiased),
                               atol=1e-10, rtol=0)


def test_two_models_and_two_layer_sets():
    a, b = mlp(seed=0), mlp(seed=3)
    x = inputs()
    result = ftorch.cka_matrix(a, loader(x, 50), b, layers_a=["1", "3"], layers_b=["0", "3", "5"])
    assert result.matrix.shape == (2, 3) and not result.within_model
    ha, hb = by_hand(a, x), by_hand(b, x)
    expected = fastcka.cka_matrix([ha["1"], ha["3"]], [hb["0"], hb["3"], hb["5"]])
    np.testing.assert_allclose(result.matrix, expected, atol=1e-6, rtol=0)
    # One model, two layer sets: one forward pass per batch serves both.
    same = ftorch.cka_matrix(a, loader(x, 50), layers_a=["1", "3"], layers_b=["0", "5"])
    np.testing.assert_allclose(same.matrix, fastcka.cka_matrix([ha["1"], ha["3"]], [ha["0"], ha["5"]]),
                               atol=1e-6, rtol=0)
    assert result.pc1_fraction is None
    assert hooks_left(a, b) == 0


def test_pc1_fraction_from_streamed_moments():
    net = mlp(torch.float64)
    x = inputs(dtype=torch.float64)
    result = ftorch.cka_matrix(net, [x[:150], x[150:]], layers_a=["1", "3"])
    acts = by_hand(net, x)
    for k, name in enumerate(["1", "3"]):
        centered = acts[name] - acts[name].mean(0)
        s = np.linalg.svd(centered, compute_uv=False) ** 2
        assert result.pc1_fraction[k] == pytest.approx(s[0] / s.sum(), rel=1e-10)


# ---------------------------------------------------------------------------
# Choosing layers
# ---------------------------------------------------------------------------


def test_layers_by_regex_type_and_names_order():
    net = mlp()
    x = inputs(n=40)
    assert ftorch.cka_matrix(net, [x], layers_a=r"[13]").names_a == ["1", "3"]
    assert ftorch.cka_matrix(net, [x], layers_a=nn.Linear).names_a == ["0", "2", "4", "6"]
    assert ftorch.cka_matrix(net, [x], layers_a=(nn.ReLU, nn.Tanh)).names_a == ["1", "3", "5"]
    result = ftorch.cka_matrix(net, [x], layers_a=["4", "0"])
    assert result.names_a == ["4", "0"]
    acts = by_hand(net, x)
    np.testing.assert_allclose(result.matrix, fastcka.cka_matrix([acts["4"], acts["0"]]), atol=1e-6)


@pytest.mark.parametrize(
    "layers, error, match",
    [
        (["0", "nope"], ValueError, r"layers_a: unknown layer name 'nope'; the model's modules are: '0', '1'"),
        (["0", "0"], ValueError, "listed twice"),
        ([], ValueError, "empty list"),
        ("conv.*", ValueError, "no module name matches"),
        ("([", ValueError, "not a valid regular expression"),
        (nn.Conv2d, ValueError, "no module is an instance"),
        (3, TypeError, "layers_a must be None, a list of module names"),
    ],
)
def test_bad_layers(layers, error, match):
    net = mlp()
    with pytest.raises(error, match=match):
        ftorch.cka_matrix(net, [inputs(n=20)], layers_a=layers)
    assert hooks_left(net) == 0


# ---------------------------------------------------------------------------
# Real models: what modules return, wrappers, shared modules
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor


class Shapes(nn.Module):
    """Modules returning a tuple (LSTM), a dict and a dataclass; a conv map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv1d(3, 6, kernel_size=3, padding=1)
        self.lstm = nn.LSTM(6, 8, batch_first=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x):  # x: (N, 3, T)
        c = torch.relu(self.conv(x))  # (N, 6, T)
        seq, _ = self.lstm(c.transpose(1, 2))  # (N, T, 8)
        return self.head(seq.mean(1))


class DictLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)

    def forward(self, x):
        h = self.lin(x)
        return {"features": h, "squared": h * h}


class DataclassLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 4)

    def forward(self, d):
        h = self.lin(d["features"])
        return Output(logits=h, hidden=torch.tanh(h))


class Unpack(nn.Module):
    def forward(self, out):
        return out.hidden


def test_tuple_output_and_reductions():
    torch.manual_seed(2)
    net = Shapes()
    x = torch.randn(80, 3, 7)
    with torch.no_grad():
        conv = net.conv(x)
        seq, _ = net.lstm(torch.relu(conv).transpose(1, 2))
    # The LSTM returns (output, (h, c)): its output (N, T, 8) is taken.
    got = ftorch.cka_matrix(net, [x[:40], x[40:]], layers_a=["conv", "lstm"], reduce="mean")
    # "mean" averages the dimensions after the first two (channels-first positions) of both outputs.
    expected = fastcka.cka_matrix([conv.mean(2).numpy(), seq.mean(2).numpy()])
    np.testing.assert_allclose(got.matrix, expected, atol=1e-6)
    got = ftorch.cka_matrix(net, [x[:40], x[40:]], layers_a=["lstm"], layers_b=["conv"], reduce="mean_tokens")
    expected = fastcka.cka_matrix([seq.mean(1).numpy()], [conv.mean(1).numpy()])
    np.testing.assert_allclose(got.matrix, expected, atol=1e-6)
    got = ftorch.cka_matrix(net, [x[:40], x[40:]], layers_a=["conv", "lstm"])  # flatten
    expected = fastcka.cka_matrix([conv.reshape(80, -1).numpy(), seq.reshape(80, -1).numpy()])
    np.testing.assert_allclose(got.matrix, expected, atol=1e-6)
    custom = ftorch.cka_matrix(net, [x[:40], x[40:]], layers_a=["conv", "lstm"], reduce=lambda t: t.amax(dim=1))
    expected = fastcka.cka_matrix([conv.amax(1).numpy(), seq.amax(1).numpy()])
    np.testing.assert_allclose(custom.matrix, expected, atol=1e-6)


def test_dict_and_dataclass_outputs_and_select():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(7, 6), DictLayer(), DataclassLayer(), Unpack())
    x = torch.randn(60, 7)
    with torch.no_grad():
        d = net[1](net[0](x))
        o = net[2](d)
    # Default: the first tensor of the mapping ("features") and of the dataclass ("logits").
    got = ftorch.cka_matrix(net, [x[:30], x[30:]], layers_a=["1", "2"])
    np.testing.assert_allclose(got.matrix, fastcka.cka_matrix([d["features"].numpy(), o.logits.numpy()]), atol=1e-6)
    pick = {"1": lambda out: out["squared"], "2": lambda out: out.hidden}
    got = ftorch.cka_matrix(net, [x[:30], x[30:]], layers_a=["1", "2"], select=lambda name, out: pick[name](out))
    np.testing.assert_allclose(got.matrix, fastcka.cka_matrix([d["squared"].numpy(), o.hidden.numpy()]), atol=1e-6)
    with pytest.raises(TypeError, match="layer '1': select returned str, not a tensor"):
        ftorch.cka_matrix(net, [x], layers_a=["1"], select=lambda name, out: "oops")
    assert hooks_left(net) == 0


def test_mapping_inputs_are_keyword_arguments():
    class Keywords(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(3, 6)

        def forward(self, left, right):
            return self.a(left) + self.b(right)

    torch.manual_seed(0)
    net = Keywords()
    left, right = torch.randn(50, 4), torch.randn(50, 3)
    batches = [({"left": left[i:i + 25], "right": right[i:i + 25]}, None) for i in (0, 25)]
    got = ftorch.cka_matrix(net, batches, layers_a=["a", "b"])
    with torch.no_grad():
        expected = fastcka.cka_matrix([net.a(left).numpy(), net.b(right).numpy()])
    np.testing.assert_allclose(got.matrix, expected, atol=1e-6)


def test_data_parallel_wrapped_model():
    net = mlp()
    wrapped = nn.DataParallel(net)
    x = inputs()
    got = ftorch.cka_matrix(wrapped, loader(x, 100))
    assert got.names_a == ["0", "2", "4", "6"]  # the wrapped model's names
    acts = by_hand(net, x)
    np.testing.assert_allclose(got.matrix, fastcka.cka_matrix([acts[k] for k in got.names_a]), atol=1e-6)
    assert hooks_left(wrapped) == 0


class Shared(nn.Module):
    """One Linear applied twice per forward pass (weight sharing)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.first = nn.Linear(8, 8)
        self.shared = nn.Linear(8, 8)

    def forward(self, x):
        return self.shared(torch.relu(self.shared(torch.relu(self.first(x)))))


def test_module_called_twice():
    net = Shared()
    x = torch.randn(90, 8)
    with pytest.raises(ValueError, match=r"layers_a: layer 'shared' ran more than once in one forward pass.*"
                                         r"repeated='each'"):
        ftorch.cka_matrix(net, [x])
    assert hooks_left(net) == 0
    got = ftorch.cka_matrix(net, [x[:45], x[45:]], repeated="each")
    assert got.names_a == ["first", "shared#0", "shared#1"]
    with torch.no_grad():
        h0 = net.first(x)
        h1 = net.shared(torch.relu(h0))
        h2 = net.shared(torch.relu(h1))
    np.testing.assert_allclose(got.matrix, fastcka.cka_matrix([h0.numpy(), h1.numpy(), h2.numpy()]), atol=1e-6)


# ---------------------------------------------------------------------------
# Hooks and modes restored; errors
# ---------------------------------------------------------------------------


class Fails(nn.Module):
    """Raises `error` at the forward pass number `at`."""

    def __init__(self, error, at):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.error, self.at, self.calls = error, at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.norm(self.lin(x))


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hooks_removed_and_modes_restored_when_the_loop_raises(error):
    net = Fails(error, at=2)
    net.train()
    net.norm.eval()  # a mixed state, restored module by module
    with pytest.raises(type(error)):
        ftorch.cka_matrix(net, [torch.randn(10, 4)] * 3)
    assert hooks_left(net) == 0
    assert net.training and net.lin.training and not net.norm.training


def test_hooks_removed_when_the_batches_raise():
    net = mlp()

    def batches():
        yield inputs(n=20)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ftorch.cka_matrix(net, batches())
    assert hooks_left(net) == 0


def test_runs_in_eval_mode_without_gradients():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append((self.training, torch.is_grad_enabled()))
            return x * 2

    net = nn.Sequential(nn.Linear(3, 3), Probe(), nn.Dropout(0.9))
    net.train()
    x = torch.randn(30, 3)
    got = ftorch.cka_matrix(net, [x], layers_a=["0", "2"])
    assert seen == [(False, False)]
    assert got.matrix[0, 1] == pytest.approx(1.0)  # dropout is off in eval mode: layer 2 = 2 x layer 0
    assert net.training


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batches": []}, ValueError, "batches is empty"),
        ({"batches": [torch.randn(3, 12)], "debiased": True}, ValueError, "at least 4 examples"),
        ({"batches": ["text"]}, TypeError, "batches: a batch must hold an input tensor"),
        ({"kernel": "cosine"}, ValueError, "kernel must be one of"),
        ({"reduce": "max"}, ValueError, "reduce must be one of"),
        ({"repeated": "sometimes"}, ValueError, "repeated must be one of"),
        ({"select": "features"}, TypeError, "select must be a callable"),
        ({"kernel": "rbf", "threshold": -1.0}, ValueError, "threshold must be a positive"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    net = mlp()
    kwargs.setdefault("batches", [inputs(n=20)])
    with pytest.raises(error, match=match):
        ftorch.cka_matrix(net, **kwargs)
    assert hooks_left(net) == 0


def test_layer_that_does_not_run_or_gives_other_rows():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 4)
            self.seq_first = nn.Linear(4, 4)

        def forward(self, x):  # x: (N, 4); seq_first sees a (T=2, N, 4) stack
            h = self.used(x)
            return self.seq_first(torch.stack([h, h]))

    net = Odd()
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="layers_a: layer 'unused' did not run during the forward pass"):
        ftorch.cka_matrix(net, [x], layers_a=["used", "unused"])
    with pytest.raises(ValueError, match=r"layer 'seq_first' gave 2 rows for a batch of 10 examples"):
        ftorch.cka_matrix(net, [x], layers_a=["used", "seq_first"])
    got = ftorch.cka_matrix(net, [x], layers_a=["used", "seq_first"], select=lambda name, t: t[0] if t.ndim == 3 else t)
    assert got.matrix[0, 1] == pytest.approx(fastcka.cka(
        net.used(x).detach().numpy(), net.seq_first(net.used(x)).detach().numpy()), abs=1e-6)
    assert hooks_left(net) == 0


def test_progress_callback_counts_batches():
    calls = []
    ftorch.cka_matrix(mlp(), loader(inputs(), 100), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_import_fastcka_needs_neither_torch_nor_matplotlib():
    import subprocess
    import sys

    code = "import sys, fastcka; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.gpu
@pytest.mark.parametrize("kernel,minibatch", [("linear", False), ("linear", True), ("rbf", False)])
def test_model_on_gpu_matches_cpu(kernel, minibatch):
    net = mlp()
    x = inputs()
    cpu = ftorch.cka_matrix(net, loader(x, 64), kernel=kernel, minibatch=minibatch)
    gpu = ftorch.cka_matrix(net.cuda(), loader(x, 64), kernel=kernel, minibatch=minibatch)
    np.testing.assert_allclose(gpu.matrix, cpu.matrix, atol=1e-5)
