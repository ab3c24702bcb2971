#include "common/limits.h"

#include <cstdio>
#include <cstring>
#include <new>
#include <stdexcept>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/resource.h>
#include <unistd.h>
#endif

namespace mbexport {

namespace {

constexpr uint64_t kUncheckedBytes = uint64_t{64} << 20;

std::string Mib(uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// MemAvailable from /proc/meminfo in bytes; 0 when unknown (not Linux, unreadable).
uint64_t MemAvailable() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return 0;
  char line[256];
  unsigned long long kib = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
  }
  std::fclose(f);
  return static_cast<uint64_t>(kib) << 10;
}

// Address space left under RLIMIT_AS in bytes; UINT64_MAX when unlimited or unknown.
uint64_t AddressSpaceLeft() {
#if defined(__linux__)
  struct rlimit lim;
  if (getrlimit(RLIMIT_AS, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return UINT64_MAX;
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return UINT64_MAX;
  unsigned long long pages = 0;
  const int got = std::fscanf(f, "%llu", &pages);
  std::fclose(f);
  if (got != 1) return UINT64_MAX;
  const uint64_t used = static_cast<uint64_t>(pages) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return used >= lim.rlim_cur ? 0 : lim.rlim_cur - used;
#else
  return UINT64_MAX;
#endif
}

}  // namespace

bool CheckedRoundUp(int64_t n, int64_t multiple, int64_t* out) {
  if (multiple <= 1 || n % multiple == 0) {
    *out = n;
    return true;
  }
  return CheckedAdd<int64_t>(n, multiple - n % multiple, out);
}

Status CheckAllocation(uint64_t bytes, const std::string& what) {
  if (bytes < kUncheckedBytes) return Status::Ok();
  const uint64_t left = AddressSpaceLeft();
  if (bytes > left) {
    return Status(StatusCode::kResourceExhausted, what + " needs " + Mib(bytes) + " but only " + Mib(left) +
                                                      " of address space is left under the process's "
                                                      "limit (ulimit -v); ask for less or raise the limit");
  }
  const uint64_t available = MemAvailable();
  if (available != 0 && bytes > available) {
    return Status(StatusCode::kResourceExhausted, what + " needs " + Mib(bytes) + " but the machine has " +
                                                      Mib(available) + " available; ask for less");
  }
  return Status::Ok();
}

Status StatusFromException(std::exception_ptr error, const std::string& where) {
  try {
    std::rethrow_exception(error);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kResourceExhausted,
                  where + " ran out of memory; pass fewer or shorter inputs per call, or free memory");
  } catch (const std::length_error&) {
    return Status(StatusCode::kResourceExhausted,
                  where + " needed a buffer larger than the platform allows; pass fewer or shorter inputs");
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal, where + " failed: " + e.what() + " (a bug in mbexport; please report it)");
  } catch (...) {
    return Status(StatusCode::kInternal, where + " failed with an unknown exception (a bug in mbexport)");
  }
}

}  // namespace mbexport
