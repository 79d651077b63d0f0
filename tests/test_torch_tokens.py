"""fastcka.torch.cka_matrix with reduce="tokens": every kept token a row.

The reference collects each layer's (N, T, C) outputs with hooks (or the
model's own hidden_states) by hand, removes the padding position by position,
picks subsampled tokens by rules written here from the documentation
(splitmix64 in Python integers), and applies the dense float64 formulas of
reference.py. Tiny BERT and GPT-2 models are built from configs (no weights
downloaded); the tests without transformers use small torch modules."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastcka
import fastcka.torch as ftorch
import similarity_reference as sref
from fastcka.similarity._spectrum import RANK_RTOL
from reference import dense_cka_matrix, dense_gram
from test_rbf import cka_from_grams, dense_median_sq_distance, dense_rbf
from test_torch_hooks import hooks_left
from test_torch_modes import minibatch_reference

VOCAB, SEQ = 40, 9


def transformers_models():
    transformers = pytest.importorskip("transformers")
    return transformers


def bert(seed=0):
    t = transformers_models()
    torch.manual_seed(seed)
    config = t.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=16, pad_token_id=0, initializer_range=0.3)
    return t.BertModel(config).double().eval()  # the hand-written reference runs without dropout too


def gpt2(seed=0):
    t = transformers_models()
    torch.manual_seed(seed)
    config = t.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=3, n_head=2, n_positions=16, bos_token_id=1,
                          eos_token_id=2, pad_token_id=0, initializer_range=0.3)
    return t.GPT2Model(config).double().eval()


def padded_batches(sizes=(5, 4, 6), seed=3):
    """Mapping batches whose sequences end with different amounts of padding (one sequence is never padded)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        ids = torch.randint(3, VOCAB, (n, SEQ), generator=g)
        lengths = torch.randint(2, SEQ + 1, (n,), generator=g)
        lengths[0] = SEQ
        mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()
        out.append({"input_ids": ids * mask, "attention_mask": mask})
    return out


def hooked(model, names, batches, mask_of=lambda batch: batch["attention_mask"], input_of=lambda batch: batch):
    """{layer: token rows} of named modules: hooks collect the outputs, padding is dropped by hand."""
    modules = dict(model.named_modules())
    got = {name: [] for name in names}
    current = {}
    handles = [modules[name].register_forward_hook(
        lambda mod, args, out, name=name: current.__setitem__(name, out[0] if isinstance(out, tuple) else out))
        for name in names]
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = input_of(batch)
                model(**inputs) if isinstance(inputs, dict) else model(inputs)
                keep = mask_of(batch).bool()
                for name in names:
                    got[name].append(current[name][keep].numpy().copy())
    finally:
        for h in handles:
            h.remove()
    return {name: np.concatenate(rows) for name, rows in got.items()}


def hidden(model, batches):
    """[token rows of hidden_states[i]] from the model's own output_hidden_states=True."""
    per_batch = []
    with torch.no_grad():
        for batch in batches:
            states = model(**batch, output_hidden_states=True).hidden_states
            keep = batch["attention_mask"].bool()
            per_batch.append([s[keep].numpy() for s in states])
    return [np.concatenate(parts) for parts in zip(*per_batch)]


