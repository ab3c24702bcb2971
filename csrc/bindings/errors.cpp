// Status -> Python exception, by table. The classes live in mbexport/errors.py so
// Python and C++ raise the same types.
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"

namespace py = pybind11;

namespace mbexport::bindings {

namespace {
const char* ExceptionName(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument: return "TokenizerInputError";
    case StatusCode::kVocabError: return "VocabError";
    case StatusCode::kEncodingError: return "TokenizerInputError";
    case StatusCode::kIoError: return "VocabError";
    case StatusCode::kCudaUnavailable: return "CudaUnavailableError";
    default: return "MbexportError";
  }
}
}  // namespace

void ThrowStatus(const Status& status) {
  py::object errors = py::module_::import("mbexport.errors");
  py::object cls = errors.attr(ExceptionName(status.code()));
  PyErr_SetObject(cls.ptr(), py::str(status.message()).ptr());
  throw py::error_already_set();
}

void RegisterErrors(py::module_& m) {
  m.def("status_code_name", [](int code) { return StatusCodeName(static_cast<StatusCode>(code)); },
        "Name of a core status code (for diagnostics).");
}

}  // namespace mbexport::bindings
