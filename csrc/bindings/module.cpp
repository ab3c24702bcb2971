// The one module file of mbexport._native: each core area registers itself
// from its own binding file (tokenizer.cpp, batching.cpp, ...).
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"

PYBIND11_MODULE(_native, m) {
  m.doc() = "mbexport native core: WordPiece tokenizer and tensor batcher";
  mbexport::bindings::RegisterErrors(m);
  mbexport::bindings::RegisterTokenizer(m);
  mbexport::bindings::RegisterBatching(m);
}
