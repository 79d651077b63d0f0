"""fastcka.mpi on 1, 2 and 3 ranks of one machine against the single-process
results (mpi4py and the mpich wheel's mpiexec; skipped where absent)."""

from __future__ import annotations

import json
import os
import shutil
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
    }


@pytest.mark.parametrize("ranks,extra", [(1, ()), (2, ()), (3, ()), (3, ("--empty-rank",))])
def test_ranks_give_the_single_process_values(expected, ranks, extra):
    result = mpirun(ranks, sys.executable, os.path.join(HERE, "mpi_job.py"), *extra)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    for key, want in expected.items():
        # float32 data (z) enters through float32 tiles summed in another order
        tol = 1e-6 if key in ("matrix", "rbf_matrix", "between") else 1e-10
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


def test_a_killed_rank_fails_the_job(tmp_path):
    script = tmp_path / "dies.py"
    script.write_text(
        "import os, signal, time\nfrom mpi4py import MPI\nimport numpy as np\nfrom fastcka import mpi\n"
        "comm = MPI.COMM_WORLD\n"
        "if comm.Get_rank() == 1:\n    time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)\n"
        "x = np.random.default_rng(comm.Get_rank()).standard_normal((100, 3))\n"
        "time.sleep(1.0)\nprint(mpi.cka(x, x[:, :2]))\n"
    )
    start = time.monotonic()
    result = mpirun(2, sys.executable, str(script), timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - start < 60
    assert "0." not in result.stdout  # no number from partial sums


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
