// Vectorised probe-step parts for the avx512 instruction set (see probe_simd_impl.h).
#define TRAIL_VBYTES 64
#define TRAIL_ISA avx512
#include "kernels/probe_simd_impl.h"
