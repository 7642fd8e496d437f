// Bindings of the scheduler core: enums, SchedulerConfig (defaults taken from the C++
// struct, so they are spelled once, in scheduler/types.h), Decision, RequestView,
// Scheduler and Ranker.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "convert.h"
#include "scheduler/ranker.h"
#include "scheduler/scheduler.h"

namespace py = pybind11;
using namespace trail;
using namespace trail::bind;

namespace {

// One SchedulerConfig field from Python, converted with a TypeError naming it.
template <class T>
T config_value(py::handle obj, const std::string& what) {
  if constexpr (std::is_same_v<T, int64_t>) return as_int(obj, what.c_str());
  else if constexpr (std::is_same_v<T, double>) return as_real(obj, what.c_str());
  else if constexpr (std::is_same_v<T, bool>) return as_flag(obj, what.c_str());
  else if constexpr (std::is_same_v<T, Policy>) return as_enum<Policy>(obj, what.c_str(), "Policy");
  else return as_enum<PreemptMode>(obj, what.c_str(), "PreemptMode");
}

// A read-write property whose setter converts (and rejects) like the constructor.
template <class T>
void config_field(py::class_<SchedulerConfig>& cls, const char* name, T SchedulerConfig::*m) {
  const std::string what = cat("SchedulerConfig.", name);
  cls.def_property(
      name, [m](const SchedulerConfig& c) { return c.*m; },
      [m, what](SchedulerConfig& c, py::handle v) { c.*m = config_value<T>(v, what); });
}

const char* name_of(RequestState s) {
  switch (s) {
    case RequestState::WAITING: return "WAITING";
    case RequestState::RUNNING: return "RUNNING";
    case RequestState::PREEMPTED: return "PREEMPTED";
  }
  return "?";
}

// What Scheduler and Ranker share: construction from a SchedulerConfig, the config, add,
// predictions, scores, β, get, len and `in`; bound once for both.
template <class T>
void bind_shared(py::class_<T>& cls, const char* add_doc, const char* config_doc) {
  cls.def(py::init([](py::handle config) {
           if (!py::isinstance<SchedulerConfig>(config))
             throw TypeError(cat("config must be a SchedulerConfig, got ",
                                 std::string(py::str(py::repr(config)))));
           return std::make_unique<T>(py::cast<const SchedulerConfig&>(config));
         }),
         py::arg("config"))
      // A copy: writing to it must not change what was validated and is held.
      .def_property_readonly(
          "config", [](const T& s) { return SchedulerConfig(s.config()); }, config_doc)
      .def(
          "add",
          [](T& s, py::handle rid, py::handle arrival, py::handle prompt_len,
             py::handle max_new_tokens, py::handle predicted_len, py::handle score) {
            s.add(as_int(rid, "rid"), as_real(arrival, "arrival"),
                  as_int(prompt_len, "prompt_len"), as_int(max_new_tokens, "max_new_tokens"),
                  as_real(predicted_len, "predicted_len"), as_real(score, "score"));
          },
          py::arg("rid"), py::arg("arrival"), py::arg("prompt_len"), py::arg("max_new_tokens"),
          py::arg("predicted_len") = NAN, py::arg("score") = NAN, add_doc)
      .def(
          "update_predictions",
          [](T& s, py::handle rids, py::handle remaining) {
            auto [r, v] = rids_with<F64, real_array>(rids, remaining, "remaining",
                                                     "update_predictions");
            s.update_predictions(r.data(), v.data(), static_cast<size_t>(r.size()));
          },
          py::arg("rids"), py::arg("remaining"),
          "Set predicted remaining output tokens of live requests.")
      .def(
          "update_scores",
          [](T& s, py::handle rids, py::handle scores) {
            auto [r, v] = rids_with<F64, real_array>(rids, scores, "scores", "update_scores");
            s.update_scores(r.data(), v.data(), static_cast<size_t>(r.size()));
          },
          py::arg("rids"), py::arg("scores"), "Set LTR scores (lower runs first).")
      .def(
          "set_prefill_weight",
          [](T& s, py::handle w) { s.set_prefill_weight(as_real(w, "prefill_weight")); },
          py::arg("prefill_weight"),
          "Change prefill_weight (β) of a live instance; every rank uses it from now on.")
      .def(
          "get", [](const T& s, py::handle rid) { return s.get(as_int(rid, "rid")); },
          py::arg("rid"), "Snapshot of one live request.")
      .def("__len__", &T::size)
      .def("__contains__", [](const T& s, py::handle rid) {
        if (PyBool_Check(rid.ptr()) || !PyIndex_Check(rid.ptr())) return false;
        int overflow = 0;
        py::object idx = py::reinterpret_steal<py::object>(PyNumber_Index(rid.ptr()));
        const long long v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
        return !overflow && s.contains(v);
      });
}

}  // namespace

