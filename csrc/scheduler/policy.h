// Policies as rank functions: a primary key (lower runs first) and a preemptibility rule.
// The total order of requests is (primary, arrival, rid); docs/scheduler.md is the spec.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "scheduler/request.h"
#include "scheduler/types.h"

namespace trail {

inline bool preempts_for_rank(Policy p) {
  return p == Policy::SRPT || p == Policy::TRAIL || p == Policy::LTR || p == Policy::MLFQ;
}

// Prompt tokens a request must still prefill before it decodes: the prompt if it never ran,
// prompt + generated if its KV was dropped (it recomputes), 0 while its KV exists (running,
// kept, or swapped: a swap-in copies KV back, it computes nothing).
inline double pending_prefill(const Request& r) {
  if (r.state == RequestState::WAITING) return static_cast<double>(r.prompt_len);
  if (r.state == RequestState::PREEMPTED && r.kv == KvLocation::DROPPED)
    return static_cast<double>(r.prompt_len + r.generated);
  return 0.0;
}

// Boost's head start B(w) = -log(1 - exp(-gamma * w)) / gamma for work w (floor 1 token, so
// a request about to finish still has a finite key); decreasing in w, B -> 0 as w grows.
inline double boost_head_start(double gamma, double work) {
  const double w = std::max(work, 1.0);
  return -std::log(-std::expm1(-gamma * w)) / gamma;
}

// size + prefill_weight * pending prefill + aging_rate * arrival, evaluated left to right
// (the Python twin does the same, so both round alike); with boost_gamma > 0 the Boost key
// aging_rate * arrival - B(size + prefill_weight * pending prefill). A NaN (inf - inf) ranks
// last.
inline double work_key(const SchedulerConfig& cfg, const Request& r, double size) {
  if (cfg.boost_gamma > 0.0) {
    const double work = size + cfg.prefill_weight * pending_prefill(r);
    const double k = cfg.aging_rate * r.arrival - boost_head_start(cfg.boost_gamma, work);
    return std::isnan(k) ? std::numeric_limits<double>::infinity() : k;
  }
  if (cfg.prefill_weight == 0.0 && cfg.aging_rate == 0.0) return size;
  const double k = size + cfg.prefill_weight * pending_prefill(r) + cfg.aging_rate * r.arrival;
  return std::isnan(k) ? std::numeric_limits<double>::infinity() : k;
}

inline double primary_key(const SchedulerConfig& cfg, const Request& r) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  if (r.promo_left > 0) return -inf;  // starvation guard (LTR, SJF, SRPT, TRAIL)
  switch (cfg.policy) {
    case Policy::FCFS: return r.arrival;
    case Policy::SJF:
      return work_key(cfg, r, r.pred_known ? r.predicted_len : cfg.default_predicted_len);
    case Policy::SRPT:
    case Policy::TRAIL: return work_key(cfg, r, r.remaining);
    case Policy::LTR: return std::isnan(r.score) ? inf : r.score;
    case Policy::MLFQ: return static_cast<double>(r.level);
  }
  return 0.0;
}

// May a running request be preempted because a better-ranked one waits?
inline bool preemptible_for_rank(const SchedulerConfig& cfg, const Request& r) {
  if (!preempts_for_rank(cfg.policy)) return false;
  if (cfg.max_preemptions >= 0 && r.preemptions >= cfg.max_preemptions) return false;
  if (cfg.policy == Policy::TRAIL) {
    // Limited preemption: only early in a request's life, while its KV cache is small.
    const double len = r.pred_known ? r.predicted_len : cfg.default_predicted_len;
    return cfg.c > 0.0 && static_cast<double>(r.generated) <= cfg.c * len;
  }
  return true;
}

// What preempting running request `r` for rank costs, in key units (tokens): rebuilding its
// KV is rebuild_cost * prefill_weight decode tokens of server work per token of prompt and
// generated output; a step serves max_running decode tokens, so the rebuild stretches time
// by that work / max_running steps, for each of the `present` requests in the system.
// Evaluated left to right (the Python twin does the same, so both round alike).
inline double preempt_cost(const SchedulerConfig& cfg, const Request& r, int64_t present) {
  if (cfg.rebuild_cost == 0.0 || cfg.prefill_weight == 0.0) return 0.0;
  return cfg.rebuild_cost * cfg.prefill_weight * static_cast<double>(r.prompt_len + r.generated) *
         static_cast<double>(present) / static_cast<double>(cfg.max_running);
}

