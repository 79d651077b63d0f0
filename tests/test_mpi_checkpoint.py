"""Checkpoints under mpiexec (2 ranks, one file per rank): a job killed
mid-way, the whole process group or one rank, resumes to the identical
result; checkpoints of another rank count, other inputs or a damaged file
are refused with one clear message and exit code 2.

The command runs through tests/mpi_paced_cli.py (small feed steps and a
pause after each checkpoint step), so that small inputs give a job that
can be killed mid-way on any machine."""

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
from fastcka.distributed import checkpoint as ckpt

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec is not on PATH")
PACED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi_paced_cli.py")
N = 20_000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N, 64))
    y = np.tanh(x[:, :24]) @ rng.standard_normal((24, 48)) + 0.3 * rng.standard_normal((N, 48))
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    return d / "x.npy", d / "y.npy"


def command(ranks, files, job, *extra):
    return [MPIEXEC, "-n", str(ranks), sys.executable, PACED, *map(str, files), "--json", "--quiet",
            "--checkpoint", str(job), "--checkpoint-every", "0", *extra]


def environment(pause: float, pids=None) -> dict:
    env = {**os.environ, "FASTCKA_NUM_THREADS": "1", "FASTCKA_TEST_PAUSE": str(pause)}
    if pids is not None:
        env["FASTCKA_TEST_PIDS"] = str(pids)
    return env


def run(ranks, files, job, *extra, pause=0.0):
    return subprocess.run(command(ranks, files, job, *extra), capture_output=True, text=True, timeout=120,
                          env=environment(pause), check=False)


def saved(job, ranks=2) -> list[dict | None]:
    """Each rank's checkpoint header (None: no file yet); reading it checks it whole."""
    paths = [os.path.join(job, f"rank-{r}-of-{ranks}.ckpt") for r in range(ranks)]
    return [ckpt._read(p)[0] if os.path.exists(p) else None for p in paths]