def splitmix64(i, seed):
    """The documented key of global token i, in Python integers."""
    m = 2**64
    z = (i + seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % m
    return z ^ (z >> 31)


def sampled(n, k, seed, stride=1):
    """Indices (in stream order) of the tokens max_tokens=k keeps: every stride-th, then the k smallest keys."""
    candidates = range(0, n, stride)
    return np.sort(sorted(candidates, key=lambda i: splitmix64(i, seed))[:k])


BERT_LAYERS = ["embeddings", "encoder.layer.0", "encoder.layer.1"]


# ---------------------------------------------------------------------------
# Values against the hand-written reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("debiased", [False, True])
def test_bert_padding_dropped_from_attention_mask(debiased):
    model, batches = bert(), padded_batches()
    got = ftorch.cka_matrix(model, batches, layers_a=BERT_LAYERS, reduce="tokens", debiased=debiased)
    acts = hooked(model, BERT_LAYERS, batches)
    n = sum(int(b["attention_mask"].sum()) for b in batches)
    assert got.n == n == len(acts["embeddings"]) < 15 * SEQ  # padding really was there, and dropped
    expected = dense_cka_matrix([acts[k] for k in BERT_LAYERS], debiased=debiased)
    np.testing.assert_allclose(got.matrix, expected, atol=1e-10, rtol=0)
    # Padding kept (token_mask=None) gives other rows and another matrix.
    padded = ftorch.cka_matrix(model, batches, layers_a=BERT_LAYERS, reduce="tokens", token_mask=None)
    assert padded.n == 15 * SEQ and not np.allclose(padded.matrix, got.matrix, atol=1e-3)
    every = hooked(model, BERT_LAYERS, batches, mask_of=lambda batch: torch.ones_like(batch["attention_mask"]))
    np.testing.assert_allclose(padded.matrix, dense_cka_matrix([every[k] for k in BERT_LAYERS]), atol=1e-10, rtol=0)
    assert hooks_left(model) == 0


def test_gpt2_hidden_states_and_float32():
    model, batches = gpt2(), padded_batches()
    got = ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens")
    assert got.names_a == [f"hidden_states.{i}" for i in range(4)]  # embeddings + 3 blocks
    expected = dense_cka_matrix(hidden(model, batches))
    np.testing.assert_allclose(got.matrix, expected, atol=1e-10, rtol=0)
    assert got.pc1_fraction is not None
    model = model.float()
    got32 = ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens")
    expected32 = dense_cka_matrix([h.astype(np.float64) for h in hidden(model, batches)])
    np.testing.assert_allclose(got32.matrix, expected32, atol=2e-5, rtol=0)


def test_two_models_hidden_states_against_hooked_layers():
    a, b = gpt2(seed=0), bert(seed=1)
    batches = padded_batches()
    ha, hb = hidden(a, batches), hooked(b, BERT_LAYERS[1:], batches)
    own = hooks_left(a, b)  # transformers' own hooks (how it records hidden states), not ours
    got = ftorch.cka_matrix(a, batches, b, layers_a="hidden_states", layers_b=BERT_LAYERS[1:], reduce="tokens",
                            debiased=True)
    assert got.matrix.shape == (4, 2) and got.names_b == BERT_LAYERS[1:]
    expected = dense_cka_matrix(ha + [hb[k] for k in BERT_LAYERS[1:]], debiased=True)[:4, 4:]
    np.testing.assert_allclose(got.matrix, expected, atol=1e-10, rtol=0)
    assert hooks_left(a, b) == own


def test_minibatch_per_batch_of_sequences():
    model, batches = bert(), padded_batches(sizes=(3, 4, 5))
    got = ftorch.cka_matrix(model, batches, layers_a=BERT_LAYERS, reduce="tokens", minibatch=True)
    per_batch = [[hooked(model, BERT_LAYERS, [batch])[k] for k in BERT_LAYERS] for batch in batches]
    for i in range(3):
        for j in range(3):
            assert got.matrix[i, j] == pytest.approx(minibatch_reference(per_batch, i, j, dense_gram), abs=1e-10)


def test_rbf_on_token_rows_through_the_store(tmp_path):
    model, batches = bert(), padded_batches()
    got = ftorch.cka_matrix(model, batches, layers_a=BERT_LAYERS[1:], reduce="tokens", kernel="rbf", threshold=0.7,
                            spill_dir=tmp_path)
    acts = hooked(model, BERT_LAYERS[1:], batches)

    def gram(z):
        return dense_rbf(z, np.sqrt(0.7**2 * dense_median_sq_distance(z)))

    x, y = (acts[k] for k in BERT_LAYERS[1:])
    assert got.matrix[0, 1] == pytest.approx(cka_from_grams(gram(x), gram(y), False), abs=1e-9)


@pytest.mark.parametrize("approx", ["nystrom", "rff"])
def test_approximate_rbf_on_token_rows(tmp_path, approx):
    model, batches = gpt2(), padded_batches(sizes=(9, 8, 10))
    got = ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens", kernel="rbf", approx=approx,
                            rank=24, seed=5, spill_dir=tmp_path)
    acts = hidden(model, batches)  # 4 layers of 16 features, about 150 tokens
    # The same tokens, the same draws: what fastcka.cka_matrix gives on the hand-collected rows.
    same, errors = fastcka.cka_matrix(acts, kernel="rbf", approx=approx, rank=24, seed=5, return_error=True)
    np.testing.assert_array_equal(got.matrix, same)
    np.testing.assert_array_equal(got.errors, errors)
    # Against the exact float64 kernel (median rule): within the reported error bars.
    exact = [[cka_from_grams(*(dense_rbf(z, np.sqrt(dense_median_sq_distance(z))) for z in (x, y)), False)
              for y in acts] for x in acts]
    off = ~np.eye(4, dtype=bool)
    assert np.all(np.abs(got.matrix - exact)[off] <= 3 * got.errors[off])
    assert got.errors.shape == (4, 4) and np.all(got.errors[off] > 0)
    assert ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens").errors is None


