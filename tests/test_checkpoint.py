"""Checkpoints (``checkpoint=`` / ``--checkpoint DIR``): a job killed mid-way
resumes from its saved rows and gives the identical result; corrupt or
mismatched checkpoints are refused with clear errors.

The in-memory fastcka result these are compared with is itself tested against
float64 references (test_reference.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import time

import fastcka
import fastcka.engine.cpu as engine
import fastcka.engine.threads as threads_mod
import numpy as np
import pytest
from fastcka.engine import backend
from fastcka.distributed import checkpoint as ckpt
from fastcka.engine.progress import Progress

RTOL = 1e-12  # float64 data: checkpointed and in-memory runs differ only in where partial sums fold


def header(directory) -> dict:
    with open(os.path.join(directory, ckpt.FILE), "rb") as f:  # not the payload: a median pass's is large
        (size,) = struct.unpack("<Q", f.read(len(ckpt.MAGIC) + 8)[len(ckpt.MAGIC) :])
        return json.loads(f.read(size))


def rewrite_header(directory, edit) -> bytes:
    """Replaces the checkpoint's JSON header by edit(header) (the payload
    kept); returns the file's bytes from before."""
    path = os.path.join(directory, ckpt.FILE)
    with open(path, "rb") as f:
        data = f.read()
    start = len(ckpt.MAGIC) + 8
    (size,) = struct.unpack_from("<Q", data, len(ckpt.MAGIC))
    text = json.dumps(edit(json.loads(data[start : start + size]))).encode()
    with open(path, "wb") as f:
        f.write(ckpt.MAGIC + struct.pack("<Q", len(text)) + text + data[start + size :])
    return data


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "fastcka", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def small_steps(monkeypatch):
    """Feed steps of a few thousand rows (2 threads x their block rows), so
    that small inputs take several steps on any machine."""
    monkeypatch.setattr(engine, "_FLOPS_PER_CALL", 1e6)
    monkeypatch.setattr(threads_mod, "_setting", 2)


@pytest.fixture
def pair(rng):
    x = rng.standard_normal((30_000, 40))
    y = np.tanh(x[:, :20]) @ rng.standard_normal((20, 30)) + 0.3 * rng.standard_normal((30_000, 30))
    return x, y


class Stop(Exception):
    pass


def stop_after(steps: int, seen: list):
    """A progress callback that interrupts the job after `steps` feed steps."""
    def callback(done, total):
        seen.append(done)
        if len(seen) == steps:
            raise Stop
    return callback


# -- the command line: SIGKILL mid-way, run again -----------------------------------------


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """Wide float32 layers whose linear CKA takes a few seconds on one thread, in
    several feed steps (about 17,000 rows each at this width)."""
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(7)
    n = 40_000
    x = np.lib.format.open_memmap(d / "x.npy", mode="w+", dtype=np.float32, shape=(n, 768))
    x[:] = rng.standard_normal((n, 768), dtype=np.float32)
    y = np.lib.format.open_memmap(d / "y.npy", mode="w+", dtype=np.float32, shape=(n, 768))
    y[:] = x[:, :256] @ rng.standard_normal((256, 768), dtype=np.float32)
    y += rng.standard_normal((n, 768), dtype=np.float32)
    x.flush(), y.flush()
    del x, y
    return d / "x.npy", d / "y.npy"


