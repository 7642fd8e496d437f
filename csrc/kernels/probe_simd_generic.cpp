// Vectorised probe-step parts for the generic instruction set (see probe_simd_impl.h).
#define TRAIL_VBYTES 16
#define TRAIL_ISA generic
#include "kernels/probe_simd_impl.h"
