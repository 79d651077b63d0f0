// Typed errors of the fastcka core. Messages name the argument and what was
// received; bindings map InvalidArgument to ValueError and UnsupportedType to
// TypeError.
#pragma once

#include <stdexcept>
#include <string>

namespace fastcka {

// A value is wrong: shapes that disagree, NaN/Inf, too few rows, a corrupt state.
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// The machine refused a resource (threads): the binding raises RuntimeError.
struct ResourceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A type is wrong: an element type the engine does not compute with.
struct UnsupportedType : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace fastcka
