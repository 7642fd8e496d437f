// The request table: a slab of request records plus a rid -> slot index.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "scheduler/types.h"

namespace trail {

struct Request {
  int64_t rid = 0;
  double arrival = 0.0;
  int64_t prompt_len = 0, max_new = 0, generated = 0;
  double predicted_len = 0.0;  // first known prediction of the total output length
  bool pred_known = false;
  double remaining = 0.0;      // predicted remaining output tokens
  double score = 0.0;          // LTR score, NaN = unscored
  RequestState state = RequestState::WAITING;
  KvLocation kv = KvLocation::NONE;
  bool present = false;        // arrived and visible to schedule()
  int64_t preemptions = 0;
  int64_t level = 0, level_used = 0;      // MLFQ
  int64_t left_out = 0, promo_left = 0;   // starvation counters
  int64_t touched = 0;         // schedule() call in which its KV last moved
  int64_t stamp = 0;           // duplicate detection inside one batch call
  double key = 0.0;            // primary key it is filed under in the ordered sets
  bool in_sets = false;

  int64_t tokens() const { return prompt_len + generated; }
};

class RequestTable {
 public:
  uint32_t insert(const Request& r) {
    uint32_t idx;
    if (!free_.empty()) {
      idx = free_.back();
      free_.pop_back();
      slab_[idx] = r;
    } else {
      idx = static_cast<uint32_t>(slab_.size());
      slab_.push_back(r);
    }
    index_.emplace(r.rid, idx);
    return idx;
  }
  void erase(uint32_t idx) {
    index_.erase(slab_[idx].rid);
    free_.push_back(idx);
  }
  // Slot of a live rid, or -1.
  int64_t find(int64_t rid) const {
    auto it = index_.find(rid);
    return it == index_.end() ? -1 : static_cast<int64_t>(it->second);
  }
  Request& operator[](uint32_t idx) { return slab_[idx]; }
  const Request& operator[](uint32_t idx) const { return slab_[idx]; }
  size_t size() const { return index_.size(); }
  template <class F>
  void for_each(F&& f) const {
    for (const auto& kv : index_) f(kv.second);
  }
  void reserve(size_t n) { index_.reserve(n); }

 private:
  std::vector<Request> slab_;
  std::vector<uint32_t> free_;
  std::unordered_map<int64_t, uint32_t> index_;
};

}  // namespace trail