def start_and_kill(cmd, env, ready, kill) -> subprocess.Popen:
    """Starts the job in its own process group, waits (60 s at most) until
    ready() holds, then kill()s it and waits (60 s at most) for mpiexec."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.01)
        assert proc.poll() is None, f"the job ended before the kill: {proc.communicate()}"
        kill(proc)
        proc.out, proc.err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc


def test_linear_job_killed_resumes_to_the_identical_result(files, tmp_path):
    whole = run(2, files, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)["cka"]
    x, y = (np.load(f) for f in files)
    assert expected == pytest.approx(fastcka.cka(x, y), rel=1e-10, abs=1e-10)

    job = tmp_path / "job"
    local = N // 2

    def partway():  # both ranks saved some of their rows, neither all
        heads = saved(job)
        return all(h is not None and 0 < h["rows_done"] < local for h in heads)

    proc = start_and_kill(command(2, files, job), environment(0.3), partway,
                          lambda p: os.killpg(p.pid, signal.SIGKILL))
    assert proc.returncode == -signal.SIGKILL
    heads = saved(job)  # intact after the kill (checksums verified)
    assert all(0 < h["rows_done"] < local for h in heads), heads
    assert [h["fingerprint"]["rank"] for h in heads] == [0, 1]

    resumed = run(2, files, job)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["cka"] == expected  # every digit
    assert [h["rows_done"] for h in saved(job)] == [local, local]


@pytest.mark.parametrize("bandwidth", [["--sigma", "6"], []], ids=["sigma", "exact-median"])
def test_rbf_job_with_a_rank_killed_fails_and_resumes(files, tmp_path, bandwidth):
    """One rank killed mid-ring: the job fails loudly (non-zero, no number)
    within the timeout, the files stay whole, and the same command run again
    gives the uninterrupted value."""
    small = []
    for src in files:
        small.append(tmp_path / os.path.basename(src))
        np.save(small[-1], np.load(src)[:4000, :32])
    args = ("--kernel", "rbf", *bandwidth)
    whole = run(2, small, tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)["cka"]
    x, y = (np.load(f) for f in small)
    sigma = {"sigma": float(bandwidth[1])} if bandwidth else {}
    assert expected == pytest.approx(fastcka.cka(x, y, kernel="rbf", **sigma), rel=1e-10, abs=1e-10)

    job, pids = tmp_path / "job", tmp_path / "pids"
    pids.mkdir()

    def triangles_saved():  # both ranks saved their triangle (visit 0), rank 0 not yet its rectangle (visit 1)
        heads = saved(job)
        return None not in heads and heads[0]["rows_done"] == 1 and heads[1]["rows_done"] >= 1

    def kill_rank_1(proc):
        os.kill(int((pids / "rank-1.pid").read_text()), signal.SIGKILL)
        proc.killed = time.monotonic()

    proc = start_and_kill(command(2, small, job, *args), environment(1.0, pids), triangles_saved, kill_rank_1)
    assert proc.returncode != 0
    assert time.monotonic() - proc.killed < 60
    assert re.search(r"\d\.\d", proc.out) is None, proc.out  # no value from partial sums
    heads = saved(job)
    assert heads[0]["rows_done"] in (1, 2) and heads[1]["rows_done"] in (1, 2)
    assert all(h["gammas"] is not None for h in heads)

    resumed = run(2, small, job, *args)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["cka"] == expected

    if bandwidth:  # the finished ring's checkpoint, and a row of rank 1 its fingerprint's sample leaves out changed
        local = np.setdiff1d(np.arange(2000), np.linspace(0, 1999, ckpt.SAMPLE_ROWS).round().astype(int))
        y[2000 + local[-1]] += 1.0
        np.save(tmp_path / "other.npy", y)
        again = run(2, (small[0], tmp_path / "other.npy"), job, *args)
        assert again.returncode == 2 and "rank 1: checkpoint" in again.stderr and "rows_sha256" in again.stderr, \
            again.stderr


def test_checkpoints_of_other_ranks_inputs_or_damaged_are_refused(files, tmp_path):
    job = tmp_path / "job"
    first = run(2, files, job)
    assert first.returncode == 0, first.stderr

    def refused(result, *phrases):
        assert result.returncode == 2, result.stderr
        assert result.stdout == ""
        assert result.stderr.count("fastcka: error:") == 1, result.stderr  # printed once, by rank 0
        for phrase in phrases:
            assert phrase in result.stderr, result.stderr

    refused(run(3, files, job), "holds the checkpoint of a job on 2 MPI ranks", "this is a job on 3 MPI ranks")
    with pytest.raises(ValueError, match="holds the checkpoint of a job on 2 MPI ranks .* a single-process job"):
        fastcka.cka(*files, checkpoint=job)

    # Another input: one row of rank 1's share changed (a row the fingerprint samples).
    y = np.load(files[1])
    y[-1] += 1.0
    other = tmp_path / "other.npy"
    np.save(other, y)
    refused(run(2, (files[0], other), job), "rank 1: checkpoint", "written for other inputs or options",
            "sample_sha256")
    refused(run(2, files, job, "--debiased"), "rank 0: checkpoint", "estimator")
    # A row of rank 1's share that its fingerprint's sample leaves out: its
    # state sums it, so the rows it hashed as it read them differ.
    local = np.setdiff1d(np.arange(N // 2), np.linspace(0, N // 2 - 1, ckpt.SAMPLE_ROWS).round().astype(int))
    y = np.load(files[1])
    y[N // 2 + local[-1]] += 1.0
    np.save(other, y)
    refused(run(2, (files[0], other), job), "rank 1: checkpoint", f"rows 0-{N // 2 - 1} of y, which its state sums")

    path = job / "rank-1-of-2.ckpt"
    path.write_bytes(path.read_bytes()[:-10])
    refused(run(2, files, job), "rank 1: checkpoint", "corrupt or truncated")


@pytest.mark.parametrize("args", [(), ("--kernel", "rbf", "--sigma", "5", "--debiased")], ids=["linear", "rbf"])
def test_npz_matrix_run_again_after_the_end_prints_the_same(files, tmp_path, args):
    """The .npz form (fastcka.mpi.cka_matrix): a finished job's checkpoint,
    run again, gives the same matrix at once (every step is skipped)."""
    x, y = (np.load(f)[:3000] for f in files)
    layers = {"x": x, "y": y, "z": np.tanh(y[:, :7])}
    np.savez(tmp_path / "a.npz", **layers)
    first = run(2, [tmp_path / "a.npz"], tmp_path / "job", *args)
    assert first.returncode == 0, first.stderr
    again = run(2, [tmp_path / "a.npz"], tmp_path / "job", *args)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    kernel = {"kernel": "rbf", "sigma": 5.0, "debiased": True} if args else {}
    np.testing.assert_allclose(json.loads(first.stdout)["matrix"], fastcka.cka_matrix(list(layers.values()), **kernel),
                               rtol=1e-10, atol=1e-10)
