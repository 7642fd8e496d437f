// The scheduler's rank rule without its memory model, for engines that keep their own
// (vLLM): requests are ranked by exactly the keys and preemptibility of policy.h, and the
// host engine reports who runs, who was preempted and how many tokens each generated.
// docs/scheduler.md ("Ranker") is the spec; trail.sched_ref.Ranker is the Python twin.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "scheduler/policy.h"
#include "scheduler/request.h"
#include "scheduler/types.h"

namespace trail {

class Ranker {
 public:
  explicit Ranker(const SchedulerConfig& cfg);

  void add(int64_t rid, double arrival, int64_t prompt_len, int64_t max_new_tokens,
           double predicted_len, double score);
  void remove(int64_t rid);  // finished or aborted: forget it (KeyError if unknown)
  // These requests now run (their KV is on the device); every rid must be live.
  void set_running(const int64_t* rids, size_t n);
  // The host engine preempted this running request and freed its KV (it will recompute).
  void set_preempted(int64_t rid);
  void on_tokens(const int64_t* rids, const int64_t* new_tokens, size_t n);
  void update_predictions(const int64_t* rids, const double* remaining, size_t n);
  void update_scores(const int64_t* rids, const double* scores, size_t n);
  void set_prefill_weight(double prefill_weight);
  // The tail's aging_rate (tokens per second), for a host that measures its decode speed.
  void set_aging_rate(double aging_rate);
  // Starvation guard around one scheduling step: promote at the start, count after.
  void begin_step();
  void end_step();

  void keys(const int64_t* rids, size_t n, double* out) const;
  void preemptible(const int64_t* rids, size_t n, uint8_t* out) const;
  // Net keys of running requests: key - preempt_cost (policy.h) with every live request
  // present; a waiting request w may preempt one whose net key > w's key + preempt_margin.
  void preempt_keys(const int64_t* rids, size_t n, double* out) const;
  // The rids sorted by the total order (primary, arrival, rid): best first.
  std::vector<int64_t> order(const int64_t* rids, size_t n) const;

  RequestView get(int64_t rid) const;
  size_t size() const { return table_.size(); }
  bool contains(int64_t rid) const { return table_.find(rid) >= 0; }
  const SchedulerConfig& config() const { return cfg_; }

 private:
  uint32_t lookup(int64_t rid) const;  // KeyError if not live
  bool starvation() const { return cfg_.starvation_steps > 0 && cfg_.policy != Policy::FCFS; }

  SchedulerConfig cfg_;
  RequestTable table_;
  int64_t stamp_ = 0;
};

}  // namespace trail
