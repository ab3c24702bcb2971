// Registration functions, one per binding file, called from module.cpp.
#pragma once

#include <pybind11/pybind11.h>

#include "common/status.h"

namespace mbexport::bindings {

// Exception translation: Status codes -> mbexport.errors classes (errors.cpp).
void RegisterErrors(pybind11::module_& m);
// Batcher, HostBuffer, CudaStager, cuda_runtime_info, scatter_rows (batching.cpp).
void RegisterBatching(pybind11::module_& m);
// Throws the Python exception matching a non-ok status.
[[noreturn]] void ThrowStatus(const Status& status);
// The native WordPiece tokenizer (tokenizer.cpp).
void RegisterTokenizer(pybind11::module_& m);

}  // namespace mbexport::bindings
