// Registration functions, one per binding file, called from module.cpp.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>

#include "common/status.h"

namespace mbexport::bindings {

// Exception translation: Status codes -> mbexport.errors classes (errors.cpp).
void RegisterErrors(pybind11::module_& m);
// Batcher, HostBuffer, CudaStager, cuda_runtime_info, scatter_rows (batching.cpp).
void RegisterBatching(pybind11::module_& m);
// Throws the Python exception matching a non-ok status.
[[noreturn]] void ThrowStatus(const Status& status);
inline void Check(const Status& status) {
  if (!status.ok()) ThrowStatus(status);
}

// A size argument from Python: an int in [lo, hi], else TokenizerInputError (kInvalidArgument)
// "`name` must be ..., got X" (X may be any Python int, 2**70 included); TypeError when not an int.
int64_t IntArg(const pybind11::handle& value, const char* name, int64_t lo,
               int64_t hi = std::numeric_limits<int64_t>::max());
// An index from Python into `size` items: IndexError naming `what` unless 0 <= value < size.
int64_t IndexArg(const pybind11::handle& value, const char* what, int64_t size);
// The native WordPiece tokenizer (tokenizer.cpp).
void RegisterTokenizer(pybind11::module_& m);

}  // namespace mbexport::bindings
