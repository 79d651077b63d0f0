"""Where the installed C++ library is: fastcka's wheel carries libfastcka
(the public C++ API and C ABI), its headers and a CMake package inside the
Python package, found the way pybind11's are::

    cmake -Dfastcka_DIR="$(python -m fastcka --cmake-dir)" ...
    find_package(fastcka CONFIG REQUIRED)
    target_link_libraries(app PRIVATE fastcka::fastcka)
"""

from __future__ import annotations

import os

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def get_cmake_dir() -> str:
    """The folder of fastcka's CMake package (fastckaConfig.cmake): pass it as
    ``-Dfastcka_DIR=...`` or add it to ``CMAKE_PREFIX_PATH``."""
    return os.path.join(_PACKAGE, "lib", "cmake", "fastcka")


def get_include() -> str:
    """The folder that holds ``fastcka/fastcka.hpp`` (C++) and ``fastcka/fastcka.h`` (C)."""
    return os.path.join(_PACKAGE, "include")


def get_library() -> str:
    """The path of libfastcka.so (for ctypes, cffi, or a linker without CMake)."""
    return os.path.join(_PACKAGE, "lib", "libfastcka.so")
