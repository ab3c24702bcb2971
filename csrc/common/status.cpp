#include "common/status.h"

namespace mbexport {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kVocabError: return "vocab_error";
    case StatusCode::kEncodingError: return "encoding_error";
    case StatusCode::kIoError: return "io_error";
    case StatusCode::kCudaUnavailable: return "cuda_unavailable";
    case StatusCode::kInternal: return "internal";
    case StatusCode::kResourceExhausted: return "resource_exhausted";
  }
  return "unknown";
}

}  // namespace mbexport