// Tokens a request may generate at MLFQ `level` before it moves down.
inline double mlfq_quantum(const SchedulerConfig& cfg, int64_t level) {
  return std::ldexp(static_cast<double>(cfg.mlfq_base_quantum), static_cast<int>(level));
}

// Skip-join: the first level whose quantum covers the prefill cost, in decode steps.
inline int64_t mlfq_initial_level(const SchedulerConfig& cfg, int64_t prompt_len) {
  const double cost = static_cast<double>(prompt_len) / cfg.mlfq_prefill_ratio;
  int64_t level = 0;
  while (level < cfg.mlfq_levels - 1 && mlfq_quantum(cfg, level) < cost) ++level;
  return level;
}

// `k` new tokens (already checked to fit in max_new): the count, the remaining prediction
// (floor 0, capped by what is left) and MLFQ's quantum accounting.
inline void advance_tokens(const SchedulerConfig& cfg, Request& r, int64_t k) {
  r.generated += k;
  r.remaining = std::min(std::max(r.remaining - static_cast<double>(k), 0.0),
                         static_cast<double>(r.max_new - r.generated));
  if (cfg.policy != Policy::MLFQ) return;
  // Token by token: a burst may use up one level's quantum and spill into the next.
  int64_t left = k;
  while (left > 0 && r.level < cfg.mlfq_levels - 1) {
    const double room = mlfq_quantum(cfg, r.level) - static_cast<double>(r.level_used);
    const int64_t used = static_cast<double>(left) < room ? left : static_cast<int64_t>(room);
    r.level_used += used;
    left -= used;
    if (static_cast<double>(r.level_used) >= mlfq_quantum(cfg, r.level)) {
      ++r.level;
      r.level_used = 0;
    }
  }
  r.level_used += left;  // at the last level the count just grows
}

// The starvation guard's promotion of a request left out too long: the top rank for
// starvation_period steps, or under MLFQ back to the top queue with a fresh quantum.
inline void promote_starved(const SchedulerConfig& cfg, Request& r) {
  r.left_out = 0;
  if (cfg.policy != Policy::MLFQ) {
    r.promo_left = cfg.starvation_period;
  } else {
    r.level = 0;
    r.level_used = 0;
  }
}

// A new waiting request (fields already checked): remaining from the prediction or the
// default, capped by max_new_tokens; MLFQ's skip-join level.
inline Request new_request(const SchedulerConfig& cfg, int64_t rid, double arrival,
                           int64_t prompt_len, int64_t max_new_tokens, double predicted_len,
                           double score) {
  Request r;
  r.rid = rid;
  r.arrival = arrival;
  r.prompt_len = prompt_len;
  r.max_new = max_new_tokens;
  r.pred_known = !std::isnan(predicted_len);
  r.predicted_len = predicted_len;
  r.remaining = std::min(r.pred_known ? predicted_len : cfg.default_predicted_len,
                         static_cast<double>(max_new_tokens));
  r.score = score;
  if (cfg.policy == Policy::MLFQ) r.level = mlfq_initial_level(cfg, prompt_len);
  return r;
}

// A new prediction of the remaining tokens: fixes predicted_len the first time.
inline void apply_prediction(Request& r, double remaining) {
  if (!r.pred_known) {
    r.predicted_len = static_cast<double>(r.generated) + remaining;
    r.pred_known = true;
  }
  r.remaining = std::min(remaining, static_cast<double>(r.max_new - r.generated));
}

// The public snapshot of a live request (Scheduler::get, Ranker::get).
inline RequestView view_of(const Request& r) {
  return RequestView{r.rid,       r.state,      r.kv,
                     r.arrival,   r.prompt_len, r.max_new,
                     r.generated, r.pred_known ? r.predicted_len : std::nan(""),
                     r.remaining, r.score,      r.preemptions,
                     r.level,     r.promo_left > 0};
}

// Sort key of the total order; `idx` rides along so set nodes lead back to the request.
struct RankKey {
  double primary;
  double arrival;
  int64_t rid;
  uint32_t idx;
  bool operator<(const RankKey& o) const {
    if (primary != o.primary) return primary < o.primary;
    if (arrival != o.arrival) return arrival < o.arrival;
    return rid < o.rid;
  }
};

}  // namespace trail
