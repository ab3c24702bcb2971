// The native tests' one assertion: CHECK(cond) reports a failed condition with its place and counts it,
// so one run lists every failure; Finish(name) turns the count into the process's exit status.
#pragma once

#include <cstdio>

namespace mbexport_test {

inline int failures = 0;

inline int Finish(const char* name) {
  if (failures) {
    std::fprintf(stderr, "%s: %d check(s) failed\n", name, failures);
    return 1;
  }
  std::printf("%s: all checks passed\n", name);
  return 0;
}

}  // namespace mbexport_test

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
      ++mbexport_test::failures;                                             \
    }                                                                        \
  } while (0)
