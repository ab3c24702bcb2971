#include "batching/cuda_runtime.h"

#include <dlfcn.h>

#include <mutex>

namespace mbexport::batching {

namespace {

// cudaGetErrorString's text; a library that returns null gets a placeholder, not a null std::string.
std::string ErrorText(const CudaRuntime& rt, int code) {
  const char* text = rt.GetErrorString(code);
  return text != nullptr ? text : "unknown CUDA error";
}

template <typename Fn>
bool Resolve(void* handle, const char* name, Fn* fn, std::string* missing) {
  *fn = reinterpret_cast<Fn>(dlsym(handle, name));
  if (*fn == nullptr) {
    if (!missing->empty()) *missing += ", ";
    *missing += name;
  }
  return *fn != nullptr;
}

// Fills `rt` from `handle`; returns the missing symbols ("" when complete).
std::string ResolveAll(void* handle, CudaRuntime* rt) {
  std::string missing;
  Resolve(handle, "cudaGetDeviceCount", &rt->GetDeviceCount, &missing);
  Resolve(handle, "cudaSetDevice", &rt->SetDevice, &missing);
  Resolve(handle, "cudaRuntimeGetVersion", &rt->RuntimeGetVersion, &missing);
  Resolve(handle, "cudaDriverGetVersion", &rt->DriverGetVersion, &missing);
  Resolve(handle, "cudaGetErrorString", &rt->GetErrorString, &missing);
  Resolve(handle, "cudaMallocHost", &rt->MallocHost, &missing);
  Resolve(handle, "cudaFreeHost", &rt->FreeHost, &missing);
  Resolve(handle, "cudaMalloc", &rt->Malloc, &missing);
  Resolve(handle, "cudaFree", &rt->Free, &missing);
  Resolve(handle, "cudaMemcpyAsync", &rt->MemcpyAsync, &missing);
  Resolve(handle, "cudaStreamCreateWithFlags", &rt->StreamCreateWithFlags, &missing);
  Resolve(handle, "cudaStreamDestroy", &rt->StreamDestroy, &missing);
  Resolve(handle, "cudaStreamSynchronize", &rt->StreamSynchronize, &missing);
  Resolve(handle, "cudaEventCreateWithFlags", &rt->EventCreateWithFlags, &missing);
  Resolve(handle, "cudaEventRecord", &rt->EventRecord, &missing);
  Resolve(handle, "cudaEventSynchronize", &rt->EventSynchronize, &missing);
  Resolve(handle, "cudaEventDestroy", &rt->EventDestroy, &missing);
  return missing;
}

Status LoadOnce(const std::vector<std::string>& extra_paths, CudaRuntime* rt) {
  std::vector<std::string> candidates = extra_paths;
  for (const char* name : {"libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"}) {
    candidates.emplace_back(name);
  }
  std::string tried;
  for (const std::string& path : candidates) {
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* why = dlerror();
      tried += "\n  " + path + ": " + (why ? why : "not found");
      continue;
    }
    CudaRuntime loaded;
    const std::string missing = ResolveAll(handle, &loaded);
    if (!missing.empty()) {
      tried += "\n  " + path + ": lacks " + missing;
      dlclose(handle);
      continue;
    }
    loaded.path = path;
    loaded.RuntimeGetVersion(&loaded.runtime_version);
    loaded.DriverGetVersion(&loaded.driver_version);
    const int code = loaded.GetDeviceCount(&loaded.device_count);
    if (code != 0 || loaded.device_count == 0) {
      // Keep the library open: the error string pointer lives in it.
      return Status(StatusCode::kCudaUnavailable,
                    "CUDA runtime " + path + " (version " + std::to_string(loaded.runtime_version) +
                        ") loaded but found no usable GPU: " +
                        (code != 0 ? ErrorText(loaded, code) : std::string("0 devices")) +
                        "; driver version " + std::to_string(loaded.driver_version) +
                        " (0 = no NVIDIA driver). Use device=\"cpu\" or \"auto\".");
    }
    *rt = loaded;
    return Status::Ok();
  }
  return Status(StatusCode::kCudaUnavailable,
                "CUDA runtime library (libcudart) not found; tried:" + tried +
                    "\nInstall the CUDA runtime (pip install nvidia-cuda-runtime-cu12, or the CUDA toolkit), "
                    "or use device=\"cpu\" or \"auto\".");
}

}  // namespace

Status CudaRuntime::Load(const std::vector<std::string>& extra_paths, const CudaRuntime** out) {
  static std::once_flag once;
  static CudaRuntime runtime;
  static Status status;
  std::call_once(once, [&] { status = LoadOnce(extra_paths, &runtime); });
  *out = status.ok() ? &runtime : nullptr;
  return status;
}

Status CudaRuntime::StatusOf(int code, const char* what) const {
  if (code == 0) return Status::Ok();
  return Status(StatusCode::kCudaUnavailable,
                std::string(what) + " failed: " + ErrorText(*this, code) + " (" + std::to_string(code) + ")");
}

}  // namespace mbexport::batching