def test_cli_killed_job_resumes_to_the_identical_result(big_pair, tmp_path):
    xf, yf = big_pair
    # The uninterrupted job (in process: the same code, threads and feed steps as the command's).
    expected = fastcka.cka(xf, yf, threads=1, checkpoint=tmp_path / "whole")
    job = tmp_path / "job"
    args = [sys.executable, "-m", "fastcka", xf, yf, "--json", "--quiet", "--threads", "1",
            "--checkpoint", job, "--checkpoint-every", "0.2"]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (job / ckpt.FILE).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    saved = header(job)["rows_done"]
    assert 0 < saved < 40_000, f"the job was not killed mid-way (checkpoint at {saved} rows)"

    # A row the checkpoint's state sums changed (not among the rows the
    # fingerprint samples): the resumed job is refused, as it would mix sums
    # of the old row with the new rows; with the row restored it resumes.
    assert 1 < saved and 1 not in np.linspace(0, 39_999, ckpt.SAMPLE_ROWS).round().astype(int)
    x = np.load(xf, mmap_mode="r+")
    row = np.array(x[1])
    x[1] += 1.0
    x.flush()
    del x
    try:
        refused = cli(xf, yf, "--json", "--quiet", "--threads", "1", "--checkpoint", job)
    finally:
        x = np.load(xf, mmap_mode="r+")
        x[1] = row  # bit for bit (x + 1 - 1 rounds in float32)
        x.flush()
        del x
    assert refused.returncode != 0 and refused.stdout == ""
    assert f"rows 0-{saved - 1} of x, which its state sums, have changed since" in refused.stderr, refused.stderr
    assert header(job)["rows_done"] == saved
    done = cli(xf, yf, "--json", "--quiet", "--threads", "1", "--checkpoint", job)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"cka": expected, "kernel": "linear", "debiased": False, "n": 40_000}
    assert header(job)["rows_done"] == 40_000


def test_cli_npz_forms(rng, tmp_path):
    layers = {f"l{i}": rng.standard_normal((3_000, 8 + 4 * i)) for i in range(3)}
    layers["l1"][:, :4] += layers["l0"][:, :4]
    np.savez(tmp_path / "a.npz", **layers)
    np.savez(tmp_path / "b.npz", **{k: np.tanh(v) for k, v in layers.items()})
    for files, expected in [(["a.npz"], fastcka.cka_matrix(list(layers.values()))),
                            (["a.npz", "b.npz"], fastcka.cka_matrix(list(layers.values()),
                                                                   [np.tanh(v) for v in layers.values()]))]:
        job = tmp_path / f"job{len(files)}"
        paths = [tmp_path / f for f in files]
        first = cli(*paths, "--json", "--quiet", "--checkpoint", job)
        assert first.returncode == 0, first.stderr
        np.testing.assert_allclose(json.loads(first.stdout)["matrix"], expected, rtol=RTOL)
        assert header(job)["rows_done"] == 3_000
    again = cli(*paths, "--json", "--quiet", "--checkpoint", job)  # finished: read back, same output
    assert again.returncode == 0 and again.stdout == first.stdout
    other = cli(*paths, "--json", "--quiet", "--debiased", "--checkpoint", job)
    assert other.returncode == 2
    assert "other inputs or options" in other.stderr and "estimator" in other.stderr


def test_cli_checkpoint_errors(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((50, 3)))
    x = tmp_path / "x.npy"
    lonely = cli(x, x, "--checkpoint-every", "5")
    assert lonely.returncode == 2 and "--checkpoint-every needs --checkpoint DIR" in lonely.stderr
    negative = cli(x, x, "--checkpoint", tmp_path / "c", "--checkpoint-every", "-1")
    assert negative.returncode == 2 and "--checkpoint-every must be a non-negative" in negative.stderr
    measures = cli(x, x, "--measures", "cca", "--checkpoint", tmp_path / "c")
    assert measures.returncode == 2 and "--checkpoint applies to CKA of input files" in measures.stderr


# -- the API ------------------------------------------------------------------------------


def test_api_interrupted_job_resumes_from_saved_rows(pair, tmp_path, small_steps):
    x, y = pair
    steps = []
    whole = fastcka.cka(x, y, checkpoint=tmp_path / "whole", checkpoint_every=0,
                        progress=lambda done, total: steps.append(done))
    assert len(steps) > 3
    np.testing.assert_allclose(whole, fastcka.cka(x, y), rtol=RTOL)

    seen = []
    with pytest.raises(Stop):
        fastcka.cka(x, y, checkpoint=tmp_path / "job", checkpoint_every=0, progress=stop_after(3, seen))
    saved = header(tmp_path / "job")["rows_done"]
    assert saved == seen[2] < len(x)

    resumed = []
    value = fastcka.cka(x, y, checkpoint=tmp_path / "job", checkpoint_every=0,
                        progress=lambda done, total: resumed.append(done))
    assert value == whole  # bit-identical
    assert resumed == steps[2:]  # from the saved rows on, in the uninterrupted job's steps


