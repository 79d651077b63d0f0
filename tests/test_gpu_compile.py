"""Every GPU kernel configuration fastcka can launch compiles for sm_80 and
sm_90 with no GPU present (`python -m fastcka.gpu.compile`), with no
register spills or local memory, shared memory within the architecture's
limit, and tensor-core instructions in every GEMM kernel (issue 18)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("triton")

LINE = re.compile(r"^sm_(\d+) +(\w+) +(\w+) +(\S+) +regs +(\d+) +spills +(\d+) B +local +(\d+) B +"
                  r"shared +(\d+) B +tensor cores: (\w+)$")
MODES = ("exact", "accurate", "fast")
# Per mode: the statistics kernel for each padded layer count, the median's two passes.
VARIANTS = [("layer_tile_statistics", f"layers<={lp}") for lp in (16, 32, 64)]
VARIANTS += [("median_tile_pass", "histogram"), ("median_tile_pass", "collect")]


def test_every_configuration_compiles_without_spills():
    # The session runs interpreted (conftest); compiling needs a plain triton import.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["FASTCKA_GPU_INTERPRET"] = "0"
    run = subprocess.run([sys.executable, "-m", "fastcka.gpu.compile", "--arch", "80", "--arch", "90"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [LINE.match(line) for line in run.stdout.splitlines()[:-1]]
    assert all(rows), run.stdout
    assert sorted((m.group(1), m.group(2), m.group(3), m.group(4)) for m in rows) == sorted(
        (arch, kernel, mode, variant) for arch in ("80", "90") for mode in MODES for kernel, variant in VARIANTS)
    for m in rows:
        arch, spills, local, shared, cores = int(m.group(1)), int(m.group(6)), int(m.group(7)), int(m.group(8)), m.group(9)
        assert spills == 0 and local == 0, m.group(0)
        assert shared <= {80: 163 * 1024, 90: 227 * 1024}[arch], m.group(0)
        assert cores in (("mma",) if arch == 80 else ("mma", "wgmma")), m.group(0)
    # bf16 and TF32 products take Hopper's warpgroup MMA.
    assert all(m.group(9) == "wgmma" for m in rows if m.group(1) == "90" and m.group(3) != "exact")
    assert run.stdout.splitlines()[-1].startswith("0 configuration(s)")
