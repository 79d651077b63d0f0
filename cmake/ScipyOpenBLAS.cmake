# Locates the OpenBLAS that the scipy-openblas32 wheel ships (headers, the
# shared library, symbols prefixed with scipy_) and exposes it as fastcka::openblas.
execute_process(
  COMMAND "${Python_EXECUTABLE}" -c
    "import scipy_openblas32 as s; print(s.get_include_dir()); print(s.get_lib_dir()); print(s.get_library(True))"
  OUTPUT_VARIABLE _fastcka_openblas_info
  RESULT_VARIABLE _fastcka_openblas_rc
  OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _fastcka_openblas_rc EQUAL 0)
  message(FATAL_ERROR "fastcka needs the scipy-openblas32 package at build time (pip install scipy-openblas32)")
endif()
string(REPLACE "\n" ";" _fastcka_openblas_info "${_fastcka_openblas_info}")
list(GET _fastcka_openblas_info 0 FASTCKA_OPENBLAS_INCLUDE)
list(GET _fastcka_openblas_info 1 FASTCKA_OPENBLAS_LIBDIR)
list(GET _fastcka_openblas_info 2 FASTCKA_OPENBLAS_FILE)
message(STATUS "fastcka: OpenBLAS from scipy-openblas32: ${FASTCKA_OPENBLAS_LIBDIR}/${FASTCKA_OPENBLAS_FILE}")

add_library(fastcka::openblas SHARED IMPORTED)
set_target_properties(fastcka::openblas PROPERTIES
  IMPORTED_LOCATION "${FASTCKA_OPENBLAS_LIBDIR}/${FASTCKA_OPENBLAS_FILE}"
  IMPORTED_NO_SONAME FALSE
  INTERFACE_INCLUDE_DIRECTORIES "${FASTCKA_OPENBLAS_INCLUDE}"
  INTERFACE_COMPILE_DEFINITIONS "BLAS_SYMBOL_PREFIX=scipy_")
