// Strict conversion of Python arguments for the trail_ext._C bindings: a wrong type or
// shape raises TypeError/ValueError naming the argument, so nothing reaches the C++ core
// as garbage (pybind's own casters would accept a bool as an int, or raise a generic
// "incompatible arguments" error).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/errors.h"

namespace trail::bind {

namespace py = pybind11;

inline py::object& np_asarray() {
  // Leaked on purpose: destroying a py::object after interpreter shutdown would crash.
  static py::object* fn = new py::object(py::module_::import("numpy").attr("asarray"));
  return *fn;
}

// str(obj), cut short: a 600-digit integer in an error message helps nobody.
inline std::string shown(py::handle obj) {
  std::string text = py::str(obj);
  return text.size() <= 40 ? text : text.substr(0, 20) + "..." + text.substr(text.size() - 10);
}

inline int64_t as_int(py::handle obj, const char* what) {
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

inline bool is_bool(py::handle obj) {
  // Leaked on purpose, like np_asarray.
  static py::object* np_bool = new py::object(py::module_::import("numpy").attr("bool_"));
  return PyBool_Check(obj.ptr()) || py::isinstance(obj, *np_bool);
}

// A real-number argument: any object with __float__ or __index__ but a bool or a string
// (a bool or "1.5" where a number is expected is a bug); TypeError naming `what` otherwise,
// also for an integer too large for a double.
inline double as_real(py::handle obj, const char* what) {
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

inline bool as_flag(py::handle obj, const char* what) {
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


inline py::array as_1d(py::handle obj, const char* what) {
  py::array arr = py::isinstance<py::array>(obj) ? py::reinterpret_borrow<py::array>(obj)
                                                 : py::array(np_asarray()(obj));
  if (arr.ndim() != 1)
    throw ValueError(cat(what, " must be one-dimensional, got ndim=", arr.ndim()));
  return arr;
}

using I64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using F64 = py::array_t<double, py::array::c_style | py::array::forcecast>;
using U8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// Already a C-contiguous 1-D array of T: used as it is (the common, fast case).
template <class T>
bool exact_1d(py::handle obj) {
  return py::array_t<T, py::array::c_style>::check_(obj) &&
         py::reinterpret_borrow<py::array>(obj).ndim() == 1;
}

// A 1-D array whose dtype kind is one of `kinds` ('i', 'u', 'f', 'b'); an empty array of
// any dtype passes ([] is float64 to numpy). TypeError "WHAT must hold NOUN" otherwise.
inline py::array of_kinds(py::handle obj, const char* what, std::string_view kinds,
                          const char* noun) {
  py::array arr = as_1d(obj, what);
  if (arr.size() > 0 && kinds.find(arr.dtype().kind()) == std::string_view::npos)
    throw TypeError(cat(what, " must hold ", noun, ", got dtype ",
                        std::string(py::str(arr.dtype()))));
  return arr;
}

inline I64 int_array(py::handle obj, const char* what) {
  if (exact_1d<int64_t>(obj)) return py::reinterpret_borrow<I64>(obj);
  py::array arr = of_kinds(obj, what, "iu", "integers");
  if (arr.dtype().kind() == 'u' && arr.itemsize() == 8) {
    // uint64 values above int64's range would wrap silently in the cast below.
    auto u = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
    for (py::ssize_t i = 0; i < u.size(); ++i)
      if (u.data()[i] > static_cast<uint64_t>(INT64_MAX))
        throw TypeError(cat(what, "[", i, "]=", u.data()[i], " does not fit in int64"));
  }
  return I64::ensure(arr);
}

inline F64 real_array(py::handle obj, const char* what) {
  if (exact_1d<double>(obj)) return py::reinterpret_borrow<F64>(obj);
  return F64::ensure(of_kinds(obj, what, "iuf", "real numbers"));
}

inline U8 flag_array(py::handle obj, const char* what) {
  py::array arr = of_kinds(obj, what, "biu", "booleans");
  const char kind = arr.dtype().kind();
  if (kind == 'i' || kind == 'u') {
    I64 ints = I64::ensure(arr);
    const int64_t* p = ints.data();
    for (py::ssize_t i = 0; i < ints.size(); ++i)
      if (p[i] != 0 && p[i] != 1)
        throw ValueError(cat(what, "[", i, "]=", p[i], ": must be a boolean (0 or 1)"));
  }
  return U8::ensure(arr);
}

inline void same_length(py::ssize_t a, py::ssize_t b, const char* what) {
  if (a != b) throw ValueError(cat(what, ": got ", a, " rids but ", b, " values"));
}

inline py::array_t<int64_t> to_numpy(const std::vector<int64_t>& v) {
  return py::array_t<int64_t>(static_cast<py::ssize_t>(v.size()), v.data());
}

// An array of rids and one value per rid (converted by `Convert`), checked to be as long.
template <class Array, Array (*Convert)(py::handle, const char*)>
std::pair<I64, Array> rids_with(py::handle rids, py::handle values, const char* values_name,
                                const char* what) {
  I64 r = int_array(rids, "rids");
  Array v = Convert(values, values_name);
  same_length(r.size(), v.size(), what);
  return {std::move(r), std::move(v)};
}

}  // namespace trail::bind
