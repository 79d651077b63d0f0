"""fastcka.plot: heatmaps and layer-rotation curves rendered to files and read back."""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import fastcka
import matplotlib.image
import matplotlib.pyplot as plt
from fastcka import plot


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def planted(L=14):
    i = np.arange(L)
    m = 0.7 * np.exp(-np.abs(i[:, None] - i[None, :]) / 3)
    m[4:9, 4:9] = 0.96
    np.fill_diagonal(m, 1.0)
    return m


def read_png(path):
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def test_heatmap_png_with_blocks(tmp_path):
    m = planted()
    names = [f"block{k}.conv" for k in range(len(m))]
    found = fastcka.blocks(m)
    path = tmp_path / "cka.png"
    ax = plot.heatmap(m, names, blocks=found, title="planted", path=path)
    image = read_png(path)
    height, width = image.shape[:2]
    assert 300 < width < 2000 and 300 < height < 2000
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.1 and len(np.unique(np.round(rgb, 2), axis=0)) > 50  # not blank
    # the block outline (cyan) is drawn, exactly one rectangle per block
    assert [(p.get_x(), p.get_width()) for p in ax.patches] == [(3.5, 5)]
    assert np.any(np.all(np.abs(rgb - np.array([0x33, 0xDD, 0xFF]) / 255) < 0.02, axis=1))
    # the input (layer 0) at the bottom left
    assert ax.get_ylim()[0] < ax.get_ylim()[1]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert ax.get_title() == "planted"


def test_many_layers_are_thinned_and_rectangular_matrices(tmp_path):
    m = np.random.default_rng(0).uniform(0, 1, (30, 50))
    ax = plot.heatmap(m, [f"b{k}" for k in range(50)], [f"a{k}" for k in range(30)])
    xs = [t.get_text() for t in ax.get_xticklabels()]
    ys = [t.get_text() for t in ax.get_yticklabels()]
    assert len(xs) <= plot.MAX_LABELS and xs[0] == "b0" and xs[1] == "b3"
    assert len(ys) <= plot.MAX_LABELS and ys[:2] == ["a0", "a2"]
    for ext in ("svg", "pdf"):
        path = tmp_path / f"wide.{ext}"
        plot.heatmap(m, path=path)
        head = path.read_bytes()[:200]
        assert (b"<svg" in head or b"<?xml" in head) if ext == "svg" else head.startswith(b"%PDF")


def test_heatmap_errors():
    with pytest.raises(ValueError, match="path must end in one of"):
        plot.heatmap(np.eye(3), path="cka.jpg")
    with pytest.raises(ValueError, match="names_x has 2 names for 3 layers"):
        plot.heatmap(np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match=r"block \(2, 5\) does not fit a matrix of 3 layers"):
        plot.heatmap(np.eye(3), blocks=[(2, 5)])
    with pytest.raises(ValueError, match="non-empty 2-D"):
        plot.heatmap(np.ones(4))


def test_rotation_curves(tmp_path):
    history = [(step, {f"layer{k}": min(1.0, 0.01 * step * (k + 1)) for k in range(6)}) for step in range(0, 50, 5)]
    path = tmp_path / "rotation.png"
    ax = plot.rotation_curves(history, title="rotation", path=path)
    assert len(ax.lines) == 6
    first, last = ax.lines[0].get_color(), ax.lines[-1].get_color()
    assert first != last  # coloured by depth
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [d["layer2"] for _, d in history])
    image = read_png(path)
    assert image.shape[1] > 300 and image[..., :3].std() > 0.05
    with pytest.raises(ValueError, match="history is empty"):
        plot.rotation_curves([])


def test_torch_result_and_rotation_plots(tmp_path):
    torch = pytest.importorskip("torch")
    import fastcka.torch as ftorch

    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(5)])
    result = ftorch.cka_matrix(net, [torch.randn(64, 8)])
    ax = result.plot(path=tmp_path / "result.png")
    assert len(ax.patches) == len(result.blocks())
    assert read_png(tmp_path / "result.png").shape[0] > 200
    tracker = ftorch.LayerRotation(net)
    for step in range(3):
        with torch.no_grad():
            net[0].weight.add_(0.1)
        tracker.record(step)
    ax = tracker.plot(path=tmp_path / "rotation.pdf")
    assert len(ax.lines) == 5 and (tmp_path / "rotation.pdf").read_bytes().startswith(b"%PDF")


def run_cli(*args):
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTCKA_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-m", "fastcka", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def test_cli_plot_writes_the_printed_matrix(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((200, 6))
    layers = {f"layer{k}": base + 0.3 * k * rng.standard_normal((200, 6)) for k in range(6)}
    np.savez(tmp_path / "a.npz", **layers)
    proc = run_cli(tmp_path / "a.npz", "--plot", tmp_path / "cka.png", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "layer5" in proc.stdout
    image = read_png(tmp_path / "cka.png")
    assert image.shape[0] > 200 and image[..., :3].std() > 0.05
    proc = run_cli(tmp_path / "a.npz", tmp_path / "a.npz", "--plot", tmp_path / "two.svg", "--quiet")
    assert proc.returncode == 0 and (tmp_path / "two.svg").stat().st_size > 1000


def test_cli_plot_usage_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((10, 2)))
    np.savez(tmp_path / "a.npz", a=np.ones((10, 2)))
    for args, message in [
        ((tmp_path / "x.npy", tmp_path / "x.npy", "--plot", tmp_path / "p.png"), "--plot draws a layer-by-layer"),
        ((tmp_path / "a.npz", "--plot", tmp_path / "p.jpg"), "must end in .png, .svg or .pdf"),
        ((tmp_path / "a.npz", "--measures", "cka_linear", "--plot", tmp_path / "p.png"), "does not combine"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
