// The scheduler core (see scheduler.h and docs/scheduler.md): config checks, the request
// sets, schedule() (memory pressure, then the fill in rank order with limited preemption),
// token and prediction updates. KV blocks are counted in one place, KvBudget (kv_budget.h).
#include "scheduler/scheduler.h"

#include <algorithm>
#include <cmath>

namespace trail {
namespace {

template <class T>
void require(bool ok, const char* field, T value, const char* rule) {
  if (!ok) throw ValueError(cat("SchedulerConfig.", field, "=", value, ": must be ", rule));
}

}  // namespace

void validate_config(const SchedulerConfig& cfg) {
  require(cfg.max_running >= 1 && cfg.max_running <= kMaxRunning, "max_running",
          cfg.max_running, "in [1, 2**20]");
  require(cfg.block_size >= 1 && cfg.block_size <= kMaxTokens, "block_size", cfg.block_size,
          "in [1, 2**40]");
  require(cfg.kv_capacity_tokens >= cfg.block_size && cfg.kv_capacity_tokens <= kMaxTokens,
          "kv_capacity_tokens", cfg.kv_capacity_tokens, "in [block_size, 2**40]");
  require(std::isfinite(cfg.c) && cfg.c >= 0.0, "c", cfg.c, "finite and >= 0");
  require(cfg.swap_capacity_tokens >= 0 && cfg.swap_capacity_tokens <= kMaxTokens,
          "swap_capacity_tokens", cfg.swap_capacity_tokens, "in [0, 2**40]");
  require(cfg.max_preemptions >= -1, "max_preemptions", cfg.max_preemptions, ">= -1");
  require(cfg.starvation_steps >= 0, "starvation_steps", cfg.starvation_steps, ">= 0");
  require(cfg.starvation_period >= 0, "starvation_period", cfg.starvation_period, ">= 0");
  require(std::isfinite(cfg.default_predicted_len) && cfg.default_predicted_len > 0.0,
          "default_predicted_len", cfg.default_predicted_len, "finite and > 0");
  require(cfg.mlfq_levels >= 1 && cfg.mlfq_levels <= kMaxMlfqLevels, "mlfq_levels",
          cfg.mlfq_levels, "in [1, 64]");
  require(cfg.mlfq_base_quantum >= 1 && cfg.mlfq_base_quantum <= kMaxTokens,
          "mlfq_base_quantum", cfg.mlfq_base_quantum, "in [1, 2**40]");
  require(std::isfinite(cfg.mlfq_prefill_ratio) && cfg.mlfq_prefill_ratio > 0.0,
          "mlfq_prefill_ratio", cfg.mlfq_prefill_ratio, "finite and > 0");
  require(std::isfinite(cfg.prefill_weight) && cfg.prefill_weight >= 0.0, "prefill_weight",
          cfg.prefill_weight, "finite and >= 0");
  require(std::isfinite(cfg.aging_rate) && cfg.aging_rate >= 0.0, "aging_rate", cfg.aging_rate,
          "finite and >= 0");
  require(std::isfinite(cfg.boost_gamma) && cfg.boost_gamma >= 0.0, "boost_gamma",
          cfg.boost_gamma, "finite and >= 0");
  require(std::isfinite(cfg.preempt_margin) && cfg.preempt_margin >= 0.0, "preempt_margin",
          cfg.preempt_margin, "finite and >= 0");
  require(std::isfinite(cfg.rebuild_cost) && cfg.rebuild_cost >= 0.0, "rebuild_cost",
          cfg.rebuild_cost, "finite and >= 0");
}

void check_request(int64_t rid, double arrival, int64_t prompt_len, int64_t max_new_tokens,
                   double predicted_len, double score) {
  if (!std::isfinite(arrival))
    throw ValueError(cat("request ", rid, ": arrival=", arrival, " must be finite"));
  if (prompt_len < 1)
    throw ValueError(cat("request ", rid, ": prompt_len=", prompt_len, " must be >= 1"));
  if (max_new_tokens < 1)
    throw ValueError(cat("request ", rid, ": max_new_tokens=", max_new_tokens, " must be >= 1"));
  if (!std::isnan(predicted_len) && !(std::isfinite(predicted_len) && predicted_len >= 0.0))
    throw ValueError(cat("request ", rid, ": predicted_len=", predicted_len,
                         " must be NaN (unknown) or finite and >= 0"));
  if (!std::isnan(score) && !std::isfinite(score))
    throw ValueError(cat("request ", rid, ": score=", score, " must be NaN or finite"));
}

void check_prediction(int64_t rid, double remaining) {
  if (!std::isfinite(remaining) || remaining < 0.0)
    throw ValueError(cat("update_predictions: request ", rid, ": remaining=", remaining,
                         " must be finite and >= 0"));
}

void check_score(int64_t rid, double score) {
  if (!std::isfinite(score))
    throw ValueError(cat("update_scores: request ", rid, ": score=", score, " must be finite"));
}

Scheduler::Scheduler(const SchedulerConfig& cfg) : cfg_(cfg) {
  validate_config(cfg);
  kv_ = KvBudget(cfg);
  running_.reserve(static_cast<size_t>(std::min<int64_t>(cfg.max_running, 1 << 16)));
}

// ---------------------------------------------------------------- lookups, sets

RankKey Scheduler::rank_key(uint32_t idx) const {
  const Request& r = table_[idx];
  return RankKey{primary_key(cfg_, r), r.arrival, r.rid, idx};
}

uint32_t Scheduler::lookup(int64_t rid) const {
  const int64_t idx = table_.find(rid);
  if (idx < 0) throw KeyError(cat("unknown request id ", rid));
  return static_cast<uint32_t>(idx);
}

int64_t Scheduler::find_row(int64_t rid, size_t row) const {
  // Callers usually pass rows in batch order: check that slot before hashing.
  if (row < running_.size() && table_[running_[row]].rid == rid) return running_[row];
  return table_.find(rid);
}

void Scheduler::check_now(double now) const {
  if (!std::isfinite(now)) throw ValueError(cat("now=", now, ": must be finite"));
  if (now < last_now_)
    throw ValueError(cat("now=", now, " goes backwards (last now was ", last_now_, ")"));
}

void Scheduler::file(uint32_t idx) {
  Request& r = table_[idx];
  r.key = primary_key(cfg_, r);
  const RankKey k{r.key, r.arrival, r.rid, idx};
  candidates_.insert(k);
  if (r.kv == KvLocation::DEVICE) kept_insert(idx);
  r.in_sets = true;
}

// Kept requests are filed under the same key as in candidates_ (r.key), so the entry can
// always be found again.
void Scheduler::kept_insert(uint32_t idx) {
  const Request& r = table_[idx];
  kept_.insert(RankKey{r.key, r.arrival, r.rid, idx});
}

void Scheduler::kept_erase(uint32_t idx) {
  const Request& r = table_[idx];
  kept_.erase(RankKey{r.key, r.arrival, r.rid, idx});
}

void Scheduler::unfile(uint32_t idx) {
  Request& r = table_[idx];
  const RankKey k{r.key, r.arrival, r.rid, idx};
  candidates_.erase(k);
  if (r.kv == KvLocation::DEVICE) kept_erase(idx);
  r.in_sets = false;
}

void Scheduler::rekey(uint32_t idx) {
  Request& r = table_[idx];
  if (!r.in_sets || primary_key(cfg_, r) == r.key) return;
  unfile(idx);
  file(idx);
}

// ---------------------------------------------------------------- public API

void Scheduler::add(int64_t rid, double arrival, int64_t prompt_len, int64_t max_new_tokens,
                    double predicted_len, double score) {
  if (table_.find(rid) >= 0) throw ValueError(cat("duplicate request id ", rid));
  check_request(rid, arrival, prompt_len, max_new_tokens, predicted_len, score);
  const int64_t cap_tokens = kv_.capacity * cfg_.block_size;
  if (max_new_tokens > cap_tokens || prompt_len > cap_tokens - max_new_tokens)
    throw ValueError(cat("request ", rid, ": prompt_len=", prompt_len, " + max_new_tokens=",
                         max_new_tokens, " can never fit in kv_capacity_tokens=",
                         cfg_.kv_capacity_tokens, " (block_size=", cfg_.block_size, ")"));
  if (table_.size() >= kMaxLive)
    throw ValueError(cat("request ", rid, ": too many live requests (the limit is 2**32 - 1)"));
  const uint32_t idx = table_.insert(
      new_request(cfg_, rid, arrival, prompt_len, max_new_tokens, predicted_len, score));
  if (arrival <= last_now_) {
    // Already arrived: the next schedule() (whose now >= last_now_) would release it anyway.
    table_[idx].present = true;
    file(idx);
  } else {
    pending_.emplace(arrival, rid);
  }
  ++counters_.added;
}

void Scheduler::release_arrivals(double now) {
  while (!pending_.empty() && pending_.begin()->first <= now) {
    const uint32_t idx = lookup(pending_.begin()->second);
    pending_.erase(pending_.begin());
    table_[idx].present = true;
    file(idx);
  }
}

void Scheduler::starvation_start() {
  std::vector<uint32_t> starved;
  for (const RankKey& k : candidates_) {
    const Request& r = table_[k.idx];
    if (r.promo_left == 0 && r.left_out >= cfg_.starvation_steps) starved.push_back(k.idx);
  }
  for (uint32_t idx : starved) {
    Request& r = table_[idx];
    unfile(idx);
    promote_starved(cfg_, r);
    file(idx);
  }
}

void Scheduler::starvation_end() {
  table_.for_each([this](uint32_t idx) {
    Request& r = table_[idx];
    if (!r.present) return;
    if (r.promo_left > 0) {
      if (--r.promo_left == 0) rekey(idx);
    } else if (r.state == RequestState::RUNNING) {
      r.left_out = 0;
    } else {
      ++r.left_out;
    }
  });
}

void Scheduler::move_off_device(uint32_t idx, Decision& d) {
  Request& r = table_[idx];
  const int64_t held = held_blocks(r);
  if (cfg_.preempt_mode != PreemptMode::RECOMPUTE &&
      kv_.swap_fits(held)) {
    r.kv = KvLocation::HOST;
    kv_.swap_used += held;
    ++counters_.swap_outs;
    d.swapped_out.push_back(r.rid);
  } else {
    r.kv = KvLocation::DROPPED;
    ++counters_.drops;
    d.dropped.push_back(r.rid);
  }
  r.touched = iteration_;
}

void Scheduler::evict_kept(uint32_t idx, Decision& d) {
  // A dropped request's key grows by its recompute (prefill_weight), but it is not re-filed
  // here: the fill walk holds an iterator into candidates_ that may point at it. It was
  // touched this iteration, so the walk skips it; schedule() re-files it after the walk.
  Request& r = table_[idx];
  kept_erase(idx);
  kv_.kept -= held_blocks(r);
  move_off_device(idx, d);
  evicted_.push_back(idx);
}

void Scheduler::drop_running(uint32_t idx) {
  // The caller changes the request's state, which marks its entry in running_ as a hole.
  ++running_holes_;
  kv_.running_next -= next_blocks(table_[idx]);
}

void Scheduler::compact_running() {
  if (running_holes_ == 0) return;
  size_t kept_rows = 0;
  for (uint32_t idx : running_)
    if (table_[idx].state == RequestState::RUNNING) running_[kept_rows++] = idx;
  running_.resize(kept_rows);
  running_holes_ = 0;
}

void Scheduler::preempt(uint32_t idx, bool for_rank, Decision& d) {
  Request& r = table_[idx];
  drop_running(idx);
  r.state = RequestState::PREEMPTED;
  ++r.preemptions;
  ++counters_.preemptions;
  d.preempted.push_back(r.rid);
  r.touched = iteration_;
  if (for_rank && cfg_.preempt_mode == PreemptMode::KEEP) {
    r.kv = KvLocation::DEVICE;
    kv_.kept += held_blocks(r);
  } else {
    move_off_device(idx, d);
  }
  file(idx);
}

void Scheduler::take(uint32_t idx, Decision& d) {
  Request& r = table_[idx];
  if (r.state == RequestState::WAITING) {
    d.admitted.push_back(r.rid);
  } else {
    d.resumed.push_back(r.rid);
    if (r.kv == KvLocation::DEVICE) {
      kv_.kept -= held_blocks(r);
    } else if (r.kv == KvLocation::HOST) {
      kv_.swap_used -= held_blocks(r);
      ++counters_.swap_ins;
      d.swapped_in.push_back(r.rid);
    } else {
      ++counters_.recomputes;
      d.recomputed.push_back(r.rid);
    }
  }
  r.state = RequestState::RUNNING;
  r.kv = KvLocation::DEVICE;
  running_.push_back(idx);
  kv_.running_next += next_blocks(r);
  while (kv_.over()) {
    if (kept_.empty()) throw std::logic_error("trail scheduler: fill admitted past capacity");
    evict_kept(worst_kept(), d);
  }
}

Decision Scheduler::schedule(double now) {
  check_now(now);
  last_now_ = now;
  ++iteration_;
  Decision d;
  d.iteration = iteration_;
  release_arrivals(now);
  const bool starvation = cfg_.starvation_steps > 0 && cfg_.policy != Policy::FCFS;
  if (starvation) starvation_start();

  kv_.running_next = 0;
  for (uint32_t idx : running_) kv_.running_next += next_blocks(table_[idx]);

  // 1. Memory pressure: kept KV goes first, then the worst-ranked running request (from a
  // heap built once, so preempting many costs O(batch log batch), not O(batch) each).
  std::vector<RankKey>& worst_running = victims_;
  worst_running.clear();
  while (kv_.over()) {
    if (!kept_.empty()) {
      evict_kept(worst_kept(), d);
      continue;
    }
    if (worst_running.empty()) {
      for (uint32_t idx : running_) worst_running.push_back(rank_key(idx));
      std::make_heap(worst_running.begin(), worst_running.end());
    }
    std::pop_heap(worst_running.begin(), worst_running.end());
    const uint32_t worst = worst_running.back().idx;
    worst_running.pop_back();
    preempt(worst, /*for_rank=*/false, d);
  }
  compact_running();

  // 2. Fill in rank order; stop at the first candidate that cannot run.
  const size_t max_running = static_cast<size_t>(cfg_.max_running);
  // Rank preemption's victims: a max-heap (worst on top) of the preemptible running
  // requests by net key (key - preempt_cost), built at the first candidate that does not
  // fit and consumed along the walk. It stays valid because candidates come in rank order:
  // the threshold (candidate key + margin) only rises, and a request taken during the walk
  // has a net key at or below its key, itself at or below the threshold, so it can never be
  // a victim of a later candidate. The requests present (running + filed) do not change
  // during the walk: a taken or preempted request only moves between the two.
  std::vector<RankKey>& victims = victims_;
  victims.clear();
  bool victims_built = false;
  const bool charge = cfg_.preempt_mode != PreemptMode::KEEP;
  const int64_t present = static_cast<int64_t>(candidates_.size() + running_.size());
  // kv_aware: the KV the batch is predicted to reach (running: projected, kept: held).
  int64_t projected = 0;
  if (cfg_.kv_aware)
    for (uint32_t idx : running_) projected += projected_blocks(table_[idx]);
  const bool keep_victims = cfg_.preempt_mode == PreemptMode::KEEP;
  auto projected_fits = [&](const Request& x, bool x_kept, int64_t freed, size_t left) {
    if (!cfg_.kv_aware || left == 0) return true;  // an empty batch always takes one
    const int64_t total = projected - freed + kv_.kept - (x_kept ? held_blocks(x) : 0) +
                          projected_blocks(x);
    return total <= kv_.capacity;
  };
  auto it = candidates_.begin();
  while (it != candidates_.end()) {
    const uint32_t xi = it->idx;
    Request& x = table_[xi];
    if (x.touched == iteration_) {
      ++it;
      continue;
    }
    const bool x_kept = x.kv == KvLocation::DEVICE;
    const int64_t need = next_blocks(x) - (x_kept ? held_blocks(x) : 0);
    const int64_t free_blocks = kv_.free();
    const int64_t evictable = kv_.kept - (x_kept ? held_blocks(x) : 0);
    if (!(batch_size() < max_running && need <= free_blocks + evictable &&
          projected_fits(x, x_kept, 0, batch_size()))) {
      if (!preempts_for_rank(cfg_.policy)) break;
      const double threshold = x.key + cfg_.preempt_margin;
      if (!victims_built) {
        for (uint32_t ri : running_) {
          const Request& v = table_[ri];
          if (!preemptible_for_rank(cfg_, v)) continue;
          const double cost = charge ? preempt_cost(cfg_, v, present) : 0.0;
          const double vp = primary_key(cfg_, v) - cost;
          if (vp > threshold) victims.push_back(RankKey{vp, v.arrival, v.rid, ri});
        }
        std::make_heap(victims.begin(), victims.end());
        victims_built = true;
      }
      // Pop the worst while it ranks below the threshold, until x fits.
      size_t slots = batch_size();
      int64_t avail = free_blocks + evictable, freed = 0;
      bool enough = false;
      auto end = victims.end();
      while (end != victims.begin() && !enough && victims.front().primary > threshold) {
        std::pop_heap(victims.begin(), end);
        --end;
        --slots;
        const Request& v = table_[end->idx];
        avail += next_blocks(v);
        // kv_aware: a victim's predicted growth goes; its KV stays if it is kept
        if (cfg_.kv_aware) freed += projected_blocks(v) - (keep_victims ? held_blocks(v) : 0);
        enough = slots < max_running && need <= avail && projected_fits(x, x_kept, freed, slots);
      }
      if (!enough) break;  // the walk ends here, so the heap's state no longer matters
      // pop_heap parks each popped victim at the back, the worst last: preempt worst first.
      for (auto v = victims.end(); v != end;) {
        const uint32_t vi = (--v)->idx;
        if (cfg_.kv_aware) projected -= projected_blocks(table_[vi]);
        preempt(vi, /*for_rank=*/true, d);
      }
      victims.erase(end, victims.end());
    }
    if (x_kept) kept_erase(xi);
    it = candidates_.erase(it);
    x.in_sets = false;
    take(xi, d);
    if (cfg_.kv_aware) projected += projected_blocks(x);
  }
  for (uint32_t idx : evicted_) rekey(idx);
  evicted_.clear();
  compact_running();

  if (starvation) starvation_end();
  d.running.reserve(running_.size());
  for (uint32_t idx : running_) d.running.push_back(table_[idx].rid);
  return d;
}

void Scheduler::on_step(double now, const int64_t* rids, const int64_t* new_tokens,
                        const uint8_t* finished, size_t n) {
  check_now(now);
  ++stamp_;
  for (size_t i = 0; i < n; ++i) {  // validate everything before changing anything
    const int64_t found = find_row(rids[i], i);
    if (found < 0) throw ValueError(cat("on_step: request ", rids[i], " is not running (unknown id)"));
    Request& r = table_[static_cast<uint32_t>(found)];
    if (r.state != RequestState::RUNNING)
      throw ValueError(cat("on_step: request ", rids[i], " is not running"));
    if (r.stamp == stamp_) throw ValueError(cat("on_step: request ", rids[i], " repeats"));
    r.stamp = stamp_;
    if (new_tokens[i] < 0 || new_tokens[i] > r.max_new - r.generated)
      throw ValueError(cat("on_step: request ", rids[i], ": new_tokens=", new_tokens[i],
                           " must be in [0, ", r.max_new - r.generated, "]"));
  }
  last_now_ = now;
  bool any_done = false;
  for (size_t i = 0; i < n; ++i) {
    const uint32_t idx = static_cast<uint32_t>(find_row(rids[i], i));
    Request& r = table_[idx];
    advance_tokens(cfg_, r, new_tokens[i]);
    if (finished[i] || r.generated == r.max_new) {
      r.stamp = -1;  // marks it for removal below
      any_done = true;
    }
  }
  if (!any_done) return;
  size_t kept_rows = 0;
  for (uint32_t idx : running_) {
    if (table_[idx].stamp == -1) {
      table_.erase(idx);
      ++counters_.finished;
    } else {
      running_[kept_rows++] = idx;
    }
  }
  running_.resize(kept_rows);
}

void Scheduler::update_predictions(const int64_t* rids, const double* remaining, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (find_row(rids[i], i) < 0) throw KeyError(cat("unknown request id ", rids[i]));
    check_prediction(rids[i], remaining[i]);
  }
  for (size_t i = 0; i < n; ++i) {
    const uint32_t idx = static_cast<uint32_t>(find_row(rids[i], i));
    apply_prediction(table_[idx], remaining[i]);
    Request& r = table_[idx];
    if (r.in_sets) rekey(idx);
  }
}

