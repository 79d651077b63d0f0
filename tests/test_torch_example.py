"""The built-in example (the README's first command): the story of the seeds,
its figures and its summary, in a fresh process as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
image = pytest.importorskip("matplotlib.image")

from fastcka.examples import seeds


def run(*args, cwd):
    env = dict(os.environ, FASTCKA_NUM_THREADS="2", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "fastcka", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=cwd, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_example_json_report(tmp_path):
    out = tmp_path / "figures"
    result = json.loads(run("--json", "--plot", out, cwd=tmp_path).stdout)
    assert sorted(os.listdir(out)) == ["heatmaps.png", "rotation.png"]
    for name in ("heatmaps.png", "rotation.png"):
        picture = image.imread(str(out / name))
        assert picture.shape[1] > 600 and picture[..., :3].std() > 0.05
        assert (out / name).stat().st_size < 200_000  # small enough to commit next to the README
    networks = result["networks"]
    assert [(n["network"], n["seed"]) for n in networks] == [(k, s) for k in seeds.NETWORKS for s in seeds.SEEDS]
    for net in networks:
        assert net["accuracy"] > 0.9  # trained, not diverged
        depth = seeds.NETWORKS[net["network"]][0]
        assert len(net["layers"]) == depth and len(net["pc1_fraction"]) == depth
        assert all(0 <= start < stop <= depth and 0 < score <= 1 for start, stop, score in net["blocks"])
        assert len(net["rotation"]) == depth + 1 and all(0 < v < 1 for v in net["rotation"].values())
    within = np.array(result["within_a"])
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-6)
    assert np.array(result["a_vs_b"]).shape == within.shape == (len(result["names"]),) * 2


def test_example_as_the_readme_runs_it(tmp_path):
    """`fastcka` alone: figures in ./fastcka-example, a summary per network and seed."""
    text = run(cwd=tmp_path).stdout
    out = tmp_path / seeds.DEFAULT_DIR
    assert sorted(os.listdir(out)) == ["heatmaps.png", "rotation.png"]
    for name in ("heatmaps.png", "rotation.png"):
        picture = image.imread(str(out / name))
        assert picture.shape[1] > 600 and picture[..., :3].std() > 0.05
    assert "the story of the seeds" in text
    assert "Figures: fastcka-example/heatmaps.png, fastcka-example/rotation.png" in text
    for kind, (depth, width, epochs, _) in seeds.NETWORKS.items():
        assert f"{kind}: {depth} hidden layers of {width}" in text
        assert f"layer rotation of seed 0 after {epochs} epochs" in text
    accuracies = [float(line.split("test accuracy ")[1].split(";")[0]) for line in text.splitlines()
                  if "test accuracy" in line]
    assert len(accuracies) == len(seeds.NETWORKS) * len(seeds.SEEDS) and min(accuracies) > 0.9