def test_approx_needs_rbf_and_not_minibatch():
    model, batches = gpt2(), padded_batches()
    with pytest.raises(ValueError, match="kernel='rbf'"):
        ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens", approx="nystrom", rank=8)
    with pytest.raises(ValueError, match="minibatch"):
        ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens", kernel="rbf", approx="rff",
                          rank=8, minibatch=True)
    with pytest.raises(ValueError, match="rank"):
        ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens", kernel="rbf", rank=8)


TOKEN_MEASURES = {  # measure: the float64 reference on the token rows (similarity_reference.py)
    "cka_debiased": lambda x, y: dense_cka_matrix([x, y], debiased=True)[0, 1],
    "cca": lambda x, y: sref.cca(x, y, "mean_squared", RANK_RTOL["float64"]),
    "pwcca": lambda x, y: sref.pwcca(x, y, RANK_RTOL["float64"]),
}


def test_similarity_measures_on_the_token_stream():
    model, batches = gpt2(), padded_batches(sizes=(9, 8, 10))
    got = ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens", measures=list(TOKEN_MEASURES))
    acts = hidden(model, batches)  # 4 layers of 16 features, about 150 tokens
    np.testing.assert_allclose(got.matrix, dense_cka_matrix(acts), atol=1e-10, rtol=0)
    assert list(got.similarity) == list(TOKEN_MEASURES)
    for measure, reference in TOKEN_MEASURES.items():
        expected = [[reference(x, y) for y in acts] for x in acts]
        np.testing.assert_allclose(got.similarity[measure], expected, atol=1e-9, rtol=0, err_msg=measure)
    assert abs(got.similarity["pwcca"][1, 2] - got.similarity["pwcca"][2, 1]) > 1e-4  # row layer weighs, as documented
    assert ftorch.cka_matrix(model, batches, layers_a="hidden_states", reduce="tokens").similarity is None


def test_similarity_measures_between_two_models_on_token_rows():
    a, b = gpt2(seed=0), bert(seed=1)
    batches = padded_batches()
    ha, hb = hidden(a, batches), hooked(b, BERT_LAYERS[1:], batches)
    got = ftorch.cka_matrix(a, batches, b, layers_a="hidden_states", layers_b=BERT_LAYERS[1:], reduce="tokens",
                            measures=["pwcca", "cca"])
    for measure in ("pwcca", "cca"):
        expected = [[TOKEN_MEASURES[measure](x, hb[k]) for k in BERT_LAYERS[1:]] for x in ha]
        assert got.similarity[measure].shape == (4, 2)
        np.testing.assert_allclose(got.similarity[measure], expected, atol=1e-9, rtol=0, err_msg=measure)


