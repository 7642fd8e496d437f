// The vectorised parts of the probe step, written once with GCC/Clang vector extensions.
// Each probe_simd_<isa>.cpp defines TRAIL_VBYTES (vector width in bytes) and TRAIL_ISA
// (a suffix) and includes this file; CMake compiles each with its instruction-set flags,
// and probe_step.cpp picks one at run time from the CPU's features.
#include <cstdint>

#include "kernels/probe_simd.h"

#include "kernels/simd_common.h"

namespace trail::kernels {
namespace {  // internal linkage: every instruction set gets its own copy

// z[r][h] = x[r] · w[h] for an RB × HB tile. W1 rows stream through once per tile; the
// RB·HB accumulators stay in registers over the whole reduction.
template <int RB, int HB>
inline void tile(const float* x, int64_t ldx, const float* w, int64_t D, float* z, int64_t ldz) {
  vf acc[RB][HB];
  for (int r = 0; r < RB; ++r)
    for (int h = 0; h < HB; ++h) acc[r][h] = vf{};
  int64_t d = 0;
  for (; d + VL <= D; d += VL) {
    vf xv[RB];
    for (int r = 0; r < RB; ++r) xv[r] = load(x + r * ldx + d);
    for (int h = 0; h < HB; ++h) {
      const vf wv = load(w + h * D + d);
      for (int r = 0; r < RB; ++r) acc[r][h] += xv[r] * wv;
    }
  }
  for (int r = 0; r < RB; ++r)
    for (int h = 0; h < HB; ++h) {
      float s = hsum(acc[r][h]);
      for (int64_t e = d; e < D; ++e) s += x[r * ldx + e] * w[h * D + e];
      z[r * ldz + h] = s;
    }
}

template <int RB>
inline void tile_h(int hb, const float* x, int64_t ldx, const float* w, int64_t D, float* z,
                   int64_t ldz) {
  switch (hb) {
    case 4: tile<RB, 4>(x, ldx, w, D, z, ldz); break;
    case 3: tile<RB, 3>(x, ldx, w, D, z, ldz); break;
    case 2: tile<RB, 2>(x, ldx, w, D, z, ldz); break;
    default: tile<RB, 1>(x, ldx, w, D, z, ldz); break;
  }
}

}  // namespace

void TRAIL_CAT(layer1_, TRAIL_ISA)(const float* x, int64_t ldx, const float* w1, int64_t B,
                                   int64_t D, int64_t H, float* z) {
  // Rows of x are processed in chunks that stay in L2 (~1 MiB) while W1 streams past once
  // per chunk: for the small batches of a decode step that is once per call.
  int64_t chunk = (int64_t{1} << 20) / (4 * (D > 0 ? D : 1));
  chunk = chunk < 4 ? 4 : chunk - chunk % 4;
  for (int64_t b0 = 0; b0 < B; b0 += chunk) {
    const int64_t b1 = b0 + chunk < B ? b0 + chunk : B;
    for (int64_t h = 0; h < H; h += 4) {
      const int hb = static_cast<int>(H - h < 4 ? H - h : 4);
      for (int64_t b = b0; b < b1; b += 4) {
        const float* xb = x + b * ldx;
        const float* wh = w1 + h * D;
        float* zb = z + b * H + h;
        switch (b1 - b < 4 ? b1 - b : 4) {
          case 4: tile_h<4>(hb, xb, ldx, wh, D, zb, H); break;
          case 3: tile_h<3>(hb, xb, ldx, wh, D, zb, H); break;
          case 2: tile_h<2>(hb, xb, ldx, wh, D, zb, H); break;
          default: tile_h<1>(hb, xb, ldx, wh, D, zb, H); break;
        }
      }
    }
  }
}

void TRAIL_CAT(rows_finite_, TRAIL_ISA)(const float* x, int64_t ldx, int64_t B, int64_t D,
                                        uint8_t* out) {
  for (int64_t b = 0; b < B; ++b) {
    const float* row = x + b * ldx;
    // v - v is 0 for finite v and NaN for ±inf or NaN: one NaN survives the sum.
    vf acc = vf{};
    int64_t d = 0;
    for (; d + VL <= D; d += VL) {
      const vf v = load(row + d);
      acc += v - v;
    }
    float s = hsum(acc);
    for (; d < D; ++d) s += row[d] - row[d];
    out[b] = s == 0.0f;
  }
}

void TRAIL_CAT(layer2_, TRAIL_ISA)(float* z, const float* b1, const float* w2, const float* b2,
                                   int64_t B, int64_t H, int64_t K, float* logits) {
  for (int64_t b = 0; b < B; ++b) {
    float* zr = z + b * H;
    for (int64_t h = 0; h < H; ++h) {
      const float v = zr[h] + b1[h];
      zr[h] = v < 0.0f ? 0.0f : v;  // ReLU that keeps NaN, as torch.relu does
    }
    for (int64_t k = 0; k < K; ++k) logits[b * K + k] = dot(zr, w2 + k * H, H) + b2[k];
  }
}

}  // namespace trail::kernels
