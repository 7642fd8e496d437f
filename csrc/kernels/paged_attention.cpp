// The paged decode-attention kernel (see paged_attention.h): block tables are checked, then
// threads split the (request, KV head) pairs, each running the vectorised loop for this CPU.
#include "kernels/paged_attention.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "kernels/attention_simd.h"

namespace trail::kernels {
namespace {

using AttendFn = decltype(&attend_generic);

AttendFn pick() {
#if defined(TRAIL_X86_KERNELS)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma"))
    return attend_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return attend_avx2;
#endif
  return attend_generic;
}

}  // namespace

void paged_attention_decode(const PagedAttentionArgs& a) {
  if (a.n < 0 || a.H < 1 || a.KVH < 1 || a.D < 1 || a.block_size < 1 || a.H % a.KVH != 0 ||
      a.table_width < 0)
    throw ValueError(cat("paged_attention: bad sizes n=", a.n, " H=", a.H, " KVH=", a.KVH,
                         " D=", a.D, " block_size=", a.block_size));
  for (int64_t i = 0; i < a.n; ++i) {
    const int64_t len = a.context_lens[i];
    if (len < 1 || (len + a.block_size - 1) / a.block_size > a.table_width)
      throw ValueError(cat("paged_attention: context_lens[", i, "]=", len,
                           " does not fit a block table of width ", a.table_width));
    for (int64_t b = 0; b < (len + a.block_size - 1) / a.block_size; ++b) {
      const int64_t blk = a.block_tables[i * a.table_width + b];
      if (blk < 0 || blk >= a.num_blocks)
        throw ValueError(cat("paged_attention: block_tables[", i, "][", b, "]=", blk,
                             " is outside the cache"));
    }
  }
  static const AttendFn attend = pick();
  const int64_t group = a.H / a.KVH, items = a.n * a.KVH;
  const int64_t head_stride = a.block_size * a.D, block_stride = a.KVH * head_stride;
  int64_t max_len = 1;
  for (int64_t i = 0; i < a.n; ++i) max_len = std::max<int64_t>(max_len, a.context_lens[i]);

  auto work = [&](int64_t lo, int64_t hi) {
    std::vector<float> scores(static_cast<size_t>(group * max_len));
    for (int64_t it = lo; it < hi; ++it) {
      const int64_t i = it / a.KVH, kvh = it % a.KVH;
      attend(a.q + (i * a.H + kvh * group) * a.D, a.k_cache + kvh * head_stride,
             a.v_cache + kvh * head_stride, block_stride, a.block_tables + i * a.table_width, a.context_lens[i], a.block_size,
             a.D, group, a.scale, scores.data(), a.out + (i * a.H + kvh * group) * a.D);
    }
  };
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(a.threads, items));
  if (threads == 1) {
    work(0, items);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t per = (items + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t)
    pool.emplace_back(work, std::min(items, t * per), std::min(items, (t + 1) * per));
  work(0, std::min(items, per));
  for (auto& th : pool) th.join();
}

}  // namespace trail::kernels
