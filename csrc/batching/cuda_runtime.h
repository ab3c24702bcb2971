// The CUDA runtime, loaded at run time with dlopen, never linked at build time:
// one build serves CPU-only and GPU machines.
//
// CudaRuntime::Load tries, in order, the paths the caller passes (the Python side
// adds the nvidia-cuda-runtime wheel's lib/ and $MBEXPORT_CUDART), then the
// system names libcudart.so, libcudart.so.13, .12, .11.0. The first library that
// opens and exports every symbol below wins; it stays loaded for the process.
// Without one, Load returns kCudaUnavailable naming each path tried and why.
//
// Only the handful of entry points the batcher needs are resolved; they keep the
// C ABI of cudart (cudaError_t is an int, streams and events are opaque pointers).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"

namespace mbexport::batching {

struct CudaRuntime {
  using Stream = void*;
  using Event = void*;
  int (*GetDeviceCount)(int*) = nullptr;
  int (*SetDevice)(int) = nullptr;
  int (*RuntimeGetVersion)(int*) = nullptr;
  int (*DriverGetVersion)(int*) = nullptr;
  const char* (*GetErrorString)(int) = nullptr;
  int (*MallocHost)(void**, size_t) = nullptr;
  int (*FreeHost)(void*) = nullptr;
  int (*Malloc)(void**, size_t) = nullptr;
  int (*Free)(void*) = nullptr;
  int (*MemcpyAsync)(void*, const void*, size_t, int, Stream) = nullptr;
  int (*StreamCreateWithFlags)(Stream*, unsigned) = nullptr;
  int (*StreamDestroy)(Stream) = nullptr;
  int (*StreamSynchronize)(Stream) = nullptr;
  int (*EventCreateWithFlags)(Event*, unsigned) = nullptr;
  int (*EventRecord)(Event, Stream) = nullptr;
  int (*EventSynchronize)(Event) = nullptr;
  int (*EventDestroy)(Event) = nullptr;

  std::string path;         // the library that was opened
  int runtime_version = 0;  // e.g. 12040
  int driver_version = 0;   // 0 = no driver
  int device_count = 0;

  static constexpr int kMemcpyHostToDevice = 1;
  static constexpr int kMemcpyDeviceToHost = 2;
  static constexpr unsigned kStreamNonBlocking = 1;
  static constexpr unsigned kEventDisableTiming = 2;

  // Loads once per process (thread-safe); later calls return the same runtime or
  // the same error. Succeeds only with at least one usable device.
  static Status Load(const std::vector<std::string>& extra_paths, const CudaRuntime** out);

  // "cudaMalloc(...) failed: out of memory (2)" as a status, or Ok.
  Status StatusOf(int code, const char* what) const;
};

}  // namespace mbexport::batching
