// Vectorised probe-step parts for the avx2 instruction set (see probe_simd_impl.h).
#define TRAIL_VBYTES 32
#define TRAIL_ISA avx2
#include "kernels/probe_simd_impl.h"
