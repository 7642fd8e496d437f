// pybind11 module trail_ext._C: the scheduler core, with strict argument conversion.
// Arguments are converted (and rejected) here, before the core sees them, so a bad
// argument raises TypeError/ValueError and never reaches C++ as garbage.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>

#include "kernels/paged_attention.h"
#include "kernels/probe_step.h"
#include "scheduler/ranker.h"
#include "scheduler/scheduler.h"

namespace py = pybind11;
using namespace trail;

namespace {

py::object& np_asarray() {
  // Leaked on purpose: destroying a py::object after interpreter shutdown would crash.
  static py::object* fn = new py::object(py::module_::import("numpy").attr("asarray"));
  return *fn;
}

// str(obj), cut short: a 600-digit integer in an error message helps nobody.
std::string shown(py::handle obj) {
  std::string text = py::str(obj);
  return text.size() <= 40 ? text : text.substr(0, 20) + "..." + text.substr(text.size() - 10);
}

int64_t as_int(py::handle obj, const char* what) {
  if (PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()))
    throw TypeError(cat(what, " must be an integer, got ", std::string(py::str(py::repr(obj)))));
  py::object idx = py::reinterpret_steal<py::object>(PyNumber_Index(obj.ptr()));
  if (!idx) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(idx.ptr(), &overflow);
  if (overflow) throw TypeError(cat(what, "=", shown(idx), " does not fit in int64"));
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return v;
}

bool is_bool(py::handle obj) {
  // Leaked on purpose, like np_asarray.
  static py::object* np_bool = new py::object(py::module_::import("numpy").attr("bool_"));
  return PyBool_Check(obj.ptr()) || py::isinstance(obj, *np_bool);
}

