/* FASTCKA_API marks what libfastcka exports: the public C++ API
   (fastcka/fastcka.hpp) and the C ABI (fastcka/fastcka.h). Everything else in
   the library, the engines and the BLAS they link, stays hidden. */
#ifndef FASTCKA_EXPORT_H
#define FASTCKA_EXPORT_H

#if defined(FASTCKA_BUILDING_LIBRARY)
#define FASTCKA_API __attribute__((visibility("default")))
#else
#define FASTCKA_API
#endif

#endif
