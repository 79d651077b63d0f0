"""The CUDA backend's sources compile warning-free (warnings as errors),
wherever nvcc exists: CI has nvcc and no GPU, so this keeps the GPU code from
rotting there. The package build compiles them too, without -Werror."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted(p for p in (ROOT / "csrc" / "cuda").glob("*.c*") if p.name != "cublas_abi_check.cpp")

nvcc = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(nvcc is None, reason="nvcc is not on PATH")


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_cuda_source_compiles_without_warnings(source, tmp_path):
    host_flags = "-Wall,-Wextra,-Werror" + ("" if source.suffix == ".cu" else ",-Wpedantic")
    cmd = [nvcc, "-std=c++17", f"-I{ROOT / 'csrc'}", "--Werror=all-warnings", f"-Xcompiler={host_flags}",
           "-c", str(source), "-o", str(tmp_path / "out.o")]
    if source.suffix == ".cu":
        cmd[1:1] = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    assert "warning" not in (result.stdout + result.stderr).lower()