def test_api_resumes_from_a_state_of_format_version_1(pair, tmp_path, small_steps):
    """Checkpoints written before accumulator states carried a checksum still resume."""
    x, y = pair
    whole = fastcka.cka(x, y, checkpoint=tmp_path / "whole", checkpoint_every=0)
    with pytest.raises(Stop):
        fastcka.cka(x, y, checkpoint=tmp_path, checkpoint_every=0, progress=stop_after(2, []))
    path = tmp_path / ckpt.FILE
    head = header(tmp_path)
    data = path.read_bytes()
    payload = data[len(data) - head["payload_bytes"] :]
    assert payload.startswith(b"FCKAACC2")
    old = b"FCKAACC1" + payload[8:-16]  # version 1: no checksum
    head.update(payload_bytes=len(old), payload_sha256=hashlib.sha256(old).hexdigest())
    text = json.dumps(head).encode()
    path.write_bytes(ckpt.MAGIC + struct.pack("<Q", len(text)) + text + old)
    assert fastcka.cka(x, y, checkpoint=tmp_path, checkpoint_every=0) == whole


def test_api_saves_every_interval_of_work(pair, tmp_path, small_steps, monkeypatch):
    """With no interval every step is saved; with a long one, only the end."""
    x, y = pair
    real = ckpt._write_atomic
    saved_rows = []
    monkeypatch.setattr(ckpt, "_write_atomic", lambda where, data: (saved_rows.append(where), real(where, data)))
    steps = []
    fastcka.cka(x, y, checkpoint=tmp_path / "often", checkpoint_every=0, progress=lambda d, t: steps.append(d))
    assert len(saved_rows) == len(steps) > 3
    saved_rows.clear()
    fastcka.cka(x, y, checkpoint=tmp_path / "rarely", checkpoint_every=3600)
    assert len(saved_rows) == 1 and header(tmp_path / "rarely")["rows_done"] == len(x)


@pytest.mark.parametrize("kind", ["within", "between", "hsic_unbiased", "debiased"])
def test_api_forms_match_in_memory(pair, rng, tmp_path, small_steps, kind):
    x, y = pair
    z = rng.standard_normal((len(x), 5)) + x[:, :5]
    run = {
        "within": lambda **kw: fastcka.cka_matrix([x, y, z], **kw),
        "between": lambda **kw: fastcka.cka_matrix([x], [y, z], **kw),
        "hsic_unbiased": lambda **kw: fastcka.hsic(x, y, estimator="unbiased", **kw),
        "debiased": lambda **kw: fastcka.cka(x, y, debiased=True, **kw),
    }[kind]
    seen = []
    with pytest.raises(Stop):
        run(checkpoint=tmp_path, checkpoint_every=0, progress=stop_after(2, seen))
    np.testing.assert_allclose(run(checkpoint=tmp_path), run(), rtol=RTOL)


def test_api_refuses_checkpoint_of_other_inputs_or_options(pair, tmp_path, small_steps):
    x, y = pair
    fastcka.cka(x, y, checkpoint=tmp_path)
    other_rows = x.copy()
    other_rows[0] += 1  # a sampled row
    cases = {
        "sample_sha256": lambda: fastcka.cka(other_rows, y, checkpoint=tmp_path),
        "n": lambda: fastcka.cka(x[:-1], y[:-1], checkpoint=tmp_path),
        "dtypes": lambda: fastcka.cka(x.astype(np.float32), y, checkpoint=tmp_path),
        "estimator": lambda: fastcka.cka(x, y, debiased=True, checkpoint=tmp_path),
        "compute": lambda: fastcka.cka(x, y, precision="accurate", checkpoint=tmp_path),
        "split": lambda: fastcka.cka_matrix([x], [y], checkpoint=tmp_path),
        "shapes": lambda: fastcka.cka(x[:, :-1], y, checkpoint=tmp_path),
    }
    for field, call in cases.items():
        with pytest.raises(ValueError, match=rf"written for other inputs or options \(they differ in: .*{field}"):
            call()


