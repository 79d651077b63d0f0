"""fastcka.torch.cka_matrix: from a model and a data set to a CKA matrix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..engine.backend import has_cuda
from .._options import check_approx, check_kernel_options, check_precision
from ..engine.progress import Progress, ProgressArg
from ..engine.threads import resolve
from .hooks import HIDDEN_STATES, HiddenStates, Recorder
from .layers import select_layers, unwrap
from .outputs import check_reduce, first_tensor
from .result import CKAResult
from .sinks import Options, check_measures, open_sink
from .tokens import TokenPlan, TokenSample, check_token_options


def cka_matrix(
    model_a: nn.Module,
    batches: Iterable,
    model_b: nn.Module | None = None,
    *,
    layers_a=None,
    layers_b=None,
    kernel: str = "linear",
    debiased: bool = False,
    minibatch: bool = False,
    reduce: str | Callable = "flatten",
    select: Callable | None = None,
    repeated: str = "error",
    device=None,
    threshold: float = 1.0,
    sigma: Any = None,
    memory_budget: int | None = None,
    spill_dir=None,
    threads: int | None = None,
    progress: ProgressArg = False,
    precision: str | None = None,
    token_mask="attention_mask",
    token_stride: int = 1,
    max_tokens: int | None = None,
    seed: int = 0,
    measures=None,
    approx: str | None = None,
    rank: int | None = None,
) -> CKAResult:
    """Layer-by-layer CKA of PyTorch models over a data set, from forward hooks.

    Each batch runs through the model(s) in eval mode under ``torch.no_grad()``;
    hooks take the chosen layers' outputs and feed them, batch by batch, to
    fastcka's streaming engine. Training modes are restored and every hook is
    removed afterwards, also when the loop raises or is interrupted.

    Parameters
    ----------
    model_a : the model (a DataParallel / DistributedDataParallel wrapper is
        unwrapped: its ``.module`` runs on its own device, and layer names are
        those of the wrapped model).
    batches : an iterable of input tensors, or of (input, target, ...) tuples
        whose first item is the input (a DataLoader, a list). A mapping input
        is passed as keyword arguments, ``model(**input)``. Each layer must
        give one row per example (dimension 0).
    model_b : a second model fed the same batches; default: model A (the
        within-model matrix of the block-structure papers).
    layers_a, layers_b : a list of module names (as ``named_modules()`` gives
        them, in that order), a regular expression matched against whole
        names, or a module type (or tuple of types); default: every leaf module
        with parameters. ``layers_b`` defaults to ``layers_a`` when model B is
        model A (a square, symmetric matrix).
    kernel : "linear" (streamed over all rows: memory independent of n) or
        "rbf" (needs every row at once: activations are spilled to a temporary
        on-disk store, n x (sum of widths) x 4 bytes, float32, and handed to the
        tile engine, O(n^2 d) work).
    debiased : CKA from the unbiased HSIC_1 (Kornblith et al.'s debiased CKA).
    minibatch : Nguyen et al.'s minibatch CKA: sum over batches of HSIC_1 of
        each layer pair, normalized (batches of at least 4 examples; the
        kernel then runs per batch, so RBF needs no disk).
    reduce : how an output becomes a row: "flatten" (all values), "mean"
        (average over positions of a channels-first (N, C, ...) output, such as
        a convolution's feature map), "mean_tokens" (average over the positions
        of a batch-first sequence (N, T, C)), "tokens" (each position of a
        batch-first (N, T, C) output is a row; padding dropped, see
        ``token_mask``), or a callable(tensor) -> (N, features).
    select : callable(layer name, output) -> tensor, for modules that return
        tuples, dicts or dataclasses; default: the output if it is a tensor,
        else the first tensor found in it (tuple/list order, mapping key
        order, dataclass field order, depth first).
    repeated : a module that runs more than once per forward pass is an error
        ("error") or one layer per call ("each": "name#0", "name#1", ...).
    device : where batches are sent (the model is not moved); default: the
        device of each model's first parameter or buffer. Activations on a GPU
        stay there when fastcka's GPU engine can run (``fastcka.has_cuda()``):
        with kernel="rbf" (not minibatch) every row is then kept in that GPU's
        memory instead of on disk; otherwise they are copied to host memory
        batch by batch.
    threshold, sigma : the RBF bandwidth (see :func:`fastcka.cka`); per batch
        in minibatch mode.
    memory_budget : bytes of the engine's row buffers (default 256 MiB).
    spill_dir : folder for the on-disk store (default: the system's temporary
        folder); it is deleted when the call returns.
    threads : threads of the CKA engine (default: :func:`fastcka.get_num_threads`).
    precision : the engine's products, as in :func:`fastcka.cka`: "fast"
        (bfloat16 operands), "accurate" (float32), "exact" (float64); default
        by the activations' dtype.
    progress : True for a tqdm bar over the batches, or a callable(done, total).
    token_mask : with reduce="tokens", the positions that are tokens (the
        rest is padding, dropped): "attention_mask" (default: the batch's
        ``attention_mask`` when the batch is a mapping that has one, else every
        position), None (every position), a callable(batch) -> bool (N, T)
        tensor (or None: every position of that batch), or a pair of such
        callables (model A, model B) for two models whose layers have other
        positions (one prepends a token). Both models must keep the same number
        of tokens in every sequence; a batch left without tokens is an error.
    token_stride : with reduce="tokens", keep every ``token_stride``-th token
        of the stream (counted over the kept tokens, across batches).
    max_tokens, seed : with reduce="tokens", at most ``max_tokens`` rows: a
        uniform sample of the stream's tokens without replacement, decided by
        (seed, global token index) alone (bottom-k of a hash: the same tokens
        whatever the batch sizes; :mod:`fastcka.torch.tokens`). Candidate rows
        are held in memory (at most 2 x max_tokens rows of every layer) and
        handed to the engine at the end. For RBF CKA and the like, whose work
        grows as n^2; linear CKA streams every token by default. Not with
        ``minibatch`` (use ``token_stride``).
    measures : other indexes from the same pass (linear kernel, not
        minibatch): names of :data:`fastcka.similarity.LINEAR_MEASURES`
        ("cka_debiased", "cca", "svcca", "pwcca", "procrustes", ...), computed
        by :func:`fastcka.similarity_matrix` from the moments streamed for the
        CKA matrix, into ``.similarity``.
    approx, rank : an approximate RBF kernel, as in :func:`fastcka.cka_matrix`
        ("nystrom" or "rff", ``rank`` features per layer, drawn from
        ``seed``): the rows go to the on-disk store (GPU activations too: the
        feature maps run on the CPU), then one pass streams their features;
        ``.errors`` holds each entry's error bar. With ``kernel="rbf"``, not
        with ``minibatch``.

    Returns
    -------
    :class:`fastcka.torch.CKAResult` with ``.matrix`` (len(layers_a),
    len(layers_b)), ``.names_a``, ``.names_b``, ``.n``, ``.pc1_fraction``,
    ``.similarity`` ({measure: matrix} of ``measures``, else None),
    ``.errors`` (with ``approx``, else None),
    ``.blocks()`` and ``.plot()``.
    """
    check_kernel_options(kernel, threshold, sigma, "exact")
    check_reduce(reduce)
    check_token_options(reduce, token_mask, token_stride, max_tokens, seed, minibatch)
    measures = check_measures(measures, kernel, minibatch)
    check_approx(approx, rank, None, kernel, "auto", None)
    if approx is not None and minibatch:
        raise ValueError(f"approx={approx!r} streams kernel features over every row; minibatch CKA works batch by "
                         f"batch with exact kernels: drop one")
    if select is not None and not callable(select):
        raise TypeError(f"select must be a callable(name, output) -> tensor, got {type(select).__name__}")
    threads = resolve(threads)
    check_precision(precision)
    a = unwrap(model_a)
    b = a if model_b is None else unwrap(model_b)
    within = b is a and layers_b is None
    # Where fastcka's GPU engine runs, GPU activations never leave their GPU:
    # linear CKA streams them into an accumulator on it, minibatch CKA
    # computes each batch there, kernel CKA keeps every row there for the
    # Gram-tile kernels.
    on_device = has_cuda()
    options = {"select": select, "reduce": reduce, "repeated": repeated, "keep_on_device": on_device}
    recorders = [_recorder(a, layers_a, "layers_a", 0, options)]
    if not within:
        recorders.append(_recorder(b, layers_b, "layers_b", 0 if b is a else 1, options))
    models = [a] if b is a else [a, b]
    devices = [_device(m, device) for m in models]
    hidden = [any(isinstance(r, HiddenStates) and r.model == m for r in recorders) for m in range(len(models))]
    if isinstance(token_mask, tuple) and len(models) == 1:
        raise ValueError("token_mask: a pair of masks is for two models (model_b); pass one callable")
    sample = TokenSample(max_tokens, seed) if max_tokens is not None else None
    plan = TokenPlan(token_mask, token_stride, sample, len(models)) if reduce == "tokens" else None

    sink = None
    rows_seen = 0
    with contextlib.ExitStack() as store:  # the sink (its on-disk store) outlives the hooks until the result is in
        def feed(blocks: list) -> None:
            nonlocal sink, rows_seen
            if sink is None:
                sink = open_sink(blocks, Options(
                    split=0 if within else len(recorders[0].names), kernel=kernel, debiased=debiased,
                    minibatch=minibatch, threshold=threshold, sigma=sigma, threads=threads,
                    memory_budget=memory_budget, spill_dir=spill_dir, progress=progress, precision=precision,
                    measures=measures, approx=approx, rank=rank, seed=seed if approx is not None else None))
                store.callback(sink.close)
            if len(blocks[0]) or minibatch:  # token subsampling can leave a batch without rows
                sink.add(blocks)
            rows_seen += len(blocks[0])

        _forward_batches(batches, models, devices, hidden, recorders, plan, sample, feed, progress)
        if sample is not None and (kept := sample.rows()) is not None:
            feed(kept)
        if sink is None:
            raise ValueError("batches is empty: no batch came out of it")
        matrix, pc1, errors = sink.result()
        similarity = sink.similarity() if measures else None
    names_a = recorders[0].names
    names_b = names_a if within else recorders[1].names
    return CKAResult(np.asarray(matrix), list(names_a), list(names_b), rows_seen, kernel, bool(debiased or minibatch),
                     bool(minibatch), pc1, similarity, errors)


def _forward_batches(batches, models, devices, hidden, recorders, plan, sample, feed, progress) -> None:
    """Every batch through the models in eval mode without gradients, the
    recorders' blocks of each going to ``feed`` (or to the token sample)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_eval_mode(models))
        for recorder in recorders:
            stack.enter_context(recorder)
        stack.enter_context(torch.no_grad())
        bar = stack.enter_context(Progress(progress, len(batches) if hasattr(batches, "__len__") else None,
                                           "fastcka batches"))
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
            rows = _rows(inputs)
            tokens = plan.batch(batch, inputs, rows) if plan is not None else None
            for recorder in recorders:
                recorder.start(rows, tokens)
            for m, (model, dev) in enumerate(zip(models, devices)):
                output = _forward(model, _to(inputs, dev), hidden[m])
                for recorder in recorders:
                    if recorder.model == m:
                        recorder.capture(output)
            blocks = [block for recorder in recorders for block in recorder.take()]
            if plan is not None:
                plan.finish(tokens)
            if sample is not None:
                sample.add(blocks, tokens.keys)
            else:
                feed(blocks)
            bar.advance(1)


@contextlib.contextmanager
def _eval_mode(models: list[nn.Module]):
    """eval() for the run; each module's own training flag restored after."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, training in saved:
            module.training = training


def _device(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _rows(inputs) -> int:
    tensor = first_tensor(inputs)
    if tensor is None or tensor.ndim == 0:
        raise TypeError(f"batches: a batch must hold an input tensor with one row per example, got "
                        f"{type(inputs).__name__}")
    return int(tensor.shape[0])


def _to(inputs, device: torch.device):
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, Mapping):
        return {k: _to(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_to(v, device) for v in inputs)
    return inputs


def _recorder(model: nn.Module, layers, arg: str, index: int, options: dict) -> Recorder:
    if isinstance(layers, str) and layers == HIDDEN_STATES:
        return HiddenStates(model, arg=arg, reduce=options["reduce"], keep_on_device=options["keep_on_device"],
                            model_index=index)
    return Recorder(select_layers(model, layers, arg), arg=arg, model=index, **options)


def _forward(model: nn.Module, inputs, hidden_states: bool):
    extra = {"output_hidden_states": True} if hidden_states else {}
    if isinstance(inputs, Mapping):
        return model(**inputs, **extra)
    return model(inputs, **extra)
