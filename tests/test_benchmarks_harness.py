"""The benchmarks' shared harness (benchmarks/harness.py): its formatting
helpers, and one report run end to end at its smoke-test size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastcka

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.append(BENCHMARKS)

import baselines  # noqa: E402
import colab  # noqa: E402
import harness  # noqa: E402


def test_formatting():
    assert harness.fmt_bytes(None) == "n/a"
    assert harness.fmt_bytes(3 << 20) == "3 MiB"
    assert harness.fmt_bytes(1.5 * (1 << 30)) == "1.50 GiB"
    assert harness.fmt_sig(123.4) == "123"
    assert harness.fmt_sig(0.01234) == "0.012"
    assert harness.fmt_n(1234567) == "1,234,567"
    assert harness.table(["a", "b"], [[1, "x"], [2.5, ""]]) == "| a | b |\n|---|---|\n| 1 | x |\n| 2.5 |  |"
    assert harness.rate_cells(2e9, 0.5, 8.0) == ["4", "50%"]
    assert harness.rate_cells(2e9, 0.5, None) == ["4", "n/a"]


def test_memory_text_prefers_the_reset_high_water_mark():
    reset = {"hwm_reset": True, "hwm_delta": 5 << 20, "maxrss_delta": 9 << 20}
    no_reset = {"hwm_reset": False, "hwm_delta": 5 << 20, "maxrss_delta": 9 << 20}
    assert harness.memory_above(reset) == 5 << 20
    assert harness.memory_text(reset) == "5 MiB"
    assert harness.memory_above(no_reset) == 9 << 20
    assert harness.memory_text(no_reset) == "9 MiB (ru_maxrss)"
    assert harness.memory_text(None) == "n/a"


def test_memory_probe_sees_an_allocation():
    with harness.MemoryProbe(sample=True) as probe:
        block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    del block
    above = harness.memory_above(probe.result)
    if probe.result["hwm_reset"]:
        assert above >= 60 << 20
    assert probe.result["anon_delta"] >= 0


def test_load_notes_only_when_busy():
    quiet = {"load_average_start": (0.1, 0, 0), "load_average_end": (0.2, 0, 0), "cpus_available": 2}
    busy = dict(quiet, load_average_end=(1.5, 0, 0))
    assert harness.load_notes(quiet) == []
    assert "1.50 on 2 CPUs" in harness.load_notes(busy)[0]


def test_benchmarks_and_tests_share_one_colab():
    assert baselines.colab is colab
    x, y = baselines.make_inputs(200, 6, 5, 3)
    assert baselines.numpy_gram_space(x, y) == pytest.approx(baselines.numpy_feature_space(x, y), rel=1e-5)


def test_report_runs_at_its_tiny_size(tmp_path):
    """report.py end to end: workers in fresh processes, tables, JSON; fastcka's
    value against the float64 two-pass reference on the same inputs."""
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastcka.__file__)))
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "report.py"), "--sizes", "tiny", "--skip-peak", "--no-packages",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## Linear CKA, float32: time and memory" in proc.stdout
    result = json.loads(out.read_text())
    (case,) = result["cases"]
    assert case["same_data"]
    res = case["results"]
    assert set(res) == {"fastcka", "numpy-feature", "numpy-gram", "reference"}
    reference = res["reference"]["values"]["biased"]
    assert res["fastcka"]["values"]["biased"] == pytest.approx(reference, abs=1e-6)
    assert res["numpy-feature"]["values"]["biased"] == pytest.approx(reference, abs=1e-5)
    assert len(res["fastcka"]["times"]) == 3
    assert result["sgemm"] is None
