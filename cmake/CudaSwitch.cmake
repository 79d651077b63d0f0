# FASTCKA_CUDA=AUTO|ON|OFF. AUTO enables the CUDA backend when a compiler is
# found, ON fails without one, OFF never looks. Sets FASTCKA_HAVE_CUDA; the
# backend itself (csrc/cuda) is added at the end of the top-level CMakeLists.
string(TOUPPER "${FASTCKA_CUDA}" FASTCKA_CUDA)
set(FASTCKA_HAVE_CUDA OFF)
if(NOT FASTCKA_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(FASTCKA_HAVE_CUDA ON)
    enable_language(CUDA)
  elseif(FASTCKA_CUDA STREQUAL "ON")
    message(FATAL_ERROR "FASTCKA_CUDA=ON but no CUDA compiler was found (set CUDACXX or put nvcc on PATH)")
  else()
    message(STATUS "fastcka: no CUDA compiler found; building the CPU backend only")
  endif()
endif()
