// Exceptions of the native core; the bindings map them onto Python's ValueError,
// KeyError and TypeError. No Python headers here.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace trail {

struct ValueError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct KeyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Concatenates its arguments into a message.
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  os.precision(17);
  (os << ... << args);
  return os.str();
}

}  // namespace trail