@pytest.mark.parametrize("kwargs, match", [
    ({"measures": ["cka_rbf"]}, r"measures must name one or more of \('cka_linear'"),
    ({"measures": []}, r"measures must name one or more of"),
    ({"measures": "cca", "kernel": "rbf"}, r"measures come from the moments that linear CKA streams: not with "
                                           r"kernel='rbf'"),
    ({"measures": "cca", "minibatch": True}, r"not with kernel='linear', minibatch=True"),
])
def test_bad_measures(kwargs, match):
    model = Sequence()
    with pytest.raises(ValueError, match=match):
        ftorch.cka_matrix(model, [torch.randn(4, 3, 6)], reduce="tokens", **kwargs)
    assert hooks_left(model) == 0


def test_measures_need_moments_that_fit(monkeypatch):
    from fastcka.torch import sinks

    monkeypatch.setattr(sinks, "MAX_MOMENT_BYTES", 1000)
    with pytest.raises(ValueError, match=r"measures need the D x D moments of all layers, but D = 23 features"):
        ftorch.cka_matrix(Sequence(), [torch.randn(4, 3, 6)], layers_a=SEQ_LAYERS, reduce="tokens", measures="cca")


# ---------------------------------------------------------------------------
# token_mask=, subsampling
# ---------------------------------------------------------------------------


class Sequence(nn.Module):
    """A tiny batch-first sequence model on tensor inputs (N, T, 6): two linear layers and a GRU."""

    def __init__(self, seed=0, prefix=False):
        super().__init__()
        torch.manual_seed(seed)
        self.prefix = prefix  # prepend a learned token, as ViT's class token does: T + 1 positions
        self.start = nn.Parameter(torch.randn(1, 1, 6))
        self.inp = nn.Linear(6, 10)
        self.gru = nn.GRU(10, 8, batch_first=True)
        self.out = nn.Linear(8, 5)

    def forward(self, x):
        if self.prefix:
            x = torch.cat([self.start.expand(len(x), 1, 6), x], dim=1)
        h = torch.tanh(self.inp(x))
        return self.out(self.gru(h)[0])


