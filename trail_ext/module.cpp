// pybind11 module trail_ext._C: the scheduler core and the CPU kernels. Each argument is
// converted (and rejected) in the bindings (convert.h), before the core sees it; the core's
// errors become Python's ValueError, KeyError and TypeError here.
#include <pybind11/pybind11.h>

#include <exception>

#include "common/errors.h"

namespace py = pybind11;

namespace trail::bind {
void bind_scheduler(py::module_& m);  // bind_scheduler.cpp
void bind_kernels(py::module_& m);    // bind_kernels.cpp
}  // namespace trail::bind

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

  trail::bind::bind_scheduler(m);
  trail::bind::bind_kernels(m);
}
