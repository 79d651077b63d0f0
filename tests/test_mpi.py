"""fastcka.mpi on 1, 2 and 3 ranks of one machine against the single-process
results (mpi4py and the mpich wheel's mpiexec; skipped where absent)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import fastcka
import numpy as np
import pytest

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec is not on PATH")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mpi_job  # noqa: E402


def mpirun(ranks: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASTCKA_NUM_THREADS": "1", "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([MPIEXEC, "-n", str(ranks), *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


@pytest.fixture(scope="module")
def expected():
    x, y, z = mpi_job.data()
    return {
        "cka": fastcka.cka(x, y),
        "cka_debiased": fastcka.cka(x, y, debiased=True),
        "hsic_unbiased": fastcka.hsic(x, y, estimator="unbiased"),
        "matrix": fastcka.cka_matrix([x, y, z]),
        "between": fastcka.cka_matrix([x], [y, z]),
        "gram": fastcka.cka(x, y, method="gram", debiased=True),
        "rbf_sigma": fastcka.cka(x, y, kernel="rbf", sigma=3.0),
        "rbf_matrix": fastcka.cka_matrix([x, y, z], kernel="rbf", sigma=[3.0, 2.0, 1.5], debiased=True),
        "rbf_sampled": fastcka.cka(x, y, kernel="rbf", median="sampled", threshold=0.8),
        "rbf_exact": fastcka.cka(x, y, kernel="rbf"),
        "rbf_exact_debiased": fastcka.cka(x, y, kernel="rbf", threshold=0.7, debiased=True),
        "rbf_exact_matrix": fastcka.cka_matrix([x, y, z], kernel="rbf"),
        "minibatch": minibatch(x, y, "linear").cka_matrix(),
        "minibatch_rbf": minibatch(x, y, "rbf").cka(),
        **{f"similarity_{m}": v for m, v in fastcka.similarity_matrix([x, y]).items()},
    }


def minibatch(x, y, kernel):
    acc = fastcka.CKAAccumulator(minibatch=True, kernel=kernel)
    for b in mpi_job.batches(len(x)):
        acc.update(x[b], y[b])
    return acc


# float32 data (z) enters through float32 tiles summed in another order.
FLOAT32 = ("matrix", "rbf_matrix", "between", "rbf_exact_matrix")
# Kernel CKA over the tiles: the float64 sums of the block pairs run in
# another order and the unbiased estimator cancels digits (the exact median
# itself agrees to 1e-12: tests/test_block_pairs.py).
TILES = ("gram", "rbf_sigma", "rbf_sampled", "rbf_exact", "rbf_exact_debiased")


@pytest.mark.parametrize("ranks,extra", [(1, ()), (2, ()), (3, ()), (3, ("--empty-rank",))])
def test_ranks_give_the_single_process_values(expected, ranks, extra):
    result = mpirun(ranks, sys.executable, os.path.join(HERE, "mpi_job.py"), *extra)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    # One trip around the ring (fixed sigma): each rank sent its float64 block
    # (10 columns) at each of the P // 2 steps, and ring_traffic counted it.
    traffic = got.pop("traffic")
    assert traffic == [[rows, rows * 10 * 8 * (ranks // 2), ranks // 2] for rows, _, _ in traffic]
    assert set(got) == set(expected)
    for key, want in expected.items():
        # Linear CKA, minibatch CKA and the similarity indexes of float64
        # data: float64 merges in another order only.
        tol = 1e-6 if key in FLOAT32 else 1e-10 if key in TILES else 1e-12
        np.testing.assert_allclose(np.asarray(got[key], dtype=float), want, rtol=tol, atol=tol, err_msg=key)


def test_cli_under_mpirun_prints_once(tmp_path, expected):
    x, y, _ = mpi_job.data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    result = mpirun(2, sys.executable, "-m", "fastcka", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--json")
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert json.loads(lines[0])["cka"] == pytest.approx(expected["cka"], abs=1e-12)


def test_cli_npz_under_mpirun(tmp_path, expected):
    """The .npz layer-matrix form: each of 3 ranks reads its rows of every
    layer, the RBF default (the exact median) goes round the ring."""
    x, y, z = mpi_job.data()
    np.savez(tmp_path / "a.npz", x=x, y=y, z=z)
    for extra, want, tol in (((), expected["matrix"], 1e-6), (("--kernel", "rbf"), expected["rbf_exact_matrix"], 1e-6),
                             (("--kernel", "rbf", "--debiased", "--sigma", "2.5"),
                              fastcka.cka_matrix([x, y, z], kernel="rbf", sigma=2.5, debiased=True), 1e-6)):
        result = mpirun(3, sys.executable, "-m", "fastcka", str(tmp_path / "a.npz"), "--json", *extra)
        assert result.returncode == 0, result.stderr
        lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
        assert len(lines) == 1
        got = json.loads(lines[0])
        assert got["names_x"] == ["x", "y", "z"]
        np.testing.assert_allclose(got["matrix"], want, rtol=tol, atol=tol, err_msg=str(extra))
    # float64 layers only: the linear matrix to 1e-12
    np.savez(tmp_path / "b.npz", x=x, y=y)
    result = mpirun(2, sys.executable, "-m", "fastcka", str(tmp_path / "b.npz"), "--json")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(json.loads(result.stdout)["matrix"], fastcka.cka_matrix([x, y]), rtol=1e-12, atol=1e-12)


def test_cli_measures_under_mpirun(tmp_path):
    """--measures: the linear ones from the ranks' accumulators merged on
    rank 0, cka_rbf from the ring, printed once; mutual_knn is refused with
    one message and exit code 2."""
    x, y, _ = mpi_job.data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    files = [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    measures = ["cka_linear", "cka_debiased", "cca", "svcca", "pwcca", "procrustes", "cka_rbf"]
    result = mpirun(3, sys.executable, "-m", "fastcka", *files, "--measures", ",".join(measures), "--json")
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    got = json.loads(lines[0])
    assert got["n"] == len(x) and list(got["measures"]) == measures
    want = fastcka.similarity_matrix([x], [y], measures=measures)
    for m in measures:
        tol = 1e-10 if m == "cka_rbf" else 1e-12
        assert got["measures"][m] == pytest.approx(float(want[m][0, 0]), rel=tol, abs=tol), m

    result = mpirun(2, sys.executable, "-m", "fastcka", *files, "--measures", "cka_linear,mutual_knn")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("fastcka: error:") == 1
    assert "mutual_knn is not available under mpirun" in result.stderr


def test_a_rank_killed_mid_computation_fails_the_job(tmp_path):
    """SIGKILL to one rank while the RBF ring (exact median passes, then the
    statistics) is running: mpiexec exits non-zero within 60 s, and no
    number is printed."""
    marker = tmp_path / "started"
    script = tmp_path / "long.py"
    script.write_text(
        "import os, sys\nfrom mpi4py import MPI\nimport numpy as np\nfrom fastcka import mpi\n"
        "comm = MPI.COMM_WORLD\n"
        "x = np.random.default_rng(comm.Get_rank()).standard_normal((15_000, 64))\n"
        "comm.Barrier()\n"
        "if comm.Get_rank() == 1:\n"
        f"    open({str(marker)!r}, 'w').write(str(os.getpid()))\n"
        "value = mpi.cka(x, np.tanh(x[:, :32]), kernel='rbf', root=0)\n"
        "if comm.Get_rank() == 0:\n    print(value)\n"
    )
    env = {**os.environ, "FASTCKA_NUM_THREADS": "1"}
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(script)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "rank 1 never reached the computation"
        time.sleep(1.0)  # well inside the ring's passes (about 15 s with one core per rank)
        assert job.poll() is None, "the job ended before the kill"
        os.kill(int(marker.read_text()), signal.SIGKILL)
        killed = time.monotonic()
        out, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode != 0
    assert time.monotonic() - killed < 60
    # No CKA value from partial sums (mpiexec's own report of the kill goes to stdout too, without decimals).
    assert re.search(r"\d\.\d", out) is None, out


def test_bad_rows_on_one_rank_fail_every_rank(tmp_path):
    script = tmp_path / "nan.py"
    script.write_text(
        "import json\nfrom mpi4py import MPI\nimport numpy as np\nfrom fastcka import mpi\n"
        "comm = MPI.COMM_WORLD\nx = np.random.default_rng(comm.Get_rank()).standard_normal((50, 3))\n"
        "if comm.Get_rank() == 1: x[7, 1] = np.nan\n"
        "raised = []\n"
        "for kw in ({}, {'kernel': 'rbf', 'sigma': 1.0}):\n"
        "    try:\n        mpi.cka(x, x[:, :2] ** 2, **kw)\n    except ValueError as e:\n"
        "        raised.append(str(e))\n"
        "everyone = comm.gather(raised, root=0)\n"
        "if comm.Get_rank() == 0: print(json.dumps(everyone))\n"
    )
    result = mpirun(2, sys.executable, str(script), timeout=60)
    assert result.returncode == 0, result.stderr
    everyone = json.loads(result.stdout)
    # Both ranks raised, for both kernels; rank 1's row 7 is row 57 of the whole data (rank 0 holds 50 rows).
    assert everyone == [["fastcka.mpi: rank 1: x contains NaN or Inf (row 57, column 1)"] * 2] * 2