namespace trail::bind {

void bind_scheduler(py::module_& m) {
  py::enum_<Policy>(m, "Policy", "Scheduling policy; each is a rank function (lower runs first).")
      .value("FCFS", Policy::FCFS)
      .value("SJF", Policy::SJF)
      .value("SRPT", Policy::SRPT)
      .value("TRAIL", Policy::TRAIL)
      .value("LTR", Policy::LTR)
      .value("MLFQ", Policy::MLFQ);
  py::enum_<PreemptMode>(m, "PreemptMode", "What happens to a rank-preempted request's KV.")
      .value("KEEP", PreemptMode::KEEP)
      .value("SWAP", PreemptMode::SWAP)
      .value("RECOMPUTE", PreemptMode::RECOMPUTE);
  py::enum_<RequestState>(m, "RequestState", "Lifecycle state of a live request.")
      .value("WAITING", RequestState::WAITING)
      .value("RUNNING", RequestState::RUNNING)
      .value("PREEMPTED", RequestState::PREEMPTED);
  py::enum_<KvLocation>(m, "KvLocation", "Where a request's KV cache lives.")
      .value("NONE", KvLocation::NONE)
      .value("DEVICE", KvLocation::DEVICE)
      .value("HOST", KvLocation::HOST)
      .value("DROPPED", KvLocation::DROPPED);

  // Fields arrive as Python objects and are converted here, so that a wrong type raises a
  // TypeError naming the field (pybind's own casters would raise a generic "incompatible
  // arguments" error, and accept a bool as an int); values are checked by Scheduler(config).
  const SchedulerConfig d{};  // the defaults, as types.h spells them
  py::class_<SchedulerConfig> config(m, "SchedulerConfig",
                                     "Scheduler settings (docs/scheduler.md).");
  config.def(
      py::init([](py::handle policy, py::handle max_running, py::handle kv_capacity_tokens,
                  py::handle block_size, py::handle c, py::handle preempt_mode,
                  py::handle swap_capacity_tokens, py::handle max_preemptions,
                  py::handle starvation_steps, py::handle starvation_period,
                  py::handle default_predicted_len, py::handle mlfq_levels,
                  py::handle mlfq_base_quantum, py::handle mlfq_prefill_ratio,
                  py::handle prefill_weight, py::handle aging_rate, py::handle preempt_margin,
                  py::handle kv_aware, py::handle boost_gamma, py::handle rebuild_cost) {
        SchedulerConfig cfg;
        auto set = [&cfg](auto SchedulerConfig::*m, py::handle v, const char* name) {
          using T = std::remove_reference_t<decltype(cfg.*m)>;
          cfg.*m = config_value<T>(v, cat("SchedulerConfig.", name));
        };
        set(&SchedulerConfig::policy, policy, "policy");
        set(&SchedulerConfig::max_running, max_running, "max_running");
        set(&SchedulerConfig::kv_capacity_tokens, kv_capacity_tokens, "kv_capacity_tokens");
        set(&SchedulerConfig::block_size, block_size, "block_size");
        set(&SchedulerConfig::c, c, "c");
        set(&SchedulerConfig::preempt_mode, preempt_mode, "preempt_mode");
        set(&SchedulerConfig::swap_capacity_tokens, swap_capacity_tokens,
            "swap_capacity_tokens");
        set(&SchedulerConfig::max_preemptions, max_preemptions, "max_preemptions");
        set(&SchedulerConfig::starvation_steps, starvation_steps, "starvation_steps");
        set(&SchedulerConfig::starvation_period, starvation_period, "starvation_period");
        set(&SchedulerConfig::default_predicted_len, default_predicted_len,
            "default_predicted_len");
        set(&SchedulerConfig::mlfq_levels, mlfq_levels, "mlfq_levels");
        set(&SchedulerConfig::mlfq_base_quantum, mlfq_base_quantum, "mlfq_base_quantum");
        set(&SchedulerConfig::mlfq_prefill_ratio, mlfq_prefill_ratio, "mlfq_prefill_ratio");
        set(&SchedulerConfig::prefill_weight, prefill_weight, "prefill_weight");
        set(&SchedulerConfig::aging_rate, aging_rate, "aging_rate");
        set(&SchedulerConfig::preempt_margin, preempt_margin, "preempt_margin");
        set(&SchedulerConfig::kv_aware, kv_aware, "kv_aware");
        set(&SchedulerConfig::boost_gamma, boost_gamma, "boost_gamma");
        set(&SchedulerConfig::rebuild_cost, rebuild_cost, "rebuild_cost");
        return cfg;
      }),
      py::kw_only(), py::arg("policy") = d.policy, py::arg("max_running") = d.max_running,
      py::arg("kv_capacity_tokens") = d.kv_capacity_tokens, py::arg("block_size") = d.block_size,
      py::arg("c") = d.c, py::arg("preempt_mode") = d.preempt_mode,
      py::arg("swap_capacity_tokens") = d.swap_capacity_tokens,
      py::arg("max_preemptions") = d.max_preemptions,
      py::arg("starvation_steps") = d.starvation_steps,
      py::arg("starvation_period") = d.starvation_period,
      py::arg("default_predicted_len") = d.default_predicted_len,
      py::arg("mlfq_levels") = d.mlfq_levels, py::arg("mlfq_base_quantum") = d.mlfq_base_quantum,
      py::arg("mlfq_prefill_ratio") = d.mlfq_prefill_ratio,
      py::arg("prefill_weight") = d.prefill_weight, py::arg("aging_rate") = d.aging_rate,
      py::arg("preempt_margin") = d.preempt_margin, py::arg("kv_aware") = d.kv_aware,
      py::arg("boost_gamma") = d.boost_gamma, py::arg("rebuild_cost") = d.rebuild_cost);
  config_field(config, "policy", &SchedulerConfig::policy);
  config_field(config, "max_running", &SchedulerConfig::max_running);
  config_field(config, "kv_capacity_tokens", &SchedulerConfig::kv_capacity_tokens);
  config_field(config, "block_size", &SchedulerConfig::block_size);
  config_field(config, "c", &SchedulerConfig::c);
  config_field(config, "preempt_mode", &SchedulerConfig::preempt_mode);
  config_field(config, "swap_capacity_tokens", &SchedulerConfig::swap_capacity_tokens);
  config_field(config, "max_preemptions", &SchedulerConfig::max_preemptions);
  config_field(config, "starvation_steps", &SchedulerConfig::starvation_steps);
  config_field(config, "starvation_period", &SchedulerConfig::starvation_period);
  config_field(config, "default_predicted_len", &SchedulerConfig::default_predicted_len);
  config_field(config, "mlfq_levels", &SchedulerConfig::mlfq_levels);
  config_field(config, "mlfq_base_quantum", &SchedulerConfig::mlfq_base_quantum);
  config_field(config, "mlfq_prefill_ratio", &SchedulerConfig::mlfq_prefill_ratio);
  config_field(config, "prefill_weight", &SchedulerConfig::prefill_weight);
  config_field(config, "aging_rate", &SchedulerConfig::aging_rate);
  config_field(config, "preempt_margin", &SchedulerConfig::preempt_margin);
  config_field(config, "kv_aware", &SchedulerConfig::kv_aware);
  config_field(config, "boost_gamma", &SchedulerConfig::boost_gamma);
  config_field(config, "rebuild_cost", &SchedulerConfig::rebuild_cost);

  py::class_<Decision>(m, "Decision", "One iteration's decision; int64 arrays of rids.")
      .def_readonly("iteration", &Decision::iteration)
      .def_property_readonly("admitted", [](const Decision& d) { return to_numpy(d.admitted); })
      .def_property_readonly("resumed", [](const Decision& d) { return to_numpy(d.resumed); })
      .def_property_readonly("swapped_in", [](const Decision& d) { return to_numpy(d.swapped_in); })
      .def_property_readonly("recomputed", [](const Decision& d) { return to_numpy(d.recomputed); })
      .def_property_readonly("preempted", [](const Decision& d) { return to_numpy(d.preempted); })
      .def_property_readonly("swapped_out", [](const Decision& d) { return to_numpy(d.swapped_out); })
      .def_property_readonly("dropped", [](const Decision& d) { return to_numpy(d.dropped); })
      .def_property_readonly("running", [](const Decision& d) { return to_numpy(d.running); })
      .def("__repr__", [](const Decision& d) {
        return cat("Decision(iteration=", d.iteration, ", running=", d.running.size(),
                   ", admitted=", d.admitted.size(), ", resumed=", d.resumed.size(),
                   ", preempted=", d.preempted.size(), ")");
      });

  py::class_<RequestView>(m, "RequestView", "A snapshot of one live request.")
      .def_readonly("rid", &RequestView::rid)
      .def_readonly("state", &RequestView::state)
      .def_readonly("kv", &RequestView::kv)
      .def_readonly("arrival", &RequestView::arrival)
      .def_readonly("prompt_len", &RequestView::prompt_len)
      .def_readonly("max_new_tokens", &RequestView::max_new_tokens)
      .def_readonly("generated", &RequestView::generated)
      .def_readonly("predicted_len", &RequestView::predicted_len)
      .def_readonly("remaining", &RequestView::remaining)
      .def_readonly("score", &RequestView::score)
      .def_readonly("preemptions", &RequestView::preemptions)
      .def_readonly("level", &RequestView::level)
      .def_readonly("promoted", &RequestView::promoted)
      .def("__repr__", [](const RequestView& v) {
        return cat("RequestView(rid=", v.rid, ", state=", name_of(v.state),
                   ", generated=", v.generated, ", remaining=", v.remaining, ")");
      });

  auto scheduler = py::class_<Scheduler>(m, "Scheduler",
                                         "The TRAIL request scheduler (docs/scheduler.md).");
  bind_shared(scheduler, "Queue a request (predicted_len/score NaN = unknown).",
              "A copy of the validated configuration (change a live scheduler's β with "
              "set_prefill_weight).");
  scheduler
      .def(
          "schedule", [](Scheduler& s, py::handle now) { return s.schedule(as_real(now, "now")); },
          py::arg("now"), "Decide this iteration's batch at time `now`.")
      .def(
          "on_step",
          [](Scheduler& s, py::handle now, py::handle rids, py::handle new_tokens,
             py::handle finished) {
            const double t = as_real(now, "now");
            auto [r, n] = rids_with<I64, int_array>(rids, new_tokens, "new_tokens",
                                                    "on_step new_tokens");
            U8 f = flag_array(finished, "finished");
            same_length(r.size(), f.size(), "on_step finished");
            s.on_step(t, r.data(), n.data(), f.data(), static_cast<size_t>(r.size()));
          },
          py::arg("now"), py::arg("rids"), py::arg("new_tokens"), py::arg("finished"),
          "Report tokens generated by running requests and which of them finished.")
      .def(
          "set_preempt_margin",
          [](Scheduler& s, py::handle m) { s.set_preempt_margin(as_real(m, "preempt_margin")); },
          py::arg("preempt_margin"),
          "Change preempt_margin of a live scheduler; it applies from the next schedule().")
      .def(
          "abort", [](Scheduler& s, py::handle rid) { s.abort(as_int(rid, "rid")); },
          py::arg("rid"), "End a live request in any state and free what it holds.")
      .def(
          "stats",
          [](const Scheduler& s) {
            const Stats st = s.stats();
            py::dict d;
            d["iterations"] = st.iterations;
            d["added"] = st.added;
            d["finished"] = st.finished;
            d["aborted"] = st.aborted;
            d["live"] = st.live;
            d["waiting"] = st.waiting;
            d["running"] = st.running;
            d["preempted"] = st.preempted;
            d["kept"] = st.kept;
            d["swapped"] = st.swapped;
            d["dropped"] = st.dropped;
            d["preemptions"] = st.preemptions;
            d["swap_outs"] = st.swap_outs;
            d["swap_ins"] = st.swap_ins;
            d["drops"] = st.drops;
            d["recomputes"] = st.recomputes;
            d["kv_capacity_blocks"] = st.kv_capacity_blocks;
            d["kv_reserved_blocks"] = st.kv_reserved_blocks;
            d["swap_capacity_blocks"] = st.swap_capacity_blocks;
            d["swap_used_blocks"] = st.swap_used_blocks;
            return d;
          },
          "Counters and current occupancy.")
      .def("kv_reserved_blocks", &Scheduler::kv_reserved_blocks,
           "Device blocks reserved now (kept KV + running requests through their next token).");

  auto ranker = py::class_<Ranker>(m, "Ranker",
                                   "The scheduler's rank rule for an engine that keeps its own "
                                   "memory (docs/scheduler.md, Ranker).");
  bind_shared(ranker, "Track a request, waiting (predicted_len/score NaN = unknown).",
              "A copy of the validated configuration.");
  ranker
      .def(
          "remove", [](Ranker& s, py::handle rid) { s.remove(as_int(rid, "rid")); },
          py::arg("rid"), "Forget a finished or aborted request.")
      .def(
          "set_running",
          [](Ranker& s, py::handle rids) {
            I64 r = int_array(rids, "rids");
            s.set_running(r.data(), static_cast<size_t>(r.size()));
          },
          py::arg("rids"), "These requests now run, their KV on the device.")
      .def(
          "set_aging_rate",
          [](Ranker& s, py::handle a) { s.set_aging_rate(as_real(a, "aging_rate")); },
          py::arg("aging_rate"), "Change aging_rate (tokens per second); every key uses it.")
      .def(
          "set_preempted", [](Ranker& s, py::handle rid) { s.set_preempted(as_int(rid, "rid")); },
          py::arg("rid"), "A running request was preempted and its KV freed (recompute).")
      .def(
          "on_tokens",
          [](Ranker& s, py::handle rids, py::handle new_tokens) {
            auto [r, n] = rids_with<I64, int_array>(rids, new_tokens, "new_tokens",
                                                    "on_tokens new_tokens");
            s.on_tokens(r.data(), n.data(), static_cast<size_t>(r.size()));
          },
          py::arg("rids"), py::arg("new_tokens"), "Count tokens generated by these requests.")
      .def("begin_step", &Ranker::begin_step, "Starvation guard: promote who waited too long.")
      .def("end_step", &Ranker::end_step, "Starvation guard: count who was left out.")
      .def(
          "keys",
          [](const Ranker& s, py::handle rids) {
            I64 r = int_array(rids, "rids");
            py::array_t<double> out(r.size());
            s.keys(r.data(), static_cast<size_t>(r.size()), out.mutable_data());
            return out;
          },
          py::arg("rids"), "Primary keys (lower runs first), float64.")
      .def(
          "preempt_keys",
          [](const Ranker& s, py::handle rids) {
            I64 r = int_array(rids, "rids");
            py::array_t<double> out(r.size());
            s.preempt_keys(r.data(), static_cast<size_t>(r.size()), out.mutable_data());
            return out;
          },
          py::arg("rids"), "Net keys of running requests: key - preempt_cost, float64.")
      .def(
          "preemptible",
          [](const Ranker& s, py::handle rids) {
            I64 r = int_array(rids, "rids");
            std::vector<uint8_t> flags(static_cast<size_t>(r.size()));
            s.preemptible(r.data(), flags.size(), flags.data());
            py::array_t<bool> out(r.size());
            std::copy(flags.begin(), flags.end(), out.mutable_data());
            return out;
          },
          py::arg("rids"), "Whether each may be preempted for rank (c, max_preemptions).")
      .def(
          "order",
          [](const Ranker& s, py::handle rids) {
            I64 r = int_array(rids, "rids");
            const std::vector<int64_t> o = s.order(r.data(), static_cast<size_t>(r.size()));
            py::array_t<int64_t> out(static_cast<py::ssize_t>(o.size()));
            std::copy(o.begin(), o.end(), out.mutable_data());
            return out;
          },
          py::arg("rids"), "The rids sorted by (primary, arrival, rid), best first.");
}

}  // namespace trail::bind
