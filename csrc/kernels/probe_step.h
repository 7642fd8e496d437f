// Fused probe step on the CPU: MLP probe over a batch of hidden states, softmax over
// remaining-length bins, Bayesian update of each request's bin distribution, and the
// predicted remaining length. python/trail/kernels/reference.py is the specification.
// No torch headers: the bindings hand over raw buffers after checking their shapes.
#pragma once

#include <cstdint>

namespace trail::kernels {

enum class DType { F32, BF16, F16 };

struct ProbeStepArgs {
  const void* hidden = nullptr;  // [B, D] rows `hidden_stride` elements apart
  DType hidden_dtype = DType::F32;
  int64_t B = 0, D = 0, hidden_stride = 0;
  const int32_t* slots = nullptr;  // [B], unique, in [0, S)
  const uint8_t* first = nullptr;  // [B]
  const float* w1 = nullptr;       // [H, D] (torch.nn.Linear layout)
  const float* b1 = nullptr;       // [H]
  const float* w2 = nullptr;       // [K, H]
  const float* b2 = nullptr;       // [K]
  int64_t H = 0, K = 0;
  const float* transition = nullptr;  // [K, K]
  const float* centers = nullptr;     // [K]
  const float* cap = nullptr;         // [B]
  float* state = nullptr;             // [S, K], rows of `slots` updated in place
  int64_t S = 0;
  // Optional [B, H] = hidden @ w1ᵀ computed elsewhere (a BLAS GEMM for large batches);
  // when given, `hidden` is still read to detect non-finite rows.
  const float* pre = nullptr;
  float* pred = nullptr;  // [B] output
  // Optional second output: the Gittins rank of each updated row (gittins_rank below) over
  // bins with these edges; both null to skip it.
  const float* edges = nullptr;  // [K + 1]
  float* gittins = nullptr;      // [B] output
};

// Gittins rank of a distribution q[0..K) over bins [edges[k], edges[k+1]) (mass uniform
// within a bin), with the length capped at `cap`: min over a of E[min(R,a)] / P(R <= a).
// python/trail/kernels/reference.py (gittins_rank_reference) is the specification.
double gittins_rank(const double* q, const float* edges, int64_t K, double cap);

// Validates slots (range, uniqueness; trail::ValueError) and runs the step.
void probe_step(const ProbeStepArgs& args);

// Name of the instruction set the kernels run with on this machine ("avx512", "avx2", "generic").
const char* probe_isa();

}  // namespace trail::kernels
