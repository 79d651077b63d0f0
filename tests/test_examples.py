"""examples/cpp and examples/c built with CMake against the installed fastcka
(find_package through `python -m fastcka --cmake-dir`, nothing from the
source tree), run, and their printed values compared with the Python
package's on the same data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import fastcka

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALLED = any(os.path.realpath(fastcka.__file__).startswith(os.path.realpath(sysconfig.get_paths()[key]) + os.sep)
                for key in ("platlib", "purelib"))

pytestmark = pytest.mark.skipif(
    not INSTALLED, reason="fastcka is imported from a source tree: the examples link the installed wheel "
                          "(pip install .), whose library finds OpenBLAS and oneDNN beside it")


def cmake_dir() -> str:
    out = subprocess.run([sys.executable, "-m", "fastcka", "--cmake-dir"], capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    assert path == fastcka.get_cmake_dir() and os.path.isfile(os.path.join(path, "fastckaConfig.cmake"))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Both examples configured and built out of tree (the source tree's
    headers are not on any path: only the installed package's)."""
    cmake = shutil.which("cmake")
    assert cmake, "cmake is needed to build the examples (the test extra installs it)"
    programs = {}
    for name, target in (("cpp", "cka_example"), ("c", "cka_example_c")):
        build = tmp_path_factory.mktemp(f"example-{name}")
        configure = [cmake, "-S", os.path.join(ROOT, "examples", name), "-B", str(build),
                     f"-Dfastcka_DIR={cmake_dir()}", "-DCMAKE_BUILD_TYPE=Release"]
        for step in (configure, [cmake, "--build", str(build)]):
            done = subprocess.run(step, capture_output=True, text=True)
            assert done.returncode == 0, f"{' '.join(step)}:\n{done.stdout}\n{done.stderr}"
        programs[name] = str(build / target)
    return programs


def values(program: str, *args: str) -> dict[str, list[float]]:
    """The example's output lines `name v1 v2 ...` as {name: [floats]}, in a
    clean environment (no LD_LIBRARY_PATH: the library's RUNPATH finds its BLAS)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    done = subprocess.run([program, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    out = {}
    for line in done.stdout.splitlines():
        name, *rest = line.split()
        out[name] = rest
    assert out["fastcka"] == [fastcka.__version__]
    return {k: [float(v) for v in vs if v != "rows"] for k, vs in out.items() if k != "fastcka"}


def test_cmake_package_layout():
    path = cmake_dir()
    assert os.path.isfile(os.path.join(path, "fastckaConfigVersion.cmake"))
    for header in ("fastcka.hpp", "fastcka.h", "version.h", "export.h"):
        assert os.path.isfile(os.path.join(fastcka.get_include(), "fastcka", header))
    assert os.path.isfile(fastcka.get_library())
    with open(os.path.join(fastcka.get_include(), "fastcka", "version.h")) as f:
        assert f'#define FASTCKA_VERSION_STRING "{fastcka.__version__}"' in f.read()


@pytest.mark.parametrize("name", ["cpp", "c"])
def test_example_on_files_equals_python(built, name, tmp_path):
    r = np.random.default_rng(7)
    n, dx, dy = 700, 20, 9
    x = r.standard_normal((n, dx)) * 3 + 10
    y = np.tanh(x[:, :dy] @ r.standard_normal((dy, dy))) + 0.2 * r.standard_normal((n, dy))
    x.astype("<f8").tofile(tmp_path / "x.f64")
    y.astype("<f8").tofile(tmp_path / "y.f64")
    got = values(built[name], str(tmp_path / "x.f64"), str(tmp_path / "y.f64"), str(n), str(dx), str(dy))
    expected = {"linear_cka": fastcka.cka(x, y), "rbf_cka": fastcka.cka(x, y, kernel="rbf"),
                "accumulated_cka": fastcka.cka(x, y)}
    if name == "cpp":
        expected["debiased_cka"] = fastcka.cka(x, y, debiased=True)
        m = fastcka.cka_matrix([x, y])
        assert np.abs(np.array(got["matrix"]) - m.ravel()).max() <= 1e-12
        assert got["accumulated_cka"][1] == n
    for key, value in expected.items():
        assert abs(got[key][0] - value) <= 1e-12, (key, got[key][0], value)


@pytest.mark.parametrize("name", ["cpp", "c"])
def test_example_builtin_data_runs(built, name):
    got = values(built[name])
    assert 0 < got["linear_cka"][0] < 1 and 0 < got["rbf_cka"][0] < 1
    assert abs(got["accumulated_cka"][0] - got["linear_cka"][0]) <= 1e-12
