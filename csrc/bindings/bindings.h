// Registration functions, one per binding file, called from module.cpp.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

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
// A vector handed to numpy without a copy: the array owns it (freed with the array). A caller
// that keeps its vector passes a copy, `ToArray(std::vector<T>(v), ...)`, so copies are visible.
template <typename T>
pybind11::array_t<T> ToArray(std::vector<T>&& v, std::vector<pybind11::ssize_t> shape) {
  auto* heap = new std::vector<T>(std::move(v));
  pybind11::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return pybind11::array_t<T>(std::move(shape), heap->data(), owner);
}
template <typename T>
pybind11::array_t<T> ToArray(std::vector<T>&& v) {
  const auto n = static_cast<pybind11::ssize_t>(v.size());
  return ToArray(std::move(v), {n});
}

// The native WordPiece tokenizer (tokenizer.cpp).
void RegisterTokenizer(pybind11::module_& m);

}  // namespace mbexport::bindings
