// The scheduler's one account of KV blocks. The engine's paged pool (or vLLM's) follows the
// decisions made with it; TRAIL's engine checks every step that the two agree.
#pragma once

#include <cstdint>

#include "scheduler/types.h"

namespace trail {

// Device blocks are reserved by running requests (through the token each generates next)
// and by preempted requests whose KV is kept; swapped requests hold host blocks.
struct KvBudget {
  int64_t block_size = 1;
  int64_t capacity = 0, swap_capacity = 0;      // blocks
  int64_t running_next = 0, kept = 0, swap_used = 0;

  KvBudget() = default;
  explicit KvBudget(const SchedulerConfig& cfg)
      : block_size(cfg.block_size),
        capacity(cfg.kv_capacity_tokens / cfg.block_size),
        swap_capacity(cfg.swap_capacity_tokens / cfg.block_size) {}

  // Blocks that hold `tokens` tokens.
  int64_t blocks(int64_t tokens) const { return (tokens + block_size - 1) / block_size; }
  // Device blocks not reserved by anyone.
  int64_t free() const { return capacity - running_next - kept; }
  // More reserved than there is: memory pressure, someone must leave the device.
  bool over() const { return free() < 0; }
  bool swap_fits(int64_t held) const { return swap_used + held <= swap_capacity; }
};

}  // namespace trail