// A real-number argument: any object with __float__ or __index__ but a bool or a string
// (a bool or "1.5" where a number is expected is a bug); TypeError naming `what` otherwise,
// also for an integer too large for a double.
double as_real(py::handle obj, const char* what) {
  if (is_bool(obj) || PyUnicode_Check(obj.ptr()) || PyBytes_Check(obj.ptr()) ||
      PyByteArray_Check(obj.ptr()))
    throw TypeError(cat(what, " must be a real number, got ", std::string(py::str(py::repr(obj)))));
  const double v = PyFloat_AsDouble(obj.ptr());
  if (v == -1.0 && PyErr_Occurred()) {
    const bool overflow = PyErr_ExceptionMatches(PyExc_OverflowError);
    if (!overflow && !PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
    PyErr_Clear();
    if (overflow)
      throw TypeError(cat(what, "=", shown(obj), " does not fit in a double"));
    throw TypeError(cat(what, " must be a real number, got ", std::string(py::str(py::repr(obj)))));
  }
  return v;
}

bool as_flag(py::handle obj, const char* what) {
  if (!is_bool(obj))
    throw TypeError(cat(what, " must be a bool, got ", std::string(py::str(py::repr(obj)))));
  return py::cast<bool>(obj);
}

template <class E>
E as_enum(py::handle obj, const char* what, const char* type_name) {
  if (!py::isinstance<E>(obj))
    throw TypeError(cat(what, " must be a ", type_name, ", got ",
                        std::string(py::str(py::repr(obj)))));
  return py::cast<E>(obj);
}

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

py::array as_1d(py::handle obj, const char* what) {
  py::array arr = py::isinstance<py::array>(obj) ? py::reinterpret_borrow<py::array>(obj)
                                                 : py::array(np_asarray()(obj));
  if (arr.ndim() != 1)
    throw ValueError(cat(what, " must be one-dimensional, got ndim=", arr.ndim()));
  return arr;
}

using I64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

I64 int_array(py::handle obj, const char* what) {
  if (py::array_t<int64_t, py::array::c_style>::check_(obj)) {
    auto a = py::reinterpret_borrow<I64>(obj);
    if (a.ndim() == 1) return a;
  }
  py::array arr = as_1d(obj, what);
  const char kind = arr.dtype().kind();
  if (arr.size() > 0 && kind != 'i' && kind != 'u')
    throw TypeError(cat(what, " must hold integers, got dtype ",
                        std::string(py::str(arr.dtype()))));
  if (kind == 'u' && arr.itemsize() == 8) {
    // uint64 values above int64's range would wrap silently in the cast below.
    auto u = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    for (py::ssize_t i = 0; i < u.size(); ++i)
      if (u.data()[i] > static_cast<uint64_t>(INT64_MAX))
        throw TypeError(cat(what, "[", i, "]=", u.data()[i], " does not fit in int64"));
  }
  return I64::ensure(arr);
}

F64 real_array(py::handle obj, const char* what) {
  if (py::array_t<double, py::array::c_style>::check_(obj)) {
    auto a = py::reinterpret_borrow<F64>(obj);
    if (a.ndim() == 1) return a;
  }
  py::array arr = as_1d(obj, what);
  const char kind = arr.dtype().kind();
  if (arr.size() > 0 && kind != 'i' && kind != 'u' && kind != 'f')
    throw TypeError(cat(what, " must hold real numbers, got dtype ",
                        std::string(py::str(arr.dtype()))));
  return F64::ensure(arr);
}

U8 flag_array(py::handle obj, const char* what) {
  py::array arr = as_1d(obj, what);
  const char kind = arr.dtype().kind();
  if (arr.size() > 0 && kind != 'b' && kind != 'i' && kind != 'u')
    throw TypeError(cat(what, " must hold booleans, got dtype ",
                        std::string(py::str(arr.dtype()))));
  if (kind == 'i' || kind == 'u') {
    I64 ints = I64::ensure(arr);
    const int64_t* p = ints.data();
    for (py::ssize_t i = 0; i < ints.size(); ++i)
      if (p[i] != 0 && p[i] != 1)
        throw ValueError(cat(what, "[", i, "]=", p[i], ": must be a boolean (0 or 1)"));
  }
  return U8::ensure(arr);
}

void same_length(py::ssize_t a, py::ssize_t b, const char* what) {
  if (a != b) throw ValueError(cat(what, ": got ", a, " rids but ", b, " values"));
}

py::array_t<int64_t> to_numpy(const std::vector<int64_t>& v) {
  return py::array_t<int64_t>(static_cast<py::ssize_t>(v.size()), v.data());
}

const char* name_of(RequestState s) {
  switch (s) {
    case RequestState::WAITING: return "WAITING";
    case RequestState::RUNNING: return "RUNNING";
    case RequestState::PREEMPTED: return "PREEMPTED";
  }
  return "?";
}

// ---------------------------------------------------------------- probe step buffers

template <class T>
const T* view(py::handle obj, const char* what, std::initializer_list<py::ssize_t> shape,
              bool writable = false) {
  if (!py::array_t<T, py::array::c_style>::check_(obj))
    throw TypeError(cat("probe_step: ", what, " must be a C-contiguous numpy array of ",
                        std::string(py::str(py::dtype::of<T>())), ", got ",
                        std::string(py::str(py::repr(py::type::handle_of(obj))))));
  auto a = py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(obj);
  if (a.ndim() != static_cast<py::ssize_t>(shape.size()))
    throw ValueError(cat("probe_step: ", what, " must have ", shape.size(), " dimensions, got ",
                         a.ndim()));
  py::ssize_t i = 0;
  for (py::ssize_t want : shape) {
    if (want >= 0 && a.shape(i) != want)
      throw ValueError(cat("probe_step: ", what, " has size ", a.shape(i), " in dimension ", i,
                           ", expected ", want));
    ++i;
  }
  if (writable && !a.writeable())
    throw ValueError(cat("probe_step: ", what, " must be writable"));
  return a.data();
}

void probe_step_numpy(py::handle hidden, py::handle hidden_dtype_obj, py::handle slots,
                      py::handle first, py::handle w1, py::handle b1, py::handle w2,
                      py::handle b2, py::handle transition, py::handle centers, py::handle cap,
                      py::handle state, py::handle pred, py::handle pre, py::handle edges,
                      py::handle gittins) {
  kernels::ProbeStepArgs a;
  if (!py::isinstance<py::str>(hidden_dtype_obj))
    throw TypeError(cat("probe_step: hidden_dtype must be a str, got ",
                        std::string(py::str(py::repr(hidden_dtype_obj)))));
  const std::string hidden_dtype = py::cast<std::string>(hidden_dtype_obj);
  if (!py::isinstance<py::array>(hidden))
    throw TypeError("probe_step: hidden must be a numpy array");
  auto h = py::reinterpret_borrow<py::array>(hidden);
  if (h.ndim() != 2) throw ValueError(cat("probe_step: hidden must be 2-D, got ", h.ndim(), "-D"));
  const py::ssize_t item = h.itemsize();
  if (hidden_dtype == "float32") {
    if (!py::array_t<float>::check_(hidden))
      throw TypeError("probe_step: float32 hidden must be a float32 array");
    a.hidden_dtype = kernels::DType::F32;
  } else if (hidden_dtype == "bfloat16" || hidden_dtype == "float16") {
    if (item != 2 || (h.dtype().kind() == 'f' && hidden_dtype == "bfloat16"))
      throw TypeError("probe_step: 16-bit hidden states arrive as their raw 16-bit patterns");
    a.hidden_dtype = hidden_dtype == "bfloat16" ? kernels::DType::BF16 : kernels::DType::F16;
  } else {
    throw TypeError(cat("probe_step: unsupported hidden dtype ", hidden_dtype));
  }
  if (h.shape(0) > 0 &&
      (h.strides(1) != item || h.strides(0) % item != 0 || h.strides(0) < h.shape(1) * item))
    throw ValueError("probe_step: hidden rows must be contiguous");
  a.B = h.shape(0);
  a.D = h.shape(1);
  a.hidden_stride = h.shape(0) > 0 ? h.strides(0) / item : h.shape(1);
  a.hidden = h.data();
  const py::ssize_t B = a.B, D = a.D;
  if (!py::isinstance<py::array>(w1)) throw TypeError("probe_step: w1 must be a numpy array");
  const auto w1a = py::reinterpret_borrow<py::array>(w1);
  if (w1a.ndim() != 2) throw ValueError("probe_step: w1 must be 2-D [H, D]");
  const py::ssize_t H = w1a.shape(0);
  if (!py::isinstance<py::array>(w2) || py::reinterpret_borrow<py::array>(w2).ndim() != 2)
    throw ValueError("probe_step: w2 must be a 2-D numpy array [K, H]");
  const py::ssize_t K = py::reinterpret_borrow<py::array>(w2).shape(0);
  a.H = H;
  a.K = K;
  a.slots = view<int32_t>(slots, "slots", {B});
  a.first = reinterpret_cast<const uint8_t*>(view<bool>(first, "first", {B}));
  a.w1 = view<float>(w1, "w1", {H, D});
  a.b1 = view<float>(b1, "b1", {H});
  a.w2 = view<float>(w2, "w2", {K, H});
  a.b2 = view<float>(b2, "b2", {K});
  a.transition = view<float>(transition, "transition", {K, K});
  a.centers = view<float>(centers, "centers", {K});
  a.cap = view<float>(cap, "cap", {B});
  a.state = const_cast<float*>(view<float>(state, "state", {-1, K}, true));
  a.S = py::reinterpret_borrow<py::array>(state).shape(0);
  a.pred = const_cast<float*>(view<float>(pred, "pred", {B}, true));
  if (!pre.is_none()) a.pre = view<float>(pre, "pre", {B, H});
  if (edges.is_none() != gittins.is_none())
    throw ValueError("probe_step: edges and gittins must be given together");
  if (!edges.is_none()) {
    a.edges = view<float>(edges, "edges", {K + 1});
    for (py::ssize_t k = 0; k < K; ++k)
      if (!(a.edges[k] < a.edges[k + 1]) || !std::isfinite(a.edges[k + 1]))
        throw ValueError(cat("probe_step: edges must be finite and strictly increasing, got edges[",
                             k, "]=", a.edges[k], ", edges[", k + 1, "]=", a.edges[k + 1]));
    a.gittins = const_cast<float*>(view<float>(gittins, "gittins", {B}, true));
  }
  py::gil_scoped_release release;  // the buffers stay alive: the caller holds them
  kernels::probe_step(a);
}

void paged_attention_numpy(py::handle q, py::handle k_cache, py::handle v_cache,
                           py::handle block_tables, py::handle context_lens,
                           py::handle block_size_obj, py::handle scale_obj, py::handle out,
                           py::handle threads_obj) {
  kernels::PagedAttentionArgs a;
  const int64_t block_size = as_int(block_size_obj, "paged_attention: block_size");
  const double scale = as_real(scale_obj, "paged_attention: scale");
  // The kernel computes in fp32: a scale that is NaN, infinite or infinite as a float is garbage.
  if (!std::isfinite(scale) || std::fabs(scale) > FLT_MAX)
    throw ValueError(cat("paged_attention: scale=", scale, " must be finite (as a float32)"));
  const int64_t threads = as_int(threads_obj, "paged_attention: threads");
  auto shape_of = [](py::handle h, const char* what) {
    if (!py::isinstance<py::array>(h))
      throw TypeError(cat("paged_attention: ", what, " must be a numpy array"));
    return py::reinterpret_borrow<py::array>(h);
  };
  const auto qa = shape_of(q, "q"), ka = shape_of(k_cache, "k_cache"),
             ta = shape_of(block_tables, "block_tables");
  if (qa.ndim() != 3 || ka.ndim() != 4 || ta.ndim() != 2)
    throw ValueError("paged_attention: q [n, H, D], caches [blocks, KVH, block_size, D], "
                     "tables [n, W]");
  const py::ssize_t n = qa.shape(0), H = qa.shape(1), D = qa.shape(2);
  const py::ssize_t blocks = ka.shape(0), KVH = ka.shape(1);
  if (ka.shape(2) != block_size)
    throw ValueError(cat("paged_attention: caches hold blocks of ", ka.shape(2),
                         " tokens, block_size=", block_size));
  a.q = view<float>(q, "q", {n, H, D});
  a.k_cache = view<float>(k_cache, "k_cache", {blocks, KVH, block_size, D});
  a.v_cache = view<float>(v_cache, "v_cache", {blocks, KVH, block_size, D});
  a.block_tables = view<int32_t>(block_tables, "block_tables", {n, ta.shape(1)});
  a.context_lens = view<int32_t>(context_lens, "context_lens", {n});
  a.out = const_cast<float*>(view<float>(out, "out", {n, H, D}, true));
  a.num_blocks = blocks;
  a.table_width = ta.shape(1);
  a.n = n;
  a.H = H;
  a.KVH = KVH;
  a.D = D;
  a.block_size = block_size;
  a.scale = static_cast<float>(scale);
  a.threads = static_cast<int>(std::clamp<int64_t>(threads, 1, INT32_MAX));
  py::gil_scoped_release release;
  kernels::paged_attention_decode(a);
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
            I64 r = int_array(rids, "rids");
            F64 v = real_array(remaining, "remaining");
            same_length(r.size(), v.size(), "update_predictions");
            s.update_predictions(r.data(), v.data(), static_cast<size_t>(r.size()));
          },
          py::arg("rids"), py::arg("remaining"),
          "Set predicted remaining output tokens of live requests.")
      .def(
          "update_scores",
          [](T& s, py::handle rids, py::handle scores) {
            I64 r = int_array(rids, "rids");
            F64 v = real_array(scores, "scores");
            same_length(r.size(), v.size(), "update_scores");
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

PYBIND11_MODULE(_C, m) {
  m.doc() = "TRAIL native core: the request scheduler (see docs/scheduler.md).";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const trail::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const trail::KeyError& e) {
      PyErr_SetString(PyExc_KeyError, e.what());
    } catch (const trail::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

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
                  py::handle kv_aware) {
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
        return cfg;
      }),
      py::kw_only(), py::arg("policy") = Policy::TRAIL, py::arg("max_running") = 48,
      py::arg("kv_capacity_tokens") = 65536, py::arg("block_size") = 16, py::arg("c") = 0.8,
      py::arg("preempt_mode") = PreemptMode::KEEP, py::arg("swap_capacity_tokens") = 0,
      py::arg("max_preemptions") = -1, py::arg("starvation_steps") = 0,
      py::arg("starvation_period") = 0, py::arg("default_predicted_len") = 128.0,
      py::arg("mlfq_levels") = 4, py::arg("mlfq_base_quantum") = 16,
      py::arg("mlfq_prefill_ratio") = 64.0, py::arg("prefill_weight") = 0.0,
      py::arg("aging_rate") = 0.0, py::arg("preempt_margin") = 0.0,
      py::arg("kv_aware") = false);
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

  m.def("probe_step", &probe_step_numpy, py::arg("hidden"), py::arg("hidden_dtype"),
        py::arg("slots"), py::arg("first"), py::arg("w1"), py::arg("b1"), py::arg("w2"),
        py::arg("b2"), py::arg("transition"), py::arg("centers"), py::arg("cap"),
        py::arg("state"), py::arg("pred"), py::arg("pre") = py::none(),
        py::arg("edges") = py::none(), py::arg("gittins") = py::none(),
        "Fused probe step on numpy buffers (use torch.ops.trail.probe_step instead); with "
        "edges, also the Gittins rank of each updated row into gittins.");
  m.def("paged_attention_decode", &paged_attention_numpy, py::arg("q"), py::arg("k_cache"),
        py::arg("v_cache"), py::arg("block_tables"), py::arg("context_lens"),
        py::arg("block_size"), py::arg("scale"), py::arg("out"), py::arg("threads") = 1,
        "Decode attention reading a paged KV cache in place (fp32, CPU).");
  m.def("probe_isa", &kernels::probe_isa, "Instruction set the CPU probe kernels use here.");

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
            I64 r = int_array(rids, "rids");
            I64 n = int_array(new_tokens, "new_tokens");
            U8 f = flag_array(finished, "finished");
            same_length(r.size(), n.size(), "on_step new_tokens");
            same_length(r.size(), f.size(), "on_step finished");
            s.on_step(t, r.data(), n.data(), f.data(), static_cast<size_t>(r.size()));
          },
          py::arg("now"), py::arg("rids"), py::arg("new_tokens"), py::arg("finished"),
          "Report tokens generated by running requests and which of them finished.")
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
          "Counters and current occupancy.");

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
          "set_preempted", [](Ranker& s, py::handle rid) { s.set_preempted(as_int(rid, "rid")); },
          py::arg("rid"), "A running request was preempted and its KV freed (recompute).")
      .def(
          "on_tokens",
          [](Ranker& s, py::handle rids, py::handle new_tokens) {
            I64 r = int_array(rids, "rids");
            I64 n = int_array(new_tokens, "new_tokens");
            same_length(r.size(), n.size(), "on_tokens new_tokens");
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