void Scheduler::update_scores(const int64_t* rids, const double* scores, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    lookup(rids[i]);
    check_score(rids[i], scores[i]);
  }
  for (size_t i = 0; i < n; ++i) {
    const uint32_t idx = lookup(rids[i]);
    table_[idx].score = scores[i];
    if (table_[idx].in_sets) rekey(idx);
  }
}

void Scheduler::set_prefill_weight(double prefill_weight) {
  if (!std::isfinite(prefill_weight) || prefill_weight < 0.0)
    throw ValueError(cat("SchedulerConfig.prefill_weight=", prefill_weight,
                         ": must be finite and >= 0"));
  if (prefill_weight == cfg_.prefill_weight) return;
  cfg_.prefill_weight = prefill_weight;
  std::vector<uint32_t> filed;
  for (const RankKey& k : candidates_) filed.push_back(k.idx);
  for (uint32_t idx : filed) rekey(idx);
}

void Scheduler::set_preempt_margin(double preempt_margin) {
  if (!std::isfinite(preempt_margin) || preempt_margin < 0.0)
    throw ValueError(cat("SchedulerConfig.preempt_margin=", preempt_margin,
                         ": must be finite and >= 0"));
  cfg_.preempt_margin = preempt_margin;
}

void Scheduler::abort(int64_t rid) {
  const uint32_t idx = lookup(rid);
  Request& r = table_[idx];
  if (r.state == RequestState::RUNNING) {
    drop_running(idx);
    r.state = RequestState::PREEMPTED;  // marks the hole
    compact_running();
  } else if (r.in_sets) {
    unfile(idx);
    if (r.kv == KvLocation::DEVICE) kv_.kept -= held_blocks(r);
    if (r.kv == KvLocation::HOST) kv_.swap_used -= held_blocks(r);
  } else {
    pending_.erase({r.arrival, r.rid});
  }
  table_.erase(idx);
  ++counters_.aborted;
}

RequestView Scheduler::get(int64_t rid) const { return view_of(table_[lookup(rid)]); }

int64_t Scheduler::kv_reserved_blocks() const {
  int64_t reserved = kv_.kept;
  for (uint32_t idx : running_) reserved += next_blocks(table_[idx]);
  return reserved;
}

Stats Scheduler::stats() const {
  Stats s = counters_;
  s.iterations = iteration_;
  s.live = static_cast<int64_t>(table_.size());
  s.kv_capacity_blocks = kv_.capacity;
  s.swap_capacity_blocks = kv_.swap_capacity;
  s.swap_used_blocks = kv_.swap_used;
  s.kv_reserved_blocks = kv_reserved_blocks();
  table_.for_each([&](uint32_t idx) {
    const Request& r = table_[idx];
    switch (r.state) {
      case RequestState::WAITING: ++s.waiting; break;
      case RequestState::RUNNING: ++s.running; break;
      case RequestState::PREEMPTED:
        ++s.preempted;
        if (r.kv == KvLocation::DEVICE) ++s.kept;
        if (r.kv == KvLocation::HOST) ++s.swapped;
        if (r.kv == KvLocation::DROPPED) ++s.dropped;
        break;
    }
  });
  return s;
}

}  // namespace trail
