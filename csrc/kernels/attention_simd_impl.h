// Vectorised decode attention for one (request, KV head): the query heads that share the KV
// head attend over the request's context, read in place from its cache blocks. Included by
// attention_simd_<isa>.cpp with TRAIL_VBYTES / TRAIL_ISA defined (see probe_simd_impl.h).
#include <cstdint>
#include <cstring>

#include "kernels/attention_simd.h"

#include "kernels/simd_common.h"

namespace trail::kernels {
namespace {

// exp(x) for x <= 0 (softmax arguments), Cephes-style: 2^n · p(r), |rel err| < 2e-7.
inline vf vexp(vf x) {
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  const vf fx = x * 1.44269504088896341f;
  vf n;
  for (int i = 0; i < VL; ++i) n[i] = __builtin_floorf(fx[i] + 0.5f);
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf scale;
  std::memcpy(&scale, &e, sizeof scale);
  return p * scale;
}

}  // namespace

// Asks for the next block's run of `floats` floats while the current one is being read:
// blocks of one request are scattered, so the hardware prefetcher restarts at each one.
inline void prefetch_run(const float* p, int64_t floats) {
  for (int64_t i = 0; i < floats; i += 16) __builtin_prefetch(p + i);
}

void TRAIL_CAT(attend_, TRAIL_ISA)(const float* q, const float* k_cache, const float* v_cache,
                                   int64_t block_stride, const int32_t* table, int64_t len,
                                   int64_t block_size, int64_t D, int64_t group, float scale,
                                   float* scores, float* out) {
  // k_cache/v_cache point at this KV head's slice of block 0; a block's positions for one
  // head are contiguous, so each block is one sequential run of block_size * D floats.
  const int64_t nblocks = (len + block_size - 1) / block_size, run = block_size * D;
  // 1. Scores of every query head of the group against every context position.
  for (int64_t b = 0; b < nblocks; ++b) {
    const float* kb = k_cache + static_cast<int64_t>(table[b]) * block_stride;
    if (b + 1 < nblocks) prefetch_run(k_cache + static_cast<int64_t>(table[b + 1]) * block_stride, run);
    const int64_t t0 = b * block_size, t1 = t0 + block_size < len ? t0 + block_size : len;
    for (int64_t t = t0; t < t1; ++t) {
      const float* k = kb + (t - t0) * D;
      for (int64_t j = 0; j < group; ++j) scores[j * len + t] = dot(q + j * D, k, D) * scale;
    }
  }
  // 2. Softmax per head.
  for (int64_t j = 0; j < group; ++j) {
    float* s = scores + j * len;
    float mx = s[0];
    for (int64_t t = 1; t < len; ++t) mx = s[t] > mx ? s[t] : mx;
    vf sum = vf{};
    int64_t t = 0;
    for (; t + VL <= len; t += VL) {
      const vf e = vexp(load(s + t) - mx);
      store(s + t, e);
      sum += e;
    }
    float total = hsum(sum);
    for (; t < len; ++t) {
      const float e = __builtin_expf(s[t] - mx);
      s[t] = e;
      total += e;
    }
    const float inv = 1.0f / total;
    for (t = 0; t < len; ++t) s[t] *= inv;
  }
  // 3. Weighted sum of values, each value row read once for the whole group.
  for (int64_t j = 0; j < group * D; ++j) out[j] = 0.0f;
  for (int64_t b = 0; b < nblocks; ++b) {
    const float* vb = v_cache + static_cast<int64_t>(table[b]) * block_stride;
    if (b + 1 < nblocks) prefetch_run(v_cache + static_cast<int64_t>(table[b + 1]) * block_stride, run);
    const int64_t t0 = b * block_size, t1 = t0 + block_size < len ? t0 + block_size : len;
    for (int64_t t = t0; t < t1; ++t) {
      const float* v = vb + (t - t0) * D;
      for (int64_t j = 0; j < group; ++j) {
        const float w = scores[j * len + t];
        float* o = out + j * D;
        int64_t d = 0;
        for (; d + VL <= D; d += VL) store(o + d, load(o + d) + load(v + d) * w);
        for (; d < D; ++d) o[d] += v[d] * w;
      }
    }
  }
}

}  // namespace trail::kernels
