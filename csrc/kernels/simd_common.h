// Vector helpers shared by the per-instruction-set kernel files. Each including file sets
// TRAIL_VBYTES (vector width in bytes) and TRAIL_ISA (name suffix) first; everything here
// has internal linkage, so every instruction set gets its own copy.
#pragma once

#include <cstdint>

#define TRAIL_CAT2(a, b) a##b
#define TRAIL_CAT(a, b) TRAIL_CAT2(a, b)

namespace trail::kernels {
namespace {

constexpr int VL = TRAIL_VBYTES / 4;
typedef float vf __attribute__((vector_size(TRAIL_VBYTES)));
typedef float vfu __attribute__((vector_size(TRAIL_VBYTES), aligned(4)));
typedef int32_t vi __attribute__((vector_size(TRAIL_VBYTES)));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
inline vf splat(float x) { return vf{} + x; }

inline float hsum(vf v) {
  float s = 0.0f;
  for (int i = 0; i < VL; ++i) s += v[i];
  return s;
}

// a · b over n floats: vector lanes, then the tail.
inline float dot(const float* a, const float* b, int64_t n) {
  vf acc = vf{};
  int64_t i = 0;
  for (; i + VL <= n; i += VL) acc += load(a + i) * load(b + i);
  float s = hsum(acc);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace
}  // namespace trail::kernels
