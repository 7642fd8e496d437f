// Decode attention over a paged KV cache, reading each request's blocks in place (no gather):
// one query token per request, its whole context in fixed-size blocks named by a block table.
// No torch headers: the bindings hand over raw buffers after checking their shapes.
#pragma once

#include <cstdint>

namespace trail::kernels {

struct PagedAttentionArgs {
  const float* q = nullptr;             // [n, H, D]
  const float* k_cache = nullptr;       // [num_blocks, KVH, block_size, D] (head-major blocks)
  const float* v_cache = nullptr;       // same layout
  int64_t num_blocks = 0;
  const int32_t* block_tables = nullptr;  // [n, table_width]
  int64_t table_width = 0;
  const int32_t* context_lens = nullptr;  // [n], >= 1
  int64_t n = 0, H = 0, KVH = 0, D = 0, block_size = 0;
  float scale = 1.0f;
  float* out = nullptr;                 // [n, H, D]
  int threads = 1;
};

// Validates the block tables against the cache (trail::ValueError) and runs.
void paged_attention_decode(const PagedAttentionArgs& args);

}  // namespace trail::kernels
