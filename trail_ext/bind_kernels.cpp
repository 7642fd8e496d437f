// Bindings of the CPU kernels (fused probe step, paged decode attention) on numpy buffers:
// shapes, dtypes and contiguity are checked here; the GIL is released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cfloat>
#include <climits>
#include <cmath>
#include <initializer_list>
#include <string>

#include "convert.h"
#include "kernels/paged_attention.h"
#include "kernels/probe_step.h"

namespace py = pybind11;
using namespace trail;
using namespace trail::bind;

namespace {

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

}  // namespace

namespace trail::bind {

void bind_kernels(py::module_& m) {
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
}

}  // namespace trail::bind
