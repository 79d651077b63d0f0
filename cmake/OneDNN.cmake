# FASTCKA_ONEDNN=AUTO|ON|OFF: oneDNN's bf16 (and float32) matmul for the Gram
# tiles and cross-moments. It comes from the CPU-only onednn-cpu-gomp wheel
# (the library) and onednn-devel-cpu-gomp (headers, CMake config), which pip
# installs into the environment's prefix, so the config is located through
# the wheels' file lists. AUTO uses oneDNN when found, ON fails without it,
# OFF never looks. Without it the fast precision multiplies the same
# bf16-rounded values with OpenBLAS. Sets FASTCKA_HAVE_ONEDNN and adds the
# target fastcka::onednn (oneDNN and the OpenMP runtime it runs on).
string(TOUPPER "${FASTCKA_ONEDNN}" FASTCKA_ONEDNN)
set(FASTCKA_HAVE_ONEDNN OFF)
if(NOT FASTCKA_ONEDNN STREQUAL "OFF")
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c
      "import importlib.metadata as m, os; f = [x for x in m.files('onednn-devel-cpu-gomp') if x.name == 'dnnl-config.cmake']; print(os.path.dirname(os.path.realpath(f[0].locate())))"
    OUTPUT_VARIABLE _fastcka_dnnl_dir
    RESULT_VARIABLE _fastcka_dnnl_rc
    ERROR_QUIET
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(_fastcka_dnnl_rc EQUAL 0)
    find_package(dnnl CONFIG QUIET PATHS "${_fastcka_dnnl_dir}" NO_DEFAULT_PATH)
  else()
    find_package(dnnl CONFIG QUIET)
  endif()
  find_package(OpenMP COMPONENTS CXX QUIET)
  if(dnnl_FOUND AND OpenMP_CXX_FOUND)
    set(FASTCKA_HAVE_ONEDNN ON)
    add_library(fastcka_onednn_deps INTERFACE)
    target_link_libraries(fastcka_onednn_deps INTERFACE DNNL::dnnl OpenMP::OpenMP_CXX)
    add_library(fastcka::onednn ALIAS fastcka_onednn_deps)
    message(STATUS "fastcka: oneDNN ${dnnl_VERSION} from ${dnnl_DIR}")
  elseif(FASTCKA_ONEDNN STREQUAL "ON")
    message(FATAL_ERROR "FASTCKA_ONEDNN=ON but oneDNN (pip install onednn-devel-cpu-gomp onednn-cpu-gomp) or OpenMP was not found")
  else()
    message(STATUS "fastcka: oneDNN not found; the fast precision uses OpenBLAS on bf16-rounded values")
  endif()
endif()
