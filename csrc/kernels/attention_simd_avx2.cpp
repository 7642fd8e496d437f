// Vectorised decode attention for the avx2 instruction set (see attention_simd_impl.h).
#define TRAIL_VBYTES 32
#define TRAIL_ISA avx2
#include "kernels/attention_simd_impl.h"
