// Status: how the C++ core reports errors without exceptions crossing module
// boundaries. Each code maps to exactly one Python exception class in the
// binding layer (csrc/bindings/errors.cpp), translated once, by table.
#pragma once

#include <string>
#include <utility>

namespace mbexport {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad user input (maps to ValueError subclasses)
  kVocabError,       // missing/duplicate/malformed vocabulary (VocabError)
  kEncodingError,    // text is not valid UTF-8 (TokenizerInputError)
  kIoError,          // file could not be read (FileNotFoundError/OSError)
  kCudaUnavailable,  // CUDA runtime missing or unusable (CudaUnavailableError)
  kInternal,         // a bug in mbexport (RuntimeError)
  kResourceExhausted,  // more memory than the machine can give (ResourceLimitError, a MemoryError)
};

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Name of a code, for messages and tests.
const char* StatusCodeName(StatusCode code);

}  // namespace mbexport
