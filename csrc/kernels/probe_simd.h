// Per-instruction-set entry points of the vectorised probe-step parts (probe_simd_impl.h).
#pragma once

#include <cstdint>

#define TRAIL_DECLARE_PROBE_SIMD(isa)                                                         \
  void layer1_##isa(const float* x, int64_t ldx, const float* w1, int64_t B, int64_t D,        \
                    int64_t H, float* z);                                                     \
  void rows_finite_##isa(const float* x, int64_t ldx, int64_t B, int64_t D, uint8_t* out);     \
  void layer2_##isa(float* z, const float* b1, const float* w2, const float* b2, int64_t B,    \
                    int64_t H, int64_t K, float* logits);

namespace trail::kernels {
TRAIL_DECLARE_PROBE_SIMD(generic)
#if defined(TRAIL_X86_KERNELS)
TRAIL_DECLARE_PROBE_SIMD(avx2)
TRAIL_DECLARE_PROBE_SIMD(avx512)
#endif
}  // namespace trail::kernels