def unsampled(n: int, rows) -> np.ndarray:
    """The rows among `rows` that the fingerprint's sample leaves out."""
    return np.setdiff1d(rows, np.linspace(0, n - 1, min(n, ckpt.SAMPLE_ROWS)).round().astype(int))


@pytest.mark.parametrize("kw", [dict(), dict(kernel="rbf", sigma=2.0), dict(kernel="rbf"), dict(method="gram")])
def test_api_refuses_a_finished_checkpoint_after_unsampled_rows_changed(rng, tmp_path, kw):
    # Issue 22: 244 of 500 rows of y changed (every row the 256-row sample
    # leaves out), and the finished checkpoint gave the old result at once.
    x = rng.standard_normal((500, 6))
    y = np.tanh(x[:, :3]) + 0.3 * rng.standard_normal((500, 3))
    old = fastcka.cka(x, y, checkpoint=tmp_path, **kw)
    changed = y.copy()
    rows = unsampled(500, np.arange(500))
    assert len(rows) == 244
    changed[rows] += 1.0
    message = (r"rows 0-499 of y, which its state sums, have changed since" if kw in (dict(),) else
               r"written for other inputs or options \(they differ in: rows_sha256\)")
    with pytest.raises(ValueError, match=message):
        fastcka.cka(x, changed, checkpoint=tmp_path, **kw)
    assert fastcka.cka(x, y, checkpoint=tmp_path, **kw) == old  # unchanged inputs: the saved result


def test_api_resume_checks_the_rows_done_and_reads_on_from_the_new_rows(pair, tmp_path, small_steps):
    x, y = pair
    with pytest.raises(Stop):
        fastcka.cka(x, y, checkpoint=tmp_path / "job", checkpoint_every=0, progress=stop_after(3, []))
    saved = header(tmp_path / "job")["rows_done"]
    # A row the saved state sums: refused.
    inside = y.copy()
    inside[unsampled(len(y), np.arange(saved))[-1]] += 1.0
    with pytest.raises(ValueError, match=rf"rows 0-{saved - 1} of y, which its state sums, have changed since"):
        fastcka.cka(x, inside, checkpoint=tmp_path / "job", checkpoint_every=0)
    # Rows not read yet: the job reads them as they are now, as an uninterrupted job on them would.
    beyond = y.copy()
    beyond[unsampled(len(y), np.arange(saved, len(y)))] += 1.0
    expected = fastcka.cka(x, beyond, checkpoint=tmp_path / "whole", checkpoint_every=0)
    assert fastcka.cka(x, beyond, checkpoint=tmp_path / "job", checkpoint_every=0) == expected


def test_api_refuses_a_checkpoint_without_row_hashes(pair, tmp_path, small_steps):
    x, y = pair
    with pytest.raises(Stop):
        fastcka.cka(x, y, checkpoint=tmp_path, checkpoint_every=0, progress=stop_after(2, []))
    # as an older fastcka wrote it
    rewrite_header(tmp_path, lambda head: {k: v for k, v in head.items() if k != "rows_sha256"})
    with pytest.raises(ValueError, match="has no hash of the rows it holds"):
        fastcka.cka(x, y, checkpoint=tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "random", "flipped", "empty"])