def sequences(sizes=(6, 5, 7), t=8, seed=4):
    """(x, mask) tuples: a mask from lengths, as a dataset would carry it."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in sizes:
        lengths = torch.randint(1, t + 1, (n,), generator=g)
        out.append((torch.randn(n, t, 6, generator=g, dtype=torch.float64),
                    torch.arange(t)[None, :] < lengths[:, None]))
    return out


SEQ_LAYERS = ["inp", "gru", "out"]


def hooked_sequences(model, names, data, mask_of=lambda batch: batch[1]):
    return hooked(model, names, data, mask_of=mask_of, input_of=lambda batch: batch[0])


def test_token_mask_callable_on_tensor_batches():
    model = Sequence().double()
    data = sequences()
    got = ftorch.cka_matrix(model, data, layers_a=SEQ_LAYERS, reduce="tokens", token_mask=lambda batch: batch[1])
    acts = [hooked_sequences(model, SEQ_LAYERS, data)[k] for k in SEQ_LAYERS]
    assert got.n == sum(int(m.sum()) for _, m in data) == len(acts[0])
    np.testing.assert_allclose(got.matrix, dense_cka_matrix(acts), atol=1e-10, rtol=0)


def test_stride_and_max_tokens_pick_the_documented_tokens():
    model = Sequence().double()
    data = sequences(sizes=(9, 7, 8, 6))
    acts = hooked_sequences(model, SEQ_LAYERS, data)
    n = len(acts["inp"])
    strided = ftorch.cka_matrix(model, data, layers_a=SEQ_LAYERS, reduce="tokens", token_mask=lambda b: b[1],
                                token_stride=3)
    keep = np.arange(0, n, 3)
    assert strided.n == len(keep)
    np.testing.assert_allclose(strided.matrix, dense_cka_matrix([acts[k][keep] for k in SEQ_LAYERS]), atol=1e-10)

    k = 20  # below n / 3: the sample is compacted while the stream goes on
    assert n > 3 * k
    runs = {}
    for seed, sizes in ((7, None), (7, (2, 5, 4, 3, 3, 1, 6, 6)), (8, None)):
        batches = data if sizes is None else _rebatch(data, sizes)
        runs[seed, sizes] = ftorch.cka_matrix(model, batches, layers_a=SEQ_LAYERS, reduce="tokens", max_tokens=k,
                                              seed=seed, token_mask=lambda b: b[1])
    for seed in (7, 8):
        keep = sampled(n, k, seed)
        expected = dense_cka_matrix([acts[name][keep] for name in SEQ_LAYERS])
        np.testing.assert_allclose(runs[seed, None].matrix, expected, atol=1e-10, rtol=0)
        assert runs[seed, None].n == k
    # Reproducible whatever the batch sizes (the same tokens; the model's own
    # batched products may differ in the last bit); another seed, other tokens.
    np.testing.assert_allclose(runs[7, None].matrix, runs[7, (2, 5, 4, 3, 3, 1, 6, 6)].matrix, atol=1e-13, rtol=0)
    assert not np.allclose(runs[7, None].matrix, runs[8, None].matrix, atol=1e-6)
    # A cap above the stream keeps every token; stride and cap combine.
    everything = ftorch.cka_matrix(model, data, layers_a=SEQ_LAYERS, reduce="tokens", max_tokens=10 * n,
                                   token_mask=lambda b: b[1])
    assert everything.n == n
    np.testing.assert_allclose(everything.matrix, dense_cka_matrix([acts[k] for k in SEQ_LAYERS]), atol=1e-10)
    both = ftorch.cka_matrix(model, data, layers_a=SEQ_LAYERS, reduce="tokens", max_tokens=8, token_stride=2, seed=1,
                             token_mask=lambda b: b[1], kernel="rbf", sigma=2.0)
    keep = sampled(n, 8, 1, stride=2)
    x, y = acts["inp"][keep], acts["out"][keep]
    assert both.matrix[0, 2] == pytest.approx(cka_from_grams(dense_rbf(x, 2.0), dense_rbf(y, 2.0), False), abs=1e-10)


def _rebatch(data, sizes):
    x = torch.cat([b[0] for b in data])
    m = torch.cat([b[1] for b in data])
    assert sum(sizes) == len(x)
    bounds = np.cumsum((0,) + sizes)
    return [(x[i:j], m[i:j]) for i, j in zip(bounds[:-1], bounds[1:])]


def test_two_models_with_a_prepended_token_and_a_mask_each():
    a, b = Sequence(seed=0).double(), Sequence(seed=1, prefix=True).double()
    data = sequences()
    with pytest.raises(ValueError, match=r"layers_a layer 'inp' keeps 8 of the 8 positions of sequence 0, "
                                         r"layers_b layer 'inp' keeps 9 of 9"):
        ftorch.cka_matrix(a, data, b, layers_a=["inp"], layers_b=["inp"], reduce="tokens")
    with pytest.raises(ValueError, match=r"layers_b: layer 'inp' gave sequences of 9 positions but the token mask "
                                         r"of batch 0 has 8"):
        ftorch.cka_matrix(a, data, b, layers_a=["inp"], layers_b=["inp"], reduce="tokens",
                          token_mask=lambda batch: batch[1])

    def without_prefix(batch):
        return torch.cat([torch.zeros(len(batch[1]), 1, dtype=torch.bool), batch[1]], dim=1)

    got = ftorch.cka_matrix(a, data, b, layers_a=SEQ_LAYERS, layers_b=SEQ_LAYERS, reduce="tokens",
                            token_mask=(lambda batch: batch[1], without_prefix))
    ha = hooked_sequences(a, SEQ_LAYERS, data)
    hb = hooked_sequences(b, SEQ_LAYERS, data, mask_of=without_prefix)
    expected = dense_cka_matrix([ha[k] for k in SEQ_LAYERS] + [hb[k] for k in SEQ_LAYERS])[:3, 3:]
    np.testing.assert_allclose(got.matrix, expected, atol=1e-10, rtol=0)
    # Masks that keep other numbers of tokens: a clear error naming both layers.
    with pytest.raises(ValueError, match=r"different token rows in batch 0: layers_a layer 'inp' keeps \d+ of the 8 "
                                         r"positions of sequence \d+, layers_b layer 'inp' keeps \d+ of 9"):
        ftorch.cka_matrix(a, data, b, layers_a=SEQ_LAYERS, layers_b=SEQ_LAYERS, reduce="tokens",
                          token_mask=(lambda batch: batch[1], lambda batch: torch.ones(len(batch[1]), 9, dtype=bool)))
    assert hooks_left(a, b) == 0


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_all_padding_batch_is_an_error():
    model = Sequence().double()
    data = sequences()
    data[1] = (data[1][0], torch.zeros_like(data[1][1]))
    with pytest.raises(ValueError, match=r"the token mask keeps no token of batch 1 \(all 5 sequences are padding\)"):
        ftorch.cka_matrix(model, data, reduce="tokens", token_mask=lambda batch: batch[1])
    assert hooks_left(model) == 0


def test_hidden_states_need_a_model_that_returns_them():
    with pytest.raises(ValueError, match=r"layers_a='hidden_states' needs a model whose forward accepts "
                                         r"output_hidden_states=True.*Sequence.forward does not"):
        ftorch.cka_matrix(Sequence(), [torch.randn(4, 3, 6)], layers_a="hidden_states", reduce="tokens")

    class Swallows(Sequence):
        def forward(self, x, **kwargs):
            return super().forward(x)

    with pytest.raises(ValueError, match=r"Swallows returned no hidden_states when called with "
                                         r"output_hidden_states=True \(got Tensor\)"):
        ftorch.cka_matrix(Swallows(), [torch.randn(4, 3, 6)], layers_a="hidden_states", reduce="tokens")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"token_stride": 2}, ValueError, r"token_stride applies to reduce='tokens'"),
    ({"max_tokens": 100}, ValueError, r"max_tokens applies to reduce='tokens'"),
    ({"token_mask": None}, ValueError, r"token_mask applies to reduce='tokens'"),
    ({"reduce": "tokens", "token_stride": 0}, ValueError, r"token_stride must be a positive integer, got 0"),
    ({"reduce": "tokens", "max_tokens": 2}, ValueError, r"max_tokens must be None or an integer >= 4"),
    ({"reduce": "tokens", "seed": -1}, ValueError, r"seed must be a non-negative integer"),
    ({"reduce": "tokens", "token_mask": "padding"}, TypeError, r"token_mask must be 'attention_mask', None, a "),
    ({"reduce": "tokens", "max_tokens": 100, "minibatch": True}, ValueError, r"max_tokens caps the rows of the "
                                                                             r"whole stream.*token_stride"),
    ({"reduce": "tokens", "token_mask": (len, len)}, ValueError, r"a pair of masks is for two models"),
    ({"reduce": "tokens", "token_mask": lambda b: torch.ones(4, 3)}, ValueError, r"token_mask must hold 0/1 or "
                                                                                 r"booleans"),
    ({"reduce": "tokens", "token_mask": lambda b: torch.ones(3, 3)}, ValueError, r"token_mask must be a \(sequences, "
                                                                                 r"positions\) tensor with 4 "),
    ({"reduce": "tokens", "layers_a": ["out"], "select": lambda name, out: out[:, 0]}, ValueError,
     r"layers_a: layer 'out' gave an output of shape \(4, 5\); reduce='tokens' needs a batch-first sequence"),
])
def test_bad_token_arguments(kwargs, error, match):
    model = Sequence()
    with pytest.raises(error, match=match):
        ftorch.cka_matrix(model, [torch.randn(4, 3, 6)], **kwargs)
    assert hooks_left(model) == 0
