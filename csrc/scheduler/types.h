// Public value types of the scheduler core: enums, config, decision, views, errors.
// No Python or torch headers: the bindings translate these.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "common/errors.h"
#include <string>
#include <vector>

namespace trail {

// Documented limits (docs/scheduler.md, "Limits"), checked where values enter: with them
// every block count, sum and ceil-division the scheduler forms stays far inside int64
// (Σ over a batch <= kMaxRunning * (kMaxTokens + 1) < 2**61), and every slot fits uint32.
inline constexpr int64_t kMaxTokens = int64_t{1} << 40;   // capacities, block size, lengths
inline constexpr int64_t kMaxRunning = int64_t{1} << 20;  // max_running
inline constexpr int64_t kMaxMlfqLevels = 64;             // mlfq_levels (quanta stay exact)
inline constexpr size_t kMaxLive = 0xFFFFFFFFu;           // live requests (uint32 slots)

enum class Policy { FCFS, SJF, SRPT, TRAIL, LTR, MLFQ };
enum class PreemptMode { KEEP, SWAP, RECOMPUTE };
enum class RequestState { WAITING, RUNNING, PREEMPTED };
enum class KvLocation { NONE, DEVICE, HOST, DROPPED };

struct SchedulerConfig {
  Policy policy = Policy::TRAIL;
  int64_t max_running = 48;
  int64_t kv_capacity_tokens = 65536;
  int64_t block_size = 16;
  double c = 0.8;
  PreemptMode preempt_mode = PreemptMode::KEEP;
  int64_t swap_capacity_tokens = 0;
  int64_t max_preemptions = -1;
  int64_t starvation_steps = 0;
  int64_t starvation_period = 0;
  double default_predicted_len = 128.0;
  int64_t mlfq_levels = 4;
  int64_t mlfq_base_quantum = 16;
  double mlfq_prefill_ratio = 64.0;
  // Work-aware rank of SJF, SRPT and TRAIL: size + prefill_weight * pending prefill tokens
  // + aging_rate * arrival (tokens; aging_rate in tokens per second). 0: the plain size.
  double prefill_weight = 0.0;
  double aging_rate = 0.0;
  // Boost key (Yu & Scully, SIGMETRICS 2024) of SJF, SRPT and TRAIL when > 0 (per token of
  // work): aging_rate * arrival - B(work), B(w) = -log(1 - exp(-boost_gamma * w)) / boost_gamma,
  // work = size + prefill_weight * pending prefill, at least 1 token. A saturating head start:
  // short requests jump far ahead, long ones hardly at all; aging_rate is then the server's
  // work rate (tokens per second), so the key compares arrival times.
  double boost_gamma = 0.0;
  // Preemption for rank needs victim key - preempt_cost(victim) > candidate key +
  // preempt_margin.
  double preempt_margin = 0.0;
  // What rebuilding one token of a rank-preempted request's KV costs, as a fraction of a
  // prefill token's cost (prefill_weight): 1 if it recomputes, the copy's share if it swaps.
  // Its rebuild delays every request present, so preempt_cost(victim) = rebuild_cost *
  // prefill_weight * (prompt + generated tokens) * requests present / max_running
  // (docs/scheduler.md, "Cost-aware preemption"). The Scheduler charges it unless preempt_mode is KEEP (the
  // victim's KV stays on the device); the Ranker always does (its host frees the KV).
  double rebuild_cost = 0.0;
  // KV-aware fill: admit or resume a request only if the KV every running request is
  // predicted to reach (tokens + predicted remaining), the kept KV and its own predicted
  // total fit in capacity, so that predicted growth never forces an eviction.
  bool kv_aware = false;
};

// One iteration's decision; every list holds rids in the order the events happened.
struct Decision {
  int64_t iteration = 0;
  std::vector<int64_t> admitted, resumed, swapped_in, recomputed, preempted, swapped_out,
      dropped, running;
};

struct RequestView {
  int64_t rid;
  RequestState state;
  KvLocation kv;
  double arrival;
  int64_t prompt_len, max_new_tokens, generated;
  double predicted_len, remaining, score;
  int64_t preemptions, level;
  bool promoted;
};

struct Stats {
  int64_t iterations = 0, added = 0, finished = 0, aborted = 0, live = 0, waiting = 0,
          running = 0, preempted = 0, kept = 0, swapped = 0, dropped = 0, preemptions = 0,
          swap_outs = 0, swap_ins = 0, drops = 0, recomputes = 0, kv_capacity_blocks = 0,
          kv_reserved_blocks = 0, swap_capacity_blocks = 0, swap_used_blocks = 0;
};

}  // namespace trail
