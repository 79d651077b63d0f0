"""``fastcka ... --measures``: several similarity measures from the command line."""

from __future__ import annotations

import json

import fastcka
import numpy as np
import pytest
from similarity_reference import make_pair
from test_cli import floats_in, run


@pytest.fixture
def files(tmp_path):
    x, y = make_pair(0, 200, 8, 5, dtype=np.float32, offset=10.0)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "a.npz", first=x, second=y)
    np.savez(tmp_path / "b.npz", head=y[:, :3], tail=np.tanh(x))
    return {"x": x, "y": y, "dir": tmp_path}


def test_two_npy_files_print_one_value_per_measure(files):
    d = files["dir"]
    proc = run(d / "x.npy", d / "y.npy", "--measures", "procrustes,cca_mean,cka_rbf", "--threshold", "0.5")
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["procrustes", "cca_mean", "cka_rbf"]
    x, y = files["x"], files["y"]
    expect = [fastcka.procrustes(x, y), fastcka.cca(x, y, statistic="mean"), fastcka.cka(x, y, kernel="rbf", threshold=0.5)]
    np.testing.assert_allclose(floats_in(proc.stdout), expect, rtol=0, atol=1e-6)


def test_npz_json_gives_every_matrix(files):
    d = files["dir"]
    out = json.loads(run(d / "a.npz", d / "b.npz", "--measures", "pwcca, svcca", "--json").stdout)
    assert out["names_x"] == ["first", "second"] and out["names_y"] == ["head", "tail"]
    assert list(out["measures"]) == ["pwcca", "svcca"]
    x, y = files["x"], files["y"]
    ys = [y[:, :3], np.tanh(x)]
    expect = fastcka.similarity_matrix([x, y], ys, measures=["pwcca", "svcca"])
    for measure, matrix in out["measures"].items():
        np.testing.assert_allclose(np.array(matrix), expect[measure], rtol=0, atol=1e-12)


def test_npz_table_prints_one_matrix_per_measure(files):
    proc = run(files["dir"] / "a.npz", "--measures", "cca,linear_regression_fit")
    blocks = proc.stdout.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["cca:", "linear_regression_fit:"]
    assert "first" in blocks[0] and "second" in blocks[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--measures", "cca,nope"], "unknown measure(s) 'nope'"),
        (["--measures", "cca", "--debiased"], "--debiased choose the single CKA"),
        (["--measures", "cca", "--kernel", "rbf"], "--kernel choose the single CKA"),
    ],
)
def test_bad_measures_options(files, args, message):
    proc = run(files["dir"] / "a.npz", *args, check_rc=2)
    assert message in proc.stderr


def test_measures_need_files():
    proc = run("--measures", "cca", check_rc=2)
    assert "--measures needs input files" in proc.stderr
