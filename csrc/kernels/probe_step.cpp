// The fused probe step (see probe_step.h): argument checks, then the vectorised MLP and
// Bayesian update chosen for this CPU, and the Gittins rank when asked.
#include "kernels/probe_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/errors.h"
#include "kernels/probe_simd.h"

namespace trail::kernels {
namespace {

struct Simd {
  const char* name;
  decltype(&layer1_generic) layer1;
  decltype(&rows_finite_generic) rows_finite;
  decltype(&layer2_generic) layer2;
};

Simd pick_simd() {
#if defined(TRAIL_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma"))
    return {"avx512", layer1_avx512, rows_finite_avx512, layer2_avx512};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {"avx2", layer1_avx2, rows_finite_avx2, layer2_avx2};
#endif
  return {"generic", layer1_generic, rows_finite_generic, layer2_generic};
}

const Simd& simd() {
  static const Simd s = pick_simd();
  return s;
}

float bf16_to_float(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    u = sign;  // ±0
  } else {     // subnormal: normalise
    exp = 113;
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --exp;
    }
    u = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

void check_slots(const ProbeStepArgs& a) {
  thread_local std::vector<int32_t> sorted;
  sorted.assign(a.slots, a.slots + a.B);
  for (int64_t b = 0; b < a.B; ++b)
    if (a.slots[b] < 0 || a.slots[b] >= a.S)
      throw ValueError(cat("probe_step: slots[", b, "]=", a.slots[b], " is outside the state's ",
                           a.S, " rows"));
  std::sort(sorted.begin(), sorted.end());
  const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end())
    throw ValueError(cat("probe_step: slot ", *dup, " appears twice in one batch"));
}

}  // namespace

const char* probe_isa() { return simd().name; }

double gittins_rank(const double* q, const float* edges, int64_t K, double cap) {
  if (std::isnan(cap)) return cap;
  thread_local std::vector<double> tail;
  tail.resize(static_cast<size_t>(K) + 1);
  tail[K] = 0.0;
  for (int64_t k = K - 1; k >= 0; --k) tail[k] = tail[k + 1] + q[k];  // Σ_{i>=k} q_i
  double best = std::numeric_limits<double>::infinity();
  double prefix = 0.0, below = 0.0, at_cap = 0.0;
  for (int64_t k = 0; k < K; ++k) {
    const double lo = edges[k], hi = edges[k + 1], mid = (lo + hi) / 2;
    prefix += q[k];
    below += q[k] * mid;
    // a = hi: candidates below the cap with some mass at or under them
    if (prefix > 0.0 && hi < cap) best = std::min(best, (below + hi * tail[k + 1]) / prefix);
    // E[min(U_k, cap)] for U_k uniform on the bin
    const double part = cap >= hi   ? mid
                        : cap <= lo ? cap
                                    : ((cap - lo) * (cap + lo) / 2 + cap * (hi - cap)) / (hi - lo);
    at_cap += q[k] * part;
  }
  const double total = tail[0];
  return std::min(best, at_cap / (total > 0.0 ? total : 1.0));
}

void probe_step(const ProbeStepArgs& a) {
  if ((a.edges == nullptr) != (a.gittins == nullptr))
    throw ValueError("probe_step: edges and gittins must be given together");
  if (a.B < 0 || a.D < 1 || a.H < 1 || a.K < 1 || a.S < 0 || a.hidden_stride < a.D)
    throw ValueError(cat("probe_step: bad sizes B=", a.B, " D=", a.D, " H=", a.H, " K=", a.K,
                         " S=", a.S, " stride=", a.hidden_stride));
  check_slots(a);
  if (a.B == 0) return;
  const Simd& s = simd();
  const int64_t B = a.B, D = a.D, H = a.H, K = a.K;

  // Hidden states as fp32 rows (converted once if they arrive as bf16/fp16).
  thread_local std::vector<float> xbuf, zbuf, logits;
  thread_local std::vector<uint8_t> finite;
  const float* x = static_cast<const float*>(a.hidden);
  int64_t ldx = a.hidden_stride;
  if (a.hidden_dtype != DType::F32) {
    xbuf.resize(static_cast<size_t>(B * D));
    const uint16_t* src = static_cast<const uint16_t*>(a.hidden);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t d = 0; d < D; ++d) {
        const uint16_t v = src[b * a.hidden_stride + d];
        xbuf[b * D + d] = a.hidden_dtype == DType::BF16 ? bf16_to_float(v) : f16_to_float(v);
      }
    x = xbuf.data();
    ldx = D;
  }
  finite.resize(static_cast<size_t>(B));
  s.rows_finite(x, ldx, B, D, finite.data());

  zbuf.resize(static_cast<size_t>(B * H));
  if (a.pre != nullptr)
    std::memcpy(zbuf.data(), a.pre, sizeof(float) * static_cast<size_t>(B * H));
  else
    s.layer1(x, ldx, a.w1, B, D, H, zbuf.data());
  logits.resize(static_cast<size_t>(B * K));
  s.layer2(zbuf.data(), a.b1, a.w2, a.b2, B, H, K, logits.data());

  // Softmax and the Bayesian update: K values per row, in double.
  std::vector<double> p(K), prior(K), q(K);
  for (int64_t b = 0; b < B; ++b) {
    const float* lg = logits.data() + b * K;
    bool good = finite[b] != 0;
    for (int64_t k = 0; k < K && good; ++k) good = std::isfinite(lg[k]);
    if (good) {
      double mx = -std::numeric_limits<double>::infinity(), sum = 0.0;
      for (int64_t k = 0; k < K; ++k) mx = std::max(mx, static_cast<double>(lg[k]));
      for (int64_t k = 0; k < K; ++k) sum += p[k] = std::exp(static_cast<double>(lg[k]) - mx);
      for (int64_t k = 0; k < K; ++k) p[k] /= sum;
    }
    float* st = a.state + static_cast<int64_t>(a.slots[b]) * K;
    const bool first = a.first[b] != 0;
    if (!first) {
      for (int64_t k = 0; k < K; ++k) prior[k] = 0.0;
      for (int64_t j = 0; j < K; ++j) {
        const double sj = st[j];
        const float* tj = a.transition + j * K;
        for (int64_t k = 0; k < K; ++k) prior[k] += sj * tj[k];
      }
    }
    if (good && first) {
      q = p;
    } else if (good) {
      double sum = 0.0;
      for (int64_t k = 0; k < K; ++k) sum += q[k] = prior[k] * p[k];
      if (sum > 0.0) {
        for (int64_t k = 0; k < K; ++k) q[k] /= sum;
      } else {
        q = p;  // the product underflowed: trust the probe alone
      }
    } else {
      // A non-finite row must not poison the state: keep the propagated prior.
      double sum = 0.0;
      if (!first)
        for (int64_t k = 0; k < K; ++k) sum += prior[k];
      const bool usable = !first && sum > 0.0 && std::isfinite(sum);
      for (int64_t k = 0; k < K; ++k)
        q[k] = usable ? prior[k] / sum : 1.0 / static_cast<double>(K);
    }
    double mean = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      st[k] = static_cast<float>(q[k]);
      mean += q[k] * a.centers[k];
    }
    const double cap = a.cap[b];
    a.pred[b] = static_cast<float>(std::isnan(cap) ? cap : std::min(mean, cap));
    if (a.gittins != nullptr) a.gittins[b] = static_cast<float>(gittins_rank(q.data(), a.edges, K, cap));
  }
}

}  // namespace trail::kernels
