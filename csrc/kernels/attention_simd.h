// Per-instruction-set entry points of the decode-attention inner loop (attention_simd_impl.h).
#pragma once

#include <cstdint>

#define TRAIL_DECLARE_ATTENTION_SIMD(isa)                                                      \
  void attend_##isa(const float* q, const float* k_cache, const float* v_cache,               \
                    int64_t block_stride, const int32_t* table, int64_t len, int64_t block_size, \
                    int64_t D, int64_t group, float scale, float* scores, float* out);

namespace trail::kernels {
TRAIL_DECLARE_ATTENTION_SIMD(generic)
#if defined(TRAIL_X86_KERNELS)
TRAIL_DECLARE_ATTENTION_SIMD(avx2)
TRAIL_DECLARE_ATTENTION_SIMD(avx512)
#endif
}  // namespace trail::kernels
