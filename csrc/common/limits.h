// Limits on sizes that come from callers, and checked arithmetic to apply them.
//
// Every size a caller passes (max_length, pad_to_multiple_of, batch_tokens, a buffer's
// bytes, ...) is multiplied or added only through these helpers, so a hostile value
// (2**62) becomes a Status, never a wrapped product that a fill loop writes past.
// Two limits apply to what the core allocates from such sizes:
//   kMaxOutputCells  elements of one output array: past 2**31 an int64 array is 16 GiB,
//                    far beyond any batch a BERT runs, and positions stop fitting int32.
//   CheckAllocation  bytes the machine can still give: MemAvailable (Linux) and the
//                    headroom under RLIMIT_AS, so a big request fails with a message
//                    instead of std::bad_alloc or the OOM killer.
//
// Example:
//   int64_t cells;
//   if (!CheckedMul(rows, width, &cells) || cells > kMaxOutputCells) return Status(kInvalidArgument, ...);
//   Status st = CheckAllocation(static_cast<uint64_t>(cells) * 8 * 3, "the padded batch");
#pragma once

#include <cstdint>
#include <exception>
#include <string>

#include "common/status.h"

namespace mbexport {

inline constexpr int64_t kMaxOutputCells = int64_t{1} << 31;

// a * b (a + b, a - b) into *out; false, leaving *out unspecified, when it overflows T.
template <typename T>
bool CheckedMul(T a, T b, T* out) {
  return !__builtin_mul_overflow(a, b, out);
}
template <typename T>
bool CheckedAdd(T a, T b, T* out) {
  return !__builtin_add_overflow(a, b, out);
}
template <typename T>
bool CheckedSub(T a, T b, T* out) {
  return !__builtin_sub_overflow(a, b, out);
}

// n rounded up to a multiple of `multiple` (<= 1: n itself); false on overflow.
bool CheckedRoundUp(int64_t n, int64_t multiple, int64_t* out);

// Ok when `bytes` more can be allocated; kResourceExhausted naming `what` and the figures
// when it exceeds the memory available or the address space left under RLIMIT_AS.
// Requests below 64 MiB are not checked (they cost no system call).
Status CheckAllocation(uint64_t bytes, const std::string& what);

// The status of a caught exception: kResourceExhausted for std::bad_alloc/length_error,
// kInternal (with what()) otherwise. `where` says what was running.
Status StatusFromException(std::exception_ptr error, const std::string& where);

// Runs fn() -> Status, turning any exception it throws into StatusFromException
// (which itself only throws when not even its message can be allocated).
template <typename Fn>
Status CallNoThrow(const std::string& where, Fn&& fn) {
  try {
    return fn();
  } catch (...) {
    return StatusFromException(std::current_exception(), where);
  }
}

}  // namespace mbexport
