// The rank rule for engines that keep their own memory (see ranker.h).
#include "scheduler/ranker.h"

#include <algorithm>
#include <cmath>

#include "scheduler/scheduler.h"

namespace trail {

Ranker::Ranker(const SchedulerConfig& cfg) : cfg_(cfg) { validate_config(cfg); }

uint32_t Ranker::lookup(int64_t rid) const {
  const int64_t idx = table_.find(rid);
  if (idx < 0) throw KeyError(cat("unknown request id ", rid));
  return static_cast<uint32_t>(idx);
}

void Ranker::add(int64_t rid, double arrival, int64_t prompt_len, int64_t max_new_tokens,
                 double predicted_len, double score) {
  if (table_.find(rid) >= 0) throw ValueError(cat("duplicate request id ", rid));
  check_request(rid, arrival, prompt_len, max_new_tokens, predicted_len, score);
  if (prompt_len > kMaxTokens || max_new_tokens > kMaxTokens - prompt_len)
    throw ValueError(cat("request ", rid, ": prompt_len=", prompt_len, " + max_new_tokens=",
                         max_new_tokens, " must be <= 2**40"));
  if (table_.size() >= kMaxLive)
    throw ValueError(cat("request ", rid, ": too many live requests (the limit is 2**32 - 1)"));
  Request r = new_request(cfg_, rid, arrival, prompt_len, max_new_tokens, predicted_len, score);
  r.present = true;  // no arrival clock here: the host adds a request when it arrives
  table_.insert(r);
}

void Ranker::remove(int64_t rid) { table_.erase(lookup(rid)); }

void Ranker::set_running(const int64_t* rids, size_t n) {
  for (size_t i = 0; i < n; ++i) lookup(rids[i]);  // all or nothing
  for (size_t i = 0; i < n; ++i) {
    Request& r = table_[lookup(rids[i])];
    r.state = RequestState::RUNNING;
    r.kv = KvLocation::DEVICE;
  }
}

void Ranker::set_preempted(int64_t rid) {
  Request& r = table_[lookup(rid)];
  if (r.state != RequestState::RUNNING)
    throw ValueError(cat("set_preempted: request ", rid, " is not running"));
  r.state = RequestState::PREEMPTED;
  r.kv = KvLocation::DROPPED;
  ++r.preemptions;
}

void Ranker::on_tokens(const int64_t* rids, const int64_t* new_tokens, size_t n) {
  ++stamp_;
  for (size_t i = 0; i < n; ++i) {  // validate everything before changing anything
    Request& r = table_[lookup(rids[i])];
    if (r.stamp == stamp_) throw ValueError(cat("on_tokens: request ", rids[i], " repeats"));
    r.stamp = stamp_;
    if (new_tokens[i] < 0 || new_tokens[i] > r.max_new - r.generated)
      throw ValueError(cat("on_tokens: request ", rids[i], ": new_tokens=", new_tokens[i],
                           " must be in [0, ", r.max_new - r.generated, "]"));
  }
  for (size_t i = 0; i < n; ++i) advance_tokens(cfg_, table_[lookup(rids[i])], new_tokens[i]);
}

void Ranker::update_predictions(const int64_t* rids, const double* remaining, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    lookup(rids[i]);
    check_prediction(rids[i], remaining[i]);
  }
  for (size_t i = 0; i < n; ++i) apply_prediction(table_[lookup(rids[i])], remaining[i]);
}

void Ranker::update_scores(const int64_t* rids, const double* scores, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    lookup(rids[i]);
    check_score(rids[i], scores[i]);
  }
  for (size_t i = 0; i < n; ++i) table_[lookup(rids[i])].score = scores[i];
}

void Ranker::set_prefill_weight(double prefill_weight) {
  SchedulerConfig next = cfg_;
  next.prefill_weight = prefill_weight;
  validate_config(next);
  cfg_ = next;
}

void Ranker::set_aging_rate(double aging_rate) {
  SchedulerConfig next = cfg_;
  next.aging_rate = aging_rate;
  validate_config(next);
  cfg_ = next;
}

void Ranker::begin_step() {
  if (!starvation()) return;
  table_.for_each([this](uint32_t idx) {
    Request& r = table_[idx];
    if (r.state == RequestState::RUNNING || r.promo_left > 0 ||
        r.left_out < cfg_.starvation_steps)
      return;
    promote_starved(cfg_, r);
  });
}

void Ranker::end_step() {
  if (!starvation()) return;
  table_.for_each([this](uint32_t idx) {
    Request& r = table_[idx];
    if (r.promo_left > 0) {
      --r.promo_left;
    } else if (r.state == RequestState::RUNNING) {
      r.left_out = 0;
    } else {
      ++r.left_out;
    }
  });
}

void Ranker::keys(const int64_t* rids, size_t n, double* out) const {
  for (size_t i = 0; i < n; ++i) lookup(rids[i]);
  for (size_t i = 0; i < n; ++i) out[i] = primary_key(cfg_, table_[lookup(rids[i])]);
}

void Ranker::preemptible(const int64_t* rids, size_t n, uint8_t* out) const {
  for (size_t i = 0; i < n; ++i) lookup(rids[i]);
  for (size_t i = 0; i < n; ++i) {
    const Request& r = table_[lookup(rids[i])];
    // A promoted request runs first and is not preempted for rank (docs/scheduler.md).
    out[i] = r.promo_left == 0 && preemptible_for_rank(cfg_, r);
  }
}

void Ranker::preempt_keys(const int64_t* rids, size_t n, double* out) const {
  for (size_t i = 0; i < n; ++i) lookup(rids[i]);
  const int64_t present = static_cast<int64_t>(table_.size());
  for (size_t i = 0; i < n; ++i) {
    const Request& r = table_[lookup(rids[i])];
    const double cost = preempt_cost(cfg_, r, present);
    out[i] = primary_key(cfg_, r) - cost;
  }
}

std::vector<int64_t> Ranker::order(const int64_t* rids, size_t n) const {
  std::vector<RankKey> ks;
  ks.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t idx = lookup(rids[i]);
    const Request& r = table_[idx];
    ks.push_back(RankKey{primary_key(cfg_, r), r.arrival, r.rid, idx});
  }
  std::sort(ks.begin(), ks.end());
  std::vector<int64_t> out;
  out.reserve(n);
  for (const RankKey& k : ks) out.push_back(k.rid);
  return out;
}

RequestView Ranker::get(int64_t rid) const { return view_of(table_[lookup(rid)]); }

}  // namespace trail
