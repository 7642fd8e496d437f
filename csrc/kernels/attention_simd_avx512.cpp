// Vectorised decode attention for the avx512 instruction set (see attention_simd_impl.h).
#define TRAIL_VBYTES 64
#define TRAIL_ISA avx512
#include "kernels/attention_simd_impl.h"
