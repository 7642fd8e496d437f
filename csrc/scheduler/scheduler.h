// The TRAIL scheduler core: who is admitted, who keeps decoding, who is preempted.
// Semantics are specified in docs/scheduler.md; trail.sched_ref is the Python twin.
#pragma once

#include <algorithm>
#include <cmath>

#include <cstddef>
#include <cstdint>
#include <set>
#include <vector>

#include "scheduler/policy.h"
#include "scheduler/kv_budget.h"
#include "scheduler/request.h"
#include "scheduler/types.h"

namespace trail {

// ValueError naming the first field outside its range (docs/scheduler.md, Limits).
void validate_config(const SchedulerConfig& cfg);
// ValueError for a request field out of range (all of add()'s checks but the fit in memory).
void check_request(int64_t rid, double arrival, int64_t prompt_len, int64_t max_new_tokens,
                   double predicted_len, double score);

// ValueError for a prediction that is not finite and >= 0, or a score that is not finite.
void check_prediction(int64_t rid, double remaining);
void check_score(int64_t rid, double score);

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& cfg);

  void add(int64_t rid, double arrival, int64_t prompt_len, int64_t max_new_tokens,
           double predicted_len, double score);
  Decision schedule(double now);
  void on_step(double now, const int64_t* rids, const int64_t* new_tokens,
               const uint8_t* finished, size_t n);
  void update_predictions(const int64_t* rids, const double* remaining, size_t n);
  void update_scores(const int64_t* rids, const double* scores, size_t n);
  void abort(int64_t rid);
  // Change β (prefill_weight) of a live scheduler, e.g. as the engine learns its step costs;
  // every filed request is re-ranked, so the result is that of a scheduler built with it.
  void set_prefill_weight(double prefill_weight);
  // Change preempt_margin of a live scheduler, e.g. as a server measures its predictors'
  // errors (trail.policies.PredictionErrors); keys do not depend on it, so nothing re-ranks.
  void set_preempt_margin(double preempt_margin);

  RequestView get(int64_t rid) const;
  Stats stats() const;
  // Device blocks reserved now: kept KV plus every running request through its next token,
  // what an engine's pool holds once it has allocated the batch (O(batch), for a check
  // every step).
  int64_t kv_reserved_blocks() const;
  size_t size() const { return table_.size(); }
  bool contains(int64_t rid) const { return table_.find(rid) >= 0; }
  const SchedulerConfig& config() const { return cfg_; }

 private:
  int64_t blocks(int64_t tokens) const { return kv_.blocks(tokens); }
  int64_t next_blocks(const Request& r) const { return blocks(r.tokens() + 1); }
  int64_t held_blocks(const Request& r) const { return blocks(r.tokens()); }
  // KV a request is predicted to reach: its tokens plus predicted remaining (kv_aware).
  int64_t projected_blocks(const Request& r) const {
    const int64_t grown = blocks(r.tokens() + static_cast<int64_t>(std::ceil(r.remaining)));
    return std::max(next_blocks(r), grown);
  }
  RankKey rank_key(uint32_t idx) const;

  uint32_t lookup(int64_t rid) const;          // KeyError if not live
  int64_t find_row(int64_t rid, size_t row) const;  // slot of a live rid, or -1
  void check_now(double now) const;

  // Ordered sets of non-running present requests (candidates) and of kept ones.
  void file(uint32_t idx);
  void unfile(uint32_t idx);
  void rekey(uint32_t idx);
  void kept_insert(uint32_t idx);
  void kept_erase(uint32_t idx);
  uint32_t worst_kept() const { return std::prev(kept_.end())->idx; }

  void release_arrivals(double now);
  void starvation_start();
  void starvation_end();
  void evict_kept(uint32_t idx, Decision& d);
  void move_off_device(uint32_t idx, Decision& d);
  void preempt(uint32_t idx, bool for_rank, Decision& d);
  void take(uint32_t idx, Decision& d);
  void drop_running(uint32_t idx);  // leaves a hole in running_ (compact_running fills it)
  void compact_running();
  size_t batch_size() const { return running_.size() - running_holes_; }
  void remove(uint32_t idx);

  SchedulerConfig cfg_;
  KvBudget kv_;
  RequestTable table_;
  std::set<RankKey> candidates_;  // present, not running (waiting or preempted)
  // Preempted requests whose KV stays on the device, in rank order (the worst goes first
  // under memory pressure).
  std::set<RankKey> kept_;
  std::set<std::pair<double, int64_t>> pending_;  // not yet arrived: (arrival, rid)
  std::vector<uint32_t> running_;                 // the batch, in batch order
  // Entries of running_ preempted during this schedule(): removed in one stable pass, so
  // many preemptions in one call cost O(batch), not O(batch) each.
  size_t running_holes_ = 0;
  std::vector<RankKey> victims_;  // heap (worst on top) of the running, built once per walk
  std::vector<uint32_t> evicted_;  // kept requests moved off the device, to re-file
  int64_t iteration_ = 0, stamp_ = 0;
  double last_now_ = -std::numeric_limits<double>::infinity();
  Stats counters_;  // only the event counters are kept here; current counts are computed
};

}  // namespace trail
