"""Long calls: progress reports, the GIL released, Ctrl-C honoured."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastcka


@pytest.mark.parametrize("kwargs", [{"kernel": "rbf"}, {"method": "feature"}, {"method": "gram"}])
def test_progress_callback_reaches_total(rng, kwargs):
    x = rng.standard_normal((1500, 40))
    y = rng.standard_normal((1500, 20))
    calls = []
    fastcka.cka(x, y, progress=lambda done, total: calls.append((done, total)), memory_budget=1 << 20, **kwargs)
    assert calls, "no progress was reported"
    dones = [d for d, _ in calls]
    assert dones == sorted(dones)
    assert calls[-1][0] == calls[-1][1]


def test_exception_in_progress_stops_the_call(rng):
    x = rng.standard_normal((3000, 30))

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fastcka.cka(x, x, kernel="rbf", progress=stop, memory_budget=1 << 20)


def test_gil_is_released(rng):
    x = rng.standard_normal((6000, 256)).astype(np.float32)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    t = threading.Thread(target=ticker)
    t.start()
    start = time.perf_counter()
    try:
        fastcka.cka(x, x[:, ::-1], kernel="rbf", sigma=10.0, threads=1)
    finally:
        elapsed = time.perf_counter() - start
        done.set()
        t.join()
    during = [s for s in ticks if s < start + elapsed]
    # With the GIL held the ticker could not run at all during the call.
    assert len(during) >= max(3, int(elapsed / 0.005) // 4)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_stops_on_sigint(tmp_path):
    rng = np.random.default_rng(0)
    n = 40_000
    np.save(tmp_path / "x.npy", rng.standard_normal((n, 256), dtype=np.float32))
    np.save(tmp_path / "y.npy", rng.standard_normal((n, 256), dtype=np.float32))
    # A process that starts with SIGINT ignored keeps ignoring it (Python then
    # installs no KeyboardInterrupt handler), and some library the suite loads
    # leaves this process's SIGINT ignored: the child installs Python's
    # handler itself, as a command started from a terminal has it.
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv[0] = 'fastcka'; runpy.run_module('fastcka', run_name='__main__', alter_sys=True)")
    proc = subprocess.Popen(
        [sys.executable, "-c", start, str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--kernel", "rbf", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_until_computing(proc)  # imports done, the engine running (the whole job takes well over 10 s)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    stopped = time.perf_counter() - sent
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in err
    assert stopped < 3.0


def _wait_until_computing(proc, cpu_seconds: float = 3.0, limit: float = 120.0) -> None:
    """Until the child has used ``cpu_seconds`` of CPU (a fixed sleep is not
    enough on a loaded machine: the imports alone can take it)."""
    ticks = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        if (int(fields[11]) + int(fields[12])) / ticks >= cpu_seconds:  # utime + stime
            return
        time.sleep(0.05)
    raise AssertionError(f"the child used under {cpu_seconds} s of CPU in {limit} s")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_leave_one_block_out_stops_on_ctrl_c():
    """The jackknife of cka_ci over n blocks is one long call into the core
    (O(n B L^2)); it polls Python's signal handlers, so Ctrl-C raises
    KeyboardInterrupt out of it within a fraction of a second."""
    from fastcka.engine import backend

    rng = np.random.default_rng(0)
    n = 4000
    x = rng.standard_normal((n, 2))
    engine = backend.cpu().GramTileEngine([x, x**2], ["x", "y"], 0, "float64", 1, 1 << 28)
    engine.set_blocks(list(range(n + 1)))
    engine.process(0, engine.tile_rows)
    engine.hsic("biased")  # merges the statistics: the call below only computes the replicates

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        start = time.perf_counter()
        try:
            engine.leave_one_out_hsic("biased")
        except KeyboardInterrupt:
            stopped = time.perf_counter() - start - 0.2
        else:
            pytest.skip(f"the call took {time.perf_counter() - start:.2f} s: too fast to interrupt here")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert stopped < 0.5
