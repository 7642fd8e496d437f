// Vectorised decode attention for the generic instruction set (see attention_simd_impl.h).
#define TRAIL_VBYTES 16
#define TRAIL_ISA generic
#include "kernels/attention_simd_impl.h"
