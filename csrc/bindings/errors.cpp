// Status -> Python exception, by table. The classes live in mbexport/errors.py so
// Python and C++ raise the same types.
#include <pybind11/pybind11.h>

#include <limits>
#include <string>

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
    case StatusCode::kResourceExhausted: return "ResourceLimitError";
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

namespace {
// value as int64 into *out; false when it is an int outside int64. TypeError when not an int.
bool ToInt64(const py::handle& value, const char* name, int64_t* out) {
  if (!PyLong_Check(value.ptr()))
    throw py::type_error(std::string(name) + " must be an int, got " +
                         std::string(py::str(py::type::of(value).attr("__name__"))));
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  *out = static_cast<int64_t>(v);
  return overflow == 0;
}
}  // namespace

int64_t IntArg(const py::handle& value, const char* name, int64_t lo, int64_t hi) {
  int64_t v = 0;
  if (!ToInt64(value, name, &v) || v < lo || v > hi) {
    const std::string range = hi == std::numeric_limits<int64_t>::max()
                                  ? ">= " + std::to_string(lo) + " (and below 2**63)"
                                  : "between " + std::to_string(lo) + " and " + std::to_string(hi);
    ThrowStatus(Status(StatusCode::kInvalidArgument, std::string(name) + " must be " + range + ", got " +
                                                         std::string(py::str(value))));
  }
  return v;
}

int64_t IndexArg(const py::handle& value, const char* what, int64_t size) {
  int64_t v = 0;
  if (!ToInt64(value, what, &v) || v < 0 || v >= size)
    throw py::index_error(std::string(what) + " " + std::string(py::str(value)) + " out of range [0, " +
                          std::to_string(size) + ")");
  return v;
}

void RegisterErrors(py::module_& m) {
  m.def("status_code_name", [](int code) { return StatusCodeName(static_cast<StatusCode>(code)); },
        "Name of a core status code (for diagnostics).");
}

}  // namespace mbexport::bindings
