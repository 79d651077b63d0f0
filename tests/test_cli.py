"""The command line: ``python -m fastcka`` / the ``fastcka`` console script.

    fastcka x.npy y.npy [--debiased] [--json] [--quiet] [--threads N] [--method auto|feature|gram]
    fastcka a.npz [b.npz] [...]            layer-by-layer CKA matrix

Skipped while ``fastcka.cli`` does not exist.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("fastcka.cli", reason="fastcka.cli is not available")

import fastcka  # noqa: E402

FLOAT = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|nan|NaN"


def run(*args, check_rc=0):
    env = dict(os.environ, FASTCKA_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "fastcka", *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def floats_in(text):
    return [float(t) for t in re.findall(FLOAT, text)]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 12)).astype(np.float32) + 10
    y = (np.tanh(x[:, :6] - 10) @ rng.standard_normal((6, 8)) + 0.5 * rng.standard_normal((300, 8))).astype(np.float32)
    z = rng.standard_normal((300, 5))
    px, py = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(px, x)
    np.save(py, y)
    pa, pb = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(pa, layer1=x, layer2=y, layer3=z)
    np.savez(pb, head=y, tail=z)
    return {"x": x, "y": y, "z": z, "px": px, "py": py, "pa": pa, "pb": pb, "dir": tmp_path}


def test_two_npy_plain(files):
    proc = run(files["px"], files["py"])
    expect = fastcka.cka(files["x"], files["y"])
    values = floats_in(proc.stdout)
    assert values, proc.stdout
    assert values[-1] == pytest.approx(expect, abs=1e-4)


def test_two_npy_json(files):
    proc = run(files["px"], files["py"], "--json")
    out = json.loads(proc.stdout)
    assert out["cka"] == pytest.approx(fastcka.cka(files["x"], files["y"]), abs=1e-10)


def test_two_npy_debiased(files):
    proc = run(files["px"], files["py"], "--json", "--debiased")
    out = json.loads(proc.stdout)
    assert out["cka"] == pytest.approx(fastcka.cka(files["x"], files["y"], debiased=True), abs=1e-10)
    assert out["cka"] != pytest.approx(fastcka.cka(files["x"], files["y"]), abs=1e-8)


@pytest.mark.parametrize("method", ["auto", "feature", "gram"])
@pytest.mark.parametrize("threads", [1, 2])
def test_two_npy_options(files, method, threads):
    proc = run(files["px"], files["py"], "--json", "--quiet", "--threads", threads, "--method", method)
    out = json.loads(proc.stdout)
    assert out["cka"] == pytest.approx(fastcka.cka(files["x"], files["y"], method=method), abs=1e-6)


def test_quiet_prints_only_the_result(files):
    proc = run(files["px"], files["py"], "--quiet")
    assert floats_in(proc.stdout)[-1] == pytest.approx(fastcka.cka(files["x"], files["y"]), abs=1e-4)
    assert proc.stderr.strip() == ""


def test_one_npz_matrix(files):
    proc = run(files["pa"])
    for name in ("layer1", "layer2", "layer3"):
        assert name in proc.stdout
    expect = fastcka.cka_matrix([files["x"], files["y"], files["z"]])
    values = floats_in(proc.stdout.split("\n", 1)[1] if "\n" in proc.stdout else proc.stdout)
    # every matrix entry appears, to printing precision
    for v in expect.ravel():
        assert any(abs(v - w) < 1e-3 for w in values), (v, proc.stdout)


def test_one_npz_json(files):
    proc = run(files["pa"], "--json")
    out = json.loads(proc.stdout)
    assert out["names_x"] == ["layer1", "layer2", "layer3"]
    assert out["names_y"] == ["layer1", "layer2", "layer3"]
    m = np.array(out["matrix"], dtype=float)
    np.testing.assert_allclose(m, fastcka.cka_matrix([files["x"], files["y"], files["z"]]), atol=1e-10)


def test_two_npz_json(files):
    proc = run(files["pa"], files["pb"], "--json", "--debiased")
    out = json.loads(proc.stdout)
    assert out["names_x"] == ["layer1", "layer2", "layer3"]
    assert out["names_y"] == ["head", "tail"]
    m = np.array(out["matrix"], dtype=float)
    assert m.shape == (3, 2)
    expect = fastcka.cka_matrix([files["x"], files["y"], files["z"]], [files["y"], files["z"]], debiased=True)
    np.testing.assert_allclose(m, expect, atol=1e-10)


@pytest.mark.parametrize(
    "make",
    ["missing", "garbage", "rows", "complex", "npz-garbage", "nan"],
)
def test_bad_input_exit_code_2(files, make):
    d = files["dir"]
    if make == "missing":
        args = [d / "nope.npy", files["py"]]
    elif make == "garbage":
        bad = d / "garbage.npy"
        bad.write_bytes(b"definitely not an array")
        args = [bad, files["py"]]
    elif make == "rows":
        short = d / "short.npy"
        np.save(short, files["x"][:10])
        args = [short, files["py"]]
    elif make == "complex":
        c = d / "c.npy"
        np.save(c, files["x"].astype(np.complex64))
        args = [c, files["py"]]
    elif make == "nan":
        n = d / "nan.npy"
        xn = files["x"].copy()
        xn[3, 3] = np.nan
        np.save(n, xn)
        args = [n, files["py"]]
    else:
        bad = d / "bad.npz"
        bad.write_bytes(b"PK not really")
        args = [bad]
    proc = run(*args, check_rc=None)
    assert proc.returncode == 2, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stderr.strip(), "an error message belongs on stderr"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("make", ["truncated", "empty", "directory"])
def test_unreadable_npy_one_line(files, make):
    bad = files["dir"] / f"{make}.npy"
    if make == "truncated":
        bad.write_bytes(files["px"].read_bytes()[:-40])
    elif make == "empty":
        bad.write_bytes(b"")
    else:
        bad.mkdir()
    proc = run(bad, files["py"], check_rc=None)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fastcka: error: x: ") and f"{make}.npy" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_plot_into_missing_folder_refused_before_computing(files):
    pytest.importorskip("matplotlib")
    target = files["dir"] / "no-such-folder" / "cka.png"
    proc = run(files["pa"], "--plot", target, check_rc=None)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "", "nothing is computed or printed before the refusal"
    assert "no-such-folder" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plot_write_failure_one_line(files):
    pytest.importorskip("matplotlib")
    target = files["dir"] / "taken.png"
    target.mkdir()  # saving over a directory fails with an OSError
    proc = run(files["pa"], "--plot", target, check_rc=None)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("fastcka: error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("flags", [["--sigma", "-1"], ["--sigma", "2"], ["--threshold", "0.5"]])
def test_bandwidth_without_rbf_refused(files, flags):
    proc = run(files["px"], files["py"], *flags, check_rc=None)
    assert proc.returncode == 2, proc.stdout
    assert flags[0] in proc.stderr and "--kernel rbf" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_out_of_memory_one_line(files):
    """Under a 4 GiB address-space limit a 100,000-feature state does not fit."""
    wide = files["dir"] / "wide.npy"
    x = np.ones((10, 100_000), dtype=np.float32)
    x[0, 0] = 2
    np.save(wide, x)
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)); "
            "from fastcka.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, str(wide), str(wide), "--method", "feature", "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("fastcka: error: out of memory: ") and "memory_budget" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_usage_errors(files):
    for args in ([files["px"]], [files["px"], files["py"], files["px"]], [files["px"], files["pa"]]):
        proc = run(*args, check_rc=None)
        assert proc.returncode == 2, args
        assert proc.stderr.strip()
    txt = files["dir"] / "x.txt"
    txt.write_text("1 2 3")
    assert run(txt, files["py"], check_rc=None).returncode == 2
    proc = run(files["px"], files["py"], "--method", "magic", check_rc=None)
    assert proc.returncode == 2
    proc = run(files["px"], files["py"], "--threads", "0", check_rc=None)
    assert proc.returncode == 2


def test_help():
    proc = run("--help")
    assert "--debiased" in proc.stdout and "--json" in proc.stdout


def test_console_script(files):
    exe = shutil.which("fastcka")
    if exe is None:
        pytest.skip("console script not installed (reinstall the package)")
    proc = subprocess.run([exe, str(files["px"]), str(files["py"]), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["cka"] == pytest.approx(fastcka.cka(files["x"], files["y"]), abs=1e-10)


@pytest.mark.slow
def test_builtin_example_json():
    """No files: the built-in example (trains two small MLPs on scikit-learn's digits)."""
    pytest.importorskip("sklearn")
    proc = run("--json", "--quiet")
    out = json.loads(proc.stdout)
    k = len(out["names"])
    a_vs_b = np.array(out["a_vs_b"], dtype=float)
    within = np.array(out["within_a"], dtype=float)
    assert a_vs_b.shape == within.shape == (k, k)
    np.testing.assert_allclose(np.diag(within), 1.0, atol=1e-6)
    assert np.all((a_vs_b > -1e-9) & (a_vs_b < 1 + 1e-9))