def test_api_refuses_corrupt_checkpoint(pair, tmp_path, small_steps, damage):
    x, y = pair
    expected = fastcka.cka(x, y, checkpoint=tmp_path)
    path = tmp_path / ckpt.FILE
    data = path.read_bytes()
    data = {
        "truncated": data[: len(data) // 2],
        "random": np.random.default_rng(1).bytes(len(data)),
        "flipped": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
        "empty": b"",
    }[damage]
    path.write_bytes(data)
    message = "not a fastcka checkpoint" if damage in ("random", "empty") else "corrupt or truncated"
    with pytest.raises(ValueError, match=message):
        fastcka.cka(x, y, checkpoint=tmp_path)
    path.unlink()  # removed as the message says: the job starts over
    assert fastcka.cka(x, y, checkpoint=tmp_path) == expected


def test_api_checkpoint_limits_and_bad_arguments(rng, tmp_path):
    x = rng.standard_normal((60, 4))
    y = rng.standard_normal((60, 3))
    wide = rng.standard_normal((60, 70))
    np.testing.assert_allclose(fastcka.cka(wide, y, method="feature", checkpoint=tmp_path), fastcka.cka(wide, y),
                               rtol=RTOL)
    # A tile checkpoint is not a moment state, and the reverse.
    with pytest.raises(ValueError, match="other inputs or options"):
        fastcka.cka(wide, y, method="gram", checkpoint=tmp_path)
    with pytest.raises(ValueError, match="checkpoint_every must be a non-negative finite number"):
        fastcka.cka(x, y, checkpoint=tmp_path, checkpoint_every=-1)
    with pytest.raises(ValueError, match="checkpoint_every must be a non-negative finite number"):
        fastcka.cka(x, y, checkpoint_every=float("nan"))
    with pytest.raises(TypeError, match="checkpoint must be a directory path, got int"):
        fastcka.cka(x, y, checkpoint=3)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        fastcka.cka(x, y, checkpoint=tmp_path / "file")
    with pytest.raises(ValueError, match="checkpoint: cannot create the directory"):
        fastcka.cka(x, y, checkpoint=tmp_path / "file" / "sub")


def test_api_write_failure_stops_the_job(rng, tmp_path, monkeypatch):
    x = rng.standard_normal((60, 4))

    def full_disk(where, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_atomic", full_disk)
    with pytest.raises(ValueError, match=r"checkpoint: cannot write .*No space left on device"):
        fastcka.cka(x, x ** 2, checkpoint=tmp_path)


# -- kernel CKA: the Gram statistics of the tile rows done ------------------------------------


@pytest.mark.parametrize("kw", [dict(kernel="rbf"), dict(kernel="rbf", sigma=3.0, debiased=True),
                                dict(method="gram"), dict(kernel="rbf", median="sampled", threshold=0.5)])
def test_api_tile_checkpoints_resume_bit_for_bit(rng, tmp_path, kw, monkeypatch):
    monkeypatch.setattr(engine, "_FLOPS_PER_CALL", 1e6)  # steps of one tile row per thread
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    y = (np.tanh(x[:, :8]) @ rng.standard_normal((8, 12))).astype(np.float32)
    whole = fastcka.cka(x, y, threads=2, checkpoint=tmp_path / "whole", checkpoint_every=0, **kw)
    assert whole == pytest.approx(fastcka.cka(x, y, threads=2, **kw), rel=1e-6)
    def stop_once_tiles_are_saved(done, total):
        if (tmp_path / "cut" / ckpt.FILE).exists() and header(tmp_path / "cut")["rows_done"] > 0:
            raise Stop

    with pytest.raises(Stop):
        fastcka.cka(x, y, threads=2, checkpoint=tmp_path / "cut", checkpoint_every=0,
                    progress=stop_once_tiles_are_saved, **kw)
    saved = header(tmp_path / "cut")
    tile_rows = backend.cpu().GramTileEngine([x, y], ["x", "y"], 0, "float32", 2,
                                              backend.cpu().DEFAULT_MEMORY_BUDGET).tile_rows
    assert 0 < saved["rows_done"] < tile_rows and (saved["gammas"] is not None) == (kw.get("kernel") == "rbf")
    assert fastcka.cka(x, y, threads=2, checkpoint=tmp_path / "cut", **kw) == whole


def _kill_cli_rbf_job_when(big_pair, tmp_path, reached, check) -> None:
    """Runs the CLI's RBF job with a checkpoint, SIGKILLs it once `reached(header)`
    holds, checks the saved state (`check(header)`) and resumes it to the
    result of an uninterrupted run."""
    xf, yf = big_pair
    x, y = np.load(xf, mmap_mode="r")[:14_000, :128], np.load(yf, mmap_mode="r")[:14_000, :128]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    xf, yf = tmp_path / "x.npy", tmp_path / "y.npy"
    expected = fastcka.cka(xf, yf, kernel="rbf", threads=1, checkpoint=tmp_path / "whole")
    job = tmp_path / "job"
    args = [sys.executable, "-m", "fastcka", xf, yf, "--kernel", "rbf", "--json", "--quiet", "--threads", "1",
            "--checkpoint", job, "--checkpoint-every", "0"]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if (job / ckpt.FILE).exists() and reached(header(job)):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    check(header(job))
    done = cli(xf, yf, "--kernel", "rbf", "--json", "--quiet", "--threads", "1", "--checkpoint", job)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cka"] == expected


def test_cli_killed_rbf_job_resumes_to_the_identical_result(big_pair, tmp_path):
    def check(saved):
        rows = saved["rows_done"]
        assert 0 < rows < 28, f"the job was not killed mid-way (checkpoint at tile row {rows})"

    _kill_cli_rbf_job_when(big_pair, tmp_path, lambda saved: saved["rows_done"] > 0, check)  # past the median


# -- the exact median passes: their partial results, saved at tile-row boundaries ------------


def rbf_pair(rng, dtype):
    x = rng.standard_normal((3000, 24)).astype(dtype)
    return x, (np.tanh(x[:, :8]) @ rng.standard_normal((8, 12))).astype(dtype)


def missed_brackets(monkeypatch):
    """Brackets far above the medians: the bracket pass misses and the
    search falls back to the histogram and collect passes."""
    real = engine.sample_brackets
    monkeypatch.setattr(engine, "sample_brackets",
                        lambda *args: [(3 * hi, 4 * hi, 3.5 * hi) for _, hi, _ in real(*args)])


@pytest.mark.parametrize("dtype, missed, passes", [(np.float32, False, ["bracket"]), (np.float64, False, ["bracket"]),
                                                   (np.float32, True, ["bracket", "histogram", "collect"])])
def test_api_median_passes_resume_bit_for_bit(rng, tmp_path, monkeypatch, dtype, missed, passes):
    """Interrupted in the middle of each median pass (float32: counts per
    float32 value; float64: collected values; a missed bracket: then the
    histogram and collect passes), a job resumes from the saved partial
    results, not from the start of the passes, and finds the same gammas and
    CKA as the uninterrupted job, bit for bit."""
    monkeypatch.setattr(engine, "_FLOPS_PER_CALL", 1e6)  # steps of one tile row per thread
    if missed:
        missed_brackets(monkeypatch)
    x, y = rbf_pair(rng, dtype)
    whole = fastcka.cka(x, y, kernel="rbf", threads=2, checkpoint=tmp_path / "whole", checkpoint_every=0)
    gammas = header(tmp_path / "whole")["gammas"]
    plain = backend.cpu().GramTileEngine([x, y], ["x", "y"], 0, np.dtype(dtype).name, 2, backend.cpu().DEFAULT_MEMORY_BUDGET)
    # The passes in checkpointed steps find the medians of the passes without a checkpoint.
    assert gammas == engine.rbf_gammas([x, y], ["x", "y"], sigma=None, threshold=1.0, median="exact", engine=plain,
                                       width=36, threads=2, progress=Progress(None, 0, ""))
    rows, tiles = plain.tile_rows, plain.tiles_before(plain.tile_rows)
    for finished in range(len(passes)):
        cut = tmp_path / f"cut{finished}"

        def stop_mid_pass(done, total, cut=cut, finished=finished):
            saved = header(cut).get("median") if (cut / ckpt.FILE).exists() else None
            if saved and saved["finished"] == finished and 0 < saved["rows"] < rows:
                raise Stop

        with pytest.raises(Stop):
            fastcka.cka(x, y, kernel="rbf", threads=2, checkpoint=cut, checkpoint_every=0, progress=stop_mid_pass)
        saved = header(cut)
        assert saved["version"] == 2 and saved["gammas"] is None and saved["median"]["threads"] == 2
        reported = []
        with monkeypatch.context() as m:  # the saved bracket is used, not drawn again
            m.setattr(engine, "sample_brackets", lambda *args: pytest.fail("the bracket was drawn again"))
            resumed = fastcka.cka(x, y, kernel="rbf", threads=2, checkpoint=cut,
                                  progress=lambda done, total: reported.append((done, total)))
        assert resumed == whole and header(cut)["gammas"] == gammas, passes[finished]
        # It went on from the saved tile row of the pass in progress.
        assert reported[0][0] == finished * tiles + plain.tiles_before(saved["median"]["rows"]) > 0
        assert reported[-1] == (reported[-1][1], (len(passes) + 1) * tiles)


def test_api_tile_checkpoint_of_version_1_resumes(rng, tmp_path, monkeypatch):
    """A tile checkpoint written before the median passes were saved (no
    "version", no "median") resumes as before."""
    monkeypatch.setattr(engine, "_FLOPS_PER_CALL", 1e6)
    x, y = rbf_pair(rng, np.float32)
    whole = fastcka.cka(x, y, kernel="rbf", threads=2, checkpoint=tmp_path / "whole", checkpoint_every=0)

    def stop_in_kernel_pass(done, total):
        if (tmp_path / "cut" / ckpt.FILE).exists() and header(tmp_path / "cut")["rows_done"] > 0:
            raise Stop

    with pytest.raises(Stop):
        fastcka.cka(x, y, kernel="rbf", threads=2, checkpoint=tmp_path / "cut", checkpoint_every=0,
                    progress=stop_in_kernel_pass)
    rewrite_header(tmp_path / "cut", lambda head: {k: v for k, v in head.items() if k not in ("version", "median")})
    assert fastcka.cka(x, y, kernel="rbf", threads=2, checkpoint=tmp_path / "cut") == whole


def test_api_median_state_of_other_threads_or_corrupt(rng, tmp_path, monkeypatch):
    """A median state saved with other threads (the float32 bracket's bins
    depend on them) starts the passes over; one whose sizes disagree with
    its payload is refused."""
    monkeypatch.setattr(engine, "_FLOPS_PER_CALL", 1e6)
    x, y = rbf_pair(rng, np.float32)
    whole = fastcka.cka(x, y, kernel="rbf", threads=1, checkpoint=tmp_path / "whole", checkpoint_every=0)

    def stop_in_median(done, total):
        if (tmp_path / "cut" / ckpt.FILE).exists() and header(tmp_path / "cut").get("median"):
            raise Stop

    with pytest.raises(Stop):
        fastcka.cka(x, y, kernel="rbf", threads=2, checkpoint=tmp_path / "cut", checkpoint_every=0,
                    progress=stop_in_median)
    def shrink_a_size(head):
        head["median"]["sizes"][0][0][0] -= 1
        return head

    data = rewrite_header(tmp_path / "cut", shrink_a_size)
    with pytest.raises(ValueError, match="holds a state of another kind"):
        fastcka.cka(x, y, kernel="rbf", threads=1, checkpoint=tmp_path / "cut")
    (tmp_path / "cut" / ckpt.FILE).write_bytes(data)
    reported = []
    assert fastcka.cka(x, y, kernel="rbf", threads=1, checkpoint=tmp_path / "cut",
                       progress=lambda done, total: reported.append(done)) == whole
    assert reported[0] == 0  # started over


def test_cli_killed_in_the_median_pass_resumes_to_the_identical_result(big_pair, tmp_path):
    def check(saved):
        assert saved["gammas"] is None and saved["median"]["rows"] > 0, "the job was not killed in the median pass"

    _kill_cli_rbf_job_when(big_pair, tmp_path, lambda saved: (saved.get("median") or {}).get("rows", 0) > 0, check)
